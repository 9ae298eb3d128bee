//! Mutual information between latents.
//!
//! - **Gaussian** (from second moments): for jointly Gaussian `A`, `B` (any number of
//!   components each), `I = ½ ln(det Σ_A det Σ_B / det Σ_AB)`; one real component each:
//!   `I = −½ ln(1 − ρ²)`. It is exact for a Gaussian bulk and a lower bound's proxy
//!   otherwise (the Gaussian with the same covariance).
//! - **Kraskov–Stögbauer–Grassberger**, estimator 1 (PRE 69, 066138 (2004), eq. 8), for any
//!   distribution: with `ε(n)` twice the max-norm distance from sample `n` to its `k`-th
//!   neighbour in the joint space and `n_A(n)`, `n_B(n)` the samples strictly within
//!   `ε(n)/2` in each marginal,
//!
//!   ```text
//!   Î = ψ(k) + ψ(N) − ⟨ψ(n_A + 1) + ψ(n_B + 1)⟩
//!   ```
//!
//!   (`ψ` the digamma function; all its arguments here are integers, `ψ(m) = −γ + H_{m−1}`).
//!   Error bar: a blocked jackknife over `B` contiguous blocks (each leave-one-block-out
//!   estimate on `N(B−1)/B` samples). Unweighted samples only (resample weighted ones first,
//!   [`resample`]).

use nrg_core::{Estimate, NrgError, Result};
use rand::{RngExt, SeedableRng};

/// The Euler–Mascheroni constant.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// `ψ(m)` for integers `m ≥ 1`: `−γ + Σ_{k<m} 1/k`.
pub fn digamma_int(m: usize) -> f64 {
    (1..m).map(|k| 1.0 / k as f64).sum::<f64>() - EULER_GAMMA
}

/// `ln det` of a symmetric positive definite matrix (`n × n`, row-major) by Cholesky;
/// `None` if it is not positive definite.
pub fn ln_det_spd(a: &[f64], n: usize) -> Option<f64> {
    let mut l = vec![0.0; n * n];
    let mut ln_det = 0.0;
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
                ln_det += s.ln();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(ln_det)
}

/// The Gaussian mutual information of the first `a` and the last `n − a` variables of a
/// covariance matrix `cov` (`n × n`): `½ ln(det Σ_A det Σ_B / det Σ)`. `None` where a block is
/// not positive definite.
pub fn gaussian_mi(cov: &[f64], n: usize, a: usize) -> Option<f64> {
    let sub = |from: usize, to: usize| -> Vec<f64> {
        let m = to - from;
        let mut out = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..m {
                out[i * m + j] = cov[(from + i) * n + from + j];
            }
        }
        out
    };
    let la = ln_det_spd(&sub(0, a), a)?;
    let lb = ln_det_spd(&sub(a, n), n - a)?;
    let lab = ln_det_spd(cov, n)?;
    Some(0.5 * (la + lb - lab).max(0.0))
}

/// KSG estimator 1 on `n` paired samples: `a[k]` holds sample `k` of `A` (`da` components,
/// `a[k·da..]`), likewise `b`.
fn ksg_value(a: &[f64], da: usize, b: &[f64], db: usize, n: usize, k: usize) -> f64 {
    let dist = |x: &[f64], d: usize, p: usize, q: usize| -> f64 {
        (0..d)
            .map(|c| (x[p * d + c] - x[q * d + c]).abs())
            .fold(0.0, f64::max)
    };
    let mut sum = 0.0;
    let mut joint = Vec::with_capacity(n);
    for p in 0..n {
        joint.clear();
        for q in 0..n {
            if q != p {
                joint.push(dist(a, da, p, q).max(dist(b, db, p, q)));
            }
        }
        let (_, eps, _) = joint.select_nth_unstable_by(k - 1, |x, y| x.total_cmp(y));
        let eps = *eps;
        let (mut na, mut nb) = (0usize, 0usize);
        for q in 0..n {
            if q != p {
                na += usize::from(dist(a, da, p, q) < eps);
                nb += usize::from(dist(b, db, p, q) < eps);
            }
        }
        sum += digamma_int(na + 1) + digamma_int(nb + 1);
    }
    digamma_int(k) + digamma_int(n) - sum / n as f64
}

