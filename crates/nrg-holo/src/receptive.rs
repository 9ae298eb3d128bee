//! Receptive fields of the latents: how the boundary responds to each bulk variable.
//!
//! For bulk samples `z⁽ⁿ⁾` the Jacobian `J⁽ⁿ⁾_{(c,t),(c',i)} = ∂x_{c,t}/∂z_{c',i}` of
//! `x = G(z)` is computed by reverse-mode autodiff, one forward and backward pass per
//! boundary component `(c, t)` (the samples are independent, so one pass gives the row for
//! all of them): `C·V` passes of a batch of `N`. The
//! receptive field of the latent at site `i` is `F_i(t) = Σ_{c,c'} E|J_{(c,t),(c',i)}|`, and
//! its RMS radius
//!
//! ```text
//! r_i = √( Σ_t F_i(t) |t − p_i|² / Σ_t F_i(t) )
//! ```
//!
//! about the latent's block centre `p_i` (periodic separations). Per level: the mean of the
//! radii of that level's latents, with the error from the spread of the per-sample level
//! averages over the `N` samples (`σ/√N`). A hierarchical flow built of block layers gives
//! fields that vanish *exactly* outside the latent's structural causal cone
//! ([`nrg_core::bulk::causal_cones`]); the largest `|J|` found outside is reported as a
//! check. A global (circulant) layer makes every field global: then there is no cone, and
//! the report says so.

use crate::geometry::BulkGeometry;
use burn::tensor::{Device, Tensor, TensorData};
use nrg_core::bulk::causal_cones;
use nrg_core::{Estimate, LatentModel, NrgError, Result};
use serde::{Deserialize, Serialize};

/// The receptive-field radius of one RG level.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LevelRadius {
    /// The level.
    pub level: usize,
    /// Latent sites at that level.
    pub latents: usize,
    /// Mean RMS radius (lattice units), with its error.
    pub radius: Estimate,
}

/// A latent's mean receptive field over the boundary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FieldMap {
    /// The latent's site.
    pub site: usize,
    /// Its level.
    pub level: usize,
    /// `F_i(t)` for every boundary site `t` (row-major).
    pub field: Vec<f64>,
    /// Its structural cone (`None` with a global layer).
    pub cone: Option<Vec<bool>>,
}

/// Receptive fields of a model's latents.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReceptiveFields {
    /// Samples used.
    pub samples: usize,
    /// Radius per level, finest first.
    pub levels: Vec<LevelRadius>,
    /// One representative latent per level (the one nearest the lattice centre).
    pub maps: Vec<FieldMap>,
    /// Whether `G` has a global layer (every field then covers the whole boundary).
    pub global: bool,
    /// The largest `|∂x/∂z_i|` outside latent `i`'s structural cone over all latents and
    /// samples (0 exactly for a flow of block layers; `None` with a global layer).
    pub outside_cone_max: Option<f64>,
}

