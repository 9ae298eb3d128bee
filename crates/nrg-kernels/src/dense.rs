//! The twin dense layer with bias and activation, forward and backward, feature-major
//! (`[·, features, N]`, the batch `N` along the fast axis, so that SIMD runs along the batch
//! even for widths of 2–10):
//!
//! ```text
//! pre[t,j,n] = bias[t,j] + Σ_i in[min(t, G−1),i,n] · w[t,i,j],   out = act(pre)
//! ```
//!
//! Shapes: input `[G, in, N]` (`G` = 1: one input shared by the `T` twins; `G = T`: one
//! each), weight `[T, in, out]`, bias `[T, 1, out]`, output `[T, out, N]`. The batch goes in
//! column tiles over threads.

use crate::activation::Activation;
use crate::exec::Exec;
use crate::gemm::{gemm_abt, gemm_acc, sum, transposed};
use crate::parallel::{COLUMN_TILE, ORDERED, add_pairs, column_tiles, gather_columns};
use rayon::prelude::*;

/// Geometry of a twin dense layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseGeometry {
    /// Input groups: 1 (shared by the twins) or `twins` (one per twin).
    pub groups_in: usize,
    /// Twins `T` (output groups).
    pub twins: usize,
    /// Rows `N`.
    pub rows: usize,
    /// Input width.
    pub input: usize,
    /// Output width.
    pub output: usize,
}

impl DenseGeometry {
    fn check(&self, input: &[f32], weight: &[f32]) {
        assert!(
            self.twins >= 1 && (self.groups_in == 1 || self.groups_in == self.twins),
            "dense: input groups must be 1 or the twins"
        );
        let (n, fi, fo) = (self.rows, self.input, self.output);
        assert_eq!(input.len(), self.groups_in * n * fi, "dense input length");
        assert_eq!(weight.len(), self.twins * fi * fo, "dense weight length");
    }
}

/// Forward twin dense layer, feature-major: `input [G, in, N]`, `weight [T, in, out]`,
/// `bias [T, 1, out]` → `act(pre)` `[T, out, N]`. The batch goes in column tiles of
/// 256: `pre[out × R] = Wᵀ[out × in] · x[in × R]` by the SIMD GEMM on a
/// contiguous copy of the tile, the activation on whole vectors, the rows copied out.
///
/// # Panics
///
/// If a slice's length does not match `g`, or `g.groups_in` is neither 1 nor `g.twins`.
pub fn dense_forward(
    exec: Exec,
    g: &DenseGeometry,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    act: Activation,
) -> Vec<f32> {
    let (n, fi, fo, twins, groups) = (g.rows, g.input, g.output, g.twins, g.groups_in);
    g.check(input, weight);
    assert_eq!(bias.len(), twins * fo, "dense bias length");
    let mut out = vec![0.0f32; twins * n * fo];
    let wt: Vec<Vec<f32>> = weight
        .chunks_exact(fi * fo)
        .map(|w| transposed(w, fi, fo))
        .collect();
    // One parallel pass over column tiles of all twins' outputs (`[T·out, N]`); a shared
    // input tile is gathered once for both twins.
    column_tiles(&mut out, twins * fo, n, COLUMN_TILE)
        .into_par_iter()
        .enumerate()
        .for_each_init(
            || {
                (
                    vec![0.0f32; groups * COLUMN_TILE * fi],
                    vec![0.0f32; COLUMN_TILE * fo],
                )
            },
            |(xt, yt), (k, mut segs)| {
                let (c0, cols) = (k * COLUMN_TILE, segs[0].len());
                exec.dispatch(|| {
                    for (grp, x) in input.chunks_exact(n * fi).enumerate() {
                        gather_columns(x, fi, n, c0, cols, &mut xt[grp * fi * cols..][..fi * cols]);
                    }
                    let yt = &mut yt[..fo * cols];
                    for (t, (wt_t, b)) in wt.iter().zip(bias.chunks_exact(fo)).enumerate() {
                        let xg = &xt[t.min(groups - 1) * fi * cols..][..fi * cols];
                        for (row, &bj) in yt.chunks_exact_mut(cols).zip(b) {
                            row.fill(bj);
                        }
                        gemm_acc(exec, fo, cols, fi, wt_t, xg, yt);
                        act.apply_slice(exec, yt);
                        for (seg, row) in segs[t * fo..(t + 1) * fo]
                            .iter_mut()
                            .zip(yt.chunks_exact(cols))
                        {
                            seg.copy_from_slice(row);
                        }
                    }
                })
            },
        );
    out
}

