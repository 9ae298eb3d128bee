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
//! samples at both ends this equals the Shirts et al. variance asymptotically.
//!
//! **Overlap** `O = (n_F + n_R)/(n_F n_R) · Σ_k a_k(1 − a_k)` (the sum over all samples, with
//! `b` for the reverse ones) is 1 when `q = p` and falls to 0 as the two ends stop
//! overlapping; for independent samples `Var(ĉ) ≈ (1/n_F + 1/n_R)(1/O − 1)`.
//!
//! Beside BAR the one-sided estimates from each end are reported: forward (plain importance
//! sampling, `ln Ẑ = ln mean_i e^{l_i}`, the delta method) and reverse
//! (`ln Ẑ = −ln mean_j e^{−l_j}`, since `E_p[q/e^{−S}] = 1/Z`; the Gamma method for a chain).
//!
//! **Thermodynamic integration** ([`integrate_gk15`]): `∫_a^b f(t) dt` of an integrand known
//! only as Monte Carlo estimates `f(t_k) ± σ_k` (one independent chain per node), by the
//! 15-point Gauss–Kronrod rule (QUADPACK's `qk15` abscissae and weights; exact for
//! polynomials of degree 22). The statistical error is `√(Σ w_k² σ_k²)`; the quadrature
//! error is estimated, as QUADPACK does, by the difference from the embedded 7-point Gauss
//! rule on the same nodes (exact only to degree 13, so the difference is, as a heuristic, an
//! upper estimate of the Kronrod rule's error). On Monte Carlo data that difference has a statistical
//! error of its own, `√(Σ (w_k − w^G_k)² σ_k²)`, reported beside it: a difference within a
//! few of those says the quadrature error is below the noise. For the Ising model
//! `ln Z(β) = V ln 2 − V ∫₀^β ⟨e⟩_{β'} dβ'` with `e` the energy per site. For φ⁴ in the
//! canonical form `S = Σ[−2κ Σ_μ φ_x·φ_{x+μ} + a|φ|² + b|φ|⁴]` ([`phi4_ln_z_by_ti`]), along
//! the straight path from a Gaussian reference `S₀` (same `κ`, `a₀` with `a₀ > 2dκ`, `b = 0`;
//! its `ln Z₀` exact) to the target, `S_t = S₀ + t ΔS`, `ΔS = (a − a₀)Σ|φ|² + bΣ|φ|⁴`:
//! `ln Z = ln Z₀ − ∫₀¹ ⟨ΔS⟩_t dt` (every `S_t` with `t > 0` is bounded below by its quartic
//! term), one HMC chain per node. Where `a < 2dκ` (a double well, as at the φ⁴ tutorial's
//! point) the path crosses the Z₂ ordering transition of the infinite lattice: on a finite
//! lattice the integrand stays analytic but varies fast near it, and the chains there slow
//! down — read the quadrature error beside the statistical one.

use crate::baseline::{Hmc, IsingMetropolis, IsingWolff, SpinStart};
use crate::run::{IsingSimulation, PhiFourSimulation, RunConfig, run, run_observed};
use nrg_core::OnLattice;
use nrg_core::stats::{ExactComparison, gamma_method};
use nrg_core::{Estimate, NrgError, Result};
use nrg_lattice::IsingSpins;
use nrg_lattice::PhiFour;
use nrg_lattice::exact::gaussian::GaussianExact;
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
    // a(1 − a) = σ(t)σ(−t), to full relative precision where a is close to 1.
    let slope: f64 = f
        .iter()
        .map(|l| logistic(l - c - m) * logistic(c + m - l))
        .sum::<f64>()
        + r.iter()
            .map(|l| logistic(c + m - l) * logistic(l - c - m))
            .sum::<f64>();
    if slope.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err(NrgError::InvalidData(
            "BAR: the two ends do not overlap at all (every log-weight of the flow's samples \
             lies far from every target sample's); no estimate is possible"
                .into(),
        ));
    }
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

