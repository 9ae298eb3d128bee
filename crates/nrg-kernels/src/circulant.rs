//! The circulant convolution of fields on a periodic `rows × cols` lattice by FFT
//! (`rustfft`), `O(V log V)` per field (`V = rows·cols`), forward and backward.
//!
//! Each channel `c` of a field `x` `[B, C, rows, cols]` is convolved with its own periodic
//! kernel `K_c` (`[C, V]`), or with the kernel's inverse:
//!
//! ```text
//! forward:  y = K ⊛ x,    ŷ(k) = K̂(k) x̂(k)           K̂(k) = Σ_r K(r) e^{−ik·r}
//! inverse:  y = K⁻¹ ⊛ x,  ŷ(k) = x̂(k) / K̂(k)
//! ```
//!
//! with `y = F⁻¹ ŷ`, `F⁻¹` the inverse DFT with its `1/V`. For a real kernel the adjoint
//! of a convolution is a correlation, whose transform carries the complex conjugate; with
//! `g = ∂L/∂y` and `u = Âᵀ g` (`Â` the applied multiplier, `K̂` or `1/K̂`):
//!
//! ```text
//! ∂L/∂x = F⁻¹(conj(Â) ĝ)
//! ∂L/∂K = Σ_b F⁻¹(ĝ conj(x̂))                  forward
//! ∂L/∂K = −Σ_b F⁻¹(û conj(ŷ)),  û = conj(Â) ĝ    inverse (dy = −K⁻¹ ⊛ dK ⊛ y)
//! ```
//!
//! The transforms run in `f64` (the fields are converted on the way in and out), so the
//! only `f32` rounding is that of the inputs and outputs. Fields are independent: the batch
//! is split over rayon.

