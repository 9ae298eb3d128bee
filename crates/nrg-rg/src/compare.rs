//! Side by side: coarse-grainings of the same 2D Ising configurations — Kadanoff's block
//! spins, an RBM's hidden units, a learned flow's coarse field — compared by their receptive
//! fields and by the couplings each set of coarse variables implies (issue 23; the question
//! of Mehta & Schwab, arXiv:1410.3831, and Iso, Shiba & Yokoo, arXiv:1801.07172).
//!
//! A coarse-graining ([`CoarseGraining`]) maps the visible spins `s ∈ {±1}^V` of an
//! `L × L` torus to `H` coarse variables `c ∈ {±1}^H`, drawn independently given `s` with
//! conditional means `m_j(s) = E[c_j | s]`:
//!
//! | scheme                      | `m_j(s)`                                                  |
//! |-----------------------------|-----------------------------------------------------------|
//! | majority rule, block side b | `sign Σ_{i ∈ block j} s_i` (0 on a tie: random tie-break)  |
//! | decimation                  | the block's corner spin                                   |
//! | RBM hidden unit             | `tanh θ_j(s)`, `θ_j = b_j + Σ_i W_ij s_i`                  |
//! | flow coarse field           | `sign φ_j(x(s, ξ))` at the configuration's noise `ξ`       |
//!
//! (The flow sees a relaxed field `x = M s + M^{1/2} ξ`, `nrg-run`; its coarse variable is a
//! deterministic function of `(s, ξ)`, so for the flow the expectations below run over `s`
//! *and* `ξ` with `ξ` held fixed under a flip: the response at fixed noise, which bounds
//! the response of the noise-averaged mean from above. For block spins and the RBM `m_j`
//! is the exact conditional mean.)
//!
//! **Receptive field** (the response to one flipped spin; `s⁽ⁱ⁾` is `s` with `s_i` flipped):
//!
//! ```text
//! R_j(i) = ½ E_s |m_j(s) − m_j(s⁽ⁱ⁾)|   ∈ [0, 1]      S_j(i) = ½ E_s[(m_j(s) − m_j(s⁽ⁱ⁾)) s_i]
//! ```
//!
//! Each coarse variable is oriented (`c_j → −c_j`, a gauge choice) so that `Σ_i S_j(i) ≥ 0`:
//! it follows its spins. Its centre is the circular mean of `R_j` on the torus along each
//! axis; where the mean resultant length along either axis is below ½ (a response spread
//! around the torus, as an RBM's hidden unit's can be) or no flip moves the variable, it
//! has no centre ("unlocated") and its pairs join no distance class. Its radius
//! `r_j = (Σ_i R_j(i) |i − centre_j|² / Σ_i R_j(i))^{1/2}` (lattice units, torus distance) and
//! its participation `P_j = (Σ_i R_j(i))² / Σ_i R_j(i)²`, the number of spins it responds
//! to. For `b = 2` majority on independent spins `R = 3/8` on the block's four sites and 0
//! elsewhere: `r = 1/√2`, `P = 4` exactly (tested).
//!
//! **Implied couplings.** The coarse configurations are fitted with the pairwise Ising model
//! `P(c) ∝ exp(Σ_j h_j c_j + Σ_{j<k} J_jk c_j c_k)` by pseudo-likelihood node by node — each
//! `c_j` a logistic regression on all the others (Besag 1975; Ravikumar, Wainwright &
//! Lafferty, Ann. Stat. 38, 1287 (2010)) — `J_jk = (Ĵ_jk + Ĵ_kj)/2`, with a ridge
//! `½ λ n ‖w‖²` (`λ` in [`CompareSettings`]) that keeps the fit finite on separable data.
//! The couplings are averaged per distance class of the centres, in coarse lattice units
//! (`|centre_j − centre_k| / b`): overlapping (< ½), nearest (1), diagonal (√2), (2, 0) and
//! farther, with jackknife errors over contiguous blocks of configurations. No lattice is
//! assumed, so an RBM's hidden units, which sit wherever their receptive fields are, are
//! treated exactly like block spins. Where the coarse variables do sit on a square lattice
//! the lattice operators of [`crate::pseudo`] are fitted too.
//!
//! Shapes: configurations are site-major `f64` slices of `±1`, `L²` values each.

use crate::block::{BlockRule, BlockSpin};
use crate::mcrg::even_operators;
use crate::pseudo::pseudo_likelihood;
use crate::rbm::{Rbm, ln_2cosh};
use nalgebra::{DMatrix, DVector};
use nrg_core::{Estimate, NrgError, Result};
use rand::RngExt;
use serde::Serialize;

/// A map from visible `±1` spins to coarse `±1` variables, drawn independently given the
/// spins (module docs).
pub trait CoarseGraining {
    /// Number of coarse variables `H`.
    fn coarse_len(&self) -> usize;

    /// The side of the square lattice the coarse variables sit on (row-major), if they do.
    fn coarse_side(&self) -> Option<usize>;

