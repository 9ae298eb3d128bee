//! # nrg-samplers
//!
//! Samplers and the runs that turn them into estimates with error bars.
//!
//! - [`baseline`]: physical-space Monte Carlo — single-spin Metropolis and Wolff cluster
//!   updates for the Ising model, HMC on any [`nrg_core::action::HostAction`], local
//!   Metropolis for φ⁴/O(n) — all seeded and reproducible;
//! - [`neural`]: what uses a trained flow — neural importance sampling, independence
//!   Metropolis with flow proposals, HMC and local Metropolis in the latent bulk — and boundary
//!   HMC beside them;
//! - [`free_energy`]: estimators of `ln Z` on log-weights from both ends (Bennett's
//!   acceptance ratio with its variance and overlap), independent of where the samples
//!   come from;
//! - [`run`]: thermalise, measure, analyse: a chain's measurement series and its summary
//!   (every observable with its Gamma-method error and `τ_int`, derived quantities by
//!   blocked jackknife, and the deviation from the exact value where one is known);
//! - [`tuning`]: step-size adaptation during thermalisation (dual averaging), shared by every
//!   chain with a step size.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod baseline;
pub mod free_energy;
pub mod neural;
pub mod run;
pub mod tuning;

/// The random number generator of every chain: xoshiro256++ (fast, 256-bit state,
/// reproducible from a `u64` seed).
pub type ChainRng = rand_xoshiro::Xoshiro256PlusPlus;
