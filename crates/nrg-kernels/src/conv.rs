//! The periodic convolution with bias and activation, forward and backward, on `f32`
//! slices — the same as burn's `Conv2d` with circular padding `p = ⌊k/2⌋`:
//!
//! ```text
//! pre[b,o,y,x] = bias[o] + Σ_{i,u,v} w[o,i,u,v] · in[b,i,(y+u−p) mod H,(x+v−p) mod W]
//! out = act(pre)
//! ```
//!
//! Shapes: input `[B, cin, H, W]`, weight `[cout, cin, k, k]` (`k` odd), bias `[cout]`,
//! output `[B, cout, H, W]`, all row-major. Two algorithms ([`crate::ConvPath`]): the direct one
//! reads its taps straight from a wrapped copy of each plane when a row is a whole number of
//! SIMD vectors (the input gradient is then the same kernel with the flipped, transposed
//! weights); the unfolded one turns each sample into a `[cin·k², H·W]` matrix and multiplies.
//! The batch is split over threads in chunks of 16 samples.

use crate::activation::Activation;
use crate::exec::{Exec, lanes};
use crate::gemm::{gemm_abt, gemm_acc, sum, transposed};
use crate::parallel::{ORDERED, add_pairs};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

/// Samples per parallel task of the convolution (large enough to amortise the scratch).
const CONV_CHUNK: usize = 16;

/// Geometry of a periodic convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Lattice rows `H`.
    pub rows: usize,
    /// Lattice columns `W`.
    pub cols: usize,
    /// Odd kernel size `k`.
    pub kernel: usize,
}

impl ConvGeometry {
    /// Sites of a plane, `H · W`.
    pub fn sites(&self) -> usize {
        self.rows * self.cols
    }
    /// Sites of a plane wrapped by `p = ⌊k/2⌋` on each side: `(H + 2p)(W + 2p)`.
    pub fn padded_sites(&self) -> usize {
        let p = self.kernel / 2;
        (self.rows + 2 * p) * (self.cols + 2 * p)
    }
    /// Rows of the unfolded input: `cin · k · k`.
    pub fn taps(&self) -> usize {
        self.cin * self.kernel * self.kernel
    }

    /// Panics with a message unless the kernel is odd and every size positive (a batch of
    /// 0 is allowed).
    fn check(&self) {
        assert!(
            self.kernel % 2 == 1,
            "conv: the kernel size must be odd, not {}",
            self.kernel
        );
        assert!(
            self.cin >= 1 && self.cout >= 1 && self.rows >= 1 && self.cols >= 1,
            "conv: channels and lattice sizes must be positive ({self:?})"
        );
    }
}

/// Wraps one `[H, W]` plane into `pad[(H+2p) × (W+2p)]`, `pad[yy, xx] = plane[(yy−p) mod H,
/// (xx−p) mod W]`.
#[inline(always)]
fn pad_plane(g: &ConvGeometry, plane: &[f32], pad: &mut [f32]) {
    let (h, w, p) = (g.rows, g.cols, g.kernel / 2);
    let wp = w + 2 * p;
    if p <= h && p <= w {
        // Source rows h−p … h−1, 0 … h−1, 0 … p−1, each wrapped by p columns.
        let rows = plane[(h - p) * w..h * w]
            .chunks_exact(w)
            .chain(plane[..h * w].chunks_exact(w))
            .chain(plane[..p * w].chunks_exact(w));
        for (dst, src) in pad.chunks_exact_mut(wp).zip(rows) {
            let (left, rest) = dst.split_at_mut(p);
            let (mid, right) = rest.split_at_mut(w);
            if p == 1 {
                // 3×3 kernels: two moves, not two calls of `memcpy`.
                left[0] = src[w - 1];
                right[0] = src[0];
            } else {
                left.copy_from_slice(&src[w - p..]);
                right.copy_from_slice(&src[..p]);
            }
            copy_row(mid, src);
        }
        return;
    }
    // A kernel wider than the lattice wraps more than once.
    for yy in 0..h + 2 * p {
        let src = &plane[((yy + h * p - p) % h) * w..][..w];
        let dst = &mut pad[yy * wp..(yy + 1) * wp];
        for (xx, d) in dst.iter_mut().enumerate() {
            *d = src[(xx + w * p - p) % w];
        }
    }
}

