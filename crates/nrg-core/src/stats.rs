//! Error analysis for Monte Carlo series, in `f64`.
//!
//! **Gamma method** (U. Wolff, hep-lat/0306017). For a series `a_1 … a_N` with mean `ā`:
//!
//! ```text
//! Γ(t)       = (N − t)⁻¹ Σ_{i=1}^{N−t} (a_i − ā)(a_{i+t} − ā)
//! ρ(t)       = Γ(t)/Γ(0)
//! τ_int(W)   = ½ + Σ_{t=1}^{W} ρ(t)
//! τ(W)       = S_τ / ln((2τ_int(W)+1)/(2τ_int(W)−1))        (S_τ = 1.5)
//! W          = first W with exp(−W/τ(W)) − τ(W)/√(W N) < 0
//! σ²(ā)      = 2 τ_int Γ(0) / N
//! δτ_int     ≈ 2 τ_int √((W + ½ − τ_int)/N)
//! ```
//!
//! with Wolff's bias correction `Γ(t) → Γ(t) + C_W/N`, `C_W = Γ(0) + 2 Σ_{t≤W} Γ(t)`.
//! Derived quantities `f(Ā_1, …, Ā_m)` are handled by [`gamma_method_derived`], which
//! projects the primaries on the gradient of `f` at the means (linear error propagation
//! with the full autocorrelation of the projected series), and by the blocked
//! [`jackknife`].

use crate::error::{NrgError, Result};
use serde::{Deserialize, Serialize};

/// Wolff's default `S_τ`.
pub const DEFAULT_S_TAU: f64 = 1.5;

/// The result of the Gamma method for one (primary or derived) observable.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GammaAnalysis {
    /// Estimate of the mean (or of the derived quantity at the means).
    pub value: f64,
    /// Statistical error `σ = √(2 τ_int Γ(0)/N)`.
    pub error: f64,
    /// Error of the error, `σ · δτ_int / (2 τ_int)`.
    pub error_of_error: f64,
    /// Integrated autocorrelation time (in units of the series' spacing).
    pub tau_int: f64,
    /// Its statistical error.
    pub tau_int_error: f64,
    /// The automatically chosen summation window `W`.
    pub window: usize,
    /// Number of measurements `N`.
    pub n: usize,
}

/// An estimate with its error bar and, where computed, its autocorrelation time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The estimate.
    pub value: f64,
    /// One standard deviation.
    pub error: f64,
    /// Integrated autocorrelation time, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tau_int: Option<f64>,
    /// Error of `tau_int`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tau_int_error: Option<f64>,
}

impl Estimate {
    /// An estimate without autocorrelation information.
    pub fn new(value: f64, error: f64) -> Self {
        Self {
            value,
            error,
            tau_int: None,
            tau_int_error: None,
        }
    }

    /// Deviation from `exact` in units of the error (`∞` when the error is zero and the
    /// values differ).
    pub fn sigmas_from(&self, exact: f64) -> f64 {
        let d = (self.value - exact).abs();
        if d == 0.0 { 0.0 } else { d / self.error }
    }
}

impl From<GammaAnalysis> for Estimate {
    fn from(g: GammaAnalysis) -> Self {
        Self {
            value: g.value,
            error: g.error,
            tau_int: Some(g.tau_int),
            tau_int_error: Some(g.tau_int_error),
        }
    }
}

fn check_series(series: &[f64]) -> Result<()> {
    if series.len() < 2 {
        return Err(NrgError::InvalidData(format!(
            "need at least 2 measurements for an error estimate, got {}",
            series.len()
        )));
    }
    if let Some(i) = series.iter().position(|v| !v.is_finite()) {
        return Err(NrgError::InvalidData(format!(
            "measurement {i} is not finite ({})",
            series[i]
        )));
    }
    Ok(())
}

/// Gamma-method analysis of a primary observable's series with `S_τ = 1.5`.
pub fn gamma_method(series: &[f64]) -> Result<GammaAnalysis> {
    gamma_method_with(series, DEFAULT_S_TAU)
}