/// Positive Kronrod abscissae of the 15-point rule on `[−1, 1]` (descending; the odd
/// entries and 0 are the 7-point Gauss nodes), QUADPACK `qk15`.
const GK15_NODES: [f64; 8] = [
    0.991_455_371_120_812_6,
    0.949_107_912_342_758_5,
    0.864_864_423_359_769_1,
    0.741_531_185_599_394_4,
    0.586_087_235_467_691_1,
    0.405_845_151_377_397_2,
    0.207_784_955_007_898_5,
    0.0,
];
/// Kronrod weights of [`GK15_NODES`].
const GK15_WEIGHTS: [f64; 8] = [
    0.022_935_322_010_529_22,
    0.063_092_092_629_978_55,
    0.104_790_010_322_250_18,
    0.140_653_259_715_525_92,
    0.169_004_726_639_267_9,
    0.190_350_578_064_785_4,
    0.204_432_940_075_298_9,
    0.209_482_141_084_727_83,
];
/// Gauss weights of the 7-point rule, at `GK15_NODES[1], [3], [5], [7]`.
const G7_WEIGHTS: [f64; 4] = [
    0.129_484_966_168_869_7,
    0.279_705_391_489_276_7,
    0.381_830_050_505_118_9,
    0.417_959_183_673_469_4,
];

/// One node of a thermodynamic integration: where, its weight, and the integrand there.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct QuadratureNode {
    /// The abscissa `t_k`.
    pub at: f64,
    /// The Kronrod weight on `[a, b]`.
    pub weight: f64,
    /// The integrand's estimate `f(t_k)` with its error and `τ_int`.
    pub value: Estimate,
}

/// A Monte Carlo integral by the Gauss–Kronrod rule.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QuadratureEstimate {
    /// The 15-point Kronrod integral with its statistical error.
    pub integral: Estimate,
    /// The embedded 7-point Gauss integral on the same data.
    pub gauss_integral: f64,
    /// `|Kronrod − Gauss|`: an upper estimate of the quadrature error.
    pub quadrature_error: f64,
    /// The statistical error of `Kronrod − Gauss` (the same data enter both).
    pub quadrature_error_noise: f64,
    /// The nodes (15 per panel), in increasing `t`.
    pub nodes: Vec<QuadratureNode>,
}

/// The 15 nodes of the Gauss–Kronrod rule on `[a, b]`, increasing, with their Kronrod and
/// (where a Gauss node) Gauss weights.
pub fn gk15_nodes(a: f64, b: f64) -> Vec<(f64, f64, Option<f64>)> {
    let (c, h) = (0.5 * (a + b), 0.5 * (b - a));
    let mut out = Vec::with_capacity(15);
    for i in 0..8 {
        let gauss = (i % 2 == 1).then(|| G7_WEIGHTS[i / 2] * h);
        out.push((c - h * GK15_NODES[i], GK15_WEIGHTS[i] * h, gauss));
    }
    for i in (0..7).rev() {
        let gauss = (i % 2 == 1).then(|| G7_WEIGHTS[i / 2] * h);
        out.push((c + h * GK15_NODES[i], GK15_WEIGHTS[i] * h, gauss));
    }
    out
}

/// `∫_a^b f(t) dt` by the 15-point Gauss–Kronrod rule from Monte Carlo estimates of `f`:
/// `integrand(t, k)` estimates `f` at node `k` (an independent chain per node: seed it
/// with `k`). Errors: `a ≥ b` or not finite, or the integrand's own.
pub fn integrate_gk15(
    a: f64,
    b: f64,
    integrand: &mut dyn FnMut(f64, usize) -> Result<Estimate>,
) -> Result<QuadratureEstimate> {
    if !(a.is_finite() && b.is_finite() && a < b) {
        return Err(NrgError::param(
            "interval",
            format!("need finite a < b, got [{a}, {b}]"),
        ));
    }
    let (mut kronrod, mut gauss, mut var, mut var_diff) = (0.0, 0.0, 0.0, 0.0);
    let mut nodes = Vec::with_capacity(15);
    for (k, (t, w, wg)) in gk15_nodes(a, b).into_iter().enumerate() {
        let value = integrand(t, k)?;
        kronrod += w * value.value;
        var += (w * value.error).powi(2);
        if let Some(wg) = wg {
            gauss += wg * value.value;
        }
        var_diff += ((w - wg.unwrap_or(0.0)) * value.error).powi(2);
        nodes.push(QuadratureNode {
            at: t,
            weight: w,
            value,
        });
    }
    Ok(QuadratureEstimate {
        integral: Estimate::new(kronrod, var.sqrt()),
        gauss_integral: gauss,
        quadrature_error: (kronrod - gauss).abs(),
        quadrature_error_noise: var_diff.sqrt(),
        nodes,
    })
}

