//! The RG flow as a generative model of images (RG-Flow, Hu et al., arXiv:2010.00029):
//! maximum-likelihood training on pictures, bits per dimension on held-out images, and
//! samples at a temperature.
//!
//! Images are quantised levels `v ∈ {0 … 255}`, `[N, C, L, L]` ([`nrg_images::ImageSet`]).
//! The flow models `y = logit(α + (1 − 2α) x)` of the dequantised `x = (v + u)/256`
//! ([`nrg_images::likelihood`]), so that
//!
//! ```text
//! ln q_X(x) = ln q_Y(y) + Σ_pixels ln|dy/dx|                 (density on [0, 1)^D)
//! bpd       = (−ln q_X(x) + D ln 256) / (P ln 2)             (P real pixels; P = D unpadded)
//! loss      = −(1/D) E_batch ln q_Y(y)                       (nats per dimension)
//! ```
//!
//! The dequantisation noise `u` and the logit are applied on the host in `f64` and the
//! log-determinant `Σ ln|dy/dx|`, which does not depend on the flow's parameters, is added
//! outside the graph. Every step draws its batch (indices, noise, optional horizontal flips)
//! from a generator seeded by `seed` and the step, so a resumed run repeats the batches of
//! an uninterrupted one.
//!
//! Sampling at temperature `T`: `z = T·ζ` with `ζ` from the prior (`T = 1` is the model;
//! `T < 1` trades diversity for typicality, as in Glow, arXiv:1807.03039), `y = G(z)`,
//! `v = ⌊256·x(y)⌋` clamped to `0 … 255`.

use crate::clip::GradClip;
use crate::flow::FlowModel;
use crate::train::{LrSchedule, TrainError, adam, load_state, save_state};
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use nrg_core::parallel::on_pool;
use nrg_core::{Estimate, LatentModel, NrgError, Result};
use nrg_images::ImageSet;
use nrg_images::likelihood::{LEVELS, LogitTransform, bits_per_dim};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::Path;

type Rng = rand_xoshiro::Xoshiro256PlusPlus;

/// Settings of maximum-likelihood training on images (the `[train]` table of an image run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageTrainSettings {
    /// Optimisation steps.
    pub steps: usize,
    /// Images per step.
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
    /// Flip each training image left–right with probability ½ (pictures, unlike the
    /// synthetic set's factors, are symmetric under it).
    pub flip: bool,
    /// Seed of the flow's initialisation and of the batches.
    pub seed: u64,
}

impl Default for ImageTrainSettings {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch: 64,
            lr: 1e-3,
            lr_schedule: LrSchedule::Cosine,
            lr_min: 1e-5,
            clip_grad_norm: Some(10.0),
            flip: false,
            seed: 0,
        }
    }
}

impl ImageTrainSettings {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.batch == 0 {
            return Err(NrgError::param("steps/batch", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(NrgError::param("lr", "must be positive and finite"));
        }
        if !(self.lr_min.is_finite() && self.lr_min >= 0.0 && self.lr_min <= self.lr) {
            return Err(NrgError::param("lr_min", "must be in [0, lr]"));
        }
        if let Some(c) = self.clip_grad_norm
            && !(c.is_finite() && c > 0.0)
        {
            return Err(NrgError::param("clip_grad_norm", "must be positive"));
        }
        Ok(())
    }

