//! Completion of a masked region through the bulk, for models known only by their density
//! (images: RG-Flow, arXiv:2010.00029, section 4.3), where there is no action to resample
//! from.
//!
//! The observed configuration `y` has its masked sites `R` filled with a first guess (e.g.
//! the training set's mean there). With `z⁰ = R(y)`, the latents allowed to change are
//! those whose structural causal cone meets `R` ([`crate::repair::cone_latents`]) or all of
//! them ([`LatentSet`]); every other latent keeps its value. A candidate `z` decodes to
//! `G(z)`, and the completion keeps the observed sites:
//!
//! ```text
//! x̃(z) = (1 − M) ⊙ y + M ⊙ G(z)          M = 1 on the masked sites
//! ```
//!
//! - [`Completion::Optimise`]: maximise the model's likelihood of the completed picture,
//!   `ln q(x̃(z)) = ln p_Z(R(x̃)) + ln|det ∂R/∂x̃|`, over the free latents by Adam on
//!   autodiff gradients (the most likely completion the free latents can reach); an image
//!   whose gradient turns non-finite goes back to its previous iterate with half the step;
//! - [`Completion::Resample`]: draw the free latents afresh from the prior at temperature
//!   `T` (the prior is factorised, so this is their exact conditional given the fixed
//!   latents), decode, and keep the observed sites.
//!
//! Shapes: configurations `[N, C, V]` row-major (`V = rows·cols`), the mask `[V]` over sites
//! (all channels of a masked site are masked).

use crate::repair::cone_latents;
use burn::tensor::{Device, Tensor, TensorData};
use nrg_core::{LatentModel, NrgError, Result};
use serde::{Deserialize, Serialize};

/// Which latents a completion may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatentSet {
    /// Those whose causal cone meets the masked region.
    Cone,
    /// Every latent.
    All,
}

/// How the free latents are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Completion {
    /// Maximise `ln q(x̃)` by `steps` Adam steps of size `lr`.
    Optimise {
        /// Adam steps.
        steps: usize,
        /// Step size.
        lr: f64,
    },
    /// Draw them from the prior at `temperature`.
    Resample {
        /// Prior temperature (`1`: the prior itself).
        temperature: f64,
    },
}

