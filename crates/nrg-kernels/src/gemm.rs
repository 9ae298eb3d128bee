//! Small dense matrix products on row-major `f32` slices, in SIMD register tiles: the
//! building blocks of the unfolded convolution, the dense layer and the MLP.
//!
//! ```text
//! gemm_acc:  out[m×n] += a[m×k] · b[k×n]      (4 rows × 2 vectors of accumulators)
//! gemm_abt:  out[m×t] += a[m×n] · b[t×n]ᵀ     (dot products along the rows, 4 rows of a
//!                                              sharing each loaded vector of b)
//! ```
//!
//! Both accumulate into `out`. Sums are in `f32`, in an order fixed by the SIMD width.

use crate::exec::{Exec, lanes};
use pulp::{Simd, WithSimd};

/// `out[m×n] += a[m×k] · b[k×n]`, row-major.
///
/// # Panics
///
/// If a slice is shorter than its shape.
#[inline(always)]
pub fn gemm_acc(exec: Exec, m: usize, n: usize, k: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    exec.dispatch(GemmAcc { m, n, k, a, b, out });
}

/// `out[m×t] += a[m×n] · b[t×n]ᵀ`, row-major.
///
/// # Panics
///
/// If a slice is shorter than its shape.
#[inline(always)]
pub fn gemm_abt(exec: Exec, m: usize, t: usize, n: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    exec.dispatch(GemmAbt { m, t, n, a, b, out });
}

/// See [`gemm_abt`]: by tiles of 4 rows of `a` sharing each loaded vector of `b`.
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
        assert!(
            a.len() >= m * n && b.len() >= t * n && out.len() >= m * t,
            "gemm_abt: a [{m}, {n}], b [{t}, {n}], out [{m}, {t}] do not fit slices of {}, {}, {}",
            a.len(),
            b.len(),
            out.len()
        );
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

/// See [`gemm_acc`]: by register tiles of 4 rows × 2 SIMD vectors (the accumulators stay
/// in vector registers; each loaded row piece of `b` feeds four rows of `a` through fused
/// multiply-adds where the processor has them).
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
        assert!(
            a.len() >= m * k && b.len() >= k * n && out.len() >= m * n,
            "gemm_acc: a [{m}, {k}], b [{k}, {n}], out [{m}, {n}] do not fit slices of {}, {}, {}",
            a.len(),
            b.len(),
            out.len()
        );
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

/// The transpose `[cols, rows]` of the row-major `[rows, cols]` matrix `m` (weights, once
/// per call).
pub(crate) fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; rows * cols];
    for (r, row) in m.chunks_exact(cols).take(rows).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}
