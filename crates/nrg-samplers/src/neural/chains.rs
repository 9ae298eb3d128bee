//! Markov chains that use a flow, and boundary HMC beside them.
//!
//! - [`nmcmc`]: independence Metropolis. Proposals `x' ∼ q` are generated in batches; the
//!   chain moves to `x'` with probability `min(1, w(x')/w(x))`, `w = e^{−S}/q`.
//! - [`bulk_hmc`]: HMC on the latents with `U(z) = S(G(z)) − ln|det ∂G/∂z|`, whose
//!   stationary density `e^{−U}` maps to `e^{−S}` under `x = G(z)`. Gradients come from
//!   autodiff through the flow; leapfrog and the accept/reject step run in `f64` on the host.
//!   A batch of independent chains moves together; each trajectory's step is jittered as in
//!   [`crate::baseline::Hmc`].
//! - [`bulk_local`]: Metropolis moves of one latent at a time, `z_k → z_k + δ·N(0,1)`, with `k`
//!   drawn uniformly from an allowed set (all latents, or e.g. one bulk level).
//! - [`boundary_hmc`]: HMC on the field itself (the baseline [`crate::baseline::Hmc`]), with
//!   the same observables, for side-by-side `τ_int`.
//!
//! Step sizes adapt during thermalisation only (towards acceptance 0.75 for HMC, 0.5 for
//! local moves, by dual averaging, [`crate::tuning`]), so the measured chains are
//! stationary; a chain that accepts nothing while measuring is refused. Every chain records the action per
//! site `s` and the [`Measure`] columns after each update; each observable gets its
//! Gamma-method error and `τ_int` (in updates), combined over independent chains as the mean of
//! the chain means with `σ = √(Σσ_c²)/C`. `effective_per_second = C·N/(2τ_int)/seconds`
//! compares methods at equal wall time.

use super::host;
use super::measure::Measure;
use super::nis::Kept;
use crate::ChainRng;
use crate::baseline::{Hmc, jittered_step};
use crate::tuning::{DualAveraging, acceptance_probability};
use burn::tensor::Device;
use nrg_core::action::HostAction;
use nrg_core::bulk::{Configurations, Gradient, evaluate_bulk};
use nrg_core::stats::gamma_method;
use nrg_core::{Action, DensityModel, Estimate, LatentModel, NrgError, Result};
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// An observable from a Markov chain.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ChainEstimate {
    /// Mean and error, with `τ_int` in updates.
    #[serde(flatten)]
    pub estimate: Estimate,
    /// Effectively independent measurements per second of wall time.
    pub effective_per_second: f64,
}

/// The result of a chain run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChainSummary {
    /// `nmcmc`, `bulk-hmc`, `bulk-local` or `hmc`.
    pub method: String,
    /// Independent chains.
    pub chains: usize,
    /// Measured updates per chain.
    pub updates: usize,
    /// Thermalisation updates per chain.
    pub thermalisation: usize,
    /// Acceptance rate of the measured updates.
    pub acceptance: f64,
    /// Step size (HMC: leapfrog ε; local: δ) after tuning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_size: Option<f64>,
    /// Wall time of the measured updates.
    pub seconds: f64,
    /// Every observable (`s` is the action per site).
    pub observables: BTreeMap<String, ChainEstimate>,
}

/// Chain lengths and seeds.
#[derive(Clone, Copy, Debug)]
pub struct ChainSettings {
    /// Independent chains (batched where the method allows).
    pub chains: usize,
    /// Discarded updates per chain.
    pub thermalisation: usize,
    /// Measured updates per chain.
    pub updates: usize,
    /// Seed of the host random numbers (the flow's proposals use the device's).
    pub seed: u64,
}

/// What the chains sample and measure.
#[derive(Clone, Copy)]
pub struct ChainTarget<'a> {
    /// The action `S` of the target `e^{−S}`.
    pub action: &'a dyn Action,
    /// What is measured on each configuration.
    pub measure: &'a dyn Measure,
}

