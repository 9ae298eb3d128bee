//! Periodic lattice geometry.
//!
//! A [`Lattice`] is either a chain of `L` sites (`d = 1`) or an `L × L` torus (`d = 2`).
//! Both are stored as `rows × cols` grids — a chain is `1 × L` — so that every field,
//! whatever `d`, is a tensor `[batch, channels, rows, cols]` and a host array indexed
//! row-major, `site = i·cols + j`.
//!
//! Momenta are `p = 2π(k₁/rows, k₂/cols)`; [`Lattice::cos_sum`] returns `Σ_μ cos p_μ` over the
//! lattice directions, the eigenvalue of the (half) adjacency operator that every
//! translation-invariant quadratic action on the lattice diagonalises to.

use crate::error::{NrgError, Result};
use serde::{Deserialize, Serialize};

/// A point operation of the square lattice on coordinates `(i, j)`.
type PointOp = fn(isize, isize) -> (isize, isize);

/// The point symmetries a [`SymmetrySpec`] includes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PointGroup {
    /// None (the identity only).
    #[default]
    Identity,
    /// All of them: D₄ on the square (rotations and reflections), the reflection on a chain.
    Full,
}

/// A group of lattice symmetries, as a user names it: `d4` (the point group), `shift=T`
/// (translations by multiples of `T` sites), or both, comma-separated (`"d4,shift=2"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymmetrySpec {
    /// Translations by multiples of this many sites (`None`: no translations).
    pub shift: Option<usize>,
    /// The point symmetries.
    pub point_group: PointGroup,
}

impl SymmetrySpec {
    /// Parses `d4`, `shift=T` or both, comma-separated.
    pub fn parse(text: &str) -> Result<Self> {
        let mut spec = Self::default();
        let mut any = false;
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            any = true;
            match token.split_once('=') {
                None if token == "d4" => spec.point_group = PointGroup::Full,
                Some(("shift", t)) => {
                    let t: usize = t.trim().parse().map_err(|_| {
                        NrgError::param("symmetry", format!("`{t}` is not a number of sites"))
                    })?;
                    spec.shift = Some(t);
                }
                _ => {
                    return Err(NrgError::param(
                        "symmetry",
                        format!("unknown element `{token}` (expected `d4` or `shift=T`)"),
                    ));
                }
            }
        }
        if !any {
            return Err(NrgError::param(
                "symmetry",
                "empty: expected `d4`, `shift=T`, or both",
            ));
        }
        Ok(spec)
    }
}

impl std::fmt::Display for SymmetrySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.point_group == PointGroup::Full {
            parts.push("d4".to_string());
        }
        if let Some(t) = self.shift {
            parts.push(format!("shift={t}"));
        }
        if parts.is_empty() {
            parts.push("identity".into());
        }
        f.write_str(&parts.join(","))
    }
}

/// A periodic hypercubic lattice in one or two dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lattice {
    dim: usize,
    l: usize,
}

impl Lattice {
    /// An `L × L` torus. `L ≥ 2`.
    pub fn square(l: usize) -> Result<Self> {
        Self::new(2, l)
    }

    /// A periodic chain of `L ≥ 2` sites.
    pub fn chain(l: usize) -> Result<Self> {
        Self::new(1, l)
    }

    /// A `dim`-dimensional periodic lattice of linear size `l` (`dim` ∈ {1, 2}, `l ≥ 2`).
    pub fn new(dim: usize, l: usize) -> Result<Self> {
        if !(1..=2).contains(&dim) {
            return Err(NrgError::param("dim", format!("must be 1 or 2, got {dim}")));
        }
        if l < 2 {
            return Err(NrgError::param("L", format!("must be ≥ 2, got {l}")));
        }
        Ok(Self { dim, l })
    }

    /// Number of dimensions `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Linear size `L`.
    pub fn l(&self) -> usize {
        self.l
    }

    /// Number of sites `V = L^d`.
    pub fn volume(&self) -> usize {
        self.rows() * self.cols()
    }

