//! Bijectors: invertible maps between the latent variables `z` and the field `x`.
//!
//! Shapes: `z`, `x` are `[batch, channels, rows, cols]`; log-determinants are `[batch]`.
//! `forward` is the generative direction `z ↦ x = G(z)` with `ln|det ∂x/∂z|`; `inverse` is
//! the RG direction `x ↦ z = R(x)` with `ln|det ∂z/∂x|` (so the two log-dets of a round
//! trip sum to zero). Bijectors compose: the log-dets of a stack add.

use burn::tensor::Tensor;

/// An invertible, batched map with tractable log-determinant.
pub trait Bijector {
    /// `z ↦ (x, ln|det ∂x/∂z|)`.
    fn forward(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>);

    /// `x ↦ (z, ln|det ∂z/∂x|)`.
    fn inverse(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>);
}
