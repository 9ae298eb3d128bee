//! Baseline Monte Carlo in physical space.

mod hmc;
mod ising;
mod phi4_local;

pub use hmc::{Hmc, STEP_JITTER, jittered_step};
pub use ising::{IsingMetropolis, IsingWolff, SpinStart};
pub use phi4_local::PhiFourMetropolis;

use nrg_core::{FieldSpace, NrgError, Result};

/// Checks a chain's start configuration: `channels·V` finite numbers.
fn check_start(space: &FieldSpace, field: &[f64]) -> Result<()> {
    if field.len() != space.len() {
        return Err(NrgError::param(
            "field",
            format!(
                "a start configuration needs {} numbers ({} components × {} sites), got {}",
                space.len(),
                space.channels,
                space.lattice.volume(),
                field.len()
            ),
        ));
    }
    if let Some(i) = field.iter().position(|v| !v.is_finite()) {
        return Err(NrgError::InvalidData(format!(
            "the start configuration is not finite at {i} ({})",
            field[i]
        )));
    }
    Ok(())
}
