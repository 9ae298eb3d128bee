//! Flow-based samplers: what turns a trained flow into physics with honest error bars.
//!
//! With the action `S`, the model density `q` and log-weights `ln w = −S(x) − ln q(x)` (in `f64`):
//!
//! - [`nis`] — neural importance sampling, streamed in batches so memory stays flat:
//!   `Ẑ = n⁻¹ Σ w`, `⟨O⟩ = Σ w O / Σ w` with delta-method errors, the ESS, the variational
//!   free energy `F_q`, `⟨S⟩` and the entropy `⟨S⟩ + ln Z`;
//! - [`chains`] — neural MCMC (independence Metropolis with flow proposals, accepted with
//!   `min(1, w'/w)`), MCMC in the latent "bulk" (HMC on `U(z) = S(G(z)) − ln|det ∂G/∂z|` with
//!   gradients through the flow; local Metropolis moves of single latents, optionally
//!   restricted to a set of latents such as one bulk level) and, beside them, HMC on the
//!   boundary field. Every chain's observables get Gamma-method errors and `τ_int`;
//! - [`ais`] — annealed importance sampling and sequential Monte Carlo from the flow to the
//!   target along `q^{1−β} e^{−βS}`, with HMC moves in the latent space between stages
//!   (a stochastic normalizing flow with the trained flow fixed): Jarzynski weights, a
//!   schedule chosen by the conditional ESS, optional resampling;
//! - [`bar`] — Bennett's acceptance ratio between the flow and exact target configurations
//!   (the flow's inverse gives their `ln q`), [`crate::free_energy::bar`] on both ends'
//!   log-weights;
//! - [`symmetrise`] — a model density averaged over a group of lattice symmetries of the
//!   action, a better proposal for any of the above when the flow breaks the symmetry;
//! - [`measure`] — what is measured on each configuration.
//!
//! Shapes follow [`nrg_core::model`]: configurations `[batch, channels, rows, cols]`; host
//! copies are `f64` with `field[c·V + site]`.

pub mod ais;
pub mod bar;
pub mod chains;
pub mod measure;
pub mod nis;
pub mod symmetrise;

pub use ais::{AisMoves, AisOutput, AisRequest, AisSchedule, AisSummary, Resampling, ais};
pub use bar::{BarRequest, bar_with_flow, log_weights};
pub use chains::{
    ChainEstimate, ChainOutput, ChainSettings, ChainSummary, ChainTarget, HmcSettings,
    LocalSettings, NmcmcSettings, boundary_hmc, bulk_hmc, bulk_hmc_latents, bulk_local, nmcmc,
};
pub use measure::{FieldObservables, IsingImproved, Measure};
pub use nis::{DerivedLnZ, ImportanceSums, Kept, NisOutput, NisRequest, NisSummary, nis};
pub use symmetrise::SymmetrisedModel;

use burn::tensor::Tensor;

/// A tensor's values as `f64` on the host.
pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("f64 data")
}