/// `dst = src` for a row of the lattice (fixed-size moves for the common widths).
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    // Whole-array moves: a slice `copy_from_slice` of a run-time length calls `memcpy`,
    // which costs more than the copy at these sizes.
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32]) {
        let d: &mut [f32; N] = dst.try_into().expect("a row of N");
        *d = *<&[f32; N]>::try_from(&src[..N]).expect("a row of N");
    }
    match dst.len() {
        4 => fixed::<4>(dst, src),
        8 => fixed::<8>(dst, src),
        16 => fixed::<16>(dst, src),
        32 => fixed::<32>(dst, src),
        n => {
            for (d, s) in dst.iter_mut().zip(&src[..n]) {
                *d = *s;
            }
        }
    }
}

/// `dst += src` on equal-length slices.
#[inline(always)]
fn add_row(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// Unfolds one sample `[cin, H, W]` into `cols[(i·k + u)·k + v][y·W + x] =
/// in[i, (y+u−p) mod H, (x+v−p) mod W]`, through a wrapped copy of each plane.
#[inline(always)]
fn unfold(g: &ConvGeometry, input: &[f32], pad: &mut [f32], cols: &mut [f32]) {
    let (h, w, k) = (g.rows, g.cols, g.kernel);
    let (hw, wp) = (h * w, w + 2 * (k / 2));
    for (i, plane) in input.chunks_exact(hw).enumerate() {
        pad_plane(g, plane, pad);
        for u in 0..k {
            for v in 0..k {
                let row = &mut cols[((i * k + u) * k + v) * hw..][..hw];
                for y in 0..h {
                    copy_row(&mut row[y * w..(y + 1) * w], &pad[(y + u) * wp + v..]);
                }
            }
        }
    }
}

/// The adjoint of [`unfold`]: `grad_in[i, (y+u−p) mod H, (x+v−p) mod W] += cols[(i,u,v)][y, x]`,
/// accumulated on a padded plane and wrapped back.
#[inline(always)]
fn fold_add(g: &ConvGeometry, cols: &[f32], pad: &mut [f32], grad_in: &mut [f32]) {
    let (h, w, k) = (g.rows, g.cols, g.kernel);
    let p = k / 2;
    let (hw, wp) = (h * w, w + 2 * p);
    for (i, plane) in grad_in.chunks_exact_mut(hw).enumerate() {
        pad.fill(0.0);
        for u in 0..k {
            for v in 0..k {
                let row = &cols[((i * k + u) * k + v) * hw..][..hw];
                for y in 0..h {
                    add_row(&mut pad[(y + u) * wp + v..][..w], &row[y * w..(y + 1) * w]);
                }
            }
        }
        for yy in 0..h + 2 * p {
            let dst = &mut plane[((yy + h * p - p) % h) * w..][..w];
            let src = &pad[yy * wp..(yy + 1) * wp];
            // Padded columns xx < p wrap to w − p + xx, xx ≥ p + w to xx − p − w.
            if p <= w {
                add_row(&mut dst[w - p..], &src[..p]);
                add_row(dst, &src[p..p + w]);
                add_row(&mut dst[..p], &src[p + w..]);
            } else {
                for (xx, s) in src.iter().enumerate() {
                    dst[(xx + w * p - p) % w] += s;
                }
            }
        }
    }
}

/// Offsets of the taps `(i, u, v)` in a stack of wrapped planes `[cin, H+2p, W+2p]`:
/// `i·(H+2p)(W+2p) + u·(W+2p) + v`; adding `y·(W+2p) + x` reads `in[i, y+u−p, x+v−p]`.
fn tap_offsets(g: &ConvGeometry, channels: usize) -> Vec<usize> {
    let (k, wp) = (g.kernel, g.cols + 2 * (g.kernel / 2));
    let plane = g.padded_sites();
    let mut off = Vec::with_capacity(channels * k * k);
    for i in 0..channels {
        for u in 0..k {
            for v in 0..k {
                off.push(i * plane + u * wp + v);
            }
        }
    }
    off
}

/// The register tiles of a `rows × len` block: rows in groups of `m ≤ 4`, then `len` in
/// steps of `width[m − 1]` while whole ones fit and of 1 after; yields
/// `(first row, m, first column, whole)` for each. An iterator, not a callback, so that the
/// kernel's `match` on the tile shape stays in the SIMD context (a closure body may be
/// compiled outside it, and then every intrinsic becomes a call).
struct Tiles {
    rows: usize,
    len: usize,
    width: [usize; 4],
    r0: usize,
    j: usize,
}

impl Tiles {
    fn new(rows: usize, len: usize, width: [usize; 4]) -> Self {
        Tiles {
            rows,
            len,
            width,
            r0: 0,
            j: 0,
        }
    }
}

impl Iterator for Tiles {
    type Item = (usize, usize, usize, bool);

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.j >= self.len {
            // Row groups are 4 rows but the last, so this passes `rows` after the last.
            self.r0 += 4;
            self.j = 0;
        }
        if self.r0 >= self.rows || self.len == 0 {
            return None;
        }
        let m = (self.rows - self.r0).min(4);
        let w = self.width[m - 1];
        let whole = self.j + w <= self.len;
        let tile = (self.r0, m, self.j, whole);
        self.j += if whole { w } else { 1 };
        Some(tile)
    }
}

