//! Priors.
//!
//! - [`GaussianPrior`]: `ln p(z) = −½ Σ z² − (D/2) ln 2π`;
//! - [`LaplacePrior`] (RG-Flow): `ln p(z) = −Σ |z| − D ln 2`, sampled as `z = −sign(u) ln(1 − 2|u|)`,
//!   `u ~ U(−½, ½)`.
//!
//! - [`LatentPrior`]: either of the two with a scale per bulk level, `σ_ℓ = e^{a_ℓ}`,
//!   learnable or fixed (`a = 0` is the standard prior):
//!   Gaussian `ln p = Σ_i [−z_i²/(2σ²_{ℓ(i)}) − ln σ_{ℓ(i)} − ½ ln 2π]`,
//!   Laplace `ln p = Σ_i [−|z_i|/σ_{ℓ(i)} − ln σ_{ℓ(i)} − ln 2]`, `ℓ(i)` the latent's level.
//!
//! `D = channels·rows·cols`; log-probabilities are `[batch]`.

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
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

/// A Gaussian or Laplace prior with one scale per bulk level (learnable or not).
#[derive(Module, Debug)]
pub struct LatentPrior {
    /// `a_ℓ = ln σ_ℓ`, `[levels]`.
    log_scale: Param<Tensor<1>>,
    /// One-hot `[levels, rows·cols]`: which level each site's latent belongs to.
    level_of_site: Tensor<2>,
    laplace: bool,
    learnable: bool,
}

impl LatentPrior {
    /// A prior over `[C, rows, cols]` latents whose sites sit at `site_levels` (row-major,
    /// values `0..levels`); `laplace` picks the Laplace shape, `learnable` lets training move
    /// the per-level scales (otherwise they stay at 1).
    pub fn new(site_levels: &[usize], laplace: bool, learnable: bool, device: &Device) -> Self {
        let levels = site_levels.iter().max().map_or(1, |m| m + 1);
        let sites = site_levels.len();
        let mut onehot = vec![0.0f32; levels * sites];
        for (s, &l) in site_levels.iter().enumerate() {
            onehot[l * sites + s] = 1.0;
        }
        Self {
            log_scale: Param::from_tensor(Tensor::zeros([levels], device)),
            level_of_site: Tensor::from_data(TensorData::new(onehot, [levels, sites]), device),
            laplace,
            learnable,
        }
    }

    /// A prior with one level for all sites (a flat flow).
    pub fn uniform(sites: usize, laplace: bool, learnable: bool, device: &Device) -> Self {
        Self::new(&vec![0; sites], laplace, learnable, device)
    }

    /// `σ_ℓ` per level, on the host.
    pub fn scales(&self) -> Vec<f64> {
        self.log_scale
            .val()
            .exp()
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .unwrap_or_default()
    }

    /// `ln σ` per site, `[1, 1, rows, cols]` → broadcast over batch and channels.
    fn log_scale_per_site(&self, rows: usize, cols: usize) -> Tensor<4> {
        let a = self.log_scale.val();
        let a = if self.learnable { a } else { a.detach() };
        let levels = a.dims()[0];
        a.reshape([1, levels])
            .matmul(self.level_of_site.clone())
            .reshape([1, 1, rows, cols])
    }
}

impl Prior for LatentPrior {
    fn sample(&self, shape: [usize; 4], device: &Device) -> Tensor<4> {
        let base = if self.laplace {
            LaplacePrior.sample(shape, device)
        } else {
            GaussianPrior.sample(shape, device)
        };
        base * self.log_scale_per_site(shape[2], shape[3]).exp()
    }

    fn log_prob(&self, z: Tensor<4>) -> Tensor<1> {
        let [_, c, rows, cols] = z.dims();
        let a = self.log_scale_per_site(rows, cols);
        let u = z * a.clone().neg().exp();
        let base = if self.laplace {
            LaplacePrior.log_prob(u)
        } else {
            GaussianPrior.log_prob(u)
        };
        // − Σ_i ln σ_{ℓ(i)} over channels and sites.
        base - a.sum().mul_scalar(c as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(t: Tensor<1>) -> Vec<f64> {
        t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
    }

    /// Normalisation at the origin and the first moments of the samples: Gaussian
    /// `E z² = 1`, Laplace `E|z| = 1`, `E z² = 2` (N = 2·10⁵ draws; 5σ tolerances).
    #[test]
    fn priors_are_normalised_and_sample_their_density() {
        let dev = Device::flex();
        dev.seed(3);
        let zero = Tensor::<4>::zeros([1, 2, 2, 2], &dev);
        let g0 = host(GaussianPrior.log_prob(zero.clone()))[0];
        assert!((g0 + 4.0 * std::f64::consts::TAU.ln()).abs() < 1e-5);
        let l0 = host(LaplacePrior.log_prob(zero))[0];
        assert!((l0 + 8.0 * std::f64::consts::LN_2).abs() < 1e-5);

        let n = 200_000.0;
        let moments = |z: Tensor<4>| {
            let v: Vec<f64> = z.into_data().convert::<f64>().try_to_vec::<f64>().unwrap();
            let abs = v.iter().map(|x| x.abs()).sum::<f64>() / n;
            let sq = v.iter().map(|x| x * x).sum::<f64>() / n;
            (abs, sq)
        };
        let (_, g2) = moments(GaussianPrior.sample([200_000, 1, 1, 1], &dev));
        assert!((g2 - 1.0).abs() < 5.0 * (2.0 / n).sqrt(), "{g2}");
        let (l1, l2) = moments(LaplacePrior.sample([200_000, 1, 1, 1], &dev));
        assert!((l1 - 1.0).abs() < 5.0 * (1.0 / n).sqrt(), "{l1}");
        assert!((l2 - 2.0).abs() < 5.0 * (20.0 / n).sqrt(), "{l2}");
    }
}