/// Gradients of [`dense_forward`] (feature-major): `(∂L/∂input [G, in, N], ∂L/∂weight,
/// ∂L/∂bias)`. With a shared input (`G = 1`) the input gradient sums both twins. Per column
/// tile, with `gpre = ∂L/∂y ⊙ act′` `[out × R]`: `∂W += x · gpreᵀ`, `∂b += Σ_cols gpre`,
/// `∂x = W · gpre`; weight and bias gradients are summed in `f32` per parallel task first,
/// in a fixed order.
///
/// # Panics
///
/// As [`dense_forward`].
pub fn dense_backward(
    exec: Exec,
    g: &DenseGeometry,
    input: &[f32],
    weight: &[f32],
    output: &[f32],
    grad_output: &[f32],
    act: Activation,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, fi, fo, twins, groups) = (g.rows, g.input, g.output, g.twins, g.groups_in);
    g.check(input, weight);
    assert_eq!(output.len(), twins * n * fo, "dense output length");
    assert_eq!(grad_output.len(), output.len(), "dense cotangent length");
    let mut grad_input = vec![0.0f32; groups * n * fi];
    let scratch = || DenseScratch {
        xt: vec![0.0; groups * COLUMN_TILE * fi],
        gp: vec![0.0; COLUMN_TILE * fo],
        gxt: vec![0.0; groups * COLUMN_TILE * fi],
        gw: vec![0.0; twins * fi * fo],
        gb: vec![0.0; twins * fo],
    };
    // One parallel pass over column tiles of `∂L/∂input` (`[G·in, N]`), both twins per
    // task: each tile of the input gradient is written once, by the task that owns it.
    let (grad_weight, grad_bias) = column_tiles(&mut grad_input, groups * fi, n, COLUMN_TILE)
        .into_par_iter()
        .enumerate()
        .with_max_len(ORDERED)
        .fold(scratch, |mut s, (k, mut segs)| {
            let (c0, cols) = (k * COLUMN_TILE, segs[0].len());
            exec.dispatch(|| {
                let (xt, gxt) = (
                    &mut s.xt[..groups * fi * cols],
                    &mut s.gxt[..groups * fi * cols],
                );
                let gp = &mut s.gp[..fo * cols];
                for (grp, x) in input.chunks_exact(n * fi).enumerate() {
                    gather_columns(x, fi, n, c0, cols, &mut xt[grp * fi * cols..][..fi * cols]);
                }
                gxt.fill(0.0);
                for t in 0..twins {
                    let grp = t.min(groups - 1);
                    let (y, gy) = (&output[t * n * fo..], &grad_output[t * n * fo..]);
                    for (j, gp_j) in gp.chunks_exact_mut(cols).enumerate() {
                        let at = j * n + c0..j * n + c0 + cols;
                        act.chain_slice(gp_j, &y[at.clone()], &gy[at]);
                    }
                    for (b, row) in s.gb[t * fo..(t + 1) * fo]
                        .iter_mut()
                        .zip(gp.chunks_exact(cols))
                    {
                        *b += sum(row);
                    }
                    let xg = &xt[grp * fi * cols..][..fi * cols];
                    let gw = &mut s.gw[t * fi * fo..(t + 1) * fi * fo];
                    gemm_abt(exec, fi, fo, cols, xg, gp, gw);
                    let w = &weight[t * fi * fo..(t + 1) * fi * fo];
                    gemm_acc(
                        exec,
                        fi,
                        cols,
                        fo,
                        w,
                        gp,
                        &mut gxt[grp * fi * cols..][..fi * cols],
                    );
                }
                for (seg, row) in segs.iter_mut().zip(gxt.chunks_exact(cols)) {
                    seg.copy_from_slice(row);
                }
            });
            s
        })
        .map(|s| (s.gw, s.gb))
        .reduce(
            || (vec![0.0f32; twins * fi * fo], vec![0.0f32; twins * fo]),
            add_pairs,
        );
    (grad_input, grad_weight, grad_bias)
}

/// Per-task buffers of [`dense_backward`]: contiguous tiles and partial gradients.
struct DenseScratch {
    xt: Vec<f32>,
    gp: Vec<f32>,
    gxt: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
}
