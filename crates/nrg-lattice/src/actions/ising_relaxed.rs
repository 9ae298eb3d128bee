//! The continuous relaxation of the Ising model.
//!
//! With `A` the adjacency matrix of the periodic lattice (each bond once in each direction),
//! `K = βJ` and a shift `α` making `M = K·A + α·1` positive definite,
//!
//! ```text
//! S(x)       = ½ xᵀ M⁻¹ x − Σ_i ln cosh x_i
//! ∂S/∂x      = M⁻¹ x − tanh x
//! ln Z_Ising = ln Z_x + N ln 2 − αN/2 − (N/2) ln 2π − ½ ln det M
//! ```
//!
//! `M` is circulant with eigenvalues `m_p = 2K Σ_μ cos p_μ + α`; `M⁻¹` is built from them in
//! `f64` as a dense `[V, V]` matrix (one matmul per batch evaluates the quadratic form).
//! The default shift is NeuralRG's `α = 0.1 + 2dK` (`0.1 + 4K` in 2D).
//! Spins are recovered by `P(s_i = +1 | x) = σ(2x_i)`; `E[s_i | x] = tanh x_i`.
//!
//! Shapes: `x` is `[batch, 1, rows, cols]`; the action is `[batch]`.

use super::tensor_from_f64;
use crate::exact::{ising1d, ising2d};
use burn::tensor::{Device, Tensor};
use nrg_core::action::HostAction;
use nrg_core::error::{require_finite, require_positive};
use nrg_core::{Action, FieldSpace, Lattice, NrgError, OnLattice, Result};

/// The relaxed Ising action on a chain or a torus.
#[derive(Clone, Debug)]
pub struct IsingRelaxed {
    lattice: Lattice,
    beta: f64,
    alpha: f64,
    ln_det_m: f64,
    /// `M⁻¹` row-major in f64, for the host path.
    minv_host: Vec<f64>,
    minv: Tensor<2>,
    /// The eigenvalues `m_p` of `M`, in the lattice's momentum order.
    eig_m: Vec<f64>,
    /// Exact `ln Z_Ising`, computed once on first use (training asks every step).
    exact_ising: std::sync::OnceLock<Option<f64>>,
}

/// The dense `[V, V]` circulant matrix `f(M)`: `f(M)_{xy} = V⁻¹ Σ_p cos(p·(x−y)) f(m_p)`.
fn circulant(lattice: &Lattice, eig: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
    let v = lattice.volume();
    let kernel: Vec<f64> = (0..v)
        .map(|dx| {
            let (di, dj) = lattice.coords(dx);
            (0..v)
                .map(|k| {
                    let (k1, k2) = lattice.coords(k);
                    let phase = std::f64::consts::TAU
                        * (k1 as f64 * di as f64 / lattice.rows() as f64
                            + k2 as f64 * dj as f64 / lattice.cols() as f64);
                    phase.cos() * f(eig[k])
                })
                .sum::<f64>()
                / v as f64
        })
        .collect();
    let mut dense = vec![0.0; v * v];
    for x in 0..v {
        let (xi, xj) = lattice.coords(x);
        for y in 0..v {
            let (yi, yj) = lattice.coords(y);
            let d = lattice.index(yi as isize - xi as isize, yj as isize - xj as isize);
            dense[x * v + y] = kernel[d];
        }
    }
    dense
}

/// `x = M s + M^{1/2} ξ`: given spins `s` and standard normal `ξ`, a draw from the relaxed
/// field's exact conditional `N(M s, M)`. With `s` an exact (or equilibrium Monte Carlo)
/// Ising sample, `x` is one of the relaxed model: summing `e^{−½(x−Ms)ᵀM⁻¹(x−Ms)}·e^{½sᵀMs}`
/// over `s` gives `e^{−½xᵀM⁻¹x} Π 2cosh x_i`, and over `x` the Boltzmann weight of `s`.
/// Training data for forward KL, with no flow involved. Dense `[V, V]` matrices in `f64`.
#[derive(Clone, Debug)]
pub struct FieldGivenSpins {
    volume: usize,
    m: Vec<f64>,
    sqrt_m: Vec<f64>,
}

