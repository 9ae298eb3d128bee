//! Configurations on disk as NumPy `.npy` arrays (`f32` or `f64`, C order).
//!
//! Accepted shapes: `[N, L, L]` (one channel) or `[N, C, L, L]`. Values must be finite.
//!
//! [`LatticeSymmetry`] moves a batch of configurations by one element of the periodic
//! lattice's symmetry group (data augmentation for forward-KL training).

use burn::tensor::{Device, Tensor, TensorData};
use npyz::WriterBuilder;
use nrg_core::NrgError;
use std::path::Path;

/// Reads configurations `[N, C, rows, cols]` from `path`.
pub fn read_configurations(path: &Path) -> Result<(Vec<f32>, [usize; 4]), NrgError> {
    let bad = |msg: String| NrgError::InvalidData(format!("{}: {msg}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| bad(format!("not a .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(bad("Fortran-ordered arrays are not supported".into()));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let shape = match shape[..] {
        [n, r, c] => [n, 1, r, c],
        [n, ch, r, c] => [n, ch, r, c],
        _ => {
            return Err(bad(format!(
                "expected shape [N, L, L] or [N, C, L, L], got {shape:?}"
            )));
        }
    };
    if shape.contains(&0) {
        return Err(bad(format!("an empty array of shape {shape:?}")));
    }
    let descr = npy.dtype().descr();
    let type_str = descr.trim_matches(|c| c == '\'' || c == '"');
    let values: Vec<f32> = match type_str {
        "<f4" => npy
            .into_vec::<f32>()
            .map_err(|e| bad(format!("corrupt data: {e}")))?,
        "<f8" => npy
            .into_vec::<f64>()
            .map_err(|e| bad(format!("corrupt data: {e}")))?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        other => return Err(bad(format!("dtype {other} is not little-endian f4/f8"))),
    };
    if values.len() != shape.iter().product::<usize>() {
        return Err(bad("truncated data".into()));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("value {i} is not finite")));
    }
    Ok((values, shape))
}