    /// Rows of the grid layout (`1` for a chain).
    pub fn rows(&self) -> usize {
        if self.dim == 1 { 1 } else { self.l }
    }

    /// Columns of the grid layout (`L`).
    pub fn cols(&self) -> usize {
        self.l
    }

    /// Row-major index of site `(i, j)`, coordinates taken modulo the lattice.
    #[inline]
    pub fn index(&self, i: isize, j: isize) -> usize {
        let r = i.rem_euclid(self.rows() as isize) as usize;
        let c = j.rem_euclid(self.cols() as isize) as usize;
        r * self.cols() + c
    }

    /// Coordinates `(i, j)` of a site index.
    #[inline]
    pub fn coords(&self, site: usize) -> (usize, usize) {
        (site / self.cols(), site % self.cols())
    }

    /// The forward neighbours `x + μ̂` of every site, one per direction (`d` per site):
    /// `table[site·d + μ]`. Direction 0 is along the columns (`j + 1`), direction 1 along the
    /// rows (`i + 1`).
    pub fn forward_neighbours(&self) -> Vec<usize> {
        let mut table = Vec::with_capacity(self.volume() * self.dim);
        for site in 0..self.volume() {
            let (i, j) = self.coords(site);
            let (i, j) = (i as isize, j as isize);
            table.push(self.index(i, j + 1));
            if self.dim == 2 {
                table.push(self.index(i + 1, j));
            }
        }
        table
    }

    /// All `2d` neighbours of every site: `table[site·2d + k]`, forward then backward.
    pub fn all_neighbours(&self) -> Vec<usize> {
        let mut table = Vec::with_capacity(self.volume() * 2 * self.dim);
        for site in 0..self.volume() {
            let (i, j) = self.coords(site);
            let (i, j) = (i as isize, j as isize);
            table.push(self.index(i, j + 1));
            if self.dim == 2 {
                table.push(self.index(i + 1, j));
            }
            table.push(self.index(i, j - 1));
            if self.dim == 2 {
                table.push(self.index(i - 1, j));
            }
        }
        table
    }

    /// Number of nearest-neighbour bonds `d·V` (each counted once).
    pub fn bonds(&self) -> usize {
        self.dim * self.volume()
    }

    /// `Σ_μ cos p_μ` for the momentum with row-major index `k` (`p = 2π k_μ / L`).
    pub fn cos_sum(&self, k: usize) -> f64 {
        let (k1, k2) = self.coords(k);
        let tau = std::f64::consts::TAU;
        let along_cols = (tau * k2 as f64 / self.cols() as f64).cos();
        if self.dim == 1 {
            along_cols
        } else {
            along_cols + (tau * k1 as f64 / self.rows() as f64).cos()
        }
    }

    /// `Σ_μ 4 sin²(p_μ/2)`, the eigenvalue of the lattice Laplacian `−Δ` at momentum `k`.
    pub fn laplacian_eigenvalue(&self, k: usize) -> f64 {
        let (k1, k2) = self.coords(k);
        let s = |n: usize, len: usize| {
            let h = (std::f64::consts::PI * n as f64 / len as f64).sin();
            4.0 * h * h
        };
        if self.dim == 1 {
            s(k2, self.cols())
        } else {
            s(k2, self.cols()) + s(k1, self.rows())
        }
    }

