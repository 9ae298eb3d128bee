//! The discrete-spin Ising model `H = −J Σ_⟨ij⟩ s_i s_j`, `s = ±1`, `J = 1`, `K = β`,
//! on a periodic chain or torus. Spins are `i8` host arrays indexed like the lattice.

use crate::exact::{IsingThermo, ising1d, ising2d};
use nrg_core::error::require_positive;
use nrg_core::{Lattice, Result};

/// The Ising model at inverse temperature `beta`.
#[derive(Clone, Debug)]
pub struct IsingSpins {
    lattice: Lattice,
    beta: f64,
}

impl IsingSpins {
    /// Validates `beta > 0` (finite).
    pub fn new(lattice: Lattice, beta: f64) -> Result<Self> {
        Ok(Self {
            lattice,
            beta: require_positive("beta", beta)?,
        })
    }

    /// The lattice.
    pub fn lattice(&self) -> Lattice {
        self.lattice
    }

    /// `β = K`.
    pub fn beta(&self) -> f64 {
        self.beta
    }

    /// `H = −Σ_x Σ_μ s_x s_{x+μ̂}`.
    pub fn energy(&self, spins: &[i8]) -> i64 {
        let rows = self.lattice.rows();
        let cols = self.lattice.cols();
        let mut e = 0i64;
        for i in 0..rows {
            let down = ((i + 1) % rows) * cols;
            for j in 0..cols {
                let s = spins[i * cols + j] as i64;
                let right = spins[i * cols + (j + 1) % cols] as i64;
                e -= s * right;
                if self.lattice.dim() == 2 {
                    e -= s * spins[down + j] as i64;
                }
            }
        }
        e
    }

    /// `Σ_x s_x`.
    pub fn magnetisation(&self, spins: &[i8]) -> i64 {
        spins.iter().map(|s| *s as i64).sum()
    }

    /// The exact solution (Kaufman in 2D, the transfer matrix in 1D).
    pub fn exact(&self) -> Result<IsingThermo> {
        if self.lattice.dim() == 1 {
            ising1d::chain(self.lattice.l(), self.beta)
        } else {
            ising2d::kaufman(self.lattice.l(), self.beta)
        }
    }
}
