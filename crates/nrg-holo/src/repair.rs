//! Multi-scale mixing and error correction (inpainting) in the bulk.
//!
//! **Mixing** ([`mix`]): the latents of levels `≥ h` from configuration `A` and those below
//! `h` from `B`, decoded: the large scales of `A` with the small scales of `B`, for every
//! `h = 0 … depth + 1` (`h = 0` is `A`, `h = depth + 1` is `B`).
//!
//! **Error correction** ([`inpaint`]): for a corrupted region `R` of the boundary, the latents
//! whose structural causal cone meets `R` ([`cone_latents`]) are resampled from their exact
//! conditional distribution `∝ e^{−S_eff(z)}` with all other latents fixed — local Metropolis
//! moves `z_k → z_k + δξ` of one such latent at a time, `δ` adapted during a burn-in —
//! and decoded. A site is touched `O(log L)` times over the levels, so the number of latents
//! resampled for a fixed region grows like `log L`, against `L²` for resampling everything.
//! The resampled latents also reach sites outside `R` (their cones extend beyond it), so the
//! repaired configuration samples `p(x | z outside the cones)`, which is close to, but not the
//! same as, `p(x_R | x outside R)`: the comparison with a boundary chain conditioned on the
//! sites outside `R` ([`conditional_boundary_chain`]) measures the difference.

use crate::geometry::BulkGeometry;
use burn::tensor::{Device, Tensor, TensorData};
use nrg_core::action::HostAction;
use nrg_core::bulk::{Configurations, Gradient, causal_cones, evaluate_bulk};
use nrg_core::{Action, Estimate, LatentModel, NrgError, Result};
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

type Rng = rand_xoshiro::Xoshiro256PlusPlus;

fn host_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

/// Decodes the mixtures of two latent configurations `a`, `b` (`[C, V]` each): for every
/// `h = 0 … depth + 1`, levels `≥ h` from `a` and `< h` from `b`. Returns one decoded
/// configuration `[C, V]` per `h`.
pub fn mix(
    model: &dyn LatentModel,
    geometry: &BulkGeometry,
    a: &[f32],
    b: &[f32],
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let [c, r, w] = model.latent_shape();
    let v = r * w;
    if a.len() != c * v || b.len() != c * v || geometry.len() != v {
        return Err(NrgError::InvalidData(
            "mixing: configurations do not fit the model".into(),
        ));
    }
    let hs = geometry.depth + 2;
    let mut z = Vec::with_capacity(hs * c * v);
    for h in 0..hs {
        for ch in 0..c {
            for s in 0..v {
                let src = if geometry.sites[s].level >= h { a } else { b };
                z.push(src[ch * v + s]);
            }
        }
    }
    let zt = Tensor::<4>::from_data(TensorData::new(z, [hs, c, r, w]), device);
    let (x, _) = model.generate_with_log_det(zt);
    let x = host_f32(x);
    Ok(x.chunks(c * v).map(|s| s.to_vec()).collect())
}

/// The latent sites whose structural cone meets `region` (boundary sites); `None` when the
/// map has a global layer (then every latent does).
pub fn cone_latents(model: &dyn LatentModel, region: &[usize]) -> Result<Option<Vec<usize>>> {
    let layout = model
        .bulk_layout()
        .ok_or_else(|| NrgError::param("flow", "inpainting needs a hierarchical flow"))?;
    Ok(causal_cones(layout.as_ref()).map(|cones| {
        cones
            .iter()
            .enumerate()
            .filter(|(_, cone)| region.iter().any(|&t| cone[t]))
            .map(|(i, _)| i)
            .collect()
    }))
}

/// How to resample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InpaintSettings {
    /// Burn-in updates (the move width adapts during them).
    pub burn_in: usize,
    /// Measured updates.
    pub updates: usize,
    /// Keep one decoded configuration every this many updates.
    pub keep_every: usize,
    /// Initial move width `δ`.
    pub delta: f64,
    /// Seed.
    pub seed: u64,
}

/// The result of an inpainting chain.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Inpainting {
    /// The latent sites resampled (their cones meet the region).
    pub latents: Vec<usize>,
    /// All latent sites, for comparison.
    pub total_latents: usize,
    /// Acceptance of the measured updates.
    pub acceptance: f64,
    /// Decoded configurations `[C, V]`, one every `keep_every` updates.
    pub configurations: Vec<Vec<f32>>,
}

