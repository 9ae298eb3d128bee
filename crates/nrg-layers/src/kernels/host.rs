//! Host (CPU) implementations of the fused kernels on plain `f32` slices.
//!
//! These are the arithmetic of [`super`]'s operations and their backward passes, written
//! once on contiguous row-major buffers so that they can be tested against brute force
//! without any tensor library. Work is split over the batch with rayon; the inner loops run
//! inside [`pulp::Arch::dispatch`], which compiles them for the widest SIMD extension the
//! processor has (AVX2/FMA, AVX-512, NEON) and picks one at run time.
//!
//! The convolution reads its taps straight from a wrapped copy of each plane when a row is a
//! multiple of the SIMD width (the input gradient is then the same kernel with the flipped,
//! transposed weights); other shapes unfold each sample into a `[cin·k², H·W]` matrix.
//!
//! Conventions (the same as burn's `Conv2d` with periodic padding `p = ⌊k/2⌋`):
//!
//! ```text
//! pre[b,o,y,x] = bias[o] + Σ_{i,u,v} w[o,i,u,v] · in[b,i,(y+u−p) mod H,(x+v−p) mod W]
//! out = act(pre)
//! ```
//!
//! and for the twin dense layer (`G` = 1 shared input or 2 inputs, one per twin), whose
//! activations are stored feature-major (`[·, features, N]`, the batch along the fast axis,
//! so that SIMD runs along the batch even for widths of 2–10):
//!
//! ```text
//! pre[t,j,n] = bias[t,j] + Σ_i in[min(t, G−1),i,n] · w[t,i,j],   out = act(pre)
//! ```

use super::Activation;
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

/// Samples per parallel task of the convolution (large enough to amortise the scratch).
const CONV_CHUNK: usize = 16;
/// Batch columns per tile of the dense layer (a tile's copies stay in the L1/L2 cache).
pub(crate) const DENSE_TILE: usize = 256;
/// `with_max_len(ORDERED)` on a parallel loop that sums partial gradients: rayon then
/// splits it down to single tasks at fixed midpoints, so every partial sum covers the
/// same tasks and is added in the same order whichever thread ran it — the result is the
/// same to the last bit from run to run (a plain `fold`/`reduce` groups tasks by how the
/// work happened to be stolen).
pub(crate) const ORDERED: usize = 1;

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
    fn sites(&self) -> usize {
        self.rows * self.cols
    }
    /// Sites of a plane wrapped by `p = ⌊k/2⌋` on each side: `(H + 2p)(W + 2p)`.
    fn padded_sites(&self) -> usize {
        let p = self.kernel / 2;
        (self.rows + 2 * p) * (self.cols + 2 * p)
    }
    /// Rows of the unfolded input: `cin · k · k`.
    fn taps(&self) -> usize {
        self.cin * self.kernel * self.kernel
    }
}

impl Activation {
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            Activation::LeakyRelu(slope) => {
                if v > 0.0 {
                    v
                } else {
                    slope * v
                }
            }
            Activation::Elu => {
                if v > 0.0 {
                    v
                } else {
                    expm1_nonpositive(v)
                }
            }
        }
    }

    /// `y ← act(y)` on a slice (the match outside the loop, so that the loop vectorises;
    /// ELU through the SIMD [`EluSlice`] on the caller's `arch`).
    #[inline(always)]
    fn apply_slice(self, arch: Arch, ys: &mut [f32]) {
        match self {
            Activation::Identity => {}
            Activation::LeakyRelu(slope) => {
                for v in ys.iter_mut() {
                    *v = if *v > 0.0 { *v } else { slope * *v };
                }
            }
            Activation::Elu => arch.dispatch(EluSlice(ys)),
        }
    }

    /// `d = g ⊙ act′(pre)` from the outputs `y = act(pre)` and their cotangents `g`: both
    /// activations are increasing, so `pre > 0 ⇔ y > 0`, and `elu′(pre) = e^{pre} = y + 1`
    /// for `pre ≤ 0`.
    #[inline(always)]
    fn chain_slice(self, d: &mut [f32], ys: &[f32], gs: &[f32]) {
        match self {
            Activation::Identity => d.copy_from_slice(gs),
            Activation::LeakyRelu(slope) => {
                for ((d, &y), &g) in d.iter_mut().zip(ys).zip(gs) {
                    *d = if y > 0.0 { g } else { slope * g };
                }
            }
            Activation::Elu => {
                for ((d, &y), &g) in d.iter_mut().zip(ys).zip(gs) {
                    *d = if y > 0.0 { g } else { (y + 1.0) * g };
                }
            }
        }
    }
}

/// `log₂ e`, and `ln 2` split into a part exact in `f32` products and a remainder.
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// `1.5 · 2²³`: adding it rounds an `f32` of magnitude < 2²² to an integer, which then sits
/// in the low mantissa bits (`bits(MAGIC + n) = MAGIC_BITS + n`).
const MAGIC: f32 = 12_582_912.0;
const MAGIC_BITS: u32 = 0x4B40_0000;
/// Taylor coefficients `1/k!`, `k = 2 … 7`, of `(eʳ − 1)/r − 1`.
const EXPM1_C: [f32; 6] = [
    0.5,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
];

/// `eˣ − 1`, branch-free so that it vectorises, for `x` clamped to `[−87, 88]` (`2ⁿ` stays
/// a normal `f32` for `n ∈ [−126, 127]`): `x = n ln 2 + r` with `|r| ≤ ln 2 / 2`,
/// `eʳ − 1 = q(r)` by its degree-7 Taylor polynomial (truncation < 6e-9 relative),
/// `eˣ − 1 = 2ⁿ q + (2ⁿ − 1)`, which keeps full relative accuracy near 0 (there `n = 0` and
/// the result is `q`). Below −87 the result is −1 to f32 precision.
#[inline(always)]
pub(crate) fn expm1_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x.mul_add(LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p = EXPM1_C[5];
    for &c in EXPM1_C[..5].iter().rev() {
        p = p.mul_add(r, c);
    }
    let q = r * p.mul_add(r, 1.0);
    let scale = f32::from_bits(t.to_bits().wrapping_add(127u32.wrapping_sub(MAGIC_BITS)) << 23);
    scale.mul_add(q, scale - 1.0)
}

