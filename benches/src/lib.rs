//! Benchmarks of nrg live in `benches/`; this library only hosts shared set-up.
//!
//! - `baselines`: the single-spin Metropolis sweep (reported as spin updates per second),
//!   the Wolff cluster update and an HMC trajectory of φ⁴;
//! - `flows`: a coupling layer and the hierarchical flow, forward and inverse, and whole
//!   training steps of the φ⁴ tutorial flow and the hierarchical Ising L = 16 flow.

use nrg_core::Lattice;
use nrg_lattice::{IsingSpins, PhiFour};

/// The 2D Ising model at `β` on an `L × L` torus.
pub fn ising(l: usize, beta: f64) -> IsingSpins {
    IsingSpins::new(Lattice::square(l).expect("L ≥ 2"), beta).expect("β > 0")
}

/// The φ⁴ tutorial point (lattice form, `m² = −4`, `λ = 8`) on an `L × L` torus.
pub fn phi4_tutorial(l: usize) -> PhiFour {
    PhiFour::lattice_form(Lattice::square(l).expect("L ≥ 2"), 1, -4.0, 8.0).expect("valid")
}
