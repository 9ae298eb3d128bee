//! Monte Carlo renormalisation group (Swendsen, PRL 42, 859 (1979); Swendsen in *Real-Space
//! Renormalization*, Springer 1982): the linearised RG map from block-spin correlations,
//! and its eigenvalues.
//!
//! A configuration is blocked `n = 0, 1, 2, …` times ([`crate::block`]). At every level the
//! lattice sums of a fixed set of operators are measured,
//! `S_α = Σ_i Σ_{shapes of α} Π_{o ∈ shape} s_{i+o}` (periodic; [`Operator`]). With the
//! Hamiltonian `H⁽ⁿ⁾ = Σ_α K⁽ⁿ⁾_α S⁽ⁿ⁾_α` (sign absorbed in `K`), the chain rule
//! `∂⟨S⁽ⁿ⁺¹⁾_γ⟩/∂K⁽ⁿ⁾_β = Σ_α ∂⟨S⁽ⁿ⁺¹⁾_γ⟩/∂K⁽ⁿ⁺¹⁾_α · T_αβ` gives the linearised RG matrix
//! `T_αβ = ∂K⁽ⁿ⁺¹⁾_α/∂K⁽ⁿ⁾_β` from measurable connected correlations:
//!
//! ```text
//! A_γβ = ⟨S⁽ⁿ⁺¹⁾_γ S⁽ⁿ⁾_β⟩ − ⟨S⁽ⁿ⁺¹⁾_γ⟩⟨S⁽ⁿ⁾_β⟩
//! B_γα = ⟨S⁽ⁿ⁺¹⁾_γ S⁽ⁿ⁺¹⁾_α⟩ − ⟨S⁽ⁿ⁺¹⁾_γ⟩⟨S⁽ⁿ⁺¹⁾_α⟩
//! T = B⁻¹ A,        λ_i = eig(T),        y_i = ln λ_i / ln b
//! ```
//!
//! Even and odd operators do not mix (Z₂), so `T` splits into an even block, whose largest
//! eigenvalue gives the thermal exponent `y_t`, and an odd one, giving `y_h` (2D Ising:
//! `y_t = 1`, `y_h = 15/8`). Truncating to the first `m` operators of a sector and repeating
//! with growing `m` shows the truncation error; comparing steps shows the approach to the
//! fixed point. Errors: jackknife over contiguous blocks of configurations (the chain's
//! autocorrelation is absorbed when blocks are much longer than `τ_int`), of every
//! eigenvalue and exponent, with the full-sample value as the estimate.

use crate::block::BlockSpin;
use nalgebra::DMatrix;
use nrg_core::{Estimate, Lattice, NrgError, Result};
use serde::{Deserialize, Serialize};

/// An interaction: a sum over the lattice of products of spins at fixed offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    /// Its name.
    pub name: &'static str,
    /// Every shape of the symmetry class: offsets `(row, col)` from the base site.
    pub shapes: Vec<Vec<(isize, isize)>>,
}

impl Operator {
    /// Whether it is odd under `s → −s` (an odd number of spins per shape).
    pub fn is_odd(&self) -> bool {
        self.shapes.first().is_some_and(|s| s.len() % 2 == 1)
    }

    /// Whether every shape fits on a periodic lattice of side `side` without wrapping onto
    /// itself (each offset shorter than half the side), so that the operator is distinct
    /// from the shorter-ranged ones there.
    pub fn fits(&self, side: usize) -> bool {
        self.shapes
            .iter()
            .flatten()
            .all(|&(di, dj)| 2 * di.unsigned_abs() < side && 2 * dj.unsigned_abs() < side)
    }

    /// `S_α` on a periodic `rows × cols` lattice (`rows = 1` for a chain).
    pub fn value(&self, spins: &[f64], rows: usize, cols: usize) -> f64 {
        let (r, c) = (rows as isize, cols as isize);
        let mut total = 0.0;
        for i in 0..rows as isize {
            for j in 0..cols as isize {
                for shape in &self.shapes {
                    let mut p = 1.0;
                    for &(di, dj) in shape {
                        let (a, b) = ((i + di).rem_euclid(r), (j + dj).rem_euclid(c));
                        p *= spins[(a * c + b) as usize];
                    }
                    total += p;
                }
            }
        }
        total
    }

