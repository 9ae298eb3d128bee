//! Gaussian lattice actions, solved by Fourier modes.
//!
//! ```text
//! S(φ) = Σ_x [ a |φ_x|² − 2κ Σ_μ φ_x · φ_{x+μ̂} ] = Σ_c φ_cᵀ A φ_c,   φ_x ∈ ℝⁿ
//! ```
//!
//! `A` is circulant with eigenvalues `λ_p = a − 2κ Σ_μ cos p_μ`, all of which must be
//! positive. Then `Z = Π_c ∫ dφ_c e^{−φ_cᵀ A φ_c} = (π^{V/2} det A^{−1/2})ⁿ`:
//!
//! ```text
//! ln Z   = n [ (V/2) ln π − ½ Σ_p ln λ_p ]
//! ⟨φ_c,x φ_c,y⟩ = ½ (A⁻¹)_{xy} = (2V)⁻¹ Σ_p e^{ip(x−y)} / λ_p
//! ```
//!
//! The free field in the lattice form `Σ_x [Σ_μ (φ_{x+μ} − φ_x)² + m² φ_x²]` is `a = 2d + m²`,
//! `κ = 1`, so `λ_p = m² + Σ_μ 4 sin²(p_μ/2)` and
//! `ln Z = (V/2) ln π − ½ Σ_p ln(m² + 4 Σ_μ sin²(p_μ/2))` per component.

use nrg_core::{Lattice, NrgError, Result};
use serde::{Deserialize, Serialize};

/// The exact solution of a Gaussian lattice action.
#[derive(Clone, Debug)]
pub struct GaussianExact {
    lattice: Lattice,
    channels: usize,
    eigenvalues: Vec<f64>,
}

/// Exact observables of a Gaussian action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GaussianThermo {
    /// `ln Z`.
    pub ln_z: f64,
    /// `⟨|φ_x|²⟩` summed over components.
    pub phi2: f64,
    /// `χ = V ⟨|M|²⟩`, `M = V⁻¹ Σ_x φ_x`.
    pub chi: f64,
    /// `⟨S⟩ / V = n/2` (equipartition).
    pub action_per_site: f64,
    /// `G(r)` along an axis, `r = 0 … ⌊L/2⌋`, summed over components.
    pub two_point: Vec<f64>,
}

impl GaussianExact {
    /// `S = Σ_x [a |φ_x|² − 2κ Σ_μ φ_x·φ_{x+μ̂}]` with `channels` components.
    pub fn new(lattice: Lattice, channels: usize, a: f64, kappa: f64) -> Result<Self> {
        let eigenvalues: Vec<f64> = (0..lattice.volume())
            .map(|k| a - 2.0 * kappa * lattice.cos_sum(k))
            .collect();
        let min = eigenvalues.iter().cloned().fold(f64::INFINITY, f64::min);
        if min.is_nan() || min <= 0.0 {
            return Err(NrgError::param(
                "m2",
                format!("the Gaussian action is not normalisable (lowest mode {min:.3e} ≤ 0)"),
            ));
        }
        if channels == 0 {
            return Err(NrgError::param("n", "must be ≥ 1"));
        }
        Ok(Self {
            lattice,
            channels,
            eigenvalues,
        })
    }

    /// The free field in the lattice form with mass² `m2 > 0`.
    pub fn free_field(lattice: Lattice, channels: usize, m2: f64) -> Result<Self> {
        nrg_core::error::require_positive("m2", m2)?;
        Self::new(lattice, channels, 2.0 * lattice.dim() as f64 + m2, 1.0)
    }

    /// The eigenvalues `λ_p` of `A`.
    pub fn eigenvalues(&self) -> &[f64] {
        &self.eigenvalues
    }

