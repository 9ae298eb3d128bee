//! Free-energy estimators on log-weights, independent of where the samples come from.
//!
//! **Bennett's acceptance ratio (BAR)** between a normalised proposal `q` (a flow: `Z_q = 1`)
//! and the target `p(x) = e^{−S(x)}/Z`. Every sample, from either end, carries its log-weight
//!
//! ```text
//! l(x) = −S(x) − ln q(x)          (ln of the importance weight; E_q[e^l] = Z)
//! ```
//!
//! `n_F` samples `x_i ∼ q` (forward) and `n_R` samples `x_j ∼ p` (reverse: exact target
//! samples, whose `ln q` the flow's inverse gives). With `M = ln(n_F/n_R)` and the logistic
//! function `σ(t) = 1/(1 + e^{−t})`, Bennett's estimate `c = ln Ẑ` solves
//!
//! ```text
//! h(c) = Σ_i σ(l_i − c − M) − Σ_j σ(c + M − l_j) = 0
//! ```
//!
//! (Bennett, J. Comput. Phys. 22 (1976) 245, eq. 12 with the optimal constant; the maximum
//! likelihood form of Shirts, Bair, Hooker & Pande, PRL 91 (2003) 140601). `h` decreases
//! strictly in `c`, so the root is unique; it is found by bisection in `f64`.
//!
//! **Error** (Bennett's variance, the delta method on the estimating equation): with
//! `a_i = σ(l_i − c − M)` and `b_j = σ(c + M − l_j)`,
//!
//! ```text
//! Var(ĉ) = (n_F Var(a) + n_R² Var(b̄)) / (Σ_i a_i(1 − a_i) + Σ_j b_j(1 − b_j))²
//! ```
//!
//! where `Var(b̄)` is `Var(b)/n_R` for independent target samples and the Gamma method's
//! `σ²(b̄) = 2τ_int Var(b)/n_R` for a chain (its samples in chain order). For independent
//! samples at both ends this equals the Shirts et al. variance.
//!
//! **Overlap** `O = (n_F + n_R)/(n_F n_R) · Σ_k a_k(1 − a_k)` (the sum over all samples, with
//! `b` for the reverse ones) is 1 when `q = p` and falls to 0 as the two ends stop
//! overlapping; for independent samples `Var(ĉ) ≈ (1/n_F + 1/n_R)(1/O − 1)`.
//!
//! Beside BAR the one-sided estimates from each end are reported: forward (plain importance
//! sampling, `ln Ẑ = ln mean_i e^{l_i}`, the delta method) and reverse
//! (`ln Ẑ = −ln mean_j e^{−l_j}`, since `E_p[q/e^{−S}] = 1/Z`; the Gamma method for a chain).

use nrg_core::stats::gamma_method;
use nrg_core::{Estimate, NrgError, Result};
use serde::{Deserialize, Serialize};

/// How the target-side samples were drawn, which decides how their errors are analysed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SampleOrder {
    /// Independent draws: the plain variance.
    Independent,
    /// A Markov chain, in chain order: the Gamma method's `τ_int`.
    Chain,
}

/// The log-weights `l = −S − ln q` of both ends (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct BarInput<'a> {
    /// `l(x_i)` of samples `x_i ∼ q` (independent).
    pub forward: &'a [f64],
    /// `l(x_j)` of target samples `x_j ∼ p`.
    pub reverse: &'a [f64],
    /// How the target samples were drawn.
    pub reverse_order: SampleOrder,
}

/// Bennett's acceptance ratio with its diagnostics.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct BarEstimate {
    /// `ln Z` by BAR (its `tau_int`: that of the reverse terms `b_j`, ½ if independent).
    pub ln_z: Estimate,
    /// The overlap `O ∈ [0, 1]` of the two ends.
    pub overlap: f64,
    /// `ln Z` from the forward samples alone (plain importance sampling).
    pub forward_only: Estimate,
    /// `ln Z` from the reverse samples alone, `−ln mean e^{−l}`.
    pub reverse_only: Estimate,
    /// Forward samples `n_F`.
    pub forward_samples: usize,
    /// Reverse samples `n_R`.
    pub reverse_samples: usize,
}

fn logistic(t: f64) -> f64 {
    1.0 / (1.0 + (-t).exp())
}

/// Bennett's acceptance ratio `ln Ẑ` from the log-weights of both ends, with its error,
/// the overlap and the one-sided estimates. Errors: fewer than 2 samples at an end, a
/// non-finite log-weight.
pub fn bar(input: &BarInput) -> Result<BarEstimate> {
    let (f, r) = (input.forward, input.reverse);
    for (what, l) in [("forward", f), ("reverse", r)] {
        if l.len() < 2 {
            return Err(NrgError::param(
                "samples",
                format!("BAR needs at least 2 {what} samples, got {}", l.len()),
            ));
        }
        if let Some(i) = l.iter().position(|v| !v.is_finite()) {
            return Err(NrgError::InvalidData(format!(
                "{what} sample {i} has a non-finite log-weight ({})",
                l[i]
            )));
        }
    }
    let (nf, nr) = (f.len() as f64, r.len() as f64);
    let m = (nf / nr).ln();
    let h = |c: f64| -> f64 {
        let a: f64 = f.iter().map(|l| logistic(l - c - m)).sum();
        let b: f64 = r.iter().map(|l| logistic(c + m - l)).sum();
        a - b
    };
    let (lo_l, hi_l) = f
        .iter()
        .chain(r)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &l| {
            (lo.min(l), hi.max(l))
        });
    // h(lo) ≈ n_F > 0 and h(hi) ≈ −n_R < 0 (every logistic saturated to e^{−50}).
    let (mut lo, mut hi) = (lo_l - m - 50.0, hi_l - m + 50.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if h(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let c = 0.5 * (lo + hi);
    let a: Vec<f64> = f.iter().map(|l| logistic(l - c - m)).collect();
    let b: Vec<f64> = r.iter().map(|l| logistic(c + m - l)).collect();
    let var = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0)
    };
    let (var_b_mean, tau_b) = match input.reverse_order {
        SampleOrder::Independent => (var(&b) / nr, 0.5),
        SampleOrder::Chain => {
            let g = gamma_method(&b)?;
            (g.error * g.error, g.tau_int)
        }
    };
    let slope: f64 =
        a.iter().map(|x| x * (1.0 - x)).sum::<f64>() + b.iter().map(|x| x * (1.0 - x)).sum::<f64>();
    let var_h = nf * var(&a) + nr * nr * var_b_mean;
    let error = var_h.max(0.0).sqrt() / slope;
    let ln_z = Estimate {
        value: c,
        error,
        tau_int: Some(tau_b),
        tau_int_error: None,
    };
    Ok(BarEstimate {
        ln_z,
        overlap: (nf + nr) / (nf * nr) * slope,
        forward_only: forward_only(f),
        reverse_only: reverse_only(r, input.reverse_order)?,
        forward_samples: f.len(),
        reverse_samples: r.len(),
    })
}

