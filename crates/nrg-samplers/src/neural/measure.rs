//! Observables measured on single configurations (host `f64`, `field[c·V + site]`).
//!
//! - [`FieldObservables`]: `m` (the magnetisation for one component, `|M|` for several),
//!   `abs_m = |M|`, `m2 = |M|²`, `phi2 = V⁻¹ Σ|φ|²`;
//! - [`IsingImproved`]: Ising spin observables from the relaxed field `x`, using that the
//!   spins are independent given `x` with `E[s_i | x] = tanh x_i`:
//!   `m = V⁻¹ Σ tanh x_i`, `m2 = E[M² | x] = V⁻²[(Σ tanh x_i)² − Σ tanh² x_i + V]`,
//!   `e = −V⁻¹ Σ_<ij> tanh x_i tanh x_j` (the Ising energy per site, J = 1).

use nrg_core::Lattice;
use nrg_core::observables::{magnetisation, mean_square};

/// Named observables of one configuration.
pub trait Measure {
    /// Column names.
    fn names(&self) -> Vec<String>;
    /// The values for one configuration, in the order of [`Measure::names`].
    fn measure(&self, field: &[f64]) -> Vec<f64>;
}

/// Magnetisation and field moments of a real or `n`-component field.
pub struct FieldObservables {
    channels: usize,
}

impl FieldObservables {
    /// For a field with `channels` components.
    pub fn new(channels: usize) -> Self {
        Self { channels }
    }
}

impl Measure for FieldObservables {
    fn names(&self) -> Vec<String> {
        ["m", "abs_m", "m2", "phi2"].map(String::from).to_vec()
    }

    fn measure(&self, field: &[f64]) -> Vec<f64> {
        let m = magnetisation(field, self.channels);
        let m2: f64 = m.iter().map(|v| v * v).sum();
        let signed = if self.channels == 1 { m[0] } else { m2.sqrt() };
        vec![signed, m2.sqrt(), m2, mean_square(field, self.channels)]
    }
}

/// Improved Ising estimators from the relaxed field.
pub struct IsingImproved {
    neighbours: Vec<usize>,
    per_site: usize,
}

impl IsingImproved {
    /// On `lattice`.
    pub fn new(lattice: &Lattice) -> Self {
        let neighbours = lattice.forward_neighbours();
        let per_site = neighbours.len() / lattice.volume();
        Self {
            neighbours,
            per_site,
        }
    }
}

impl Measure for IsingImproved {
    fn names(&self) -> Vec<String> {
        ["ising_m", "ising_m2", "ising_e"]
            .map(String::from)
            .to_vec()
    }

    fn measure(&self, field: &[f64]) -> Vec<f64> {
        let v = field.len();
        let t: Vec<f64> = field.iter().map(|x| x.tanh()).collect();
        let sum: f64 = t.iter().sum();
        let sum2: f64 = t.iter().map(|a| a * a).sum();
        let mut bonds = 0.0;
        for (i, ti) in t.iter().enumerate() {
            for k in 0..self.per_site {
                bonds += ti * t[self.neighbours[i * self.per_site + k]];
            }
        }
        let vf = v as f64;
        vec![sum / vf, (sum * sum - sum2 + vf) / (vf * vf), -bonds / vf]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn improved_estimators_are_exact_for_saturated_fields() {
        // tanh(±40) = ±1 to f64 precision: the improved estimators become the spin ones.
        let lattice = Lattice::square(4).unwrap();
        let mut x = vec![40.0; 16];
        x[5] = -40.0;
        let v = IsingImproved::new(&lattice).measure(&x);
        let m = 14.0 / 16.0;
        assert!((v[0] - m).abs() < 1e-12);
        assert!((v[1] - m * m).abs() < 1e-12);
        // 32 bonds, 4 of them broken: E = −(28 − 4) = −24.
        assert!((v[2] + 24.0 / 16.0).abs() < 1e-12, "{}", v[2]);
        let f = FieldObservables::new(2).measure(&[1.0, 1.0, 0.0, 0.0]);
        assert_eq!(f, vec![1.0, 1.0, 1.0, 1.0]);
    }
}
