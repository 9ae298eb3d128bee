//! The 2D Ising model `H = −Σ_⟨ij⟩ s_i s_j` (`J = 1`, `K = β`) on the periodic `L × L` torus.
//!
//! **Kaufman (1949)**, any `L ≥ 2`:
//!
//! ```text
//! Z = ½ (2 sinh 2K)^{V/2} [ Π_r 2cosh(Lγ_{2r+1}/2) + Π_r 2sinh(Lγ_{2r+1}/2)
//!                          + Π_r 2cosh(Lγ_{2r}/2)   + Π_r 2sinh(Lγ_{2r}/2) ],  r = 0 … L−1
//! cosh γ_k = cosh 2K coth 2K − cos(πk/L)  (k ≥ 1, γ_k > 0),  γ_0 = 2K + ln tanh K (signed)
//! ```
//!
//! evaluated with scaled products (no overflow at any `L`) and with `γ_k` from
//! `cosh γ_k − 1 = (s − 1)²/s + 2 sin²(πk/2L)`, `s = sinh 2K`, so that `acosh` near 1 keeps
//! full precision at criticality. `K`-derivatives are exact ([`super::dual`]).
//!
//! **Onsager**, infinite lattice:
//! `−βf = ln(2 cosh 2K) + π⁻¹ ∫_0^{π/2} ln ½(1 + √(1 − κ² sin²θ)) dθ`, `κ = 2 sinh 2K / cosh² 2K`;
//! `u = −coth 2K [1 + (2/π) κ′ K(κ)]`, `κ′ = 2 tanh² 2K − 1`, with `K(κ)` the complete
//! elliptic integral of the first kind; `c = −K² ∂u/∂K`, differentiated exactly.

use super::dual::{Dual2, ScaledDual2};
use super::{IsingThermo, check_beta};
use nrg_core::{NrgError, Result};

/// The critical coupling `K_c = ln(1 + √2)/2`.
pub fn critical_beta() -> f64 {
    (1.0 + 2f64.sqrt()).ln() / 2.0
}

/// Kaufman's exact solution on the `L × L` torus at inverse temperature `beta` (`J = 1`).
pub fn kaufman(l: usize, beta: f64) -> Result<IsingThermo> {
    if l < 2 {
        return Err(NrgError::param("L", format!("must be ≥ 2, got {l}")));
    }
    let beta = check_beta(beta)?;
    let ln_z = kaufman_ln_z(l, Dual2::variable(beta));
    if !ln_z.v.is_finite() || !ln_z.d1.is_finite() || !ln_z.d2.is_finite() {
        return Err(NrgError::param(
            "beta",
            format!("{beta} is outside the range where ln Z is representable in f64"),
        ));
    }
    Ok(IsingThermo::from_ln_z(l, beta, (l * l) as f64, ln_z))
}

/// `2 cosh y · e^{−|y|}` (or `2 sinh y · e^{−|y|}`) as a dual, with `|y|` returned as the scale.
fn two_cosh_or_sinh(y: Dual2, sinh: bool) -> (Dual2, f64) {
    let a = y.v.abs();
    let plus = (y + (-a)).exp();
    let minus = (-y + (-a)).exp();
    (if sinh { plus - minus } else { plus + minus }, a)
}

/// `γ_k` for `k ≥ 1` from `e = cosh γ − 1`: `acosh(1 + e)` with exact derivatives.
fn gamma_k(e: Dual2) -> Dual2 {
    let q = e.v * (e.v + 2.0); // (1+e)² − 1
    let r = q.sqrt();
    e.chain((e.v + r).ln_1p(), 1.0 / r, -(1.0 + e.v) / (q * r))
}

fn kaufman_ln_z(l: usize, k: Dual2) -> Dual2 {
    let lf = l as f64;
    let v = lf * lf;
    let s = (k * 2.0).sinh();
    let base = (s + (-1.0)).square() / s; // cosh2K coth2K − 1 = (s−1)²/s
    let gammas: Vec<Dual2> = (0..2 * l)
        .map(|idx| {
            if idx == 0 {
                k * 2.0 + k.tanh().ln()
            } else {
                let h = (std::f64::consts::PI * idx as f64 / (2.0 * lf)).sin();
                gamma_k(base + 2.0 * h * h)
            }
        })
        .collect();
    let product = |offset: usize, sinh: bool| {
        let mut p = ScaledDual2::one();
        for r in 0..l {
            let (f, scale) = two_cosh_or_sinh(gammas[2 * r + offset] * (lf / 2.0), sinh);
            p = p.mul_scaled(f, scale);
        }
        p
    };
    let terms = [
        product(1, false),
        product(1, true),
        product(0, false),
        product(0, true),
    ];
    let prefactor = (s * 2.0).ln() * (v / 2.0) + (-std::f64::consts::LN_2);
    prefactor + ScaledDual2::ln_of_sum(&terms)
}