    /// `g_{iα} = ∂S_α/∂s_i`, summed over the shapes that contain site `i` (the others'
    /// product), for every site: what a spin's conditional law depends on.
    pub fn local_field(&self, spins: &[f64], rows: usize, cols: usize, out: &mut [f64]) {
        let (r, c) = (rows as isize, cols as isize);
        out.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..r {
            for j in 0..c {
                for shape in &self.shapes {
                    let sites: Vec<usize> = shape
                        .iter()
                        .map(|&(di, dj)| {
                            (((i + di).rem_euclid(r)) * c + (j + dj).rem_euclid(c)) as usize
                        })
                        .collect();
                    for (k, &site) in sites.iter().enumerate() {
                        let p: f64 = sites
                            .iter()
                            .enumerate()
                            .filter(|&(m, _)| m != k)
                            .map(|(_, &s)| spins[s])
                            .product();
                        out[site] += p;
                    }
                }
            }
        }
    }
}

/// The even operators of the square lattice, in the order MCRG studies add them: nearest
/// neighbour, next-nearest (diagonal), `(2,0)`, the plaquette, `(2,1)`, `(2,2)`, `(3,0)`.
pub fn even_operators() -> Vec<Operator> {
    let pair = |v: &[(isize, isize)]| v.iter().map(|&o| vec![(0, 0), o]).collect();
    vec![
        Operator {
            name: "nn (1,0)",
            shapes: pair(&[(0, 1), (1, 0)]),
        },
        Operator {
            name: "nnn (1,1)",
            shapes: pair(&[(1, 1), (1, -1)]),
        },
        Operator {
            name: "(2,0)",
            shapes: pair(&[(0, 2), (2, 0)]),
        },
        Operator {
            name: "plaquette",
            shapes: vec![vec![(0, 0), (0, 1), (1, 0), (1, 1)]],
        },
        Operator {
            name: "(2,1)",
            shapes: pair(&[(1, 2), (2, 1), (1, -2), (2, -1)]),
        },
        Operator {
            name: "(2,2)",
            shapes: pair(&[(2, 2), (2, -2)]),
        },
        Operator {
            name: "(3,0)",
            shapes: pair(&[(0, 3), (3, 0)]),
        },
    ]
}

/// The odd operators of the square lattice: the magnetisation, three spins of a plaquette
/// (4 orientations), three in a row (2), and three spins on a bent `(1,0),(1,1)`… path
/// spanning a `2×3` rectangle's corners (`(0,0),(1,1),(0,2)` and its rotations, 4).
pub fn odd_operators() -> Vec<Operator> {
    vec![
        Operator {
            name: "magnetisation",
            shapes: vec![vec![(0, 0)]],
        },
        Operator {
            name: "3-spin plaquette",
            shapes: vec![
                vec![(0, 0), (0, 1), (1, 0)],
                vec![(0, 0), (0, 1), (1, 1)],
                vec![(0, 0), (1, 0), (1, 1)],
                vec![(0, 1), (1, 0), (1, 1)],
            ],
        },
        Operator {
            name: "3-spin row",
            shapes: vec![vec![(0, 0), (0, 1), (0, 2)], vec![(0, 0), (1, 0), (2, 0)]],
        },
        Operator {
            name: "3-spin chevron",
            shapes: vec![
                vec![(0, 0), (1, 1), (0, 2)],
                vec![(1, 0), (0, 1), (1, 2)],
                vec![(0, 0), (1, 1), (2, 0)],
                vec![(0, 1), (1, 0), (2, 1)],
            ],
        },
    ]
}

