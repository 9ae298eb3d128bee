//! A whole twin MLP as one operation, forward and backward, feature-major: `twins`
//! networks of widths `w₀ → … → w_L`, the hidden activation after every layer but the last
//! (which is linear), each layer a [`crate::dense`] layer:
//!
//! ```text
//! h₀ = in[min(t, G−1)],   h_{l+1} = act_l(W_lᵀ h_l + b_l),   out[t] = h_L
//! ```
//!
//! Shapes: input `[G, w₀, N]`, parameters flat as `[W₀ [T, w₀, w₁], b₀ [T, w₁], W₁, b₁, …]`
//! ([`MlpGeometry::layout`]), output `[T, w_L, N]`. Every layer of one column tile is
//! evaluated in the cache, so only the input and the output go through memory; the backward
//! pass recomputes the hidden activations of a tile instead of storing them.

use crate::activation::Activation;
use crate::exec::Exec;
use crate::gemm::{gemm_abt, gemm_acc, sum, transposed};
use crate::parallel::{COLUMN_TILE, ORDERED, TINY, add, column_tiles, flush, gather_columns};
use rayon::prelude::*;

/// Geometry of a fused twin MLP: `twins` networks of widths `widths[0] → … → widths[L]`,
/// `hidden` after every layer but the last (which is linear).
#[derive(Clone, Debug, PartialEq)]
pub struct MlpGeometry {
    /// Input groups: 1 (shared by the twins) or `twins`.
    pub groups_in: usize,
    /// Twins `T`.
    pub twins: usize,
    /// Rows `N`.
    pub rows: usize,
    /// Layer widths, input first (at least two).
    pub widths: Vec<usize>,
    /// Activation of the hidden layers.
    pub hidden: Activation,
}

/// The flat parameter layout of `twins` MLPs of widths `w₀ → … → w_L`,
/// `[W₀ [T, w₀, w₁], b₀ [T, w₁], W₁, b₁, …]`: `(weight offset, bias offset)` of each layer
/// and the total length `Σ_l T·w_{l+1}·(w_l + 1)`. The one definition of the layout, for the
/// kernels here, their CubeCL twins and the modules that store parameters in it.
pub fn twin_layout(twins: usize, widths: &[usize]) -> (Vec<(usize, usize)>, usize) {
    let mut off = 0;
    let mut at = Vec::with_capacity(widths.len().saturating_sub(1));
    for w in widths.windows(2) {
        let wo = off;
        off += twins * w[0] * w[1];
        at.push((wo, off));
        off += twins * w[1];
    }
    (at, off)
}

impl MlpGeometry {
    /// The output width `w_L` (a geometry has at least an input and an output width).
    pub fn output_width(&self) -> usize {
        self.widths.last().copied().unwrap_or(0)
    }

    /// The widest layer.
    pub(crate) fn widest(&self) -> usize {
        self.widths.iter().copied().max().unwrap_or(0)
    }

    /// `(weight offset, bias offset)` of each layer in the flat parameters
    /// `[W₀ [T, w₀, w₁], b₀ [T, w₁], W₁, b₁, …]`, and their total length ([`twin_layout`]).
    pub fn layout(&self) -> (Vec<(usize, usize)>, usize) {
        twin_layout(self.twins, &self.widths)
    }

    /// Checks the slices against the geometry; returns the parameters' length.
    fn check(&self, input: &[f32], params: &[f32]) -> usize {
        assert!(
            self.widths.len() >= 2,
            "mlp: at least an input and an output width"
        );
        assert!(
            self.twins >= 1 && (self.groups_in == 1 || self.groups_in == self.twins),
            "mlp: input groups must be 1 or the twins"
        );
        let len = self.layout().1;
        let input_len = self.groups_in * self.rows * self.widths[0];
        assert_eq!(input.len(), input_len, "mlp input length");
        assert_eq!(params.len(), len, "mlp parameter length");
        len
    }