use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Plans by lattice shape, made once per process (planning costs as much as a small
/// transform).
fn plans(rows: usize, cols: usize) -> Arc<Plans> {
    type Cache = Mutex<HashMap<(usize, usize), Arc<Plans>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    // a poisoned lock only means another thread panicked while inserting: the map is intact
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    map.entry((rows, cols))
        .or_insert_with(|| Arc::new(Plans::new(rows, cols)))
        .clone()
}

/// The shape of a circulant convolution: fields `[batch, channels, rows, cols]`, a kernel
/// `[channels, rows·cols]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CirculantGeometry {
    /// Fields `B`.
    pub batch: usize,
    /// Channels `C`.
    pub channels: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

impl CirculantGeometry {
    fn volume(&self) -> usize {
        self.rows * self.cols
    }

    fn check(&self, field: &[f32], kernel: &[f32]) {
        let v = self.volume();
        assert!(
            v > 0 && field.len() == self.batch * self.channels * v,
            "field of {} values for {self:?}",
            field.len()
        );
        assert_eq!(kernel.len(), self.channels * v, "kernel for {self:?}");
    }
}

/// Forward and inverse plans along both axes.
struct Plans {
    rows: usize,
    cols: usize,
    row_fwd: Arc<dyn Fft<f64>>,
    row_inv: Arc<dyn Fft<f64>>,
    col_fwd: Arc<dyn Fft<f64>>,
    col_inv: Arc<dyn Fft<f64>>,
}

impl Plans {
    fn new(rows: usize, cols: usize) -> Self {
        let mut p = FftPlanner::<f64>::new();
        Self {
            rows,
            cols,
            row_fwd: p.plan_fft_forward(rows),
            row_inv: p.plan_fft_inverse(rows),
            col_fwd: p.plan_fft_forward(cols),
            col_inv: p.plan_fft_inverse(cols),
        }
    }

    /// The 2D DFT of `buf` (`[rows, cols]`, row-major) in place, unnormalised (`e^{−ik·r}`
    /// forward, `e^{+ik·r}` inverse); `scratch` is `rows·cols` long.
    fn fft2(&self, buf: &mut [Complex<f64>], scratch: &mut [Complex<f64>], inverse: bool) {
        let (r, c) = (self.rows, self.cols);
        let (along_cols, along_rows) = if inverse {
            (&self.col_inv, &self.row_inv)
        } else {
            (&self.col_fwd, &self.row_fwd)
        };
        along_cols.process(buf); // every row: a transform of length `cols`
        for i in 0..r {
            for j in 0..c {
                scratch[j * r + i] = buf[i * c + j];
            }
        }
        along_rows.process(scratch); // every column
        for j in 0..c {
            for i in 0..r {
                buf[i * c + j] = scratch[j * r + i];
            }
        }
    }

    /// `F f` of a real field.
    fn transform(&self, f: &[f32]) -> Vec<Complex<f64>> {
        let mut buf: Vec<Complex<f64>> = f.iter().map(|&x| Complex::new(x as f64, 0.0)).collect();
        let mut scratch = vec![Complex::new(0.0, 0.0); buf.len()];
        self.fft2(&mut buf, &mut scratch, false);
        buf
    }

    /// The real part of `F⁻¹ f̂` (with its `1/V`).
    fn back(&self, mut buf: Vec<Complex<f64>>) -> Vec<f64> {
        let mut scratch = vec![Complex::new(0.0, 0.0); buf.len()];
        self.fft2(&mut buf, &mut scratch, true);
        let v = buf.len() as f64;
        buf.iter().map(|z| z.re / v).collect()
    }

    /// The multiplier `Â_c` of every channel: `K̂_c`, or `1/K̂_c` for the inverse.
    fn multipliers(&self, kernel: &[f32], inverse: bool) -> Vec<Vec<Complex<f64>>> {
        kernel
            .chunks(self.rows * self.cols)
            .map(|k| {
                let mut s = self.transform(k);
                if inverse {
                    for z in s.iter_mut() {
                        *z = z.inv();
                    }
                }
                s
            })
            .collect()
    }
}

/// `y = K ⊛ x` (or `K⁻¹ ⊛ x` with `inverse`), `[B, C, rows, cols]` → the same (module docs).
///
/// # Panics
/// If the slices do not match `geometry`.
pub fn circulant_forward(
    geometry: &CirculantGeometry,
    field: &[f32],
    kernel: &[f32],
    inverse: bool,
) -> Vec<f32> {
    geometry.check(field, kernel);
    let v = geometry.volume();
    let plans = plans(geometry.rows, geometry.cols);
    let mult = plans.multipliers(kernel, inverse);
    let mut out = vec![0.0f32; field.len()];
    out.par_chunks_mut(v)
        .zip(field.par_chunks(v))
        .enumerate()
        .for_each(|(k, (y, x))| {
            let a = &mult[k % geometry.channels];
            let mut f = plans.transform(x);
            for (z, m) in f.iter_mut().zip(a) {
                *z *= m;
            }
            for (o, r) in y.iter_mut().zip(plans.back(f)) {
                *o = r as f32;
            }
        });
    out
}

/// `(∂L/∂x, ∂L/∂K)` of [`circulant_forward`] from its input `field`, its `output` and
/// `grad = ∂L/∂y` (module docs). `∂L/∂K` is summed over the batch in a fixed order.
///
/// # Panics
/// If the slices do not match `geometry`.
pub fn circulant_backward(
    geometry: &CirculantGeometry,
    field: &[f32],
    output: &[f32],
    kernel: &[f32],
    grad: &[f32],
    inverse: bool,
) -> (Vec<f32>, Vec<f32>) {
    geometry.check(field, kernel);
    assert!(output.len() == field.len() && grad.len() == field.len());
    let v = geometry.volume();
    let plans = plans(geometry.rows, geometry.cols);
    let mult = plans.multipliers(kernel, inverse);
    // per field: ∂L/∂x and this field's contribution to ∂L/∂K_c
    let parts: Vec<(Vec<f64>, Vec<f64>)> = (0..geometry.batch * geometry.channels)
        .into_par_iter()
        .map(|k| {
            let a = &mult[k % geometry.channels];
            let at = k * v..(k + 1) * v;
            let g = plans.transform(&grad[at.clone()]);
            // û = conj(Â) ĝ
            let u: Vec<Complex<f64>> = g.iter().zip(a).map(|(g, a)| a.conj() * g).collect();
            let gx = plans.back(u.clone());
            let gk = if inverse {
                let y = plans.transform(&output[at]);
                let prod = u.iter().zip(&y).map(|(u, y)| -u * y.conj()).collect();
                plans.back(prod)
            } else {
                let x = plans.transform(&field[at]);
                let prod = g.iter().zip(&x).map(|(g, x)| g * x.conj()).collect();
                plans.back(prod)
            };
            (gx, gk)
        })
        .collect();
    let mut grad_field = Vec::with_capacity(field.len());
    let mut grad_kernel = vec![0.0f64; kernel.len()];
    for (k, (gx, gk)) in parts.iter().enumerate() {
        grad_field.extend(gx.iter().map(|&x| x as f32));
        let c = k % geometry.channels;
        for (o, g) in grad_kernel[c * v..(c + 1) * v].iter_mut().zip(gk) {
            *o += g;
        }
    }
    (grad_field, grad_kernel.iter().map(|&x| x as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
        (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect()
    }

    /// The convolution by its definition, `y(r) = Σ_{r'} K(r − r') x(r')`, in f64.
    fn naive(g: &CirculantGeometry, x: &[f32], k: &[f32]) -> Vec<f64> {
        let (r, c, v) = (g.rows, g.cols, g.volume());
        let mut y = vec![0.0; x.len()];
        for f in 0..g.batch * g.channels {
            let ch = f % g.channels;
            for i in 0..r {
                for j in 0..c {
                    let mut s = 0.0;
                    for a in 0..r {
                        for b in 0..c {
                            let d = ((i + r - a) % r) * c + (j + c - b) % c;
                            s += k[ch * v + d] as f64 * x[f * v + a * c + b] as f64;
                        }
                    }
                    y[f * v + i * c + j] = s;
                }
            }
        }
        y
    }

    fn geometries() -> [CirculantGeometry; 3] {
        [
            CirculantGeometry {
                batch: 3,
                channels: 2,
                rows: 4,
                cols: 4,
            },
            CirculantGeometry {
                batch: 2,
                channels: 1,
                rows: 6,
                cols: 10,
            },
            CirculantGeometry {
                batch: 2,
                channels: 2,
                rows: 1,
                cols: 8,
            },
        ]
    }

    /// A kernel well away from singular: δ plus small noise.
    fn kernel(g: &CirculantGeometry, seed: u64) -> Vec<f32> {
        let v = g.volume();
        let mut k: Vec<f32> = random(g.channels * v, seed)
            .iter()
            .map(|x| 0.15 * x)
            .collect();
        for c in 0..g.channels {
            k[c * v] += 1.0;
        }
        k
    }

    #[test]
    fn forward_is_the_convolution_and_inverse_undoes_it() {
        for g in geometries() {
            let x = random(g.batch * g.channels * g.volume(), 1);
            let k = kernel(&g, 2);
            let y = circulant_forward(&g, &x, &k, false);
            for (a, b) in y.iter().zip(naive(&g, &x, &k)) {
                assert!((*a as f64 - b).abs() < 1e-5, "{g:?}: {a} vs {b}");
            }
            let back = circulant_forward(&g, &y, &k, true);
            for (a, b) in back.iter().zip(&x) {
                assert!((a - b).abs() < 1e-5, "{g:?}: {a} vs {b}");
            }
        }
    }

    /// Both directions' gradients against central differences of `L = Σ w·y` in f64 terms
    /// (step 1e-2 on an f32 map that is linear in x — its difference quotient is exact up to
    /// rounding — and smooth in K, where Richardson extrapolation of two steps removes the
    /// O(h²) error of the inverse's `1/K̂`).
    #[test]
    fn gradients_match_central_differences() {
        for g in geometries() {
            for inverse in [false, true] {
                let n = g.batch * g.channels * g.volume();
                let x = random(n, 3);
                let k = kernel(&g, 4);
                let w = random(n, 5);
                let loss = |x: &[f32], k: &[f32]| -> f64 {
                    circulant_forward(&g, x, k, inverse)
                        .iter()
                        .zip(&w)
                        .map(|(y, w)| *y as f64 * *w as f64)
                        .sum()
                };
                let y = circulant_forward(&g, &x, &k, inverse);
                let (gx, gk) = circulant_backward(&g, &x, &y, &k, &w, inverse);
                let h = 1e-2f32;
                for i in [0, n / 3, n - 1] {
                    let (mut up, mut dn) = (x.clone(), x.clone());
                    up[i] += h;
                    dn[i] -= h;
                    let fd = (loss(&up, &k) - loss(&dn, &k)) / (2.0 * h as f64);
                    assert!(
                        (fd - gx[i] as f64).abs() < 2e-3,
                        "{g:?} {inverse} x{i}: {fd} vs {}",
                        gx[i]
                    );
                }
                for i in [0, k.len() / 2, k.len() - 1] {
                    // Richardson: (4 D(h/2) − D(h))/3 cancels the O(h²) of `1/K̂`
                    let central = |h: f32| {
                        let (mut up, mut dn) = (k.clone(), k.clone());
                        up[i] += h;
                        dn[i] -= h;
                        (loss(&x, &up) - loss(&x, &dn)) / (2.0 * h as f64)
                    };
                    let fd = (4.0 * central(h / 2.0) - central(h)) / 3.0;
                    let tol = 2e-3 * (1.0 + fd.abs());
                    assert!(
                        (fd - gk[i] as f64).abs() < tol,
                        "{g:?} {inverse} K{i}: {fd} vs {}",
                        gk[i]
                    );
                }
            }
        }
    }
}
