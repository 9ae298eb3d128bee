//! Priors.
//!
//! - [`GaussianPrior`]: `ln p(z) = −½ Σ z² − (D/2) ln 2π`;
//! - [`LaplacePrior`] (RG-Flow): `ln p(z) = −Σ |z| − D ln 2`, sampled as `z = −sign(u) ln(1 − 2|u|)`,
//!   `u ~ U(−½, ½)`.
//!
//! `D = channels·rows·cols`; log-probabilities are `[batch]`.

use burn::tensor::{Device, Distribution, Tensor};
use nrg_core::Prior;

/// Independent standard normal latents.
#[derive(Clone, Copy, Debug, Default)]
pub struct GaussianPrior;

/// Independent standard Laplace latents.
#[derive(Clone, Copy, Debug, Default)]
pub struct LaplacePrior;

fn per_sample(t: Tensor<4>) -> Tensor<1> {
    let b = t.dims()[0];
    t.sum_dims(&[1, 2, 3]).reshape([b])
}

fn dof(z: &Tensor<4>) -> f64 {
    let [_, c, r, w] = z.dims();
    (c * r * w) as f64
}

impl Prior for GaussianPrior {
    fn sample(&self, shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    fn log_prob(&self, z: Tensor<4>) -> Tensor<1> {
        let c = -0.5 * dof(&z) * std::f64::consts::TAU.ln();
        per_sample(z.clone() * z).mul_scalar(-0.5).add_scalar(c)
    }
}

impl Prior for LaplacePrior {
    fn sample(&self, shape: [usize; 4], device: &Device) -> Tensor<4> {
        let u = Tensor::<4>::random(shape, Distribution::Uniform(-0.5, 0.5), device);
        let mag = u.clone().abs().mul_scalar(-2.0).add_scalar(1.0).log().neg();
        u.sign() * mag
    }

    fn log_prob(&self, z: Tensor<4>) -> Tensor<1> {
        let c = -dof(&z) * std::f64::consts::LN_2;
        per_sample(z.abs()).neg().add_scalar(c)
    }
}
