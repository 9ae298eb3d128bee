//! Host kernels of the affine update of a lattice coupling (the elementwise part of
//! [`crate::AffineCoupling`] in one operation).
//!
//! Inputs: the field `z` `[B, C, V]` (V = rows·cols), the subnet's output `o` `[B, 2C, V]`
//! (`ŝ` in channels `0..C`, `t` in `C..2C`), the binary mask `m` `[C, V]` (1 = conditioning)
//! and the scales `σ` `[C]`. With `f = 1 − m`, `s = σ_c f tanh ŝ`:
//!
//! ```text
//! forward:  x = z ⊙ eˢ + f ⊙ t,          ln|det| =  Σ s
//! inverse:  x = (z − f ⊙ t) ⊙ e^{−s},    ln|det| = −Σ s
//! ```
//!
//! Output `[B, C·V + 1]`: `x` flattened per sample, then its `ln|det|`. Backward, with `b`
//! the output and `a = z` (forward): `∂z = ∂b eˢ`, `∂t = f ∂b`, `∂s = ∂b z eˢ + ∂ln|det|`;
//! (inverse): `∂z = ∂b e^{−s}`, `∂t = −f ∂z`, `∂s = −∂b b − ∂ln|det|`; then
//! `∂ŝ = ∂s σ f (1 − tanh² ŝ)` and `∂σ_c = Σ ∂s f tanh ŝ`. The mask must be 0/1 (so that
//! `e^{σ f tanh ŝ} = f e^{σ tanh ŝ} + (1 − f)` exactly).

use super::chain::TanhExp;
use super::host::ORDERED;
use pulp::Arch;
use rayon::prelude::*;

/// Samples per parallel task.
const CHUNK: usize = 16;

/// Geometry of an affine update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffineGeometry {
    /// Batch `B`.
    pub batch: usize,
    /// Field channels `C`.
    pub channels: usize,
    /// Sites `V` per channel.
    pub sites: usize,
    /// The inverse direction.
    pub inverse: bool,
}

impl AffineGeometry {
    fn check(&self, z: &[f32], o: &[f32], mask: &[f32], scale: &[f32]) {
        let (b, c, v) = (self.batch, self.channels, self.sites);
        assert_eq!(z.len(), b * c * v, "affine update: field length");
        assert_eq!(
            o.len(),
            2 * b * c * v,
            "affine update: subnet output length"
        );
        assert_eq!(mask.len(), c * v, "affine update: mask length");
        assert_eq!(scale.len(), c, "affine update: scale length");
        assert!(
            mask.iter().all(|&m| m == 0.0 || m == 1.0),
            "affine update: the mask must be 0/1"
        );
    }

    fn sign(&self) -> f32 {
        if self.inverse { -1.0 } else { 1.0 }
    }
}

/// One sample, channel `c`: `tanh ŝ` into `th` and `e^{±s}` (with the mask applied) into `e`.
#[inline(always)]
fn scale_factors(
    arch: Arch,
    g: &AffineGeometry,
    shat: &[f32],
    free: &[f32],
    sigma: f32,
    th: &mut [f32],
    e: &mut [f32],
) {
    arch.dispatch(TanhExp {
        x: shat,
        scale: g.sign() * sigma,
        th: &mut *th,
        e: &mut *e,
    });
    for (e, &f) in e.iter_mut().zip(free) {
        *e = f * *e + (1.0 - f);
    }
}

/// The update's output `[B, C·V + 1]` (see the module docs).
pub fn affine_forward(
    g: &AffineGeometry,
    z: &[f32],
    o: &[f32],
    mask: &[f32],
    scale: &[f32],
) -> Vec<f32> {
    g.check(z, o, mask, scale);
    let (c, v) = (g.channels, g.sites);
    let row = c * v + 1;
    let mut out = vec![0.0f32; g.batch * row];
    let arch = Arch::new();
    let free: Vec<f32> = mask.iter().map(|m| 1.0 - m).collect();
    out.par_chunks_mut(CHUNK * row)
        .enumerate()
        .for_each(|(k, rows)| {
            let (mut th, mut e) = (vec![0.0f32; v], vec![0.0f32; v]);
            for (i, out) in rows.chunks_exact_mut(row).enumerate() {
                let b = k * CHUNK + i;
                let mut ld = 0.0f32;
                for ch in 0..c {
                    let zc = &z[(b * c + ch) * v..][..v];
                    let shat = &o[(b * 2 * c + ch) * v..][..v];
                    let t = &o[(b * 2 * c + c + ch) * v..][..v];
                    let f = &free[ch * v..][..v];
                    scale_factors(arch, g, shat, f, scale[ch], &mut th, &mut e);
                    let x = &mut out[ch * v..][..v];
                    let mut sum_th = 0.0f32;
                    for site in 0..v {
                        let tf = f[site] * t[site];
                        x[site] = if g.inverse {
                            (zc[site] - tf) * e[site]
                        } else {
                            zc[site].mul_add(e[site], tf)
                        };
                        sum_th += f[site] * th[site];
                    }
                    ld += g.sign() * scale[ch] * sum_th;
                }
                out[c * v] = ld;
            }
        });
    out
}

