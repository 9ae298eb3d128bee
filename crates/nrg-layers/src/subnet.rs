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
use burn::tensor::activation::leaky_relu;
use burn::tensor::{Device, Tensor};

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
    pad: usize,
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
        PeriodicCnn {
            convs,
            pad: self.kernel / 2,
        }
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
    /// `[batch, C, rows, cols] → [batch, 2C, rows, cols]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let last = self.convs.len() - 1;
        let mut h = x;
        for (i, conv) in self.convs.iter().enumerate() {
            h = conv.forward(periodic_pad(h, self.pad));
            if i != last {
                h = leaky_relu(h, 0.01);
            }
        }
        h
    }
}