/// The nearest-neighbour operator of a chain (`rows = 1`), and the next ones.
pub fn chain_operators() -> Vec<Operator> {
    (1..=3)
        .map(|d| Operator {
            name: ["chain (1)", "chain (2)", "chain (3)"][d as usize - 1],
            shapes: vec![vec![(0, 0), (0, d)]],
        })
        .collect()
}

/// Operator sums of every configuration at every RG level.
#[derive(Clone, Debug)]
pub struct McrgData {
    /// The operators.
    pub operators: Vec<Operator>,
    /// Block lattice side per level (level 0: the original lattice).
    pub sides: Vec<usize>,
    /// The block side `b`.
    pub factor: usize,
    /// `values[level][op]` over configurations.
    pub values: Vec<Vec<Vec<f64>>>,
    /// Keep every this many configurations' block spins (0: none), for couplings.
    pub keep_every: usize,
    /// The kept configurations, `kept[level]` (each `±1`, side `sides[level]`).
    pub kept: Vec<Vec<Vec<f64>>>,
}

impl McrgData {
    /// An empty record for `levels` block steps of `step` from `lattice` (a chain or a
    /// square lattice). Errors: a lattice that does not block `levels` times.
    pub fn new(
        operators: Vec<Operator>,
        lattice: Lattice,
        step: BlockSpin,
        levels: usize,
    ) -> Result<Self> {
        if levels == 0 || operators.is_empty() {
            return Err(NrgError::param(
                "levels",
                "need ≥ 1 block step and ≥ 1 operator",
            ));
        }
        let mut sides = vec![lattice.l()];
        let mut lat = lattice;
        for _ in 0..levels {
            lat = step.coarse(lat)?;
            sides.push(lat.l());
        }
        let values = vec![vec![Vec::new(); operators.len()]; levels + 1];
        Ok(Self {
            operators,
            sides,
            factor: step.factor,
            values,
            keep_every: 0,
            kept: vec![Vec::new(); levels + 1],
        })
    }

    /// Configurations recorded.
    pub fn len(&self) -> usize {
        self.values[0][0].len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records one configuration and its block spins (`levels` steps of `step`).
    pub fn push(
        &mut self,
        spins: &[f64],
        lattice: Lattice,
        step: &BlockSpin,
        rng: &mut impl rand::Rng,
    ) -> Result<()> {
        let levels = self.sides.len() - 1;
        let blocked = step.iterate(spins, lattice, levels, rng)?;
        let keep = self.keep_every > 0 && self.len().is_multiple_of(self.keep_every);
        let rows = |lat: &Lattice| if lat.dim() == 1 { 1 } else { lat.l() };
        for (level, (s, lat)) in std::iter::once((spins, lattice))
            .chain(blocked.iter().map(|(s, l)| (s.as_slice(), *l)))
            .enumerate()
        {
            for (k, op) in self.operators.iter().enumerate() {
                self.values[level][k].push(op.value(s, rows(&lat), lat.l()));
            }
            if keep {
                self.kept[level].push(s.to_vec());
            }
        }
        Ok(())
    }
}

/// The linearised RG map of one block step in one sector, truncated to `operators`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RgMatrix {
    /// The step `n → n + 1`.
    pub from_level: usize,
    /// The block lattice side after it.
    pub to_side: usize,
    /// The operators kept (the first ones of the sector).
    pub operators: Vec<String>,
    /// Eigenvalues, largest real part first (real parts), with jackknife errors.
    pub eigenvalues: Vec<Estimate>,
    /// The largest `|Im λ|` of the full-sample eigenvalues (0 for a real spectrum).
    pub max_imaginary: f64,
    /// `y = ln λ₁ / ln b` of the leading eigenvalue, with its jackknife error.
    pub exponent: Estimate,
}

