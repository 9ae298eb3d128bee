//! # nrg-run
//!
//! A run of `nrg` on disk, and what a program does with it — the same way the `nrg` program
//! does, so that a user program, the holographic analysis or a study script loads and
//! samples a trained flow exactly as `nrg train` and `nrg sample` do:
//!
//! - [`config`]: the run configuration (one TOML file: action, flow, training, logging) and
//!   overrides of it;
//! - [`dir`]: the run directory — its layout, atomic checkpoints, `metrics.csv`, loading the
//!   trained flow;
//! - [`train`]: training a new run or resuming one, with an observer for progress and plots,
//!   and its typed [`train::TrainSummary`];
//! - [`sample`]: sampling a run with NIS, NMCMC, bulk HMC / local moves or boundary HMC,
//!   refusing options that do not apply, with its typed [`sample::SampleReport`];
//! - [`image`]: image runs — a `[data]` table of pictures instead of an action, maximum
//!   likelihood with test-set bits/dim, sample grids at temperatures;
//! - [`image_holo`]: the holographic tools on an image run — receptive fields per level,
//!   mixing, inpainting against baselines, which level carries which generating factor;
//! - [`reference`]: what is measured on a run's configurations, and the exact values the
//!   estimates are compared with;
//! - [`holo`]: the holographic analysis of a run ([`nrg_holo`]) end to end — bulk samples
//!   from the flow, a file or the baseline chain, correlations, distances, information,
//!   receptive fields, mixing and inpainting;
//! - [`rg_compare`]: a trained Ising flow's coarse field beside majority block spins and an
//!   RBM's hidden units on the same configurations ([`nrg_rg::compare`]).
//!
//! ```no_run
//! # fn main() -> nrg_core::Result<()> {
//! use nrg_run::{RunDir, sample::{SampleMethod, SampleRequest, sample}};
//! # let device: burn::tensor::Device = unimplemented!();
//! let run = RunDir::open("runs/demo-ising-l4")?;
//! let out = sample(&run, &SampleRequest::new(SampleMethod::Nis, 65_536), &device, &mut |_| {})?;
//! println!("{:?}", out.report.exact.get("ising_ln_z"));
//! # Ok(()) }
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod config;
pub mod dir;
pub mod holo;
pub mod image;
pub mod image_holo;
pub mod reference;
pub mod rg_compare;
pub mod sample;
pub mod train;

pub use config::{LogSettings, Overrides, RunConfig};
pub use dir::RunDir;