/// Gradients of [`affine_forward`]: `(∂z [B, C, V], ∂o [B, 2C, V], ∂σ [C])` from the inputs
/// and the output's cotangent `[B, C·V + 1]`.
pub fn affine_backward(
    g: &AffineGeometry,
    z: &[f32],
    o: &[f32],
    mask: &[f32],
    scale: &[f32],
    grad_output: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    g.check(z, o, mask, scale);
    let (c, v) = (g.channels, g.sites);
    let row = c * v + 1;
    assert_eq!(
        grad_output.len(),
        g.batch * row,
        "affine update: cotangent length"
    );
    let mut gz = vec![0.0f32; g.batch * c * v];
    let mut go = vec![0.0f32; 2 * g.batch * c * v];
    let arch = Arch::new();
    let free: Vec<f32> = mask.iter().map(|m| 1.0 - m).collect();
    let gsigma = gz
        .par_chunks_mut(CHUNK * c * v)
        .zip(go.par_chunks_mut(CHUNK * 2 * c * v))
        .enumerate()
        .with_max_len(ORDERED)
        .fold(
            || vec![0.0f32; c],
            |mut gsigma, (k, (gz, go))| {
                let (mut th, mut e) = (vec![0.0f32; v], vec![0.0f32; v]);
                for (i, (gz, go)) in gz
                    .chunks_exact_mut(c * v)
                    .zip(go.chunks_exact_mut(2 * c * v))
                    .enumerate()
                {
                    let b = k * CHUNK + i;
                    let gy = &grad_output[b * row..][..row];
                    let gld = gy[c * v];
                    let (gs_hat, gt) = go.split_at_mut(c * v);
                    for ch in 0..c {
                        let zc = &z[(b * c + ch) * v..][..v];
                        let shat = &o[(b * 2 * c + ch) * v..][..v];
                        let t = &o[(b * 2 * c + c + ch) * v..][..v];
                        let f = &free[ch * v..][..v];
                        let sigma = scale[ch];
                        scale_factors(arch, g, shat, f, sigma, &mut th, &mut e);
                        let gx = &gy[ch * v..][..v];
                        let (gzc, gsc, gtc) = (
                            &mut gz[ch * v..][..v],
                            &mut gs_hat[ch * v..][..v],
                            &mut gt[ch * v..][..v],
                        );
                        let mut acc = 0.0f32;
                        for site in 0..v {
                            let (gb, fs, th_) = (gx[site], f[site], th[site]);
                            let gza = gb * e[site];
                            let gs = if g.inverse {
                                // b = (z − f t) e^{−s}
                                let b_ = (zc[site] - fs * t[site]) * e[site];
                                gtc[site] = -fs * gza;
                                -gb * b_ - gld
                            } else {
                                gtc[site] = fs * gb;
                                gza * zc[site] + gld
                            };
                            gzc[site] = gza;
                            gsc[site] = gs * sigma * fs * (1.0 - th_ * th_);
                            acc += gs * fs * th_;
                        }
                        gsigma[ch] += acc;
                    }
                }
                gsigma
            },
        )
        .reduce(
            || vec![0.0f32; c],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            },
        );
    (gz, go, gsigma)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{rng, uniform as random, wide};

    /// The update in f64 from the definition.
    fn reference(
        g: &AffineGeometry,
        z: &[f64],
        o: &[f64],
        mask: &[f64],
        scale: &[f64],
    ) -> Vec<f64> {
        let (c, v) = (g.channels, g.sites);
        let mut out = vec![0.0; g.batch * (c * v + 1)];
        for b in 0..g.batch {
            let mut ld = 0.0;
            for ch in 0..c {
                for site in 0..v {
                    let f = 1.0 - mask[ch * v + site];
                    let s = scale[ch] * f * o[(b * 2 * c + ch) * v + site].tanh();
                    let t = f * o[(b * 2 * c + c + ch) * v + site];
                    let zz = z[(b * c + ch) * v + site];
                    out[b * (c * v + 1) + ch * v + site] = if g.inverse {
                        (zz - t) * (-s).exp()
                    } else {
                        zz * s.exp() + t
                    };
                    ld += if g.inverse { -s } else { s };
                }
            }
            out[b * (c * v + 1) + c * v] = ld;
        }
        out
    }

    /// Values against the f64 definition (1e-5 relative), the inverse undoes the forward,
    /// and every gradient (field, subnet output, scales) against f64 central differences of
    /// `L = Σ r ⊙ output` (step 1e-6; the kernel is f32: 1e-4 of the largest gradient).
    /// 19 samples of 2 channels × 13 sites: a partial parallel chunk and SIMD tails.
    #[test]
    fn affine_update_matches_the_definition() {
        let mut rng = rng(9);
        let (b, c, v) = (19, 2, 13);
        let mask: Vec<f32> = (0..c * v).map(|i| ((i * 7 + i / 3) % 2) as f32).collect();
        for inverse in [false, true] {
            let g = AffineGeometry {
                batch: b,
                channels: c,
                sites: v,
                inverse,
            };
            let z = random(b * c * v, 2.0, &mut rng);
            let o = random(2 * b * c * v, 1.5, &mut rng);
            let scale = random(c, 1.2, &mut rng);
            let y = affine_forward(&g, &z, &o, &mask, &scale);
            let (z64, o64, m64, s64) = (wide(&z), wide(&o), wide(&mask), wide(&scale));
            let want = reference(&g, &z64, &o64, &m64, &s64);
            for (a, w) in y.iter().zip(&want) {
                assert!((*a as f64 - w).abs() < 1e-5 * (1.0 + w.abs()), "{a} vs {w}");
            }
            let back = AffineGeometry {
                inverse: !inverse,
                ..g
            };
            let x: Vec<f32> = y
                .chunks_exact(c * v + 1)
                .flat_map(|r| r[..c * v].to_vec())
                .collect();
            let zz = affine_forward(&back, &x, &o, &mask, &scale);
            for (row, (a, w)) in zz
                .chunks_exact(c * v + 1)
                .zip(y.chunks_exact(c * v + 1))
                .enumerate()
            {
                for (p, q) in a[..c * v].iter().zip(&z[row * c * v..(row + 1) * c * v]) {
                    assert!(
                        (p - q).abs() < 1e-5 * (1.0 + q.abs()),
                        "round trip {p} vs {q}"
                    );
                }
                assert!((a[c * v] + w[c * v]).abs() < 1e-5 * (1.0 + w[c * v].abs()));
            }
            let r = random(b * (c * v + 1), 1.0, &mut rng);
            let (gz, go, gs) = affine_backward(&g, &z, &o, &mask, &scale, &r);
            let r64 = wide(&r);
            let loss = |z: &[f64], o: &[f64], s: &[f64]| -> f64 {
                reference(&g, z, o, &m64, s)
                    .iter()
                    .zip(&r64)
                    .map(|(a, b)| a * b)
                    .sum()
            };
            let eps = 1e-6;
            let mut checks: Vec<(Vec<f32>, Vec<f64>, &str)> = Vec::new();
            let fd = |which: usize, i: usize| {
                let (mut a, mut b_) = (
                    [z64.clone(), o64.clone(), s64.clone()],
                    [z64.clone(), o64.clone(), s64.clone()],
                );
                a[which][i] += eps;
                b_[which][i] -= eps;
                (loss(&a[0], &a[1], &a[2]) - loss(&b_[0], &b_[1], &b_[2])) / (2.0 * eps)
            };
            checks.push((gz, (0..z.len()).map(|i| fd(0, i)).collect(), "z"));
            checks.push((go, (0..o.len()).map(|i| fd(1, i)).collect(), "o"));
            checks.push((gs, (0..c).map(|i| fd(2, i)).collect(), "σ"));
            for (got, want, what) in checks {
                let top = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
                for (i, (a, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (*a as f64 - w).abs() < 1e-4 * top + 1e-5,
                        "inverse {inverse}: ∂{what}[{i}] = {a}, finite differences {w}"
                    );
                }
            }
        }
    }
}