impl FieldGivenSpins {
    /// Sites `V`.
    pub fn volume(&self) -> usize {
        self.volume
    }

    /// Writes `x = M s + M^{1/2} ξ` into `x` (all three of length `V`).
    pub fn sample(&self, spins: &[f64], noise: &[f64], x: &mut [f64]) {
        let v = self.volume;
        assert!(spins.len() == v && noise.len() == v && x.len() == v);
        for (i, xi) in x.iter_mut().enumerate() {
            let m = &self.m[i * v..(i + 1) * v];
            let r = &self.sqrt_m[i * v..(i + 1) * v];
            *xi = m.iter().zip(spins).map(|(a, b)| a * b).sum::<f64>()
                + r.iter().zip(noise).map(|(a, b)| a * b).sum::<f64>();
        }
    }
}

impl IsingRelaxed {
    /// The relaxation at inverse temperature `beta` (`J = 1`) with NeuralRG's shift
    /// `α = 0.1 + 2dK`.
    pub fn new(lattice: Lattice, beta: f64, device: &Device) -> Result<Self> {
        let alpha = 0.1 + 2.0 * lattice.dim() as f64 * beta;
        Self::with_shift(lattice, beta, alpha, device)
    }

    /// The relaxation with an explicit shift `α` (`M = K·A + α` must be positive definite).
    pub fn with_shift(lattice: Lattice, beta: f64, alpha: f64, device: &Device) -> Result<Self> {
        let beta = require_positive("beta", beta)?;
        let alpha = require_finite("alpha", alpha)?;
        let v = lattice.volume();
        let eig: Vec<f64> = (0..v)
            .map(|k| 2.0 * beta * lattice.cos_sum(k) + alpha)
            .collect();
        let min = eig.iter().cloned().fold(f64::INFINITY, f64::min);
        if min <= 0.0 {
            return Err(NrgError::param(
                "alpha",
                format!("M = K·A + α is not positive definite (lowest eigenvalue {min:.3e})"),
            ));
        }
        let ln_det_m = eig.iter().map(|e| e.ln()).sum();
        let eig_m = eig.clone();
        // (M⁻¹)_{xy} = V⁻¹ Σ_p cos(p·(x−y)) / m_p, a function of x − y only.
        let minv_host = circulant(&lattice, &eig, |m| 1.0 / m);
        let minv = tensor_from_f64(&minv_host, [v, v], device);
        Ok(Self {
            lattice,
            beta,
            alpha,
            ln_det_m,
            minv_host,
            minv,
            eig_m,
            exact_ising: std::sync::OnceLock::new(),
        })
    }

    /// The exact conditional `x | s ∼ N(M s, M)` of the relaxation (module docs), for
    /// drawing exact samples of `x` from exact samples of the spins.
    pub fn field_given_spins(&self) -> FieldGivenSpins {
        FieldGivenSpins {
            volume: self.lattice.volume(),
            m: circulant(&self.lattice, &self.eig_m, |m| m),
            sqrt_m: circulant(&self.lattice, &self.eig_m, f64::sqrt),
        }
    }

    /// Inverse temperature `K = β`.
    pub fn beta(&self) -> f64 {
        self.beta
    }

    /// The shift `α`.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// `ln Z_Ising − ln Z_x = N ln 2 − αN/2 − (N/2) ln 2π − ½ ln det M`.
    pub fn ln_z_offset(&self) -> f64 {
        let n = self.lattice.volume() as f64;
        n * std::f64::consts::LN_2
            - 0.5 * self.alpha * n
            - 0.5 * n * std::f64::consts::TAU.ln()
            - 0.5 * self.ln_det_m
    }

    /// Exact `ln Z_Ising` (Kaufman in 2D, the transfer matrix in 1D); `None` where it is
    /// not representable in `f64`.
    pub fn exact_ising_ln_z(&self) -> Option<f64> {
        *self.exact_ising.get_or_init(|| {
            let l = self.lattice.l();
            let thermo = if self.lattice.dim() == 1 {
                ising1d::chain(l, self.beta)
            } else {
                ising2d::kaufman(l, self.beta)
            };
            thermo.ok().map(|t| t.ln_z)
        })
    }