    /// Conditional means `m_j(s) ∈ [−1, 1]`, `[inputs.len()][H]`. `inputs[k] = (index,
    /// spins)`: `index` names the configuration, so that randomness a scheme attaches to it
    /// (the flow's relaxation noise) is shared by the configuration and its flips.
    fn means(&mut self, inputs: &[(usize, &[f64])]) -> Result<Vec<Vec<f64>>>;
}

/// Block spins as a [`CoarseGraining`]: one block step of side `b` on an `L × L` torus.
#[derive(Clone, Copy, Debug)]
pub struct BlockCoarse {
    step: BlockSpin,
    side: usize,
}

impl BlockCoarse {
    /// The block step `step` on an `L × L` torus (`L = side`). Errors: as
    /// [`BlockSpin::coarse`].
    pub fn new(step: BlockSpin, side: usize) -> Result<Self> {
        step.coarse(nrg_core::Lattice::square(side)?)?;
        Ok(Self { step, side })
    }
}

impl CoarseGraining for BlockCoarse {
    fn coarse_len(&self) -> usize {
        let lc = self.side / self.step.factor;
        lc * lc
    }

    fn coarse_side(&self) -> Option<usize> {
        Some(self.side / self.step.factor)
    }

    fn means(&mut self, inputs: &[(usize, &[f64])]) -> Result<Vec<Vec<f64>>> {
        let (l, b) = (self.side, self.step.factor);
        let lc = l / b;
        Ok(inputs
            .iter()
            .map(|&(_, s)| {
                let mut out = Vec::with_capacity(lc * lc);
                for bi in 0..lc {
                    for bj in 0..lc {
                        let at = |k: usize| s[(bi * b + k / b) * l + bj * b + k % b];
                        out.push(match self.step.rule {
                            BlockRule::Decimation => at(0),
                            BlockRule::Majority => {
                                let sum: f64 = (0..b * b).map(at).sum();
                                if sum == 0.0 { 0.0 } else { sum.signum() }
                            }
                        });
                    }
                }
                out
            })
            .collect())
    }
}

/// An RBM's hidden units as a [`CoarseGraining`]: `m_j = tanh θ_j(s)`.
#[derive(Clone, Copy, Debug)]
pub struct RbmHidden<'a> {
    /// The machine (visible units `L²`).
    pub rbm: &'a Rbm,
}

impl CoarseGraining for RbmHidden<'_> {
    fn coarse_len(&self) -> usize {
        self.rbm.hidden
    }

    fn coarse_side(&self) -> Option<usize> {
        None
    }

    fn means(&mut self, inputs: &[(usize, &[f64])]) -> Result<Vec<Vec<f64>>> {
        Ok(inputs
            .iter()
            .map(|&(_, s)| {
                let mut theta = vec![0.0; self.rbm.hidden];
                self.rbm.hidden_field(s, &mut theta);
                theta.iter().map(|t| t.tanh()).collect()
            })
            .collect())
    }
}

/// Settings of [`compare`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CompareSettings {
    /// Lattice side `L` of the visible spins.
    pub side: usize,
    /// Coarse lattice spacing `b` in visible lattice units (distance classes are in `r/b`).
    pub spacing: usize,
    /// Configurations (the first ones) over which the receptive fields are averaged; each
    /// costs `V + 1` evaluations of the scheme.
    pub receptive_configs: usize,
    /// Jackknife blocks for the couplings.
    pub blocks: usize,
    /// Ridge `λ` of the pairwise pseudo-likelihood (per configuration).
    pub ridge: f64,
}

/// The receptive fields of one scheme.
#[derive(Clone, Debug, Serialize)]
pub struct ReceptiveSummary {
    /// Configurations averaged over.
    pub configurations: usize,
    /// Orientation `±1` of each coarse variable (applied to everything below).
    pub orientation: Vec<f64>,
    /// Centre of each coarse variable `[row, col]` in lattice units (circular mean of `R_j`;
    /// `NaN` where unlocated).
    pub centres: Vec<[f64; 2]>,
    /// The smaller of the two axes' mean resultant lengths of `R_j` (1: a point, 0: spread
    /// evenly around the torus); below ½ the variable is unlocated.
    pub concentration: Vec<f64>,
    /// Coarse variables without a centre (no response, or concentration below ½).
    pub unlocated: usize,
    /// Radius per coarse variable (lattice units).
    pub radii: Vec<f64>,
    /// Participation per coarse variable.
    pub participation: Vec<f64>,
    /// Mean radius ± its standard error over the coarse variables.
    pub radius: Estimate,
    /// Mean participation ± its standard error over the coarse variables.
    pub mean_participation: Estimate,
    /// `R_j(i)` averaged over the located `j` after moving each centre to `(L/2, L/2)` plus
    /// the scheme's common sub-site offset: `[L²]` row-major.
    pub mean_field: Vec<f64>,
    /// The oriented signed fields `S_j(i)`, `[H][L²]`.
    pub signed: Vec<Vec<f64>>,
}

