//! Checks of a bijector against brute force: the log-determinant it reports against
//! `ln|det J|` of its full Jacobian, computed by reverse-mode autodiff and an LU
//! factorisation in `f64`.
//!
//! The Jacobian `J[a, b] = ∂x_a/∂z_b` of one configuration with `D` variables is obtained in a
//! single backward pass: `D` copies of `z` form a batch, and the sum over copies `a` of
//! output component `a` has gradient `J[a, :]` in copy `a`. Use it on small lattices
//! (`D ≲ 100`) with an autodiff device.

use burn::tensor::{Tensor, TensorData};
use nrg_core::Bijector;

/// `ln|det A|` of a dense row-major `n × n` matrix by LU with partial pivoting.
pub fn ln_abs_det(mut a: Vec<f64>, n: usize) -> f64 {
    assert_eq!(a.len(), n * n, "matrix is not n × n");
    let mut ln = 0.0;
    for k in 0..n {
        let p = (k..n)
            .max_by(|&i, &j| a[i * n + k].abs().total_cmp(&a[j * n + k].abs()))
            .unwrap_or(k);
        if p != k {
            for j in 0..n {
                a.swap(k * n + j, p * n + j);
            }
        }
        let pivot = a[k * n + k];
        ln += pivot.abs().ln();
        if pivot == 0.0 {
            return f64::NEG_INFINITY;
        }
        for i in k + 1..n {
            let f = a[i * n + k] / pivot;
            for j in k..n {
                a[i * n + j] -= f * a[k * n + j];
            }
        }
    }
    ln
}

/// The full Jacobian `∂x/∂z` of `f` at `z0` (`[1, C, R, W]`, on an autodiff device),
/// row-major `D × D` in `f64`.
pub fn jacobian(f: impl Fn(Tensor<4>) -> Tensor<4>, z0: Tensor<4>) -> Vec<f64> {
    let [one, c, r, w] = z0.dims();
    assert_eq!(one, 1, "one configuration at a time");
    let d = c * r * w;
    let device = z0.device();
    let z = z0.detach().repeat_dim(0, d).require_grad();
    let x = f(z.clone());
    let eye: Vec<f32> = (0..d * d)
        .map(|i| if i / d == i % d { 1.0 } else { 0.0 })
        .collect();
    let eye = Tensor::<2>::from_data(TensorData::new(eye, [d, d]), &device);
    let picked = (x.reshape([d, d]) * eye).sum();
    let grads = picked.backward();
    z.grad(&grads)
        .expect("the map does not depend on its input")
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .expect("f64 data")
}

/// `(reported ln|det ∂x/∂z|, ln|det J| from autodiff)` of `b.forward` at `z0`.
pub fn forward_log_det_vs_autodiff(b: &dyn Bijector, z0: Tensor<4>) -> (f64, f64) {
    let [_, c, r, w] = z0.dims();
    let (_, ld) = b.forward(z0.clone());
    let reported = ld
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .expect("f64")[0];
    let jac = jacobian(|z| b.forward(z).0, z0);
    (reported, ln_abs_det(jac, c * r * w))
}