    /// `ln |cosh x|` elementwise, stable for large `|x|`: `|x| + ln(1 + e^{−2|x|}) − ln 2`.
    fn ln_cosh(x: Tensor<4>) -> Tensor<4> {
        let a = x.abs();
        a.clone() + a.mul_scalar(-2.0).exp().log1p() - std::f32::consts::LN_2
    }
}

impl OnLattice for IsingRelaxed {
    fn space(&self) -> FieldSpace {
        FieldSpace::new(self.lattice, 1)
    }
}

impl IsingRelaxed {
    /// The field flattened per sample and `M⁻¹x`, both `[batch, V]`.
    fn product(&self, x: &Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let [b, _, _, _] = x.dims();
        let flat: Tensor<2> = x.clone().reshape([b, self.lattice.volume()]);
        let mx = flat.clone().matmul(self.minv.clone());
        (flat, mx)
    }

    /// `S = ½ x·M⁻¹x − Σ ln cosh x` from [`IsingRelaxed::product`].
    fn value_from(&self, x: Tensor<4>, flat: Tensor<2>, mx: Tensor<2>) -> Tensor<1> {
        let [b, v] = flat.dims();
        let quad = (mx * flat).sum_dim(1);
        let lc: Tensor<2> = Self::ln_cosh(x).reshape([b, v]);
        (quad.mul_scalar(0.5) - lc.sum_dim(1)).reshape([b])
    }

    /// `∂S/∂x = M⁻¹x − tanh x` from [`IsingRelaxed::product`]'s `M⁻¹x`.
    fn grad_from(x: Tensor<4>, mx: Tensor<2>) -> Tensor<4> {
        let dims = x.dims();
        mx.reshape(dims) - x.tanh()
    }
}

impl Action for IsingRelaxed {
    fn action(&self, x: Tensor<4>) -> Tensor<1> {
        let (flat, mx) = self.product(&x);
        self.value_from(x, flat, mx)
    }

    fn grad(&self, x: Tensor<4>) -> Tensor<4> {
        let (_, mx) = self.product(&x);
        Self::grad_from(x, mx)
    }

    /// One product `M⁻¹x` for both.
    fn action_and_grad(&self, x: Tensor<4>) -> (Tensor<1>, Tensor<4>) {
        let (flat, mx) = self.product(&x);
        let value = self.value_from(x.clone(), flat, mx.clone());
        (value, Self::grad_from(x, mx))
    }

    fn exact_ln_z(&self) -> Option<f64> {
        self.exact_ising_ln_z().map(|z| z - self.ln_z_offset())
    }

    fn describe(&self) -> String {
        format!(
            "relaxed Ising, {}D L={}, beta={}, alpha={}",
            self.lattice.dim(),
            self.lattice.l(),
            self.beta,
            self.alpha
        )
    }

    fn to_device(&self, device: &Device) -> Box<dyn Action> {
        let mut moved = self.clone();
        moved.minv = self.minv.clone().to_device(device);
        Box::new(moved)
    }
}

impl HostAction for IsingRelaxed {
    fn action_host(&self, x: &[f64]) -> f64 {
        let v = self.lattice.volume();
        let mut s = 0.0;
        for i in 0..v {
            let row = &self.minv_host[i * v..(i + 1) * v];
            let mx: f64 = row.iter().zip(x).map(|(m, y)| m * y).sum();
            let a = x[i].abs();
            s += 0.5 * x[i] * mx - (a + (-2.0 * a).exp().ln_1p() - std::f64::consts::LN_2);
        }
        s
    }

    fn grad_host(&self, x: &[f64], grad: &mut [f64]) {
        let v = self.lattice.volume();
        for i in 0..v {
            let row = &self.minv_host[i * v..(i + 1) * v];
            grad[i] = row.iter().zip(x).map(|(m, y)| m * y).sum::<f64>() - x[i].tanh();
        }
    }
}