/// The couplings of one distance class.
#[derive(Clone, Debug, Serialize)]
pub struct DistanceClass {
    /// `overlap`, `nn`, `nnn`, `(2,0)` or `far`.
    pub name: String,
    /// `|centre_j − centre_k| / b` from …
    pub from: f64,
    /// … below this (`None`: no upper bound).
    pub to: Option<f64>,
    /// Pairs in the class.
    pub pairs: usize,
    /// Mean `J_jk` over the pairs, jackknife error.
    pub coupling: Option<Estimate>,
    /// Mean `|J_jk|` over the pairs, jackknife error.
    pub magnitude: Option<Estimate>,
}

/// The couplings one scheme's coarse variables imply.
#[derive(Clone, Debug, Serialize)]
pub struct CouplingsSummary {
    /// Configurations fitted.
    pub configurations: usize,
    /// Mean field `h_j` over the coarse variables, jackknife error.
    pub field: Estimate,
    /// `J` per distance class.
    pub classes: Vec<DistanceClass>,
    /// Every pair: `(j, k, |centre_j − centre_k| / b, J_jk ± σ)`.
    pub pairs: Vec<(usize, usize, f64, Estimate)>,
    /// Lattice operators (nn, nnn, (2,0), plaquette) where the variables sit on a lattice.
    pub lattice: Option<Vec<(String, Estimate)>>,
    /// Why the lattice fit is missing where the variables sit on a lattice.
    pub lattice_note: Option<String>,
}

/// Receptive fields and implied couplings of one scheme.
#[derive(Clone, Debug, Serialize)]
pub struct SchemeReport {
    /// The scheme's name.
    pub name: String,
    /// Coarse variables `H`.
    pub coarse: usize,
    /// Magnetisation per coarse variable `⟨c⟩` (oriented), mean over variables.
    pub magnetisation: f64,
    /// Receptive fields.
    pub receptive: ReceptiveSummary,
    /// Implied couplings.
    pub couplings: CouplingsSummary,
}

fn check(configs: &[Vec<f64>], settings: &CompareSettings) -> Result<()> {
    let v = settings.side * settings.side;
    if configs.len() < settings.blocks.max(2).saturating_mul(2) || settings.blocks < 2 {
        return Err(NrgError::param(
            "compare",
            format!(
                "need ≥ 2 jackknife blocks and ≥ 2 configurations per block ({} given)",
                configs.len()
            ),
        ));
    }
    if settings.receptive_configs == 0 || settings.spacing == 0 {
        return Err(NrgError::param(
            "compare",
            "need ≥ 1 receptive-field configuration and a spacing ≥ 1",
        ));
    }
    if !(settings.ridge.is_finite() && settings.ridge >= 0.0) {
        return Err(NrgError::param("ridge", "must be finite and ≥ 0"));
    }
    if let Some(c) = configs
        .iter()
        .find(|c| c.len() != v || c.iter().any(|s| s.abs() != 1.0))
    {
        return Err(NrgError::InvalidData(format!(
            "a configuration of {} values is not {side}×{side} spins ±1",
            c.len(),
            side = settings.side
        )));
    }
    Ok(())
}

/// Torus displacement `a − b` on a ring of `l`, in `[−l/2, l/2)`.
fn wrap(d: f64, l: f64) -> f64 {
    (d + l / 2.0).rem_euclid(l) - l / 2.0
}

/// Where a non-negative weight map on an `L × L` torus sits and how far it spreads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TorusSpread {
    /// `[row, col]`: the circular mean of the weights along each axis, in `[0, L)`.
    pub centre: [f64; 2],
    /// `(Σ w d² / Σ w)^{1/2}`, `d` the torus distance from the centre.
    pub radius: f64,
    /// The smaller of the two axes' mean resultant lengths (1: a point, 0: even spread).
    pub concentration: f64,
}

/// [`TorusSpread`] of the weights `w` (`[L²]` row-major, ≥ 0, not all 0).
pub fn torus_spread(w: &[f64], l: usize) -> TorusSpread {
    let lf = l as f64;
    let total: f64 = w.iter().sum();
    let mut centre = [0.0; 2];
    let mut concentration = 1.0f64;
    for (axis, c) in centre.iter_mut().enumerate() {
        let (mut cs, mut sn) = (0.0, 0.0);
        for (i, x) in w.iter().enumerate() {
            let p = if axis == 0 { i / l } else { i % l } as f64;
            let a = std::f64::consts::TAU * p / lf;
            cs += x * a.cos();
            sn += x * a.sin();
        }
        *c = (sn.atan2(cs) / std::f64::consts::TAU * lf).rem_euclid(lf);
        concentration = concentration.min(cs.hypot(sn) / total);
    }
    let second: f64 = w
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let dy = wrap((i / l) as f64 - centre[0], lf);
            let dx = wrap((i % l) as f64 - centre[1], lf);
            x * (dx * dx + dy * dy)
        })
        .sum();
    TorusSpread {
        centre,
        radius: (second / total).sqrt(),
        concentration,
    }
}

