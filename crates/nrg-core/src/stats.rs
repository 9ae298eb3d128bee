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
//!
//! **Edges** (decision 40 in `docs/decisions.md`):
//!
//! - *Rounding is not a fluctuation.* Every series is shifted by its first value before the
//!   mean and the deviations are formed (`a_i − a_1` is exact for a constant series), so a
//!   constant series of any value has `Γ(0) = 0`, `σ = 0` and `τ_int = ½` exactly, and the
//!   jackknife of any function of constant series returns `f(ā)` with `σ = 0`.
//! - *The naive error is a floor.* Wolff's window is built for positive autocorrelation. An
//!   anti-correlated series (`ρ(1) < 0`, e.g. an over-relaxed or period-2 chain) makes
//!   `τ_int(W)` fall below ½ at `W = 1` and `C_W` vanish; a series of a few points makes the
//!   bias-corrected `C_W` negative. In both cases, and whenever the windowed estimate is
//!   smaller, the reported error is the naive standard error
//!   `σ = √(Σ(a_i − ā)²/(N(N−1)))` with `τ_int = ½`: an upper bound for anti-correlated
//!   series (whose true error is smaller), and the only estimate a series too short to
//!   resolve its autocorrelation allows. A series that fluctuates never gets `σ = 0`.

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

/// An exact value beside its estimate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExactComparison {
    /// The exact value.
    pub exact: f64,
    /// The estimate.
    pub estimate: f64,
    /// Its error.
    pub error: f64,
    /// `|estimate − exact| / error` ([`Estimate::sigmas_from`]).
    pub deviation_sigma: f64,
}

