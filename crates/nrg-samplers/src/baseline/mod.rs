//! Baseline Monte Carlo in physical space.

mod hmc;
mod ising;
mod phi4_local;

pub use hmc::{Hmc, STEP_JITTER, jittered_step};
pub use ising::{IsingMetropolis, IsingWolff, SpinStart};
pub use phi4_local::PhiFourMetropolis;