/// The receptive fields of `scheme` over `configs` (module docs).
pub fn receptive_fields(
    scheme: &mut dyn CoarseGraining,
    configs: &[Vec<f64>],
    settings: &CompareSettings,
) -> Result<ReceptiveSummary> {
    let (l, h) = (settings.side, scheme.coarse_len());
    let v = l * l;
    let n = settings.receptive_configs.min(configs.len());
    let mut abs = vec![vec![0.0; v]; h];
    let mut signed = vec![vec![0.0; v]; h];
    let mut flipped: Vec<Vec<f64>> = vec![Vec::new(); v];
    for (c, s) in configs.iter().take(n).enumerate() {
        for (i, f) in flipped.iter_mut().enumerate() {
            f.clear();
            f.extend_from_slice(s);
            f[i] = -f[i];
        }
        let mut inputs: Vec<(usize, &[f64])> = Vec::with_capacity(v + 1);
        inputs.push((c, s.as_slice()));
        inputs.extend(flipped.iter().map(|f| (c, f.as_slice())));
        let m = scheme.means(&inputs)?;
        if m.len() != v + 1 || m.iter().any(|r| r.len() != h) {
            return Err(NrgError::InvalidData(
                "a coarse-graining returned means of the wrong shape".into(),
            ));
        }
        for i in 0..v {
            for j in 0..h {
                let d = m[0][j] - m[1 + i][j];
                abs[j][i] += 0.5 * d.abs();
                signed[j][i] += 0.5 * d * s[i];
            }
        }
    }
    let scale = 1.0 / n as f64;
    let lf = l as f64;
    let mut out = ReceptiveSummary {
        configurations: n,
        orientation: Vec::with_capacity(h),
        centres: Vec::with_capacity(h),
        concentration: Vec::with_capacity(h),
        unlocated: 0,
        radii: Vec::with_capacity(h),
        participation: Vec::with_capacity(h),
        radius: Estimate::new(0.0, 0.0),
        mean_participation: Estimate::new(0.0, 0.0),
        mean_field: vec![0.0; v],
        signed: Vec::with_capacity(h),
    };
    for j in 0..h {
        let r: Vec<f64> = abs[j].iter().map(|x| x * scale).collect();
        let total: f64 = r.iter().sum();
        let o = if signed[j].iter().sum::<f64>() >= 0.0 {
            1.0
        } else {
            -1.0
        };
        out.orientation.push(o);
        out.signed
            .push(signed[j].iter().map(|x| o * x * scale).collect());
        if total <= 0.0 {
            // a variable that no single flip moves: no centre, no radius
            out.centres.push([f64::NAN, f64::NAN]);
            out.concentration.push(0.0);
            out.unlocated += 1;
            out.radii.push(f64::NAN);
            out.participation.push(0.0);
            continue;
        }
        let spread = torus_spread(&r, l);
        let (centre, concentration) = (spread.centre, spread.concentration);
        out.concentration.push(concentration);
        out.radii.push(spread.radius);
        out.participation
            .push(total * total / r.iter().map(|x| x * x).sum::<f64>());
        if concentration < 0.5 {
            out.unlocated += 1;
            out.centres.push([f64::NAN, f64::NAN]);
        } else {
            out.centres.push(centre);
        }
    }
    // The mean field: each unit's map moved so that its centre lands on (L/2, L/2) plus the
    // scheme's common sub-site offset (the circular mean of the centres' fractional parts),
    // so that centres at half-integers (b = 2 blocks) do not round both ways.
    let mut offset = [0.0; 2];
    for (axis, o) in offset.iter_mut().enumerate() {
        let (mut cs, mut sn) = (0.0, 0.0);
        for c in out.centres.iter().filter(|c| c[axis].is_finite()) {
            let a = std::f64::consts::TAU * c[axis].fract();
            cs += a.cos();
            sn += a.sin();
        }
        *o = (sn.atan2(cs) / std::f64::consts::TAU).rem_euclid(1.0);
    }
    for (j, centre) in out.centres.iter().enumerate() {
        if !centre[0].is_finite() {
            continue;
        }
        let shift = |axis: usize| (centre[axis] - offset[axis]).round().rem_euclid(lf) as usize;
        let (ci, cj) = (shift(0), shift(1));
        for (i, w) in abs[j].iter().enumerate() {
            let (a, b) = ((i / l + l + l / 2 - ci) % l, (i % l + l + l / 2 - cj) % l);
            out.mean_field[a * l + b] += w * scale / h as f64;
        }
    }
    out.radius = mean_and_error(&out.radii);
    out.mean_participation = mean_and_error(
        &out.participation
            .iter()
            .copied()
            .filter(|p| *p > 0.0)
            .collect::<Vec<_>>(),
    );
    Ok(out)
}