/// Connected correlations of `x` and `y` over `range`.
fn cov(x: &[f64], y: &[f64], skip: Option<std::ops::Range<usize>>) -> f64 {
    let keep = |i: &usize| skip.as_ref().is_none_or(|r| !r.contains(i));
    let idx: Vec<usize> = (0..x.len()).filter(keep).collect();
    let n = idx.len() as f64;
    let (mx, my) = (
        idx.iter().map(|&i| x[i]).sum::<f64>() / n,
        idx.iter().map(|&i| y[i]).sum::<f64>() / n,
    );
    idx.iter().map(|&i| (x[i] - mx) * (y[i] - my)).sum::<f64>() / n
}

/// The eigenvalues of `T = B⁻¹A` for `ops` over the configurations outside `skip`, sorted
/// by real part (descending); `None` when `B` is singular.
fn spectrum(
    data: &McrgData,
    n: usize,
    ops: &[usize],
    skip: Option<std::ops::Range<usize>>,
) -> Option<Vec<(f64, f64)>> {
    let m = ops.len();
    let (lo, hi) = (&data.values[n], &data.values[n + 1]);
    let a = DMatrix::from_fn(m, m, |g, b| cov(&hi[ops[g]], &lo[ops[b]], skip.clone()));
    let bm = DMatrix::from_fn(m, m, |g, a| cov(&hi[ops[g]], &hi[ops[a]], skip.clone()));
    let t = bm.lu().solve(&a)?;
    let mut ev: Vec<(f64, f64)> = t
        .complex_eigenvalues()
        .iter()
        .map(|c| (c.re, c.im))
        .collect();
    ev.sort_by(|x, y| y.0.total_cmp(&x.0));
    Some(ev)
}

/// A function of a spectrum `(Re λ, Im λ)`, sorted.
type Spectral<'a> = dyn Fn(&[(f64, f64)]) -> f64 + 'a;

/// Which operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sector {
    /// Even under `s → −s` (the thermal exponent).
    Even,
    /// Odd (the magnetic exponent).
    Odd,
}

/// The linearised RG map of the step `from_level → from_level + 1`, in `sector`, truncated
/// to its first `operators` operators, with jackknife errors over `blocks` contiguous blocks.
///
/// Errors: a step outside the record, too few operators of the sector, fewer than 2 blocks
/// or fewer configurations than blocks, a singular correlation matrix.
pub fn linearised_rg(
    data: &McrgData,
    from_level: usize,
    sector: Sector,
    operators: usize,
    blocks: usize,
) -> Result<RgMatrix> {
    if from_level + 1 >= data.sides.len() {
        return Err(NrgError::param(
            "level",
            format!("the record has {} block steps", data.sides.len() - 1),
        ));
    }
    let ops: Vec<usize> = (0..data.operators.len())
        .filter(|&k| data.operators[k].is_odd() == (sector == Sector::Odd))
        .take(operators)
        .collect();
    if ops.len() < operators || operators == 0 {
        return Err(NrgError::param(
            "operators",
            format!(
                "asked for {operators} {sector:?} operators, {} recorded",
                ops.len()
            ),
        ));
    }
    let n = data.len();
    if blocks < 2 || n < 2 * blocks {
        return Err(NrgError::param(
            "blocks",
            format!("need ≥ 2 jackknife blocks and ≥ 2 configurations per block ({n} recorded)"),
        ));
    }
    let singular = || NrgError::InvalidData("the block-spin correlation matrix is singular".into());
    let full = spectrum(data, from_level, &ops, None).ok_or_else(singular)?;
    let size = n / blocks;
    let mut jack: Vec<Vec<(f64, f64)>> = Vec::with_capacity(blocks);
    for k in 0..blocks {
        jack.push(
            spectrum(data, from_level, &ops, Some(k * size..(k + 1) * size))
                .ok_or_else(singular)?,
        );
    }
    let ln_b = (data.factor as f64).ln();
    let jk_error = |f: &Spectral<'_>| {
        let vals: Vec<f64> = jack.iter().map(|e| f(e)).collect();
        let mean = vals.iter().sum::<f64>() / blocks as f64;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
        ((blocks as f64 - 1.0) / blocks as f64 * var).sqrt()
    };
    let eigenvalues = (0..ops.len())
        .map(|i| Estimate::new(full[i].0, jk_error(&|e| e[i].0)))
        .collect();
    let exp = |e: &[(f64, f64)]| e[0].0.max(1e-300).ln() / ln_b;
    Ok(RgMatrix {
        from_level,
        to_side: data.sides[from_level + 1],
        operators: ops
            .iter()
            .map(|&k| data.operators[k].name.to_string())
            .collect(),
        eigenvalues,
        max_imaginary: full.iter().map(|e| e.1.abs()).fold(0.0, f64::max),
        exponent: Estimate::new(exp(&full), jk_error(&exp)),
    })
}

