//! # nrg-flow
//!
//! Flows `x = G(z)`, `z ~ p_Z`, with exact likelihood
//! `ln q(x) = ln p_Z(R(x)) + ln|det ∂R/∂x| = ln p_Z(z) − ln|det ∂G/∂z|`, and their training.
//!
//! - [`prior`]: Gaussian `N(0, 1)` and Laplace priors;
//! - [`flow`]: a prior composed with any [`nrg_core::Bijector`];
//! - [`train`]: reverse-KL training from an action, `F_q = E_q[ln q + S] ≥ −ln Z`.

pub mod flow;
pub mod prior;
pub mod train;

pub use flow::{Flow, FlowSample};
pub use prior::{GaussianPrior, LaplacePrior};
