//! Renormalised couplings from block-spin configurations.
//!
//! **1D, nearest neighbour.** On a periodic ring of `N` sites with coupling `K` (`H = −K Σ
//! s_i s_{i+1}` in units of `kT`), with `t = tanh K`, the transfer matrix gives exactly
//!
//! ```text
//! ⟨s_i s_{i+1}⟩ = (t + t^{N−1}) / (1 + t^N)
//! ```
//!
//! which increases strictly with `t ∈ (0, 1)`, so the coupling `K'` of block-spin
//! configurations is read off their measured nearest-neighbour correlation by bisection.
//! Decimating every other spin of a ring (`b = 2`) gives again a nearest-neighbour ring with
//! `tanh K' = tanh² K` exactly — the recursion the measurement is tested against. The error
//! is the Gamma method's for the derived quantity (the configurations come from a chain).

use nrg_core::stats::gamma_method_derived;
use nrg_core::{Estimate, NrgError, Result};

/// `⟨s_i s_{i+1}⟩` of a periodic ring of `n` sites at `t = tanh K`.
pub fn ring_correlation(t: f64, n: usize) -> f64 {
    let n = n as i32;
    (t + t.powi(n - 1)) / (1.0 + t.powi(n))
}

/// The `K ≥ 0` whose ring of `n` sites has nearest-neighbour correlation `c` (`∞` at
/// `c ≥ 1`, 0 at `c ≤ 0` — a ring has no antiferromagnetic answer here).
pub fn coupling_from_correlation(c: f64, n: usize) -> f64 {
    if c <= 0.0 {
        return 0.0;
    }
    if c >= 1.0 {
        return f64::INFINITY;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if ring_correlation(mid, n) < c {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (0.5 * (lo + hi)).atanh()
}

/// The nearest-neighbour coupling `K'` of ring configurations (each of `n` sites, in chain
/// order), with its Gamma-method error. Errors: fewer than 2 configurations, a wrong length.
pub fn ring_coupling(configurations: &[Vec<f64>], n: usize) -> Result<Estimate> {
    if configurations.len() < 2 || n < 3 {
        return Err(NrgError::param(
            "configurations",
            "need at least 2 configurations of rings of ≥ 3 sites",
        ));
    }
    let mut series = Vec::with_capacity(configurations.len());
    for c in configurations {
        if c.len() != n {
            return Err(NrgError::InvalidData(format!(
                "a configuration of {} sites on a ring of {n}",
                c.len()
            )));
        }
        series.push((0..n).map(|i| c[i] * c[(i + 1) % n]).sum::<f64>() / n as f64);
    }
    let mean = series.iter().sum::<f64>() / series.len() as f64;
    let fully_ordered = || {
        // β → ∞: every block configuration (or every jackknife mean) fully ordered.
        NrgError::InvalidData(format!(
            "the block spins are fully ordered (⟨s s⟩ = 1 within the sample): K' is beyond \
             what {} configurations of {n} sites can resolve",
            configurations.len()
        ))
    };
    if !coupling_from_correlation(mean, n).is_finite() {
        return Err(fully_ordered());
    }
    let e: Estimate =
        gamma_method_derived(&[&series], |m| coupling_from_correlation(m[0], n))?.into();
    if !(e.value.is_finite() && e.error.is_finite()) {
        return Err(fully_ordered());
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring formula against brute-force enumeration (n = 6), and the inversion.
    #[test]
    fn ring_correlation_matches_enumeration() {
        let n = 6;
        for k in [0.1, 0.7, 1.5] {
            let (mut z, mut zc) = (0.0, 0.0);
            for c in 0..(1u32 << n) {
                let s: Vec<f64> = (0..n)
                    .map(|i| if c >> i & 1 == 1 { 1.0 } else { -1.0 })
                    .collect();
                let e: f64 = (0..n).map(|i| s[i] * s[(i + 1) % n]).sum();
                let w = (k * e).exp();
                z += w;
                zc += w * s[0] * s[1];
            }
            let exact = zc / z;
            assert!(
                (ring_correlation(f64::tanh(k), n) - exact).abs() < 1e-12,
                "K = {k}"
            );
            assert!((coupling_from_correlation(exact, n) - k).abs() < 1e-9);
        }
        assert!(ring_coupling(&[vec![1.0; 4]], 4).is_err());
        // Fully ordered rings (β → ∞): an error, not an infinite K' with a NaN error bar.
        let ordered = vec![vec![1.0; 4], vec![-1.0; 4], vec![1.0; 4]];
        let err = format!("{:?}", ring_coupling(&ordered, 4));
        assert!(err.contains("ordered"), "{err}");
        // Infinite temperature-like data (alternating correlations) stays finite.
        let mixed = vec![
            vec![1.0, -1.0, 1.0, 1.0],
            vec![1.0, 1.0, 1.0, 1.0],
            vec![-1.0, 1.0, 1.0, -1.0],
        ];
        assert!(ring_coupling(&mixed, 4).unwrap().value.is_finite());
    }
}
