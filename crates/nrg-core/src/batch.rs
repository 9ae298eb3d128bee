//! Per-sample reductions of batched tensors.
//!
//! `[batch, …] → [batch]`: the sum over every axis but the first. burn's
//! `sum_dims(&[1, 2, 3])` on an autodiff device reduces one axis at a time (three reduction
//! kernels forward and, in the backward pass, three of autodiff's sum adjoints, each a fill
//! of ones, a reduction and a product); a tensor reshaped to `[batch, n]` is summed in one
//! reduction, with one such adjoint.
//! On a GPU each of those is a kernel launch, and a training step sums per sample a
//! handful of times (the prior's `ln p(z)`, the action, the log-determinants).

use burn::tensor::Tensor;

/// `Σ` over channels, rows and columns of each configuration: `[batch, c, rows, cols] →
/// [batch]`, as one reduction.
pub fn sum_per_sample(t: Tensor<4>) -> Tensor<1> {
    let [b, c, rows, cols] = t.dims();
    t.reshape([b, c * rows * cols]).sum_dim(1).reshape([b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// Against the sums written out, on a tensor with distinct entries.
    #[test]
    fn sums_each_sample_over_every_other_axis() {
        let dev = Device::flex();
        let (b, c, r, w) = (3, 2, 2, 3);
        let values: Vec<f32> = (0..b * c * r * w).map(|i| (i as f32).sqrt()).collect();
        let t = Tensor::<4>::from_data(TensorData::new(values.clone(), [b, c, r, w]), &dev);
        let got: Vec<f32> = sum_per_sample(t).into_data().try_to_vec::<f32>().unwrap();
        let n = c * r * w;
        for k in 0..b {
            let want: f32 = values[k * n..(k + 1) * n].iter().sum();
            // f32 sums of 12 terms below 6 in different orders: a few ulps of sums up to ~65.
            assert!((got[k] - want).abs() < 1e-4, "{k}: {} vs {want}", got[k]);
        }
    }
}
