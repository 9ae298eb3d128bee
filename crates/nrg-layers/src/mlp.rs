//! Multi-layer perceptrons for block couplings: plain (NeuralRG) and residual (RG-Flow).
//!
//! A [`TwinMlp`] is *two* independent networks of identical shape, the scale net `s(·)` and
//! the shift net `t(·)` of a coupling, evaluated together by batched matrix products (one
//! `[2, N, ·]` product per layer instead of two), which halves the number of operations
//! without changing the function class. With input `u ∈ ℝ^{n_in}`, widths `h₁ … h_k` and
//! ELU activations `φ`:
//!
//! ```text
//! plain:     y = W_{k+1} φ(… φ(W₁ u + b₁) …) + b_{k+1}
//! residual:  h = W₁ u + b₁;  h ← h + W″ φ(W′ φ(h) + b′) + b″  (k − 1 times, width h₁);
//!            y = W_out φ(h) + b_out
//! ```
//!
//! Weights start like PyTorch's `Linear` (uniform in `±1/√fan_in`); the output layer starts
//! at zero (unless asked otherwise) so that a fresh coupling is the identity.
//!
//! Shapes: input `[N, n_in]`, output `[2, N, n_out]` (index 0: `s`, index 1: `t`); or
//! feature-major, `[n_in, N] → [2, n_out, N]` ([`TwinMlp::forward_features`]).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::activation::elu;
use burn::tensor::{Device, Distribution, Tensor};

use crate::kernels::{self, Activation};

/// Configuration of a [`TwinMlp`].
#[derive(Config, Debug)]
pub struct TwinMlpConfig {
    /// Input width.
    pub input: usize,
    /// Output width (per twin).
    pub output: usize,
    /// Hidden widths (all equal for the residual form; its depth is `hidden.len()`).
    pub hidden: Vec<usize>,
    /// Residual blocks (RG-Flow) instead of a plain stack.
    #[config(default = false)]
    pub residual: bool,
    /// Zero-initialise the output layer.
    #[config(default = true)]
    pub zero_init: bool,
}

/// One dense layer of both twins: `W` `[2, in, out]`, `b` `[2, 1, out]`.
#[derive(Module, Debug)]
pub struct TwinLinear {
    weight: Param<Tensor<3>>,
    bias: Param<Tensor<3>>,
}

impl TwinLinear {
    fn new(input: usize, output: usize, zero: bool, device: &Device) -> Self {
        let bound = 1.0 / (input.max(1) as f64).sqrt();
        let dist = Distribution::Uniform(-bound, bound);
        let (weight, bias) = if zero {
            (
                Tensor::zeros([2, input, output], device),
                Tensor::zeros([2, 1, output], device),
            )
        } else {
            (
                Tensor::random([2, input, output], dist, device),
                Tensor::random([2, 1, output], dist, device),
            )
        };
        Self {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
        }
    }

    /// `act(Wᵀ x + b)`, feature-major: `[2, in, N] → [2, out, N]` (an input `[1, in, N]` is
    /// shared by both twins), one fused [`kernels::twin_dense`](crate::kernels::twin_dense).
    fn forward(&self, x: Tensor<3>, act: Activation) -> Tensor<3> {
        kernels::twin_dense(x, self.weight.val(), self.bias.val(), act)
    }
}

/// The scale and shift networks of one coupling.
#[derive(Module, Debug)]
pub struct TwinMlp {
    layers: Vec<TwinLinear>,
    residual: bool,
}

impl TwinMlpConfig {
    /// Builds both networks on `device`.
    pub fn init(&self, device: &Device) -> TwinMlp {
        let mut widths = vec![self.input];
        let mut layers = Vec::new();
        if self.residual {
            let h = self.hidden.first().copied().unwrap_or(self.input);
            layers.push(TwinLinear::new(self.input, h, false, device));
            for _ in 1..self.hidden.len().max(1) {
                layers.push(TwinLinear::new(h, h, false, device));
                layers.push(TwinLinear::new(h, h, false, device));
            }
            widths = vec![h];
        } else {
            widths.extend(&self.hidden);
            for w in widths.windows(2) {
                layers.push(TwinLinear::new(w[0], w[1], false, device));
            }
        }
        let last = widths.last().copied().unwrap_or(self.input);
        layers.push(TwinLinear::new(last, self.output, self.zero_init, device));
        TwinMlp {
            layers,
            residual: self.residual,
        }
    }
}

