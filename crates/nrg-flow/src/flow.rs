//! A flow: a prior and a bijector.
//!
//! Sampling: `z ~ p_Z`, `(x, ℓ) = G(z)`, `ln q(x) = ln p_Z(z) − ℓ`.
//! Density: `(z, ℓ′) = R(x)`, `ln q(x) = ln p_Z(z) + ℓ′`.

use burn::tensor::{Device, Tensor};
use nrg_core::{Bijector, Prior};

/// Samples with their exact log-density under the flow.
pub struct FlowSample {
    /// `x`, `[batch, channels, rows, cols]`.
    pub x: Tensor<4>,
    /// `ln q(x)`, `[batch]`.
    pub log_q: Tensor<1>,
}

/// A prior and a bijector.
pub struct Flow<'a, B: Bijector, P: Prior> {
    /// The generative map `G`.
    pub bijector: &'a B,
    /// The latent distribution.
    pub prior: P,
    /// `[channels, rows, cols]` of one configuration.
    pub shape: [usize; 3],
}

impl<B: Bijector, P: Prior> Flow<'_, B, P> {
    /// Draws `n` samples with `ln q`.
    pub fn sample(&self, n: usize, device: &Device) -> FlowSample {
        let [c, r, w] = self.shape;
        let z = self.prior.sample([n, c, r, w], device);
        let log_pz = self.prior.log_prob(z.clone());
        let (x, logdet) = self.bijector.forward(z);
        FlowSample {
            x,
            log_q: log_pz - logdet,
        }
    }

    /// `ln q(x)` of given configurations.
    pub fn log_prob(&self, x: Tensor<4>) -> Tensor<1> {
        let (z, logdet) = self.bijector.inverse(x);
        self.prior.log_prob(z) + logdet
    }
}