    /// The weights transposed to `[out, in]`, per layer and twin.
    pub(crate) fn transposed_weights(&self, params: &[f32]) -> Vec<Vec<Vec<f32>>> {
        let (layout, _) = self.layout();
        self.widths
            .windows(2)
            .zip(&layout)
            .map(|(w, &(at, _))| {
                params[at..at + self.twins * w[0] * w[1]]
                    .chunks_exact(w[0] * w[1])
                    .map(|wt| transposed(wt, w[0], w[1]))
                    .collect()
            })
            .collect()
    }

    /// Offsets of the activations `h₀` (input) … `h_L` in a column tile's stack, each
    /// `w_l × COLUMN_TILE`; the last entry is the stack's length.
    pub(crate) fn stack_offsets(&self) -> Vec<usize> {
        let mut h_at = vec![0usize];
        let mut at = 0;
        for &w in &self.widths {
            at += w * COLUMN_TILE;
            h_at.push(at);
        }
        h_at
    }

    /// The activation after layer `layer`: the hidden one, the identity after the last.
    pub fn act(&self, layer: usize) -> Activation {
        if layer + 2 == self.widths.len() {
            Activation::Identity
        } else {
            self.hidden
        }
    }
}

/// Forward of a fused twin MLP (feature-major): input `[G, w₀, N]`, flat parameters (see
/// [`MlpGeometry::layout`]) → `[T, w_L, N]`. Every layer of one column tile is computed
/// in cache, so only the input and the output go through memory; equal to a chain of
/// [`crate::dense::dense_forward`] calls.
///
/// # Panics
///
/// If a slice's length does not match `g`, `g` has fewer than two widths, or
/// `g.groups_in` is neither 1 nor `g.twins`.
pub fn mlp_forward(exec: Exec, g: &MlpGeometry, input: &[f32], params: &[f32]) -> Vec<f32> {
    g.check(input, params);
    let (n, twins, groups) = (g.rows, g.twins, g.groups_in);
    let (fi, fo) = (g.widths[0], g.output_width());
    let layout = g.layout().0;
    let wide = g.widest();
    let wt = g.transposed_weights(params);
    let mut out = vec![0.0f32; twins * fo * n];
    column_tiles(&mut out, twins * fo, n, COLUMN_TILE)
        .into_par_iter()
        .enumerate()
        .for_each_init(
            || {
                (
                    vec![0.0f32; groups * COLUMN_TILE * fi],
                    vec![0.0f32; COLUMN_TILE * wide],
                    vec![0.0f32; COLUMN_TILE * wide],
                )
            },
            |(xt, ha, hb), (k, mut segs)| {
                let (c0, cols) = (k * COLUMN_TILE, segs[0].len());
                exec.dispatch(|| {
                    for (grp, x) in input.chunks_exact(n * fi).enumerate() {
                        gather_columns(x, fi, n, c0, cols, &mut xt[grp * fi * cols..][..fi * cols]);
                    }
                    for t in 0..twins {
                        let mut h: &[f32] = &xt[t.min(groups - 1) * fi * cols..][..fi * cols];
                        let (mut cur, mut next) = (&mut *ha, &mut *hb);
                        for (l, w) in g.widths.windows(2).enumerate() {
                            let (wi, wo) = (w[0], w[1]);
                            let y = &mut next[..wo * cols];
                            let b = &params[layout[l].1 + t * wo..][..wo];
                            for (row, &bj) in y.chunks_exact_mut(cols).zip(b) {
                                row.fill(bj);
                            }
                            gemm_acc(exec, wo, cols, wi, &wt[l][t], &h[..wi * cols], y);
                            g.act(l).apply_slice(exec, y);
                            std::mem::swap(&mut cur, &mut next);
                            h = &cur[..wo * cols];
                        }
                        for (seg, row) in segs[t * fo..(t + 1) * fo]
                            .iter_mut()
                            .zip(h.chunks_exact(cols))
                        {
                            seg.copy_from_slice(row);
                        }
                    }
                })
            },
        );
    out
}

