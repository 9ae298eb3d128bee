//! Training: reverse KL from an action, forward KL from data, or a mix.
//!
//! ```text
//! reverse:  F_q = E_{x∼q}[ln q(x) + S(x)] = −ln Z + KL(q‖p) ≥ −ln Z
//! forward:  NLL = −E_{x∼data}[ln q(x)],   KL(p‖q) = E_p[−S − ln q] − ln Z (when ln Z is known)
//! loss      = (1 − w)·E_q[ln q + γ_t S] + w·NLL
//! ```
//!
//! `w` is the forward-KL weight (`0` without data). *β annealing* tempers the target,
//! `p_γ ∝ e^{−γS}`, with `γ_t` rising linearly from `γ₀` to 1 over the first `anneal_steps`
//! steps (for a Boltzmann action this is annealing β from `γ₀β`). The learning rate follows
//! a constant or cosine schedule; gradients may be clipped by norm (per parameter tensor,
//! [`GradClip`]: burn's `GradientClipping::Norm`, with flat parameters cut into the tensors
//! they store). Adam throughout.
//!
//! Every step reports, from its own batch and in `f64`: `F_q` (at `γ = 1`) with its standard
//! error, the ESS of `ln w = −S − ln q`, the gap to `−ln Z` when it is known, and with data the
//! NLL and `KL(p‖q)`. A non-finite loss stops training with [`TrainError::Diverged`]; the
//! two-phase step ([`Trainer::evaluate`], then [`Trainer::update`]) lets a caller checkpoint
//! a model whose loss it has just seen finite, before the update.

use crate::clip::GradClip;
use crate::data::LatticeSymmetry;
use crate::flow::FlowModel;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Distribution, Int, Tensor, s};
use nrg_core::action::with_analytic_gradient;
use nrg_core::parallel::on_pool;
use nrg_core::{Action, NrgError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Learning-rate schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// `lr` throughout.
    Constant,
    /// `lr_min + ½(lr − lr_min)(1 + cos πt/T)`.
    Cosine,
}

impl LrSchedule {
    /// The learning rate at `step` of `steps`, from `lr` (down to `lr_min` for the cosine).
    pub fn lr_at(self, lr: f64, lr_min: f64, step: usize, steps: usize) -> f64 {
        match self {
            LrSchedule::Constant => lr,
            LrSchedule::Cosine => {
                let t = step as f64 / steps.max(1) as f64;
                lr_min + 0.5 * (lr - lr_min) * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// Settings of a training run (the `[train]` table of a run configuration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    /// Optimisation steps.
    pub steps: usize,
    /// Flow samples per step.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Schedule of the learning rate.
    pub lr_schedule: LrSchedule,
    /// Final learning rate of the cosine schedule.
    pub lr_min: f64,
    /// Clip each parameter tensor's gradient to this norm (a flat parameter piece by piece:
    /// [`crate::clip::GradClip`]).
    pub clip_grad_norm: Option<f64>,
    /// Steps over which `γ` rises to 1 (0: no annealing).
    pub anneal_steps: usize,
    /// Initial `γ₀` of the annealing.
    pub anneal_start: f64,
    /// Weight `w` of the forward KL (needs data).
    pub forward_weight: f64,
    /// Data configurations per step.
    pub data_batch: usize,
    /// Transform each step's data batch by a uniformly random lattice symmetry (a
    /// translation, and on a square lattice one of the 8 elements of D₄; on a chain a
    /// reflection). The target is invariant, so the data stay exact samples of it; a flow
    /// that breaks these symmetries (a block grid) then sees every translate of every datum.
    pub augment: bool,
    /// Seed of the device's random numbers.
    pub seed: u64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch: 256,
            lr: 1e-3,
            lr_schedule: LrSchedule::Constant,
            lr_min: 0.0,
            clip_grad_norm: None,
            anneal_steps: 0,
            anneal_start: 1.0,
            forward_weight: 0.0,
            data_batch: 256,
            augment: false,
            seed: 0,
        }
    }
}

/// Whether training data (configurations for the forward KL) is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainingData {
    /// Reverse KL only.
    Absent,
    /// Configurations for the forward KL.
    Present,
}

impl TrainingData {
    /// `Present` for `Some`.
    pub fn of<T>(data: &Option<T>) -> Self {
        if data.is_some() {
            Self::Present
        } else {
            Self::Absent
        }
    }
}

