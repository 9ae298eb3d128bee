//! Which RG level carries which generating factor: correlations of latents with known
//! causes (the synthetic multi-scale set of RG-Flow, arXiv:2010.00029, section 4.1).
//!
//! For a factor `f`, every latent site `i` is assigned the value `f_{n,i}` that it should see
//! in image `n` (an image-wide factor: the same value at every site; a per-item factor: the
//! value of the item whose region holds the latent's block centre). Over the `N` images,
//!
//! ```text
//! ρ_{c,i} = corr_n(z_{n,c,i}, f_{n,i})          (Pearson)
//! level score  = mean over the level's latents (c, i) of |ρ_{c,i}|,  and the largest |ρ|
//! ```
//!
//! with the error of the mean from the spread of `|ρ|` over the level's latents. For
//! independent variables `|ρ|` has mean `√(2/(πN))` (the `null` of the report), so a level
//! score well above it means that the level's latents carry the factor linearly. A factor
//! constant over the images has no correlation and is refused.

use crate::geometry::BulkGeometry;
use nrg_core::{Estimate, NrgError, Result};
use serde::{Deserialize, Serialize};

/// A generating factor as each latent site sees it.
#[derive(Clone, Debug)]
pub struct SiteFactor {
    /// Its name.
    pub name: String,
    /// `f_{n,i}`, `[N, V]` row-major.
    pub values: Vec<f64>,
}

/// The correlation of one level's latents with one factor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LevelFactor {
    /// The factor.
    pub factor: String,
    /// The RG level (0 finest).
    pub level: usize,
    /// Latents `(c, i)` of that level.
    pub latents: usize,
    /// Mean `|ρ|` over them, with its error.
    pub mean_abs_corr: Estimate,
    /// The largest `|ρ|`.
    pub max_abs_corr: f64,
}

/// The correlations of every level with every factor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FactorReport {
    /// Images.
    pub images: usize,
    /// `√(2/(πN))`: mean `|ρ|` of independent variables.
    pub null: f64,
    /// One entry per (factor, level).
    pub levels: Vec<LevelFactor>,
}

/// Pearson correlation of two series, accumulated in `f64`; `None` if either is constant.
fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    (saa > 0.0 && sbb > 0.0).then(|| sab / (saa * sbb).sqrt())
}

/// Correlates latents `z` (`[N, C, V]`) with `factors` level by level (module docs).
///
/// Errors: shapes that do not fit, fewer than 3 images, a factor constant over the images.
pub fn level_factor_correlations(
    geometry: &BulkGeometry,
    z: &[f32],
    channels: usize,
    factors: &[SiteFactor],
) -> Result<FactorReport> {
    let v = geometry.len();
    let n = z.len() / (channels * v).max(1);
    if n < 3 || z.len() != n * channels * v {
        return Err(NrgError::InvalidData(
            "factor correlations: need ≥ 3 latent configurations [N, C, V] of the model".into(),
        ));
    }
    let mut levels = Vec::new();
    for f in factors {
        if f.values.len() != n * v {
            return Err(NrgError::InvalidData(format!(
                "factor {}: {} values, expected N·V = {}",
                f.name,
                f.values.len(),
                n * v
            )));
        }
        for level in 0..=geometry.depth {
            let mut rho = Vec::new();
            for i in (0..v).filter(|&i| geometry.sites[i].level == level) {
                let fi: Vec<f64> = (0..n).map(|k| f.values[k * v + i]).collect();
                for c in 0..channels {
                    let zi: Vec<f64> = (0..n)
                        .map(|k| z[(k * channels + c) * v + i] as f64)
                        .collect();
                    match pearson(&zi, &fi) {
                        Some(r) => rho.push(r.abs()),
                        None if fi.iter().all(|x| *x == fi[0]) => {
                            return Err(NrgError::InvalidData(format!(
                                "factor {} is constant over the images at site {i}",
                                f.name
                            )));
                        }
                        None => rho.push(0.0),
                    }
                }
            }
            if rho.is_empty() {
                continue;
            }
            let m = rho.len() as f64;
            let mean = rho.iter().sum::<f64>() / m;
            let var = rho.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (m - 1.0).max(1.0);
            levels.push(LevelFactor {
                factor: f.name.clone(),
                level,
                latents: rho.len(),
                mean_abs_corr: Estimate::new(mean, (var / m).sqrt()),
                max_abs_corr: rho.iter().cloned().fold(0.0, f64::max),
            });
        }
    }
    Ok(FactorReport {
        images: n,
        null: (2.0 / (std::f64::consts::PI * n as f64)).sqrt(),
        levels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nrg_core::bulk::HierarchicalLayout;

    /// A factor planted in the top latent only is found at the top level and not below;
    /// a constant factor is refused.
    #[test]
    fn a_planted_factor_is_found_at_its_level() {
        let layout = HierarchicalLayout {
            size: 4,
            block: 2,
            depth: 2,
            repeats: 1,
        };
        let g = BulkGeometry::of(&layout);
        let top = (0..16).find(|&i| g.sites[i].level == g.depth).unwrap();
        let n = 400;
        let mut z = vec![0.0f32; n * 16];
        let mut f = vec![0.0f64; n * 16];
        let mut s: u64 = 7;
        let mut u = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        for k in 0..n {
            let fk = u();
            for i in 0..16 {
                f[k * 16 + i] = fk;
                z[k * 16 + i] = u() as f32;
            }
            z[k * 16 + top] = (fk + 0.1 * u()) as f32;
        }
        let factor = SiteFactor {
            name: "global".into(),
            values: f,
        };
        let r = level_factor_correlations(&g, &z, 1, std::slice::from_ref(&factor)).unwrap();
        let at = |l: usize| r.levels.iter().find(|e| e.level == l).unwrap();
        assert!(at(g.depth).mean_abs_corr.value > 0.9);
        assert!(at(0).mean_abs_corr.value < 4.0 * r.null);
        let constant = SiteFactor {
            name: "c".into(),
            values: vec![1.0; n * 16],
        };
        assert!(level_factor_correlations(&g, &z, 1, &[constant]).is_err());
    }
}