/// `ln mean e^{l}` with the delta-method error.
fn forward_only(l: &[f64]) -> Estimate {
    let top = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let n = l.len() as f64;
    let (s1, s2) = l.iter().fold((0.0, 0.0), |(s1, s2), x| {
        let w = (x - top).exp();
        (s1 + w, s2 + w * w)
    });
    let rel_var = (n * s2 / (s1 * s1) - 1.0) / (n - 1.0);
    Estimate::new(top + (s1 / n).ln(), rel_var.max(0.0).sqrt())
}

/// `−ln mean e^{−l}`, the error of the mean by the Gamma method for a chain.
fn reverse_only(l: &[f64], order: SampleOrder) -> Result<Estimate> {
    let low = l.iter().cloned().fold(f64::INFINITY, f64::min);
    let u: Vec<f64> = l.iter().map(|x| (low - x).exp()).collect();
    let n = u.len() as f64;
    let mean = u.iter().sum::<f64>() / n;
    let (error, tau) = match order {
        SampleOrder::Independent => {
            let v = u.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
            ((v / n).sqrt(), None)
        }
        SampleOrder::Chain => {
            let g = gamma_method(&u)?;
            (g.error, Some(g.tau_int))
        }
    };
    Ok(Estimate {
        value: low - mean.ln(),
        error: error / mean,
        tau_int: tau,
        tau_int_error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For `q = p/Z` every log-weight is `ln Z`: BAR, both one-sided estimates and the
    /// overlap are exact (overlap 1, zero error), whatever the sample sizes.
    #[test]
    fn a_perfect_proposal_gives_ln_z_exactly() {
        let f = vec![3.25; 7];
        let r = vec![3.25; 13];
        for order in [SampleOrder::Independent, SampleOrder::Chain] {
            let e = bar(&BarInput {
                forward: &f,
                reverse: &r,
                reverse_order: order,
            })
            .unwrap();
            assert!((e.ln_z.value - 3.25).abs() < 1e-12, "{e:?}");
            assert!(e.ln_z.error < 1e-12);
            assert!((e.overlap - 1.0).abs() < 1e-12);
            assert!((e.forward_only.value - 3.25).abs() < 1e-12);
            assert!((e.reverse_only.value - 3.25).abs() < 1e-12);
        }
    }

    /// The root solves Bennett's equation, and a constant shift of every log-weight (a
    /// factor in `e^{−S}`) shifts `ln Ẑ` by the same constant and nothing else.
    #[test]
    fn the_root_solves_bennetts_equation_and_shifts_with_the_action() {
        let f: Vec<f64> = (0..50).map(|i| ((i * 17) % 23) as f64 * 0.1).collect();
        let r: Vec<f64> = (0..30).map(|i| 1.0 + ((i * 5) % 11) as f64 * 0.2).collect();
        let e = bar(&BarInput {
            forward: &f,
            reverse: &r,
            reverse_order: SampleOrder::Independent,
        })
        .unwrap();
        let (c, m) = (e.ln_z.value, (50.0f64 / 30.0).ln());
        let a: f64 = f.iter().map(|l| logistic(l - c - m)).sum();
        let b: f64 = r.iter().map(|l| logistic(c + m - l)).sum();
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        let shift = 1234.5;
        let fs: Vec<f64> = f.iter().map(|l| l + shift).collect();
        let rs: Vec<f64> = r.iter().map(|l| l + shift).collect();
        let es = bar(&BarInput {
            forward: &fs,
            reverse: &rs,
            reverse_order: SampleOrder::Independent,
        })
        .unwrap();
        assert!((es.ln_z.value - c - shift).abs() < 1e-9);
        assert!((es.ln_z.error - e.ln_z.error).abs() < 1e-9);
        assert!((es.overlap - e.overlap).abs() < 1e-12);
        assert!(0.0 < e.overlap && e.overlap < 1.0);
    }

    #[test]
    fn bad_input_is_refused() {
        let ok = [0.0, 1.0];
        for (f, r) in [(&[0.0][..], &ok[..]), (&ok[..], &[f64::NAN, 0.0][..])] {
            assert!(
                bar(&BarInput {
                    forward: f,
                    reverse: r,
                    reverse_order: SampleOrder::Independent,
                })
                .is_err()
            );
        }
    }
}