impl TwinMlp {
    /// For a plain (not residual) MLP with `input` features: its widths `input → … → out`
    /// and its parameters as the flat pieces `[W₀, b₀, W₁, b₁, …]` of the fused kernels'
    /// layout (ELU between the layers, the last linear). `None` for a residual MLP.
    pub(crate) fn flat_parameters(&self, input: usize) -> Option<(Vec<usize>, Vec<Tensor<1>>)> {
        if self.residual {
            return None;
        }
        let mut widths = vec![input];
        let mut flat = Vec::with_capacity(2 * self.layers.len());
        for layer in &self.layers {
            widths.push(layer.weight.dims()[2]);
            flat.push(layer.weight.val().reshape([-1]));
            flat.push(layer.bias.val().reshape([-1]));
        }
        Some((widths, flat))
    }

    /// `[N, in] → [2, N, out]`: [`Self::forward_features`] between two transposes.
    pub fn forward(&self, u: Tensor<2>) -> Tensor<3> {
        self.forward_features(u.transpose()).swap_dims(1, 2)
    }

    /// Feature-major, the batch last (see [`kernels`]): `[in, N] → [2, out, N]`.
    pub fn forward_features(&self, u: Tensor<2>) -> Tensor<3> {
        let [i, n] = u.dims();
        let u = u.reshape([1, i, n]);
        let last = self.layers.len() - 1;
        if self.residual {
            let mut h = self.layers[0].forward(u, Activation::Identity);
            let mut k = 1;
            while k < last {
                let inner = self.layers[k].forward(elu(h.clone(), 1.0), Activation::Elu);
                h = h + self.layers[k + 1].forward(inner, Activation::Identity);
                k += 2;
            }
            return self.layers[last].forward(elu(h, 1.0), Activation::Identity);
        }
        if kernels::fused(&u.device()).is_some()
            && let Some((widths, flat)) = self.flat_parameters(i)
        {
            // The whole plain MLP as one fused operation on its flattened parameters.
            return plain_twin_mlp(u, Tensor::cat(flat, 0), &widths);
        }
        let mut h = u;
        for (k, layer) in self.layers.iter().enumerate() {
            let act = if k == last {
                Activation::Identity
            } else {
                Activation::Elu
            };
            h = layer.forward(h, act);
        }
        h
    }
}

/// A plain twin MLP (ELU between the layers, the last linear) from its flat parameters
/// `params`, laid out as `[W₀ [2, w₀, w₁], b₀ [2, w₁], …]` ([`nrg_kernels::twin_layout`]):
/// feature-major input `[G, w₀, N]` (`G = 1`: shared by both twins) → `[2, w_L, N]`.
/// One fused operation ([`crate::kernels::Fused::twin_mlp`]) where [`kernels::fused`] has
/// it, otherwise [`plain_twin_mlp_layers`].
pub(crate) fn plain_twin_mlp(u: Tensor<3>, params: Tensor<1>, widths: &[usize]) -> Tensor<3> {
    match kernels::fused(&u.device()) {
        Some(fused) => {
            let shape = kernels::MlpShape {
                twins: 2,
                widths: widths.to_vec(),
                hidden: Activation::Elu,
            };
            fused.twin_mlp(u, params, shape)
        }
        None => plain_twin_mlp_layers(u, params, widths),
    }
}