/// Everything MCRG measures on a record: every step, both sectors, every truncation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct McrgReport {
    /// Configurations.
    pub configurations: usize,
    /// Block lattice sides, level 0 first.
    pub sides: Vec<usize>,
    /// The block side `b`.
    pub factor: usize,
    /// Jackknife blocks.
    pub blocks: usize,
    /// The even sector: per step, per truncation `m = 1 …` (`[step][m − 1]`; a step keeps
    /// only the operators that fit on its coarser lattice, [`Operator::fits`]).
    pub even: Vec<Vec<RgMatrix>>,
    /// The odd sector, likewise.
    pub odd: Vec<Vec<RgMatrix>>,
}

/// The linearised RG map of every step, in both sectors, at every truncation of the
/// recorded operators.
pub fn analyse(data: &McrgData, blocks: usize) -> Result<McrgReport> {
    // per step: the leading operators of the sector that fit on the coarser lattice
    let fitting = |odd: bool, step: usize| {
        data.operators
            .iter()
            .filter(|o| o.is_odd() == odd)
            .take_while(|o| o.fits(data.sides[step + 1]))
            .count()
    };
    let steps = data.sides.len() - 1;
    let sector = |s: Sector| -> Result<Vec<Vec<RgMatrix>>> {
        (0..steps)
            .map(|step| {
                (1..=fitting(s == Sector::Odd, step))
                    .map(|m| linearised_rg(data, step, s, m, blocks))
                    .collect::<Result<Vec<_>>>()
            })
            .collect()
    };
    Ok(McrgReport {
        configurations: data.len(),
        sides: data.sides.clone(),
        factor: data.factor,
        blocks,
        even: sector(Sector::Even)?,
        odd: sector(Sector::Odd)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_count_their_shapes() {
        // all spins up: S_α = V × shapes
        let spins = vec![1.0; 16];
        for op in even_operators().iter().chain(&odd_operators()) {
            assert_eq!(
                op.value(&spins, 4, 4),
                16.0 * op.shapes.len() as f64,
                "{}",
                op.name
            );
        }
        // one spin down flips the nn sum by 2 × 4 bonds
        let mut s = spins.clone();
        s[5] = -1.0;
        assert_eq!(even_operators()[0].value(&s, 4, 4), 32.0 - 8.0);
        assert_eq!(odd_operators()[0].value(&s, 4, 4), 14.0);
        assert!(odd_operators().iter().all(Operator::is_odd));
        assert!(!even_operators().iter().any(Operator::is_odd));
    }

    /// `g_{iα}` is the derivative: flipping `s_i` changes `S_α` by `−2 s_i g_{iα}`.
    #[test]
    fn local_fields_are_derivatives() {
        let spins: Vec<f64> = (0..25)
            .map(|k| if (k * 7) % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        let mut g = vec![0.0; 25];
        for op in even_operators().iter().chain(&odd_operators()) {
            op.local_field(&spins, 5, 5, &mut g);
            for i in 0..25 {
                let mut f = spins.clone();
                f[i] = -f[i];
                let d = op.value(&f, 5, 5) - op.value(&spins, 5, 5);
                assert!(
                    (d + 2.0 * spins[i] * g[i]).abs() < 1e-9,
                    "{} at {i}",
                    op.name
                );
            }
        }
    }
}