/// Reads configurations into a tensor on `device`.
pub fn load_configurations(path: &Path, device: &Device) -> Result<Tensor<4>, NrgError> {
    let (values, shape) = read_configurations(path)?;
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

/// Writes `values` with `shape` as a little-endian `f32` `.npy` file (atomically: a
/// temporary file, then a rename).
pub fn write_npy_f32(path: &Path, values: &[f32], shape: &[usize]) -> Result<(), NrgError> {
    write_npy(path, values, shape)
}

/// Writes `values` with `shape` as a little-endian `f64` `.npy` file (atomically), for
/// numbers whose digits matter (log-weights of order `10²`–`10³`, whose differences set
/// importance weights).
pub fn write_npy_f64(path: &Path, values: &[f64], shape: &[usize]) -> Result<(), NrgError> {
    write_npy(path, values, shape)
}

fn write_npy<T: npyz::AutoSerialize + Copy>(
    path: &Path,
    values: &[T],
    shape: &[usize],
) -> Result<(), NrgError> {
    let io = |e: std::io::Error| NrgError::InvalidData(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("npy.tmp");
    {
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut writer = npyz::WriteOptions::<T>::new()
            .default_dtype()
            .shape(&shape.iter().map(|&d| d as u64).collect::<Vec<_>>())
            .writer(std::io::BufWriter::new(file))
            .begin_nd()
            .map_err(io)?;
        writer.extend(values.iter().copied()).map_err(io)?;
        writer.finish().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// One element of the symmetry group of a periodic lattice, acting on configurations
/// `[N, C, rows, cols]` by moving sites (the channels are carried along unchanged):
///
/// ```text
/// (g·φ)(i, j) = φ(T(i, j) + (a, b))      T ∈ D₄ (square) or {1, j ↦ −j} (a chain, rows = 1)
/// ```
///
/// On a square lattice `T` is a composition of an optional transposition `(i, j) ↦ (j, i)`
/// and optional reflections of each axis, which gives the 8 elements of D₄ once each; the
/// translation `(a, b)` runs over all `rows × cols` shifts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatticeSymmetry {
    /// Translation along rows and columns.
    pub shift: (usize, usize),
    /// Exchange rows and columns (square lattices only).
    pub transpose: bool,
    /// Reflect the row index, then the column index.
    pub flip: (bool, bool),
}

impl LatticeSymmetry {
    /// The element picked by five uniform numbers in `[0, 1)` (e.g. from the device's
    /// random stream, so that a seeded run is reproducible), on a `rows × cols` lattice.
    pub fn from_uniforms(u: [f64; 5], rows: usize, cols: usize) -> Self {
        let pick = |v: f64, n: usize| ((v * n as f64) as usize).min(n - 1);
        let square = rows == cols && rows > 1;
        Self {
            shift: (pick(u[0], rows), pick(u[1], cols)),
            transpose: square && u[2] < 0.5,
            flip: (rows > 1 && u[3] < 0.5, u[4] < 0.5),
        }
    }

    /// Elements that generate the group on a `rows × cols` lattice — a unit translation
    /// along each axis, the transposition (square lattices) and each axis' reflection — and
    /// one composite of all of them.
    pub fn generators(rows: usize, cols: usize) -> Vec<Self> {
        let square = rows == cols && rows > 1;
        let identity = Self {
            shift: (0, 0),
            transpose: false,
            flip: (false, false),
        };
        let mut out = vec![Self {
            shift: (0, 1),
            ..identity
        }];
        if rows > 1 {
            out.push(Self {
                shift: (1, 0),
                ..identity
            });
            out.push(Self {
                flip: (true, false),
                ..identity
            });
        }
        out.push(Self {
            flip: (false, true),
            ..identity
        });
        out.push(Self {
            shift: (rows / 2, cols / 3),
            transpose: square,
            flip: (rows > 1, true),
        });
        if square {
            out.push(Self {
                transpose: true,
                ..identity
            });
        }
        out
    }

    /// `g·x` for a batch `[N, C, rows, cols]`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = x;
        if self.transpose {
            x = x.swap_dims(2, 3);
        }
        if self.flip.0 {
            x = x.flip([2]);
        }
        if self.flip.1 {
            x = x.flip([3]);
        }
        if self.shift.0 > 0 {
            x = x.roll_dim(self.shift.0 as i64, 2);
        }
        if self.shift.1 > 0 {
            x = x.roll_dim(self.shift.1 as i64, 3);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("nrg-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.npy");
        let v: Vec<f32> = (0..32).map(|i| i as f32 * 0.5).collect();
        write_npy_f32(&path, &v, &[2, 4, 4]).unwrap();
        let (back, shape) = read_configurations(&path).unwrap();
        assert_eq!(shape, [2, 1, 4, 4]);
        assert_eq!(back, v);
        std::fs::write(&path, b"not numpy").unwrap();
        assert!(read_configurations(&path).is_err());
        assert!(read_configurations(&dir.join("missing.npy")).is_err());
        write_npy_f32(&path, &[f32::NAN; 4], &[1, 2, 2]).unwrap();
        assert!(read_configurations(&path).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The index map of `g` on a `rows × cols` lattice, read off by applying it to a
    /// configuration whose value at each site is that site's index.
    fn site_map(g: LatticeSymmetry, rows: usize, cols: usize) -> Vec<usize> {
        let dev = Device::flex();
        let ids: Vec<f32> = (0..rows * cols).map(|k| k as f32).collect();
        let x = Tensor::<4>::from_data(TensorData::new(ids, [1, 1, rows, cols]), &dev);
        let out = g
            .apply(x)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        out.into_iter().map(|v| v as usize).collect()
    }

    fn uniforms(k: usize, rows: usize, cols: usize) -> [f64; 5] {
        // Mid-points of the cells, so every element is reached exactly once.
        let (a, rest) = (k % rows, k / rows);
        let (b, rest) = (rest % cols, rest / cols);
        let bit = |n: usize| if (rest >> n) & 1 == 1 { 0.25 } else { 0.75 };
        [
            (a as f64 + 0.5) / rows as f64,
            (b as f64 + 0.5) / cols as f64,
            bit(0),
            bit(1),
            bit(2),
        ]
    }

    #[test]
    fn lattice_symmetries_are_the_whole_group_and_keep_neighbours() {
        for (rows, cols, size) in [(4, 4, 4 * 4 * 8), (1, 8, 8 * 2)] {
            let mut seen = std::collections::BTreeSet::new();
            for k in 0..rows * cols * 8 {
                let g = LatticeSymmetry::from_uniforms(uniforms(k, rows, cols), rows, cols);
                let map = site_map(g, rows, cols);
                // A permutation of the sites …
                let mut sorted = map.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..rows * cols).collect::<Vec<_>>(), "{g:?}");
                // … that maps nearest neighbours (on the torus) to nearest neighbours.
                let near = |p: usize, q: usize| {
                    let (pi, pj, qi, qj) = (p / cols, p % cols, q / cols, q % cols);
                    let d = |a: usize, b: usize, n: usize| (a + n - b) % n;
                    let (di, dj) = (d(pi, qi, rows), d(pj, qj, cols));
                    (di == 0 && (dj == 1 || dj == cols - 1))
                        || (dj == 0 && rows > 1 && (di == 1 || di == rows - 1))
                };
                for p in 0..rows * cols {
                    for q in 0..rows * cols {
                        if near(p, q) {
                            assert!(near(map[p], map[q]), "{g:?} breaks the bond {p}-{q}");
                        }
                    }
                }
                seen.insert(map);
            }
            // Every translation × point operation once: the full group.
            assert_eq!(seen.len(), size, "{rows}×{cols}");
            // The generators are elements of it, none of them the identity.
            let identity: Vec<usize> = (0..rows * cols).collect();
            for g in LatticeSymmetry::generators(rows, cols) {
                let map = site_map(g, rows, cols);
                assert!(seen.contains(&map) && map != identity, "{g:?}");
            }
        }
    }
}
