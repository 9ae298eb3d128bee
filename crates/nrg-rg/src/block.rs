//! Block-spin transformations (Kadanoff 1966; Niemeijer & van Leeuwen 1976).
//!
//! The lattice (a periodic chain of `L` sites or an `L × L` torus) is cut into blocks of
//! `b` sites (1D) or `b × b` sites (2D), `b` dividing `L`; each block becomes one spin of
//! the lattice of side `L/b`:
//!
//! - **majority**: `s' = sign(Σ_block s)`; for even `b` a tied block takes `±1` with
//!   probability ½ each (the random tie-break keeps the map Z₂-symmetric);
//! - **decimation**: `s'` is the block's first site (its top-left corner in 2D).
//!
//! Shapes: site-major `f64` slices of `±1`, `L^d` values in, `(L/b)^d` out.

use nrg_core::{Lattice, NrgError, Result};
use rand::RngExt;

/// How a block's spins become one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockRule {
    /// The sign of the block's sum (random on ties).
    Majority,
    /// The block's first site.
    Decimation,
}

/// One block-spin step: the rule and the block side `b ≥ 2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSpin {
    /// The rule.
    pub rule: BlockRule,
    /// The block side `b`.
    pub factor: usize,
}

impl BlockSpin {
    /// The block lattice of `lattice`. Errors: `b < 2`, `b` not dividing `L`, a block
    /// lattice of fewer than 2 sites per side.
    pub fn coarse(&self, lattice: Lattice) -> Result<Lattice> {
        let (l, b) = (lattice.l(), self.factor);
        if b < 2 || !l.is_multiple_of(b) || l / b < 2 {
            return Err(NrgError::param(
                "factor",
                format!("the block side b = {b} must be ≥ 2 and divide L = {l} into ≥ 2 blocks"),
            ));
        }
        Lattice::new(lattice.dim(), l / b)
    }

    /// Applies the step to `spins` on `lattice`, drawing tie-breaks from `rng`; returns the
    /// block spins and their lattice. Errors: as [`BlockSpin::coarse`], a configuration of
    /// the wrong length or with values other than ±1.
    pub fn apply(
        &self,
        spins: &[f64],
        lattice: Lattice,
        rng: &mut impl rand::Rng,
    ) -> Result<(Vec<f64>, Lattice)> {
        let coarse = self.coarse(lattice)?;
        if spins.len() != lattice.volume() {
            return Err(NrgError::InvalidData(format!(
                "{} spins on a lattice of {} sites",
                spins.len(),
                lattice.volume()
            )));
        }
        if let Some(v) = spins.iter().find(|v| v.abs() != 1.0) {
            return Err(NrgError::InvalidData(format!(
                "block spins need ±1 spins, found {v}"
            )));
        }
        let (l, b, lc) = (lattice.l(), self.factor, coarse.l());
        let out = match lattice.dim() {
            1 => (0..lc)
                .map(|k| self.reduce((0..b).map(|u| spins[k * b + u]), rng))
                .collect(),
            _ => {
                let mut out = Vec::with_capacity(lc * lc);
                for bi in 0..lc {
                    for bj in 0..lc {
                        let block =
                            (0..b * b).map(|k| spins[(bi * b + k / b) * l + bj * b + k % b]);
                        out.push(self.reduce(block, rng));
                    }
                }
                out
            }
        };
        Ok((out, coarse))
    }

    /// `steps` steps in a row: the configurations after each (`result[0]` after the first).
    pub fn iterate(
        &self,
        spins: &[f64],
        lattice: Lattice,
        steps: usize,
        rng: &mut impl rand::Rng,
    ) -> Result<Vec<(Vec<f64>, Lattice)>> {
        let mut out: Vec<(Vec<f64>, Lattice)> = Vec::with_capacity(steps);
        for _ in 0..steps {
            let (s, lat) = match out.last() {
                Some((s, lat)) => (s.as_slice(), *lat),
                None => (spins, lattice),
            };
            let next = self.apply(s, lat, rng)?;
            out.push(next);
        }
        Ok(out)
    }

    fn reduce(&self, mut block: impl Iterator<Item = f64>, rng: &mut impl rand::Rng) -> f64 {
        match self.rule {
            BlockRule::Decimation => block.next().unwrap_or(1.0),
            BlockRule::Majority => {
                let sum: f64 = block.sum();
                if sum > 0.0 {
                    1.0
                } else if sum < 0.0 {
                    -1.0
                } else if rng.random::<bool>() {
                    1.0
                } else {
                    -1.0
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn majority_and_decimation_on_known_blocks() {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let lat = Lattice::square(6).unwrap();
        // Block (0,0) has 5 up of 9, block (0,1) 4 up (its corner among them), the lower
        // blocks none: majority (+, −, −, −), decimation (+, +, −, −).
        let mut s = vec![-1.0; 36];
        for &(i, j) in &[
            (0, 0),
            (0, 1),
            (1, 1),
            (2, 0),
            (2, 2),
            (0, 3),
            (1, 4),
            (2, 5),
            (0, 5),
        ] {
            s[i * 6 + j] = 1.0;
        }
        let maj = BlockSpin {
            rule: BlockRule::Majority,
            factor: 3,
        };
        let (out, coarse) = maj.apply(&s, lat, &mut rng).unwrap();
        assert_eq!(coarse.l(), 2);
        assert_eq!(out, vec![1.0, -1.0, -1.0, -1.0]);
        let dec = BlockSpin {
            rule: BlockRule::Decimation,
            factor: 3,
        };
        let (out, _) = dec.apply(&s, lat, &mut rng).unwrap();
        assert_eq!(out, vec![1.0, 1.0, -1.0, -1.0]);
        // b = 2 majority on a tied 1D block: ±1 about half the time each.
        let chain = Lattice::new(1, 4).unwrap();
        let even = BlockSpin {
            rule: BlockRule::Majority,
            factor: 2,
        };
        let ups: usize = (0..4000)
            .map(|_| {
                even.apply(&[1.0, -1.0, 1.0, 1.0], chain, &mut rng)
                    .unwrap()
                    .0
            })
            .filter(|o| {
                assert_eq!(o[1], 1.0);
                o[0] == 1.0
            })
            .count();
        assert!((ups as f64 - 2000.0).abs() < 4.0 * 31.7, "{ups} of 4000");
        // bad inputs
        assert!(
            maj.apply(&s, Lattice::square(4).unwrap(), &mut rng)
                .is_err()
        );
        assert!(maj.apply(&s[..35], lat, &mut rng).is_err());
        let mut half = s.clone();
        half[0] = 0.5;
        assert!(maj.apply(&half, lat, &mut rng).is_err());
        let steps = even
            .iterate(&[1.0; 16], Lattice::new(1, 16).unwrap(), 3, &mut rng)
            .unwrap();
        assert_eq!(
            steps.iter().map(|(s, _)| s.len()).collect::<Vec<_>>(),
            vec![8, 4, 2]
        );
    }
}
