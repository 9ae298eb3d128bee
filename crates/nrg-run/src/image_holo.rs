//! The holographic tools on an image run ([`crate::image`]), through [`nrg_holo`]:
//! receptive fields per level rendered as pictures, multi-scale mixing of two pictures,
//! completion (inpainting) of a masked square against two baselines, and — on the synthetic
//! set, whose generating factors are known — which level's latents carry which factor.
//!
//! ```text
//! OUT/summary.json      ImageHoloReport: radii per level, inpainting MSE/PSNR per method,
//!                       factor correlations per level
//! OUT/receptive.png     one latent per level (finest first): E|∂x/∂z_i| over the picture
//! OUT/mixing.png        per row a pair A, B: levels ≥ h from A, < h from B, h = 0 … depth+1
//! OUT/inpainting.png    rows: original, mean-filled, resampled (all latents), resampled
//!                       (cone), optimised (cone)
//! OUT/factors.csv       factor, level, latents, mean |ρ| ± σ, max |ρ| (synthetic set)
//! ```
//!
//! Inpainting is scored on the masked pixels only, in pixel units `x ∈ [0, 1]` against the
//! original image (`x = (v + ½)/256`): `MSE` per image, its mean ± standard error over the
//! images, and `PSNR = 10 log₁₀(1/MSE)` of the mean. Baselines: the training set's mean at
//! each masked pixel (mean-fill), and resampling every latent (an unconditional sample with
//! the observed pixels kept).

use crate::dir::{RunDir, write_atomic, write_json};
use burn::tensor::{Device, Tensor, TensorData};
use nrg_core::{Estimate, LatentModel, NrgError, Result};
use nrg_flow::image::{flow_batch, levels_of};
use nrg_holo::BulkGeometry;
use nrg_holo::complete::{Completion, LatentSet, complete, free_latents, masked_mse};
use nrg_holo::factors::{FactorReport, SiteFactor, level_factor_correlations};
use nrg_holo::receptive::{LevelRadius, receptive_fields};
use nrg_holo::repair::mix;
use nrg_images::ImageSet;
use nrg_images::grid::{GridOptions, write_grid};
use nrg_images::likelihood::LogitTransform;
use nrg_images::synthetic::{GRID, SIDE, SyntheticFactors};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What to compute.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageHoloRequest {
    /// Held-out images to inpaint (and to draw mixing pairs from).
    pub images: usize,
    /// Images whose latents give the receptive fields.
    pub receptive_images: usize,
    /// Side of the masked square (centred).
    pub mask: usize,
    /// Adam steps of the optimised completion.
    pub steps: usize,
    /// Its step size.
    pub lr: f64,
    /// Prior temperature of the resampled completions.
    pub temperature: f64,
    /// Held-out images for the factor correlations (synthetic set).
    pub factor_images: usize,
    /// Seed of the dequantisation noise and the resampling.
    pub seed: u64,
}

impl Default for ImageHoloRequest {
    fn default() -> Self {
        Self {
            images: 32,
            receptive_images: 4,
            mask: 8,
            steps: 150,
            lr: 0.05,
            temperature: 1.0,
            factor_images: 1000,
            seed: 1,
        }
    }
}

/// The score of one inpainting method.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InpaintScore {
    /// The method.
    pub method: String,
    /// Latents it changes (`None` for mean-fill).
    pub latents_changed: Option<usize>,
    /// Mean squared error on the masked pixels, `x ∈ [0, 1]`, mean ± standard error over the
    /// images.
    pub mse: Estimate,
    /// `10 log₁₀(1/MSE)` of the mean MSE, dB.
    pub psnr_db: f64,
}

/// What `summary.json` records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageHoloReport {
    /// The run.
    pub run: String,
    /// RMS receptive-field radius per level (pixels).
    pub radii: Vec<LevelRadius>,
    /// Largest `|∂x/∂z|` outside a latent's structural cone (0 for block layers).
    pub outside_cone_max: Option<f64>,
    /// Images inpainted.
    pub inpainted_images: usize,
    /// Masked pixels per image (a centred square).
    pub masked_pixels: usize,
    /// Latents in all.
    pub latents: usize,
    /// One score per method.
    pub inpainting: Vec<InpaintScore>,
    /// Factor correlations per level (synthetic set).
    pub factors: Option<FactorReport>,
    /// Seconds in all.
    pub seconds: f64,
}

