//! Annealed importance sampling (AIS) and sequential Monte Carlo (SMC) from a trained flow:
//! a stochastic normalizing flow whose deterministic part is the fixed flow `G` and whose
//! stochastic part is HMC in its latent space.
//!
//! **Path.** With the proposal `q` (the flow's density, symmetrised where the sampler's is)
//! and the target `e^{−S}`, the annealing path in field space is
//! `f_β(x) = q(x)^{1−β} e^{−βS(x)}`, `0 = β_0 < β_1 < … < β_T = 1` (`f_0 = q` is normalised,
//! `∫ f_1 = Z`). It is sampled in the flow's latent coordinates `x = G(z)`, where it reads
//!
//! ```text
//! π_β(z) = f_β(G(z)) |det ∂G/∂z| = exp(−V_β(z)),   V_β = β U(z) − (1 − β) ln p₀(z)
//! U(z)   = S(G(z)) − ln|det ∂G/∂z|                 (the bulk effective action)
//! ln p₀  = ln q(G(z)) + ln|det ∂G/∂z|              (= ln p_Z(z), the prior, for a plain flow)
//! ```
//!
//! so the moves see a target that the flow has already made nearly Gaussian. For a plain
//! flow `p₀` is the prior and costs nothing extra; for a symmetrised density (the Z₂ average
//! of a flow trained with it, or a lattice-symmetry average) `ln q(G(z))` goes through the
//! flow's inverse, which keeps both magnetisation sectors in the start distribution.
//!
//! **Weights** (Neal, Statistics and Computing 11 (2001) 125, eq. 3; Jarzynski, PRL 78
//! (1997) 2690): every particle starts at `z ∼ p₀` with `ln w = 0`; stage `t` adds
//!
//! ```text
//! ln w += (β_t − β_{t−1}) ℓ(z),      ℓ(z) = −S(G(z)) − ln q(G(z))   (the NIS log-weight)
//! ```
//!
//! and then (for `t < T`) moves `z` by `moves` HMC trajectories that leave `π_{β_t}`
//! invariant (`leapfrog` steps of a step jittered by ±20 %, accepted on `V_β + ½p²`).
//! `E[w] = Z`, so the final weights enter the same Pareto-smoothed importance sums as NIS
//! ([`super::nis::ImportanceSums`]): `ln Ẑ`, reweighted observables on the final particles,
//! `⟨S⟩`, the entropy, the ESS and `k̂`. With one stage (`β_1 = 1`) AIS is NIS.
//!
//! **Schedule and step** are fixed by a pilot run of `pilot` particles, then frozen for the
//! production particles (which are therefore independent and their weights unbiased): the
//! pilot chooses each next `β` so that the conditional ESS of the increment,
//! `CESS = (Σ_i W_i e^{Δℓ_i})² / Σ_i W_i e^{2Δℓ_i}` (`W` the normalised current weights), equals
//! `cess` (Zhou, Johansen & Aston, JCGS 25 (2016) 701, section 3.3), by bisection on `Δβ`,
//! and adapts the HMC step towards acceptance 0.75 by dual averaging ([`crate::tuning`]).
//! A fixed schedule can be given instead. One step serves every stage.
//!
//! **SMC** (Del Moral, Doucet & Jasra, JRSS B 68 (2006) 411): the same stages, but when the
//! ESS of a system's weights falls below `threshold · N` the system is resampled
//! (systematic resampling; every weight set to the mean, so `Ẑ = mean w` stays unbiased).
//! Resampling correlates the particles of a system, so each batch of `batch` particles is
//! one independent system and the estimates are formed over systems: system `b` enters the
//! importance sums as one sample with `ln w_b = ln Ẑ_b` and values its weighted means
//! (`γ̂_b(O) = Ẑ_b Σ W_i O_i` is unbiased for `Z⟨O⟩`). Its error bars therefore need many
//! systems (at least 25 for the tail diagnostic).
//!
//! Shapes: latents and configurations `[N, C, R, W]`, on the host as `f64` rows of `C·R·W`.
//! The latent model (and the start density, if given) must live on an autodiff device.