/// KSG mutual information (estimator 1, `k` neighbours) of paired samples `a` (`da`
/// components each) and `b` (`db`), with a blocked-jackknife error over `blocks` contiguous
/// blocks (module docs). Cost `O(blocks · N²)`.
pub fn ksg(
    a: &[f64],
    da: usize,
    b: &[f64],
    db: usize,
    k: usize,
    blocks: usize,
) -> Result<Estimate> {
    let n = a.len() / da.max(1);
    if da == 0 || db == 0 || a.len() != n * da || b.len() != n * db {
        return Err(NrgError::InvalidData(
            "KSG: sample sizes do not match".into(),
        ));
    }
    if k == 0 || n <= k + 1 || blocks < 2 || n / blocks <= k + 1 {
        return Err(NrgError::param(
            "samples",
            format!(
                "KSG with k = {k} and {blocks} blocks needs more than {} samples, got {n}",
                blocks * (k + 2)
            ),
        ));
    }
    if a.iter().chain(b).any(|v| !v.is_finite()) {
        return Err(NrgError::InvalidData("KSG: a sample is not finite".into()));
    }
    let full = ksg_value(a, da, b, db, n, k);
    let mut loo = Vec::with_capacity(blocks);
    for blk in 0..blocks {
        let (s, e) = (blk * n / blocks, (blk + 1) * n / blocks);
        let keep = |x: &[f64], d: usize| -> Vec<f64> {
            x[..s * d].iter().chain(&x[e * d..]).copied().collect()
        };
        let (ka, kb) = (keep(a, da), keep(b, db));
        loo.push(ksg_value(&ka, da, &kb, db, n - (e - s), k));
    }
    let bf = blocks as f64;
    let mean = loo.iter().sum::<f64>() / bf;
    let var = (bf - 1.0) / bf * loo.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
    Ok(Estimate::new(full, var.sqrt()))
}

/// The Gaussian mutual information of the latents at sites `i` and `j` (all components
/// each) from the centred weighted covariance of `samples`, with a blocked-jackknife error
/// over `blocks` contiguous blocks.
pub fn gaussian_mi_of(
    samples: &crate::samples::LatentSamples,
    i: usize,
    j: usize,
    blocks: usize,
) -> Result<Estimate> {
    let c = samples.channels;
    let v = samples.sites;
    if i >= v || j >= v || i == j {
        return Err(NrgError::param(
            "pair",
            format!("({i}, {j}) is not a pair of distinct sites"),
        ));
    }
    let ranges = samples.blocks(blocks)?;
    let weights = samples.weights();
    let dim = 2 * c;
    let value = |k: usize, a: usize| -> f64 {
        let z = samples.configuration(k);
        if a < c {
            z[a * v + i] as f64
        } else {
            z[(a - c) * v + j] as f64
        }
    };
    // weighted sums of 1, z_a and z_a z_b per block
    let mut sums: Vec<(f64, Vec<f64>, Vec<f64>)> = Vec::with_capacity(blocks);
    for &(s, e) in &ranges {
        let (mut w0, mut m1, mut m2) = (0.0, vec![0.0; dim], vec![0.0; dim * dim]);
        for k in s..e {
            let w = weights[k];
            w0 += w;
            for a in 0..dim {
                let za = value(k, a);
                m1[a] += w * za;
                for b in 0..dim {
                    m2[a * dim + b] += w * za * value(k, b);
                }
            }
        }
        sums.push((w0, m1, m2));
    }
    let mi_of = |skip: Option<usize>| -> Result<f64> {
        let (mut w0, mut m1, mut m2) = (0.0, vec![0.0; dim], vec![0.0; dim * dim]);
        for (b, (w, s1, s2)) in sums.iter().enumerate() {
            if Some(b) == skip {
                continue;
            }
            w0 += w;
            m1.iter_mut().zip(s1).for_each(|(x, y)| *x += y);
            m2.iter_mut().zip(s2).for_each(|(x, y)| *x += y);
        }
        let mean: Vec<f64> = m1.iter().map(|x| x / w0).collect();
        let cov: Vec<f64> = (0..dim * dim)
            .map(|e| m2[e] / w0 - mean[e / dim] * mean[e % dim])
            .collect();
        gaussian_mi(&cov, dim, c).ok_or_else(|| {
            NrgError::InvalidData(format!("the covariance of sites {i}, {j} is singular"))
        })
    };
    let full = mi_of(None)?;
    let loo: Vec<f64> = (0..blocks).map(|b| mi_of(Some(b))).collect::<Result<_>>()?;
    let bf = blocks as f64;
    let m = loo.iter().sum::<f64>() / bf;
    let var = (bf - 1.0) / bf * loo.iter().map(|x| (x - m).powi(2)).sum::<f64>();
    Ok(Estimate::new(full, var.sqrt()))
}