fn host(t: Tensor<4>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

/// The free latents of `set` for the masked sites, as a `[1, 1, rows, cols]` 0/1 mask.
pub fn free_latents(model: &dyn LatentModel, mask: &[bool], set: LatentSet) -> Result<Vec<bool>> {
    let region: Vec<usize> = (0..mask.len()).filter(|&t| mask[t]).collect();
    Ok(match set {
        LatentSet::All => vec![true; mask.len()],
        LatentSet::Cone => match cone_latents(model, &region)? {
            Some(sites) => {
                let mut free = vec![false; mask.len()];
                for s in sites {
                    free[s] = true;
                }
                free
            }
            None => vec![true; mask.len()],
        },
    })
}

/// Completes the masked sites of `y` (`[N, C, V]`, masked sites holding a first guess) as
/// the module docs say, on `device` (autodiff for [`Completion::Optimise`]). Returns the
/// completed configurations `[N, C, V]`; the observed sites are `y`'s exactly.
///
/// Errors: shapes that do not fit the model, an empty mask, bad settings, a model without a
/// bulk, no gradient (a device without autodiff).
pub fn complete(
    model: &dyn LatentModel,
    y: &[f32],
    mask: &[bool],
    set: LatentSet,
    completion: Completion,
    device: &Device,
) -> Result<Vec<f32>> {
    let [c, r, w] = model.latent_shape();
    let v = r * w;
    let n = y.len() / (c * v).max(1);
    if n == 0 || y.len() != n * c * v || mask.len() != v || !mask.contains(&true) {
        return Err(NrgError::InvalidData(
            "completion: the configurations or the mask do not fit the model".into(),
        ));
    }
    let free = free_latents(model, mask, set)?;
    let shape = [n, c, r, w];
    let site_mask = |m: &[bool]| {
        let per: Vec<f32> = m.iter().map(|&b| f32::from(u8::from(b))).collect();
        Tensor::<4>::from_data(TensorData::new(per, [1, 1, r, w]), device)
    };
    let m_pix = site_mask(mask);
    let m_free = site_mask(&free);
    let y_t = Tensor::<4>::from_data(TensorData::new(y.to_vec(), shape), device);
    let paste = |x: Tensor<4>| y_t.clone() * (m_pix.clone().neg() + 1.0) + x * m_pix.clone();
    let (z0, _) = model.rg_map(y_t.clone());
    let z0 = z0.detach();
    match completion {
        Completion::Resample { temperature } => {
            if !(temperature.is_finite() && temperature > 0.0) {
                return Err(NrgError::param("temperature", "must be positive"));
            }
            let fresh = model.sample_latent(n, device).mul_scalar(temperature);
            let z = z0.clone() * (m_free.clone().neg() + 1.0) + fresh * m_free;
            let (x, _) = model.generate_with_log_det(z);
            Ok(host(paste(x)))
        }
        Completion::Optimise { steps, lr } => {
            if steps == 0 || !(lr.is_finite() && lr > 0.0) {
                return Err(NrgError::param("optimise", "need steps ≥ 1 and lr > 0"));
            }
            // Adam on δ, z = z⁰ + M_free ⊙ δ (Kingma & Ba, arXiv:1412.6980, Algorithm 1)
            let len = n * c * v;
            let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
            let mut delta = vec![0.0f64; len];
            let (mut m1, mut m2) = (vec![0.0f64; len], vec![0.0f64; len]);
            let mut previous = delta.clone();
            let mut rate = vec![lr; n];
            let to_t = |d: &[f64]| {
                let f: Vec<f32> = d.iter().map(|&x| x as f32).collect();
                Tensor::<4>::from_data(TensorData::new(f, shape), device)
            };
            for t in 1..=steps {
                let d = to_t(&delta).require_grad();
                let z = z0.clone() + d.clone() * m_free.clone();
                let (x, _) = model.generate_with_log_det(z);
                let (zr, ld) = model.rg_map(paste(x));
                let lq = model.prior_log_prob(zr) + ld;
                let loss = lq.sum().neg();
                let grads = loss.backward();
                let g: Vec<f32> = d.grad(&grads).map(host).ok_or_else(|| {
                    NrgError::InvalidData("completion: no gradient (autodiff device?)".into())
                })?;
                let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
                let per = c * v;
                for img in 0..n {
                    let range = img * per..(img + 1) * per;
                    if g[range.clone()].iter().any(|x| !x.is_finite()) {
                        // this image's last step went too far: back to its previous
                        // iterate, with half the step size (images are independent)
                        delta[range.clone()].copy_from_slice(&previous[range]);
                        rate[img] *= 0.5;
                        continue;
                    }
                    previous[range.clone()].copy_from_slice(&delta[range.clone()]);
                    for k in range {
                        let gk = g[k] as f64;
                        m1[k] = b1 * m1[k] + (1.0 - b1) * gk;
                        m2[k] = b2 * m2[k] + (1.0 - b2) * gk * gk;
                        delta[k] -= rate[img] * (m1[k] / c1) / ((m2[k] / c2).sqrt() + eps);
                    }
                }
            }
            if rate.iter().any(|&r| r < lr * 1e-6) {
                return Err(NrgError::InvalidData(
                    "completion: the likelihood stayed non-finite; lower lr".into(),
                ));
            }
            let z = z0 + to_t(&delta) * m_free;
            let (x, _) = model.generate_with_log_det(z);
            Ok(host(paste(x)))
        }
    }
}

/// Mean squared error over the masked sites (all channels) of each configuration, `[N]`.
pub fn masked_mse(a: &[f32], b: &[f32], mask: &[bool], channels: usize) -> Vec<f64> {
    let v = mask.len();
    let per = channels * v;
    let count = (mask.iter().filter(|&&m| m).count() * channels).max(1) as f64;
    a.chunks(per)
        .zip(b.chunks(per))
        .map(|(x, y)| {
            (0..per)
                .filter(|k| mask[k % v])
                .map(|k| (x[k] as f64 - y[k] as f64).powi(2))
                .sum::<f64>()
                / count
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_mse_counts_only_masked_sites() {
        let a = [1.0f32, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0];
        let b = [0.0f32; 8];
        let mask = [false, true, false, true];
        let m = masked_mse(&a, &b, &mask, 1);
        assert_eq!(m, vec![(4.0 + 16.0) / 2.0, 0.0]);
    }
}