use super::host;
use super::measure::Measure;
use super::nis::{DerivedLnZ, ImportanceSums, NisSummary};
use crate::ChainRng;
use crate::baseline::jittered_step;
use crate::tuning::{DualAveraging, acceptance_probability};
use burn::tensor::{Device, Tensor, TensorData};
use nrg_core::{Action, DensityModel, LatentModel, NrgError, Result};
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The annealing schedule `0 = β_0 < … < β_T = 1`.
#[derive(Clone, Debug, PartialEq)]
pub enum AisSchedule {
    /// Chosen by the pilot run so that every stage's conditional ESS is `cess` (in `(0, 1)`);
    /// more than `max_stages` stages is an error.
    Adaptive {
        /// Target conditional ESS per stage.
        cess: f64,
        /// The most stages allowed.
        max_stages: usize,
    },
    /// Given: the `β_t` after `β_0 = 0`, increasing, ending at 1.
    Fixed(Vec<f64>),
}

/// Whether the particles are resampled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Resampling {
    /// Never: annealed importance sampling, one independent weight per particle.
    Never,
    /// When a system's ESS falls below `threshold · N`: sequential Monte Carlo.
    BelowEss(f64),
}

/// The HMC moves between stages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AisMoves {
    /// HMC trajectories per stage (0: none — then AIS is NIS whatever the schedule).
    pub moves: usize,
    /// The most leapfrog steps per trajectory (each draws its number from `1 ..= leapfrog`).
    pub leapfrog: usize,
    /// Initial leapfrog step, adapted during the pilot run.
    pub step: f64,
}

/// What [`ais`] should do.
pub struct AisRequest<'a> {
    /// Per-configuration observables of the final particles.
    pub measure: &'a dyn Measure,
    /// Also estimate these `ln Z + c·⟨O⟩`.
    pub derived: Vec<DerivedLnZ>,
    /// Production particles in all.
    pub samples: usize,
    /// Particles per batch through the flow (SMC: per independent system).
    pub batch: usize,
    /// Particles of the pilot run that fixes the schedule and the step (not counted).
    pub pilot: usize,
    /// The schedule.
    pub schedule: AisSchedule,
    /// The moves.
    pub moves: AisMoves,
    /// AIS or SMC.
    pub resampling: Resampling,
    /// Seed of the host random numbers (momenta, acceptance, resampling).
    pub seed: u64,
}

/// The result of AIS or SMC.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AisSummary {
    /// `ais` or `smc`.
    pub method: String,
    /// The estimates from the final weights — over particles (AIS) or over independent
    /// systems (SMC) — as [`super::nis`] forms them (`ln Z`, observables, `k̂`, …). Its
    /// `variational_free_energy` is here `−mean ln w` of the annealed weights (AIS) or
    /// `−mean ln Ẑ_b` (SMC): still an upper bound on `−ln Z`, but not the flow's `F_q`.
    pub estimates: NisSummary,
    /// `β_1 … β_T`.
    pub schedule: Vec<f64>,
    /// HMC trajectories per stage.
    pub moves: usize,
    /// Leapfrog steps per trajectory.
    pub leapfrog: usize,
    /// The leapfrog step after the pilot's adaptation.
    pub step: f64,
    /// Mean acceptance of the production moves.
    pub acceptance: f64,
    /// Production particles.
    pub particles: usize,
    /// Independent systems (AIS: the particles themselves).
    pub systems: usize,
    /// SMC: mean resamplings per system.
    pub resamplings: f64,
    /// The ESS per particle of the final weights, averaged over systems (AIS: of all
    /// particles, as `estimates.ess`).
    pub final_ess: f64,
    /// Flow evaluations with gradient per particle (the last batch's).
    pub gradient_evaluations: usize,
    /// Wall time of the production particles, seconds.
    pub seconds: f64,
    /// Wall time of the pilot run, seconds.
    pub pilot_seconds: f64,
}

/// What [`ais`] returns.
#[derive(Clone, Debug)]
pub struct AisOutput {
    /// The estimates and the run's description.
    pub summary: AisSummary,
}

