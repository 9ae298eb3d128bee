//! # nrg-kernels
//!
//! The CPU kernels of nrg's fused layers, on plain row-major `f32` slices, without a tensor
//! library: each operation and its backward pass written once, so that it can be tested
//! against its brute-force definition and benchmarked on its own. `nrg-layers` wraps them
//! as burn operations on the flex backend.
//!
//! - [`exec`]: where a kernel runs — the SIMD width (native, or forced: scalar, portable
//!   4/8/16 lanes) and the convolution path (direct or unfolded), so that tests cover every
//!   path on any CPU;
//! - [`activation`]: identity, LeakyReLU and ELU, and the vectorised `expm1` and `tanh`
//!   under them;
//! - [`gemm`]: small matrix products in SIMD register tiles;
//! - [`conv`]: the periodic convolution with bias and activation (burn's `Conv2d` with
//!   circular padding);
//! - [`dense`]: the twin dense layer, feature-major;
//! - [`mlp`]: a whole twin MLP, every layer of a column tile in the cache;
//! - [`affine`]: the elementwise update of an affine lattice coupling and its log-det, on
//!   a coupling stack's state (field and log-det so far);
//! - [`chain`]: a chain of affine couplings on a block's two halves (NeuralRG's block
//!   bijector) and its log-det;
//! - [`blocks`]: the blocks of a hierarchical layer gathered from the flow's state for the
//!   chain and scattered back;
//! - [`circulant`]: the circulant convolution of a field with a periodic kernel (or with its
//!   inverse) by FFT, `O(V log V)`.
//!
//! Work is split over the batch with rayon (chunks of samples, or column tiles of 256 for
//! the feature-major kernels); partial gradients are summed in a fixed order, so a result is
//! the same to the last bit from run to run. Arithmetic is `f32`, as the layers'; the
//! kernels' tests compare against `f64` definitions and central differences. Inputs that do
//! not match their geometry are programming errors of the caller and panic (each function's
//! `# Panics`); `nrg-layers` derives the geometries from tensor shapes it has checked.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod activation;
pub mod affine;
pub mod blocks;
pub mod chain;
pub mod circulant;
pub mod conv;
pub mod dense;
pub mod exec;
pub mod gemm;
pub mod mlp;
mod parallel;

pub use activation::Activation;
pub use affine::{
    AffineGeometry, affine_backward, affine_forward, conditioning, conditioning_backward,
};
pub use blocks::{BlockGeometry, block_gather, block_scatter};
pub use chain::{ChainGeometry, chain_backward, chain_forward};
pub use circulant::{CirculantGeometry, circulant_backward, circulant_forward};
pub use conv::{ConvGeometry, conv_backward, conv_forward};
pub use dense::{DenseGeometry, dense_backward, dense_forward};
pub use exec::{ConvPath, Exec, SimdWidth};
pub use mlp::{MlpGeometry, mlp_backward, mlp_forward, twin_layout};

/// Which way a coupling runs (nrg's convention: `forward` is generative, `z ↦ x`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Generative, `z ↦ x`.
    Forward,
    /// Inference, `x ↦ z`.
    Inverse,
}