    /// `ln Z` and the exact observables.
    pub fn thermo(&self) -> GaussianThermo {
        let v = self.lattice.volume() as f64;
        let n = self.channels as f64;
        let ln_det: f64 = self.eigenvalues.iter().map(|l| l.ln()).sum();
        let ln_z = n * (0.5 * v * std::f64::consts::PI.ln() - 0.5 * ln_det);
        let phi2 = n * self.eigenvalues.iter().map(|l| 0.5 / l).sum::<f64>() / v;
        let chi = n * 0.5 / self.eigenvalues[0];
        let cols = self.lattice.cols();
        let two_point = (0..=self.lattice.l() / 2)
            .map(|r| {
                let s: f64 = self
                    .eigenvalues
                    .iter()
                    .enumerate()
                    .map(|(k, l)| {
                        let k2 = k % cols;
                        let p = std::f64::consts::TAU * k2 as f64 / cols as f64;
                        (p * r as f64).cos() * 0.5 / l
                    })
                    .sum();
                n * s / v
            })
            .collect();
        GaussianThermo {
            ln_z,
            phi2,
            chi,
            action_per_site: 0.5 * n,
            two_point,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dense `A` with `S = φᵀ A φ` for one component.
    fn dense(lattice: &Lattice, a: f64, kappa: f64) -> Vec<Vec<f64>> {
        let v = lattice.volume();
        let d = lattice.dim();
        let fwd = lattice.forward_neighbours();
        let mut m = vec![vec![0.0; v]; v];
        for x in 0..v {
            m[x][x] += a;
            for mu in 0..d {
                let y = fwd[x * d + mu];
                m[x][y] -= kappa;
                m[y][x] -= kappa;
            }
        }
        m
    }

    /// Cholesky: returns L with A = L Lᵀ.
    fn cholesky(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let n = a.len();
        let mut l = vec![vec![0.0; n]; n];
        for i in 0..n {
            for j in 0..=i {
                let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
                if i == j {
                    l[i][j] = (a[i][i] - s).sqrt();
                } else {
                    l[i][j] = (a[i][j] - s) / l[j][j];
                }
            }
        }
        l
    }

    /// Fourier solution equals the dense determinant and the dense inverse's diagonal,
    /// L = 2, 3, 4 in 1D and 2D, to 1e-12.
    #[test]
    fn fourier_equals_dense_linear_algebra() {
        for dim in [1, 2] {
            for l in [2, 3, 4] {
                let lat = Lattice::new(dim, l).unwrap();
                let (a, kappa) = (2.0 * dim as f64 + 0.7, 1.0);
                let g = GaussianExact::new(lat, 1, a, kappa).unwrap();
                let t = g.thermo();
                let chol = cholesky(&dense(&lat, a, kappa));
                let v = lat.volume();
                let ln_det: f64 = (0..v).map(|i| 2.0 * chol[i][i].ln()).sum();
                let ln_z = 0.5 * v as f64 * std::f64::consts::PI.ln() - 0.5 * ln_det;
                assert!(
                    (t.ln_z - ln_z).abs() < 1e-12 * ln_z.abs().max(1.0),
                    "d={dim} L={l}"
                );
                // (A⁻¹)_00 by solving A y = e_0
                let mut y = vec![0.0; v];
                y[0] = 1.0;
                for i in 0..v {
                    let s: f64 = (0..i).map(|k| chol[i][k] * y[k]).sum();
                    y[i] = (y[i] - s) / chol[i][i];
                }
                for i in (0..v).rev() {
                    let s: f64 = (i + 1..v).map(|k| chol[k][i] * y[k]).sum();
                    y[i] = (y[i] - s) / chol[i][i];
                }
                assert!((t.phi2 - 0.5 * y[0]).abs() < 1e-12);
                assert!((t.two_point[0] - t.phi2).abs() < 1e-12);
                // G(1) along columns = ½ (A⁻¹)_{0,1}
                assert!((t.two_point[1] - 0.5 * y[lat.index(0, 1)]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn free_field_formula_and_validation() {
        let lat = Lattice::square(4).unwrap();
        let g = GaussianExact::free_field(lat, 2, 0.5).unwrap();
        // n = 2: ln Z = 2[(V/2) ln π − ½ Σ ln λ] = V ln π − Σ ln λ
        let expect = 16.0 * std::f64::consts::PI.ln()
            - (0..16)
                .map(|k| (0.5 + lat.laplacian_eigenvalue(k)).ln())
                .sum::<f64>();
        assert!((g.thermo().ln_z - expect).abs() < 1e-12);
        assert!(GaussianExact::free_field(lat, 1, 0.0).is_err());
        assert!(GaussianExact::free_field(lat, 1, f64::NAN).is_err());
        assert!(GaussianExact::new(lat, 1, 1.0, 1.0).is_err());
    }
}
