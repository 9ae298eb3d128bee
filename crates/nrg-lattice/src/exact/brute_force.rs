//! Exact enumeration of small Ising systems — the reference every closed formula is tested
//! against.
//!
//! All `2^V` states are visited once and binned by energy `E = −Σ_x Σ_μ s_x s_{x+μ̂}`, giving
//! the exact density of states `g(E)` (integer counts). Then `Z(K) = Σ_E g(E) e^{−KE}`,
//! `⟨E⟩` and `Var E` follow in `f64`, in forms whose sums have terms of one sign so that
//! they keep full relative accuracy at any `K` (the reference for the closed formulas at
//! `β → 0` and `β → ∞`):
//!
//! ```text
//! Z ⟨E⟩      = Σ_E g E + Σ_E g E (e^{−KE} − 1)     (every term of the second sum ≤ 0;
//!                                                    the first is an exact integer, 0 here)
//! ⟨E⟩ − E₀   = Σ_E p_E (E − E₀)                    (E₀ the ground-state energy; terms ≥ 0)
//! Var E      = Σ_E p_E ((E − E₀) − (⟨E⟩ − E₀))²
//! ```

use super::IsingThermo;
use nrg_core::{Lattice, NrgError, Result};

/// The exact density of states of the Ising model on a small periodic lattice.
#[derive(Clone, Debug)]
pub struct DensityOfStates {
    lattice: Lattice,
    /// `(E, g(E))` with `g > 0`.
    pub levels: Vec<(i64, u64)>,
}

/// Enumerates all `2^V` states of the `dim`-dimensional Ising model of size `l` (`V ≤ 25`).
pub fn ising_density_of_states(dim: usize, l: usize) -> Result<DensityOfStates> {
    let lattice = Lattice::new(dim, l)?;
    let v = lattice.volume();
    if v > 25 {
        return Err(NrgError::param(
            "L",
            format!("brute-force enumeration is limited to 25 sites, got {v}"),
        ));
    }
    let fwd = lattice.forward_neighbours();
    let bonds = lattice.bonds() as i64;
    let mut counts = vec![0u64; (2 * bonds + 1) as usize];
    for state in 0u32..(1u32 << v) {
        let spin = |s: usize| if state >> s & 1 == 1 { 1i64 } else { -1 };
        let mut e = 0i64;
        for site in 0..v {
            for mu in 0..dim {
                e -= spin(site) * spin(fwd[site * dim + mu]);
            }
        }
        counts[(e + bonds) as usize] += 1;
    }
    let levels = counts
        .iter()
        .enumerate()
        .filter(|(_, g)| **g > 0)
        .map(|(i, g)| (i as i64 - bonds, *g))
        .collect();
    Ok(DensityOfStates { lattice, levels })
}

impl DensityOfStates {
    /// `ln Z`, energy and specific heat per site at inverse temperature `beta`.
    pub fn thermo(&self, beta: f64) -> Result<IsingThermo> {
        let beta = super::check_beta(beta)?;
        let e0 = self.levels[0].0 as f64;
        // ln(g e^{−K(E−E₀)}) and its log-sum-exp
        let logw: Vec<f64> = self
            .levels
            .iter()
            .map(|(e, g)| (*g as f64).ln() - beta * (*e as f64 - e0))
            .collect();
        let top = logw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = logw.iter().map(|w| (w - top).exp()).sum();
        let ln_zr = top + sum.ln(); // ln(Z e^{K E₀})
        let ln_z = ln_zr - beta * e0;
        // Z⟨E⟩ e^{−ln Z} with the e^{−KE} − 1 form; the integer Σ g E exactly
        let s1: i128 = self
            .levels
            .iter()
            .map(|(e, g)| *e as i128 * *g as i128)
            .sum();
        let mut mean = s1 as f64 * (-ln_z).exp();
        for (e, g) in &self.levels {
            let (e, ln_g) = (*e as f64, (*g as f64).ln());
            let term = if e < 0.0 {
                // g E e^{−KE}(1 − e^{KE}) / Z
                e * (ln_g - beta * e - ln_z).exp() * -(beta * e).exp_m1()
            } else {
                e * (ln_g - ln_z).exp() * (-beta * e).exp_m1()
            };
            mean += term;
        }
        let p: Vec<f64> = logw.iter().map(|w| (w - ln_zr).exp()).collect();
        let shift: f64 = p
            .iter()
            .zip(&self.levels)
            .map(|(p, (e, _))| p * (*e as f64 - e0))
            .sum();
        let var: f64 = p
            .iter()
            .zip(&self.levels)
            .map(|(p, (e, _))| p * ((*e as f64 - e0) - shift).powi(2))
            .sum();
        let v = self.lattice.volume() as f64;
        Ok(IsingThermo {
            l: self.lattice.l(),
            beta,
            ln_z,
            ln_z_per_site: ln_z / v,
            free_energy_per_site: -ln_z / (beta * v),
            energy_per_site: mean / v,
            specific_heat_per_site: beta * beta * var / v,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sum_to_all_states_and_ground_states() {
        let dos = ising_density_of_states(2, 3).unwrap();
        let total: u64 = dos.levels.iter().map(|(_, g)| g).sum();
        assert_eq!(total, 512);
        // two ferromagnetic ground states with E = −2V
        assert_eq!(dos.levels[0], (-18, 2));
        assert!(ising_density_of_states(2, 6).is_err());
    }

    #[test]
    fn high_temperature_limit() {
        // K → 0: Z → 2^V
        let t = ising_density_of_states(1, 8)
            .unwrap()
            .thermo(1e-12)
            .unwrap();
        assert!((t.ln_z - 8.0 * 2f64.ln()).abs() < 1e-9);
    }
}
