//! # nrg-holo
//!
//! A trained hierarchical flow read as a holographic map from the boundary field `x` to
//! bulk latents `z = R(x)` on a discrete hyperbolic space (Hu, Li, Wang, You,
//! arXiv:1903.00804; RG-Flow, arXiv:2010.00029). The model is seen only through
//! `nrg-core`'s [`nrg_core::LatentModel`] and its [`nrg_core::bulk::BulkLayout`]; a model
//! without a bulk (a flat flow) is refused.
//!
//! - [`geometry`]: each latent's point in the upper half-space model of H³ and the
//!   geodesic distance between latents;
//! - [`samples`]: latents under the exact bulk distribution — the RG map of exact boundary
//!   samples, or flow samples with NIS weights;
//! - [`correlation`]: bulk correlations `C_ij = ⟨z_i · z_j⟩` (and the component moments)
//!   with blocked-jackknife errors;
//! - [`mutual`]: mutual information between latents — Gaussian from the covariance, and the
//!   Kraskov–Stögbauer–Grassberger estimator with errors;
//! - [`fit`]: straight-line fits with errors: the emergent distance `d = d₀ − ξ ln|C|`, the
//!   boundary's power law or correlation length;
//! - [`receptive`]: receptive fields `E|∂x/∂z_i|` by autodiff, their radii per level, and
//!   the structural causal cones beside them;
//! - [`repair`]: multi-scale mixing of two configurations, and error correction by
//!   resampling only the latents in a region's causal cone;
//! - [`complete`]: completion of a masked region for models known by their density alone
//!   (images) — optimising or resampling only the latents in the region's causal cone;
//! - [`factors`]: which RG level carries which generating factor (correlations of each
//!   level's latents with known causes);
//! - [`analysis`]: the correlation, distance, mutual-information and boundary analysis of
//!   one set of bulk samples, organised by level and distance.
//!
//! Estimators accumulate in `f64`; every number comes with its error bar.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod analysis;
pub mod complete;
pub mod correlation;
pub mod factors;
pub mod fit;
pub mod geometry;
pub mod mutual;
pub mod receptive;
pub mod repair;
pub mod samples;

pub use geometry::{BulkGeometry, BulkPoint, hyperbolic_distance};
pub use samples::LatentSamples;
