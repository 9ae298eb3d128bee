//! Models with an exact, normalised density: what the flow-based samplers need from a
//! trained flow, without depending on how the flow is built.
//!
//! Shapes: configurations `x` and latents `z` are `[batch, channels, rows, cols]`;
//! densities and log-determinants are `[batch]`.
//!
//! - [`DensityModel`]: `x ∼ q` with `ln q(x)` — enough for neural importance sampling and the
//!   independence Metropolis sampler (NMCMC);
//! - [`LatentModel`]: the generative map `x = G(z)` with `ln|det ∂G/∂z|` and the prior, for
//!   MCMC in the latent space (the "bulk"), whose target is
//!   `p_Z(z) ∝ exp(−S(G(z)) + ln|det ∂G/∂z|)`.

use burn::tensor::{Device, Tensor};

/// A normalised model density that can be sampled exactly.
pub trait DensityModel {
    /// `[channels, rows, cols]` of one configuration.
    fn shape(&self) -> [usize; 3];

    /// `n` independent samples `x ∼ q` with `ln q(x)`.
    fn sample_with_log_q(&self, n: usize, device: &Device) -> (Tensor<4>, Tensor<1>);

    /// `ln q(x)` of given configurations.
    fn log_q(&self, x: Tensor<4>) -> Tensor<1>;
}

/// A generative map from latent variables with a known prior.
pub trait LatentModel {
    /// `[channels, rows, cols]` of the latent (equal to the configuration's for flows).
    fn latent_shape(&self) -> [usize; 3];

    /// `z ↦ (x = G(z), ln|det ∂G/∂z|)`.
    fn generate_with_log_det(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>);

    /// The RG map `x ↦ (z = R(x) = G⁻¹(x), ln|det ∂R/∂x|)`.
    fn rg_map(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>);

    /// Draws `n` latents from the prior.
    fn sample_latent(&self, n: usize, device: &Device) -> Tensor<4>;

    /// `ln p_Z(z)` of the prior.
    fn prior_log_prob(&self, z: Tensor<4>) -> Tensor<1>;

    /// The bulk: each latent's RG level and position, and the layers of `G` (`None` for a
    /// model without a hierarchical bulk, e.g. a flat flow).
    fn bulk_layout(&self) -> Option<Box<dyn crate::bulk::BulkLayout + '_>> {
        None
    }
}
