//! Latent configurations under the *exact* bulk distribution `∝ e^{−S_eff(z)}`, from which
//! every bulk statistic is estimated.
//!
//! Three sources:
//!
//! - the RG map of exact boundary samples, `z = R(x)` ([`LatentSamples::from_boundary`]):
//!   baseline Monte Carlo or a `.npy` of configurations — exact, unweighted;
//! - flow samples reweighted to the target ([`LatentSamples::from_flow`]): `z ∼ p_Z`,
//!   `ln w = −S_eff(z) − ln p_Z(z)` (= `−S(x) − ln q(x)` of `x = G(z)`), NIS weights;
//! - any other set, e.g. bulk MCMC chains in time order ([`LatentSamples::new`]).
//!
//! Errors of every statistic come from contiguous blocks of samples (a blocked jackknife),
//! so a chain's samples must be given in time order with blocks much longer than its
//! `τ_int`; samples of independent draws can be blocked freely.

use burn::tensor::{Device, Tensor, TensorData};
use nrg_core::bulk::{Configurations, Gradient, evaluate_bulk};
use nrg_core::{Action, LatentModel, NrgError, Result};

/// Latent configurations: `z[n][c][site]` as `f32`, row after row, with optional log
/// importance weights.
#[derive(Clone, Debug)]
pub struct LatentSamples {
    /// Number of configurations `N`.
    pub n: usize,
    /// Components per site `C`.
    pub channels: usize,
    /// Sites `V` (latent sites, row-major as on the lattice).
    pub sites: usize,
    /// The latents, `[N, C, V]`.
    pub z: Vec<f32>,
    /// `ln w` per configuration (`None`: unweighted).
    pub log_weights: Option<Vec<f64>>,
    /// The boundary configurations `x = G(z)`, `[N, C, V]`, where kept.
    pub boundary: Option<Vec<f32>>,
}

fn host_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

impl LatentSamples {
    /// Samples `z` of shape `[n, channels, sites]`, optionally weighted; checks sizes and
    /// finiteness.
    pub fn new(
        z: Vec<f32>,
        [n, channels, sites]: [usize; 3],
        log_weights: Option<Vec<f64>>,
    ) -> Result<Self> {
        if n < 2 || channels == 0 || sites == 0 || z.len() != n * channels * sites {
            return Err(NrgError::InvalidData(format!(
                "latent samples: {} numbers for [{n}, {channels}, {sites}] (need N ≥ 2)",
                z.len()
            )));
        }
        if let Some(i) = z.iter().position(|v| !v.is_finite()) {
            return Err(NrgError::InvalidData(format!(
                "latent sample value {i} is not finite"
            )));
        }
        if let Some(w) = &log_weights
            && (w.len() != n || w.iter().any(|v| !v.is_finite()))
        {
            return Err(NrgError::InvalidData(
                "one finite log-weight per latent configuration is needed".into(),
            ));
        }
        Ok(Self {
            n,
            channels,
            sites,
            z,
            log_weights,
            boundary: None,
        })
    }

    /// The same samples with their boundary configurations `x` (`[N, C, V]`).
    pub fn with_boundary(mut self, x: Vec<f32>) -> Result<Self> {
        if x.len() != self.z.len() {
            return Err(NrgError::InvalidData(
                "boundary configurations do not match the latent samples".into(),
            ));
        }
        self.boundary = Some(x);
        Ok(self)
    }

    /// `z = R(x)` of boundary configurations `x` (`shape = [N, C, L, L]`, `f32`), mapped in
    /// batches of `batch` on `device`.
    pub fn from_boundary(
        model: &dyn LatentModel,
        x: &[f32],
        shape: [usize; 4],
        batch: usize,
        device: &Device,
    ) -> Result<Self> {
        let [n, c, r, w] = shape;
        let per = c * r * w;
        if model.latent_shape() != [c, r, w] || x.len() != n * per || batch == 0 {
            return Err(NrgError::InvalidData(format!(
                "boundary configurations {shape:?} do not fit the model's {:?}",
                model.latent_shape()
            )));
        }
        let mut z = Vec::with_capacity(x.len());
        for start in (0..n).step_by(batch) {
            let b = batch.min(n - start);
            let chunk = x[start * per..(start + b) * per].to_vec();
            let xt = Tensor::<4>::from_data(TensorData::new(chunk, [b, c, r, w]), device);
            let (zt, _) = model.rg_map(xt);
            z.extend(host_f32(zt));
        }
        Self::new(z, [n, c, r * w], None)?.with_boundary(x.to_vec())
    }

    /// `n` flow samples `z ∼ p_Z` with their NIS log-weights `−S_eff(z) − ln p_Z(z)`, in
    /// batches of `batch` on `device` (no autodiff needed).
    pub fn from_flow(
        model: &dyn LatentModel,
        action: &dyn Action,
        n: usize,
        batch: usize,
        device: &Device,
    ) -> Result<Self> {
        let [c, r, w] = model.latent_shape();
        if batch == 0 {
            return Err(NrgError::param("batch", "must be ≥ 1"));
        }
        let mut z = Vec::with_capacity(n * c * r * w);
        let mut x = Vec::with_capacity(n * c * r * w);
        let mut log_w = Vec::with_capacity(n);
        let mut done = 0;
        while done < n {
            let b = batch.min(n - done);
            let zt = model.sample_latent(b, device);
            let log_p: Vec<f64> = model
                .prior_log_prob(zt.clone())
                .into_data()
                .convert::<f64>()
                .try_to_vec::<f64>()
                .unwrap_or_default();
            let zs = host_f32(zt);
            let z64: Vec<f64> = zs.iter().map(|v| *v as f64).collect();
            let need = (Gradient::Skip, Configurations::Keep);
            let e = evaluate_bulk(model, action, &z64, [b, c, r, w], need, device);
            x.extend(e.configurations.iter().flatten().map(|v| *v as f32));
            for (u, lp) in e.effective_action.iter().zip(&log_p) {
                log_w.push(-u - lp);
            }
            z.extend(zs);
            done += b;
        }
        Self::new(z, [n, c, r * w], Some(log_w))?.with_boundary(x)
    }

    /// The latents of configuration `k`, `[C, V]`.
    pub fn configuration(&self, k: usize) -> &[f32] {
        let per = self.channels * self.sites;
        &self.z[k * per..(k + 1) * per]
    }

    /// Weights normalised to a largest weight of 1 (all 1 when unweighted).
    pub fn weights(&self) -> Vec<f64> {
        match &self.log_weights {
            None => vec![1.0; self.n],
            Some(lw) => {
                let top = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                lw.iter().map(|l| (l - top).exp()).collect()
            }
        }
    }

    /// The effective sample size per sample `(Σw)²/(N Σw²)` (1 when unweighted).
    pub fn ess(&self) -> f64 {
        let w = self.weights();
        let s1: f64 = w.iter().sum();
        let s2: f64 = w.iter().map(|v| v * v).sum();
        s1 * s1 / (self.n as f64 * s2)
    }

    /// The `[start, end)` ranges of `blocks` contiguous blocks of (nearly) equal size.
    pub fn blocks(&self, blocks: usize) -> Result<Vec<(usize, usize)>> {
        if blocks < 2 || blocks > self.n {
            return Err(NrgError::param(
                "blocks",
                format!("need 2 ≤ blocks ≤ N = {}, got {blocks}", self.n),
            ));
        }
        Ok((0..blocks)
            .map(|b| (b * self.n / blocks, (b + 1) * self.n / blocks))
            .collect())
    }
}