/// Direct periodic convolution of one sample, without unfolding:
/// `out[o, y·W + x] += Σ_t w[o, t] · pad[off[t] + y·(W+2p) + x]` over the taps `t`, read
/// straight from the wrapped planes. Needs `W` to be a multiple of the SIMD width; vector
/// `j` of a plane starts at `at[j] = (pad offset, output offset)`. Register tiles of `M`
/// output channels × `V` vectors (`M·V = 8` sums, `V` inputs and one weight in registers).
struct DirectConv<'a> {
    cout: usize,
    hw: usize,
    at: &'a [(usize, usize)],
    off: &'a [usize],
    pad: &'a [f32],
    weight: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for DirectConv<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let mut this = self;
        let taps = this.off.len();
        assert!(
            this.weight.len() >= this.cout * taps && this.out.len() >= this.cout * this.hw,
            "direct convolution: weight or output slice too short"
        );
        assert!(
            this.at.len() * lanes::<S>() == this.hw,
            "direct convolution: a plane must be a whole number of vectors"
        );
        // What a vector reads from the wrapped planes: `max(off) + lanes` floats.
        let window = this.off.iter().max().map_or(0, |&m| m + lanes::<S>());
        // M·V = 8 sums, V inputs and one weight in registers.
        for (o0, m, j, full) in Tiles::new(this.cout, this.at.len(), [8, 4, 2, 2]) {
            match (m, full) {
                (4, true) => this.tile::<S, 4, 2>(simd, o0, j, window),
                (3, true) => this.tile::<S, 3, 2>(simd, o0, j, window),
                (2, true) => this.tile::<S, 2, 4>(simd, o0, j, window),
                (1, true) => this.tile::<S, 1, 8>(simd, o0, j, window),
                (4, false) => this.tile::<S, 4, 1>(simd, o0, j, window),
                (3, false) => this.tile::<S, 3, 1>(simd, o0, j, window),
                (2, false) => this.tile::<S, 2, 1>(simd, o0, j, window),
                _ => this.tile::<S, 1, 1>(simd, o0, j, window),
            }
        }
    }
}

