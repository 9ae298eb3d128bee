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
//! latents). Errors from a blocked jackknife over `B` contiguous blocks: with `Tᵦ`, `Wᵦ` the
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
    /// `C_ij = ⟨z_i · z_j⟩`.
    pub correlations: MomentMatrix,
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

/// The second moments of `samples` with blocked-jackknife errors over `blocks` contiguous
/// blocks (module docs).
pub fn bulk_moments(samples: &LatentSamples, blocks: usize) -> Result<BulkMoments> {
    let ranges = samples.blocks(blocks)?;
    let weights = samples.weights();
    let d = samples.channels * samples.sites;
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
    // pass 1: totals
    let mut total = vec![0.0; d * d];
    for &r in &ranges {
        accumulate(samples, &weights, r, &mut total);
    }
    // pass 2: leave-one-block-out ratios
    let mut block = vec![0.0; d * d];
    let mut s1 = vec![0.0; d * d];
    let mut s2 = vec![0.0; d * d];
    for (&r, &wb) in ranges.iter().zip(&block_weight) {
        block.iter_mut().for_each(|v| *v = 0.0);
        accumulate(samples, &weights, r, &mut block);
        let norm = 1.0 / (total_weight - wb);
        s1.par_iter_mut()
            .zip(s2.par_iter_mut())
            .zip(total.par_iter().zip(block.par_iter()))
            .for_each(|((a, b), (t, x))| {
                let ratio = (t - x) * norm;
                *a += ratio;
                *b += ratio * ratio;
            });
    }
    let bf = blocks as f64;
    let mean: Vec<f64> = total.iter().map(|t| t / total_weight).collect();
    let error: Vec<f64> = s1
        .iter()
        .zip(&s2)
        .map(|(a, b)| {
            let m = a / bf;
            ((bf - 1.0) / bf * (b - bf * m * m).max(0.0)).sqrt()
        })
        .collect();
    let components = MomentMatrix {
        dim: d,
        mean,
        error,
    };
    let blocking = Blocking {
        ranges: &ranges,
        weights: &weights,
        block_weight: &block_weight,
    };
    let correlations = sum_components(&components, samples, &blocking);
    Ok(BulkMoments {
        channels: samples.channels,
        sites: samples.sites,
        components,
        correlations,
    })
}

/// The blocks of a sample set and its weights.
struct Blocking<'a> {
    ranges: &'a [(usize, usize)],
    weights: &'a [f64],
    block_weight: &'a [f64],
}

/// `C = Σ_c K_{(c,·),(c,·)}`: the mean sums exactly; its error needs the jackknife of the
/// sum (the components are correlated), done on the `V × V` sums directly.
fn sum_components(k: &MomentMatrix, samples: &LatentSamples, blocking: &Blocking) -> MomentMatrix {
    let (channels, v) = (samples.channels, samples.sites);
    let (ranges, weights, block_weight) =
        (blocking.ranges, blocking.weights, blocking.block_weight);
    let d = channels * v;
    let mut mean = vec![0.0; v * v];
    for c in 0..channels {
        for i in 0..v {
            for j in 0..v {
                mean[i * v + j] += k.mean[(c * v + i) * d + c * v + j];
            }
        }
    }
    if channels == 1 {
        return MomentMatrix {
            dim: v,
            mean,
            error: k.error.clone(),
        };
    }
    let total_weight: f64 = block_weight.iter().sum();
    let block_sum = |r: (usize, usize)| {
        let mut acc = vec![0.0; v * v];
        acc.par_chunks_mut(v).enumerate().for_each(|(i, row)| {
            for n in r.0..r.1 {
                let z = samples.configuration(n);
                for c in 0..channels {
                    let wa = weights[n] * z[c * v + i] as f64;
                    for (r, zb) in row.iter_mut().zip(&z[c * v..(c + 1) * v]) {
                        *r += wa * *zb as f64;
                    }
                }
            }
        });
        acc
    };
    let total: Vec<f64> = mean.iter().map(|m| m * total_weight).collect();
    let (mut s1, mut s2) = (vec![0.0; v * v], vec![0.0; v * v]);
    for (&r, &wb) in ranges.iter().zip(block_weight) {
        let b = block_sum(r);
        let norm = 1.0 / (total_weight - wb);
        for e in 0..v * v {
            let ratio = (total[e] - b[e]) * norm;
            s1[e] += ratio;
            s2[e] += ratio * ratio;
        }
    }
    let bf = ranges.len() as f64;
    let error = s1
        .iter()
        .zip(&s2)
        .map(|(a, b)| {
            let m = a / bf;
            ((bf - 1.0) / bf * (b - bf * m * m).max(0.0)).sqrt()
        })
        .collect();
    MomentMatrix {
        dim: v,
        mean,
        error,
    }
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
        let m = bulk_moments(&s, 20).unwrap();
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
        let m = bulk_moments(&s, 5).unwrap();
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