/// `m` indices drawn with replacement with probabilities `∝ weights` (sampling–importance
/// resampling): unweighted draws from a weighted sample, for estimators that take no
/// weights. Seeded.
pub fn resample(weights: &[f64], m: usize, seed: u64) -> Result<Vec<usize>> {
    let total: f64 = weights.iter().sum();
    if !(total > 0.0 && total.is_finite()) || weights.iter().any(|w| *w < 0.0) {
        return Err(NrgError::InvalidData(
            "resampling needs finite non-negative weights with a positive sum".into(),
        ));
    }
    let mut cdf = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    Ok((0..m)
        .map(|_| {
            let u: f64 = rng.random();
            cdf.partition_point(|c| *c < u).min(weights.len() - 1)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digamma_at_integers() {
        assert!((digamma_int(1) + EULER_GAMMA).abs() < 1e-15);
        assert!((digamma_int(2) - (1.0 - EULER_GAMMA)).abs() < 1e-15);
        // ψ(10) = 2.251752589066721
        assert!((digamma_int(10) - 2.251_752_589_066_721).abs() < 1e-14);
    }

    /// `−½ ln(1 − ρ²)` for one component each; zero for independent blocks; a 2+2
    /// block case against the closed form for two independent pairs (MI adds).
    #[test]
    fn gaussian_mi_closed_forms() {
        for rho in [0.0, 0.5, 0.9] {
            let cov = [1.0, rho, rho, 1.0];
            let i = gaussian_mi(&cov, 2, 1).unwrap();
            assert!((i + 0.5 * (1.0 - rho * rho).ln()).abs() < 1e-14);
        }
        // (a1, a2) with (b1, b2): a1–b1 correlated ρ1, a2–b2 ρ2, else independent
        let (r1, r2) = (0.3, 0.7);
        #[rustfmt::skip]
        let cov = [
            1.0, 0.0, r1, 0.0,
            0.0, 1.0, 0.0, r2,
            r1, 0.0, 1.0, 0.0,
            0.0, r2, 0.0, 1.0,
        ];
        let i = gaussian_mi(&cov, 4, 2).unwrap();
        let exact = -0.5 * ((1.0 - r1 * r1) * (1.0 - r2 * r2)).ln();
        assert!((i - exact).abs() < 1e-14);
        assert!(gaussian_mi(&[1.0, 2.0, 2.0, 1.0], 2, 1).is_none());
    }

    #[test]
    fn resampling_follows_the_weights() {
        let idx = resample(&[0.0, 1.0, 3.0], 40_000, 1).unwrap();
        let c2 = idx.iter().filter(|&&i| i == 2).count() as f64 / 40_000.0;
        assert!(idx.iter().all(|&i| i != 0));
        assert!((c2 - 0.75).abs() < 0.01, "{c2}");
        assert!(resample(&[0.0, 0.0], 3, 1).is_err());
    }
}
