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
use super::real::{Big, Real, evaluate_precise};
use super::{IsingThermo, check_beta};
use nrg_core::{NrgError, Result};

/// The critical coupling `K_c = ln(1 + √2)/2`.
pub fn critical_beta() -> f64 {
    (1.0 + 2f64.sqrt()).ln() / 2.0
}

/// Bits of [`Big`] precision for the derivatives of `ln Z` of a system of `volume` sites at
/// coupling `k`: 53 for the result and 64 guard bits, plus what the formulas lose —
/// `2 log₂(1/K)` at high temperature (terms of size `V/K` and `V/K²` whose sums are `2KV`
/// and `2V`), `8K log₂ e` at low temperature (`c ≈ 64K²e^{−8K}` left of terms of order
/// one), `2 log₂(1/|K − K_c|)` near criticality (Onsager's `1 − κ ∝ (K − K_c)²`), and
/// `log₂ V` for the sums. [`evaluate_precise`] checks the estimate.
pub(crate) fn guard_bits(k: f64, volume: f64) -> usize {
    let high_t = (-2.0 * k.log2()).max(0.0);
    let low_t = 8.0 * std::f64::consts::LOG2_E * k;
    let critical = (-2.0 * (k - critical_beta()).abs().max(1e-18).log2()).clamp(0.0, 120.0);
    (53.0 + 64.0 + high_t + low_t + critical + volume.log2().max(0.0)).ceil() as usize
}

/// The most bits [`evaluate_precise`] may use (beyond `K ≈ 1500` the specific heat
/// underflows `f64` long before).
pub(crate) const MAX_BITS: usize = 1 << 15;

/// `[ln Z, ∂_K ln Z, ∂²_K ln Z]` of `f` evaluated in [`Big`] at `beta`, with the precision
/// that gives them to `f64` relative accuracy.
pub(crate) fn precise_ln_z(
    beta: f64,
    volume: f64,
    f: impl Fn(Dual2<Big>) -> Dual2<Big>,
) -> Result<Dual2> {
    let (r, agreed) = evaluate_precise(guard_bits(beta, volume), MAX_BITS, || {
        let z = f(Dual2::variable(Big::from_f64(beta)));
        [z.v.to_f64(), z.d1.to_f64(), z.d2.to_f64()]
    });
    if !agreed || r.iter().any(|v| !v.is_finite()) {
        return Err(NrgError::param(
            "beta",
            format!(
                "{beta} is outside the range where ln Z and its derivatives are representable in f64"
            ),
        ));
    }
    Ok(Dual2 {
        v: r[0],
        d1: r[1],
        d2: r[2],
    })
}

/// Kaufman's exact solution on the `L × L` torus at inverse temperature `beta` (`J = 1`).
///
/// `ln Z`, `u` and `c` are exact to `f64` relative accuracy at every `β` (the formula is
/// evaluated in extended precision, [`super::real`]): e.g. `L = 4`, `β = 10⁻⁸` gives
/// `u = −2.0·10⁻⁸`, `c = 2.0·10⁻¹⁶`.
pub fn kaufman(l: usize, beta: f64) -> Result<IsingThermo> {
    if l < 2 {
        return Err(NrgError::param("L", format!("must be ≥ 2, got {l}")));
    }
    let beta = check_beta(beta)?;
    let volume = (l * l) as f64;
    let ln_z = precise_ln_z(beta, volume, |k| kaufman_ln_z(l, k))?;
    Ok(IsingThermo::from_ln_z(l, beta, volume, ln_z))
}

/// `2 cosh y · e^{−|y|}` (or `2 sinh y · e^{−|y|}`) as a dual, with `|y|` returned as the scale.
fn two_cosh_or_sinh<T: Real>(y: Dual2<T>, sinh: bool) -> (Dual2<T>, T) {
    let a = Dual2::constant(y.v.abs());
    let plus = (y.clone() - a.clone()).exp();
    let minus = (-y - a.clone()).exp();
    (if sinh { plus - minus } else { plus + minus }, a.v)
}

/// `γ_k` for `k ≥ 1` from `e = cosh γ − 1`: `acosh(1 + e)` with exact derivatives.
fn gamma_k<T: Real>(e: Dual2<T>) -> Dual2<T> {
    let one = T::from_f64(1.0);
    let q = e.v.clone() * (e.v.clone() + T::from_f64(2.0)); // (1+e)² − 1
    let r = q.sqrt();
    let f = (e.v.clone() + r.clone()).ln_1p();
    let d1 = one.clone() / r.clone();
    let d2 = -(one + e.v.clone()) / (q * r);
    e.chain(f, d1, d2)
}