impl AisRequest<'_> {
    fn check(&self) -> Result<()> {
        if self.batch == 0 || self.samples < 2 {
            return Err(NrgError::param(
                "samples",
                "need at least 2 particles and batch ≥ 1",
            ));
        }
        if let Resampling::BelowEss(t) = self.resampling {
            if !(t > 0.0 && t <= 1.0) {
                return Err(NrgError::param(
                    "resample-ess",
                    format!("must be in (0, 1], got {t}"),
                ));
            }
            if self.samples / self.batch < 2 {
                return Err(NrgError::param(
                    "samples",
                    format!(
                        "SMC forms its error from independent systems of `batch` particles: \
                         {} particles in batches of {} make fewer than 2",
                        self.samples, self.batch
                    ),
                ));
            }
            if !self.samples.is_multiple_of(self.batch) {
                return Err(NrgError::param(
                    "samples",
                    format!(
                        "SMC needs whole systems: {} particles are not a multiple of the \
                         batch {}",
                        self.samples, self.batch
                    ),
                ));
            }
        }
        let m = &self.moves;
        if m.moves > 0 && (m.leapfrog == 0 || !(m.step.is_finite() && m.step > 0.0)) {
            return Err(NrgError::param(
                "step",
                "need a positive step size and ≥ 1 leapfrog step",
            ));
        }
        match &self.schedule {
            AisSchedule::Adaptive { cess, max_stages } => {
                if !(*cess > 0.0 && *cess < 1.0) || *max_stages == 0 {
                    return Err(NrgError::param(
                        "cess",
                        format!("the target conditional ESS must be in (0, 1), got {cess}"),
                    ));
                }
                if self.pilot < 2 {
                    return Err(NrgError::param(
                        "pilot",
                        "an adaptive schedule needs a pilot run of ≥ 2 particles",
                    ));
                }
            }
            AisSchedule::Fixed(b) => check_schedule(b)?,
        }
        Ok(())
    }
}

fn check_schedule(betas: &[f64]) -> Result<()> {
    let increasing = betas.windows(2).all(|w| w[0] < w[1]);
    let ok = !betas.is_empty()
        && increasing
        && betas[0] > 0.0
        && betas.last().is_some_and(|b| *b == 1.0);
    if ok {
        Ok(())
    } else {
        Err(NrgError::param(
            "schedule",
            format!("β must increase strictly from above 0 to exactly 1, got {betas:?}"),
        ))
    }
}

/// The models and the target, on one autodiff device.
struct Path<'a> {
    latent: &'a dyn LatentModel,
    start: Option<&'a dyn DensityModel>,
    action: &'a dyn Action,
    shape: [usize; 3],
    device: &'a Device,
}

/// A batch of particles, on the host: latents, `U`, `ln p₀`, `S`, the configurations, and
/// `∂V_β/∂z` at the `β` they were evaluated for.
#[derive(Clone)]
struct Particles {
    z: Vec<f64>,
    u: Vec<f64>,
    lp0: Vec<f64>,
    s: Vec<f64>,
    x: Vec<f64>,
    grad: Vec<f64>,
    per: usize,
}

impl Particles {
    fn len(&self) -> usize {
        self.u.len()
    }

    /// `ℓ = −U − ln p₀ = −S − ln q`.
    fn ell(&self, i: usize) -> f64 {
        -self.u[i] - self.lp0[i]
    }

    fn potential(&self, i: usize, beta: f64) -> f64 {
        beta * self.u[i] - (1.0 - beta) * self.lp0[i]
    }

    fn rows(&self, i: usize) -> std::ops::Range<usize> {
        i * self.per..(i + 1) * self.per
    }

    /// Particle `i` becomes `other`'s particle `j`.
    fn copy_from(&mut self, i: usize, other: &Self, j: usize) {
        let (r, o) = (self.rows(i), other.rows(j));
        self.z[r.clone()].copy_from_slice(&other.z[o.clone()]);
        self.x[r.clone()].copy_from_slice(&other.x[o.clone()]);
        self.grad[r].copy_from_slice(&other.grad[o]);
        self.u[i] = other.u[j];
        self.lp0[i] = other.lp0[j];
        self.s[i] = other.s[j];
    }
}