/// `eˣ − 1` for `x ≤ 0` (ELU's negative branch); positive inputs are clamped to 0.
#[inline(always)]
fn expm1_nonpositive(x: f32) -> f32 {
    expm1_f32(x.min(0.0))
}

/// ELU in place on a slice, `y = x` for `x > 0` and `eˣ − 1` otherwise, with
/// [`expm1_f32`]'s arithmetic on whole SIMD vectors ([`expm1_simd`]) (the scalar tail uses the same
/// formula, so a value's result does not depend on its position).
struct EluSlice<'a>(&'a mut [f32]);

impl WithSimd for EluSlice<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (head, tail) = S::as_mut_simd_f32s(self.0);
        let k = ExpConsts::new(simd);
        let zero = simd.splat_f32s(0.0);
        for v in head.iter_mut() {
            let em1 = expm1_simd(simd, &k, simd.min_f32s(*v, zero));
            *v = simd.select_f32s(simd.greater_than_f32s(*v, zero), *v, em1);
        }
        for v in tail.iter_mut() {
            *v = Activation::Elu.apply(*v);
        }
    }
}

/// The constants of the vectorised `expm1`, splatted once per call.
pub(crate) struct ExpConsts<S: Simd> {
    lo: S::f32s,
    hi: S::f32s,
    log2e: S::f32s,
    magic: S::f32s,
    ln2_hi: S::f32s,
    ln2_lo: S::f32s,
    coef: [S::f32s; 6],
    pub(crate) one: S::f32s,
    bias: S::u32s,
    shift: S::u32s,
}

impl<S: Simd> ExpConsts<S> {
    #[inline(always)]
    pub(crate) fn new(simd: S) -> Self {
        Self {
            lo: simd.splat_f32s(-87.0),
            hi: simd.splat_f32s(88.0),
            log2e: simd.splat_f32s(LOG2E),
            magic: simd.splat_f32s(MAGIC),
            ln2_hi: simd.splat_f32s(-LN2_HI),
            ln2_lo: simd.splat_f32s(-LN2_LO),
            coef: EXPM1_C.map(|c| simd.splat_f32s(c)),
            one: simd.splat_f32s(1.0),
            bias: simd.splat_u32s(127u32.wrapping_sub(MAGIC_BITS)),
            shift: simd.splat_u32s(23),
        }
    }
}

/// [`expm1_f32`] on a SIMD vector (a generic function, not a closure, so that it is inlined
/// into the caller's target-feature context).
#[inline(always)]
pub(crate) fn expm1_simd<S: Simd>(simd: S, k: &ExpConsts<S>, x: S::f32s) -> S::f32s {
    let x = simd.min_f32s(simd.max_f32s(x, k.lo), k.hi);
    let t = simd.mul_add_e_f32s(x, k.log2e, k.magic);
    let n = simd.sub_f32s(t, k.magic);
    let r = simd.mul_add_e_f32s(n, k.ln2_lo, simd.mul_add_e_f32s(n, k.ln2_hi, x));
    let mut p = k.coef[5];
    for &c in k.coef[..5].iter().rev() {
        p = simd.mul_add_e_f32s(p, r, c);
    }
    let q = simd.mul_f32s(r, simd.mul_add_e_f32s(p, r, k.one));
    let bits = simd.add_u32s(simd.transmute_u32s_f32s(t), k.bias);
    let s = simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(bits, k.shift));
    simd.mul_add_e_f32s(s, q, simd.sub_f32s(s, k.one))
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

/// `out[m×t] += a[m×n] · b[t×n]ᵀ` (row-major; dot products along the rows), by tiles of
/// 4 rows of `a` sharing each loaded vector of `b`.
struct GemmAbt<'a> {
    m: usize,
    t: usize,
    n: usize,
    a: &'a [f32],
    b: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for GemmAbt<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        const MR: usize = 4;
        let GemmAbt { m, t, n, a, b, out } = self;
        assert!(a.len() >= m * n && b.len() >= t * n && out.len() >= m * t);
        let lanes = lanes::<S>();
        let full = n - n % lanes;
        let load = |s: &[f32]| -> S::f32s { bytemuck::cast_slice::<f32, S::f32s>(s)[0] };
        let zero = simd.splat_f32s(0.0);
        for r in 0..t {
            let brow = &b[r * n..(r + 1) * n];
            let mut i = 0;
            while i < m {
                let rows = (m - i).min(MR);
                let mut acc = [zero; MR];
                let mut j = 0;
                while j < full {
                    let bv = load(&brow[j..j + lanes]);
                    for (q, acc_q) in acc.iter_mut().enumerate().take(rows) {
                        let av = load(&a[(i + q) * n + j..(i + q) * n + j + lanes]);
                        *acc_q = simd.mul_add_e_f32s(av, bv, *acc_q);
                    }
                    j += lanes;
                }
                for (q, acc_q) in acc.iter().enumerate().take(rows) {
                    let mut sum = simd.reduce_sum_f32s(*acc_q);
                    for jj in full..n {
                        sum += a[(i + q) * n + jj] * brow[jj];
                    }
                    out[(i + q) * t + r] += sum;
                }
                i += rows;
            }
        }
    }
}