/// `ln Z` of the `L × L` torus as a function of `K` (Kaufman).
pub(crate) fn kaufman_ln_z<T: Real>(l: usize, k: Dual2<T>) -> Dual2<T> {
    let lf = l as f64;
    let v = lf * lf;
    let s = (k.clone() * 2.0).sinh();
    let base = (s.clone() + (-1.0)).square() / s.clone(); // cosh2K coth2K − 1 = (s−1)²/s
    let gammas: Vec<Dual2<T>> = (0..2 * l)
        .map(|idx| {
            if idx == 0 {
                k.clone() * 2.0 + k.clone().tanh().ln()
            } else {
                let h = (T::pi() * T::from_f64(idx as f64) / T::from_f64(2.0 * lf)).sin();
                gamma_k(base.clone() + Dual2::constant(T::from_f64(2.0) * h.clone() * h))
            }
        })
        .collect();
    let product = |offset: usize, sinh: bool| {
        let mut p = ScaledDual2::one();
        for r in 0..l {
            let (f, scale) = two_cosh_or_sinh(gammas[2 * r + offset].clone() * (lf / 2.0), sinh);
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
/// `ln_z` is reported as infinite; use `ln_z_per_site`. `u` and `c` are exact to `f64`
/// relative accuracy at every `β` (extended precision, as for [`kaufman`]); at the `f64`
/// nearest `K_c` the specific heat is finite (its logarithmic divergence is cut off by the
/// distance to `K_c`, ~10⁻¹⁷).
pub fn onsager(beta: f64) -> Result<IsingThermo> {
    let k = check_beta(beta)?;
    let c2 = (2.0 * k).cosh();
    let s2 = (2.0 * k).sinh();
    let kappa = (2.0 * s2 / (c2 * c2)).min(1.0);
    // ∫_0^{π/2} ln ½(1 + √(1 − κ² sin²θ)) dθ by composite Gauss–Legendre; the integrand is
    // smooth for κ < 1 and continuous with a kink-free cos θ at κ = 1.
    let integral = gauss_legendre(0.0, std::f64::consts::FRAC_PI_2, 256, |th| {
        let st = th.sin();
        (0.5 * (1.0 + (1.0 - kappa * kappa * st * st).max(0.0).sqrt())).ln()
    });
    let ln_z_per_site = (2.0 * c2).ln() + integral / std::f64::consts::PI;
    // u(K) with its exact K-derivative; c = −K² ∂u/∂K.
    let (r, agreed) = evaluate_precise(guard_bits(k, 1.0), MAX_BITS, || {
        let u = onsager_energy(Dual2::variable(Big::from_f64(k)));
        [u.v.to_f64(), u.d1.to_f64()]
    });
    if !agreed || !r[0].is_finite() {
        return Err(NrgError::param(
            "beta",
            format!("{beta} is outside the range where u and c are representable in f64"),
        ));
    }
    Ok(IsingThermo {
        l: 0,
        beta: k,
        ln_z: f64::INFINITY,
        ln_z_per_site,
        free_energy_per_site: -ln_z_per_site / k,
        energy_per_site: r[0],
        specific_heat_per_site: -k * k * r[1],
    })
}

/// Onsager's internal energy per site as a function of `K` (a dual number), `κ < 1`.
fn onsager_energy<T: Real>(k: Dual2<T>) -> Dual2<T> {
    let one = T::from_f64(1.0);
    let t2 = (k.clone() * 2.0).tanh();
    let c2 = (k.clone() * 2.0).cosh();
    let kappa = (k * 2.0).sinh() * 2.0 / c2.square();
    let kappa_p = t2.clone().square() * 2.0 + (-1.0);
    let kv = kappa.v.clone();
    let (ek, ee) = elliptic_k_e_generic(kv.clone());
    let q = one.clone() - kv.clone() * kv.clone();
    let kq = kv.clone() * q.clone();
    let dk = ee.clone() / kq.clone() - ek.clone() / kv.clone();
    let de = (ee.clone() - ek.clone()) / kv.clone();
    let d2k = de / kq.clone()
        - ee * (one - T::from_f64(3.0) * kv.clone() * kv.clone()) / (kq.clone() * kq)
        - dk.clone() / kv.clone()
        + ek.clone() / (kv.clone() * kv);
    // 2/π in T, not in f64: at K → 0 the bracket is 1 − 1 + O(K²), and an f64 π would leave
    // its rounding (10⁻¹⁷) in a result of size 4K²
    let big_k = kappa.chain(ek, dk, d2k) * Dual2::constant(T::from_f64(2.0) / T::pi());
    -(t2.recip() * (kappa_p * big_k + 1.0))
}

/// Complete elliptic integrals `K(k)`, `E(k)` (modulus `k`) by the arithmetic–geometric mean.
pub fn elliptic_k_e(k: f64) -> (f64, f64) {
    if k >= 1.0 {
        return (f64::INFINITY, 1.0);
    }
    elliptic_k_e_generic(k)
}

/// [`elliptic_k_e`] in any [`Real`] (`0 ≤ k < 1`), iterated to the type's rounding unit.
fn elliptic_k_e_generic<T: Real>(k: T) -> (T, T) {
    let one = T::from_f64(1.0);
    let half = T::from_f64(0.5);
    let mut a = one.clone();
    let mut b = (one.clone() - k.clone() * k.clone()).sqrt();
    let mut c = k;
    let mut sum = half.clone() * c.clone() * c.clone(); // 2^{n−1} c_n² at n = 0
    let mut pow = half.clone();
    let eps2 = T::epsilon() * T::epsilon() * 1e-2;
    for _ in 0..200 {
        let c2 = c.clone() * c.clone();
        if c2.to_f64() <= eps2 * sum.to_f64().max(1e-300) {
            break;
        }
        let an = half.clone() * (a.clone() + b.clone());
        let bn = (a * b).sqrt();
        c = c2 / (T::from_f64(4.0) * an.clone()); // = (a − b)/2 without cancellation
        a = an;
        b = bn;
        pow = pow * T::from_f64(2.0);
        sum = sum + pow.clone() * c.clone() * c.clone();
    }
    let kk = T::pi() * half / a;
    (kk.clone(), kk * (one - sum))
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
                assert!(
                    rel(exact.specific_heat_per_site, brute.specific_heat_per_site) < 1e-10,
                    "L={l} β={beta}: c {} vs {}",
                    exact.specific_heat_per_site,
                    brute.specific_heat_per_site
                );
            }
        }
    }

    /// Issue 17, item 5: `u` and `c` keep their relative accuracy at extreme β. Kaufman
    /// against enumeration (whose sums have terms of one sign) for L = 2, 3, 4 from β = 10⁻⁸
    /// to 20, to 10⁻¹² relative. Before: L = 4, β = 10⁻⁸ gave u = −7.45·10⁻⁹ (exact
    /// −2.0·10⁻⁸) and c = −7·10⁻¹⁶ (exact +2·10⁻¹⁶).
    #[test]
    fn kaufman_is_relatively_exact_at_extreme_beta() {
        for l in 2..=4 {
            let dos = ising_density_of_states(2, l).unwrap();
            for beta in [1e-8, 1e-4, 0.01, 3.0, 5.0, 10.0, 20.0] {
                let exact = kaufman(l, beta).unwrap();
                let brute = dos.thermo(beta).unwrap();
                for (name, a, b) in [
                    ("ln Z", exact.ln_z, brute.ln_z),
                    ("u", exact.energy_per_site, brute.energy_per_site),
                    (
                        "c",
                        exact.specific_heat_per_site,
                        brute.specific_heat_per_site,
                    ),
                ] {
                    assert!(
                        b != 0.0 && rel(a, b) < 1e-12,
                        "L={l} β={beta}: {name} {a} vs {b}"
                    );
                }
            }
        }
        // the issue's case against the high-temperature series of the 4×4 torus,
        // u = −2 tanh K − O(K³), c = 2K² sech² K + O(K⁴)
        let t = kaufman(4, 1e-8).unwrap();
        assert!(
            rel(t.energy_per_site, -2e-8) < 1e-14,
            "{}",
            t.energy_per_site
        );
        assert!(rel(t.specific_heat_per_site, 2e-16) < 1e-14);
    }

    /// Onsager at extreme β against the infinite lattice's series: high temperature
    /// `u = −2 tanh K − O(K³)`, `c = 2K² sech²K + O(K⁴)`; low temperature
    /// (`ln Z/N = 2K + e^{−8K} + 2e^{−12K} + …`) `u = −2 + 8e^{−8K} + …`,
    /// `c = 64K²e^{−8K}(1 + 4.5 e^{−4K} + …)`. Before: c < 0 at β = 10. Kaufman at L = 512
    /// agrees (finite-size terms are far below rounding there).
    #[test]
    fn onsager_is_relatively_exact_at_extreme_beta() {
        let o = onsager(1e-8).unwrap();
        assert!(
            rel(o.energy_per_site, -2e-8) < 1e-14,
            "{}",
            o.energy_per_site
        );
        assert!(rel(o.specific_heat_per_site, 2e-16) < 1e-14);
        for beta in [10.0, 20.0] {
            let o = onsager(beta).unwrap();
            let x8 = (-8.0f64 * beta).exp();
            let c = 64.0 * beta * beta * x8 * (1.0 + 4.5 * (-4.0f64 * beta).exp());
            assert!(o.specific_heat_per_site > 0.0);
            assert!(
                rel(o.specific_heat_per_site, c) < 1e-14,
                "β={beta}: {o:?} vs {c}"
            );
            assert_eq!(o.energy_per_site, -2.0);
        }
        for beta in [1e-8, 10.0] {
            let (k, o) = (kaufman(512, beta).unwrap(), onsager(beta).unwrap());
            assert!(
                rel(k.energy_per_site, o.energy_per_site) < 1e-12,
                "β={beta}"
            );
            assert!(rel(k.specific_heat_per_site, o.specific_heat_per_site) < 1e-12);
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