/// Mean ± standard error of the finite values.
fn mean_and_error(x: &[f64]) -> Estimate {
    let x: Vec<f64> = x.iter().copied().filter(|v| v.is_finite()).collect();
    let n = x.len() as f64;
    if x.is_empty() {
        return Estimate::new(f64::NAN, f64::NAN);
    }
    let mean = x.iter().sum::<f64>() / n;
    let var = if x.len() > 1 {
        x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        f64::NAN
    };
    Estimate::new(mean, (var / n).sqrt())
}

/// Draws the oriented coarse configurations of `configs` (batches of 256).
pub fn draw_coarse(
    scheme: &mut dyn CoarseGraining,
    configs: &[Vec<f64>],
    orientation: &[f64],
    rng: &mut impl rand::Rng,
) -> Result<Vec<Vec<f64>>> {
    let mut out = Vec::with_capacity(configs.len());
    for (start, chunk) in (0..configs.len()).step_by(256).zip(configs.chunks(256)) {
        let inputs: Vec<(usize, &[f64])> = chunk
            .iter()
            .enumerate()
            .map(|(k, s)| (start + k, s.as_slice()))
            .collect();
        for m in scheme.means(&inputs)? {
            if m.len() != orientation.len() {
                return Err(NrgError::InvalidData(
                    "a coarse-graining returned means of the wrong shape".into(),
                ));
            }
            out.push(
                m.iter()
                    .zip(orientation)
                    .map(|(&m, o)| {
                        let up = rng.random::<f64>() < 0.5 * (1.0 + m.clamp(-1.0, 1.0));
                        o * if up { 1.0 } else { -1.0 }
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// A pairwise fit: each node's parameters `(h_j, J_j·)`, the fields `h`, the symmetrised
/// couplings `J`.
type PairwiseFit = (Vec<DVector<f64>>, Vec<f64>, DMatrix<f64>);

/// One jackknife replica: fields and couplings.
type Replica = (Vec<f64>, DMatrix<f64>);

/// Node-wise pseudo-likelihood fit of the pairwise Ising model on the configurations
/// `use_` (module docs): `(h [H], J [H×H] symmetrised)`, warm-started from `start`.
/// `None` where Newton's method does not converge.
fn fit_pairwise(
    data: &[Vec<f64>],
    use_: &[usize],
    ridge: f64,
    start: Option<&[DVector<f64>]>,
) -> Option<PairwiseFit> {
    let h = data.first().map_or(0, Vec::len);
    let n = use_.len() as f64;
    let mut nodes = Vec::with_capacity(h);
    for j in 0..h {
        // features: 1 (the field) and c_k for k ≠ j
        let feat = |c: &[f64], a: usize| -> f64 {
            if a == 0 {
                1.0
            } else if a <= j {
                c[a - 1]
            } else {
                c[a]
            }
        };
        let mut w = start.map_or_else(|| DVector::zeros(h), |s| s[j].clone());
        // the design matrix X [n, h] and the responses, once per node; each Newton step is
        // then two matrix-vector products and one matrix product (matrixmultiply's gemm)
        let x = DMatrix::<f64>::from_fn(use_.len(), h, |r, a| feat(&data[use_[r]], a));
        let xt = x.transpose();
        let y = DVector::<f64>::from_iterator(use_.len(), use_.iter().map(|&c| data[c][j]));
        // the penalised log pseudo-likelihood of node j, and (optionally) its derivatives
        let evaluate = |w: &DVector<f64>, derivatives: bool| {
            let theta = &x * w;
            let value = -0.5 * ridge * n * w.norm_squared()
                + theta
                    .iter()
                    .zip(y.iter())
                    .map(|(&t, &c)| c * t - ln_2cosh(t))
                    .sum::<f64>();
            if !derivatives {
                return (value, DVector::zeros(0), DMatrix::zeros(0, 0));
            }
            let th = theta.map(f64::tanh);
            let grad = &xt * (&y - &th) - w * (ridge * n);
            let mut xq = x.clone();
            for (r, t) in th.iter().enumerate() {
                let q = 1.0 - t * t;
                xq.row_mut(r).scale_mut(q);
            }
            let mut hess = &xt * xq;
            for a in 0..h {
                hess[(a, a)] += ridge * n;
            }
            (value, grad, hess)
        };
        let mut converged = false;
        for _ in 0..100 {
            let (value, grad, hess) = evaluate(&w, true);
            // a Newton step, halved until the objective does not fall (damped Newton:
            // plain Newton overshoots on nearly separable data)
            let step = hess.cholesky()?.solve(&grad);
            if step.amax() < 1e-9 * (1.0 + w.amax()) || grad.amax() < 1e-10 * n {
                converged = true;
                break;
            }
            let mut t = 1.0;
            loop {
                let trial = &w + &step * t;
                let (v, _, _) = evaluate(&trial, false);
                if v.is_finite() && v >= value - 1e-12 * n {
                    w = trial;
                    break;
                }
                t *= 0.5;
                if t < 1e-10 {
                    return None;
                }
            }
            if !w.iter().all(|v| v.is_finite()) {
                return None;
            }
        }
        if !converged {
            return None;
        }
        nodes.push(w);
    }
    let fields = nodes.iter().map(|w| w[0]).collect();
    let mut j = DMatrix::<f64>::zeros(h, h);
    for a in 0..h {
        for b in 0..h {
            if a != b {
                let k = if b < a { b + 1 } else { b };
                j[(a, b)] = nodes[a][k];
            }
        }
    }
    let sym = (&j + j.transpose()) * 0.5;
    Some((nodes, fields, sym))
}

/// The distance classes (coarse lattice units).
const CLASSES: [(&str, f64, f64); 5] = [
    ("overlap", 0.0, 0.5),
    ("nn", 0.5, 1.207),
    ("nnn", 1.207, 1.707),
    ("(2,0)", 1.707, 2.118),
    ("far", 2.118, f64::INFINITY),
];

/// The couplings the coarse configurations `coarse` imply (module docs); `centres` are the
/// coarse variables' centres in visible lattice units.
pub fn implied_couplings(
    coarse: &[Vec<f64>],
    centres: &[[f64; 2]],
    lattice_side: Option<usize>,
    settings: &CompareSettings,
) -> Result<CouplingsSummary> {
    let n = coarse.len();
    let h = centres.len();
    let blocks = settings.blocks;
    if h < 2 || n < blocks.saturating_mul(2) || coarse.iter().any(|c| c.len() != h) {
        return Err(NrgError::param(
            "couplings",
            format!(
                "need ≥ 2 coarse variables and ≥ {} configurations",
                2 * blocks
            ),
        ));
    }
    let diverged = || {
        NrgError::InvalidData(
            "the pairwise pseudo-likelihood did not converge (raise the ridge?)".into(),
        )
    };
    let all: Vec<usize> = (0..n).collect();
    let (nodes, fields, j_full) =
        fit_pairwise(coarse, &all, settings.ridge, None).ok_or_else(diverged)?;
    let size = n / blocks;
    let mut jack: Vec<Replica> = Vec::with_capacity(blocks);
    for b in 0..blocks {
        let keep: Vec<usize> = (0..n)
            .filter(|i| !(b * size..(b + 1) * size).contains(i))
            .collect();
        let (_, f, j) =
            fit_pairwise(coarse, &keep, settings.ridge, Some(&nodes)).ok_or_else(diverged)?;
        jack.push((f, j));
    }
    let nb = blocks as f64;
    let jackknife = |full: f64, each: &dyn Fn(&Replica) -> f64| {
        let vals: Vec<f64> = jack.iter().map(each).collect();
        let mean = vals.iter().sum::<f64>() / nb;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
        Estimate::new(full, ((nb - 1.0) / nb * var).sqrt())
    };
    let mean_h = |f: &[f64]| f.iter().sum::<f64>() / h as f64;
    let field = jackknife(mean_h(&fields), &|(f, _)| mean_h(f));
    let lf = settings.side as f64;
    let dist = |a: usize, b: usize| {
        let dy = wrap(centres[a][0] - centres[b][0], lf);
        let dx = wrap(centres[a][1] - centres[b][1], lf);
        (dx * dx + dy * dy).sqrt() / settings.spacing as f64
    };
    let mut pairs = Vec::new();
    let mut class_of: Vec<Vec<(usize, usize)>> = vec![Vec::new(); CLASSES.len()];
    for a in 0..h {
        for b in a + 1..h {
            let d = dist(a, b);
            pairs.push((a, b, d, jackknife(j_full[(a, b)], &|(_, j)| j[(a, b)])));
            if let Some(k) = CLASSES.iter().position(|&(_, lo, hi)| d >= lo && d < hi) {
                class_of[k].push((a, b));
            }
        }
    }
    let classes = CLASSES
        .iter()
        .zip(&class_of)
        .map(|(&(name, lo, hi), members)| {
            let mean = |j: &DMatrix<f64>, f: fn(f64) -> f64| {
                members.iter().map(|&(a, b)| f(j[(a, b)])).sum::<f64>() / members.len() as f64
            };
            let (coupling, magnitude) = if members.is_empty() {
                (None, None)
            } else {
                (
                    Some(jackknife(mean(&j_full, |x| x), &|(_, j)| mean(j, |x| x))),
                    Some(jackknife(mean(&j_full, f64::abs), &|(_, j)| {
                        mean(j, f64::abs)
                    })),
                )
            };
            DistanceClass {
                name: name.to_string(),
                from: lo,
                to: hi.is_finite().then_some(hi),
                pairs: members.len(),
                coupling,
                magnitude,
            }
        })
        .collect();
    let (lattice, lattice_note) = match lattice_side {
        Some(side) if side >= 4 => {
            let ops = &even_operators()[..4];
            match pseudo_likelihood(coarse, side, side, ops, blocks) {
                Ok(k) => (
                    Some(ops.iter().map(|o| o.name.to_string()).zip(k).collect()),
                    None,
                ),
                // e.g. fully ordered coarse spins: the pair fit (ridged) stands, this one not
                Err(e) => (None, Some(e.to_string())),
            }
        }
        Some(_) => (None, Some("a coarse lattice below 4 × 4".to_string())),
        None => (None, None),
    };
    Ok(CouplingsSummary {
        configurations: n,
        field,
        classes,
        pairs,
        lattice,
        lattice_note,
    })
}

/// Receptive fields and implied couplings of `scheme` on `configs`: the whole comparison
/// for one scheme (module docs). `rng` draws the coarse variables.
///
/// Errors: fewer than 5 jackknife blocks, fewer configurations than `10 H` (the pair fit
/// has `H` parameters per node; with fewer it overfits by far more than its jackknife error
/// shows) or `2 × blocks`, configurations of the wrong size or not `±1`, a negative ridge,
/// a scheme whose means have the wrong shape, a pair fit that does not converge.
pub fn compare(
    name: &str,
    scheme: &mut dyn CoarseGraining,
    configs: &[Vec<f64>],
    settings: &CompareSettings,
    rng: &mut impl rand::Rng,
) -> Result<SchemeReport> {
    check(configs, settings)?;
    let h = scheme.coarse_len();
    if settings.blocks < 5 || configs.len() < h.saturating_mul(10) {
        return Err(NrgError::param(
            "configs",
            format!(
                "{name}: the pair couplings of {h} coarse variables need ≥ {} configurations \
                 (10 per variable) and ≥ 5 jackknife blocks; {} configurations, {} blocks given",
                h.saturating_mul(10),
                configs.len(),
                settings.blocks
            ),
        ));
    }
    let receptive = receptive_fields(scheme, configs, settings)?;
    let coarse = draw_coarse(scheme, configs, &receptive.orientation, rng)?;
    let magnetisation = coarse.iter().flatten().sum::<f64>() / (coarse.len() * h.max(1)) as f64;
    let couplings = implied_couplings(&coarse, &receptive.centres, scheme.coarse_side(), settings)
        .map_err(|e| NrgError::InvalidData(format!("{name}: {e}")))?;
    Ok(SchemeReport {
        name: name.to_string(),
        coarse: h,
        magnetisation,
        receptive,
        couplings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn random_spins(n: usize, v: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                (0..v)
                    .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
                    .collect()
            })
            .collect()
    }

    fn settings(side: usize, spacing: usize) -> CompareSettings {
        CompareSettings {
            side,
            spacing,
            receptive_configs: 400,
            blocks: 10,
            ridge: 1e-4,
        }
    }

    #[test]
    fn majority_receptive_field_on_independent_spins_is_exact() {
        // R = 3/8 on the block's four sites (the other three sum to ±1 with probability
        // 3/4, and then a flip moves the block spin between ±1 and 0), 0 elsewhere.
        let configs = random_spins(400, 64, 3);
        let step = BlockSpin {
            rule: BlockRule::Majority,
            factor: 2,
        };
        let mut scheme = BlockCoarse::new(step, 8).unwrap();
        let r = receptive_fields(&mut scheme, &configs, &settings(8, 2)).unwrap();
        assert_eq!(r.centres.len(), 16);
        // the block of coarse site 5 = (1, 1) covers rows 2–3, cols 2–3
        let c = r.centres[5];
        assert!(
            (c[0] - 2.5).abs() < 0.05 && (c[1] - 2.5).abs() < 0.05,
            "{c:?}"
        );
        let sig = |p: f64| (p * (1.0 - p) / 400.0).sqrt();
        for (i, &x) in r.signed[5].iter().enumerate() {
            let inside = matches!((i / 8, i % 8), (2..=3, 2..=3));
            if inside {
                // |Δm| ∈ {0, 1}: a binomial frequency of p = 3/4, halved
                assert!((x - 0.375).abs() < 4.0 * 0.5 * sig(0.75), "{i}: {x}");
            } else {
                assert_eq!(x, 0.0);
            }
        }
        assert!(
            (r.radius.value - 0.5f64.sqrt()).abs() < 0.02,
            "{:?}",
            r.radius
        );
        assert!((r.mean_participation.value - 4.0).abs() < 0.05);
        assert!(r.orientation.iter().all(|&o| o == 1.0));
        // the mean map is one 2×2 block, not smeared by centres rounding both ways
        assert_eq!(r.mean_field.iter().filter(|&&x| x > 0.0).count(), 4);
        let total: f64 = r.mean_field.iter().sum();
        assert!((total - 1.5).abs() < 0.05, "{total}");
    }

    #[test]
    fn decimation_responds_to_one_spin() {
        let configs = random_spins(40, 64, 4);
        let step = BlockSpin {
            rule: BlockRule::Decimation,
            factor: 2,
        };
        let mut scheme = BlockCoarse::new(step, 8).unwrap();
        let r = receptive_fields(&mut scheme, &configs, &settings(8, 2)).unwrap();
        assert!(r.radii.iter().all(|&x| x.abs() < 1e-9));
        assert!(r.participation.iter().all(|&p| (p - 1.0).abs() < 1e-12));
        let c = r.centres[5];
        assert!(
            (c[0] - 2.0).abs() < 1e-9 && (c[1] - 2.0).abs() < 1e-9,
            "{c:?}"
        );
    }

    #[test]
    fn an_rbm_with_negative_weights_is_oriented_and_located() {
        // one hidden unit coupled (negatively) to spins 9 and 10 of a 4×4 torus
        let mut rbm = Rbm::new(
            16,
            1,
            0.0,
            &mut rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1),
        )
        .unwrap();
        rbm.w[9] = -0.8;
        rbm.w[10] = -0.8;
        let configs = random_spins(200, 16, 5);
        let mut scheme = RbmHidden { rbm: &rbm };
        let r = receptive_fields(&mut scheme, &configs, &settings(4, 2)).unwrap();
        assert_eq!(r.orientation, vec![-1.0]);
        let c = r.centres[0];
        assert!(
            (c[0] - 2.0).abs() < 1e-9 && (c[1] - 1.5).abs() < 1e-9,
            "{c:?}"
        );
        assert!((r.radius.value - 0.5).abs() < 1e-9);
        assert!((r.mean_participation.value - 2.0).abs() < 1e-9);
        assert!(r.signed[0][9] > 0.0 && r.signed[0][0] == 0.0);
    }

    /// Exact samples of a pairwise Ising model on `h` spins by enumeration.
    fn exact_samples(j: &DMatrix<f64>, field: &[f64], n: usize, seed: u64) -> Vec<Vec<f64>> {
        let h = field.len();
        let states: Vec<Vec<f64>> = (0..1usize << h)
            .map(|s| {
                (0..h)
                    .map(|k| if s >> k & 1 == 1 { 1.0 } else { -1.0 })
                    .collect()
            })
            .collect();
        let w: Vec<f64> = states
            .iter()
            .map(|c| {
                let mut e: f64 = c.iter().zip(field).map(|(a, b)| a * b).sum();
                for a in 0..h {
                    for b in a + 1..h {
                        e += j[(a, b)] * c[a] * c[b];
                    }
                }
                e.exp()
            })
            .collect();
        let total: f64 = w.iter().sum();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let mut u = rng.random::<f64>() * total;
                let mut k = 0;
                while k + 1 < w.len() && u >= w[k] {
                    u -= w[k];
                    k += 1;
                }
                states[k].clone()
            })
            .collect()
    }

    #[test]
    fn pairwise_pseudo_likelihood_recovers_known_couplings() {
        // 6 spins on a ring of centres 2 apart (spacing 2 → nn distance 1), J_nn = 0.4,
        // J_nnn (ring distance 2 → coarse distance 2 here) = −0.2, fields 0.1.
        let h = 6;
        let mut j = DMatrix::zeros(h, h);
        for a in 0..h {
            let b = (a + 1) % h;
            let c = (a + 2) % h;
            j[(a, b)] = 0.4;
            j[(b, a)] = 0.4;
            j[(a, c)] = -0.2;
            j[(c, a)] = -0.2;
        }
        let field = vec![0.1; h];
        let data = exact_samples(&j, &field, 20_000, 7);
        // centres on a 12-site ring embedded in a 12×12 torus, 2 apart
        let centres: Vec<[f64; 2]> = (0..h).map(|a| [0.0, 2.0 * a as f64]).collect();
        let s = CompareSettings {
            side: 12,
            spacing: 2,
            receptive_configs: 1,
            blocks: 10,
            ridge: 0.0,
        };
        let out = implied_couplings(&data, &centres, None, &s).unwrap();
        for &(a, b, d, ref e) in &out.pairs {
            let truth = j[(a, b)];
            assert!(
                (e.value - truth).abs() < 4.0 * e.error,
                "{a}{b} at {d}: {e:?} vs {truth}"
            );
            assert!(e.error < 0.03);
        }
        let nn = out.classes.iter().find(|c| c.name == "nn").unwrap();
        assert_eq!(nn.pairs, 6);
        let k = nn.coupling.unwrap();
        assert!((k.value - 0.4).abs() < 4.0 * k.error, "{k:?}");
        assert!((out.field.value - 0.1).abs() < 4.0 * out.field.error);
    }

    #[test]
    fn bad_input_is_refused() {
        let configs = random_spins(40, 64, 1);
        let step = BlockSpin {
            rule: BlockRule::Majority,
            factor: 2,
        };
        let mut scheme = BlockCoarse::new(step, 8).unwrap();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let mut bad = configs.clone();
        bad[3][0] = 0.5;
        assert!(compare("m", &mut scheme, &bad, &settings(8, 2), &mut rng).is_err());
        assert!(compare("m", &mut scheme, &configs[..10], &settings(8, 2), &mut rng).is_err());
        let mut s = settings(8, 2);
        s.ridge = -1.0;
        assert!(compare("m", &mut scheme, &configs, &s, &mut rng).is_err());
        assert!(BlockCoarse::new(step, 6).is_ok());
        assert!(BlockCoarse::new(BlockSpin { factor: 3, ..step }, 8).is_err());
    }
}