/// `out[m×n] += a[m×k] · b[k×n]`, row-major, by register tiles of 4 rows × 2 SIMD
/// vectors (the accumulators stay in vector registers; each loaded row piece of `b` feeds
/// four rows of `a` through fused multiply-adds where the processor has them).
struct GemmAcc<'a> {
    m: usize,
    n: usize,
    k: usize,
    a: &'a [f32],
    b: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for GemmAcc<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        const MR: usize = 4;
        let GemmAcc { m, n, k, a, b, out } = self;
        assert!(a.len() >= m * k && b.len() >= k * n && out.len() >= m * n);
        let lanes = lanes::<S>();
        let nr = 2 * lanes;
        let full_n = n - n % nr;
        let load = |s: &[f32]| -> S::f32s { bytemuck::cast_slice::<f32, S::f32s>(s)[0] };
        let zero = simd.splat_f32s(0.0);
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(MR);
            let mut j = 0;
            while j < full_n {
                let mut acc = [[zero; 2]; MR];
                if rows == MR {
                    for p in 0..k {
                        let piece = &b[p * n + j..p * n + j + nr];
                        let (b0, b1) = (load(&piece[..lanes]), load(&piece[lanes..]));
                        for (r, acc_r) in acc.iter_mut().enumerate() {
                            let av = simd.splat_f32s(a[(i + r) * k + p]);
                            acc_r[0] = simd.mul_add_e_f32s(av, b0, acc_r[0]);
                            acc_r[1] = simd.mul_add_e_f32s(av, b1, acc_r[1]);
                        }
                    }
                } else {
                    for p in 0..k {
                        let piece = &b[p * n + j..p * n + j + nr];
                        let (b0, b1) = (load(&piece[..lanes]), load(&piece[lanes..]));
                        for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                            let av = simd.splat_f32s(a[(i + r) * k + p]);
                            acc_r[0] = simd.mul_add_e_f32s(av, b0, acc_r[0]);
                            acc_r[1] = simd.mul_add_e_f32s(av, b1, acc_r[1]);
                        }
                    }
                }
                for (r, acc_r) in acc.iter().enumerate().take(rows) {
                    let o = &mut out[(i + r) * n + j..(i + r) * n + j + nr];
                    let o: &mut [S::f32s] = bytemuck::cast_slice_mut(o);
                    o[0] = simd.add_f32s(o[0], acc_r[0]);
                    o[1] = simd.add_f32s(o[1], acc_r[1]);
                }
                j += nr;
            }
            i += rows;
        }
        // Columns left over from the tiles.
        if full_n < n {
            for ii in 0..m {
                for p in 0..k {
                    let av = a[ii * k + p];
                    let row = &b[p * n + full_n..(p + 1) * n];
                    axpy(&mut out[ii * n + full_n..(ii + 1) * n], av, row);
                }
            }
        }
    }
}

/// SIMD lanes of `f32` on `arch` (8 with AVX2, 16 with AVX-512, 4 with NEON, 1 scalar).
fn f32_lanes(arch: Arch) -> usize {
    struct Lanes;
    impl WithSimd for Lanes {
        type Output = usize;
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) -> usize {
            lanes::<S>()
        }
    }
    arch.dispatch(Lanes)
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

/// `f32` lanes of the SIMD type `S`.
#[inline(always)]
fn lanes<S: Simd>() -> usize {
    core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>()
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
        assert!(this.weight.len() >= this.cout * taps && this.out.len() >= this.cout * this.hw);
        assert!(this.at.len() * lanes::<S>() == this.hw);
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
        assert!(this.at.iter().enumerate().all(|(j, a)| a.1 == j * lanes));
        assert!(this.grad.len() >= this.cout * this.at.len() * lanes);
        assert!(this.acc.len() >= taps * this.cout * lanes);
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

/// `out[m×n] += a[m×k] · b[k×n]` (see [`GemmAcc`]).
#[inline(always)]
pub(crate) fn gemm_acc(
    arch: Arch,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
) {
    arch.dispatch(GemmAcc { m, n, k, a, b, out });
}

/// `Σ xs` by eight interleaved partial sums, which the compiler keeps in one SIMD register
/// (a plain `iter().sum()` must add in order, one element at a time).
#[inline(always)]
pub(crate) fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `acc += a · x` on equal-length slices.
#[inline(always)]
fn axpy(acc: &mut [f32], a: f32, x: &[f32]) {
    for (s, v) in acc.iter_mut().zip(x) {
        *s += a * v;
    }
}

/// Forward periodic convolution: `input [B, cin, H, W]`, `weight [cout, cin, k, k]`,
/// `bias [cout]` → `act(pre)` `[B, cout, H, W]`. Per sample, rows a multiple of the SIMD
/// width: [`DirectConv`] on the wrapped planes; other rows: unfold, then
/// `out[cout × hw] = W[cout × taps] · cols[taps × hw]`.
pub fn conv_forward(
    g: &ConvGeometry,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    act: Activation,
) -> Vec<f32> {
    let (hw, taps) = (g.sites(), g.taps());
    assert_eq!(input.len(), g.batch * g.cin * hw, "conv input length");
    assert_eq!(weight.len(), g.cout * taps, "conv weight length");
    assert_eq!(bias.len(), g.cout, "conv bias length");
    let arch = Arch::new();
    let direct = Direct::new(arch, g);
    let pad_len = g.padded_sites();
    let mut out = vec![0.0f32; g.batch * g.cout * hw];
    out.par_chunks_mut(CONV_CHUNK * g.cout * hw)
        .zip(input.par_chunks(CONV_CHUNK * g.cin * hw))
        .for_each(|(out, input)| {
            arch.dispatch(|| {
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
                            arch.dispatch(DirectConv {
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
                            gemm_acc(arch, g.cout, hw, taps, weight, &cols, o_s);
                        }
                    }
                    act.apply_slice(arch, o_s);
                }
            })
        });
    out
}

/// What the direct convolution of [`conv_forward`] and [`conv_backward`] needs, per call:
/// the SIMD vectors of a plane, the tap offsets into the wrapped input and output planes.
/// `None` where a row is not a multiple of the SIMD width.
struct Direct {
    lanes: usize,
    at: Vec<(usize, usize)>,
    off_in: Vec<usize>,
    off_out: Vec<usize>,
}

impl Direct {
    fn new(arch: Arch, g: &ConvGeometry) -> Option<Self> {
        let lanes = f32_lanes(arch);
        g.cols.is_multiple_of(lanes).then(|| Direct {
            lanes,
            at: vector_starts(g, lanes),
            off_in: tap_offsets(g, g.cin),
            off_out: tap_offsets(g, g.cout),
        })
    }
}

