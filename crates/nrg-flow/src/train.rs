//! Reverse-KL training from an action (the variational free energy).
//!
//! ```text
//! F_q = E_{x∼q}[ln q(x) + S(x)] = −ln Z + KL(q‖p) ≥ −ln Z
//! ```
//!
//! Each step draws a batch from the flow, minimises the batch mean of `ln q + S` with Adam
//! (optionally with gradient-norm clipping), and reports, from the same batch in `f64`:
//! `F_q` with its standard error, and the effective sample size of the importance weights
//! `ln w = −S − ln q`, `ESS = (Σw)²/(N Σw²)`. A non-finite loss stops training with an
//! error (the caller keeps its last good model).

use crate::flow::Flow;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use nrg_core::{Action, Bijector, NrgError, Prior, Result};

/// Settings of reverse-KL training.
#[derive(Clone, Copy, Debug)]
pub struct ReverseKl {
    /// Optimisation steps.
    pub steps: usize,
    /// Samples per step.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
}

/// What one step measured (on its own batch, before the update).
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Step index (0-based).
    pub step: usize,
    /// `F_q` estimate, the batch mean of `ln q + S`.
    pub free_energy: f64,
    /// Its standard error.
    pub free_energy_error: f64,
    /// Effective sample size per sample, in `(0, 1]`.
    pub ess: f64,
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

/// Trains `model` (on an autodiff `device`) by reverse KL against `action`.
pub fn train_reverse_kl<M, P>(
    mut model: M,
    prior: P,
    action: &dyn Action,
    settings: ReverseKl,
    device: &Device,
    mut on_step: impl FnMut(&StepStats),
) -> Result<M>
where
    M: Module + Bijector,
    P: Prior + Copy,
{
    let lattice = action.lattice();
    let shape = [action.channels(), lattice.rows(), lattice.cols()];
    let mut optim = AdamConfig::new().init();
    for step in 0..settings.steps {
        let flow = Flow {
            bijector: &model,
            prior,
            shape,
        };
        let sample = flow.sample(settings.batch, device);
        let s = action.action(sample.x);
        let per_sample: Tensor<1> = sample.log_q + s;
        let values: Vec<f64> = per_sample
            .clone()
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .map_err(|e| NrgError::InvalidData(format!("{e:?}")))?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(NrgError::InvalidData(format!(
                "training diverged at step {step}: non-finite ln q + S"
            )));
        }
        let log_w: Vec<f64> = values.iter().map(|v| -v).collect();
        let (free_energy, free_energy_error, ess) = weight_stats(&log_w);
        on_step(&StepStats {
            step,
            free_energy,
            free_energy_error,
            ess,
        });
        let loss = per_sample.mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(settings.lr, model, grads);
    }
    Ok(model)
}
