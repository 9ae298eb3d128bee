//! The blocks of one layer of the hierarchical flow, gathered from the flow's state and
//! scattered back: the glue that lets a layer (a [`crate::chain`] on every block) run as one
//! operation on the state `[B, W]`, `W = C·L² + 1` (each sample's field flattened as
//! `(channel, row, col)`, then its ln|det| so far).
//!
//! A layer with dilation `d`, block side `b` and offset `o` cuts the sublattice of spacing
//! `d` into `m × m` blocks, `m = L/(d·b)`. Entry `(c, i, j)` of block `(I, J)` sits at row
//! `((I·b + i)·d + o) mod L`, column `((J·b + j)·d + o) mod L` (NeuralRG's disentangler and
//! decimator). The chain sees the blocks as `[2, h, N]`, `h = C·b²/2`, `N = B·m²`: column
//! `n = s·m² + I·m + J` for sample `s`, and entry `e = (c·b + i)·b + j` of the block in half
//! `p = e mod 2`, row `f = ⌊e/2⌋` (the block's even and odd entries, as
//! `BlockRealNvp` splits them), i.e. chain row `r = p·h + f`.
//!
//! ```text
//! block_gather:  [B, W] → [R, N]      R = 2h: the blocks; R = 2h + 1: and row 2h the
//!                                      sample's ln|det| entry (a cotangent's, per block)
//! block_scatter: base [B, W], values [≥ 2h, N] → [B, W]
//!                                      block sites from values' rows < 2h, the others and
//!                                      the ln|det| from base; with `add_logdet` the sum of
//!                                      values' row 2h over the sample's m² blocks added to it
//! ```
//!
//! A layer forward is `scatter(state, chain(gather(state, 2h)), add_logdet)`; its backward
//! `scatter(∂out, ∂chain_input, no add)` with the chain's output cotangent
//! `gather(∂out, 2h + 1)` (the log-det column's cotangent reaches every block's row 2h, and
//! passes to the input's log-det unchanged).

/// Where the blocks of one layer sit in the state (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockGeometry {
    /// Samples `B`.
    pub batch: usize,
    /// Field channels `C`.
    pub channels: usize,
    /// Lattice side `L`.
    pub size: usize,
    /// Dilation `d` (the sublattice spacing).
    pub dilation: usize,
    /// Block side `b`.
    pub block: usize,
    /// Offset `o` in lattice units.
    pub offset: usize,
}

impl BlockGeometry {
    /// Blocks per side, `m = L/(d·b)`.
    pub fn per_side(&self) -> usize {
        self.size / (self.dilation * self.block)
    }

    /// Entries per half block, `h = C·b²/2`.
    pub fn half(&self) -> usize {
        self.channels * self.block * self.block / 2
    }

    /// Chain columns, `N = B·m²`.
    pub fn columns(&self) -> usize {
        self.batch * self.per_side().pow(2)
    }