/// Gradients of [`conv_forward`]: from the input, the weight, the output `y` and the
/// output's cotangent, returns `(∂L/∂input, ∂L/∂weight, ∂L/∂bias)`. Per sample, with
/// `gpre = ∂L/∂y ⊙ act′`, either directly ([`DirectConvWeightGrad`] on the wrapped input,
/// and `∂in` as the forward convolution of the wrapped `gpre` with the flipped, transposed
/// kernel `w′[i, o, u, v] = w[o, i, k−1−u, k−1−v]`, since
/// `∂in[i, Y, X] = Σ_{o,u,v} w[o,i,u,v] · gpre[o, Y−u+p, X−v+p]`), or by unfolding:
/// `∂W += gpre · colsᵀ`, `∂cols = Wᵀ · gpre` folded back onto the input sites. Weight and bias gradients are summed in `f32`, per parallel task first.
pub fn conv_backward(
    g: &ConvGeometry,
    input: &[f32],
    weight: &[f32],
    output: &[f32],
    grad_output: &[f32],
    act: Activation,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (hw, taps, k) = (g.sites(), g.taps(), g.kernel);
    assert_eq!(output.len(), g.batch * g.cout * hw, "conv output length");
    assert_eq!(grad_output.len(), output.len(), "conv cotangent length");
    let arch = Arch::new();
    let direct = Direct::new(arch, g);
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
            arch.dispatch(|| {
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
                            arch.dispatch(DirectConvWeightGrad {
                                cout: g.cout,
                                at: &d.at,
                                off: &d.off_in,
                                pad: &pad,
                                grad: &gpre,
                                acc: &mut gw,
                            });
                            pad_planes(g, &gpre, &mut pad_out);
                            arch.dispatch(DirectConv {
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
                            arch.dispatch(GemmAbt {
                                m: g.cout,
                                t: taps,
                                n: hw,
                                a: &gpre,
                                b: &cols,
                                out: &mut gw,
                            });
                            cols.fill(0.0);
                            gemm_acc(arch, taps, hw, g.cout, &weight_t, &gpre, &mut cols);
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

/// Sums the per-task `(∂W, ∂b)` partial gradients.
fn add_pairs(
    (mut wa, mut ba): (Vec<f32>, Vec<f32>),
    (wb, bb): (Vec<f32>, Vec<f32>),
) -> (Vec<f32>, Vec<f32>) {
    wa.iter_mut().zip(&wb).for_each(|(a, b)| *a += b);
    ba.iter_mut().zip(&bb).for_each(|(a, b)| *a += b);
    (wa, ba)
}

/// Geometry of a twin dense layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseGeometry {
    /// Input groups: 1 (shared by both twins) or 2 (one per twin).
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

/// The transpose `[cols, rows]` of the row-major `[rows, cols]` matrix `m` (weights, once
/// per call).
fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; rows * cols];
    for (r, row) in m.chunks_exact(cols).take(rows).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

/// The `[rows, n]` row-major `buf` cut into column tiles of `tile`: entry `k` holds the
/// `rows` row segments of columns `k·tile ..`, so tiles can be written in parallel.
pub(crate) fn column_tiles(
    buf: &mut [f32],
    rows: usize,
    n: usize,
    tile: usize,
) -> Vec<Vec<&mut [f32]>> {
    let mut tiles: Vec<Vec<&mut [f32]>> = (0..n.div_ceil(tile))
        .map(|_| Vec::with_capacity(rows))
        .collect();
    for row in buf.chunks_exact_mut(n).take(rows) {
        for (k, seg) in row.chunks_mut(tile).enumerate() {
            tiles[k].push(seg);
        }
    }
    tiles
}

/// Copies columns `c0 .. c0 + cols` of the `[rows, n]` row-major `src` into the contiguous
/// `[rows, cols]` tile `dst`.
#[inline(always)]
pub(crate) fn gather_columns(
    src: &[f32],
    rows: usize,
    n: usize,
    c0: usize,
    cols: usize,
    dst: &mut [f32],
) {
    for (r, d) in dst.chunks_exact_mut(cols).enumerate().take(rows) {
        d.copy_from_slice(&src[r * n + c0..r * n + c0 + cols]);
    }
}

/// Forward twin dense layer, feature-major: `input [G, in, N]`, `weight [T, in, out]`,
/// `bias [T, 1, out]` → `act(pre)` `[T, out, N]`. The batch goes in column tiles of
/// [`DENSE_TILE`]: `pre[out × R] = Wᵀ[out × in] · x[in × R]` by the SIMD GEMM on a
/// contiguous copy of the tile, the activation on whole vectors, the rows copied out.
pub fn dense_forward(
    g: &DenseGeometry,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    act: Activation,
) -> Vec<f32> {
    let (n, fi, fo, twins, groups) = (g.rows, g.input, g.output, g.twins, g.groups_in);
    assert_eq!(input.len(), groups * n * fi, "dense input length");
    assert_eq!(weight.len(), twins * fi * fo, "dense weight length");
    assert_eq!(bias.len(), twins * fo, "dense bias length");
    let mut out = vec![0.0f32; twins * n * fo];
    let arch = Arch::new();
    let wt: Vec<Vec<f32>> = weight
        .chunks_exact(fi * fo)
        .map(|w| transposed(w, fi, fo))
        .collect();
    // One parallel pass over column tiles of all twins' outputs (`[T·out, N]`); a shared
    // input tile is gathered once for both twins.
    column_tiles(&mut out, twins * fo, n, DENSE_TILE)
        .into_par_iter()
        .enumerate()
        .for_each_init(
            || {
                (
                    vec![0.0f32; groups * DENSE_TILE * fi],
                    vec![0.0f32; DENSE_TILE * fo],
                )
            },
            |(xt, yt), (k, mut segs)| {
                let (c0, cols) = (k * DENSE_TILE, segs[0].len());
                arch.dispatch(|| {
                    for (grp, x) in input.chunks_exact(n * fi).enumerate() {
                        gather_columns(x, fi, n, c0, cols, &mut xt[grp * fi * cols..][..fi * cols]);
                    }
                    let yt = &mut yt[..fo * cols];
                    for (t, (wt_t, b)) in wt.iter().zip(bias.chunks_exact(fo)).enumerate() {
                        let xg = &xt[t.min(groups - 1) * fi * cols..][..fi * cols];
                        for (row, &bj) in yt.chunks_exact_mut(cols).zip(b) {
                            row.fill(bj);
                        }
                        gemm_acc(arch, fo, cols, fi, wt_t, xg, yt);
                        act.apply_slice(arch, yt);
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
/// `∂x = W · gpre`; weight and bias gradients are summed in `f32` per parallel task first.
pub fn dense_backward(
    g: &DenseGeometry,
    input: &[f32],
    weight: &[f32],
    output: &[f32],
    grad_output: &[f32],
    act: Activation,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, fi, fo, twins, groups) = (g.rows, g.input, g.output, g.twins, g.groups_in);
    assert_eq!(output.len(), twins * n * fo, "dense output length");
    assert_eq!(grad_output.len(), output.len(), "dense cotangent length");
    let mut grad_input = vec![0.0f32; groups * n * fi];
    let arch = Arch::new();
    let scratch = || DenseScratch {
        xt: vec![0.0; groups * DENSE_TILE * fi],
        gp: vec![0.0; DENSE_TILE * fo],
        gxt: vec![0.0; groups * DENSE_TILE * fi],
        gw: vec![0.0; twins * fi * fo],
        gb: vec![0.0; twins * fo],
    };
    // One parallel pass over column tiles of `∂L/∂input` (`[G·in, N]`), both twins per
    // task: each tile of the input gradient is written once, by the task that owns it.
    let (grad_weight, grad_bias) = column_tiles(&mut grad_input, groups * fi, n, DENSE_TILE)
        .into_par_iter()
        .enumerate()
        .with_max_len(ORDERED)
        .fold(scratch, |mut s, (k, mut segs)| {
            let (c0, cols) = (k * DENSE_TILE, segs[0].len());
            arch.dispatch(|| {
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
                    arch.dispatch(GemmAbt {
                        m: fi,
                        t: fo,
                        n: cols,
                        a: xg,
                        b: gp,
                        out: &mut s.gw[t * fi * fo..(t + 1) * fi * fo],
                    });
                    let w = &weight[t * fi * fo..(t + 1) * fi * fo];
                    gemm_acc(
                        arch,
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

impl MlpGeometry {
    /// The output width `w_L` (a geometry has at least an input and an output width).
    pub(crate) fn output_width(&self) -> usize {
        self.widths.last().copied().unwrap_or(0)
    }

    /// The widest layer.
    pub(crate) fn widest(&self) -> usize {
        self.widths.iter().copied().max().unwrap_or(0)
    }

    /// `(weight offset, bias offset)` of each layer in the flat parameters
    /// `[W₀ [T, w₀, w₁], b₀ [T, w₁], W₁, b₁, …]`, and their total length.
    pub fn layout(&self) -> (Vec<(usize, usize)>, usize) {
        let mut off = 0;
        let mut at = Vec::with_capacity(self.widths.len() - 1);
        for w in self.widths.windows(2) {
            let wo = off;
            off += self.twins * w[0] * w[1];
            at.push((wo, off));
            off += self.twins * w[1];
        }
        (at, off)
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
    /// `w_l × DENSE_TILE`; the last entry is the stack's length.
    pub(crate) fn stack_offsets(&self) -> Vec<usize> {
        let mut h_at = vec![0usize];
        let mut at = 0;
        for &w in &self.widths {
            at += w * DENSE_TILE;
            h_at.push(at);
        }
        h_at
    }

    pub(crate) fn act(&self, layer: usize) -> Activation {
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
/// [`dense_forward`] calls.
pub fn mlp_forward(g: &MlpGeometry, input: &[f32], params: &[f32]) -> Vec<f32> {
    let (n, twins, groups) = (g.rows, g.twins, g.groups_in);
    let (fi, fo) = (g.widths[0], g.output_width());
    let (layout, len) = g.layout();
    assert_eq!(input.len(), groups * n * fi, "mlp input length");
    assert_eq!(params.len(), len, "mlp parameter length");
    let wide = g.widest();
    let wt = g.transposed_weights(params);
    let mut out = vec![0.0f32; twins * fo * n];
    let arch = Arch::new();
    column_tiles(&mut out, twins * fo, n, DENSE_TILE)
        .into_par_iter()
        .enumerate()
        .for_each_init(
            || {
                (
                    vec![0.0f32; groups * DENSE_TILE * fi],
                    vec![0.0f32; DENSE_TILE * wide],
                    vec![0.0f32; DENSE_TILE * wide],
                )
            },
            |(xt, ha, hb), (k, mut segs)| {
                let (c0, cols) = (k * DENSE_TILE, segs[0].len());
                arch.dispatch(|| {
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
                            gemm_acc(arch, wo, cols, wi, &wt[l][t], &h[..wi * cols], y);
                            g.act(l).apply_slice(arch, y);
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
/// are summed in `f32` per parallel task first.
pub fn mlp_backward(
    g: &MlpGeometry,
    input: &[f32],
    params: &[f32],
    grad_output: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let (n, twins, groups) = (g.rows, g.twins, g.groups_in);
    let (fi, fo) = (g.widths[0], g.output_width());
    let (layout, len) = g.layout();
    assert_eq!(input.len(), groups * n * fi, "mlp input length");
    assert_eq!(params.len(), len, "mlp parameter length");
    assert_eq!(grad_output.len(), twins * fo * n, "mlp cotangent length");
    let wide = g.widest();
    let wt = g.transposed_weights(params);
    let h_at = g.stack_offsets();
    let mut grad_input = vec![0.0f32; groups * n * fi];
    let arch = Arch::new();
    let scratch = || MlpScratch {
        xt: vec![0.0; groups * DENSE_TILE * fi],
        hs: vec![0.0; h_at[g.widths.len()]],
        ga: vec![0.0; DENSE_TILE * wide],
        gb: vec![0.0; DENSE_TILE * wide],
        gxt: vec![0.0; groups * DENSE_TILE * fi],
        grads: vec![0.0; len],
    };
    let grad_params = column_tiles(&mut grad_input, groups * fi, n, DENSE_TILE)
        .into_par_iter()
        .enumerate()
        .with_max_len(ORDERED)
        .fold(scratch, |mut s, (k, mut segs)| {
            let (c0, cols) = (k * DENSE_TILE, segs[0].len());
            arch.dispatch(|| {
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
                    mlp_tile_forward(g, arch, &layout, &wt, params, t, cols, &mut s.hs, &h_at);
                    // The cotangent of h_L.
                    let gy = &grad_output[t * fo * n..][..fo * n];
                    gather_columns(gy, fo, n, c0, cols, &mut s.ga[..fo * cols]);
                    let gx = &mut s.gxt[grp * fi * cols..][..fi * cols];
                    let bufs = (&mut s.ga[..], &mut s.gb[..]);
                    mlp_tile_backward(
                        g,
                        arch,
                        &layout,
                        params,
                        t,
                        cols,
                        &s.hs,
                        &h_at,
                        bufs,
                        &mut s.grads,
                        gx,
                    );
                }
                for (seg, row) in segs.iter_mut().zip(s.gxt.chunks_exact(cols)) {
                    seg.copy_from_slice(row);
                }
            });
            s
        })
        .map(|s| s.grads)
        .reduce(
            || vec![0.0f32; len],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            },
        );
    (grad_input, grad_params)
}

/// One twin of a fused MLP on a column tile: with the input `h₀` in `hs[h_at[0]..]`
/// (`w₀ × cols`), computes `h₁ … h_L` into `hs[h_at[l]..]` (`h_at` from
/// [`MlpGeometry::stack_offsets`]; the output is `hs[h_at[L]..][..w_L·cols]`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn mlp_tile_forward(
    g: &MlpGeometry,
    arch: Arch,
    layout: &[(usize, usize)],
    wt: &[Vec<Vec<f32>>],
    params: &[f32],
    t: usize,
    cols: usize,
    hs: &mut [f32],
    h_at: &[usize],
) {
    for (l, w) in g.widths.windows(2).enumerate() {
        let (wi, wo) = (w[0], w[1]);
        let (lo, hi) = hs.split_at_mut(h_at[l + 1]);
        let (h, y) = (&lo[h_at[l]..h_at[l] + wi * cols], &mut hi[..wo * cols]);
        let b = &params[layout[l].1 + t * wo..][..wo];
        for (row, &bj) in y.chunks_exact_mut(cols).zip(b) {
            row.fill(bj);
        }
        gemm_acc(arch, wo, cols, wi, &wt[l][t], h, y);
        g.act(l).apply_slice(arch, y);
    }
}

/// Back-propagates the cotangent of twin `t`'s output, held in `bufs.0[..w_L·cols]`,
/// through the activation stack `hs` of [`mlp_tile_forward`]: layer by layer from the top,
/// with `gpre = g ⊙ act′`, `∂W += h · gpreᵀ`, `∂b += Σ gpre` (into `grads`, the net's flat
/// layout) and `g ← W · gpre`; the input's cotangent is added to `gx` (`w₀ × cols`).
/// `bufs` are two scratch tiles of the widest layer.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn mlp_tile_backward(
    g: &MlpGeometry,
    arch: Arch,
    layout: &[(usize, usize)],
    params: &[f32],
    t: usize,
    cols: usize,
    hs: &[f32],
    h_at: &[usize],
    bufs: (&mut [f32], &mut [f32]),
    grads: &mut [f32],
    gx: &mut [f32],
) {
    let (ga, gb) = bufs;
    for l in (0..g.widths.len() - 1).rev() {
        let (wi, wo) = (g.widths[l], g.widths[l + 1]);
        let y = &hs[h_at[l + 1]..h_at[l + 1] + wo * cols];
        g.act(l)
            .chain_slice(&mut gb[..wo * cols], y, &ga[..wo * cols]);
        let gpre = &gb[..wo * cols];
        let (w_off, b_off) = layout[l];
        for (b, row) in grads[b_off + t * wo..][..wo]
            .iter_mut()
            .zip(gpre.chunks_exact(cols))
        {
            *b += sum(row);
        }
        let h = &hs[h_at[l]..h_at[l] + wi * cols];
        arch.dispatch(GemmAbt {
            m: wi,
            t: wo,
            n: cols,
            a: h,
            b: gpre,
            out: &mut grads[w_off + t * wi * wo..][..wi * wo],
        });
        let w = &params[w_off + t * wi * wo..][..wi * wo];
        if l == 0 {
            gemm_acc(arch, wi, cols, wo, w, gpre, gx);
        } else {
            let ga = &mut ga[..wi * cols];
            ga.fill(0.0);
            gemm_acc(arch, wi, cols, wo, w, gpre, ga);
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

/// Per-task buffers of [`dense_backward`]: contiguous tiles and partial gradients.
struct DenseScratch {
    xt: Vec<f32>,
    gp: Vec<f32>,
    gxt: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn random(n: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<f32> {
        (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect()
    }

    fn wide(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }

    fn act64(act: Activation, v: f64) -> f64 {
        match act {
            Activation::Identity => v,
            Activation::LeakyRelu(s) => {
                if v > 0.0 {
                    v
                } else {
                    s as f64 * v
                }
            }
            Activation::Elu => {
                if v > 0.0 {
                    v
                } else {
                    v.exp_m1()
                }
            }
        }
    }

    /// Central difference of `loss` along each of `n` components of the argument `base`,
    /// in f64 with step 1e-6: exact to ~1e-9 on the smooth pieces, and a kink of a
    /// piecewise-linear activation falls inside a step with probability ~1e-6.
    fn finite_difference(base: &[f64], idx: usize, loss: impl Fn(&[f64]) -> f64) -> f64 {
        let h = 1e-6;
        let (mut p, mut m) = (base.to_vec(), base.to_vec());
        p[idx] += h;
        m[idx] -= h;
        (loss(&p) - loss(&m)) / (2.0 * h)
    }

    /// The fused MLP equals the chain of (separately tested) dense layers, forward and
    /// backward, with a shared and a per-twin input, over several column tiles and a partial
    /// one (1e-5 absolute on values of size ~1; 1e-4 on gradients summed over 600 rows).
    #[test]
    fn fused_mlp_equals_chained_dense_layers() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        for groups_in in [1, 2] {
            let g = MlpGeometry {
                groups_in,
                twins: 2,
                rows: 600,
                widths: vec![3, 5, 4, 2],
                hidden: Activation::Elu,
            };
            let (layout, len) = g.layout();
            let x = random(groups_in * g.rows * 3, &mut rng);
            let params = random(len, &mut rng);
            let c = random(2 * g.rows * 2, &mut rng);
            let layer = |l: usize| {
                let (wi, wo) = (g.widths[l], g.widths[l + 1]);
                let (w_off, b_off) = layout[l];
                let geom = DenseGeometry {
                    groups_in: if l == 0 { groups_in } else { 2 },
                    twins: 2,
                    rows: g.rows,
                    input: wi,
                    output: wo,
                };
                (geom, &params[w_off..b_off], &params[b_off..b_off + 2 * wo])
            };
            let mut hs = vec![x.clone()];
            for l in 0..3 {
                let (geom, w, b) = layer(l);
                hs.push(dense_forward(&geom, &hs[l], w, b, g.act(l)));
            }
            let y = mlp_forward(&g, &x, &params);
            for (a, e) in y.iter().zip(&hs[3]) {
                assert!((a - e).abs() < 1e-5, "forward: {a} vs {e}");
            }
            let mut grad = c.clone();
            let mut want = vec![0.0f32; len];
            for l in (0..3).rev() {
                let (geom, w, _) = layer(l);
                let (gx, gw, gb) = dense_backward(&geom, &hs[l], w, &hs[l + 1], &grad, g.act(l));
                let (w_off, b_off) = layout[l];
                want[w_off..b_off].copy_from_slice(&gw);
                want[b_off..b_off + gb.len()].copy_from_slice(&gb);
                grad = gx;
            }
            let (gx, gp) = mlp_backward(&g, &x, &params, &c);
            for (a, e) in gx.iter().zip(&grad) {
                assert!((a - e).abs() < 1e-4, "input gradient: {a} vs {e}");
            }
            for (i, (a, e)) in gp.iter().zip(&want).enumerate() {
                assert!(
                    (a - e).abs() < 1e-4 * (1.0 + e.abs()),
                    "parameter {i}: {a} vs {e}"
                );
            }
        }
    }

    /// The SIMD ELU (whole vectors and the scalar tail) against f64 `exp_m1`: relative
    /// error ≤ 4e-7 (a few f32 ulps; the polynomial truncates at 6e-9) over the whole
    /// negative range, including tiny arguments where `eˣ − 1` cancels, the clamp at −87
    /// and beyond, zero, and positives passed through exactly.
    #[test]
    fn elu_is_accurate_on_vectors_and_tails() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let mut xs: Vec<f32> = vec![0.0, -0.0, 1e-30, -1e-30, -1e-7, -3e-4, -0.3465, -0.3466];
        xs.extend([
            -1.0,
            -10.0,
            -20.0,
            -86.9,
            -87.0,
            -87.5,
            -200.0,
            f32::MIN,
            2.5,
            1e6,
        ]);
        for _ in 0..1001 {
            let e: f32 = rng.random::<f32>() * 8.0 - 7.0;
            xs.push(-(10f32.powf(e)) * rng.random::<f32>());
        }
        let mut ys = xs.clone();
        Activation::Elu.apply_slice(Arch::new(), &mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = if x > 0.0 {
                x as f64
            } else {
                (x as f64).exp_m1()
            };
            let err = (y as f64 - want).abs();
            assert!(err <= 4e-7 * want.abs(), "elu({x}) = {y}, want {want}");
            assert_eq!(
                Activation::Elu.apply(x),
                y,
                "scalar and vector ELU differ at {x}"
            );
        }
    }

    /// The convolution by its definition, in f64.
    fn conv_brute(g: &ConvGeometry, x: &[f64], w: &[f64], b: &[f64], act: Activation) -> Vec<f64> {
        let (h, wd, k) = (g.rows as isize, g.cols as isize, g.kernel as isize);
        let p = k / 2;
        let mut out = vec![0.0f64; g.batch * g.cout * g.sites()];
        for s in 0..g.batch {
            for o in 0..g.cout {
                for y in 0..h {
                    for xx in 0..wd {
                        let mut acc = b[o];
                        for i in 0..g.cin {
                            for u in 0..k {
                                for v in 0..k {
                                    let sy = (y + u - p).rem_euclid(h) as usize;
                                    let sx = (xx + v - p).rem_euclid(wd) as usize;
                                    let xi = ((s * g.cin + i) * g.rows + sy) * g.cols + sx;
                                    let wi = ((o * g.cin + i) * g.kernel + u as usize) * g.kernel
                                        + v as usize;
                                    acc += w[wi] * x[xi];
                                }
                            }
                        }
                        let oi = ((s * g.cout + o) * g.rows + y as usize) * g.cols + xx as usize;
                        out[oi] = act64(act, acc);
                    }
                }
            }
        }
        out
    }

    /// Forward equals the definition (1e-5: f32 sums of ≤ 100 terms of size ≤ 1), and every
    /// gradient component equals a central finite difference of the f64 loss `Σ c ⊙ y`
    /// (1e-4 relative: the analytic gradients are f32 sums of ≤ 100 terms).
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

    #[test]
    fn conv_matches_definition_and_finite_differences() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        for (g, act) in [
            (
                ConvGeometry {
                    batch: 3,
                    cin: 2,
                    cout: 3,
                    rows: 4,
                    cols: 6,
                    kernel: 3,
                },
                Activation::LeakyRelu(0.01),
            ),
            (
                ConvGeometry {
                    batch: 18,
                    cin: 1,
                    cout: 2,
                    rows: 5,
                    cols: 3,
                    kernel: 3,
                },
                Activation::Identity,
            ),
            (
                ConvGeometry {
                    batch: 2,
                    cin: 2,
                    cout: 2,
                    rows: 4,
                    cols: 4,
                    kernel: 5,
                },
                Activation::Elu,
            ),
            (
                // Rows a multiple of the SIMD width: the direct (un-unfolded) kernels,
                // with a partial block of output channels and an odd count of vectors.
                ConvGeometry {
                    batch: 3,
                    cin: 2,
                    cout: 5,
                    rows: 3,
                    cols: 8,
                    kernel: 3,
                },
                Activation::Elu,
            ),
            (
                ConvGeometry {
                    batch: 2,
                    cin: 1,
                    cout: 4,
                    rows: 4,
                    cols: 16,
                    kernel: 5,
                },
                Activation::LeakyRelu(0.01),
            ),
            (
                // A kernel wider than the lattice: the wrap goes round more than once.
                ConvGeometry {
                    batch: 2,
                    cin: 1,
                    cout: 2,
                    rows: 3,
                    cols: 2,
                    kernel: 7,
                },
                Activation::LeakyRelu(0.01),
            ),
        ] {
            let x = random(g.batch * g.cin * g.sites(), &mut rng);
            let w = random(g.cout * g.taps(), &mut rng);
            let b = random(g.cout, &mut rng);
            let c = random(g.batch * g.cout * g.sites(), &mut rng);
            let (x64, w64, b64, c64) = (wide(&x), wide(&w), wide(&b), wide(&c));
            let y = conv_forward(&g, &x, &w, &b, act);
            let exact = conv_brute(&g, &x64, &w64, &b64, act);
            for (a, e) in y.iter().zip(&exact) {
                assert!((*a as f64 - e).abs() < 1e-5, "{g:?}: {a} vs {e}");
            }
            let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
                conv_brute(&g, x, w, b, act)
                    .iter()
                    .zip(&c64)
                    .map(|(y, c)| y * c)
                    .sum()
            };
            let (gx, gw, gb) = conv_backward(&g, &x, &w, &y, &c, act);
            let check = |an: f32, num: f64, what: &str| {
                assert!(
                    (an as f64 - num).abs() < 1e-4 * (1.0 + num.abs()),
                    "{g:?} {act:?} {what}: {an} vs {num}"
                );
            };
            for (i, &an) in gx.iter().enumerate() {
                check(an, finite_difference(&x64, i, |x| loss(x, &w64, &b64)), "x");
            }
            for (i, &an) in gw.iter().enumerate() {
                check(an, finite_difference(&w64, i, |w| loss(&x64, w, &b64)), "w");
            }
            for (i, &an) in gb.iter().enumerate() {
                check(an, finite_difference(&b64, i, |b| loss(&x64, &w64, b)), "b");
            }
        }
    }

    fn dense_brute(
        g: &DenseGeometry,
        x: &[f64],
        w: &[f64],
        b: &[f64],
        act: Activation,
    ) -> Vec<f64> {
        let (n, fi, fo) = (g.rows, g.input, g.output);
        let mut out = vec![0.0; g.twins * n * fo];
        for t in 0..g.twins {
            let grp = t.min(g.groups_in - 1);
            for r in 0..n {
                for j in 0..fo {
                    let mut acc = b[t * fo + j];
                    for i in 0..fi {
                        acc += x[(grp * fi + i) * n + r] * w[(t * fi + i) * fo + j];
                    }
                    out[(t * fo + j) * n + r] = act64(act, acc);
                }
            }
        }
        out
    }

    /// As for the convolution: definition to 1e-5, gradients against central differences.
    #[test]
    fn dense_matches_definition_and_finite_differences() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        for (g, act) in [
            (
                DenseGeometry {
                    groups_in: 1,
                    twins: 2,
                    rows: 5000,
                    input: 3,
                    output: 4,
                },
                Activation::Elu,
            ),
            (
                DenseGeometry {
                    groups_in: 2,
                    twins: 2,
                    rows: 7,
                    input: 4,
                    output: 2,
                },
                Activation::Identity,
            ),
        ] {
            let x = random(g.groups_in * g.rows * g.input, &mut rng);
            let w = random(g.twins * g.input * g.output, &mut rng);
            let b = random(g.twins * g.output, &mut rng);
            let c = random(g.twins * g.rows * g.output, &mut rng);
            let (x64, w64, b64, c64) = (wide(&x), wide(&w), wide(&b), wide(&c));
            let y = dense_forward(&g, &x, &w, &b, act);
            for (a, e) in y.iter().zip(dense_brute(&g, &x64, &w64, &b64, act)) {
                assert!((*a as f64 - e).abs() < 1e-5, "{a} vs {e}");
            }
            let (gx, gw, gb) = dense_backward(&g, &x, &w, &y, &c, act);
            let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
                dense_brute(&g, x, w, b, act)
                    .iter()
                    .zip(&c64)
                    .map(|(y, c)| y * c)
                    .sum()
            };
            // The weight gradient sums N = 5000 f32 terms: 1e-3 relative.
            let check = |an: f32, num: f64, what: &str| {
                assert!(
                    (an as f64 - num).abs() < 1e-3 * (1.0 + num.abs()),
                    "{what}: {an} vs {num}"
                );
            };
            // A sample of input components (all of them for the small case) and every weight.
            let step = if g.rows > 100 { 997 } else { 1 };
            for i in (0..x.len()).step_by(step) {
                check(
                    gx[i],
                    finite_difference(&x64, i, |x| loss(x, &w64, &b64)),
                    "x",
                );
            }
            for (i, &an) in gw.iter().enumerate() {
                check(an, finite_difference(&w64, i, |w| loss(&x64, w, &b64)), "w");
            }
            for (i, &an) in gb.iter().enumerate() {
                check(an, finite_difference(&b64, i, |b| loss(&x64, &w64, b)), "b");
            }
        }
    }
}