    /// The learning rate at `step`.
    pub fn lr_at(&self, step: usize) -> f64 {
        self.lr_schedule
            .lr_at(self.lr, self.lr_min, step, self.steps)
    }
}

/// A batch of images in the flow's space: `y` `[n, C, L, L]` and `Σ ln|dy/dx|` per image.
pub struct FlowBatch {
    /// `y = logit(α + (1 − 2α)(v + u)/256)`, row-major `[n, C, L, L]`.
    pub y: Vec<f32>,
    /// `Σ_pixels ln|dy/dx|` per image, in `f64`.
    pub log_det: Vec<f64>,
}

/// Dequantises images `indices` of `set` with noise from `rng`, optionally flipping each
/// left–right with probability ½, and maps them to `y` (module docs).
pub fn flow_batch(
    set: &ImageSet,
    indices: &[usize],
    transform: &LogitTransform,
    flip: bool,
    rng: &mut impl rand::Rng,
) -> FlowBatch {
    let [_, c, h, w] = set.shape;
    let d = c * h * w;
    let mut y = Vec::with_capacity(indices.len() * d);
    let mut log_det = Vec::with_capacity(indices.len());
    for &i in indices {
        let img = set.image(i);
        let mirrored = flip && rng.random::<bool>();
        let mut ld = 0.0;
        for ch in 0..c {
            for r in 0..h {
                for col in 0..w {
                    let src = if mirrored { w - 1 - col } else { col };
                    let v = img[(ch * h + r) * w + src] as f64;
                    let x = (v + rng.random::<f64>()) / LEVELS;
                    ld += transform.log_det_pixel(x);
                    y.push(transform.forward_pixel(x) as f32);
                }
            }
        }
        log_det.push(ld);
    }
    FlowBatch { y, log_det }
}

fn host(t: Tensor<1>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .unwrap_or_default()
}

/// Checks that `model` can model images of `set` (same shape, not Z₂-symmetrised).
fn check_model(model: &FlowModel, set: &ImageSet) -> Result<()> {
    let [_, c, h, w] = set.shape;
    if model.shape() != [c, h, w] {
        return Err(NrgError::param(
            "flow",
            format!(
                "the flow models {:?} configurations, the images are {:?}",
                model.shape(),
                [c, h, w]
            ),
        ));
    }
    if model.symmetrised() {
        return Err(NrgError::param(
            "z2",
            "images have no x → −x symmetry; build the flow with z2 = false",
        ));
    }
    Ok(())
}

/// What one training step measured on its batch (before the update).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ImageStepStats {
    /// Step index (0-based).
    pub step: usize,
    /// The loss minimised: `−E ln q_Y(y) / D`, nats per dimension.
    pub loss: f64,
    /// Bits per real pixel of the batch (dequantised, module docs).
    pub bits_per_dim: f64,
    /// Learning rate used.
    pub lr: f64,
}

/// A step evaluated but not yet applied.
pub struct PendingImageStep {
    loss: Tensor<1>,
    /// What the step measured.
    pub stats: ImageStepStats,
}

/// Trains a [`FlowModel`] by maximum likelihood on images, on an autodiff device.
pub struct ImageTrainer {
    model: FlowModel,
    optim: ModuleOptimizer,
    clip: Option<GradClip>,
    images: ImageSet,
    transform: LogitTransform,
    settings: ImageTrainSettings,
    device: Device,
    step: usize,
}