/// Resamples the latents in the cone of `region` of the configuration `x` (`[C, V]`) by local
/// Metropolis on `S_eff` with every other latent fixed (module docs), on `device` (no
/// autodiff needed).
pub fn inpaint(
    model: &dyn LatentModel,
    action: &dyn Action,
    x: &[f32],
    region: &[usize],
    settings: &InpaintSettings,
    device: &Device,
) -> Result<Inpainting> {
    let [c, r, w] = model.latent_shape();
    let v = r * w;
    if x.len() != c * v || region.is_empty() || region.iter().any(|&t| t >= v) {
        return Err(NrgError::InvalidData(
            "inpainting: the configuration or the region does not fit the lattice".into(),
        ));
    }
    if settings.updates == 0
        || settings.keep_every == 0
        || settings.delta.is_nan()
        || settings.delta <= 0.0
    {
        return Err(NrgError::param(
            "inpaint",
            "need updates ≥ 1, keep_every ≥ 1 and δ > 0",
        ));
    }
    let sites = cone_latents(model, region)?.unwrap_or_else(|| (0..v).collect());
    let movable: Vec<usize> = (0..c)
        .flat_map(|ch| sites.iter().map(move |&s| ch * v + s))
        .collect();
    let xt = Tensor::<4>::from_data(TensorData::new(x.to_vec(), [1, c, r, w]), device);
    let (zt, _) = model.rg_map(xt);
    let mut z: Vec<f64> = host_f32(zt).iter().map(|v| *v as f64).collect();
    let shape = [1, c, r, w];
    let need = (Gradient::Skip, Configurations::Keep);
    let mut cur = evaluate_bulk(model, action, &z, shape, need, device);
    let mut rng = Rng::seed_from_u64(settings.seed);
    let mut delta = settings.delta;
    let (mut accepted, mut tried, mut window_acc) = (0usize, 0usize, 0usize);
    let mut kept = Vec::new();
    for t in 0..settings.burn_in + settings.updates {
        let k = movable[rng.random_range(0..movable.len())];
        let old = z[k];
        z[k] += delta * rng.sample::<f64, _>(StandardNormal);
        let prop = evaluate_bulk(model, action, &z, shape, need, device);
        let du = prop.effective_action[0] - cur.effective_action[0];
        let accept = du.is_finite() && rng.random::<f64>().ln() < -du;
        if accept {
            cur = prop;
        } else {
            z[k] = old;
        }
        if t < settings.burn_in {
            window_acc += usize::from(accept);
            if (t + 1).is_multiple_of(20) {
                // towards acceptance ½, within a factor of e per window
                delta *= (window_acc as f64 / 20.0 - 0.5).clamp(-1.0, 1.0).exp();
                window_acc = 0;
            }
        } else {
            accepted += usize::from(accept);
            tried += 1;
            if tried.is_multiple_of(settings.keep_every) {
                let xs = cur
                    .configurations
                    .as_ref()
                    .map(|x| x.iter().map(|v| *v as f32).collect());
                kept.push(xs.unwrap_or_default());
            }
        }
    }
    Ok(Inpainting {
        latents: sites,
        total_latents: v,
        acceptance: accepted as f64 / tried.max(1) as f64,
        configurations: kept,
    })
}

/// `⟨φ²⟩` over the region's sites (all components) of a set of configurations `[C, V]`, with
/// the naive standard error over the configurations.
pub fn region_phi2(
    configs: &[Vec<f32>],
    region: &[usize],
    channels: usize,
    sites: usize,
) -> Estimate {
    let per: Vec<f64> = configs
        .iter()
        .map(|x| {
            let s: f64 = region
                .iter()
                .flat_map(|&t| (0..channels).map(move |c| (c, t)))
                .map(|(c, t)| (x[c * sites + t] as f64).powi(2))
                .sum();
            s / region.len() as f64
        })
        .collect();
    let n = per.len().max(1) as f64;
    let mean = per.iter().sum::<f64>() / n;
    let var = per.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Estimate::new(mean, (var / n).sqrt())
}

/// Local Metropolis on the boundary action with only the region's sites free (the exact
/// conditional `p(x_R | x outside R)`), from `x`: returns one configuration every
/// `keep_every` sweeps of the region after `burn_in` sweeps. Moves `x_t → x_t + δξ`
/// (all components of a site at once), `δ` adapted during the burn-in.
pub fn conditional_boundary_chain<A: HostAction>(
    action: &A,
    x: &[f32],
    region: &[usize],
    settings: &InpaintSettings,
) -> Result<(Vec<Vec<f32>>, f64)> {
    let space = action.space();
    let (c, v) = (space.channels, space.lattice.volume());
    if x.len() != c * v || region.iter().any(|&t| t >= v) || region.is_empty() {
        return Err(NrgError::InvalidData(
            "conditional chain: the configuration or region does not fit".into(),
        ));
    }
    let mut field: Vec<f64> = x.iter().map(|v| *v as f64).collect();
    let mut s_cur = action.action_host(&field);
    let mut rng = Rng::seed_from_u64(settings.seed);
    let mut delta = settings.delta;
    let (mut accepted, mut tried) = (0usize, 0usize);
    let mut kept = Vec::new();
    for sweep in 0..settings.burn_in + settings.updates {
        let mut acc_sweep = 0;
        for &t in region {
            let old: Vec<f64> = (0..c).map(|ch| field[ch * v + t]).collect();
            for ch in 0..c {
                field[ch * v + t] += delta * rng.sample::<f64, _>(StandardNormal);
            }
            let s_new = action.action_host(&field);
            if rng.random::<f64>().ln() < s_cur - s_new {
                s_cur = s_new;
                acc_sweep += 1;
            } else {
                for ch in 0..c {
                    field[ch * v + t] = old[ch];
                }
            }
        }
        let rate = acc_sweep as f64 / region.len() as f64;
        if sweep < settings.burn_in {
            delta *= (rate - 0.5).clamp(-1.0, 1.0).exp();
        } else {
            accepted += acc_sweep;
            tried += region.len();
            if (sweep - settings.burn_in + 1).is_multiple_of(settings.keep_every) {
                kept.push(field.iter().map(|v| *v as f32).collect());
            }
        }
    }
    Ok((kept, accepted as f64 / tried.max(1) as f64))
}