/// `n` panels of `[a, b]` that shrink towards `b` quadratically: edges
/// `a + (b − a)(1 − (1 − k/n)²)`, `k = 0 … n` — for integrands that vary fastest at the
/// upper end (the Ising energy near `β_c`, whose slope is the specific heat's finite-size
/// peak). Errors: `n = 0`, as [`integrate_gk15`] for the interval.
pub fn graded_edges(a: f64, b: f64, n: usize) -> Result<Vec<f64>> {
    if n == 0 || n > 1000 || !(a.is_finite() && b.is_finite() && a < b) {
        return Err(NrgError::param(
            "panels",
            format!("need 1 to 1000 panels and finite a < b, got {n} on [{a}, {b}]"),
        ));
    }
    Ok((0..=n)
        .map(|k| {
            let u = 1.0 - k as f64 / n as f64;
            if k == n {
                b
            } else {
                a + (b - a) * (1.0 - u * u)
            }
        })
        .collect())
}

/// [`integrate_gk15`] on each panel `[edges[p], edges[p + 1]]`, summed: the integral and its
/// variance add; the quadrature error is `(Σ_p d_p²)^{1/2}` of the panels' `d_p = Kronrod −
/// Gauss`, and its noise `(Σ_p σ_p²)^{1/2}` of theirs — what pure noise would give, so that
/// the ratio of the two does not grow with the number of panels (a sum of `|d_p|` would
/// grow like `√P` on noise alone) while a real error in any one panel still shows in full;
/// the nodes are listed panel by panel;
/// `integrand(t, k)` gets node index `k = 0 … 15·panels − 1`. Errors: fewer than two edges,
/// edges not increasing, the integrand's.
pub fn integrate_gk15_panels(
    edges: &[f64],
    integrand: &mut dyn FnMut(f64, usize) -> Result<Estimate>,
) -> Result<QuadratureEstimate> {
    if edges.len() < 2 {
        return Err(NrgError::param("panels", "need at least two edges"));
    }
    let mut out = QuadratureEstimate {
        integral: Estimate::new(0.0, 0.0),
        gauss_integral: 0.0,
        quadrature_error: 0.0,
        quadrature_error_noise: 0.0,
        nodes: Vec::with_capacity(15 * (edges.len() - 1)),
    };
    let (mut var, mut d2, mut var_diff) = (0.0, 0.0, 0.0);
    for (p, w) in edges.windows(2).enumerate() {
        let panel = integrate_gk15(w[0], w[1], &mut |t, k| integrand(t, 15 * p + k))?;
        out.integral.value += panel.integral.value;
        var += panel.integral.error.powi(2);
        out.gauss_integral += panel.gauss_integral;
        d2 += panel.quadrature_error.powi(2);
        var_diff += panel.quadrature_error_noise.powi(2);
        out.nodes.extend(panel.nodes);
    }
    out.integral.error = var.sqrt();
    out.quadrature_error = d2.sqrt();
    out.quadrature_error_noise = var_diff.sqrt();
    Ok(out)
}

/// The Ising chain run at each node of a thermodynamic integration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IsingAlgorithm {
    /// Random-site single-spin Metropolis.
    Metropolis,
    /// Wolff clusters.
    Wolff,
}