/// Gradients of [`mlp_forward`]: `(∂L/∂input [G, w₀, N], ∂L/∂params)` from the input, the
/// parameters and the output's cotangent. The hidden activations are recomputed per column
/// tile (cheaper than storing and reloading them); then, layer by layer from the top, with
/// `gpre = g ⊙ act′`: `∂W += h · gpreᵀ`, `∂b += Σ gpre`, `g ← W · gpre`. Parameter gradients
/// are summed in `f32` per parallel task first, in a fixed order.
///
/// # Panics
///
/// As [`mlp_forward`].
pub fn mlp_backward(
    exec: Exec,
    g: &MlpGeometry,
    input: &[f32],
    params: &[f32],
    grad_output: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let len = g.check(input, params);
    let (n, twins, groups) = (g.rows, g.twins, g.groups_in);
    let (fi, fo) = (g.widths[0], g.output_width());
    assert_eq!(grad_output.len(), twins * fo * n, "mlp cotangent length");
    let wide = g.widest();
    let net = TileMlp::new(exec, g, params);
    let h_at = &net.h_at;
    let mut grad_input = vec![0.0f32; groups * n * fi];
    let scratch = || MlpScratch {
        xt: vec![0.0; groups * COLUMN_TILE * fi],
        hs: vec![0.0; h_at[g.widths.len()]],
        ga: vec![0.0; COLUMN_TILE * wide],
        gb: vec![0.0; COLUMN_TILE * wide],
        gxt: vec![0.0; groups * COLUMN_TILE * fi],
        grads: vec![0.0; len],
    };
    let grad_params = column_tiles(&mut grad_input, groups * fi, n, COLUMN_TILE)
        .into_par_iter()
        .enumerate()
        .with_max_len(ORDERED)
        .fold(scratch, |mut s, (k, mut segs)| {
            let (c0, cols) = (k * COLUMN_TILE, segs[0].len());
            exec.dispatch(|| {
                for (grp, x) in input.chunks_exact(n * fi).enumerate() {
                    gather_columns(
                        x,
                        fi,
                        n,
                        c0,
                        cols,
                        &mut s.xt[grp * fi * cols..][..fi * cols],
                    );
                }
                s.gxt[..groups * fi * cols].fill(0.0);
                for t in 0..twins {
                    let grp = t.min(groups - 1);
                    // Recompute h₁ … h_L of this tile (h₀ is the gathered input).
                    s.hs[..fi * cols].copy_from_slice(&s.xt[grp * fi * cols..][..fi * cols]);
                    net.forward(t, cols, &mut s.hs);
                    // The cotangent of h_L.
                    let gy = &grad_output[t * fo * n..][..fo * n];
                    gather_columns(gy, fo, n, c0, cols, &mut s.ga[..fo * cols]);
                    let gx = &mut s.gxt[grp * fi * cols..][..fi * cols];
                    let bufs = (&mut s.ga[..], &mut s.gb[..]);
                    net.backward(t, cols, &s.hs, bufs, &mut s.grads, gx);
                }
                for (seg, row) in segs.iter_mut().zip(s.gxt.chunks_exact(cols)) {
                    seg.copy_from_slice(row);
                }
            });
            s
        })
        .map(|s| s.grads)
        .reduce(|| vec![0.0f32; len], add);
    (grad_input, grad_params)
}

/// One twin MLP ready for column tiles: the layout of its flat parameters, its weights
/// transposed to `[out, in]` per layer and twin, and the offsets `h_at` of each layer's
/// activations in a tile's stack ([`MlpGeometry::stack_offsets`]).
pub(crate) struct TileMlp<'a> {
    g: &'a MlpGeometry,
    exec: Exec,
    layout: Vec<(usize, usize)>,
    wt: Vec<Vec<Vec<f32>>>,
    params: &'a [f32],
    /// Offsets of `h₀ … h_L` in a tile's stack; the last entry is the stack's length.
    pub(crate) h_at: Vec<usize>,
}

impl<'a> TileMlp<'a> {
    pub(crate) fn new(exec: Exec, g: &'a MlpGeometry, params: &'a [f32]) -> Self {
        TileMlp {
            g,
            exec,
            layout: g.layout().0,
            wt: g.transposed_weights(params),
            params,
            h_at: g.stack_offsets(),
        }
    }