impl ImageTrainer {
    /// A trainer of `model` on `images` (levels `[N, C, L, L]`) through `transform`.
    pub fn new(
        model: FlowModel,
        images: ImageSet,
        transform: LogitTransform,
        settings: ImageTrainSettings,
        device: &Device,
    ) -> Result<Self> {
        settings.validate()?;
        check_model(&model, &images)?;
        if images.is_empty() {
            return Err(NrgError::InvalidData("no training images".into()));
        }
        Ok(Self {
            clip: settings.clip_grad_norm.map(GradClip::new),
            model,
            optim: adam(),
            images,
            transform,
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
    pub fn settings(&self) -> &ImageTrainSettings {
        &self.settings
    }

    /// The model being trained.
    pub fn model(&self) -> &FlowModel {
        &self.model
    }

    /// The training images.
    pub fn images(&self) -> &ImageSet {
        &self.images
    }

    /// Draws this step's batch, computes the loss and its statistics.
    ///
    /// Errors: [`TrainError::Diverged`] when `ln q` of an image is not finite.
    pub fn evaluate(&self) -> std::result::Result<PendingImageStep, TrainError> {
        on_pool(|| self.evaluate_here())
    }

    fn evaluate_here(&self) -> std::result::Result<PendingImageStep, TrainError> {
        let s = &self.settings;
        let mut rng = Rng::seed_from_u64(s.seed ^ (self.step as u64).wrapping_mul(0x9E37_79B9));
        let n = self.images.len();
        let indices: Vec<usize> = (0..s.batch).map(|_| rng.random_range(0..n)).collect();
        let batch = flow_batch(&self.images, &indices, &self.transform, s.flip, &mut rng);
        let [_, c, h, w] = self.images.shape;
        let d = c * h * w;
        let y = Tensor::<4>::from_data(TensorData::new(batch.y, [s.batch, c, h, w]), &self.device);
        let log_q = self.model.log_prob(y);
        let lq = host(log_q.clone());
        if lq.iter().any(|v| !v.is_finite()) {
            return Err(TrainError::Diverged {
                step: self.step,
                what: "ln q",
            });
        }
        let nll_x = lq
            .iter()
            .zip(&batch.log_det)
            .map(|(q, ld)| -(q + ld))
            .sum::<f64>()
            / s.batch as f64;
        let loss = log_q.mean().neg().div_scalar(d as f64);
        let stats = ImageStepStats {
            step: self.step,
            loss: -lq.iter().sum::<f64>() / (s.batch * d) as f64,
            bits_per_dim: bits_per_dim(nll_x, d, self.images.real_dims),
            lr: s.lr_at(self.step),
        };
        Ok(PendingImageStep { loss, stats })
    }

    /// Backpropagates a pending step and applies the Adam update.
    pub fn update(&mut self, pending: PendingImageStep) {
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
    pub fn step(&mut self) -> std::result::Result<ImageStepStats, TrainError> {
        let pending = self.evaluate()?;
        let stats = pending.stats;
        self.update(pending);
        Ok(stats)
    }

    /// Saves the model and the optimiser state (`model.bpk`, `optim.bpk`) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_state(&self.model, &self.optim, dir)
    }

    /// Restores what [`ImageTrainer::save`] wrote, continuing at `step`.
    pub fn load(mut self, dir: &Path, step: usize) -> Result<Self> {
        (self.model, self.optim) = load_state(self.model, self.optim, dir)?;
        self.step = step;
        Ok(self)
    }
}

/// How to evaluate a likelihood on a set of images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalOptions {
    /// Images per forward pass.
    pub batch: usize,
    /// Seed of the dequantisation noise.
    pub seed: u64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            batch: 256,
            seed: 1,
        }
    }
}

/// Bits per real pixel of every image of `set` under `model` (one dequantisation draw per
/// image), with its standard error over the images, and the per-image values.
///
/// Accumulates in `f64`. Errors: a set that does not fit the model, an empty set.
pub fn bits_per_dim_of(
    model: &FlowModel,
    set: &ImageSet,
    transform: &LogitTransform,
    options: EvalOptions,
    device: &Device,
) -> Result<(Estimate, Vec<f64>)> {
    check_model(model, set)?;
    if set.is_empty() || options.batch == 0 {
        return Err(NrgError::InvalidData(
            "bits per dimension need at least one image".into(),
        ));
    }
    let model = model.valid();
    let [n, c, h, w] = set.shape;
    let d = c * h * w;
    let mut rng = Rng::seed_from_u64(options.seed);
    let mut per_image = Vec::with_capacity(n);
    for start in (0..n).step_by(options.batch) {
        let idx: Vec<usize> = (start..(start + options.batch).min(n)).collect();
        let b = flow_batch(set, &idx, transform, false, &mut rng);
        let y = Tensor::<4>::from_data(TensorData::new(b.y, [idx.len(), c, h, w]), device);
        let lq = host(model.log_prob(y));
        for (q, ld) in lq.iter().zip(&b.log_det) {
            per_image.push(bits_per_dim(-(q + ld), d, set.real_dims));
        }
    }
    if let Some(i) = per_image.iter().position(|v| !v.is_finite()) {
        return Err(NrgError::InvalidData(format!(
            "the likelihood of image {i} is not finite"
        )));
    }
    let m = per_image.len() as f64;
    let mean = per_image.iter().sum::<f64>() / m;
    let var = per_image.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m - 1.0).max(1.0);
    Ok((Estimate::new(mean, (var / m).sqrt()), per_image))
}