/// How to integrate the Ising energy: the chain and its length at every node.
#[derive(Clone, Copy, Debug)]
pub struct IsingTiSettings {
    /// The chain.
    pub algorithm: IsingAlgorithm,
    /// Thermalisation and measured updates per node.
    pub run: RunConfig,
    /// Seed of the first node (node `k` uses `seed + k`).
    pub seed: u64,
    /// Gauss–Kronrod panels of `[0, β]`, graded towards `β` ([`graded_edges`]); 1 is one
    /// 15-point rule. The grading suits `β ≤ β_c`, where the energy's slope (the specific
    /// heat) peaks at the upper end; above `β_c` the peak lies inside the interval.
    pub panels: usize,
}

/// `ln Z` of the Ising model by thermodynamic integration from `β = 0`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IsingTi {
    /// `β`.
    pub beta: f64,
    /// `ln Z(β) = V ln 2 − V ∫₀^β ⟨e⟩ dβ'` with its statistical error.
    pub ln_z: Estimate,
    /// The quadrature error of `ln Z` (`V ×` the integral's), an upper estimate, and its
    /// statistical error.
    pub quadrature_error: Estimate,
    /// The integral of the energy per site, node by node.
    pub energy_integral: QuadratureEstimate,
    /// The panels' edges in `β` (`[0, β]` for one panel).
    #[serde(default)]
    pub panel_edges: Vec<f64>,
    /// Kaufman's (2D) or the transfer matrix's (1D) `ln Z` beside the estimate.
    pub exact: Option<ExactComparison>,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// `ln Z(β)` of `model` by thermodynamic integration of its energy from `β' = 0` to `β`,
