//! # nrg-layers
//!
//! Invertible layers implementing [`nrg_core::Bijector`]:
//!
//! - [`mask`]: binary masks `m` splitting a field into a conditioning part `m ⊙ z` and an
//!   updated part `(1 − m) ⊙ z` — checkerboard, random half, channel split;
//! - [`subnet`]: the networks `s(·), t(·)` of a coupling — a CNN with periodic padding
//!   (Albergo et al.), its last layer zero-initialised so that a fresh coupling is the
//!   identity;
//! - [`coupling`]: the affine (RealNVP) and additive (NICE) coupling layers with a bounded,
//!   learnable scale, and a flat stack of couplings.
//!
//! All tensors are `[batch, channels, rows, cols]`, log-determinants `[batch]`.

pub mod coupling;
pub mod mask;
pub mod subnet;

pub use coupling::{AffineCoupling, AffineCouplingConfig, CouplingStack};
pub use mask::MaskKind;
pub use subnet::{PeriodicCnn, PeriodicCnnConfig};