impl DirectConv<'_> {
    /// Output channels `o0 .. o0+M` × vectors `j0 .. j0+V`.
    ///
    /// Bounds are checked once per tile, not per load: each vector reads a window of the
    /// wrapped planes `pad[at.0 .. at.0 + max(off) + lanes]` and each output channel one
    /// weight row of `taps` entries, so inside the tap loop only the window check remains
    /// (without this the loop was a dozen compare-and-branch pairs and register spills
    /// around eight FMAs).
    #[inline(always)]
    fn tile<S: Simd, const M: usize, const V: usize>(
        &mut self,
        simd: S,
        o0: usize,
        j0: usize,
        window: usize,
    ) {
        let lanes = lanes::<S>();
        let taps = self.off.len();
        let load = |s: &[f32]| -> S::f32s { bytemuck::cast_slice::<f32, S::f32s>(s)[0] };
        let zero = simd.splat_f32s(0.0);
        let mut sums = [[zero; V]; M];
        let at: [(usize, usize); V] = core::array::from_fn(|q| self.at[j0 + q]);
        let wins: [&[f32]; V] = core::array::from_fn(|q| &self.pad[at[q].0..at[q].0 + window]);
        let rows: [&[f32]; M] =
            core::array::from_fn(|r| &self.weight[(o0 + r) * taps..(o0 + r + 1) * taps]);
        for (t, &base) in self.off.iter().enumerate() {
            // Plain loops for SIMD values, as everywhere in these kernels: the body of a
            // closure may be compiled outside the SIMD context.
            let mut b = [zero; V];
            for (b_q, win) in b.iter_mut().zip(&wins) {
                *b_q = load(&win[base..base + lanes]);
            }
            for (sums_r, row) in sums.iter_mut().zip(&rows) {
                let a = simd.splat_f32s(row[t]);
                for (s_rq, b_q) in sums_r.iter_mut().zip(&b) {
                    *s_rq = simd.mul_add_e_f32s(a, *b_q, *s_rq);
                }
            }
        }
        for (r, sums_r) in sums.iter().enumerate() {
            let row = &mut self.out[(o0 + r) * self.hw..(o0 + r + 1) * self.hw];
            for (q, v) in sums_r.iter().enumerate() {
                let o: &mut [S::f32s] =
                    bytemuck::cast_slice_mut(&mut row[at[q].1..at[q].1 + lanes]);
                o[0] = simd.add_f32s(o[0], *v);
            }
        }
    }
}

/// Where the SIMD vectors of a plane start: `(y·(W+2p) + x, y·W + x)` for `x` in steps of
/// `lanes` (the pad offset and the output offset).
fn vector_starts(g: &ConvGeometry, lanes: usize) -> Vec<(usize, usize)> {
    let stride = g.cols + 2 * (g.kernel / 2);
    (0..g.rows)
        .flat_map(|y| {
            (0..g.cols)
                .step_by(lanes)
                .map(move |x| (y * stride + x, y * g.cols + x))
        })
        .collect()
}

/// The weight gradient of [`DirectConv`] for one sample, accumulated in vector lanes:
/// `acc[t, o] += Σ_{y, x} g[o, y·W + x] · pad[off[t] + y·(W+2p) + x]`, lane by lane
/// (`acc` is `[taps, cout, lanes]`; the caller sums the lanes once per task). Vector `j` of
/// a plane starts at `at[j] = (pad offset, j·lanes)`, as in [`DirectConv`].
struct DirectConvWeightGrad<'a> {
    cout: usize,
    at: &'a [(usize, usize)],
    off: &'a [usize],
    pad: &'a [f32],
    grad: &'a [f32],
    acc: &'a mut [f32],
}

impl WithSimd for DirectConvWeightGrad<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let mut this = self;
        let (lanes, taps) = (lanes::<S>(), this.off.len());
        assert!(
            this.at.iter().enumerate().all(|(j, a)| a.1 == j * lanes),
            "direct convolution backward: vector starts must step by the lanes"
        );
        assert!(
            this.grad.len() >= this.cout * this.at.len() * lanes,
            "direct convolution backward: cotangent slice too short"
        );
        assert!(
            this.acc.len() >= taps * this.cout * lanes,
            "direct convolution backward: accumulator too short"
        );
        // m output channels × w taps: m·w ≤ 10 independent sums, m loaded cotangents and
        // one input vector fit the 16 vector registers of AVX2.
        for (o0, m, t0, full) in Tiles::new(this.cout, taps, [10, 5, 3, 2]) {
            match (m, full) {
                (4, true) => this.tile::<S, 4, 2>(simd, o0, t0),
                (3, true) => this.tile::<S, 3, 3>(simd, o0, t0),
                (2, true) => this.tile::<S, 2, 5>(simd, o0, t0),
                (1, true) => this.tile::<S, 1, 10>(simd, o0, t0),
                (4, false) => this.tile::<S, 4, 1>(simd, o0, t0),
                (3, false) => this.tile::<S, 3, 1>(simd, o0, t0),
                (2, false) => this.tile::<S, 2, 1>(simd, o0, t0),
                _ => this.tile::<S, 1, 1>(simd, o0, t0),
            }
        }
    }
}