impl TrainSettings {
    /// Checks the settings against whether training data is given.
    pub fn validate(&self, data: TrainingData) -> Result<(), NrgError> {
        let has_data = data == TrainingData::Present;
        let finite_pos = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(NrgError::param(
                    name,
                    format!("must be positive and finite, got {v}"),
                ))
            }
        };
        if self.steps == 0 || self.batch == 0 || self.data_batch == 0 {
            return Err(NrgError::param("steps/batch", "must be at least 1"));
        }
        finite_pos("lr", self.lr)?;
        if !(self.lr_min.is_finite() && self.lr_min >= 0.0 && self.lr_min <= self.lr) {
            return Err(NrgError::param("lr_min", "must be in [0, lr]"));
        }
        if let Some(c) = self.clip_grad_norm {
            finite_pos("clip_grad_norm", c)?;
        }
        if !(self.anneal_start.is_finite() && self.anneal_start > 0.0 && self.anneal_start <= 1.0) {
            return Err(NrgError::param("anneal_start", "must be in (0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.forward_weight) {
            return Err(NrgError::param("forward_weight", "must be in [0, 1]"));
        }
        if self.augment && !has_data {
            return Err(NrgError::param(
                "augment",
                "augments training data, and there is none (`data = \"configs.npy\"`)",
            ));
        }
        if self.forward_weight > 0.0 && !has_data {
            return Err(NrgError::param(
                "forward_weight",
                "forward KL needs training data (`data = \"configs.npy\"`)",
            ));
        }
        Ok(())
    }

    /// The learning rate at `step`.
    pub fn lr_at(&self, step: usize) -> f64 {
        self.lr_schedule
            .lr_at(self.lr, self.lr_min, step, self.steps)
    }

    /// The tempering `γ_t` of the target at `step`.
    pub fn gamma_at(&self, step: usize) -> f64 {
        if self.anneal_steps == 0 || step >= self.anneal_steps {
            return 1.0;
        }
        let t = step as f64 / self.anneal_steps as f64;
        self.anneal_start + (1.0 - self.anneal_start) * t
    }
}

/// What one step measured (on its own batch, before the update).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct StepStats {
    /// Step index (0-based).
    pub step: usize,
    /// The loss that was minimised.
    pub loss: f64,
    /// `F_q` estimate, the batch mean of `ln q + S`.
    pub free_energy: f64,
    /// Its standard error.
    pub free_energy_error: f64,
    /// `F_q + ln Z` when `ln Z` is known (≥ 0 up to noise).
    pub gap: Option<f64>,
    /// `|F_q + ln Z| / |ln Z|`.
    pub relative_gap: Option<f64>,
    /// Effective sample size per sample, in `(0, 1]`.
    pub ess: f64,
    /// Forward NLL `−E_data ln q` (with data).
    pub nll: Option<f64>,
    /// `KL(p‖q)` (with data and known `ln Z`).
    pub forward_kl: Option<f64>,
    /// Learning rate used.
    pub lr: f64,
    /// Tempering `γ`.
    pub gamma: f64,
}

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss or a log-weight was not finite.
    #[error(
        "training diverged at step {step}: {what} is not finite (try a lower lr or clip_grad_norm)"
    )]
    Diverged {
        /// The step.
        step: usize,
        /// What was not finite.
        what: &'static str,
    },
    /// Anything else.
    #[error(transparent)]
    Other(#[from] NrgError),
}

/// `F_q` ± error and the ESS from per-sample `ln w = −S − ln q`, in `f64`.
pub fn weight_stats(log_w: &[f64]) -> (f64, f64, f64) {
    let n = log_w.len() as f64;
    let mean = log_w.iter().sum::<f64>() / n;
    let var = log_w.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let top = log_w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let s1: f64 = log_w.iter().map(|l| (l - top).exp()).sum();
    let s2: f64 = log_w.iter().map(|l| (2.0 * (l - top)).exp()).sum();
    (-mean, (var / n).sqrt(), s1 * s1 / (n * s2))
}

fn host(t: Tensor<1>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .unwrap_or_default()
}

