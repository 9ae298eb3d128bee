//! The bulk as a discrete hyperbolic space.
//!
//! A level-`l` latent sits at the centre of the boundary region its block covers — a block
//! of side `s = 2^{l+1}` lattice sites below the top level (`s = 2^depth` at the top) — at
//! height `h = 2^l` (lattice units) in the upper half-space model of H³,
//! `ds² = (dx² + dy² + dh²)/h²` (Hu, Li, Wang, You, arXiv:1903.00804):
//!
//! ```text
//! x = (⌊i/s⌋ + ½)·s − ½,   y = (⌊j/s⌋ + ½)·s − ½,   h = 2^l
//! cosh d(a, b) = 1 + (Δx² + Δy² + Δh²)/(2 h_a h_b)
//! ```
//!
//! with `Δx`, `Δy` the shortest separations on the periodic `L × L` boundary. Straight up one
//! level `d = ln 2` (`cosh d = 1 + h²/(2·h·2h) = 5/4`); two latents of one level at a
//! distance `r ≫ h` are `d ≈ 2 ln(r/h)` apart. The three latents that a block keeps at a
//! level share its point (distance 0).

use nrg_core::bulk::{BulkLayout, BulkSite};
use nrg_core::{LatentModel, NrgError, Result};

/// A latent's point in the upper half-space model of H³ (lattice units).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BulkPoint {
    /// Boundary row coordinate of the block centre.
    pub x: f64,
    /// Boundary column coordinate of the block centre.
    pub y: f64,
    /// Height `h = 2^level`.
    pub h: f64,
}

/// Every latent site's bulk site and H³ point, for a lattice of side `size`.
#[derive(Clone, Debug, PartialEq)]
pub struct BulkGeometry {
    /// Lattice side `L`.
    pub size: usize,
    /// Number of RG levels (the top latents are at level `depth`).
    pub depth: usize,
    /// Bulk site of each lattice site (row-major).
    pub sites: Vec<BulkSite>,
    /// H³ point of each lattice site's latent.
    pub points: Vec<BulkPoint>,
}

impl BulkGeometry {
    /// The geometry of a layout.
    pub fn of(layout: &dyn BulkLayout) -> Self {
        let (size, depth) = (layout.size(), layout.depth());
        let sites = layout.bulk_sites();
        let points = (0..size * size)
            .map(|s| point(s / size, s % size, sites[s].level, depth))
            .collect();
        Self {
            size,
            depth,
            sites,
            points,
        }
    }

    /// The geometry of a model's bulk; a model without one (a flat flow) is an error.
    pub fn of_model(model: &dyn LatentModel) -> Result<Self> {
        let layout = model.bulk_layout().ok_or_else(|| {
            NrgError::param(
                "flow",
                "this flow has no bulk (a flat coupling stack): the holographic analysis \
                 needs a hierarchical flow",
            )
        })?;
        Ok(Self::of(layout.as_ref()))
    }

    /// Number of latent sites `V = L²`.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether there are no sites (never for a built geometry).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The hyperbolic distance between the latents at sites `a` and `b`.
    pub fn distance(&self, a: usize, b: usize) -> f64 {
        hyperbolic_distance(&self.points[a], &self.points[b], self.size as f64)
    }

    /// The shortest periodic boundary separation `(Δx, Δy)` of two points.
    pub fn separation(&self, a: &BulkPoint, b: &BulkPoint) -> (f64, f64) {
        let l = self.size as f64;
        (periodic(a.x - b.x, l), periodic(a.y - b.y, l))
    }
}

/// The block centre and height of the level-`level` latent at lattice site `(i, j)`.
fn point(i: usize, j: usize, level: usize, depth: usize) -> BulkPoint {
    let side = if level >= depth {
        1usize << depth
    } else {
        1usize << (level + 1)
    };
    let centre = |c: usize| ((c / side) as f64 + 0.5) * side as f64 - 0.5;
    BulkPoint {
        x: centre(i),
        y: centre(j),
        h: (1usize << level) as f64,
    }
}

/// The shortest representative of `d` modulo `l`, in `[−l/2, l/2]`.
fn periodic(d: f64, l: f64) -> f64 {
    let r = d.rem_euclid(l);
    if r > l / 2.0 { r - l } else { r }
}