/// [`plain_twin_mlp`] layer by layer: each layer's weight and bias sliced from `params`
/// and applied by [`kernels::twin_dense`].
pub(crate) fn plain_twin_mlp_layers(
    u: Tensor<3>,
    params: Tensor<1>,
    widths: &[usize],
) -> Tensor<3> {
    let last = widths.len().saturating_sub(2);
    let (offsets, _) = nrg_kernels::twin_layout(2, widths);
    let mut h = u;
    for (k, (w, (at_w, at_b))) in widths.windows(2).zip(offsets).enumerate() {
        let (i, o) = (w[0], w[1]);
        let weight = params
            .clone()
            .slice(at_w..at_w + 2 * i * o)
            .reshape([2, i, o]);
        let bias = params.clone().slice(at_b..at_b + 2 * o).reshape([2, 1, o]);
        let act = if k == last {
            Activation::Identity
        } else {
            Activation::Elu
        };
        h = kernels::twin_dense(h, weight, bias, act);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The twins are two independent networks: a plain MLP evaluated by hand from the
    /// weights equals the batched evaluation (to f32 rounding, 1e-5).
    #[test]
    fn twin_mlp_matches_two_separate_networks() {
        let _rng = crate::test_util::rng_lock();
        let dev = Device::flex();
        dev.seed(1);
        let net = TwinMlpConfig::new(3, 2, vec![5])
            .with_zero_init(false)
            .init(&dev);
        let u = Tensor::<2>::random([4, 3], Distribution::Normal(0.0, 1.0), &dev);
        let out = net.forward(u.clone());
        for twin in 0..2 {
            let w1 = net.layers[0]
                .weight
                .val()
                .slice_dim(0, twin..twin + 1)
                .reshape([3, 5]);
            let b1 = net.layers[0]
                .bias
                .val()
                .slice_dim(0, twin..twin + 1)
                .reshape([1, 5]);
            let w2 = net.layers[1]
                .weight
                .val()
                .slice_dim(0, twin..twin + 1)
                .reshape([5, 2]);
            let b2 = net.layers[1]
                .bias
                .val()
                .slice_dim(0, twin..twin + 1)
                .reshape([1, 2]);
            let h = elu(u.clone().matmul(w1) + b1, 1.0);
            let y = h.matmul(w2) + b2;
            let got = out.clone().slice_dim(0, twin..twin + 1).reshape([4, 2]);
            let diff: f32 = (y - got).abs().max().into_scalar();
            assert!(diff < 1e-5, "twin {twin}: {diff}");
        }
    }

    /// A plain MLP evaluated from its flat parameters, fused and layer by layer, equals the
    /// module it was flattened from (f32 rounding of sums over 6 terms: 1e-5), and the
    /// parameter count is the flat vector's length.
    #[test]
    fn flat_parameters_evaluate_to_the_same_mlp() {
        let _rng = crate::test_util::rng_lock();
        let dev = Device::flex();
        dev.seed(3);
        let net = TwinMlpConfig::new(4, 4, vec![6, 5])
            .with_zero_init(false)
            .init(&dev);
        let (widths, flat) = net.flat_parameters(4).unwrap();
        assert_eq!(widths, vec![4, 6, 5, 4]);
        let flat = Tensor::cat(flat, 0);
        assert_eq!(flat.dims()[0], nrg_kernels::twin_layout(2, &widths).1);
        let u = Tensor::<2>::random([4, 9], Distribution::Normal(0.0, 1.0), &dev);
        let want =
            net.layers
                .iter()
                .enumerate()
                .fold(u.clone().reshape([1, 4, 9]), |h, (k, layer)| {
                    let act = if k == 2 {
                        Activation::Identity
                    } else {
                        Activation::Elu
                    };
                    kernels::twin_dense_reference(h, layer.weight.val(), layer.bias.val(), act)
                });
        let u = u.reshape([1, 4, 9]);
        for got in [
            plain_twin_mlp(u.clone(), flat.clone(), &widths),
            plain_twin_mlp_layers(u.clone(), flat.clone(), &widths),
        ] {
            let diff: f32 = (got - want.clone()).abs().max().into_scalar();
            assert!(diff < 1e-5, "{diff}");
        }
    }

    #[test]
    fn residual_mlp_has_the_right_shape_and_starts_at_zero() {
        let _rng = crate::test_util::rng_lock();
        let dev = Device::flex();
        let net = TwinMlpConfig::new(4, 4, vec![8, 8, 8])
            .with_residual(true)
            .init(&dev);
        assert_eq!(net.layers.len(), 6); // in, 2 × (2 inner), out
        let u = Tensor::<2>::random([7, 4], Distribution::Normal(0.0, 1.0), &dev);
        let y = net.forward(u);
        assert_eq!(y.dims(), [2, 7, 4]);
        let m: f32 = y.abs().max().into_scalar();
        assert_eq!(m, 0.0);
    }
}
