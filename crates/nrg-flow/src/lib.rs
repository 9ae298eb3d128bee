//! # nrg-flow
//!
//! Flows `x = G(z)`, `z ~ p_Z`, with exact likelihood
//! `ln q(x) = ln p_Z(R(x)) + ln|det ∂R/∂x| = ln p_Z(z) − ln|det ∂G/∂z|`, and their training.
//!
//! - [`prior`]: Gaussian and Laplace priors, with a learnable scale per bulk level;
//! - [`hierarchical`]: the MERA-like RG flow (2×2 or 4×4 blocks) and its bulk geometry;
//! - [`flow`]: a prior composed with a bijector, optionally Z₂-symmetrised;
//! - [`spec`]: a flow described by a TOML table;
//! - [`train`]: reverse-KL, forward-KL and mixed training;
//! - [`clip`]: gradient clipping by norm per parameter tensor, flat parameters by piece;
//! - [`image`]: maximum-likelihood training on images (dequantisation, logit), bits per
//!   dimension on held-out images, samples at a temperature;
//! - [`data`]: configurations as NumPy `.npy` (reading training data, writing samples) and
//!   the lattice symmetries that augment data.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod clip;
pub mod data;
pub mod flow;
pub mod hierarchical;
pub mod image;
pub mod prior;
pub mod spec;
pub mod train;

pub use flow::{FlowBijector, FlowModel, FlowSample};
pub use hierarchical::{BulkSite, HierarchicalFlow, bulk_site};
pub use prior::{GaussianPrior, LaplacePrior, LatentPrior, LatentShape, LevelScales};
pub use spec::{FlowKind, FlowSpec, PriorShape, SubnetKind};
