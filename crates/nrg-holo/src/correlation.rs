//! Bulk correlations under the exact bulk distribution, with error bars.
//!
//! For latent samples `z⁽ⁿ⁾` with weights `wₙ` (1 for exact samples; NIS weights for flow
//! samples) the second moments of all latent components,
//!
//! ```text
//! K_{(c,i),(c',j)} = Σₙ wₙ z⁽ⁿ⁾_{c,i} z⁽ⁿ⁾_{c',j} / Σₙ wₙ        [CV × CV]
//! C_ij             = Σ_c K_{(c,i),(c,j)} = ⟨z_i · z_j⟩            [V × V]
//! ```
//!
//! (`C` summed over field components, so invariant under O(n)/U(1) rotations of the
//! latents), or their connected forms `⟨z_a z_b⟩ − ⟨z_a⟩⟨z_b⟩` ([`Moments`]). The two agree
//! for a bulk whose RG map keeps the field's symmetry (`⟨z⟩ = 0`); a map that is not odd
//! (affine couplings are not, even when the model's density is symmetrised) gives latents a
//! mean, and the decay of correlations with distance is then read from the connected ones. Errors from a blocked jackknife over `B` contiguous blocks: with `Tᵦ`, `Wᵦ` the
//! sums of block `b` and `T`, `W` the totals, `r_b = (T − Tᵦ)/(W − Wᵦ)` and
//! `σ² = (B−1)/B Σ_b (r_b − r̄)²` — for unweighted samples the usual blocked jackknife of a
//! mean, for weighted ones the jackknife of the ratio estimator. Two passes over the
//! samples (totals, then the leave-one-block-out ratios), memory `O((CV)²)`.

use crate::samples::LatentSamples;
use nrg_core::{NrgError, Result};
use rayon::prelude::*;

/// A symmetric matrix of second moments with the error of every entry.
#[derive(Clone, Debug)]
pub struct MomentMatrix {
    /// Side of the matrix.
    pub dim: usize,
    /// Entries, row-major.
    pub mean: Vec<f64>,
    /// One standard deviation of each entry.
    pub error: Vec<f64>,
}

impl MomentMatrix {
    /// Entry `(a, b)`.
    pub fn at(&self, a: usize, b: usize) -> (f64, f64) {
        let k = a * self.dim + b;
        (self.mean[k], self.error[k])
    }
}

/// The second moments of a sample set: the component matrix `K` and `C = Σ_c K`.
#[derive(Clone, Debug)]
pub struct BulkMoments {
    /// Components per site `C`.
    pub channels: usize,
    /// Sites `V`.
    pub sites: usize,
    /// `K_{(c,i),(c',j)}`, indexed `c·V + i`.
    pub components: MomentMatrix,
    /// `C_ij = ⟨z_i · z_j⟩` (or its connected form).
    pub correlations: MomentMatrix,
    /// The first moments `⟨z_a⟩`, indexed `c·V + i`.
    pub means: Vec<f64>,
}

impl BulkMoments {
    /// The `2C × 2C` covariance of `(z_i, z_j)` (each `C` components), row-major.
    pub fn pair_covariance(&self, i: usize, j: usize) -> Vec<f64> {
        let c = self.channels;
        let v = self.sites;
        let index = |k: usize| if k < c { k * v + i } else { (k - c) * v + j };
        let mut out = vec![0.0; 4 * c * c];
        for a in 0..2 * c {
            for b in 0..2 * c {
                out[a * 2 * c + b] = self.components.at(index(a), index(b)).0;
            }
        }
        out
    }
}

/// Adds `w · z zᵀ` of every configuration in `range` into `acc` (`[D × D]`, `D = C·V`),
/// rows in parallel.
fn accumulate(samples: &LatentSamples, weights: &[f64], range: (usize, usize), acc: &mut [f64]) {
    let d = samples.channels * samples.sites;
    acc.par_chunks_mut(d).enumerate().for_each(|(a, row)| {
        for k in range.0..range.1 {
            let z = samples.configuration(k);
            let wa = weights[k] * z[a] as f64;
            if wa == 0.0 {
                continue;
            }
            for (r, zb) in row.iter_mut().zip(z) {
                *r += wa * *zb as f64;
            }
        }
    });
}

/// Raw second moments `⟨z_a z_b⟩`, or connected ones `⟨z_a z_b⟩ − ⟨z_a⟩⟨z_b⟩`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moments {
    /// `⟨z_a z_b⟩`.
    Raw,
    /// `⟨z_a z_b⟩ − ⟨z_a⟩⟨z_b⟩` (the covariance).
    Connected,
}

/// `(a, b) ↦ √((B−1)/B Σ (r − r̄)²)` from `Σ r` and `Σ r²` over `B` leave-one-out values.
fn jackknife_error(s1: f64, s2: f64, blocks: f64) -> f64 {
    let m = s1 / blocks;
    ((blocks - 1.0) / blocks * (s2 - blocks * m * m).max(0.0)).sqrt()
}