/// HMC's integrator: the initial leapfrog step (adapted during thermalisation) and the
/// number of leapfrog steps per trajectory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HmcSettings {
    /// Initial leapfrog step `ε`.
    pub step: f64,
    /// Leapfrog steps per trajectory.
    pub leapfrog: usize,
}

impl HmcSettings {
    fn check(&self) -> Result<()> {
        if !(self.step.is_finite() && self.step > 0.0) || self.leapfrog == 0 {
            return Err(NrgError::param(
                "step",
                "need a positive step size and ≥ 1 leapfrog step",
            ));
        }
        Ok(())
    }
}

/// Local moves in the bulk: the initial width `δ` of a move (adapted during
/// thermalisation) and the latents that may move (flat indices `c·R·W + r·W + w`; empty
/// means all).
#[derive(Clone, Debug, PartialEq)]
pub struct LocalSettings {
    /// Initial width `δ`.
    pub delta: f64,
    /// The latents that may move.
    pub allowed: Vec<usize>,
}

/// Independence Metropolis: proposals per batch through the flow, and whether to keep the
/// chain's configurations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NmcmcSettings {
    /// Proposals per batch.
    pub batch: usize,
    /// Keep every measured configuration.
    pub keep: bool,
}

/// What [`nmcmc`] returns.
#[derive(Clone, Debug)]
pub struct ChainOutput {
    /// The estimates.
    pub summary: ChainSummary,
    /// The measured configurations, when asked for.
    pub kept: Option<Kept>,
}

impl ChainSettings {
    fn check(&self) -> Result<()> {
        if self.chains == 0 || self.updates < 8 {
            return Err(NrgError::param(
                "samples",
                "need at least one chain and 8 measured updates",
            ));
        }
        Ok(())
    }
}

/// Per-chain measurement series: `series[chain][column]`.
struct Recorder {
    names: Vec<String>,
    series: Vec<Vec<Vec<f64>>>,
    volume: f64,
}

impl Recorder {
    fn new(measure: &dyn Measure, chains: usize, volume: usize) -> Self {
        let mut names = vec!["s".to_string()];
        names.extend(measure.names());
        let cols = names.len();
        Self {
            names,
            series: vec![vec![Vec::new(); cols]; chains],
            volume: volume as f64,
        }
    }

    fn record(&mut self, chain: usize, action: f64, values: &[f64]) {
        let row = &mut self.series[chain];
        row[0].push(action / self.volume);
        for (col, v) in row[1..].iter_mut().zip(values) {
            col.push(*v);
        }
    }

    fn summarise(
        self,
        method: &str,
        settings: &ChainSettings,
        acceptance: f64,
        step_size: Option<f64>,
        seconds: f64,
    ) -> Result<ChainSummary> {
        if acceptance == 0.0 {
            return Err(NrgError::InvalidData(format!(
                "the {method} chains accepted no proposal in {} measured updates: they did not \
                 move, so their estimates have no error bar (change the step size or run \
                 longer)",
                settings.updates
            )));
        }
        let c = self.series.len() as f64;
        let mut observables = BTreeMap::new();
        for (k, name) in self.names.iter().enumerate() {
            let (mut mean, mut var, mut tau, mut tau_var) = (0.0, 0.0, 0.0, 0.0);
            for chain in &self.series {
                let g = gamma_method(&chain[k])?;
                mean += g.value / c;
                var += g.error * g.error / (c * c);
                tau += g.tau_int / c;
                tau_var += g.tau_int_error * g.tau_int_error / (c * c);
            }
            let mut estimate = Estimate::new(mean, var.sqrt());
            estimate.tau_int = Some(tau);
            estimate.tau_int_error = Some(tau_var.sqrt());
            let effective = c * settings.updates as f64 / (2.0 * tau);
            observables.insert(
                name.clone(),
                ChainEstimate {
                    estimate,
                    effective_per_second: effective / seconds.max(1e-9),
                },
            );
        }
        Ok(ChainSummary {
            method: method.into(),
            chains: settings.chains,
            updates: settings.updates,
            thermalisation: settings.thermalisation,
            acceptance,
            step_size,
            seconds,
            observables,
        })
    }
}