impl ExactComparison {
    /// `estimate` beside `exact`.
    pub fn new(estimate: Estimate, exact: f64) -> Self {
        Self {
            exact,
            estimate: estimate.value,
            error: estimate.error,
            deviation_sigma: estimate.sigmas_from(exact),
        }
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
    let (mean, dev) = shifted_deviations(series);
    let mut analysis = gamma_of_deviations(&dev, s_tau);
    analysis.value = mean;
    Ok(analysis)
}

/// The mean of a series and its deviations from it, both formed after shifting by the first
/// value: `ā = a_1 + N⁻¹ Σ (a_i − a_1)`, `δ_i = (a_i − a_1) − N⁻¹ Σ (a_j − a_1)`. For a
/// constant series every `δ_i` is exactly zero and `ā = a_1`, whatever the value (a plain
/// `Σ a_i / N` of `0.1` repeated rounds, and the rounding would read as a fluctuation).
fn shifted_deviations(series: &[f64]) -> (f64, Vec<f64>) {
    let first = series[0];
    let shift = series.iter().map(|a| a - first).sum::<f64>() / series.len() as f64;
    let dev = series.iter().map(|a| (a - first) - shift).collect();
    (first + shift, dev)
}

/// Autocovariance `Γ(t)` of a mean-free series.
fn autocovariance(dev: &[f64], t: usize) -> f64 {
    let n = dev.len();
    let s: f64 = dev[..n - t].iter().zip(&dev[t..]).map(|(a, b)| a * b).sum();
    s / (n - t) as f64
}

/// The windowing procedure on a mean-free series; `value` is left at 0. The error is never
/// below the naive standard error (see the module docs).
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
    // The naive variance of the mean, Σδ²/(N(N−1)) = Γ(0)/(N−1), is the floor.
    let naive = gamma0 / (nf - 1.0);
    let windowed = c_w_c / nf;
    let (tau_int, variance) = if windowed > naive && c_w_c > gamma0_c {
        (c_w_c / (2.0 * gamma0_c), windowed)
    } else {
        (0.5, naive)
    };
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
    let (means, devs): (Vec<f64>, Vec<Vec<f64>>) =
        series.iter().map(|s| shifted_deviations(s)).unzip();
    let value = f(&means);
    if !value.is_finite() {
        return Err(NrgError::InvalidData(format!(
            "derived quantity is not finite at the means ({value})"
        )));
    }
    let grad = numerical_gradient(&means, &devs, &f);
    let projected: Vec<f64> = (0..n)
        .map(|i| devs.iter().zip(&grad).map(|(d, g)| g * d[i]).sum())
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

/// Central-difference gradient with steps scaled to each primary's standard deviation
/// (`devs`: each primary's deviations from its mean).
fn numerical_gradient(means: &[f64], devs: &[Vec<f64>], f: &impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let n = devs[0].len() as f64;
    let mut point = means.to_vec();
    (0..means.len())
        .map(|a| {
            let var = devs[a].iter().map(|v| v * v).sum::<f64>() / n;
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
///
/// Rounding is kept out of both: block sums are taken of `a_i − a_1` (exactly zero for a
/// constant series), and the estimate is formed from the differences `d_b = f_b − f(Ā)` as
/// `f̂ = f(Ā) − (B−1) d̄`, `σ² = (B−1)/B Σ_b (d_b − d̄)²`, so constant series give `f(Ā)`
/// with `σ = 0` exactly (a plain `B f(Ā) − (B−1) f̄_b` multiplies the rounding of `f̄_b`
/// by `B`).
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
    let firsts: Vec<f64> = series.iter().map(|s| s[0]).collect();
    let block_sums: Vec<Vec<f64>> = series
        .iter()
        .zip(&firsts)
        .map(|(s, first)| {
            s[..used]
                .chunks_exact(block)
                .map(|c| c.iter().map(|a| a - first).sum::<f64>())
                .collect()
        })
        .collect();
    let totals: Vec<f64> = block_sums.iter().map(|b| b.iter().sum()).collect();
    let full_means: Vec<f64> = totals
        .iter()
        .zip(&firsts)
        .map(|(t, first)| first + t / used as f64)
        .collect();
    let full = f(&full_means);
    let mut diffs = Vec::with_capacity(blocks);
    let mut means = vec![0.0; m];
    for b in 0..blocks {
        for a in 0..m {
            means[a] = firsts[a] + (totals[a] - block_sums[a][b]) / (used - block) as f64;
        }
        diffs.push(f(&means) - full);
    }
    let bf = blocks as f64;
    let mean_d = diffs.iter().sum::<f64>() / bf;
    let var = (bf - 1.0) / bf * diffs.iter().map(|d| (d - mean_d).powi(2)).sum::<f64>();
    let value = full - (bf - 1.0) * mean_d;
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
    let (mean, dev) = shifted_deviations(series);
    let var = dev.iter().map(|d| d * d).sum::<f64>() / (n - 1.0);
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

    /// Anti-correlated AR(1) (a = −0.5 and −0.9, N = 10⁴): the true error of the mean is
    /// `√((1+a)/((1−a)N))` (5.8·10⁻³ and 2.3·10⁻³); the windowed estimate collapses at
    /// `W = 1` (it was 0 or 3·10⁻⁴). The naive error `√(Var/N)` is the stated floor: never
    /// below the true error, and within 5% of `1/√N` (the sample variance of N = 10⁴ unit
    /// Gaussians is 1 ± 0.014 (1σ)·√(1+a²)/(1−a²)…, well inside 5% at these a).
    #[test]
    fn anti_correlated_series_get_the_naive_error() {
        for (a, seeds) in [(-0.5, 1..=6), (-0.9, 7..=12)] {
            for seed in seeds {
                let xs = ar1(a, 10_000, seed);
                let g = gamma_method(&xs).unwrap();
                let naive = mean_and_naive_error(&xs).unwrap();
                let exact = ((1.0 + a) / ((1.0 - a) * 1e4)).sqrt();
                assert!(g.error >= exact, "a={a} seed {seed}: {} < {exact}", g.error);
                assert!((g.error / naive.error - 1.0).abs() < 1e-12);
                assert!((g.error / 1e-2 - 1.0).abs() < 0.05, "a={a}: {}", g.error);
                assert_eq!(g.tau_int, 0.5);
            }
        }
    }

    /// Series too short for the window (N = 2, 3, 8, i.i.d.) get the naive standard error,
    /// never zero. N = 2: `[1, 3]` has sample variance 2, so σ = √(2/2) = 1 exactly.
    #[test]
    fn short_series_get_the_naive_error() {
        let g = gamma_method(&[1.0, 3.0]).unwrap();
        assert_eq!((g.value, g.error, g.tau_int), (2.0, 1.0, 0.5));
        for n in [2, 3, 8] {
            for seed in 0..50 {
                let xs = ar1(0.0, n, 100 + seed);
                let g = gamma_method(&xs).unwrap();
                let naive = mean_and_naive_error(&xs).unwrap();
                assert!(g.error > 0.0, "N={n} seed {seed}");
                assert!(g.error >= naive.error * (1.0 - 1e-12), "N={n} seed {seed}");
            }
        }
    }

    /// Constant series of values that are not powers of two: σ = 0 and τ_int = ½ exactly,
    /// the mean equal to the value, for the Gamma method (primary and derived) and for the
    /// jackknife (before: 0.1 × 10⁵ gave σ ≈ 10⁻¹³, τ_int = 11716.5; the Binder cumulant
    /// of a constant series 0.666666665871 ± 7.9·10⁻¹²).
    #[test]
    fn constant_series_of_any_value_have_zero_error() {
        for c in [0.1, 1.0 / 3.0, -2.7e-12, 6.02e23, -0.3] {
            let xs = vec![c; 100_000];
            let g = gamma_method(&xs).unwrap();
            assert_eq!((g.value, g.error, g.tau_int), (c, 0.0, 0.5), "c={c}");
            let sq = vec![c * c; 100_000];
            let q = vec![(c * c) * (c * c); 100_000];
            let binder = |m: &[f64]| 1.0 - m[1] / (3.0 * m[0] * m[0]);
            let exact = binder(&[c * c, (c * c) * (c * c)]);
            let jk = jackknife(&[&sq, &q], 1, binder).unwrap();
            assert_eq!((jk.value, jk.error), (exact, 0.0), "c={c}");
            assert!((jk.value - 2.0 / 3.0).abs() < 1e-15);
            let d = gamma_method_derived(&[&sq, &q], binder).unwrap();
            assert_eq!((d.value, d.error, d.tau_int), (exact, 0.0, 0.5), "c={c}");
            assert_eq!(mean_and_naive_error(&xs).unwrap().error, 0.0);
        }
    }

    #[test]
    fn block_length_rule() {
        assert_eq!(jackknife_block_length(0.5, 10_000), 2);
        assert_eq!(jackknife_block_length(10.0, 10_000), 40);
        assert_eq!(jackknife_block_length(1000.0, 10_000), 500);
    }
}