    /// A group of lattice symmetries as site permutations: the translations by multiples of
    /// `spec.shift` in every direction (none without a shift), combined with the point group
    /// (D₄, the 8 rotations and reflections of the square; for a chain, the reflection).
    /// Each entry `p` acts on a field by `(g·φ)[site] = φ[p[site]]`; the identity comes
    /// first. The set is closed under composition (translations by multiples of `shift` are
    /// mapped onto themselves by D₄), so averaging a density over it gives a normalised
    /// density invariant under the group. Size `(L/shift)^d × (8 or 2 or 1)`.
    pub fn symmetry_group(&self, spec: &SymmetrySpec) -> Result<Vec<Vec<usize>>> {
        let shift = spec.shift.unwrap_or(self.l);
        let point_group = spec.point_group == PointGroup::Full;
        if shift == 0 || !self.l.is_multiple_of(shift) {
            return Err(NrgError::param(
                "shift",
                format!(
                    "a translation step must divide L = {} (got {shift})",
                    self.l
                ),
            ));
        }
        let steps = (self.l / shift) as isize;
        let s = shift as isize;
        // Point operations on (i, j): rotations by 0, 90, 180, 270 degrees, then the same
        // after the reflection j → −j. A chain has only j → ±j.
        let ops: Vec<PointOp> = match (self.dim, point_group) {
            (_, false) => vec![|i, j| (i, j)],
            (1, true) => vec![|i, j| (i, j), |i, j| (i, -j)],
            _ => vec![
                |i, j| (i, j),
                |i, j| (j, -i),
                |i, j| (-i, -j),
                |i, j| (-j, i),
                |i, j| (i, -j),
                |i, j| (-j, -i),
                |i, j| (-i, j),
                |i, j| (j, i),
            ],
        };
        let row_steps = if self.dim == 1 { 1 } else { steps };
        let mut group = Vec::new();
        for op in &ops {
            for a in 0..row_steps {
                for b in 0..steps {
                    let perm = (0..self.volume())
                        .map(|site| {
                            let (i, j) = self.coords(site);
                            let (ri, rj) = op(i as isize, j as isize);
                            self.index(ri + a * s, rj + b * s)
                        })
                        .collect();
                    group.push(perm);
                }
            }
        }
        Ok(group)
    }

    /// Whether `L` is a power of two (needed by the hierarchical flow).
    pub fn is_power_of_two(&self) -> bool {
        self.l.is_power_of_two()
    }

    /// `log₂ L`, or an error naming `L` if it is not a power of two.
    pub fn levels(&self) -> Result<usize> {
        if self.is_power_of_two() {
            Ok(self.l.trailing_zeros() as usize)
        } else {
            Err(NrgError::param(
                "L",
                format!(
                    "must be a power of two for a hierarchical flow, got {}",
                    self.l
                ),
            ))
        }
    }
}

/// The space a field lives in: a periodic lattice and the number of components per site.
/// One configuration is `channels·V` numbers laid out `field[c·V + site]`; a batch is a
/// tensor `[batch, channels, rows, cols]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldSpace {
    /// The lattice.
    pub lattice: Lattice,
    /// Field components per site (`1` for a real scalar, `n` for O(n)).
    pub channels: usize,
}

impl FieldSpace {
    /// `channels` components on `lattice`.
    pub fn new(lattice: Lattice, channels: usize) -> Self {
        Self { lattice, channels }
    }

    /// `[channels, rows, cols]` of one configuration.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.lattice.rows(), self.lattice.cols()]
    }

    /// Numbers per configuration, `channels·V`.
    pub fn len(&self) -> usize {
        self.channels * self.lattice.volume()
    }

    /// Whether a configuration has no numbers (never, for a valid lattice).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Anything defined on configurations of a field space (actions, chains): one place for the
/// lattice and the number of components.
pub trait OnLattice {
    /// The field space.
    fn space(&self) -> FieldSpace;

    /// The lattice the field lives on.
    fn lattice(&self) -> Lattice {
        self.space().lattice
    }

