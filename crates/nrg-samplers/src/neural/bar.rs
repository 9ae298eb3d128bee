//! Bennett's acceptance ratio between a flow and exact samples of its target
//! ([`crate::free_energy`] has the estimator and its formulas).
//!
//! The forward end: `n_F` fresh flow samples `x ∼ q` with `l = −S(x) − ln q(x)`, as NIS
//! draws them. The reverse end: configurations of the target (a Markov chain of the action,
//! in chain order, e.g. `nrg mc ising --relaxed`'s fields `x | s`, or HMC of φ⁴), whose
//! `ln q` the flow's inverse gives. Shapes: configurations `[N, C, L, L]` row-major in `f32`.

use super::host;
use crate::free_energy::{BarEstimate, BarInput, SampleOrder, bar};
use burn::tensor::{Device, Tensor, TensorData};
use nrg_core::{Action, DensityModel, NrgError, Result};

/// What BAR with a flow should do.
pub struct BarRequest<'a> {
    /// Flow samples `n_F`.
    pub samples: usize,
    /// Configurations per batch through the flow (both ends).
    pub batch: usize,
    /// Target configurations `[N, C, L, L]`, row-major.
    pub target: &'a [f32],
    /// How the target configurations were drawn.
    pub target_order: SampleOrder,
}

/// `l(x) = −S(x) − ln q(x)` of configurations `[N, C, L, L]` (row-major, `f32`), in batches
/// of `batch`; `progress` gets the configurations done. Errors: a length that is not a whole
/// number of configurations of the model's shape, a non-finite log-weight.
pub fn log_weights(
    model: &dyn DensityModel,
    action: &dyn Action,
    configurations: &[f32],
    batch: usize,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<f64>> {
    let shape = model.shape();
    let per: usize = shape.iter().product();
    if per == 0 || !configurations.len().is_multiple_of(per) || batch == 0 {
        return Err(NrgError::param(
            "configurations",
            format!(
                "{} values are not whole configurations of shape {shape:?} (or batch 0)",
                configurations.len()
            ),
        ));
    }
    let n = configurations.len() / per;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(batch) {
        let b = batch.min(n - start);
        let data = TensorData::new(
            configurations[start * per..(start + b) * per].to_vec(),
            [b, shape[0], shape[1], shape[2]],
        );
        let x = Tensor::<4>::from_data(data, device);
        let s = host(action.action(x.clone()));
        let lq = host(model.log_q(x));
        for (i, (s, lq)) in s.iter().zip(&lq).enumerate() {
            let l = -s - lq;
            if !l.is_finite() {
                return Err(NrgError::InvalidData(format!(
                    "configuration {} has a non-finite log-weight (S = {s}, ln q = {lq})",
                    start + i
                )));
            }
            out.push(l);
        }
        progress(start + b);
    }
    Ok(out)
}

/// BAR between `model` and the target configurations of `request`: draws
/// `request.samples` flow samples, evaluates the flow's density on the target
/// configurations, and solves Bennett's equation. `progress` gets the configurations done
/// at both ends (out of `samples + target configurations`).
pub fn bar_with_flow(
    model: &dyn DensityModel,
    action: &dyn Action,
    request: &BarRequest,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<BarEstimate> {
    if request.samples < 2 || request.batch == 0 {
        return Err(NrgError::param(
            "samples",
            "BAR needs at least 2 flow samples and batch ≥ 1",
        ));
    }
    let mut forward = Vec::with_capacity(request.samples);
    while forward.len() < request.samples {
        let b = request.batch.min(request.samples - forward.len());
        let (x, log_q) = model.sample_with_log_q(b, device);
        let s = host(action.action(x));
        let lq = host(log_q);
        for (s, lq) in s.iter().zip(&lq) {
            let l = -s - lq;
            if !l.is_finite() {
                return Err(NrgError::InvalidData(format!(
                    "a flow sample has a non-finite log-weight (S = {s}, ln q = {lq})"
                )));
            }
            forward.push(l);
        }
        progress(forward.len());
    }
    let done = forward.len();
    let reverse = log_weights(
        model,
        action,
        request.target,
        request.batch,
        device,
        &mut |k| progress(done + k),
    )?;
    bar(&BarInput {
        forward: &forward,
        reverse: &reverse,
        reverse_order: request.target_order,
    })
}