/// Pixel levels of flow-space values `y` (`⌊256·x(y)⌋`, clamped to `0 … 255`).
pub fn levels_of(y: &[f32], transform: &LogitTransform) -> Vec<u8> {
    y.iter()
        .map(|&v| {
            let x = transform.inverse_pixel(v as f64);
            (x * LEVELS).floor().clamp(0.0, LEVELS - 1.0) as u8
        })
        .collect()
}

/// `n` images sampled from `model` at `temperature` (module docs), as levels.
///
/// Errors: a temperature that is not positive and finite, `n = 0`.
pub fn sample_images(
    model: &FlowModel,
    n: usize,
    temperature: f64,
    transform: &LogitTransform,
    device: &Device,
) -> Result<ImageSet> {
    if !(temperature.is_finite() && temperature > 0.0) || n == 0 {
        return Err(NrgError::param(
            "temperature",
            format!("need T > 0 and n ≥ 1, got T = {temperature}, n = {n}"),
        ));
    }
    let model = model.valid();
    let z = model.sample_latent(n, device).mul_scalar(temperature);
    let (y, _) = model.generate_with_log_det(z);
    let y: Vec<f32> = y
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    let [c, h, w] = model.shape();
    ImageSet::new(levels_of(&y, transform), [n, c, h, w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{FlowSpec, PriorShape};

    fn tiny_set() -> ImageSet {
        let pixels: Vec<u8> = (0..4 * 16).map(|k| ((k * 37) % 256) as u8).collect();
        ImageSet::new(pixels, [4, 1, 4, 4]).unwrap()
    }

    /// The batch's `y` and log-det against the per-pixel formulas; flips mirror columns.
    #[test]
    fn flow_batch_matches_the_pixel_transform() {
        let set = tiny_set();
        let t = LogitTransform::default();
        let mut rng = Rng::seed_from_u64(3);
        let b = flow_batch(&set, &[2, 0], &t, false, &mut rng);
        assert_eq!(b.y.len(), 32);
        for (k, &i) in [2usize, 0].iter().enumerate() {
            let mut ld = 0.0;
            for p in 0..16 {
                let x = t.inverse_pixel(b.y[k * 16 + p] as f64);
                let v = set.image(i)[p] as f64;
                // x lies in its level's cell (f32 rounding of y: ~1e-6 relative)
                assert!(
                    x * 256.0 > v - 1e-3 && x * 256.0 < v + 1.0 + 1e-3,
                    "{x} {v}"
                );
                ld += t.log_det_pixel(x);
            }
            assert!((ld - b.log_det[k]).abs() < 1e-3 * (1.0 + ld.abs()));
        }
        assert_eq!(levels_of(&b.y[..16], &t), set.image(2));
        // all flipped: the columns come out mirrored
        let mut rng = Rng::seed_from_u64(3);
        let mut flipped = 0;
        for _ in 0..20 {
            let b = flow_batch(&set, &[1], &t, true, &mut rng);
            let lv = levels_of(&b.y, &t);
            if lv != set.image(1) {
                let img = set.image(1);
                for r in 0..4 {
                    for c in 0..4 {
                        assert_eq!(lv[r * 4 + c], img[r * 4 + 3 - c]);
                    }
                }
                flipped += 1;
            }
        }
        assert!((3..=17).contains(&flipped), "{flipped} of 20 flipped");
    }

    /// Zeroes every parameter: the couplings' subnets then output `s = t = 0`, every block
    /// is the identity, and the prior is `N(0, 1)` per latent.
    struct Zero;
    impl burn::module::ModuleMapper for Zero {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<Tensor<D>>,
        ) -> burn::module::Param<Tensor<D>> {
            param.map(|t| t.zeros_like())
        }
    }

    /// Bits/dim of a known density: the identity flow with a standard normal prior on
    /// images of uniformly random levels. Each pixel's `x = (v + u)/256` is then uniform on
    /// `[0, 1)`, so the expected bits per pixel is
    /// `(E_x[−ln φ(y(x)) − ln|dy/dx|] + ln 256)/ln 2`, computed here by the midpoint rule on
    /// 10⁵ cells; the dataset's mean must match it within 4 standard errors.
    #[test]
    fn bits_per_dim_of_a_known_density() {
        let dev = Device::flex();
        let model = FlowSpec::default()
            .build(1, 8, &dev)
            .unwrap()
            .map(&mut Zero);
        let mut rng = Rng::seed_from_u64(11);
        let pixels: Vec<u8> = (0..400 * 64).map(|_| rng.random::<u8>()).collect();
        let set = ImageSet::new(pixels, [400, 1, 8, 8]).unwrap();
        let t = LogitTransform::default();
        let (bpd, per) = bits_per_dim_of(&model, &set, &t, EvalOptions::default(), &dev).unwrap();
        assert_eq!(per.len(), 400);
        let m = 100_000;
        let per_pixel = (0..m)
            .map(|k| {
                let x = (k as f64 + 0.5) / m as f64;
                let y = t.forward_pixel(x);
                0.5 * y * y + 0.5 * (2.0 * std::f64::consts::PI).ln() - t.log_det_pixel(x)
            })
            .sum::<f64>()
            / m as f64;
        let exact = (per_pixel + LEVELS.ln()) / std::f64::consts::LN_2;
        assert!(
            (bpd.value - exact).abs() < 4.0 * bpd.error,
            "bpd {bpd:?}, exact {exact}"
        );
        assert!(bpd.error < 0.01, "{bpd:?}");
    }

    /// Training reduces the test bits/dim of a tiny set, and sampling gives levels of the
    /// right shape; a Z₂ flow and a wrong shape are refused.
    #[test]
    fn a_few_steps_of_training_lower_bits_per_dim() {
        let dev = Device::flex().autodiff();
        dev.seed(0);
        let spec = FlowSpec {
            prior: PriorShape::Laplace,
            ..FlowSpec::default()
        };
        let model = spec.build(1, 4, &dev).unwrap();
        let set = tiny_set();
        let t = LogitTransform::default();
        let before = bits_per_dim_of(&model, &set, &t, EvalOptions::default(), &dev)
            .unwrap()
            .0;
        let settings = ImageTrainSettings {
            steps: 60,
            batch: 16,
            lr: 1e-2,
            ..ImageTrainSettings::default()
        };
        let mut trainer = ImageTrainer::new(model, set.clone(), t, settings, &dev).unwrap();
        for _ in 0..60 {
            trainer.step().unwrap();
        }
        let after = bits_per_dim_of(trainer.model(), &set, &t, EvalOptions::default(), &dev)
            .unwrap()
            .0;
        assert!(
            after.value < before.value - 0.5,
            "bpd {before:?} → {after:?}"
        );
        let s = sample_images(trainer.model(), 3, 0.7, &t, &dev).unwrap();
        assert_eq!(s.shape, [3, 1, 4, 4]);
        assert!(sample_images(trainer.model(), 3, 0.0, &t, &dev).is_err());
        let z2 = FlowSpec {
            z2: true,
            ..FlowSpec::default()
        }
        .build(1, 4, &dev)
        .unwrap();
        assert!(
            ImageTrainer::new(z2, set.clone(), t, ImageTrainSettings::default(), &dev).is_err()
        );
        let big = FlowSpec::default().build(1, 8, &dev).unwrap();
        assert!(ImageTrainer::new(big, set, t, ImageTrainSettings::default(), &dev).is_err());
    }
}