    /// Field entries per sample, `C·L²`.
    pub fn field(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// State width, `W = C·L² + 1`.
    pub fn width(&self) -> usize {
        self.field() + 1
    }

    /// The flattened `(channel, row, col)` site of chain row `r < 2h` in block `blk`
    /// (`I·m + J`).
    pub fn site(&self, r: usize, blk: usize) -> usize {
        let (h, b, d, l, m) = (
            self.half(),
            self.block,
            self.dilation,
            self.size,
            self.per_side(),
        );
        let e = 2 * (r % h) + r / h;
        let (c, i, j) = (e / (b * b), (e / b) % b, e % b);
        let row = ((blk / m * b + i) * d + self.offset) % l;
        let col = ((blk % m * b + j) * d + self.offset) % l;
        (c * l + row) * l + col
    }

    /// `(r, blk)` of a flattened site that lies in a block ([`BlockGeometry::site`]'s
    /// inverse), `None` for a site off the layer's sublattice.
    pub fn slot(&self, site: usize) -> Option<(usize, usize)> {
        let (h, b, d, l, m) = (
            self.half(),
            self.block,
            self.dilation,
            self.size,
            self.per_side(),
        );
        let (c, row, col) = (site / (l * l), (site / l) % l, site % l);
        let o = self.offset % l;
        let (rr, cc) = ((row + l - o) % l, (col + l - o) % l);
        if !rr.is_multiple_of(d) || !cc.is_multiple_of(d) {
            return None;
        }
        let (ri, ci) = (rr / d, cc / d);
        let e = (c * b + ri % b) * b + ci % b;
        Some(((e % 2) * h + e / 2, (ri / b) * m + ci / b))
    }

    /// # Panics
    /// Where the blocks do not tile the sublattice or a block's entries do not split in two
    /// halves.
    fn check(&self) {
        let (b, d) = (self.block, self.dilation);
        assert!(
            b >= 1 && d >= 1 && self.channels >= 1,
            "block layer: empty geometry"
        );
        assert!(
            self.size.is_multiple_of(d * b),
            "block layer: L must be a multiple of d·b"
        );
        assert!(
            (self.channels * b * b).is_multiple_of(2),
            "block layer: a block's entries must split in two halves"
        );
    }
}

/// The blocks of `src` `[B, W]` as the chain's `[rows, N]` (`rows` = `2h`, or `2h + 1`
/// with the sample's ln|det| entry as the last row): see the module docs.
///
/// # Panics
/// Where `src` is not `[B, W]`, `rows` is neither `2h` nor `2h + 1`, or the geometry is
/// invalid.
pub fn block_gather(g: &BlockGeometry, src: &[f32], rows: usize) -> Vec<f32> {
    g.check();
    let (h, w, n, mm) = (g.half(), g.width(), g.columns(), g.per_side().pow(2));
    assert_eq!(
        src.len(),
        g.batch * w,
        "block_gather: source must be [B, W]"
    );
    assert!(
        rows == 2 * h || rows == 2 * h + 1,
        "block_gather: 2h or 2h + 1 rows"
    );
    let mut out = vec![0.0f32; rows * n];
    for r in 0..rows {
        for blk in 0..mm {
            let at = if r < 2 * h { g.site(r, blk) } else { w - 1 };
            for s in 0..g.batch {
                out[r * n + s * mm + blk] = src[s * w + at];
            }
        }
    }
    out
}

/// `base` `[B, W]` with its block sites taken from `values` `[R ≥ 2h, N]` (rows `< 2h`)
/// and, with `add_logdet`, the sum of `values`' row `2h` over each sample's blocks added to
/// its ln|det|: see the module docs.
///
/// # Panics
/// Where the shapes disagree with the geometry (with `add_logdet`, `values` needs `2h + 1`
/// rows).
pub fn block_scatter(
    g: &BlockGeometry,
    base: &[f32],
    values: &[f32],
    add_logdet: bool,
) -> Vec<f32> {
    g.check();
    let (h, w, n, mm) = (g.half(), g.width(), g.columns(), g.per_side().pow(2));
    assert_eq!(
        base.len(),
        g.batch * w,
        "block_scatter: base must be [B, W]"
    );
    let rows = if add_logdet { 2 * h + 1 } else { 2 * h };
    assert!(
        values.len() >= rows * n && values.len().is_multiple_of(n.max(1)),
        "block_scatter: values must be [R ≥ {rows}, N]"
    );
    let mut out = base.to_vec();
    for site in 0..g.field() {
        if let Some((r, blk)) = g.slot(site) {
            for s in 0..g.batch {
                out[s * w + site] = values[r * n + s * mm + blk];
            }
        }
    }
    if add_logdet {
        for s in 0..g.batch {
            let row = &values[2 * h * n + s * mm..2 * h * n + (s + 1) * mm];
            out[s * w + w - 1] += row.iter().sum::<f32>();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every geometry of the hierarchical flows: 2×2 and 4×4 blocks, one and two channels,
    /// the disentangler's offset and the decimator's, every dilation that fits.
    fn geometries() -> Vec<BlockGeometry> {
        let mut v = Vec::new();
        for (block, size) in [(2, 8), (4, 8), (2, 4)] {
            for channels in [1, 2] {
                let mut d = 1;
                while size % (d * block) == 0 {
                    for offset in [0, block / 2 * d] {
                        v.push(BlockGeometry {
                            batch: 3,
                            channels,
                            size,
                            dilation: d,
                            block,
                            offset,
                        });
                    }
                    d *= 2;
                }
            }
        }
        v
    }

    /// `site` enumerates the blocks as the hierarchical flow's definition does (block
    /// `(I, J)`, channel, row, column; halves by even and odd entry), hits distinct sites,
    /// all of them at `d = 1`, and `slot` inverts it exactly on the sublattice and nowhere
    /// else.
    #[test]
    fn site_and_slot_follow_the_definition() {
        for g in geometries() {
            let (b, d, l, m, h) = (g.block, g.dilation, g.size, g.per_side(), g.half());
            let mut seen = vec![false; g.field()];
            for bi in 0..m {
                for bj in 0..m {
                    let mut e = 0;
                    for c in 0..g.channels {
                        for i in 0..b {
                            for j in 0..b {
                                let row = ((bi * b + i) * d + g.offset) % l;
                                let col = ((bj * b + j) * d + g.offset) % l;
                                let site = (c * l + row) * l + col;
                                let r = (e % 2) * h + e / 2;
                                assert_eq!(g.site(r, bi * m + bj), site, "{g:?}");
                                assert_eq!(g.slot(site), Some((r, bi * m + bj)), "{g:?}");
                                assert!(!seen[site], "{g:?}: site twice");
                                seen[site] = true;
                                e += 1;
                            }
                        }
                    }
                }
            }
            for (site, hit) in seen.iter().enumerate() {
                assert_eq!(g.slot(site).is_some(), *hit, "{g:?} site {site}");
            }
            assert_eq!(seen.iter().all(|&s| s), d == 1, "{g:?}");
        }
    }

    /// Scattering the gathered blocks back returns the state; scattering other values
    /// changes exactly the block sites; the ln|det| gains the sum of the last row over the
    /// sample's blocks.
    #[test]
    fn gather_then_scatter_round_trips() {
        for g in geometries() {
            let (w, n, h) = (g.width(), g.columns(), g.half());
            let state: Vec<f32> = (0..g.batch * w).map(|k| k as f32 * 0.5 - 3.0).collect();
            let blocks = block_gather(&g, &state, 2 * h);
            assert_eq!(block_scatter(&g, &state, &blocks, false), state, "{g:?}");
            let with_ld = block_gather(&g, &state, 2 * h + 1);
            assert_eq!(&with_ld[..2 * h * n], &blocks[..], "{g:?}");
            for col in 0..n {
                let s = col / g.per_side().pow(2);
                assert_eq!(with_ld[2 * h * n + col], state[s * w + w - 1], "{g:?}");
            }
            let values: Vec<f32> = (0..(2 * h + 1) * n).map(|k| 100.0 + k as f32).collect();
            let out = block_scatter(&g, &state, &values, true);
            for s in 0..g.batch {
                for site in 0..g.field() {
                    let want = match g.slot(site) {
                        Some((r, blk)) => values[r * n + s * g.per_side().pow(2) + blk],
                        None => state[s * w + site],
                    };
                    assert_eq!(out[s * w + site], want, "{g:?}");
                }
                let mm = g.per_side().pow(2);
                let sum: f32 = (0..mm).map(|blk| values[2 * h * n + s * mm + blk]).sum();
                assert_eq!(out[s * w + w - 1], state[s * w + w - 1] + sum, "{g:?}");
            }
        }
    }
}
