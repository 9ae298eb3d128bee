//! # nrg-rg
//!
//! The classical real-space renormalisation group, beside the learned one (issue 23):
//! Kadanoff's block spins on Ising configurations, and the couplings of the block-spin
//! configurations they produce.
//!
//! - [`block`]: one block-spin step `s → s'` on a periodic chain or square lattice —
//!   majority rule (odd `b`, or even `b` with random tie-breaks) and decimation — and its
//!   iteration;
//! - [`compare`]: block spins, an RBM's hidden units and a flow's coarse field side by
//!   side — receptive fields from single-spin flips and the pairwise couplings each set of
//!   coarse variables implies (pseudo-likelihood, jackknife);
//! - [`couplings`]: renormalised couplings measured from block-spin configurations, with
//!   Gamma-method errors: in 1D the nearest-neighbour coupling from the ring's exact
//!   correlation function, checked against the decimation recursion
//!   `K' = atanh(tanh² K)`;
//! - [`mcrg`]: Swendsen's Monte Carlo RG — operator sums per level, the linearised RG
//!   matrix `T = B⁻¹A` from block-spin correlations, its eigenvalues and the exponents
//!   `y_t`, `y_h`, with jackknife errors;
//! - [`pseudo`]: renormalised couplings of block spins by maximum pseudo-likelihood;
//! - [`rbm`]: restricted Boltzmann machines on `±1` spins — exact `ln Z` by enumeration,
//!   block Gibbs sampling, training by CD-k and persistent CD, deep belief nets and their
//!   product receptive fields;
//! - [`rbm_flow`]: the RBM flow `v → h → v` iterated from configurations at one
//!   temperature, with the temperature read from energy and magnetisation.
//!
//! Configurations are `f64` slices of `±1`, site-major as the baseline chains hold them
//! (`nrg_samplers::run::Simulation::configuration`).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod block;
pub mod compare;
pub mod couplings;
pub mod mcrg;
pub mod pseudo;
pub mod rbm;
pub mod rbm_flow;
