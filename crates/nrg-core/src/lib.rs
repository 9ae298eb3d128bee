//! # nrg-core
//!
//! The pieces every other `nrg` crate shares:
//!
//! - [`lattice`]: periodic 1D/2D lattice geometry (`L` sites per side, site indexing,
//!   neighbours, the power-of-two checks a hierarchical flow needs, lattice symmetries), and
//!   the field space ([`FieldSpace`], [`OnLattice`]) actions and chains share;
//! - [`action`]: the [`Action`] trait — a batched lattice action `S(x)` on burn tensors of
//!   shape `[batch, channels, rows, cols]` and its gradient;
//! - [`batch`]: per-sample sums of batched tensors in one reduction;
//! - [`bijector`]: the [`Bijector`] trait of invertible layers and flows (`z ↦ x` with
//!   `ln|det ∂x/∂z|`, and back);
//! - [`prior`]: the [`Prior`] trait of latent distributions;
//! - [`model`]: the [`DensityModel`] and [`LatentModel`] traits through which samplers see a
//!   trained flow;
//! - [`bulk`]: the bulk of a hierarchical latent model — each latent's RG level and coarse
//!   position ([`bulk::BulkLayout`]), structural causal cones, and the bulk effective action
//!   `S_eff(z) = S(G(z)) − ln|det ∂G/∂z|` with its gradient;
//! - [`chain`]: the [`MarkovChain`] trait of the baseline and neural samplers;
//! - [`stats`]: error analysis in `f64` — Wolff's Gamma method (`τ_int` with automatic
//!   window and its error), blocked jackknife for derived quantities;
//! - [`tail`]: the Pareto shape `k̂` of importance weights' tail (PSIS diagnostic);
//! - [`observables`]: per-configuration observables (magnetisation, energy, two-point
//!   function, second-moment correlation length) and their reduction to estimates with
//!   error bars;
//! - [`series`]: named measurement series (the table behind `series.csv`);
//! - [`error`]: the error type shared by the library crates;
//! - [`parallel`]: [`parallel::on_pool`], which runs a whole step of work on the CPU
//!   thread pool.
//!
//! Conventions (see `docs/physics.md`): periodic lattices, `V = L²` sites, actions are
//! `S = −ln p + const`, every estimator accumulates in `f64`.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod action;
pub mod batch;
pub mod bijector;
pub mod bulk;
pub mod chain;
pub mod error;
pub mod lattice;
pub mod model;
pub mod observables;
pub mod parallel;
pub mod prior;
pub mod series;
pub mod stats;
pub mod tail;

pub use action::Action;
pub use bijector::Bijector;
pub use chain::MarkovChain;
pub use error::{NrgError, Result};
pub use lattice::{FieldSpace, Lattice, OnLattice};
pub use model::{DensityModel, LatentModel};
pub use prior::Prior;
pub use series::Series;
pub use stats::{Estimate, GammaAnalysis};
