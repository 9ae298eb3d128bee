//! The RBM flow (Iso, Shiba & Yokoo, arXiv:1801.07172): a machine trained on Ising
//! configurations of many temperatures, applied again and again, `v → h → v`, to
//! configurations of one temperature; the temperature of the generated configurations is
//! read from their energy and magnetisation against reference curves of the same lattice.
//!
//! ```text
//! e = −(1/V) Σ_⟨ij⟩ s_i s_j,   |m| = |Σ_i s_i| / V                 (per configuration)
//! T̂ = argmin_T [(ē − e(T))/Δe]² + [(|m̄| − |m|(T))/Δm]²             (T on the reference grid,
//!                                                                   linearly interpolated)
//! ```
//!
//! with `Δe`, `Δm` the ranges of the reference curves (so both observables weigh alike).
//! The paper's finding is that the flow runs towards `T_c` when the training set spans both
//! phases; the control trains on one side of `T_c` only, which tells whether the fixed
//! point is a property of criticality or of the training set.

use crate::rbm::Rbm;
use nrg_core::{Estimate, NrgError, Result};
use serde::{Deserialize, Serialize};

/// Energy per site and `|m|` of a `side × side` periodic configuration (`J = 1`).
pub fn energy_magnetisation(s: &[f64], side: usize) -> (f64, f64) {
    let v = side * side;
    let mut e = 0.0;
    for i in 0..side {
        for j in 0..side {
            let x = s[i * side + j];
            e -= x * (s[i * side + (j + 1) % side] + s[((i + 1) % side) * side + j]);
        }
    }
    (e / v as f64, s.iter().sum::<f64>().abs() / v as f64)
}

/// Mean energy per site and `|m|` of a set, with standard errors.
pub fn observables(set: &[Vec<f64>], side: usize) -> (Estimate, Estimate) {
    let n = set.len().max(1) as f64;
    let vals: Vec<(f64, f64)> = set.iter().map(|s| energy_magnetisation(s, side)).collect();
    let est = |f: &dyn Fn(&(f64, f64)) -> f64| {
        let m = vals.iter().map(f).sum::<f64>() / n;
        let var = vals.iter().map(|x| (f(x) - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        Estimate::new(m, (var / n).sqrt())
    };
    (est(&|x| x.0), est(&|x| x.1))
}

/// The reference curves: `e(T)` and `|m|(T)` on a grid of temperatures (ascending).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReferenceCurves {
    /// Temperatures.
    pub temperatures: Vec<f64>,
    /// Energy per site.
    pub energy: Vec<Estimate>,
    /// `|m|`.
    pub magnetisation: Vec<Estimate>,
}

impl ReferenceCurves {
    /// Curves from configurations per temperature. Errors: fewer than two temperatures, not
    /// ascending, an empty set.
    pub fn new(temperatures: &[f64], sets: &[Vec<Vec<f64>>], side: usize) -> Result<Self> {
        if temperatures.len() < 2
            || temperatures.len() != sets.len()
            || temperatures.windows(2).any(|w| w[1] <= w[0])
            || sets.iter().any(|s| s.is_empty())
        {
            return Err(NrgError::param(
                "temperatures",
                "need ≥ 2 ascending temperatures, each with configurations",
            ));
        }
        let (energy, magnetisation) = sets.iter().map(|s| observables(s, side)).unzip();
        Ok(Self {
            temperatures: temperatures.to_vec(),
            energy,
            magnetisation,
        })
    }

    /// The temperature whose `(e, |m|)` is nearest to `(e, m)` (module docs), on the
    /// reference grid refined 100× by linear interpolation.
    pub fn read_temperature(&self, e: f64, m: f64) -> f64 {
        let range = |xs: &[Estimate]| {
            let (lo, hi) = xs
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), x| {
                    (l.min(x.value), h.max(x.value))
                });
            (hi - lo).max(1e-12)
        };
        let (de, dm) = (range(&self.energy), range(&self.magnetisation));
        let mut best = (f64::INFINITY, self.temperatures[0]);
        for k in 0..self.temperatures.len() - 1 {
            for q in 0..=100 {
                let f = q as f64 / 100.0;
                let lerp = |a: f64, b: f64| a + f * (b - a);
                let t = lerp(self.temperatures[k], self.temperatures[k + 1]);
                let ee = lerp(self.energy[k].value, self.energy[k + 1].value);
                let mm = lerp(self.magnetisation[k].value, self.magnetisation[k + 1].value);
                let d = ((e - ee) / de).powi(2) + ((m - mm) / dm).powi(2);
                if d < best.0 {
                    best = (d, t);
                }
            }
        }
        best.1
    }
}

/// One point of a flow: after `step` applications of `v → h → v`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowPoint {
    /// Applications of the machine.
    pub step: usize,
    /// Energy per site.
    pub energy: Estimate,
    /// `|m|`.
    pub magnetisation: Estimate,
    /// The temperature read from both.
    pub temperature: f64,
}

/// Applies `rbm` (sampling `h` given `v`, then `v` given `h`) `steps` times to every
/// configuration of `start` (`side × side`), reading the temperature after each step.
pub fn rbm_flow(
    rbm: &Rbm,
    start: &[Vec<f64>],
    side: usize,
    steps: usize,
    reference: &ReferenceCurves,
    rng: &mut impl rand::Rng,
) -> Result<Vec<FlowPoint>> {
    if start.is_empty()
        || start.iter().any(|s| s.len() != rbm.visible)
        || rbm.visible != side * side
    {
        return Err(NrgError::InvalidData(
            "the RBM flow needs configurations of the machine's visible size".into(),
        ));
    }
    let mut set: Vec<Vec<f64>> = start.to_vec();
    let mut out = Vec::with_capacity(steps + 1);
    for step in 0..=steps {
        if step > 0 {
            for v in set.iter_mut() {
                rbm.gibbs(v, 1, rng);
            }
        }
        let (e, m) = observables(&set, side);
        out.push(FlowPoint {
            step,
            temperature: reference.read_temperature(e.value, m.value),
            energy: e,
            magnetisation: m,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ordered and the checkerboard states, and the temperature read back from points
    /// on the reference curve.
    #[test]
    fn observables_and_read_back() {
        let up = vec![1.0; 16];
        assert_eq!(energy_magnetisation(&up, 4), (-2.0, 1.0));
        let check: Vec<f64> = (0..16)
            .map(|k| if (k / 4 + k % 4) % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert_eq!(energy_magnetisation(&check, 4), (2.0, 0.0));
        let r = ReferenceCurves {
            temperatures: vec![1.0, 2.0, 3.0],
            energy: [-1.9, -1.4, -0.8].map(|v| Estimate::new(v, 0.0)).to_vec(),
            magnetisation: [0.98, 0.7, 0.2].map(|v| Estimate::new(v, 0.0)).to_vec(),
        };
        assert!((r.read_temperature(-1.4, 0.7) - 2.0).abs() < 1e-9);
        assert!((r.read_temperature(-1.1, 0.45) - 2.5).abs() < 1e-9);
        assert!((r.read_temperature(-5.0, 1.0) - 1.0).abs() < 1e-9);
    }
}
