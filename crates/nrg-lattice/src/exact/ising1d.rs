//! The periodic Ising chain `H = −Σ_i s_i s_{i+1}` (`J = 1`, `K = β`).
//!
//! Transfer matrix: `Z = λ₊^L + λ₋^L`, `λ₊ = 2 cosh K`, `λ₋ = 2 sinh K`, evaluated as
//! `ln Z = L ln(2 cosh K) + ln(1 + tanh^L K)`. Exact decimation of every other spin maps the
//! chain of `L` sites at `K` to a chain of `L/2` sites at `tanh K′ = tanh² K`, times a
//! constant per decimated spin (see [`decimate`]).

use super::dual::Dual2;
use super::real::Real;
use super::{IsingThermo, check_beta};
use nrg_core::{NrgError, Result};

/// The exact solution of the periodic chain of `l ≥ 2` sites; `u` and `c` to `f64` relative
/// accuracy at every `β` (extended precision, as for [`super::ising2d::kaufman`]).
pub fn chain(l: usize, beta: f64) -> Result<IsingThermo> {
    if l < 2 {
        return Err(NrgError::param("L", format!("must be ≥ 2, got {l}")));
    }
    let beta = check_beta(beta)?;
    let lf = l as f64;
    let ln_z = super::ising2d::precise_ln_z(beta, lf, |k| chain_ln_z(l, k))?;
    Ok(IsingThermo::from_ln_z(l, beta, lf, ln_z))
}

/// `ln Z = L ln(2 cosh K) + ln(1 + tanh^L K)` as a function of `K`.
fn chain_ln_z<T: Real>(l: usize, k: Dual2<T>) -> Dual2<T> {
    let lf = l as f64;
    k.clone().ln_2cosh() * lf + (k.tanh().ln() * lf).exp().ln_1p()
}

/// One exact decimation step: summing out every other spin of the chain at coupling `K`
/// gives the chain of half the length at `K′` with `tanh K′ = tanh² K`, times a constant
/// per decimated spin: `Z_L(K) = g(K)^{L/2} Z_{L/2}(K′)`, `g = 2 cosh² K / cosh K′`.
/// Returns `(K′, ln g)`.
pub fn decimate(k: f64) -> (f64, f64) {
    let t = k.tanh();
    let k_new = (t * t).atanh();
    let ln_g = std::f64::consts::LN_2 + 2.0 * k.cosh().ln() - k_new.cosh().ln();
    (k_new, ln_g)
}

#[cfg(test)]
mod tests {
    use super::super::brute_force::ising_density_of_states;
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs()
    }

    #[test]
    fn transfer_matrix_equals_brute_force() {
        for l in [2, 3, 5, 8, 12] {
            let dos = ising_density_of_states(1, l).unwrap();
            for beta in [0.1, 0.5, 1.0, 3.0] {
                let a = chain(l, beta).unwrap();
                let b = dos.thermo(beta).unwrap();
                assert!(rel(a.ln_z, b.ln_z) < 1e-12, "L={l} β={beta}");
                assert!(rel(a.energy_per_site, b.energy_per_site) < 1e-10);
                assert!(rel(a.specific_heat_per_site, b.specific_heat_per_site) < 1e-9);
            }
        }
    }

    /// `u` and `c` to relative accuracy at extreme β (the same kind of fault as Kaufman's:
    /// `1 − tanh² K` and `ln tanh K` lose every digit in f64 beyond K ≈ 19).
    #[test]
    fn chain_is_relatively_exact_at_extreme_beta() {
        for l in [2, 5, 12] {
            let dos = ising_density_of_states(1, l).unwrap();
            for beta in [1e-8, 0.01, 10.0, 20.0, 40.0] {
                let a = chain(l, beta).unwrap();
                let b = dos.thermo(beta).unwrap();
                assert!(
                    rel(a.energy_per_site, b.energy_per_site) < 1e-12,
                    "L={l} β={beta}"
                );
                assert!(
                    rel(a.specific_heat_per_site, b.specific_heat_per_site) < 1e-12,
                    "L={l} β={beta}: c {} vs {}",
                    a.specific_heat_per_site,
                    b.specific_heat_per_site
                );
            }
        }
    }

    /// Decimation is exact: Z_L(K) = g^{L/2} Z_{L/2}(K′).
    #[test]
    fn decimation_preserves_z() {
        for beta in [0.2, 0.8, 1.7] {
            let (k2, ln_g) = decimate(beta);
            let full = chain(16, beta).unwrap().ln_z;
            let half = chain(8, k2).unwrap().ln_z + 8.0 * ln_g;
            assert!(rel(full, half) < 1e-12, "β={beta}: {full} vs {half}");
        }
    }
}