/// Independence Metropolis with proposals from `model`, generated `options.batch` at a
/// time; `progress` gets the updates done. With `options.keep`, the chain's configurations
/// (after each update, thermalisation excluded) are returned as `f32`.
pub fn nmcmc(
    model: &dyn DensityModel,
    target: &ChainTarget,
    settings: &ChainSettings,
    options: &NmcmcSettings,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<ChainOutput> {
    settings.check()?;
    if options.batch == 0 {
        return Err(NrgError::param("batch", "must be ≥ 1"));
    }
    let (action, measure, batch) = (target.action, target.measure, options.batch);
    let mut keep = options.keep.then(Kept::default);
    let per_config: usize = model.shape().iter().product();
    let volume = action.lattice().volume();
    let mut rng = ChainRng::seed_from_u64(settings.seed);
    let mut rec = Recorder::new(measure, settings.chains, volume);
    let total = settings.thermalisation + settings.updates;
    let mut accepted = 0usize;
    let mut seconds = 0.0;
    for chain in 0..settings.chains {
        let mut start = Instant::now();
        // (log w, S, configuration) of the current state.
        let mut current: Option<(f64, f64, Vec<f64>)> = None;
        let mut done = 0;
        while done < total {
            let (x, log_q) = model.sample_with_log_q(batch, device);
            let s = host(action.action(x.clone()));
            let lq = host(log_q);
            let xs = host(x);
            for i in 0..batch.min(total - done) {
                let log_w = -s[i] - lq[i];
                let accept = match &current {
                    None => true,
                    Some((lw, _, _)) => {
                        let u: f64 = rng.random();
                        log_w.is_finite() && u.ln() < log_w - lw
                    }
                };
                if accept {
                    current = Some((
                        log_w,
                        s[i],
                        xs[i * per_config..(i + 1) * per_config].to_vec(),
                    ));
                }
                if done >= settings.thermalisation {
                    if done == settings.thermalisation {
                        start = Instant::now();
                    }
                    accepted += accept as usize;
                    let (_, s_cur, field) = current.as_ref().expect("set on the first proposal");
                    rec.record(chain, *s_cur, &measure.measure(field));
                    if let Some(k) = keep.as_mut() {
                        k.configurations.extend(field.iter().map(|v| *v as f32));
                    }
                }
                done += 1;
            }
            progress(chain * total + done);
        }
        seconds += start.elapsed().as_secs_f64();
    }
    let acceptance = accepted as f64 / (settings.updates * settings.chains) as f64;
    let summary = rec.summarise("nmcmc", settings, acceptance, None, seconds)?;
    Ok(ChainOutput {
        summary,
        kept: keep,
    })
}

/// A batch of bulk chains: latents, `U(z)`, `S(G(z))`, and (where asked for) `∂U/∂z` and the
/// configurations `x = G(z)`, all on the host; rows of `per` values per chain.
struct BulkBatch {
    z: Vec<f64>,
    u: Vec<f64>,
    s: Vec<f64>,
    grad: Option<Vec<f64>>,
    x: Vec<f64>,
    per: usize,
}

impl BulkBatch {
    /// Evaluates `U(z) = S(G(z)) − ln|det ∂G/∂z|` for the latents `z` (`shape` = `[B, C, R, W]`),
    /// with `∂U/∂z` when asked (then `device` must be an autodiff device) and the
    /// configurations `x` when asked ([`nrg_core::bulk::evaluate_bulk`]).
    fn evaluate(
        target: &ChainTarget,
        model: &dyn LatentModel,
        z: Vec<f64>,
        shape: [usize; 4],
        need: (Gradient, Configurations),
        device: &Device,
    ) -> Self {
        let e = evaluate_bulk(model, target.action, &z, shape, need, device);
        Self {
            z,
            u: e.effective_action,
            s: e.action,
            grad: e.gradient,
            x: e.configurations.unwrap_or_default(),
            per: shape[1] * shape[2] * shape[3],
        }
    }

    fn rows(&self, i: usize) -> std::ops::Range<usize> {
        i * self.per..(i + 1) * self.per
    }

    /// Replaces chain `i` by the proposal's chain `i`.
    fn accept(&mut self, i: usize, proposal: &Self) {
        let r = self.rows(i);
        self.z[r.clone()].copy_from_slice(&proposal.z[r.clone()]);
        self.x[r.clone()].copy_from_slice(&proposal.x[r.clone()]);
        if let (Some(g), Some(gp)) = (&mut self.grad, &proposal.grad) {
            g[r.clone()].copy_from_slice(&gp[r]);
        }
        self.u[i] = proposal.u[i];
        self.s[i] = proposal.s[i];
    }

    /// Measures every chain.
    fn record(&self, rec: &mut Recorder, measure: &dyn Measure) {
        for i in 0..self.u.len() {
            rec.record(i, self.s[i], &measure.measure(&self.x[self.rows(i)]));
        }
    }
}

/// HMC in the bulk: `settings.chains` chains batched through the flow, `hmc.leapfrog`
/// steps per trajectory of a step adapted from `hmc.step` during thermalisation. `model` and
/// the target's action must live on the autodiff `device`.
pub fn bulk_hmc(
    model: &dyn LatentModel,
    target: &ChainTarget,
    settings: &ChainSettings,
    hmc: &HmcSettings,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<ChainSummary> {
    bulk_hmc_run(model, target, settings, hmc, device, progress, false).map(|o| o.summary)
}

/// [`bulk_hmc`], also returning the latents of every measured update: `kept.configurations`
/// holds `[chains, updates, C, R, W]` as `f32` (each chain's updates contiguous, in time
/// order) — samples of the exact bulk distribution `∝ e^{−S_eff}` for the holographic
/// analysis.
pub fn bulk_hmc_latents(
    model: &dyn LatentModel,
    target: &ChainTarget,
    settings: &ChainSettings,
    hmc: &HmcSettings,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<ChainOutput> {
    bulk_hmc_run(model, target, settings, hmc, device, progress, true)
}

fn bulk_hmc_run(
    model: &dyn LatentModel,
    target: &ChainTarget,
    settings: &ChainSettings,
    hmc: &HmcSettings,
    device: &Device,
    progress: &mut dyn FnMut(usize),
    keep_latents: bool,
) -> Result<ChainOutput> {
    let mut kept: Vec<Vec<f32>> = vec![Vec::new(); if keep_latents { settings.chains } else { 0 }];
    settings.check()?;
    hmc.check()?;
    let (action, measure) = (target.action, target.measure);
    let (mut step, leapfrog) = (hmc.step, hmc.leapfrog);
    let [c, r, w] = model.latent_shape();
    let b = settings.chains;
    let shape = [b, c, r, w];
    let mut rng = ChainRng::seed_from_u64(settings.seed);
    let z = host(model.sample_latent(b, device));
    let both = (Gradient::Compute, Configurations::Keep);
    let mut cur = BulkBatch::evaluate(target, model, z, shape, both, device);
    if cur.grad.is_none() {
        return Err(NrgError::InvalidData(
            "no gradient through the flow: is the device autodiff?".into(),
        ));
    }
    let per = cur.per;
    let mut rec = Recorder::new(measure, b, action.lattice().volume());
    let total = settings.thermalisation + settings.updates;
    let mut tuner = DualAveraging::new(step, 0.75, 10 * b.max(2), (1e-5, 10.0));
    let mut accepted = 0usize;
    let mut start = Instant::now();
    for t in 0..total {
        if t == settings.thermalisation {
            step = tuner.final_step();
            start = Instant::now();
        }
        let mut p: Vec<f64> = (0..b * per).map(|_| rng.sample(StandardNormal)).collect();
        let kinetic = |p: &[f64], i: usize| {
            0.5 * p[i * per..(i + 1) * per].iter().map(|v| v * v).sum::<f64>()
        };
        let h0: Vec<f64> = (0..b).map(|i| cur.u[i] + kinetic(&p, i)).collect();
        let eps = jittered_step(step, &mut rng);
        let mut z = cur.z.clone();
        let mut g = cur.grad.clone().expect("checked above");
        let mut prop = None;
        for k in 0..leapfrog {
            for j in 0..b * per {
                p[j] -= 0.5 * eps * g[j];
                z[j] += eps * p[j];
            }
            let last = k + 1 == leapfrog;
            let keep = if last {
                Configurations::Keep
            } else {
                Configurations::Skip
            };
            let need = (Gradient::Compute, keep);
            let next = BulkBatch::evaluate(target, model, z.clone(), shape, need, device);
            g = next.grad.clone().expect("autodiff gradient");
            for j in 0..b * per {
                p[j] -= 0.5 * eps * g[j];
            }
            prop = Some(next);
        }
        let prop = prop.expect("at least one leapfrog step");
        let mut acc_now = 0;
        let mut alpha = 0.0;
        for i in 0..b {
            let dh = prop.u[i] + kinetic(&p, i) - h0[i];
            alpha += acceptance_probability(dh);
            let uniform: f64 = rng.random();
            if dh.is_finite() && uniform.ln() < -dh {
                acc_now += 1;
                cur.accept(i, &prop);
            }
        }
        if t < settings.thermalisation {
            if let Some(s) = tuner.observe(alpha, b) {
                step = s;
            }
        } else {
            accepted += acc_now;
            cur.record(&mut rec, measure);
            for (i, k) in kept.iter_mut().enumerate() {
                k.extend(cur.z[cur.rows(i)].iter().map(|v| *v as f32));
            }
        }
        progress(t + 1);
    }
    let seconds = start.elapsed().as_secs_f64();
    let acceptance = accepted as f64 / (settings.updates * b) as f64;
    let summary = rec.summarise("bulk-hmc", settings, acceptance, Some(step), seconds)?;
    Ok(ChainOutput {
        summary,
        kept: keep_latents.then(|| Kept {
            configurations: kept.concat(),
            log_weights: Vec::new(),
        }),
    })
}

/// Local Metropolis in the bulk: each update moves one latent of every chain,
/// `z_k → z_k + δ ξ`, with `k` drawn from `local.allowed` and `δ` adapted from
/// `local.delta` during thermalisation. No gradients: `device` need not be autodiff.
pub fn bulk_local(
    model: &dyn LatentModel,
    target: &ChainTarget,
    settings: &ChainSettings,
    local: &LocalSettings,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<ChainSummary> {
    settings.check()?;
    if !(local.delta.is_finite() && local.delta > 0.0) {
        return Err(NrgError::param("delta", "must be a finite number > 0"));
    }
    let (action, measure) = (target.action, target.measure);
    let (mut delta, allowed) = (local.delta, &local.allowed[..]);
    let [c, r, w] = model.latent_shape();
    let b = settings.chains;
    let per = c * r * w;
    if let Some(bad) = allowed.iter().find(|&&k| k >= per) {
        return Err(NrgError::param(
            "level",
            format!("latent index {bad} out of range"),
        ));
    }
    let all: Vec<usize> = (0..per).collect();
    let allowed = if allowed.is_empty() {
        &all[..]
    } else {
        allowed
    };
    let shape = [b, c, r, w];
    let mut rng = ChainRng::seed_from_u64(settings.seed);
    let z = host(model.sample_latent(b, device));
    let need = (Gradient::Skip, Configurations::Keep);
    let mut cur = BulkBatch::evaluate(target, model, z, shape, need, device);
    let mut rec = Recorder::new(measure, b, action.lattice().volume());
    let total = settings.thermalisation + settings.updates;
    let mut tuner = DualAveraging::new(delta, 0.5, 20 * b.max(2), (1e-5, 100.0));
    let mut accepted = 0usize;
    let mut start = Instant::now();
    for t in 0..total {
        if t == settings.thermalisation {
            delta = tuner.final_step();
            start = Instant::now();
        }
        let mut z = cur.z.clone();
        for i in 0..b {
            let k = allowed[rng.random_range(0..allowed.len())];
            let xi: f64 = rng.sample(StandardNormal);
            z[i * per + k] += delta * xi;
        }
        let prop = BulkBatch::evaluate(target, model, z, shape, need, device);
        let mut acc_now = 0;
        let mut alpha = 0.0;
        for i in 0..b {
            let uniform: f64 = rng.random();
            let du = prop.u[i] - cur.u[i];
            alpha += acceptance_probability(du);
            if du.is_finite() && uniform.ln() < -du {
                acc_now += 1;
                cur.accept(i, &prop);
            }
        }
        if t < settings.thermalisation {
            if let Some(s) = tuner.observe(alpha, b) {
                delta = s;
            }
        } else {
            accepted += acc_now;
            cur.record(&mut rec, measure);
        }
        progress(t + 1);
    }
    let seconds = start.elapsed().as_secs_f64();
    let acceptance = accepted as f64 / (settings.updates * b) as f64;
    rec.summarise("bulk-local", settings, acceptance, Some(delta), seconds)
}

/// HMC on the boundary field with the baseline integrator: `settings.chains` chains from
/// `start` configurations (`f64`, `channels·V` each), `leapfrog` steps per trajectory.
pub fn boundary_hmc<A: HostAction + Clone>(
    action: &A,
    starts: Vec<Vec<f64>>,
    measure: &dyn Measure,
    settings: &ChainSettings,
    hmc: &HmcSettings,
    progress: &mut dyn FnMut(usize),
) -> Result<ChainSummary> {
    settings.check()?;
    hmc.check()?;
    let (step, leapfrog) = (hmc.step, hmc.leapfrog);
    if starts.len() != settings.chains {
        return Err(NrgError::param(
            "chains",
            "one start configuration per chain",
        ));
    }
    let volume = action.lattice().volume();
    let mut rec = Recorder::new(measure, settings.chains, volume);
    let mut chains: Vec<Hmc<A>> = starts
        .into_iter()
        .enumerate()
        .map(|(i, f)| Hmc::new(action.clone(), f, step, leapfrog, settings.seed + i as u64))
        .collect::<Result<_>>()?;
    let total = settings.thermalisation + settings.updates;
    let mut accepted = 0usize;
    let mut seconds = 0.0;
    for (ci, chain) in chains.iter_mut().enumerate() {
        let mut tuner = DualAveraging::new(step, 0.75, 1, (1e-5, 10.0));
        let mut start = Instant::now();
        for t in 0..total {
            if t == settings.thermalisation {
                chain.set_step(tuner.final_step());
                start = Instant::now();
            }
            let acc = chain.trajectory();
            if t < settings.thermalisation {
                if let Some(s) = tuner.observe(acceptance_probability(chain.last_delta_h()), 1) {
                    chain.set_step(s);
                }
            } else {
                accepted += acc as usize;
                let field = chain.field();
                rec.record(ci, action.action_host(field), &measure.measure(field));
            }
            progress(ci * total + t + 1);
        }
        seconds += start.elapsed().as_secs_f64();
    }
    let step = chains.first().map(|c| c.step());
    let acceptance = accepted as f64 / (settings.updates * settings.chains) as f64;
    rec.summarise("hmc", settings, acceptance, step, seconds)
}
