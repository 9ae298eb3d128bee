//! Binary coupling masks.
//!
//! A mask `m ∈ {0, 1}^{channels × rows × cols}` marks the variables that condition the
//! coupling (`m = 1`, left unchanged) against those it updates (`m = 0`).
//!
//! - checkerboard: `m(c, i, j) = (i + j + parity) mod 2` (every channel alike);
//! - random half: a seeded random choice of exactly half the sites (every channel alike);
//! - channel split: the first (or last) `⌈C/2⌉` channels.

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;

/// How a coupling splits its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskKind {
    /// `(i + j + parity) mod 2`.
    Checkerboard {
        /// 0 or 1: which sublattice conditions.
        parity: usize,
    },
    /// A seeded random half of the sites.
    RandomHalf {
        /// Seed of the choice.
        seed: u64,
    },
    /// The first `⌈C/2⌉` channels condition (`first = true`), or the last ones.
    ChannelSplit {
        /// Which half conditions.
        first: bool,
    },
}

impl MaskKind {
    /// The mask values `[channels·rows·cols]`, row-major.
    pub fn values(&self, channels: usize, rows: usize, cols: usize) -> Vec<f32> {
        let sites = rows * cols;
        let per_site: Vec<f32> = match *self {
            MaskKind::Checkerboard { parity } => (0..sites)
                .map(|s| ((s / cols + s % cols + parity) % 2) as f32)
                .collect(),
            MaskKind::RandomHalf { seed } => {
                let mut idx: Vec<usize> = (0..sites).collect();
                let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
                idx.shuffle(&mut rng);
                let mut m = vec![0.0; sites];
                for &i in &idx[..sites / 2] {
                    m[i] = 1.0;
                }
                m
            }
            MaskKind::ChannelSplit { first } => {
                let split = channels.div_ceil(2);
                let mut m = Vec::with_capacity(channels * sites);
                for c in 0..channels {
                    let on = (c < split) == first;
                    m.extend(std::iter::repeat_n(if on { 1.0 } else { 0.0 }, sites));
                }
                return m;
            }
        };
        (0..channels)
            .flat_map(|_| per_site.iter().copied())
            .collect()
    }

    /// The mask as a constant tensor `[1, channels, rows, cols]`.
    pub fn tensor(&self, channels: usize, rows: usize, cols: usize, device: &Device) -> Tensor<4> {
        let v = self.values(channels, rows, cols);
        Tensor::from_data(TensorData::new(v, [1, channels, rows, cols]), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_split_in_half() {
        for kind in [
            MaskKind::Checkerboard { parity: 0 },
            MaskKind::Checkerboard { parity: 1 },
            MaskKind::RandomHalf { seed: 3 },
            MaskKind::ChannelSplit { first: true },
        ] {
            let v = kind.values(2, 4, 4);
            assert_eq!(v.iter().filter(|x| **x == 1.0).count(), 16, "{kind:?}");
        }
        let a = MaskKind::Checkerboard { parity: 0 }.values(1, 4, 4);
        let b = MaskKind::Checkerboard { parity: 1 }.values(1, 4, 4);
        assert!(a.iter().zip(&b).all(|(x, y)| x + y == 1.0));
        assert_eq!(a[0], 0.0);
        assert_eq!(a[1], 1.0);
    }
}