impl DirectConvWeightGrad<'_> {
    /// Output channels `o0 .. o0+M` × taps `t0 .. t0+T`, over all sites. As in
    /// [`DirectConv::tile`], bounds are checked per tile: the cotangent rows are viewed as
    /// vectors and each tap reads one window `pad[off[t] .. off[t] + max(at.0) + lanes]`.
    #[inline(always)]
    fn tile<S: Simd, const M: usize, const T: usize>(&mut self, simd: S, o0: usize, t0: usize) {
        let lanes = lanes::<S>();
        let n = self.at.len();
        let hw = n * lanes;
        let span = self.at.last().map_or(0, |&(p, _)| p + lanes);
        let load = |s: &[f32]| -> S::f32s { bytemuck::cast_slice::<f32, S::f32s>(s)[0] };
        let zero = simd.splat_f32s(0.0);
        let mut sums = [[zero; T]; M];
        let grads: [&[S::f32s]; M] = core::array::from_fn(|r| {
            &bytemuck::cast_slice::<f32, S::f32s>(&self.grad[(o0 + r) * hw..(o0 + r + 1) * hw])[..n]
        });
        let wins: [&[f32]; T] = core::array::from_fn(|q| {
            let base = self.off[t0 + q];
            &self.pad[base..base + span]
        });
        for (j, &(p, _)) in self.at.iter().enumerate() {
            let mut a = [zero; M];
            for (a_r, g) in a.iter_mut().zip(&grads) {
                *a_r = g[j];
            }
            for (q, win) in wins.iter().enumerate() {
                let b = load(&win[p..p + lanes]);
                for r in 0..M {
                    sums[r][q] = simd.mul_add_e_f32s(a[r], b, sums[r][q]);
                }
            }
        }
        for (r, sums_r) in sums.iter().enumerate() {
            for (q, v) in sums_r.iter().enumerate() {
                let at = ((t0 + q) * self.cout + o0 + r) * lanes;
                let slot: &mut [S::f32s] = bytemuck::cast_slice_mut(&mut self.acc[at..at + lanes]);
                slot[0] = simd.add_f32s(slot[0], *v);
            }
        }
    }
}

/// Forward periodic convolution: `input [B, cin, H, W]`, `weight [cout, cin, k, k]`,
/// `bias [cout]` → `act(pre)` `[B, cout, H, W]`. Per sample, on the direct path
/// ([`Exec::direct_convolution`]): the taps read from the wrapped planes; unfolded: unfold,
/// then `out[cout × hw] = W[cout × taps] · cols[taps × hw]`.
///
/// # Panics
///
/// If a slice's length does not match `g`, or [`crate::ConvPath::Direct`] is forced on rows
/// that are not a whole number of SIMD vectors.
pub fn conv_forward(
    exec: Exec,
    g: &ConvGeometry,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    act: Activation,
) -> Vec<f32> {
    g.check();
    let (hw, taps) = (g.sites(), g.taps());
    assert_eq!(input.len(), g.batch * g.cin * hw, "conv input length");
    assert_eq!(weight.len(), g.cout * taps, "conv weight length");
    assert_eq!(bias.len(), g.cout, "conv bias length");
    let direct = Direct::new(exec, g);
    let pad_len = g.padded_sites();
    let mut out = vec![0.0f32; g.batch * g.cout * hw];
    out.par_chunks_mut(CONV_CHUNK * g.cout * hw)
        .zip(input.par_chunks(CONV_CHUNK * g.cin * hw))
        .for_each(|(out, input)| {
            exec.dispatch(|| {
                // Direct: every input plane wrapped; unfolding: one wrapped plane at a time.
                let mut pad = vec![0.0f32; if direct.is_some() { g.cin } else { 1 } * pad_len];
                let mut cols = vec![0.0f32; if direct.is_some() { 0 } else { taps * hw }];
                for (o_s, i_s) in out
                    .chunks_exact_mut(g.cout * hw)
                    .zip(input.chunks_exact(g.cin * hw))
                {
                    for (o, acc) in o_s.chunks_exact_mut(hw).enumerate() {
                        acc.fill(bias[o]);
                    }
                    match &direct {
                        Some(d) => {
                            pad_planes(g, i_s, &mut pad);
                            exec.dispatch(DirectConv {
                                cout: g.cout,
                                hw,
                                at: &d.at,
                                off: &d.off_in,
                                pad: &pad,
                                weight,
                                out: o_s,
                            });
                        }
                        None => {
                            unfold(g, i_s, &mut pad, &mut cols);
                            gemm_acc(exec, g.cout, hw, taps, weight, &cols, o_s);
                        }
                    }
                    act.apply_slice(exec, o_s);
                }
            })
        });
    out
}