fn host(t: Tensor<4>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

/// The held-out images `range` in flow space (one dequantisation draw each).
fn flow_space(set: &ImageSet, n: usize, t: &LogitTransform, seed: u64) -> Vec<f32> {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let idx: Vec<usize> = (0..n).collect();
    flow_batch(set, &idx, t, false, &mut rng).y
}

/// Levels → an image set of `shape`.
fn as_set(levels: Vec<u8>, n: usize, c: usize, l: usize) -> Result<ImageSet> {
    ImageSet::new(levels, [n, c, l, l])
}

/// Factors of the synthetic set as each latent site sees them: the image-wide intensity,
/// and per item (the grid cell holding the latent's block centre) `cos 2θ`, `sin 2θ`
/// (θ ∈ [0, π) is an ellipse's orientation) and the size.
fn site_factors(geometry: &BulkGeometry, f: &SyntheticFactors, n: usize) -> Vec<SiteFactor> {
    let v = geometry.len();
    let cell = (SIDE / GRID) as f64;
    let item: Vec<usize> = geometry
        .points
        .iter()
        .map(|p| {
            let (r, c) = ((p.x / cell).floor() as usize, (p.y / cell).floor() as usize);
            r.min(GRID - 1) * GRID + c.min(GRID - 1)
        })
        .collect();
    let items = GRID * GRID;
    let per_item = |name: &str, g: &dyn Fn(f64) -> f64, values: &[f32]| SiteFactor {
        name: name.into(),
        values: (0..n)
            .flat_map(|k| (0..v).map(move |i| (k, i)))
            .map(|(k, i)| g(values[k * items + item[i]] as f64))
            .collect(),
    };
    vec![
        SiteFactor {
            name: "intensity".into(),
            values: (0..n)
                .flat_map(|k| std::iter::repeat_n(f.intensity[k] as f64, v))
                .collect(),
        },
        per_item("cos 2θ", &|a| (2.0 * a).cos(), &f.angle),
        per_item("sin 2θ", &|a| (2.0 * a).sin(), &f.angle),
        per_item("size", &|s| s, &f.size),
    ]
}

/// Runs the image tools on `run` (an image run) on the autodiff `device`, writing into
/// `out` (module docs).
pub fn image_holo(
    run: &RunDir,
    request: &ImageHoloRequest,
    device: &Device,
    out: &Path,
) -> Result<ImageHoloReport> {
    let t0 = std::time::Instant::now();
    let r = request;
    if r.images < 2 || r.receptive_images == 0 || r.mask == 0 || r.factor_images < 3 {
        return Err(NrgError::param(
            "images",
            "need ≥ 2 images, ≥ 1 receptive image, a mask ≥ 1 pixel and ≥ 3 factor images",
        ));
    }
    let (config, model) = run.load_image_model(device)?;
    let geometry = BulkGeometry::of_model(&model)?;
    let data = config.data.load()?;
    let t = config.data.transform();
    let [_, c, l, _] = data.test.shape;
    if r.mask >= l {
        return Err(NrgError::param(
            "mask",
            format!("a {0}×{0} mask does not fit in {l}×{l} images", r.mask),
        ));
    }
    let v = l * l;
    let n = r.images.min(data.test.len());
    std::fs::create_dir_all(out).map_err(|e| NrgError::Io {
        path: out.display().to_string(),
        source: e,
    })?;
    let y = flow_space(&data.test, n, &t, r.seed);
    let grid = |cols: usize, scale: usize| GridOptions { cols, scale };

    // receptive fields from the latents of held-out images
    let nr = r.receptive_images.min(n);
    let yt = Tensor::<4>::from_data(
        TensorData::new(y[..nr * c * v].to_vec(), [nr, c, l, l]),
        device,
    );
    let z_rec = host(model.rg_map(yt).0);
    let fields = receptive_fields(&model, &geometry, &z_rec, device)?;
    let maps: Vec<u8> = fields
        .maps
        .iter()
        .flat_map(|m| {
            let top = m.field.iter().cloned().fold(0.0, f64::max).max(1e-300);
            m.field
                .iter()
                .map(move |f| (255.0 * (f / top).sqrt()).round() as u8)
                .collect::<Vec<_>>()
        })
        .collect();
    write_grid(
        &out.join("receptive.png"),
        &as_set(maps, fields.maps.len(), 1, l)?,
        &grid(fields.maps.len(), 4),
    )?;

    // mixing: pairs (0, 1), (2, 3), …
    let pairs = (n / 2).min(6);
    let per = c * v;
    let yt = Tensor::<4>::from_data(
        TensorData::new(y[..2 * pairs * per].to_vec(), [2 * pairs, c, l, l]),
        device,
    );
    let z_pairs = host(model.rg_map(yt).0);
    let mut mixed = Vec::new();
    let mut columns = 0;
    for p in 0..pairs {
        let a = &z_pairs[2 * p * per..(2 * p + 1) * per];
        let b = &z_pairs[(2 * p + 1) * per..(2 * p + 2) * per];
        let rows = mix(&model, &geometry, a, b, device)?;
        columns = rows.len();
        for x in rows {
            mixed.extend(levels_of(&x, &t));
        }
    }
    write_grid(
        &out.join("mixing.png"),
        &as_set(mixed, pairs * columns, c, l)?,
        &grid(columns, 3),
    )?;

    // inpainting of a centred square
    let lo = (l - r.mask) / 2;
    let mut mask = vec![false; v];
    for row in lo..lo + r.mask {
        for col in lo..lo + r.mask {
            mask[row * l + col] = true;
        }
    }
    let mut mean = vec![0.0f64; per];
    for i in 0..data.train.len() {
        for (m, &p) in mean.iter_mut().zip(data.train.image(i)) {
            *m += p as f64;
        }
    }
    let mean_y: Vec<f32> = mean
        .iter()
        .map(|m| t.forward_pixel((m / data.train.len() as f64 + 0.5) / 256.0) as f32)
        .collect();
    let mut filled = y.clone();
    for k in 0..n {
        for ch in 0..c {
            for s in (0..v).filter(|&s| mask[s]) {
                filled[k * per + ch * v + s] = mean_y[ch * v + s];
            }
        }
    }
    let pixels = |ys: &[f32]| -> Vec<f32> {
        ys.iter()
            .map(|&q| t.inverse_pixel(q as f64) as f32)
            .collect()
    };
    let original: Vec<f32> = (0..n)
        .flat_map(|k| {
            data.test
                .image(k)
                .iter()
                .map(|&p| ((p as f64 + 0.5) / 256.0) as f32)
        })
        .collect();
    let cone = free_latents(&model, &mask, LatentSet::Cone)?
        .iter()
        .filter(|&&b| b)
        .count();
    let score = |method: &str, latents: Option<usize>, ys: &[f32]| {
        let mse = masked_mse(&pixels(ys), &original, &mask, c);
        let m = mse.len() as f64;
        let mean = mse.iter().sum::<f64>() / m;
        let var = mse.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (m - 1.0).max(1.0);
        InpaintScore {
            method: method.into(),
            latents_changed: latents,
            mse: Estimate::new(mean, (var / m).sqrt()),
            psnr_db: 10.0 * (1.0 / mean).log10(),
        }
    };
    device.seed(r.seed);
    let resample = Completion::Resample {
        temperature: r.temperature,
    };
    let all = complete(&model, &filled, &mask, LatentSet::All, resample, device)?;
    let cone_resampled = complete(&model, &filled, &mask, LatentSet::Cone, resample, device)?;
    let optimise = Completion::Optimise {
        steps: r.steps,
        lr: r.lr,
    };
    let optimised = complete(&model, &filled, &mask, LatentSet::Cone, optimise, device)?;
    let inpainting = vec![
        score("mean-fill", None, &filled),
        score("resample all latents", Some(v * c), &all),
        score("resample cone latents", Some(cone * c), &cone_resampled),
        score("optimise cone latents", Some(cone * c), &optimised),
    ];
    let shown = n.min(8);
    let mut panel = Vec::new();
    let original_levels: Vec<u8> = (0..shown)
        .flat_map(|k| data.test.image(k).to_vec())
        .collect();
    panel.extend(original_levels);
    for ys in [&filled, &all, &cone_resampled, &optimised] {
        panel.extend(levels_of(&ys[..shown * per], &t));
    }
    write_grid(
        &out.join("inpainting.png"),
        &as_set(panel, 5 * shown, c, l)?,
        &grid(shown, 3),
    )?;

    // which level carries which factor (synthetic set)
    let factors = match &data.test_factors {
        Some(f) => {
            let nf = r.factor_images.min(data.test.len());
            let yf = flow_space(&data.test, nf, &t, r.seed.wrapping_add(1));
            let mut z = Vec::with_capacity(yf.len());
            for chunk in yf.chunks(256 * per) {
                let b = chunk.len() / per;
                let yt =
                    Tensor::<4>::from_data(TensorData::new(chunk.to_vec(), [b, c, l, l]), device);
                z.extend(host(model.rg_map(yt).0.detach()));
            }
            let report =
                level_factor_correlations(&geometry, &z, c, &site_factors(&geometry, f, nf))?;
            let mut csv =
                String::from("factor,level,latents,mean_abs_corr,error,max_abs_corr,null\n");
            for e in &report.levels {
                csv.push_str(&format!(
                    "{},{},{},{},{},{},{}\n",
                    e.factor,
                    e.level,
                    e.latents,
                    e.mean_abs_corr.value,
                    e.mean_abs_corr.error,
                    e.max_abs_corr,
                    report.null
                ));
            }
            write_atomic(&out.join("factors.csv"), csv.as_bytes())?;
            Some(report)
        }
        None => None,
    };
    let report = ImageHoloReport {
        run: run.path().display().to_string(),
        radii: fields.levels,
        outside_cone_max: fields.outside_cone_max,
        inpainted_images: n,
        masked_pixels: r.mask * r.mask,
        latents: v * c,
        inpainting,
        factors,
        seconds: t0.elapsed().as_secs_f64(),
    };
    write_json(&out.join("summary.json"), &report)?;
    Ok(report)
}
