//! The affine update of a lattice coupling (the elementwise part of a RealNVP coupling
//! after its subnet) as one operation, forward and backward, on the state of a coupling
//! stack: the field and the log-determinant accumulated so far, one row per sample.
//!
//! Inputs: the state `z` `[B, C·V + 1]` (V = rows·cols: the field `[C, V]` flattened, then
//! `ℓ`, the ln|det| so far), the subnet's output `o` `[B, 2C, V]` (`ŝ` in channels `0..C`,
//! `t` in `C..2C`), the binary mask `m` `[C, V]` (1 = conditioning) and the scales `σ`
//! `[C]`. With `f = 1 − m`, `s = σ_c f tanh ŝ`:
//!
//! ```text
//! forward:  x = z ⊙ eˢ + f ⊙ t,          ℓ' = ℓ + Σ s
//! inverse:  x = (z − f ⊙ t) ⊙ e^{−s},    ℓ' = ℓ − Σ s
//! ```
//!
//! Output `[B, C·V + 1]`: `x` flattened per sample, then `ℓ'`. Backward, with `b` the
//! output and `a = z` (forward): `∂z = ∂b eˢ`, `∂t = f ∂b`, `∂s = ∂b z eˢ + ∂ℓ'`;
//! (inverse): `∂z = ∂b e^{−s}`, `∂t = −f ∂z`, `∂s = −∂b b − ∂ℓ'`; then
//! `∂ŝ = ∂s σ f (1 − tanh² ŝ)`, `∂σ_c = Σ ∂s f tanh ŝ` and `∂ℓ = ∂ℓ'`. The mask must be 0/1
//! (so that `e^{σ f tanh ŝ} = f e^{σ tanh ŝ} + (1 − f)` exactly).
//!
//! [`conditioning`] is the subnet's input `m ⊙ z` `[B, C, V]` from a state, and
//! [`conditioning_backward`] its cotangent back onto the state.

use crate::Direction;
use crate::activation::tanh_exp;
use crate::exec::Exec;
use crate::parallel::{ORDERED, add};
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
    /// The direction: forward `z eˢ + f t`, inverse `(z − f t) e^{−s}`.
    pub direction: Direction,
}