/// Checks on a few data configurations that `action` is invariant under the lattice
/// symmetries used by `augment` (its generators and a composite element); augmenting data
/// of an action that is not would train on configurations of a different distribution.
fn check_invariance(action: &dyn Action, data: &Tensor<4>) -> Result<(), NrgError> {
    let [n, _, rows, cols] = data.dims();
    let x = data.clone().slice(s![0..n.min(8)]);
    let before = host(action.action(x.clone()));
    for g in LatticeSymmetry::generators(rows, cols) {
        let after = host(action.action(g.apply(x.clone())));
        for (a, b) in before.iter().zip(&after) {
            // f32 sums over the lattice: allow rounding of a few ulps of the total.
            if (a - b).abs() > 1e-4 * (1.0 + a.abs()) {
                return Err(NrgError::param(
                    "augment",
                    format!(
                        "the action is not invariant under the lattice symmetry {g:?} \
                         (S = {a} before, {b} after), so augmented data would not be samples of it"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A step evaluated but not yet applied.
pub struct PendingStep {
    loss: Tensor<1>,
    /// What the step measured.
    pub stats: StepStats,
}

/// Trains a [`FlowModel`] on an autodiff device.
pub struct Trainer<'a> {
    model: FlowModel,
    optim: ModuleOptimizer,
    clip: Option<GradClip>,
    action: &'a dyn Action,
    data: Option<Tensor<4>>,
    settings: TrainSettings,
    device: Device,
    step: usize,
}

impl<'a> Trainer<'a> {
    /// A trainer for `model` against `action` (and `data`, `[N, C, L, L]`, for forward KL),
    /// starting at `step` (0 for a fresh run).
    pub fn new(
        model: FlowModel,
        action: &'a dyn Action,
        data: Option<Tensor<4>>,
        settings: TrainSettings,
        device: &Device,
    ) -> Result<Self, NrgError> {
        settings.validate(TrainingData::of(&data))?;
        let lattice = action.lattice();
        let want = [action.channels(), lattice.rows(), lattice.cols()];
        if model.shape() != want {
            return Err(NrgError::param(
                "flow",
                format!(
                    "the flow models {:?} configurations, the action {want:?}",
                    model.shape()
                ),
            ));
        }
        if let Some(d) = &data {
            let [n, c, r, w] = d.dims();
            if [c, r, w] != want || n == 0 {
                return Err(NrgError::InvalidData(format!(
                    "training data has shape [{n}, {c}, {r}, {w}], the action needs [N, {}, {}, {}]",
                    want[0], want[1], want[2]
                )));
            }
        }
        if let (true, Some(d)) = (settings.augment, &data) {
            check_invariance(action, d)?;
        }
        Ok(Self {
            clip: settings.clip_grad_norm.map(GradClip::new),
            model,
            optim: adam(),
            action,
            data,
            settings,
            device: device.clone(),
            step: 0,
        })
    }

    /// The next step's index.
    pub fn step_index(&self) -> usize {
        self.step
    }

    /// The settings.
    pub fn settings(&self) -> &TrainSettings {
        &self.settings
    }

    /// The model being trained.
    pub fn model(&self) -> &FlowModel {
        &self.model
    }

    /// Consumes the trainer, returning the model.
    pub fn into_model(self) -> FlowModel {
        self.model
    }

    /// Draws a batch, computes the loss and the step's statistics.
    ///
    /// Runs on rayon's pool ([`nrg_core::parallel::on_pool`]): the step's operations then
    /// share out their work without putting the calling thread to sleep each time.
    pub fn evaluate(&self) -> Result<PendingStep, TrainError> {
        on_pool(|| self.evaluate_here())
    }

    fn evaluate_here(&self) -> Result<PendingStep, TrainError> {
        let s = &self.settings;
        let step = self.step;
        let gamma = s.gamma_at(step);
        let w = s.forward_weight;
        let exact = self.action.exact_ln_z();

        let sample = self.model.sample(s.batch, &self.device);
        // The backward pass through `∂S/∂x` itself (a product), not `S`'s expression.
        let action = with_analytic_gradient(self.action, sample.x);
        let per_sample = sample.log_q.clone() + action.clone();
        let log_w: Vec<f64> = host(per_sample.clone()).iter().map(|v| -v).collect();
        if log_w.iter().any(|v| !v.is_finite()) {
            return Err(TrainError::Diverged {
                step,
                what: "ln q + S",
            });
        }
        let (free_energy, free_energy_error, ess) = weight_stats(&log_w);
        let reverse = if gamma == 1.0 {
            per_sample.mean()
        } else {
            (sample.log_q + action.mul_scalar(gamma)).mean()
        };

        let (loss, nll, forward_kl) = match &self.data {
            Some(data) => {
                let n = data.dims()[0];
                let idx = Tensor::<1, Int>::random(
                    [s.data_batch],
                    Distribution::Uniform(0.0, n as f64),
                    &self.device,
                );
                let mut x = data.clone().select(0, idx);
                if s.augment {
                    let u = host(Tensor::<1>::random(
                        [5],
                        Distribution::Default,
                        &self.device,
                    ));
                    let [_, _, rows, cols] = x.dims();
                    let u: [f64; 5] = std::array::from_fn(|k| u[k]);
                    x = LatticeSymmetry::from_uniforms(u, rows, cols).apply(x);
                }
                let log_q = self.model.log_prob(x.clone());
                let lq = host(log_q.clone());
                let nll = -lq.iter().sum::<f64>() / lq.len() as f64;
                let fkl = exact.map(|ln_z| {
                    let sx = host(self.action.action(x));
                    let m = sx.iter().zip(&lq).map(|(s, q)| -s - q).sum::<f64>() / lq.len() as f64;
                    m - ln_z
                });
                let forward = log_q.mean().neg();
                let loss = if w == 0.0 {
                    reverse
                } else if w == 1.0 {
                    forward
                } else {
                    reverse.mul_scalar(1.0 - w) + forward.mul_scalar(w)
                };
                (loss, Some(nll), fkl)
            }
            None => (reverse, None, None),
        };
        // With no data and γ = 1 the loss is the mean of `ln q + S`, already on the host
        // (summed in f64): a second read-back would cost the step another wait for the
        // device (on a GPU, a round trip with the device idle).
        let loss_value = if self.data.is_none() && gamma == 1.0 {
            -log_w.iter().sum::<f64>() / log_w.len() as f64
        } else {
            host(loss.clone())[0]
        };
        if !loss_value.is_finite() {
            return Err(TrainError::Diverged { step, what: "loss" });
        }
        let gap = exact.map(|ln_z| free_energy + ln_z);
        let stats = StepStats {
            step,
            loss: loss_value,
            free_energy,
            free_energy_error,
            gap,
            relative_gap: exact.map(|ln_z| (free_energy + ln_z).abs() / ln_z.abs()),
            ess,
            nll,
            forward_kl,
            lr: s.lr_at(step),
            gamma,
        };
        Ok(PendingStep { loss, stats })
    }

    /// Backpropagates a pending step and applies the Adam update (on rayon's pool, as
    /// [`Trainer::evaluate`]).
    pub fn update(&mut self, pending: PendingStep) {
        on_pool(|| {
            let mut grads = GradientsParams::from_grads(pending.loss.backward(), &self.model);
            if let Some(clip) = &mut self.clip {
                grads = clip.apply(&self.model, grads);
            }
            let model = self.model.clone();
            self.model = self.optim.step(pending.stats.lr, model, grads);
        });
        self.step += 1;
    }

    /// One whole step: evaluate, then update.
    pub fn step(&mut self) -> Result<StepStats, TrainError> {
        let pending = self.evaluate()?;
        let stats = pending.stats;
        self.update(pending);
        Ok(stats)
    }

    /// Saves the model and the optimiser state (`model.bpk`, `optim.bpk`) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), NrgError> {
        save_state(&self.model, &self.optim, dir)
    }

    /// Restores the model and optimiser state saved by [`Trainer::save`], continuing at `step`.
    pub fn load(mut self, dir: &Path, step: usize) -> Result<Self, NrgError> {
        (self.model, self.optim) = load_state(self.model, self.optim, dir)?;
        self.step = step;
        Ok(self)
    }
}

/// Writes `model.bpk` and `optim.bpk` into `dir`.
pub(crate) fn save_state(
    model: &FlowModel,
    optim: &ModuleOptimizer,
    dir: &Path,
) -> Result<(), NrgError> {
    let io = |e: burn::store::RecordError| NrgError::InvalidData(format!("saving: {e}"));
    model.clone().save_file(dir.join("model.bpk")).map_err(io)?;
    optim.save(dir.join("optim.bpk")).map_err(io)?;
    Ok(())
}

/// Reads what [`save_state`] wrote.
pub(crate) fn load_state(
    model: FlowModel,
    optim: ModuleOptimizer,
    dir: &Path,
) -> Result<(FlowModel, ModuleOptimizer), NrgError> {
    let bad = |what: &str, e: burn::store::RecordError| {
        checkpoint_error(&format!("the checkpoint's {what} in {}", dir.display()), e)
    };
    let model = model
        .try_load_file(dir.join("model.bpk"))
        .map_err(|e| bad("model", e))?;
    let optim = optim
        .load(dir.join("optim.bpk"))
        .map_err(|e| bad("optimiser state", e))?;
    Ok((model, optim))
}

/// The error for a checkpoint file (`what`, described) that burn could not load, with the
/// likely cause of its kind: a file that is missing, truncated or not a checkpoint
/// ([`burn::store::RecordError::Io`]), or one of another flow or parameter layout
/// (`Validation`: the shapes or names differ).
pub fn checkpoint_error(what: &str, e: burn::store::RecordError) -> NrgError {
    use burn::store::RecordError;
    let (cause, detail) = match e {
        RecordError::Io(m) => ("missing, truncated or not a checkpoint", m),
        RecordError::Validation(m) => (
            "a checkpoint of another flow, or written by an nrg whose parameter layout \
             differed",
            m,
        ),
    };
    NrgError::InvalidData(format!("cannot read {what} ({cause}): {detail}"))
}

/// Adam (gradient clipping, where asked, is [`GradClip`], applied before the step).
pub(crate) fn adam() -> ModuleOptimizer {
    AdamConfig::new().init()
}