impl Path<'_> {
    /// Evaluates `z` (`n` particles) and `∂V_β/∂z` by autodiff.
    fn evaluate(&self, z: Vec<f64>, beta: f64) -> Result<Particles> {
        let per: usize = self.shape.iter().product();
        let n = z.len() / per;
        let [c, r, w] = self.shape;
        let data: Vec<f32> = z.iter().map(|v| *v as f32).collect();
        let zt =
            Tensor::<4>::from_data(TensorData::new(data, [n, c, r, w]), self.device).require_grad();
        let (x, log_det) = self.latent.generate_with_log_det(zt.clone());
        let s = self.action.action(x.clone());
        let u = s.clone() - log_det.clone();
        let lp0 = match self.start {
            None => self.latent.prior_log_prob(zt.clone()),
            Some(q) => q.log_q(x.clone()) + log_det,
        };
        let v = u.clone().mul_scalar(beta) - lp0.clone().mul_scalar(1.0 - beta);
        let grads = v.sum().backward();
        let grad = zt.grad(&grads).map(host).ok_or_else(|| {
            NrgError::InvalidData("no gradient through the flow: is the device autodiff?".into())
        })?;
        Ok(Particles {
            z,
            u: host(u.inner()),
            lp0: host(lp0.inner()),
            s: host(s.inner()),
            x: host(x.inner()),
            grad,
            per,
        })
    }

    /// `n` particles from the start density `p₀`.
    fn start(&self, n: usize, beta: f64) -> Result<Particles> {
        let z = match self.start {
            None => host(self.latent.sample_latent(n, self.device)),
            Some(q) => {
                let (x, _) = q.sample_with_log_q(n, self.device);
                host(self.latent.rg_map(x).0)
            }
        };
        let p = self.evaluate(z, beta)?;
        if let Some(bad) = p.grad.iter().position(|g| !g.is_finite()) {
            return Err(NrgError::InvalidData(format!(
                "start particle {} has a non-finite gradient of its potential",
                bad / p.per
            )));
        }
        for i in 0..p.len() {
            if !p.ell(i).is_finite() {
                return Err(NrgError::InvalidData(format!(
                    "a start particle has a non-finite log-weight (S = {}, U = {}, ln p₀ = {})",
                    p.s[i], p.u[i], p.lp0[i]
                )));
            }
        }
        Ok(p)
    }

    /// One HMC trajectory for every particle at `β` (`cur.grad` must be `∂V_β/∂z`) of a
    /// number of leapfrog steps drawn uniformly from `1 ..= moves.leapfrog`; returns the
    /// summed acceptance probabilities, the number accepted and the steps taken.
    fn hmc(
        &self,
        cur: &mut Particles,
        beta: f64,
        moves: &AisMoves,
        step: f64,
        rng: &mut ChainRng,
    ) -> Result<(f64, usize, usize)> {
        let (n, per) = (cur.len(), cur.per);
        let mut p: Vec<f64> = (0..n * per).map(|_| rng.sample(StandardNormal)).collect();
        let kinetic = |p: &[f64], i: usize| {
            0.5 * p[i * per..(i + 1) * per].iter().map(|v| v * v).sum::<f64>()
        };
        let h0: Vec<f64> = (0..n)
            .map(|i| cur.potential(i, beta) + kinetic(&p, i))
            .collect();
        let eps = jittered_step(step, rng);
        // Neal's randomised trajectory length: on the nearly Gaussian latent target a fixed
        // length close to half a period would only reflect z → −z and never change |z|.
        let steps = rng.random_range(1..=moves.leapfrog);
        let mut z = cur.z.clone();
        let mut g = cur.grad.clone();
        let mut prop = None;
        for _ in 0..steps {
            for j in 0..n * per {
                p[j] -= 0.5 * eps * g[j];
                z[j] += eps * p[j];
            }
            let next = self.evaluate(z.clone(), beta)?;
            g.clone_from(&next.grad);
            for j in 0..n * per {
                p[j] -= 0.5 * eps * g[j];
            }
            prop = Some(next);
        }
        let Some(prop) = prop else {
            return Ok((0.0, 0, 0));
        };
        let (mut alpha, mut accepted) = (0.0, 0);
        for i in 0..n {
            let dh = prop.potential(i, beta) + kinetic(&p, i) - h0[i];
            let finite = dh.is_finite() && prop.ell(i).is_finite();
            if finite {
                alpha += acceptance_probability(dh);
            }
            let uniform: f64 = rng.random();
            if finite && uniform.ln() < -dh {
                accepted += 1;
                cur.copy_from(i, &prop, i);
            }
        }
        Ok((alpha, accepted, steps))
    }
}

