//! Coupling subnets.
//!
//! [`PeriodicCnn`]: `C → h₁ → … → 2C` channels of `k × k` convolutions on the torus
//! (periodic padding by `⌊k/2⌋` wrapped rows and columns, then a valid convolution),
//! LeakyReLU (slope 0.01) between layers. The output's first `C` channels are the raw log
//! scale, the last `C` the shift. The last layer is zero-initialised (unless asked
//! otherwise), so a fresh coupling is the identity map.
//!
//! Shapes: input `[batch, C, rows, cols]`, output `[batch, 2C, rows, cols]`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};

use crate::kernels::{self, Activation, HotPaths};

/// Negative-side slope of the LeakyReLU between layers.
pub(crate) const LEAKY_SLOPE: f32 = 0.01;

/// Configuration of a [`PeriodicCnn`].
#[derive(Config, Debug)]
pub struct PeriodicCnnConfig {
    /// Field channels `C`.
    pub channels: usize,
    /// Hidden channel widths.
    pub hidden: Vec<usize>,
    /// Odd kernel size.
    #[config(default = 3)]
    pub kernel: usize,
    /// Zero-initialise the last layer (a fresh coupling is the identity).
    #[config(default = true)]
    pub zero_init: bool,
}

/// A CNN with periodic padding.
#[derive(Module, Debug)]
pub struct PeriodicCnn {
    convs: Vec<Conv2d>,
}

impl PeriodicCnnConfig {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> PeriodicCnn {
        let mut widths = vec![self.channels];
        widths.extend(&self.hidden);
        widths.push(2 * self.channels);
        let layers = widths.len() - 1;
        let convs = (0..layers)
            .map(|i| {
                let mut cfg = Conv2dConfig::new([widths[i], widths[i + 1]], [self.kernel; 2]);
                if i + 1 == layers && self.zero_init {
                    cfg = cfg.with_initializer(Initializer::Zeros);
                }
                cfg.init(device)
            })
            .collect();
        PeriodicCnn { convs }
    }
}

/// Wraps `p` rows and columns around a `[batch, C, rows, cols]` field.
pub fn periodic_pad(x: Tensor<4>, p: usize) -> Tensor<4> {
    if p == 0 {
        return x;
    }
    let [_, _, rows, cols] = x.dims();
    let x = Tensor::cat(
        vec![
            x.clone().slice_dim(2, rows - p..rows),
            x.clone(),
            x.slice_dim(2, 0..p),
        ],
        2,
    );
    Tensor::cat(
        vec![
            x.clone().slice_dim(3, cols - p..cols),
            x.clone(),
            x.slice_dim(3, 0..p),
        ],
        3,
    )
}

impl PeriodicCnn {
    /// `[batch, C, rows, cols] → [batch, 2C, rows, cols]`, each layer one fused
    /// [`kernels::periodic_conv2d`].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.layers(x, kernels::periodic_conv2d)
    }

    /// [`PeriodicCnn::forward`] from burn's primitives
    /// ([`kernels::periodic_conv2d_reference`]): the reference the fused path is tested against.
    pub fn forward_reference(&self, x: Tensor<4>) -> Tensor<4> {
        self.layers(x, kernels::periodic_conv2d_reference)
    }

    /// The network on the conditioning variables `m ⊙ z` of a coupling stack's state
    /// `[batch, C·rows·cols + 1]` (each sample's field `z` flattened, then its ln|det| so
    /// far) with the mask `m` `[1, C, rows, cols]`: the first layer one
    /// [`HotPaths::conditioning_conv2d`], the others [`HotPaths::periodic_conv2d`] →
    /// `[batch, 2C, rows, cols]`, equal to [`PeriodicCnn::forward`] of `m ⊙ z`.
    pub fn forward_state(&self, hot: HotPaths, state: Tensor<2>, mask: Tensor<4>) -> Tensor<4> {
        let (w, b, act) = self.layer(0);
        let mut h = hot.conditioning_conv2d(state, mask, w, b, act);
        for i in 1..self.convs.len() {
            let (w, b, act) = self.layer(i);
            h = hot.periodic_conv2d(h, w, b, act);
        }
        h
    }

    /// The number of convolutions.
    pub(crate) fn depth(&self) -> usize {
        self.convs.len()
    }

    /// Layer `i`'s weight, bias (zeros where it has none) and activation: LeakyReLU between
    /// layers, none after the last.
    pub(crate) fn layer(&self, i: usize) -> (Tensor<4>, Tensor<1>, Activation) {
        let conv = &self.convs[i];
        let act = if i + 1 == self.convs.len() {
            Activation::Identity
        } else {
            Activation::LeakyRelu(LEAKY_SLOPE)
        };
        let weight = conv.weight.val();
        let bias = match &conv.bias {
            Some(b) => b.val(),
            None => Tensor::zeros([weight.dims()[0]], &weight.device()),
        };
        (weight, bias, act)
    }

    /// The layers in order, each by `layer(h, weight, bias, act)`.
    fn layers(
        &self,
        x: Tensor<4>,
        layer: fn(Tensor<4>, Tensor<4>, Tensor<1>, Activation) -> Tensor<4>,
    ) -> Tensor<4> {
        let mut h = x;
        for i in 0..self.convs.len() {
            let (w, b, act) = self.layer(i);
            h = layer(h, w, b, act);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// The fused network equals its composite reference, values and weight gradients
    /// (1e-4: f32 sums over the batch of 7 samples and 3 layers).
    #[test]
    fn fused_forward_equals_reference() {
        let _rng = crate::test_util::rng_lock();
        let dev = Device::flex().autodiff();
        dev.seed(4);
        let net = PeriodicCnnConfig::new(1, vec![8, 8])
            .with_zero_init(false)
            .init(&dev);
        let x = Tensor::<4>::random([7, 1, 8, 8], Distribution::Normal(0.0, 1.0), &dev);
        let a = net.forward(x.clone());
        let b = net.forward_reference(x);
        let d: f32 = (a.clone() - b.clone()).abs().max().into_scalar();
        assert!(d < 1e-5, "values {d}");
        let ga = a.powi_scalar(2).sum().backward();
        let gb = b.powi_scalar(2).sum().backward();
        for conv in &net.convs {
            let (wa, wb) = (
                conv.weight.grad(&ga).unwrap(),
                conv.weight.grad(&gb).unwrap(),
            );
            let scale: f32 = wb.clone().abs().max().into_scalar();
            let d: f32 = (wa - wb).abs().max().into_scalar();
            assert!(d < 1e-4 * (1.0 + scale), "weight grad {d} (scale {scale})");
        }
    }
}