/// What the direct convolution of [`conv_forward`] and [`conv_backward`] needs, per call:
/// the SIMD vectors of a plane, the tap offsets into the wrapped input and output planes.
/// `None` where the unfolded path runs instead: a row that is not a multiple of the SIMD
/// width, or [`crate::ConvPath::Unfolded`] forced.
struct Direct {
    lanes: usize,
    at: Vec<(usize, usize)>,
    off_in: Vec<usize>,
    off_out: Vec<usize>,
}

impl Direct {
    fn new(exec: Exec, g: &ConvGeometry) -> Option<Self> {
        let lanes = exec.lanes();
        exec.direct_convolution(g.cols).then(|| Direct {
            lanes,
            at: vector_starts(g, lanes),
            off_in: tap_offsets(g, g.cin),
            off_out: tap_offsets(g, g.cout),
        })
    }
}

/// Gradients of [`conv_forward`]: from the input, the weight, the output `y` and the
/// output's cotangent, returns `(∂L/∂input, ∂L/∂weight, ∂L/∂bias)`. Per sample, with
/// `gpre = ∂L/∂y ⊙ act′`, either directly (the weight gradient from the wrapped input,
/// and `∂in` as the forward convolution of the wrapped `gpre` with the flipped, transposed
/// kernel `w′[i, o, u, v] = w[o, i, k−1−u, k−1−v]`, since
/// `∂in[i, Y, X] = Σ_{o,u,v} w[o,i,u,v] · gpre[o, Y−u+p, X−v+p]`), or by unfolding:
/// `∂W += gpre · colsᵀ`, `∂cols = Wᵀ · gpre` folded back onto the input sites. Weight and
/// bias gradients are summed in `f32`, per parallel task first, in a fixed order.
///
/// # Panics
///
/// As [`conv_forward`].
pub fn conv_backward(
    exec: Exec,
    g: &ConvGeometry,
    input: &[f32],
    weight: &[f32],
    output: &[f32],
    grad_output: &[f32],
    act: Activation,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    g.check();
    let (hw, taps, k) = (g.sites(), g.taps(), g.kernel);
    assert_eq!(input.len(), g.batch * g.cin * hw, "conv input length");
    assert_eq!(weight.len(), g.cout * taps, "conv weight length");
    assert_eq!(output.len(), g.batch * g.cout * hw, "conv output length");
    assert_eq!(grad_output.len(), output.len(), "conv cotangent length");
    let direct = Direct::new(exec, g);
    let pad_len = g.padded_sites();
    // Direct: the flipped kernel `[cin, cout·k·k]`; unfolding: `Wᵀ` `[taps, cout]`.
    let weight_t = match direct {
        Some(_) => {
            let mut flipped = vec![0.0f32; g.cin * g.cout * k * k];
            for o in 0..g.cout {
                for i in 0..g.cin {
                    for u in 0..k {
                        for v in 0..k {
                            flipped[((i * g.cout + o) * k + (k - 1 - u)) * k + (k - 1 - v)] =
                                weight[((o * g.cin + i) * k + u) * k + v];
                        }
                    }
                }
            }
            flipped
        }
        None => transposed(weight, g.cout, taps),
    };
    let mut grad_input = vec![0.0f32; g.batch * g.cin * hw];
    let (grad_weight, grad_bias) = grad_input
        .par_chunks_mut(CONV_CHUNK * g.cin * hw)
        .zip(input.par_chunks(CONV_CHUNK * g.cin * hw))
        .zip(output.par_chunks(CONV_CHUNK * g.cout * hw))
        .zip(grad_output.par_chunks(CONV_CHUNK * g.cout * hw))
        .with_max_len(ORDERED)
        .map(|(((gi, x), y), gy)| {
            exec.dispatch(|| {
                let mut gpre = vec![0.0f32; g.cout * hw];
                let mut gb = vec![0.0f32; g.cout];
                // Direct: wrapped input and cotangent planes and the weight gradient in
                // vector lanes `[taps, cout, lanes]`; unfolding: one wrapped plane, the
                // unfolded sample and the weight gradient `[cout, taps]`.
                let (pads_in, pads_out, gw_len, cols_len) = match &direct {
                    Some(d) => (g.cin, g.cout, taps * g.cout * d.lanes, 0),
                    None => (1, 0, g.cout * taps, taps * hw),
                };
                let mut pad = vec![0.0f32; pads_in * pad_len];
                let mut pad_out = vec![0.0f32; pads_out * pad_len];
                let mut gw = vec![0.0f32; gw_len];
                let mut cols = vec![0.0f32; cols_len];
                let samples = gi
                    .chunks_exact_mut(g.cin * hw)
                    .zip(x.chunks_exact(g.cin * hw))
                    .zip(y.chunks_exact(g.cout * hw))
                    .zip(gy.chunks_exact(g.cout * hw));
                for (((gi_s, x_s), y_s), gy_s) in samples {
                    act.chain_slice(&mut gpre, y_s, gy_s);
                    for (o, b) in gb.iter_mut().enumerate() {
                        *b += sum(&gpre[o * hw..(o + 1) * hw]);
                    }
                    match &direct {
                        Some(d) => {
                            pad_planes(g, x_s, &mut pad);
                            exec.dispatch(DirectConvWeightGrad {
                                cout: g.cout,
                                at: &d.at,
                                off: &d.off_in,
                                pad: &pad,
                                grad: &gpre,
                                acc: &mut gw,
                            });
                            pad_planes(g, &gpre, &mut pad_out);
                            exec.dispatch(DirectConv {
                                cout: g.cin,
                                hw,
                                at: &d.at,
                                off: &d.off_out,
                                pad: &pad_out,
                                weight: &weight_t,
                                out: gi_s,
                            });
                        }
                        None => {
                            unfold(g, x_s, &mut pad, &mut cols);
                            gemm_abt(exec, g.cout, taps, hw, &gpre, &cols, &mut gw);
                            cols.fill(0.0);
                            gemm_acc(exec, taps, hw, g.cout, &weight_t, &gpre, &mut cols);
                            fold_add(g, &cols, &mut pad, gi_s);
                        }
                    }
                }
                if let Some(d) = &direct {
                    // [taps, cout, lanes] → [cout, taps].
                    let mut sums = vec![0.0f32; g.cout * taps];
                    for (tc, lane_sums) in gw.chunks_exact(d.lanes).enumerate() {
                        sums[(tc % g.cout) * taps + tc / g.cout] = lane_sums.iter().sum();
                    }
                    gw = sums;
                }
                (gw, gb)
            })
        })
        .reduce(
            || (vec![0.0f32; g.cout * taps], vec![0.0f32; g.cout]),
            add_pairs,
        );
    (grad_input, grad_weight, grad_bias)
}