impl AffineGeometry {
    fn check(&self, z: &[f32], o: &[f32], mask: &[f32], scale: &[f32]) {
        let (b, c, v) = (self.batch, self.channels, self.sites);
        assert!(
            c >= 1 && v >= 1,
            "affine update: channels and sites must be positive ({self:?})"
        );
        assert_eq!(z.len(), b * (c * v + 1), "affine update: state length");
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

    fn inverse(&self) -> bool {
        self.direction == Direction::Inverse
    }

    fn sign(&self) -> f32 {
        if self.inverse() { -1.0 } else { 1.0 }
    }
}

/// One sample, channel `c`: `tanh ŝ` into `th` and `e^{±s}` (with the mask applied) into `e`.
#[inline(always)]
fn scale_factors(
    exec: Exec,
    g: &AffineGeometry,
    shat: &[f32],
    free: &[f32],
    sigma: f32,
    th: &mut [f32],
    e: &mut [f32],
) {
    tanh_exp(exec, shat, g.sign() * sigma, th, e);
    for (e, &f) in e.iter_mut().zip(free) {
        *e = f * *e + (1.0 - f);
    }
}

/// The updated state `[B, C·V + 1]` (see the module docs). Parallel over the batch.
///
/// # Panics
///
/// If a slice's length does not match `g`, or the mask is not 0/1.
pub fn affine_forward(
    exec: Exec,
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
    let free: Vec<f32> = mask.iter().map(|m| 1.0 - m).collect();
    out.par_chunks_mut(CHUNK * row)
        .enumerate()
        .for_each(|(k, rows)| {
            let (mut th, mut e) = (vec![0.0f32; v], vec![0.0f32; v]);
            for (i, out) in rows.chunks_exact_mut(row).enumerate() {
                let b = k * CHUNK + i;
                let zb = &z[b * row..][..row];
                let mut ld = zb[c * v];
                for ch in 0..c {
                    let zc = &zb[ch * v..][..v];
                    let shat = &o[(b * 2 * c + ch) * v..][..v];
                    let t = &o[(b * 2 * c + c + ch) * v..][..v];
                    let f = &free[ch * v..][..v];
                    scale_factors(exec, g, shat, f, scale[ch], &mut th, &mut e);
                    let x = &mut out[ch * v..][..v];
                    let mut sum_th = 0.0f32;
                    for site in 0..v {
                        let tf = f[site] * t[site];
                        x[site] = if g.inverse() {
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

/// Gradients of [`affine_forward`]: `(∂z [B, C·V + 1], ∂o [B, 2C, V], ∂σ [C])` from the inputs
/// and the output's cotangent `[B, C·V + 1]`; `∂σ` summed in `f32` per parallel task
/// first, in a fixed order.
///
/// # Panics
///
/// As [`affine_forward`].
pub fn affine_backward(
    exec: Exec,
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
    let mut gz = vec![0.0f32; g.batch * row];
    let mut go = vec![0.0f32; 2 * g.batch * c * v];
    let free: Vec<f32> = mask.iter().map(|m| 1.0 - m).collect();
    let gsigma = gz
        .par_chunks_mut(CHUNK * row)
        .zip(go.par_chunks_mut(CHUNK * 2 * c * v))
        .enumerate()
        .with_max_len(ORDERED)
        .fold(
            || vec![0.0f32; c],
            |mut gsigma, (k, (gz, go))| {
                let (mut th, mut e) = (vec![0.0f32; v], vec![0.0f32; v]);
                for (i, (gz, go)) in gz
                    .chunks_exact_mut(row)
                    .zip(go.chunks_exact_mut(2 * c * v))
                    .enumerate()
                {
                    let b = k * CHUNK + i;
                    let gy = &grad_output[b * row..][..row];
                    let gld = gy[c * v];
                    gz[c * v] = gld;
                    let (gs_hat, gt) = go.split_at_mut(c * v);
                    for ch in 0..c {
                        let zc = &z[b * row + ch * v..][..v];
                        let shat = &o[(b * 2 * c + ch) * v..][..v];
                        let t = &o[(b * 2 * c + c + ch) * v..][..v];
                        let f = &free[ch * v..][..v];
                        let sigma = scale[ch];
                        scale_factors(exec, g, shat, f, sigma, &mut th, &mut e);
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
                            let gs = if g.inverse() {
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
        .reduce(|| vec![0.0f32; c], add);
    (gz, go, gsigma)
}

/// The subnet's input `m ⊙ z` `[B, C, V]` from the state `[B, C·V + 1]` (the field of each
/// row, masked; `ℓ` dropped).
///
/// # Panics
///
/// If the lengths do not match `g`.
pub fn conditioning(g: &AffineGeometry, state: &[f32], mask: &[f32]) -> Vec<f32> {
    let cv = g.channels * g.sites;
    assert_eq!(
        state.len(),
        g.batch * (cv + 1),
        "conditioning: state length"
    );
    assert_eq!(mask.len(), cv, "conditioning: mask length");
    state
        .chunks_exact(cv + 1)
        .flat_map(|row| row[..cv].iter().zip(mask).map(|(z, m)| z * m))
        .collect()
}

/// The cotangent of the state `[B, C·V + 1]` from that of [`conditioning`]'s output
/// `[B, C, V]`: `m ⊙ ∂`, and 0 for `ℓ`.
///
/// # Panics
///
/// If the lengths do not match `g`.
pub fn conditioning_backward(g: &AffineGeometry, mask: &[f32], grad: &[f32]) -> Vec<f32> {
    let cv = g.channels * g.sites;
    assert_eq!(grad.len(), g.batch * cv, "conditioning: cotangent length");
    assert_eq!(mask.len(), cv, "conditioning: mask length");
    let mut out = Vec::with_capacity(g.batch * (cv + 1));
    for row in grad.chunks_exact(cv) {
        out.extend(row.iter().zip(mask).map(|(d, m)| d * m));
        out.push(0.0);
    }
    out
}
