//! A learnable translation-invariant linear bijector (a circulant convolution on the torus).
//!
//! Each channel `c` is convolved with its own periodic kernel `K_c` of the lattice's size:
//!
//! ```text
//! x_c(r) = Σ_{r′} K_c(r − r′) z_c(r′),   x̂_c(k) = K̂_c(k) ẑ_c(k),   K̂_c(k) = Σ_r K_c(r) e^{−ik·r}
//! ln|det ∂x/∂z| = Σ_{c,k} ½ ln|K̂_c(k)|²
//! ```
//!
//! The inverse convolves with the kernel whose transform is `1/K̂_c`. This layer represents
//! every translation-invariant Gaussian exactly (its covariance is `|K̂(k)|²` in momentum
//! space), which the checkerboard couplings cannot — their Jacobian determinant does not
//! depend on momentum — so a flow that ends with it can learn a free field to the last digit
//! and needs its couplings only for the interactions. Dense `[V, V]` matrices are built from
//! the kernel each call (`V = rows·cols`; cost `O(V²)` per configuration). Starts at the
//! identity (`K = δ`).
//!
//! Shapes: `[batch, C, rows, cols]` in and out; log-dets `[batch]`.

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};
use nrg_core::Bijector;

/// A circulant convolution per channel.
#[derive(Module, Debug)]
pub struct CirculantLinear {
    /// `K`, `[C, V]`.
    kernel: Param<Tensor<2>>,
    /// `(x − y) mod L` as a kernel index, `[V·V]`.
    difference: Tensor<1, Int>,
    /// `cos(k·r)`, `[V, V]` (symmetric).
    cos: Tensor<2>,
    /// `sin(k·r)`, `[V, V]` (symmetric).
    sin: Tensor<2>,
    rows: usize,
    cols: usize,
}

impl CirculantLinear {
    /// The identity on `[C, rows, cols]` fields.
    pub fn new(channels: usize, rows: usize, cols: usize, device: &Device) -> Self {
        let v = rows * cols;
        let mut delta = vec![0.0f32; channels * v];
        for c in 0..channels {
            delta[c * v] = 1.0;
        }
        let mut difference = Vec::with_capacity(v * v);
        let (mut cos, mut sin) = (Vec::with_capacity(v * v), Vec::with_capacity(v * v));
        for x in 0..v {
            let (xi, xj) = (x / cols, x % cols);
            for y in 0..v {
                let (yi, yj) = (y / cols, y % cols);
                let di = (xi + rows - yi) % rows;
                let dj = (xj + cols - yj) % cols;
                difference.push((di * cols + dj) as i64);
                let phase = std::f64::consts::TAU
                    * ((xi * yi) as f64 / rows as f64 + (xj * yj) as f64 / cols as f64);
                cos.push(phase.cos() as f32);
                sin.push(phase.sin() as f32);
            }
        }
        Self {
            kernel: Param::from_tensor(Tensor::from_data(
                TensorData::new(delta, [channels, v]),
                device,
            )),
            difference: Tensor::from_data(TensorData::new(difference, [v * v]), device),
            cos: Tensor::from_data(TensorData::new(cos, [v, v]), device),
            sin: Tensor::from_data(TensorData::new(sin, [v, v]), device),
            rows,
            cols,
        }
    }

    /// The same layer with kernel `K` (`[C, V]`).
    pub fn with_kernel(mut self, kernel: Tensor<2>) -> Self {
        self.kernel = Param::from_tensor(kernel);
        self
    }

    /// The dense matrices `W_c[x, y] = K_c(x − y)`, `[C, V, V]`.
    fn matrix(&self, kernel: Tensor<2>) -> Tensor<3> {
        let [c, v] = kernel.dims();
        kernel.select(1, self.difference.clone()).reshape([c, v, v])
    }

    /// `(Re K̂, Im K̂)`, each `[C, V]`.
    fn spectrum(&self) -> (Tensor<2>, Tensor<2>) {
        let k = self.kernel.val();
        (
            k.clone().matmul(self.cos.clone()),
            k.matmul(self.sin.clone()).neg(),
        )
    }

    /// `Σ_{c,k} ½ ln|K̂|²`.
    fn log_det(&self) -> Tensor<1> {
        let (re, im) = self.spectrum();
        (re.powi_scalar(2) + im.powi_scalar(2))
            .log()
            .sum()
            .mul_scalar(0.5)
    }

    fn apply(&self, field: Tensor<4>, w: Tensor<3>) -> Tensor<4> {
        let [b, c, r, l] = field.dims();
        let v = r * l;
        // [C, B, V] · W_cᵀ
        let flat = field.reshape([b, c, v]).swap_dims(0, 1);
        flat.matmul(w.swap_dims(1, 2))
            .swap_dims(0, 1)
            .reshape([b, c, r, l])
    }
}

impl Bijector for CirculantLinear {
    fn forward(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let b = z.dims()[0];
        debug_assert_eq!([z.dims()[2], z.dims()[3]], [self.rows, self.cols]);
        let w = self.matrix(self.kernel.val());
        let ld = self.log_det().expand([b]);
        (self.apply(z, w), ld)
    }

    fn inverse(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let b = x.dims()[0];
        let (re, im) = self.spectrum();
        let norm = re.clone().powi_scalar(2) + im.clone().powi_scalar(2);
        let a = re / norm.clone();
        let bb = im.neg() / norm.clone();
        let v = (self.rows * self.cols) as f64;
        let inv_kernel = (a.matmul(self.cos.clone()) - bb.matmul(self.sin.clone())).div_scalar(v);
        let w = self.matrix(inv_kernel);
        let ld = norm.log().sum().mul_scalar(-0.5).expand([b]);
        (self.apply(x, w), ld)
    }
}
