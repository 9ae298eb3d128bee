//! # nrg-layers
//!
//! Invertible layers implementing [`nrg_core::Bijector`]:
//!
//! - [`mask`]: binary masks `m` splitting a field into a conditioning part `m ⊙ z` and an
//!   updated part `(1 − m) ⊙ z` — checkerboard, random half, channel split;
//! - [`subnet`]: the networks `s(·), t(·)` of a lattice coupling — a CNN with periodic
//!   padding (Albergo et al.), its last layer zero-initialised so that a fresh coupling is
//!   the identity;
//! - [`mlp`]: MLP and residual-MLP subnets (NeuralRG, RG-Flow) for block couplings;
//! - [`coupling`]: the affine (RealNVP) and additive (NICE) coupling layers with a bounded,
//!   learnable scale, and a flat stack of couplings;
//! - [`block`]: bijectors of one `b × b` block (RealNVP with MLP subnets; the fixed Haar
//!   transform), the building block of the hierarchical flow;
//! - [`ode`]: a neural-ODE block bijector (RK4, exact divergence);
//! - [`circulant`]: a learnable periodic convolution applied in momentum space (a global,
//!   volume-changing linear layer);
//! - [`activation`]: `tanh` through `exp` (what the fused kernels compute, on every
//!   backend);
//! - [`kernels`]: the fused CPU operations (periodic convolution, twin dense layer, twin
//!   MLP, coupling chain, affine update) as burn operations with their backward passes on
//!   flex — the arithmetic is the burn-free crate `nrg-kernels` — the hot paths among them
//!   (convolution, the conditioning convolution, affine update, coupling chain) also as
//!   CubeCL kernels with the `wgpu` feature, and two dispatches, [`kernels::fused`] and [`kernels::hot_paths`], between
//!   them and the composite forms on every other device;
//! - [`check`]: the log-det of any bijector against its autodiff Jacobian.
//!
//! All lattice tensors are `[batch, channels, rows, cols]`, log-determinants `[batch]`; the
//! hot paths of a flat coupling stack also take *states* `[batch, channels·rows·cols + 1]`
//! (each sample's field flattened, then its ln|det| so far: [`coupling::pack_state`]).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod activation;
pub mod block;
pub mod check;
pub mod circulant;
pub mod coupling;
pub mod kernels;
pub mod mask;
pub mod mlp;
pub mod ode;
pub mod subnet;
#[cfg(test)]
mod test_util;

pub use block::{
    BlockBijector, BlockPlacement, BlockRealNvp, BlockRealNvpConfig, FlatPieces, HaarBlock,
};
pub use circulant::CirculantLinear;
pub use coupling::{AffineCoupling, AffineCouplingConfig, CouplingStack, pack_state, unpack_state};
pub use mask::MaskKind;
pub use mlp::{TwinMlp, TwinMlpConfig};
pub use ode::{BlockOde, BlockOdeConfig};
pub use subnet::{PeriodicCnn, PeriodicCnnConfig};