/// Onsager's exact free energy, energy and specific heat per site of the infinite lattice.
/// `ln_z` is reported as infinite; use `ln_z_per_site`. At `K_c` the specific heat is `+∞`.
pub fn onsager(beta: f64) -> Result<IsingThermo> {
    let k = check_beta(beta)?;
    let c2 = (2.0 * k).cosh();
    let s2 = (2.0 * k).sinh();
    let t2 = (2.0 * k).tanh();
    let kappa = (2.0 * s2 / (c2 * c2)).min(1.0);
    // ∫_0^{π/2} ln ½(1 + √(1 − κ² sin²θ)) dθ by composite Gauss–Legendre; the integrand is
    // smooth for κ < 1 and continuous with a kink-free cos θ at κ = 1.
    let integral = gauss_legendre(0.0, std::f64::consts::FRAC_PI_2, 256, |th| {
        let st = th.sin();
        (0.5 * (1.0 + (1.0 - kappa * kappa * st * st).max(0.0).sqrt())).ln()
    });
    let ln_z_per_site = (2.0 * c2).ln() + integral / std::f64::consts::PI;
    // u(K) with its exact K-derivative; c = −K² ∂u/∂K.
    let (energy, heat) = if kappa >= 1.0 {
        (-1.0 / t2, f64::INFINITY)
    } else {
        let u = onsager_energy(Dual2::variable(k));
        (u.v, -k * k * u.d1)
    };
    Ok(IsingThermo {
        l: 0,
        beta: k,
        ln_z: f64::INFINITY,
        ln_z_per_site,
        free_energy_per_site: -ln_z_per_site / k,
        energy_per_site: energy,
        specific_heat_per_site: heat,
    })
}

/// Onsager's internal energy per site as a function of `K` (a dual number), `κ < 1`.
fn onsager_energy(k: Dual2) -> Dual2 {
    let t2 = (k * 2.0).tanh();
    let c2 = (k * 2.0).cosh();
    let kappa = (k * 2.0).sinh() * 2.0 / c2.square();
    let kappa_p = t2.square() * 2.0 + (-1.0);
    let (ek, ee) = elliptic_k_e(kappa.v);
    let kv = kappa.v;
    let q = 1.0 - kv * kv;
    let dk = ee / (kv * q) - ek / kv;
    let de = (ee - ek) / kv;
    let d2k =
        de / (kv * q) - ee * (1.0 - 3.0 * kv * kv) / (kv * q).powi(2) - dk / kv + ek / (kv * kv);
    let big_k = kappa.chain(ek, dk, d2k);
    -(t2.recip() * (kappa_p * big_k * (2.0 / std::f64::consts::PI) + 1.0))
}

/// Complete elliptic integrals `K(k)`, `E(k)` (modulus `k`) by the arithmetic–geometric mean.
pub fn elliptic_k_e(k: f64) -> (f64, f64) {
    if k >= 1.0 {
        return (f64::INFINITY, 1.0);
    }
    let mut a = 1.0;
    let mut b = (1.0 - k * k).sqrt();
    let mut c = k;
    let mut sum = 0.5 * c * c; // 2^{n−1} c_n² at n = 0
    let mut pow = 0.5;
    for _ in 0..64 {
        if c * c < 1e-34 * sum.max(1e-300) {
            break;
        }
        let an = 0.5 * (a + b);
        let bn = (a * b).sqrt();
        c = c * c / (4.0 * an); // = (a − b)/2 without cancellation
        a = an;
        b = bn;
        pow *= 2.0;
        sum += pow * c * c;
    }
    let kk = std::f64::consts::FRAC_PI_2 / a;
    (kk, kk * (1.0 - sum))
}

/// Composite Gauss–Legendre quadrature (5 nodes per panel) of `f` on `[a, b]`.
fn gauss_legendre(a: f64, b: f64, panels: usize, f: impl Fn(f64) -> f64) -> f64 {
    const X: [f64; 5] = [
        0.0,
        0.538_469_310_105_683_1,
        -0.538_469_310_105_683_1,
        0.906_179_845_938_664,
        -0.906_179_845_938_664,
    ];
    const W: [f64; 5] = [
        0.568_888_888_888_888_9,
        0.478_628_670_499_366_47,
        0.478_628_670_499_366_47,
        0.236_926_885_056_189_08,
        0.236_926_885_056_189_08,
    ];
    let h = (b - a) / panels as f64;
    let mut total = 0.0;
    for p in 0..panels {
        let mid = a + (p as f64 + 0.5) * h;
        for (x, w) in X.iter().zip(W) {
            total += w * f(mid + 0.5 * h * x);
        }
    }
    0.5 * h * total
}

