//! Affine (RealNVP) and additive (NICE) coupling layers.
//!
//! With a mask `m` (1 = conditioning), `a = m ⊙ z` and `(ŝ, t) = net(a)`:
//!
//! ```text
//! s = (1 − m) ⊙ σ ⊙ tanh ŝ                     (bounded log-scale, σ learnable per channel)
//! x = m ⊙ z + (1 − m) ⊙ (z ⊙ e^{s} + t)        forward,  ln|det ∂x/∂z| = Σ s
//! z = m ⊙ x + (1 − m) ⊙ (x − t) ⊙ e^{−s}       inverse,  ln|det ∂z/∂x| = −Σ s
//! ```
//!
//! Additive coupling (NICE) fixes `s = 0`. The inverse recomputes `net(m ⊙ x)`, which equals
//! `net(m ⊙ z)` because the conditioning part passes unchanged. [`CouplingStack`] composes
//! couplings with alternating masks (the flat flow of the φ⁴ tutorial).
//!
//! Shapes: `[batch, C, rows, cols]`; log-dets `[batch]`.

use crate::mask::MaskKind;
use crate::subnet::{PeriodicCnn, PeriodicCnnConfig};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use nrg_core::Bijector;

/// Configuration of an [`AffineCoupling`].
#[derive(Config, Debug)]
pub struct AffineCouplingConfig {
    /// Field channels `C`.
    pub channels: usize,
    /// Lattice rows.
    pub rows: usize,
    /// Lattice columns.
    pub cols: usize,
    /// Hidden widths of the subnet.
    pub hidden: Vec<usize>,
    /// Kernel size of the subnet.
    #[config(default = 3)]
    pub kernel: usize,
    /// Additive (NICE) instead of affine coupling.
    #[config(default = false)]
    pub additive: bool,
    /// Zero-initialise the subnet's last layer (identity at initialisation).
    #[config(default = true)]
    pub zero_init: bool,
}

/// An affine or additive coupling layer.
#[derive(Module, Debug)]
pub struct AffineCoupling {
    net: PeriodicCnn,
    /// `m`, `[1, C, rows, cols]` (constant).
    mask: Tensor<4>,
    /// `σ`, `[1, C, 1, 1]`, initialised to 1.
    scale: Param<Tensor<4>>,
    additive: bool,
}

impl AffineCouplingConfig {
    /// Builds the layer with mask `mask` on `device`.
    pub fn init(&self, mask: MaskKind, device: &Device) -> AffineCoupling {
        let net = PeriodicCnnConfig::new(self.channels, self.hidden.clone())
            .with_kernel(self.kernel)
            .with_zero_init(self.zero_init)
            .init(device);
        AffineCoupling {
            net,
            mask: mask.tensor(self.channels, self.rows, self.cols, device),
            scale: Param::from_tensor(Tensor::ones([1, self.channels, 1, 1], device)),
            additive: self.additive,
        }
    }
}

impl AffineCoupling {
    /// `(s, t)` on the updated variables, from the conditioning variables `m ⊙ y`.
    fn scale_shift(&self, conditioning: Tensor<4>) -> (Option<Tensor<4>>, Tensor<4>) {
        let c = self.mask.dims()[1];
        let out = self.net.forward(conditioning);
        let free = self.mask.clone().neg().add_scalar(1.0);
        let t = out.clone().slice_dim(1, c..2 * c) * free.clone();
        if self.additive {
            return (None, t);
        }
        let s = crate::activation::tanh(out.slice_dim(1, 0..c)) * self.scale.val() * free;
        (Some(s), t)
    }

    fn sum_per_sample(s: Tensor<4>) -> Tensor<1> {
        let b = s.dims()[0];
        s.sum_dims(&[1, 2, 3]).reshape([b])
    }
}

impl Bijector for AffineCoupling {
    fn forward(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let b = z.dims()[0];
        let (s, t) = self.scale_shift(z.clone() * self.mask.clone());
        match s {
            Some(s) => {
                let x = z * s.clone().exp() + t;
                (x, Self::sum_per_sample(s))
            }
            None => {
                let device = z.device();
                (z + t, Tensor::zeros([b], &device))
            }
        }
    }

    fn inverse(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let b = x.dims()[0];
        let (s, t) = self.scale_shift(x.clone() * self.mask.clone());
        match s {
            Some(s) => {
                let z = (x - t) * s.clone().neg().exp();
                (z, Self::sum_per_sample(s).neg())
            }
            None => {
                let device = x.device();
                (x - t, Tensor::zeros([b], &device))
            }
        }
    }
}

/// A flat stack of couplings, applied in order for `forward` and reversed for `inverse`.
#[derive(Module, Debug)]
pub struct CouplingStack {
    layers: Vec<AffineCoupling>,
}

impl CouplingStack {
    /// `n` couplings with alternating checkerboard masks (the φ⁴ tutorial's flow).
    pub fn checkerboard(config: &AffineCouplingConfig, n: usize, device: &Device) -> Self {
        let layers = (0..n)
            .map(|k| config.init(MaskKind::Checkerboard { parity: k % 2 }, device))
            .collect();
        Self { layers }
    }

    /// Number of couplings.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the stack is empty (the identity).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Bijector for CouplingStack {
    fn forward(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let b = z.dims()[0];
        let mut logdet = Tensor::zeros([b], &z.device());
        let mut x = z;
        for layer in &self.layers {
            let (y, ld) = layer.forward(x);
            x = y;
            logdet = logdet + ld;
        }
        (x, logdet)
    }

    fn inverse(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let b = x.dims()[0];
        let mut logdet = Tensor::zeros([b], &x.device());
        let mut z = x;
        for layer in self.layers.iter().rev() {
            let (y, ld) = layer.inverse(z);
            z = y;
            logdet = logdet + ld;
        }
        (z, logdet)
    }
}