/// Receptive fields from the latent samples `z` (`[N, C, V]` as `f32`, e.g. drawn from the
/// bulk distribution) on the autodiff `device`.
pub fn receptive_fields(
    model: &dyn LatentModel,
    geometry: &BulkGeometry,
    z: &[f32],
    device: &Device,
) -> Result<ReceptiveFields> {
    let [c, r, w] = model.latent_shape();
    let v = r * w;
    let per = c * v;
    let n = z.len() / per.max(1);
    if n == 0 || z.len() != n * per || v != geometry.len() {
        return Err(NrgError::InvalidData(
            "receptive fields: latent samples do not fit the model".into(),
        ));
    }
    let layout = model
        .bulk_layout()
        .ok_or_else(|| NrgError::param("flow", "receptive fields need a hierarchical flow"))?;
    let cones = causal_cones(layout.as_ref());
    let latents = || Tensor::<4>::from_data(TensorData::new(z.to_vec(), [n, c, r, w]), device);
    // representatives: per level, the latent whose block centre is nearest the centre
    let depth = geometry.depth;
    let mid = (geometry.size as f64 - 1.0) / 2.0;
    let reps: Vec<usize> = (0..=depth)
        .filter_map(|level| {
            (0..v)
                .filter(|&s| geometry.sites[s].level == level)
                .min_by(|&a, &b| {
                    let d = |s: usize| {
                        let p = geometry.points[s];
                        (p.x - mid).powi(2) + (p.y - mid).powi(2)
                    };
                    d(a).total_cmp(&d(b)).then(a.cmp(&b))
                })
        })
        .collect();
    let mut maps: Vec<Vec<f64>> = vec![vec![0.0; v]; reps.len()];
    let mut num = vec![0.0; n * v];
    let mut den = vec![0.0; n * v];
    let mut outside: f64 = 0.0;
    let l = geometry.size as f64;
    let dist2 = |t: usize, i: usize| {
        let p = geometry.points[i];
        let (ti, tj) = ((t / w) as f64, (t % w) as f64);
        let per = |d: f64| {
            let d = d.rem_euclid(l);
            d.min(l - d)
        };
        per(ti - p.x).powi(2) + per(tj - p.y).powi(2)
    };
    for ct in 0..per {
        let (cc, t) = (ct / v, ct % v);
        // burn's autodiff keeps no graph after a backward pass: one forward per row
        let zt = latents().require_grad();
        let (x, _) = model.generate_with_log_det(zt.clone());
        let picked = x
            .slice(burn::tensor::s![
                ..,
                cc..cc + 1,
                t / w..t / w + 1,
                t % w..t % w + 1
            ])
            .sum();
        let grads = picked.backward();
        let g: Vec<f64> = zt
            .grad(&grads)
            .map(|g| {
                g.into_data()
                    .convert::<f64>()
                    .try_to_vec::<f64>()
                    .unwrap_or_default()
            })
            .ok_or_else(|| NrgError::InvalidData("no gradient: is the device autodiff?".into()))?;
        for s in 0..n {
            for c2 in 0..c {
                for i in 0..v {
                    let a = g[s * per + c2 * v + i].abs();
                    if a == 0.0 {
                        continue;
                    }
                    num[s * v + i] += a * dist2(t, i);
                    den[s * v + i] += a;
                    if let Some(cones) = &cones
                        && !cones[i][t]
                    {
                        outside = outside.max(a);
                    }
                }
            }
        }
        for (m, &i) in maps.iter_mut().zip(&reps) {
            for s in 0..n {
                for c2 in 0..c {
                    m[t] += g[s * per + c2 * v + i].abs() / n as f64;
                }
            }
        }
    }
    let mut levels = Vec::new();
    for level in 0..=depth {
        let sites: Vec<usize> = (0..v)
            .filter(|&s| geometry.sites[s].level == level)
            .collect();
        if sites.is_empty() {
            continue;
        }
        let per_sample: Vec<f64> = (0..n)
            .map(|s| {
                sites
                    .iter()
                    .map(|&i| {
                        let d = den[s * v + i];
                        if d > 0.0 {
                            (num[s * v + i] / d).sqrt()
                        } else {
                            0.0
                        }
                    })
                    .sum::<f64>()
                    / sites.len() as f64
            })
            .collect();
        let mean = per_sample.iter().sum::<f64>() / n as f64;
        let error = if n > 1 {
            (per_sample.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / ((n - 1) * n) as f64)
                .sqrt()
        } else {
            f64::NAN
        };
        levels.push(LevelRadius {
            level,
            latents: sites.len(),
            radius: Estimate::new(mean, error),
        });
    }
    let maps = reps
        .iter()
        .zip(maps)
        .map(|(&i, field)| FieldMap {
            site: i,
            level: geometry.sites[i].level,
            field,
            cone: cones.as_ref().map(|c| c[i].clone()),
        })
        .collect();
    Ok(ReceptiveFields {
        samples: n,
        levels,
        maps,
        global: cones.is_none(),
        outside_cone_max: cones.as_ref().map(|_| outside),
    })
}
