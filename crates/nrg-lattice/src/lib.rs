//! # nrg-lattice
//!
//! Lattice field theories for `nrg`, with their exact solutions.
//!
//! - [`actions`]: batched actions on burn tensors `[batch, channels, rows, cols]` with their
//!   gradients — the relaxed Ising model (2D and 1D), real φ⁴ in the lattice and hopping
//!   forms, O(n) and complex φ⁴, the free field — and the discrete-spin Ising model for the
//!   baselines;
//! - [`exact`]: Kaufman's finite torus, Onsager's infinite lattice, the Ising chain, and
//!   Gaussian fields, reported in `f64` (derivatives in extended precision), tested against
//!   brute-force enumeration;
//! - [`spec`]: an action described by a TOML table (`[action]` of a run configuration),
//!   and built from it.
//!
//! Formulas and conventions: `docs/physics.md` of the workspace.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod actions;
pub mod exact;
pub mod spec;

pub use actions::{FieldGivenSpins, IsingRelaxed, IsingSpins, PhiFour, PhiFourForm};
pub use spec::{ActionSpec, ModelKind};