#[cfg(test)]
mod tests {
    use super::super::brute_force::ising_density_of_states;
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(1e-300)
    }

    /// Kaufman equals enumeration of all 2^V states for L = 2, 3, 4, at temperatures on
    /// both sides of and at K_c, to 1e-10 relative (f64 rounding of the sums is ~1e-14).
    #[test]
    fn kaufman_equals_brute_force() {
        for l in 2..=4 {
            let dos = ising_density_of_states(2, l).unwrap();
            for beta in [0.1, 0.3, critical_beta(), 0.5, 1.0, 2.0] {
                let exact = kaufman(l, beta).unwrap();
                let brute = dos.thermo(beta).unwrap();
                assert!(rel(exact.ln_z, brute.ln_z) < 1e-10, "L={l} β={beta}: ln Z");
                assert!(
                    rel(exact.energy_per_site, brute.energy_per_site) < 1e-10,
                    "L={l} β={beta}: u {} vs {}",
                    exact.energy_per_site,
                    brute.energy_per_site
                );
                // ∂² ln Z carries an absolute rounding floor ε·(dV)² from the cancellation
                // Z″/Z − (Z′/Z)²: at low temperature c itself is far below it (c ≈ 3e-5 at
                // L = 3, β = 2), so c is compared to 1e-10 of max(c, 1e-3).
                assert!(
                    (exact.specific_heat_per_site - brute.specific_heat_per_site).abs()
                        < 1e-10 * brute.specific_heat_per_site.max(1e-3),
                    "L={l} β={beta}: c {} vs {}",
                    exact.specific_heat_per_site,
                    brute.specific_heat_per_site
                );
            }
        }
    }

    /// The published value (NeuralRG, Li & Wang 2018): ln Z = 952.648… at β_c, L = 32.
    #[test]
    fn kaufman_published_l32_value() {
        let t = kaufman(32, critical_beta()).unwrap();
        assert!((t.ln_z - 952.648).abs() < 5e-4, "{}", t.ln_z);
    }

    /// Large L is finite and converges to Onsager: exponentially fast off criticality,
    /// as 1/L² at K_c. In the ordered phase the finite torus keeps both ground-state
    /// sectors, `ln Z_L = V ln z_∞ + ln 2 + O(e^{−L/ξ})`.
    #[test]
    fn kaufman_large_l_matches_onsager() {
        for (beta, sectors) in [(0.3, 1.0f64), (0.6, 2.0)] {
            let k = kaufman(512, beta).unwrap();
            let o = onsager(beta).unwrap();
            let per_site = (k.ln_z - sectors.ln()) / (512.0 * 512.0);
            assert!(rel(per_site, o.ln_z_per_site) < 1e-12, "β={beta}");
            assert!(
                rel(k.energy_per_site, o.energy_per_site) < 1e-10,
                "β={beta}"
            );
            assert!(rel(k.specific_heat_per_site, o.specific_heat_per_site) < 1e-8);
        }
        let kc = critical_beta();
        let k = kaufman(512, kc).unwrap();
        let o = onsager(kc).unwrap();
        assert!(k.ln_z.is_finite() && k.specific_heat_per_site.is_finite());
        assert!((k.ln_z_per_site - o.ln_z_per_site).abs() < 1e-5);
        assert!((k.energy_per_site - o.energy_per_site).abs() < 1e-2);
        assert!((o.energy_per_site + 2f64.sqrt()).abs() < 1e-12);
        // the finite-size specific heat at K_c grows like (8/π) K_c² ln L
        let c256 = kaufman(256, kc).unwrap().specific_heat_per_site;
        let slope = (k.specific_heat_per_site - c256) / 2f64.ln();
        assert!(
            (slope - 8.0 / std::f64::consts::PI * kc * kc).abs() < 0.01,
            "{slope}"
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(kaufman(1, 0.4).is_err());
        assert!(kaufman(4, 0.0).is_err());
        assert!(kaufman(4, -0.4).is_err());
        assert!(kaufman(4, f64::NAN).is_err());
        assert!(onsager(f64::INFINITY).is_err());
    }

    #[test]
    fn elliptic_integrals_known_values() {
        let (k0, e0) = elliptic_k_e(0.0);
        assert!((k0 - std::f64::consts::FRAC_PI_2).abs() < 1e-15);
        assert!((e0 - std::f64::consts::FRAC_PI_2).abs() < 1e-15);
        // K(1/√2) = Γ(1/4)²/(4√π) = 1.854074677301372
        let (k, e) = elliptic_k_e(0.5f64.sqrt());
        assert!((k - 1.854_074_677_301_372).abs() < 1e-13);
        // Legendre's relation at k = 1/√2: 2EK − K² = π/2
        assert!((2.0 * e * k - k * k - std::f64::consts::FRAC_PI_2).abs() < 1e-14);
        assert!((e - 1.350_643_881_047_675_5).abs() < 1e-14);
    }
}