/// The second moments of `samples` (raw or connected) with blocked-jackknife errors over
/// `blocks` contiguous blocks (module docs): the component matrix `K` and its channel sum
/// `C`, whose leave-one-out values are summed from `K`'s so that their errors include the
/// correlation between components. For connected moments the leave-one-out means are
/// subtracted in each leave-one-out estimate, so the error includes the mean's.
pub fn bulk_moments(samples: &LatentSamples, blocks: usize, kind: Moments) -> Result<BulkMoments> {
    let ranges = samples.blocks(blocks)?;
    let weights = samples.weights();
    let (c, v) = (samples.channels, samples.sites);
    let d = c * v;
    let block_weight: Vec<f64> = ranges
        .iter()
        .map(|&(s, e)| weights[s..e].iter().sum())
        .collect();
    let total_weight: f64 = block_weight.iter().sum();
    if block_weight.iter().any(|&w| total_weight - w <= 0.0) {
        return Err(NrgError::InvalidData(
            "one block carries all the weight: too few effective samples for errors".into(),
        ));
    }
    // first moments per block
    let block_first: Vec<Vec<f64>> = ranges
        .iter()
        .map(|&(s, e)| {
            let mut f = vec![0.0; d];
            for k in s..e {
                for (fa, za) in f.iter_mut().zip(samples.configuration(k)) {
                    *fa += weights[k] * *za as f64;
                }
            }
            f
        })
        .collect();
    let first: Vec<f64> = (0..d)
        .map(|a| block_first.iter().map(|f| f[a]).sum())
        .collect();
    // pass 1: totals
    let mut total = vec![0.0; d * d];
    for &r in &ranges {
        accumulate(samples, &weights, r, &mut total);
    }
    let estimate = |sums: &[f64], f: &[f64], w: f64, a: usize, b: usize| -> f64 {
        let raw = sums[a * d + b] / w;
        match kind {
            Moments::Raw => raw,
            Moments::Connected => raw - (f[a] / w) * (f[b] / w),
        }
    };
    // pass 2: leave-one-block-out estimates of K and of C = Σ_c K
    let mut block = vec![0.0; d * d];
    let (mut s1, mut s2) = (vec![0.0; d * d], vec![0.0; d * d]);
    let (mut c1, mut c2) = (vec![0.0; v * v], vec![0.0; v * v]);
    let mut loo = vec![0.0; d * d];
    for (b_idx, (&r, &wb)) in ranges.iter().zip(&block_weight).enumerate() {
        block.iter_mut().for_each(|x| *x = 0.0);
        accumulate(samples, &weights, r, &mut block);
        let w = total_weight - wb;
        let f: Vec<f64> = first
            .iter()
            .zip(&block_first[b_idx])
            .map(|(t, x)| t - x)
            .collect();
        let rest: Vec<f64> = total.iter().zip(&block).map(|(t, x)| t - x).collect();
        loo.par_chunks_mut(d).enumerate().for_each(|(a, row)| {
            for (bb, out) in row.iter_mut().enumerate() {
                *out = estimate(&rest, &f, w, a, bb);
            }
        });
        s1.par_iter_mut()
            .zip(s2.par_iter_mut())
            .zip(loo.par_iter())
            .for_each(|((x1, x2), r)| {
                *x1 += r;
                *x2 += r * r;
            });
        for i in 0..v {
            for j in 0..v {
                let sum: f64 = (0..c).map(|ch| loo[(ch * v + i) * d + ch * v + j]).sum();
                c1[i * v + j] += sum;
                c2[i * v + j] += sum * sum;
            }
        }
    }
    let bf = blocks as f64;
    let mean: Vec<f64> = (0..d * d)
        .map(|e| estimate(&total, &first, total_weight, e / d, e % d))
        .collect();
    let error: Vec<f64> = s1
        .iter()
        .zip(&s2)
        .map(|(a, b)| jackknife_error(*a, *b, bf))
        .collect();
    let mut c_mean = vec![0.0; v * v];
    for ch in 0..c {
        for i in 0..v {
            for j in 0..v {
                c_mean[i * v + j] += mean[(ch * v + i) * d + ch * v + j];
            }
        }
    }
    let c_error = c1
        .iter()
        .zip(&c2)
        .map(|(a, b)| jackknife_error(*a, *b, bf))
        .collect();
    Ok(BulkMoments {
        channels: c,
        sites: v,
        means: first.iter().map(|f| f / total_weight).collect(),
        components: MomentMatrix {
            dim: d,
            mean,
            error,
        },
        correlations: MomentMatrix {
            dim: v,
            mean: c_mean,
            error: c_error,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With block length 1 and no weights, the jackknife error of a second moment is the
    /// naive standard error of the products (an identity), and the mean is exact.
    #[test]
    fn jackknife_of_unweighted_moments_is_the_standard_error() {
        let z: Vec<f32> = (0..40)
            .map(|k| ((k * 37 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let s = LatentSamples::new(z.clone(), [20, 1, 2], None).unwrap();
        let m = bulk_moments(&s, 20, Moments::Raw).unwrap();
        let prod: Vec<f64> = (0..20)
            .map(|n| z[2 * n] as f64 * z[2 * n + 1] as f64)
            .collect();
        let mean = prod.iter().sum::<f64>() / 20.0;
        let var = prod.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / 19.0;
        let (c, e) = m.correlations.at(0, 1);
        assert!((c - mean).abs() < 1e-12);
        assert!((e - (var / 20.0).sqrt()).abs() < 1e-12, "{e}");
        assert_eq!(m.correlations.at(1, 0).0, c);
    }

    /// Connected moments: the value is the weighted covariance, and the error the jackknife
    /// of the leave-one-block-out covariances (means re-estimated in each), computed directly.
    #[test]
    fn connected_moments_are_jackknifed_covariances() {
        let n = 40;
        let z: Vec<f32> = (0..n * 2)
            .map(|k| (((k * 7919) % 23) as f32 - 4.0) / 5.0)
            .collect();
        let w: Vec<f64> = (0..n).map(|k| 0.5 + (k % 4) as f64 * 0.25).collect();
        let s = LatentSamples::new(
            z.clone(),
            [n, 1, 2],
            Some(w.iter().map(|x| x.ln()).collect()),
        )
        .unwrap();
        let m = bulk_moments(&s, 8, Moments::Connected).unwrap();
        let ws = s.weights();
        let cov = |keep: &dyn Fn(usize) -> bool| -> f64 {
            let (mut sw, mut s0, mut s1, mut s01) = (0.0, 0.0, 0.0, 0.0);
            for k in (0..n).filter(|&k| keep(k)) {
                let (a, b) = (z[2 * k] as f64, z[2 * k + 1] as f64);
                sw += ws[k];
                s0 += ws[k] * a;
                s1 += ws[k] * b;
                s01 += ws[k] * a * b;
            }
            s01 / sw - (s0 / sw) * (s1 / sw)
        };
        let full = cov(&|_| true);
        assert!((m.correlations.at(0, 1).0 - full).abs() < 1e-12);
        let loo: Vec<f64> = (0..8).map(|b| cov(&|k| k / 5 != b)).collect();
        let lm = loo.iter().sum::<f64>() / 8.0;
        let err = (7.0 / 8.0 * loo.iter().map(|x| (x - lm).powi(2)).sum::<f64>()).sqrt();
        assert!((m.correlations.at(0, 1).1 - err).abs() < 1e-12);
        let raw = bulk_moments(&s, 8, Moments::Raw).unwrap();
        let mu = &m.means;
        assert!((raw.correlations.at(0, 1).0 - full - mu[0] * mu[1]).abs() < 1e-12);
    }

    /// Two components: C sums them, and its error equals the jackknife of the summed
    /// products computed directly.
    #[test]
    fn correlations_sum_components() {
        let n = 30;
        let z: Vec<f32> = (0..n * 2 * 3)
            .map(|k| (((k * 7919) % 23) as f32 - 11.0) / 5.0)
            .collect();
        let s = LatentSamples::new(
            z.clone(),
            [n, 2, 3],
            Some((0..n).map(|k| (k % 3) as f64 * 0.1).collect()),
        )
        .unwrap();
        let m = bulk_moments(&s, 5, Moments::Raw).unwrap();
        let w = s.weights();
        let (i, j) = (0, 2);
        let prod = |k: usize| -> f64 {
            let c = s.configuration(k);
            (0..2)
                .map(|ch| c[ch * 3 + i] as f64 * c[ch * 3 + j] as f64)
                .sum()
        };
        let wsum: f64 = w.iter().sum();
        let mean = (0..n).map(|k| w[k] * prod(k)).sum::<f64>() / wsum;
        assert!((m.correlations.at(i, j).0 - mean).abs() < 1e-12);
        let loo: Vec<f64> = (0..5)
            .map(|b| {
                let keep = |k: usize| k / 6 != b;
                let num: f64 = (0..n).filter(|&k| keep(k)).map(|k| w[k] * prod(k)).sum();
                let den: f64 = (0..n).filter(|&k| keep(k)).map(|k| w[k]).sum();
                num / den
            })
            .collect();
        let lm = loo.iter().sum::<f64>() / 5.0;
        let err = (0.8 * loo.iter().map(|x| (x - lm).powi(2)).sum::<f64>()).sqrt();
        assert!((m.correlations.at(i, j).1 - err).abs() < 1e-12);
    }
}
