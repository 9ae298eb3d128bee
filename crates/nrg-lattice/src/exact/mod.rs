//! Exact solutions, reported in `f64`.
//!
//! - [`ising2d`]: Kaufman's finite `L × L` torus and Onsager's infinite lattice;
//! - [`ising1d`]: the periodic chain by transfer matrix, and exact decimation;
//! - [`gaussian`]: the free field (and any Gaussian lattice action) by Fourier modes;
//! - [`brute_force`]: enumeration of small Ising systems, against which the formulas are
//!   tested.
//!
//! Thermodynamic derivatives are exact (forward-mode second-order differentiation,
//! [`dual`]), not finite differences, and evaluated in extended precision ([`real`]) so that
//! `u` and `c` keep `f64` relative accuracy at `β → 0` and `β → ∞`.

pub mod brute_force;
pub mod dual;
pub mod gaussian;
pub mod ising1d;
pub mod ising2d;
pub mod real;

use serde::{Deserialize, Serialize};

/// Exact thermodynamics of an Ising system at inverse temperature `β` (`J = 1`, `K = β`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct IsingThermo {
    /// Linear size `L` (0 for the infinite lattice).
    pub l: usize,
    /// Inverse temperature `β = K`.
    pub beta: f64,
    /// `ln Z` (infinite for the infinite lattice; see `ln_z_per_site`).
    pub ln_z: f64,
    /// `ln Z / V`.
    pub ln_z_per_site: f64,
    /// Free energy per site `f = −ln Z/(β V)`.
    pub free_energy_per_site: f64,
    /// Internal energy per site `u = ⟨H⟩/V = −V⁻¹ ∂ ln Z/∂K`.
    pub energy_per_site: f64,
    /// Specific heat per site `c = K² V⁻¹ ∂² ln Z/∂K²`.
    pub specific_heat_per_site: f64,
}

impl IsingThermo {
    /// Builds the record from `ln Z` and its `K`-derivatives (as a [`dual::Dual2`]).
    pub(crate) fn from_ln_z(l: usize, beta: f64, volume: f64, ln_z: dual::Dual2) -> Self {
        Self {
            l,
            beta,
            ln_z: ln_z.v,
            ln_z_per_site: ln_z.v / volume,
            free_energy_per_site: -ln_z.v / (beta * volume),
            energy_per_site: -ln_z.d1 / volume,
            specific_heat_per_site: beta * beta * ln_z.d2 / volume,
        }
    }
}

/// Checks an inverse temperature (finite, > 0).
pub(crate) fn check_beta(beta: f64) -> nrg_core::Result<f64> {
    nrg_core::error::require_positive("beta", beta)
}
