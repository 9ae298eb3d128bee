//! Priors: the latent distribution `p_Z` of a flow.
//!
//! Shapes: `z` is `[batch, channels, rows, cols]`, `ln p_Z(z)` is `[batch]`.

use burn::tensor::{Device, Tensor};

/// A latent distribution that can be sampled and evaluated.
pub trait Prior {
    /// Draws `shape[0]` samples.
    fn sample(&self, shape: [usize; 4], device: &Device) -> Tensor<4>;

    /// `ln p_Z(z)` per sample.
    fn log_prob(&self, z: Tensor<4>) -> Tensor<1>;
}