/// Wraps the `channels` planes of one sample into `pads` (`[channels, H+2p, W+2p]`).
#[inline(always)]
fn pad_planes(g: &ConvGeometry, sample: &[f32], pads: &mut [f32]) {
    let (hw, pad_len) = (g.sites(), g.padded_sites());
    for (plane, pad) in sample.chunks_exact(hw).zip(pads.chunks_exact_mut(pad_len)) {
        pad_plane(g, plane, pad);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The register tiles cover a `rows × len` block exactly once, in groups of at most 4
    /// rows, whole tiles `width[m − 1]` wide and partial ones 1 wide.
    #[test]
    fn tiles_cover_the_block_once() {
        for (rows, len) in [(8, 72), (5, 18), (2, 8), (1, 9), (3, 1), (0, 4), (4, 0)] {
            let width = [10, 5, 3, 2];
            let mut hits = vec![0u32; rows * len];
            for (r0, m, j, whole) in Tiles::new(rows, len, width) {
                assert!((1..=4).contains(&m) && r0 + m <= rows);
                let w = if whole { width[m - 1] } else { 1 };
                assert!(j + w <= len);
                for r in r0..r0 + m {
                    for c in j..j + w {
                        hits[r * len + c] += 1;
                    }
                }
            }
            assert!(hits.iter().all(|&h| h == 1), "{rows} × {len}: {hits:?}");
        }
    }
}