/// `ln Σ e^{a_i}`.
fn log_sum_exp(a: &[f64]) -> f64 {
    let m = a.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + a.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// ESS per particle of log-weights, `(Σw)²/(N Σw²)`.
fn ess_fraction(lw: &[f64]) -> f64 {
    let a = log_sum_exp(lw);
    let b = log_sum_exp(&lw.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
    (2.0 * a - b).exp() / lw.len() as f64
}

/// The conditional ESS of the increment `Δ·ℓ` under the weights `lw`.
fn conditional_ess(lw: &[f64], ell: &[f64], delta: f64) -> f64 {
    let norm = log_sum_exp(lw);
    let a: Vec<f64> = lw
        .iter()
        .zip(ell)
        .map(|(w, l)| w - norm + delta * l)
        .collect();
    let b: Vec<f64> = lw
        .iter()
        .zip(ell)
        .map(|(w, l)| w - norm + 2.0 * delta * l)
        .collect();
    (2.0 * log_sum_exp(&a) - log_sum_exp(&b)).exp()
}

/// The next `β` after `beta` whose conditional ESS is `target` (1 if even the last step
/// keeps it), by bisection.
fn next_beta(lw: &[f64], ell: &[f64], beta: f64, target: f64) -> f64 {
    let rest = 1.0 - beta;
    if conditional_ess(lw, ell, rest) >= target {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0, rest);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if conditional_ess(lw, ell, mid) >= target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // Never stall: a step at least 1e-9 of what remains.
    beta + lo.max(rest * 1e-9)
}

/// Systematic resampling: the indices of the `N` survivors of log-weights `lw`.
fn systematic(lw: &[f64], rng: &mut ChainRng) -> Vec<usize> {
    let n = lw.len();
    let norm = log_sum_exp(lw);
    let u0: f64 = rng.random();
    let mut out = Vec::with_capacity(n);
    let (mut cum, mut j) = (0.0, 0);
    for k in 0..n {
        let target = (k as f64 + u0) / n as f64;
        while j < n {
            let next = cum + (lw[j] - norm).exp();
            if next > target || j == n - 1 {
                break;
            }
            cum = next;
            j += 1;
        }
        out.push(j);
    }
    out
}

/// Where a batch's `β` come from.
enum Stages<'a> {
    /// Chosen as the batch runs, by the conditional ESS, and recorded (the pilot).
    Adaptive {
        cess: f64,
        max_stages: usize,
        out: &'a mut Vec<f64>,
    },
    /// Given.
    Given(&'a [f64]),
}

/// Trajectories per stage while the pilot tunes the step.
const PILOT_MOVES: usize = 8;

/// One batch's (system's) outcome.
struct Batch {
    particles: Particles,
    log_w: Vec<f64>,
    accepted: usize,
    proposals: usize,
    resamplings: usize,
    evaluations: usize,
}

/// The path, the request and the random numbers of one run.
struct Annealer<'a> {
    path: Path<'a>,
    request: &'a AisRequest<'a>,
    rng: ChainRng,
}

impl Annealer<'_> {
    /// Runs one batch of `n` particles through the stages with the leapfrog step `step`,
    /// adapted by `tuner` where given; `progress` gets the fraction of stages done (given
    /// stages only).
    fn run_batch(
        &mut self,
        n: usize,
        mut stages: Stages,
        mut tuner: Option<&mut DualAveraging>,
        mut step: f64,
        progress: &mut dyn FnMut(f64),
    ) -> Result<Batch> {
        let (path, request) = (&self.path, self.request);
        let rng = &mut self.rng;
        let mut cur = path.start(n, 0.0)?;
        let mut log_w = vec![0.0; n];
        let (mut accepted, mut proposals, mut resamplings, mut evaluations) = (0, 0, 0, 1);
        let mut beta = 0.0;
        let mut t = 0;
        loop {
            let ell: Vec<f64> = (0..n).map(|i| cur.ell(i)).collect();
            let next = match &mut stages {
                Stages::Adaptive {
                    cess,
                    max_stages,
                    out,
                } => {
                    let b = next_beta(&log_w, &ell, beta, *cess);
                    if out.len() + 1 >= *max_stages && b < 1.0 {
                        return Err(NrgError::InvalidData(format!(
                            "the adaptive schedule needs more than {max_stages} stages at \
                         conditional ESS {cess} (reached β = {beta:.4}): the flow is far from \
                         the target; lower the target ESS, allow more stages or train longer"
                        )));
                    }
                    out.push(b);
                    b
                }
                Stages::Given(schedule) => schedule[t],
            };
            for (w, l) in log_w.iter_mut().zip(&ell) {
                *w += (next - beta) * l;
            }
            beta = next;
            t += 1;
            let last = beta >= 1.0;
            if let Stages::Given(schedule) = &stages {
                progress(t as f64 / schedule.len() as f64);
            }
            if last {
                break;
            }
            if let Resampling::BelowEss(threshold) = request.resampling
                && ess_fraction(&log_w) < threshold
            {
                let idx = systematic(&log_w, rng);
                let old = cur.clone();
                for (i, &j) in idx.iter().enumerate() {
                    cur.copy_from(i, &old, j);
                }
                let mean = log_sum_exp(&log_w) - (n as f64).ln();
                log_w.iter_mut().for_each(|w| *w = mean);
                resamplings += 1;
            }
            if request.moves.moves > 0 {
                // ∂V_β/∂z at the new β.
                cur = path.evaluate(std::mem::take(&mut cur.z), beta)?;
                evaluations += 1;
                // The pilot also tunes the step: at least `PILOT_MOVES` trajectories a stage,
                // so that dual averaging has iterations to converge on.
                let moves = if tuner.is_some() {
                    request.moves.moves.max(PILOT_MOVES)
                } else {
                    request.moves.moves
                };
                for _ in 0..moves {
                    let (alpha, acc, steps) =
                        path.hmc(&mut cur, beta, &request.moves, step, rng)?;
                    evaluations += steps;
                    accepted += acc;
                    proposals += n;
                    if let Some(tuner) = tuner.as_deref_mut()
                        && let Some(s) = tuner.observe(alpha, n)
                    {
                        step = s;
                    }
                }
            }
        }
        Ok(Batch {
            particles: cur,
            log_w,
            accepted,
            proposals,
            resamplings,
            evaluations,
        })
    }
}