    /// Field components per site.
    fn channels(&self) -> usize {
        self.space().channels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_small_and_bad_dims() {
        assert!(Lattice::square(1).is_err());
        assert!(Lattice::new(3, 4).is_err());
        assert!(Lattice::square(6).unwrap().levels().is_err());
        assert_eq!(Lattice::square(16).unwrap().levels().unwrap(), 4);
    }

    /// Every symmetry is a bijection that maps bonds onto bonds, the set is closed under
    /// composition, and it has the advertised size.
    #[test]
    fn symmetry_groups_are_groups_of_lattice_automorphisms() {
        for (lattice, spec, size) in [
            (Lattice::square(4).unwrap(), "d4,shift=1", 128),
            (Lattice::square(8).unwrap(), "shift=4,d4", 32),
            (Lattice::square(8).unwrap(), "shift=8", 1),
            (Lattice::square(6).unwrap(), "shift=3", 4),
            (Lattice::chain(6).unwrap(), "d4, shift=2", 6),
            (Lattice::square(4).unwrap(), "d4", 8),
        ] {
            let spec = SymmetrySpec::parse(spec).unwrap();
            let group = lattice.symmetry_group(&spec).unwrap();
            assert_eq!(group.len(), size);
            let v = lattice.volume();
            assert_eq!(group[0], (0..v).collect::<Vec<_>>());
            let set: std::collections::HashSet<&Vec<usize>> = group.iter().collect();
            assert_eq!(set.len(), size, "duplicate elements");
            let all = lattice.all_neighbours();
            let d2 = all.len() / v;
            for p in &group {
                let mut seen = vec![false; v];
                p.iter().for_each(|&t| seen[t] = true);
                assert!(seen.iter().all(|&b| b), "not a bijection");
                for site in 0..v {
                    let mut image: Vec<usize> = (0..d2).map(|k| p[all[site * d2 + k]]).collect();
                    let mut expected: Vec<usize> = (0..d2).map(|k| all[p[site] * d2 + k]).collect();
                    image.sort();
                    expected.sort();
                    assert_eq!(image, expected, "a bond is not mapped onto a bond");
                }
                for q in &group {
                    let composed: Vec<usize> = (0..v).map(|s| p[q[s]]).collect();
                    assert!(set.contains(&composed), "not closed under composition");
                }
            }
        }
        let l8 = Lattice::square(8).unwrap();
        for bad in ["shift=3", "d4,shift=0"] {
            assert!(
                l8.symmetry_group(&SymmetrySpec::parse(bad).unwrap())
                    .is_err()
            );
        }
        for bad in ["", "c4", "shift=x", "shift"] {
            assert!(SymmetrySpec::parse(bad).is_err(), "{bad}");
        }
        let spec = SymmetrySpec::parse("shift=2,d4").unwrap();
        assert_eq!(spec.to_string(), "d4,shift=2");
        assert_eq!(SymmetrySpec::parse(&spec.to_string()).unwrap(), spec);
    }

    #[test]
    fn neighbours_wrap_and_are_symmetric() {
        for lat in [Lattice::square(3).unwrap(), Lattice::chain(5).unwrap()] {
            let d = lat.dim();
            let fwd = lat.forward_neighbours();
            let all = lat.all_neighbours();
            for site in 0..lat.volume() {
                for mu in 0..d {
                    let n = fwd[site * d + mu];
                    // the backward neighbour of the forward neighbour is the site itself
                    assert_eq!(all[n * 2 * d + d + mu], site);
                }
            }
        }
        let lat = Lattice::square(4).unwrap();
        assert_eq!(lat.index(-1, 4), lat.index(3, 0));
    }

    #[test]
    fn laplacian_matches_cos_sum() {
        let lat = Lattice::square(5).unwrap();
        for k in 0..lat.volume() {
            let a = lat.laplacian_eigenvalue(k);
            let b = 2.0 * lat.dim() as f64 - 2.0 * lat.cos_sum(k);
            assert!((a - b).abs() < 1e-12);
        }
    }

    proptest::proptest! {
        /// `coords ∘ index` reduces coordinates modulo the lattice, for any size and shift.
        #[test]
        fn index_coords_roundtrip(dim in 1usize..=2, l in 2usize..40, i in -100isize..100, j in -100isize..100) {
            let lat = Lattice::new(dim, l).unwrap();
            let (r, c) = lat.coords(lat.index(i, j));
            proptest::prop_assert_eq!(r, i.rem_euclid(lat.rows() as isize) as usize);
            proptest::prop_assert_eq!(c, j.rem_euclid(l as isize) as usize);
        }
    }
}