    /// Twin `t` on a column tile of `cols` columns: with the input `h₀` in
    /// `hs[h_at[0]..]` (`w₀ × cols`), computes `h₁ … h_L` into `hs[h_at[l]..]`.
    #[inline(always)]
    pub(crate) fn forward(&self, t: usize, cols: usize, hs: &mut [f32]) {
        let (g, h_at) = (self.g, &self.h_at);
        for (l, w) in g.widths.windows(2).enumerate() {
            let (wi, wo) = (w[0], w[1]);
            let (lo, hi) = hs.split_at_mut(h_at[l + 1]);
            let (h, y) = (&lo[h_at[l]..h_at[l] + wi * cols], &mut hi[..wo * cols]);
            let b = &self.params[self.layout[l].1 + t * wo..][..wo];
            for (row, &bj) in y.chunks_exact_mut(cols).zip(b) {
                row.fill(bj);
            }
            gemm_acc(self.exec, wo, cols, wi, &self.wt[l][t], h, y);
            g.act(l).apply_slice(self.exec, y);
        }
    }

    /// The output `h_L` (`w_L × cols`) in a stack filled by [`TileMlp::forward`].
    pub(crate) fn output<'s>(&self, hs: &'s [f32], cols: usize) -> &'s [f32] {
        &hs[self.h_at[self.g.widths.len() - 1]..][..self.g.output_width() * cols]
    }

    /// Back-propagates the cotangent of twin `t`'s output, held in `bufs.0[..w_L·cols]`,
    /// through the activation stack `hs` of [`TileMlp::forward`]: layer by layer from the
    /// top, with `gpre = g ⊙ act′`, `∂W += h · gpreᵀ`, `∂b += Σ gpre` (into `grads`, the
    /// net's flat layout) and `g ← W · gpre`; the input's cotangent is added to `gx`
    /// (`w₀ × cols`). `bufs` are two scratch tiles of the widest layer.
    #[inline(always)]
    pub(crate) fn backward(
        &self,
        t: usize,
        cols: usize,
        hs: &[f32],
        bufs: (&mut [f32], &mut [f32]),
        grads: &mut [f32],
        gx: &mut [f32],
    ) {
        let (g, h_at, exec) = (self.g, &self.h_at, self.exec);
        let (ga, gb) = bufs;
        for l in (0..g.widths.len() - 1).rev() {
            let (wi, wo) = (g.widths[l], g.widths[l + 1]);
            let y = &hs[h_at[l + 1]..h_at[l + 1] + wo * cols];
            g.act(l)
                .chain_slice(&mut gb[..wo * cols], y, &ga[..wo * cols]);
            // Before the GEMMs, which would carry them below the normal range.
            for v in gb[..wo * cols].iter_mut() {
                *v = flush(*v, TINY);
            }
            let gpre = &gb[..wo * cols];
            let (w_off, b_off) = self.layout[l];
            for (b, row) in grads[b_off + t * wo..][..wo]
                .iter_mut()
                .zip(gpre.chunks_exact(cols))
            {
                *b += sum(row);
            }
            let h = &hs[h_at[l]..h_at[l] + wi * cols];
            let gw = &mut grads[w_off + t * wi * wo..][..wi * wo];
            gemm_abt(exec, wi, wo, cols, h, gpre, gw);
            let w = &self.params[w_off + t * wi * wo..][..wi * wo];
            if l == 0 {
                gemm_acc(exec, wi, cols, wo, w, gpre, gx);
            } else {
                let ga = &mut ga[..wi * cols];
                ga.fill(0.0);
                gemm_acc(exec, wi, cols, wo, w, gpre, ga);
            }
        }
    }
}

/// Per-task buffers of [`mlp_backward`].
struct MlpScratch {
    xt: Vec<f32>,
    hs: Vec<f32>,
    ga: Vec<f32>,
    gb: Vec<f32>,
    gxt: Vec<f32>,
    grads: Vec<f32>,
}