/// Gamma-method analysis of a primary observable with a chosen `S_τ`.
pub fn gamma_method_with(series: &[f64], s_tau: f64) -> Result<GammaAnalysis> {
    check_series(series)?;
    let n = series.len();
    let mean = series.iter().sum::<f64>() / n as f64;
    let dev: Vec<f64> = series.iter().map(|a| a - mean).collect();
    let mut analysis = gamma_of_deviations(&dev, s_tau);
    analysis.value = mean;
    Ok(analysis)
}

/// Autocovariance `Γ(t)` of a mean-free series.
fn autocovariance(dev: &[f64], t: usize) -> f64 {
    let n = dev.len();
    let s: f64 = dev[..n - t].iter().zip(&dev[t..]).map(|(a, b)| a * b).sum();
    s / (n - t) as f64
}

/// The windowing procedure on a mean-free series; `value` is left at 0.
fn gamma_of_deviations(dev: &[f64], s_tau: f64) -> GammaAnalysis {
    let n = dev.len();
    let nf = n as f64;
    let gamma0 = autocovariance(dev, 0);
    if gamma0 <= 0.0 {
        // A constant series: no fluctuation, no error.
        return GammaAnalysis {
            value: 0.0,
            error: 0.0,
            error_of_error: 0.0,
            tau_int: 0.5,
            tau_int_error: 0.0,
            window: 0,
            n,
        };
    }
    let w_max = (n / 2).max(1);
    let mut gammas = vec![gamma0];
    let mut tau_int = 0.5;
    let mut window = w_max;
    for w in 1..=w_max {
        let g = autocovariance(dev, w);
        gammas.push(g);
        tau_int += g / gamma0;
        let tau = if tau_int <= 0.5 {
            f64::MIN_POSITIVE
        } else {
            s_tau / ((2.0 * tau_int + 1.0) / (2.0 * tau_int - 1.0)).ln()
        };
        let criterion = (-(w as f64) / tau).exp() - tau / ((w as f64) * nf).sqrt();
        if criterion < 0.0 {
            window = w;
            break;
        }
    }
    // Bias correction: Γ(t) → Γ(t) + C_W/N.
    let c_w: f64 = gammas[0] + 2.0 * gammas[1..=window].iter().sum::<f64>();
    let shift = c_w / nf;
    let gamma0_c = gammas[0] + shift;
    let c_w_c = c_w + (2 * window + 1) as f64 * shift;
    let tau_int = (c_w_c / (2.0 * gamma0_c)).max(0.5);
    let variance = (c_w_c / nf).max(0.0);
    let error = variance.sqrt();
    let tau_int_error = 2.0 * tau_int * ((window as f64 + 0.5 - tau_int).max(0.0) / nf).sqrt();
    GammaAnalysis {
        value: 0.0,
        error,
        error_of_error: error * tau_int_error / (2.0 * tau_int),
        tau_int,
        tau_int_error,
        window,
        n,
    }
}

/// Gamma-method analysis of a derived quantity `f(Ā_1, …, Ā_m)` of several primary series
/// of equal length measured on the same configurations.
///
/// The error is propagated linearly: the projected series `Σ_α ∂_α f (a_{α,i} − Ā_α)` (with
/// the gradient taken by central differences at the means) is analysed with its own
/// autocorrelation function, as in Wolff's UWerr.
pub fn gamma_method_derived(series: &[&[f64]], f: impl Fn(&[f64]) -> f64) -> Result<GammaAnalysis> {
    let n = check_columns(series)?;
    let means: Vec<f64> = series
        .iter()
        .map(|s| s.iter().sum::<f64>() / n as f64)
        .collect();
    let value = f(&means);
    if !value.is_finite() {
        return Err(NrgError::InvalidData(format!(
            "derived quantity is not finite at the means ({value})"
        )));
    }
    let grad = numerical_gradient(&means, series, &f);
    let projected: Vec<f64> = (0..n)
        .map(|i| {
            series
                .iter()
                .zip(&means)
                .zip(&grad)
                .map(|((s, m), g)| g * (s[i] - m))
                .sum()
        })
        .collect();
    let mut analysis = gamma_of_deviations(&projected, DEFAULT_S_TAU);
    analysis.value = value;
    Ok(analysis)
}