/// AIS (`request.resampling = Never`) or SMC from the flow `latent` to `e^{−S}`: a pilot run
/// fixes the schedule and the step, then `samples` particles run in batches of `batch`
/// (module docs). `start` is the proposal density `q` whose pull-back starts the path (`None`:
/// the flow's own prior, i.e. its unsymmetrised density); it must be the density of `x =
/// G(z)` for `z` from `latent`'s map, e.g. the same flow symmetrised. Everything lives on the
/// autodiff `device`. `progress` gets the production particles done.
pub fn ais(
    latent: &dyn LatentModel,
    start: Option<&dyn DensityModel>,
    action: &dyn Action,
    request: &AisRequest,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<AisOutput> {
    request.check()?;
    let path = Path {
        latent,
        start,
        action,
        shape: latent.latent_shape(),
        device,
    };
    let mut annealer = Annealer {
        path,
        request,
        rng: ChainRng::seed_from_u64(request.seed),
    };
    let mut step = request.moves.step;
    let pilot_start = Instant::now();
    let mut tuner = DualAveraging::new(step, 0.75, request.pilot.max(2), (1e-5, 10.0));
    let tune = request.moves.moves > 0 && request.pilot >= 2;
    let schedule = match &request.schedule {
        AisSchedule::Fixed(b) => {
            if tune {
                let stages = Stages::Given(b);
                annealer.run_batch(request.pilot, stages, Some(&mut tuner), step, &mut |_| {})?;
            }
            b.clone()
        }
        AisSchedule::Adaptive { cess, max_stages } => {
            let mut out = Vec::new();
            let stages = Stages::Adaptive {
                cess: *cess,
                max_stages: *max_stages,
                out: &mut out,
            };
            let t = tune.then_some(&mut tuner);
            annealer.run_batch(request.pilot, stages, t, step, &mut |_| {})?;
            out
        }
    };
    if tune {
        step = tuner.final_step();
    }
    let pilot_seconds = pilot_start.elapsed().as_secs_f64();

    let names = request.measure.names();
    let smc = matches!(request.resampling, Resampling::BelowEss(_));
    let systems = if smc {
        request.samples / request.batch
    } else {
        request.samples
    };
    let mut sums = ImportanceSums::new(names.len() + 1, systems);
    let start = Instant::now();
    let (mut accepted, mut proposals, mut resamplings, mut evaluations) = (0, 0, 0, 0);
    let mut ess_sum = 0.0;
    let mut batches = 0;
    let mut done = 0;
    while done < request.samples {
        let n = request.batch.min(request.samples - done);
        let stages = Stages::Given(&schedule);
        let mut report = |f: f64| progress(done + (f * n as f64) as usize);
        let out = annealer.run_batch(n, stages, None, step, &mut report)?;
        accepted += out.accepted;
        proposals += out.proposals;
        resamplings += out.resamplings;
        evaluations = out.evaluations;
        ess_sum += ess_fraction(&out.log_w);
        batches += 1;
        let p = &out.particles;
        let measured: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let mut v = vec![p.s[i]];
                v.extend(request.measure.measure(&p.x[p.rows(i)]));
                v
            })
            .collect();
        if smc {
            let norm = log_sum_exp(&out.log_w);
            let mut mean = vec![0.0; names.len() + 1];
            for (lw, v) in out.log_w.iter().zip(&measured) {
                let w = (lw - norm).exp();
                for (m, x) in mean.iter_mut().zip(v) {
                    *m += w * x;
                }
            }
            sums.push(norm - (n as f64).ln(), &mean)?;
        } else {
            for (lw, v) in out.log_w.iter().zip(&measured) {
                sums.push(*lw, v)?;
            }
        }
        done += n;
        progress(done);
    }
    let estimates = sums.summary(&names, &request.derived)?;
    let final_ess = if smc {
        ess_sum / batches as f64
    } else {
        estimates.ess
    };
    Ok(AisOutput {
        summary: AisSummary {
            method: if smc { "smc" } else { "ais" }.into(),
            estimates,
            schedule,
            moves: request.moves.moves,
            leapfrog: request.moves.leapfrog,
            step,
            acceptance: if proposals > 0 {
                accepted as f64 / proposals as f64
            } else {
                f64::NAN
            },
            particles: request.samples,
            systems,
            resamplings: resamplings as f64 / batches as f64,
            final_ess,
            gradient_evaluations: evaluations,
            seconds: start.elapsed().as_secs_f64(),
            pilot_seconds,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Systematic resampling keeps `⌊N W_i⌋` or `⌈N W_i⌉` copies of particle `i`, whatever the
    /// uniform, and `N` in all.
    #[test]
    fn systematic_resampling_is_within_one_of_the_expected_counts() {
        let lw: Vec<f64> = (0..50)
            .map(|i| ((i * 37) % 11) as f64 * 0.4 - 300.0)
            .collect();
        let norm = log_sum_exp(&lw);
        for seed in 0..20 {
            let mut rng = ChainRng::seed_from_u64(seed);
            let idx = systematic(&lw, &mut rng);
            assert_eq!(idx.len(), lw.len());
            for (i, l) in lw.iter().enumerate() {
                let expected = (l - norm).exp() * lw.len() as f64;
                let count = idx.iter().filter(|&&j| j == i).count() as f64;
                assert!(
                    count >= expected.floor() && count <= expected.ceil(),
                    "particle {i}: {count} copies, expected {expected}"
                );
            }
        }
    }

    /// The next β hits the target conditional ESS (by bisection, to 1e-9), jumps to 1 when
    /// the increments are constant, and the CESS of equal weights is the plain ESS of the
    /// increment.
    #[test]
    fn next_beta_hits_the_conditional_ess() {
        let ell: Vec<f64> = (0..200).map(|i| (i as f64 * 0.37).sin() * 20.0).collect();
        let lw = vec![0.0; 200];
        let b = next_beta(&lw, &ell, 0.2, 0.9);
        assert!(b > 0.2 && b < 1.0);
        assert!((conditional_ess(&lw, &ell, b - 0.2) - 0.9).abs() < 1e-9);
        let inc: Vec<f64> = ell.iter().map(|l| (b - 0.2) * l).collect();
        assert!((ess_fraction(&inc) - 0.9).abs() < 1e-9);
        assert_eq!(next_beta(&lw, &[3.0; 200], 0.5, 0.9), 1.0);
        // Unequal current weights: the CESS is taken under them.
        let lw2: Vec<f64> = (0..200).map(|i| (i % 7) as f64 * 0.3).collect();
        let b2 = next_beta(&lw2, &ell, 0.0, 0.5);
        assert!((conditional_ess(&lw2, &ell, b2) - 0.5).abs() < 1e-9);
    }
}