/// one chain per Gauss–Kronrod node on `settings.panels` graded panels (see the module
/// docs); `progress` gets the node done (1 … 15·panels). Errors: no panels, the chains' (a
/// chain that does not move is refused).
pub fn ising_ln_z_by_ti(
    model: &IsingSpins,
    settings: &IsingTiSettings,
    progress: &mut dyn FnMut(usize),
) -> Result<IsingTi> {
    let start = std::time::Instant::now();
    let lattice = model.lattice();
    let volume = lattice.volume() as f64;
    let mut energy = |beta: f64, k: usize| -> Result<Estimate> {
        let node = IsingSpins::new(lattice, beta)?;
        let seed = settings.seed.wrapping_add(k as u64);
        let mut sim = match settings.algorithm {
            IsingAlgorithm::Metropolis => {
                IsingSimulation::Metropolis(IsingMetropolis::new(node, seed, SpinStart::Hot))
            }
            IsingAlgorithm::Wolff => {
                IsingSimulation::Wolff(IsingWolff::new(node, seed, SpinStart::Hot))
            }
        };
        let out = run(&mut sim, &settings.run, &mut |_| {})?;
        progress(k + 1);
        out.summary
            .observables
            .get("e")
            .copied()
            .ok_or_else(|| NrgError::InvalidData("the Ising chain measured no energy".into()))
    };
    if model.beta() <= 0.0 {
        return Err(NrgError::param(
            "beta",
            "thermodynamic integration needs β > 0 (at β = 0, ln Z = V ln 2 exactly)",
        ));
    }
    let edges = graded_edges(0.0, model.beta(), settings.panels)?;
    let integral = integrate_gk15_panels(&edges, &mut energy)?;
    let ln_z = Estimate::new(
        volume * std::f64::consts::LN_2 - volume * integral.integral.value,
        volume * integral.integral.error,
    );
    Ok(IsingTi {
        beta: model.beta(),
        ln_z,
        quadrature_error: Estimate::new(
            volume * integral.quadrature_error,
            volume * integral.quadrature_error_noise,
        ),
        exact: model
            .exact()
            .ok()
            .map(|e| ExactComparison::new(ln_z, e.ln_z)),
        energy_integral: integral,
        panel_edges: edges,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// How to integrate a φ⁴ action from its Gaussian reference: the HMC chain at every node.
#[derive(Clone, Copy, Debug)]
pub struct Phi4TiSettings {
    /// Thermalisation and measured trajectories per node.
    pub run: RunConfig,
    /// Initial leapfrog step (adapted towards `target_acceptance` during thermalisation).
    pub step: f64,
    /// Leapfrog steps per trajectory.
    pub leapfrog: usize,
    /// Acceptance the step is tuned towards during thermalisation (e.g. 0.8).
    pub target_acceptance: f64,
    /// Seed of the first node (node `k` uses `seed + k`).
    pub seed: u64,
    /// `a₀` of the Gaussian reference; `None`: `max(a, 2dκ) + κ` (lattice mass² 1 or more).
    pub reference_a: Option<f64>,
}

/// `ln Z` of a φ⁴ action by thermodynamic integration from a Gaussian reference.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Phi4Ti {
    /// `ln Z = ln Z₀ − ∫₀¹ ⟨ΔS⟩_t dt` with its statistical error.
    pub ln_z: Estimate,
    /// The reference's `a₀`.
    pub reference_a: f64,
    /// The reference's exact `ln Z₀`.
    pub reference_ln_z: f64,
    /// The quadrature error of `ln Z`, an upper estimate, and its statistical error.
    pub quadrature_error: Estimate,
    /// `∫₀¹ ⟨ΔS⟩_t dt`, node by node.
    pub integral: QuadratureEstimate,
    /// The exact `ln Z` (a Gaussian target) beside the estimate.
    pub exact: Option<ExactComparison>,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// `ln Z` of `action` by thermodynamic integration from its Gaussian reference (module
/// docs), one HMC chain per Gauss–Kronrod node; `progress` gets the node done (1 … 15).
/// Errors: a reference that is not normalisable (`a₀ ≤ 2dκ`), a chain that does not move.
pub fn phi4_ln_z_by_ti(
    action: &PhiFour,
    settings: &Phi4TiSettings,
    progress: &mut dyn FnMut(usize),
) -> Result<Phi4Ti> {
    let start = std::time::Instant::now();
    let lattice = action.lattice();
    let (n, v) = (action.channels(), lattice.volume());
    let (kappa, a, b) = action.coefficients();
    let a0 = settings
        .reference_a
        .unwrap_or_else(|| a.max(2.0 * lattice.dim() as f64 * kappa) + kappa);
    let reference = GaussianExact::new(lattice, n, a0, kappa).map_err(|e| {
        NrgError::param(
            "reference",
            format!("the Gaussian reference a₀ = {a0}, κ = {kappa} is not normalisable: {e}"),
        )
    })?;
    let delta = |field: &[f64]| -> f64 {
        let (mut p2, mut p4) = (0.0, 0.0);
        for x in 0..v {
            let r: f64 = (0..n).map(|c| field[c * v + x] * field[c * v + x]).sum();
            p2 += r;
            p4 += r * r;
        }
        (a - a0) * p2 + b * p4
    };
    let mut integrand = |t: f64, k: usize| -> Result<Estimate> {
        let node = PhiFour::canonical_form(lattice, n, kappa, a0 + t * (a - a0), t * b)?;
        let seed = settings.seed.wrapping_add(k as u64);
        let chain = Hmc::new(
            node,
            vec![0.0; n * v],
            settings.step,
            settings.leapfrog,
            seed,
        )?;
        let mut sim = PhiFourSimulation::hmc(chain, settings.target_acceptance);
        let mut series = Vec::with_capacity(settings.run.sweeps);
        run_observed(&mut sim, &settings.run, &mut |_| {}, &mut |field| {
            series.push(delta(field));
            Ok(())
        })?;
        progress(k + 1);
        Ok(gamma_method(&series)?.into())
    };
    let integral = integrate_gk15(0.0, 1.0, &mut integrand)?;
    let reference_ln_z = reference.thermo().ln_z;
    let ln_z = Estimate::new(
        reference_ln_z - integral.integral.value,
        integral.integral.error,
    );
    Ok(Phi4Ti {
        ln_z,
        reference_a: a0,
        reference_ln_z,
        quadrature_error: Estimate::new(integral.quadrature_error, integral.quadrature_error_noise),
        exact: action
            .exact_gaussian()
            .map(|g| ExactComparison::new(ln_z, g.thermo().ln_z)),
        integral,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule on `[0, 2]`: the Kronrod weights sum to the length, the Gauss weights too;
    /// polynomials up to degree 22 (Kronrod) and 13 (Gauss) are integrated exactly, so the
    /// quadrature error of `t^13` is zero and that of `t^22` is the Gauss rule's alone; the
    /// statistical error is `√Σ w² σ²`.
    #[test]
    fn gauss_kronrod_is_exact_for_polynomials() {
        let nodes = gk15_nodes(0.0, 2.0);
        assert_eq!(nodes.len(), 15);
        assert!(nodes.windows(2).all(|p| p[0].0 < p[1].0));
        let wk: f64 = nodes.iter().map(|n| n.1).sum();
        let wg: f64 = nodes.iter().filter_map(|n| n.2).sum();
        assert!((wk - 2.0).abs() < 1e-14 && (wg - 2.0).abs() < 1e-14);
        for (p, gauss_exact) in [(13, true), (22, false)] {
            let mut f = |t: f64, _| Ok(Estimate::new(t.powi(p), 0.5));
            let q = integrate_gk15(0.0, 2.0, &mut f).unwrap();
            let exact = 2f64.powi(p + 1) / (p + 1) as f64;
            assert!(
                (q.integral.value - exact).abs() < 1e-12 * exact,
                "t^{p}: {q:?}"
            );
            assert_eq!(q.quadrature_error < 1e-9 * exact, gauss_exact, "t^{p}");
            let sw2: f64 = nodes.iter().map(|n| n.1 * n.1).sum();
            assert!((q.integral.error - 0.5 * sw2.sqrt()).abs() < 1e-14);
        }
        assert!(integrate_gk15(1.0, 1.0, &mut |_, _| Ok(Estimate::new(0.0, 0.0))).is_err());
    }

    /// Panels: the graded edges; a peaked integrand (a Lorentzian of width 0.02 at the
    /// upper end of `[0, 1]`, exact integral `atan(50)/50`) that one 15-point rule gets
    /// wrong by 1.8·10⁻⁴ is integrated to 10⁻⁶ on four graded panels (3·10⁻¹²), whose
    /// summed |K − G| (4·10⁻⁷) still bounds the true error; errors and node indices add up.
    #[test]
    fn graded_panels_resolve_a_peak() {
        let edges = graded_edges(0.0, 1.0, 3).unwrap();
        assert_eq!(edges.len(), 4);
        assert!((edges[1] - 5.0 / 9.0).abs() < 1e-15 && edges[3] == 1.0);
        assert!(graded_edges(0.0, 1.0, 0).is_err());
        let exact = 50f64.atan() / 50.0;
        let mut seen = Vec::new();
        let mut f = |t: f64, k: usize| {
            seen.push(k);
            Ok(Estimate::new(1.0 / (1.0 + 2500.0 * (t - 1.0).powi(2)), 0.1))
        };
        let one = integrate_gk15(0.0, 1.0, &mut f).unwrap();
        let four = integrate_gk15_panels(&graded_edges(0.0, 1.0, 4).unwrap(), &mut f).unwrap();
        let (e1, e4) = (
            (one.integral.value - exact).abs(),
            (four.integral.value - exact).abs(),
        );
        assert!(e1 > 1e-4, "{e1}");
        assert!(
            e4 < 1e-6 && e4 <= four.quadrature_error + 1e-12,
            "{e4} {four:?}"
        );
        assert!(four.quadrature_error < one.quadrature_error);
        assert!(integrate_gk15_panels(&[1.0], &mut f).is_err());
        assert_eq!(four.nodes.len(), 60);
        assert_eq!(seen[15..], (0..60).collect::<Vec<_>>()[..]);
        // four panels of a quarter-length rule each: Σ w² σ² is a quarter-ish of one rule's
        assert!(four.integral.error < one.integral.error);
    }

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

    /// Two ends that do not overlap at all give an error, not a NaN.
    #[test]
    fn no_overlap_is_refused() {
        let e = bar(&BarInput {
            forward: &[0.0, 1.0],
            reverse: &[5000.0, 5001.0],
            reverse_order: SampleOrder::Independent,
        });
        assert!(e.unwrap_err().to_string().contains("overlap"));
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
