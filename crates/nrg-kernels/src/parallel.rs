//! How the kernels split their work over rayon's threads, and how the partial gradients of
//! the tasks are summed so that a result is the same to the last bit from run to run.
//!
//! Feature-major operations (`[rows, N]`, the batch `N` along the fast axis) go in column
//! tiles of [`COLUMN_TILE`]: a task gathers its columns into contiguous scratch, works on
//! them in the cache and writes its own segment of each output row.

/// Batch columns per tile of the feature-major kernels (a tile's copies stay in the L1/L2
/// cache).
pub(crate) const COLUMN_TILE: usize = 256;

/// `with_max_len(ORDERED)` on a parallel loop that sums partial gradients: rayon then
/// splits it down to single tasks at fixed midpoints, so every partial sum covers the
/// same tasks and is added in the same order whichever thread ran it — the result is the
/// same to the last bit from run to run (a plain `fold`/`reduce` groups tasks by how the
/// work happened to be stolen).
pub(crate) const ORDERED: usize = 1;

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

/// Cotangents below this fraction of the largest one in a backward call are set to zero
/// (2⁻⁶⁴ ≈ 5·10⁻²⁰). Against the gradient's norm they change nothing beyond `f32` rounding
/// (2⁻²⁴ relative; a parameter reached only through such cotangents gets 0 instead of a
/// gradient 10¹⁹ times smaller than the largest, which Adam's ε ignores anyway), and
/// multiplied through a chain of couplings and subnets they become subnormal floats, on
/// which x86 vector units take a microcode assist about a hundred times slower than a
/// normal multiply: a forward-KL training step of the Ising L = 16 flow went from 2.5 s to
/// 9 s when its cotangents through the inverse chain reached 10⁻³⁰ (session 14).
pub(crate) const NEGLIGIBLE: f32 = 5.421_011e-20;

/// Cotangents below 2⁻¹⁰⁰ ≈ 7.9·10⁻³¹ are flushed whatever the largest one, inside the
/// subnets' backward passes too: a product of a few activation derivatives (down to 10⁻⁷
/// for a saturated unit) would take them below the smallest normal float, 1.2·10⁻³⁸. No
/// loss nrg trains has gradients within ten orders of magnitude of this.
pub(crate) const TINY: f32 = 7.888_609e-31;

/// The magnitude below which a cotangent in `g` is negligible: `NEGLIGIBLE · max |g|`, and
/// at least [`TINY`].
pub(crate) fn negligible_floor(g: &[f32]) -> f32 {
    (NEGLIGIBLE * g.iter().fold(0.0f32, |m, v| m.max(v.abs()))).max(TINY)
}

/// `v`, or 0 where `|v| < floor`.
#[inline(always)]
pub(crate) fn flush(v: f32, floor: f32) -> f32 {
    if v.abs() < floor { 0.0 } else { v }
}

/// `a += b` elementwise, returning `a` (the reduction of per-task partial gradients).
pub(crate) fn add(mut a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
    a
}

/// Sums per-task `(∂W, ∂b)` partial gradients.
pub(crate) fn add_pairs(
    (wa, ba): (Vec<f32>, Vec<f32>),
    (wb, bb): (Vec<f32>, Vec<f32>),
) -> (Vec<f32>, Vec<f32>) {
    (add(wa, wb), add(ba, bb))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Column tiles cover a `[rows, n]` buffer exactly once, a partial last tile included,
    /// and gathering a tile copies its columns.
    #[test]
    fn column_tiles_partition_the_buffer() {
        let (rows, n, tile) = (3, 10, 4);
        let mut buf: Vec<f32> = (0..rows * n).map(|i| i as f32).collect();
        let src = buf.clone();
        let tiles = column_tiles(&mut buf, rows, n, tile);
        assert_eq!(tiles.len(), 3);
        assert_eq!(tiles[2][0].len(), 2);
        for (k, segs) in tiles.into_iter().enumerate() {
            let cols = segs[0].len();
            let mut dst = vec![0.0; rows * cols];
            gather_columns(&src, rows, n, k * tile, cols, &mut dst);
            for (r, seg) in segs.iter().enumerate() {
                assert_eq!(&dst[r * cols..(r + 1) * cols], &seg[..]);
            }
        }
    }
}