/// `d = acosh(1 + (Δx² + Δy² + Δh²)/(2 h_a h_b))` with periodic `Δx`, `Δy` on a boundary of
/// side `l`; written as `2 asinh(√(q/4))`, `q = (Δx² + Δy² + Δh²)/(h_a h_b)`, which keeps
/// its relative accuracy for small distances.
pub fn hyperbolic_distance(a: &BulkPoint, b: &BulkPoint, l: f64) -> f64 {
    let dx = periodic(a.x - b.x, l);
    let dy = periodic(a.y - b.y, l);
    let dh = a.h - b.h;
    let q = (dx * dx + dy * dy + dh * dh) / (a.h * b.h);
    2.0 * (0.5 * q.sqrt()).asinh()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Layout(usize, usize);
    impl BulkLayout for Layout {
        fn size(&self) -> usize {
            self.0
        }
        fn depth(&self) -> usize {
            self.1
        }
        fn local_layers(&self) -> Option<Vec<nrg_core::bulk::BlockLayer>> {
            None
        }
    }

    /// Zero on the diagonal, symmetric, `ln 2` per level straight up, `acosh` of the closed
    /// form, the triangle inequality, and `2 ln(r/h)` asymptotically.
    #[test]
    fn hyperbolic_distances() {
        let g = BulkGeometry::of(&Layout(16, 4));
        let v = g.len();
        for a in 0..v {
            assert_eq!(g.distance(a, a), 0.0);
            for b in 0..v {
                let (dab, dba) = (g.distance(a, b), g.distance(b, a));
                assert!((dab - dba).abs() < 1e-14 && dab >= 0.0);
            }
        }
        let p = |x, y, h| BulkPoint { x, y, h };
        for h in [1.0, 2.0, 4.0, 8.0] {
            let d = hyperbolic_distance(&p(3.5, 3.5, h), &p(3.5, 3.5, 2.0 * h), 1e9);
            assert!((d - 2f64.ln()).abs() < 1e-14, "{d}");
        }
        let (a, b) = (p(0.0, 0.0, 2.0), p(3.0, 4.0, 1.0));
        let closed = (1.0 + (9.0f64 + 16.0 + 1.0) / (2.0 * 2.0)).acosh();
        assert!((hyperbolic_distance(&a, &b, 1e9) - closed).abs() < 1e-14);
        // periodic: 1 and 15 on a ring of 16 are 2 apart
        let d = hyperbolic_distance(&p(1.0, 0.0, 1.0), &p(15.0, 0.0, 1.0), 16.0);
        assert!((d - (1.0f64 + 4.0 / 2.0).acosh()).abs() < 1e-14);
        // same level far apart: d − 2 ln(r/h) → 0
        let r = 1e6;
        let d = hyperbolic_distance(&p(0.0, 0.0, 1.0), &p(r, 0.0, 1.0), 1e9);
        assert!((d - 2.0 * r.ln()).abs() < 1e-9);
        for a in (0..v).step_by(7) {
            for b in (0..v).step_by(5) {
                for c in (0..v).step_by(11) {
                    assert!(g.distance(a, c) <= g.distance(a, b) + g.distance(b, c) + 1e-12);
                }
            }
        }
    }

    /// Block centres and heights: the level-0 latents of the block at the origin share the
    /// centre (0.5, 0.5); the top latent of a depth-2 flow on 4×4 sits at (1.5, 1.5), h = 4.
    #[test]
    fn points_are_block_centres() {
        let g = BulkGeometry::of(&Layout(4, 2));
        let at = |i: usize, j: usize| g.points[i * 4 + j];
        for (i, j) in [(0, 1), (1, 0), (1, 1)] {
            assert_eq!(
                at(i, j),
                BulkPoint {
                    x: 0.5,
                    y: 0.5,
                    h: 1.0
                }
            );
        }
        assert_eq!(
            at(2, 3),
            BulkPoint {
                x: 2.5,
                y: 2.5,
                h: 1.0
            }
        );
        assert_eq!(
            at(0, 2),
            BulkPoint {
                x: 1.5,
                y: 1.5,
                h: 2.0
            }
        );
        assert_eq!(
            at(0, 0),
            BulkPoint {
                x: 1.5,
                y: 1.5,
                h: 4.0
            }
        );
        assert_eq!(g.sites[0].level, 2);
    }
}