fn check_columns(series: &[&[f64]]) -> Result<usize> {
    let Some(first) = series.first() else {
        return Err(NrgError::InvalidData("no series given".into()));
    };
    let n = first.len();
    for s in series {
        if s.len() != n {
            return Err(NrgError::InvalidData(
                "series of a derived quantity must have equal lengths".into(),
            ));
        }
        check_series(s)?;
    }
    Ok(n)
}

/// Central-difference gradient with steps scaled to each primary's standard deviation.
fn numerical_gradient(means: &[f64], series: &[&[f64]], f: &impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let n = series[0].len() as f64;
    let mut point = means.to_vec();
    (0..means.len())
        .map(|a| {
            let var = series[a]
                .iter()
                .map(|v| (v - means[a]).powi(2))
                .sum::<f64>()
                / n;
            let scale = var.sqrt().max(means[a].abs() * 1e-8).max(1e-300);
            let h = 1e-3 * scale / n.sqrt();
            point[a] = means[a] + h;
            let up = f(&point);
            point[a] = means[a] - h;
            let down = f(&point);
            point[a] = means[a];
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Blocked jackknife estimate of `f(Ā_1, …, Ā_m)`.
///
/// The series are cut into `⌊N/block⌋` blocks (a trailing remainder is dropped); with `B`
/// blocks and `f_b` the value with block `b` left out,
/// `f̂ = B f(Ā) − (B−1) f̄_b` (bias-corrected) and `σ² = (B−1)/B Σ_b (f_b − f̄_b)²`.
/// Choose `block` well above the largest `τ_int` of the primaries (see
/// [`jackknife_block_length`]).
pub fn jackknife(series: &[&[f64]], block: usize, f: impl Fn(&[f64]) -> f64) -> Result<Estimate> {
    let n = check_columns(series)?;
    if block == 0 {
        return Err(NrgError::param("block", "must be ≥ 1"));
    }
    let blocks = n / block;
    if blocks < 2 {
        return Err(NrgError::InvalidData(format!(
            "jackknife needs at least 2 blocks: {n} measurements with block length {block}"
        )));
    }
    let used = blocks * block;
    let m = series.len();
    let block_sums: Vec<Vec<f64>> = series
        .iter()
        .map(|s| {
            s[..used]
                .chunks_exact(block)
                .map(|c| c.iter().sum::<f64>())
                .collect()
        })
        .collect();
    let totals: Vec<f64> = block_sums.iter().map(|b| b.iter().sum()).collect();
    let full_means: Vec<f64> = totals.iter().map(|t| t / used as f64).collect();
    let full = f(&full_means);
    let mut leave_out = Vec::with_capacity(blocks);
    let mut means = vec![0.0; m];
    for b in 0..blocks {
        for a in 0..m {
            means[a] = (totals[a] - block_sums[a][b]) / (used - block) as f64;
        }
        leave_out.push(f(&means));
    }
    let bf = blocks as f64;
    let mean_lo = leave_out.iter().sum::<f64>() / bf;
    let var = (bf - 1.0) / bf * leave_out.iter().map(|v| (v - mean_lo).powi(2)).sum::<f64>();
    let value = bf * full - (bf - 1.0) * mean_lo;
    if !value.is_finite() || !var.is_finite() {
        return Err(NrgError::InvalidData(
            "jackknife of a derived quantity is not finite".into(),
        ));
    }
    Ok(Estimate::new(value, var.sqrt()))
}

/// A jackknife block length for series with integrated autocorrelation time `tau_int`:
/// `⌈4 τ_int⌉`, capped so that at least 20 blocks remain (when `n ≥ 40`).
pub fn jackknife_block_length(tau_int: f64, n: usize) -> usize {
    let want = (4.0 * tau_int).ceil().max(1.0) as usize;
    let cap = (n / 20).max(1);
    want.min(cap)
}

/// Mean and naive standard error (no autocorrelation) of a series.
pub fn mean_and_naive_error(series: &[f64]) -> Result<Estimate> {
    check_series(series)?;
    let n = series.len() as f64;
    let mean = series.iter().sum::<f64>() / n;
    let var = series.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Ok(Estimate::new(mean, (var / n).sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_distr::StandardNormal;
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn ar1(a: f64, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let c = (1.0 - a * a).sqrt();
        let mut x: f64 = rng.sample(StandardNormal);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let xi: f64 = rng.sample(StandardNormal);
            x = a * x + c * xi;
            out.push(x);
        }
        out
    }

    /// τ_int of an AR(1) process x_t = a x_{t−1} + √(1−a²) ξ_t is (1+a)/(2(1−a)) exactly.
    /// The estimate must lie within 3 of its own error bars (a 3σ test fails with
    /// probability ≈ 0.3% per case; seeds are fixed so the test is deterministic).
    #[test]
    fn gamma_method_recovers_ar1_tau() {
        for (a, seed) in [(0.0, 1), (0.5, 2), (0.9, 3), (0.97, 4)] {
            let xs = ar1(a, 200_000, seed);
            let g = gamma_method(&xs).unwrap();
            let exact = (1.0 + a) / (2.0 * (1.0 - a));
            assert!(
                (g.tau_int - exact).abs() < 3.0 * g.tau_int_error,
                "a={a}: tau {} ± {} vs {exact}",
                g.tau_int,
                g.tau_int_error
            );
            // Error of the mean: Var(x)=1, so σ² = 2τ/N.
            let exact_err = (2.0 * exact / xs.len() as f64).sqrt();
            assert!(
                (g.error - exact_err).abs() < 3.0 * g.error_of_error + 1e-12,
                "a={a}: error {} vs {exact_err}",
                g.error
            );
            assert!(g.value.abs() < 4.0 * exact_err);
        }
    }

    #[test]
    fn constant_series_has_zero_error() {
        let g = gamma_method(&[2.5; 100]).unwrap();
        assert_eq!(g.value, 2.5);
        assert_eq!(g.error, 0.0);
        assert_eq!(g.tau_int, 0.5);
    }

    #[test]
    fn rejects_short_and_nan_series() {
        assert!(gamma_method(&[1.0]).is_err());
        assert!(gamma_method(&[1.0, f64::NAN, 2.0]).is_err());
        assert!(jackknife(&[&[1.0, 2.0, 3.0]], 2, |m| m[0]).is_err());
    }

    /// For f = mean and block length 1, the jackknife error is the naive standard error
    /// exactly (an algebraic identity).
    #[test]
    fn jackknife_of_mean_is_standard_error() {
        let xs = ar1(0.0, 1000, 7);
        let jk = jackknife(&[&xs], 1, |m| m[0]).unwrap();
        let naive = mean_and_naive_error(&xs).unwrap();
        assert!((jk.value - naive.value).abs() < 1e-12);
        assert!((jk.error - naive.error).abs() < 1e-12 * naive.error.max(1.0));
    }

    /// The derived-quantity Gamma method and the jackknife agree with each other and with
    /// the delta method for a ratio of independent means.
    #[test]
    fn derived_errors_agree_for_a_ratio() {
        let n = 100_000;
        let a: Vec<f64> = ar1(0.0, n, 11).iter().map(|v| 2.0 + v).collect();
        let b: Vec<f64> = ar1(0.0, n, 12).iter().map(|v| 4.0 + v).collect();
        let ratio = |m: &[f64]| m[0] / m[1];
        let g = gamma_method_derived(&[&a, &b], ratio).unwrap();
        let jk = jackknife(&[&a, &b], 100, ratio).unwrap();
        // delta method: σ² = (1/b²)σ_a² + (a²/b⁴)σ_b², σ_a² = σ_b² = 1/N
        let delta = ((1.0 / 16.0 + 4.0 / 256.0) / n as f64).sqrt();
        assert!(
            (g.error / delta - 1.0).abs() < 0.05,
            "{} vs {delta}",
            g.error
        );
        assert!(
            (jk.error / delta - 1.0).abs() < 0.25,
            "{} vs {delta}",
            jk.error
        );
        assert!((g.value - 0.5).abs() < 4.0 * delta);
        assert!(g.tau_int < 0.5 + 4.0 * g.tau_int_error + 0.05);
    }

    #[test]
    fn block_length_rule() {
        assert_eq!(jackknife_block_length(0.5, 10_000), 2);
        assert_eq!(jackknife_block_length(10.0, 10_000), 40);
        assert_eq!(jackknife_block_length(1000.0, 10_000), 500);
    }
}
