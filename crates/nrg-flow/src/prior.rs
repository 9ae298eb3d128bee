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
//! - optionally *bimodal* (Gaussian shape only): each standardised latent `u = z/σ_ℓ` is drawn
//!   from the symmetric mixture `½N(μ_ℓ, 1) + ½N(−μ_ℓ, 1)` with a learnable location per
//!   level, `ln p(u) = −½(u² + μ²) + ln cosh(μu) − ½ ln 2π` (`μ = 0` is the standard normal).
//!   Sampled as `u = ±μ + ξ` with a fair random sign, so `∂u/∂μ = ±1` is a reparametrised
//!   gradient. Meant for the relaxed Ising model, whose field is a sum of a spin-like `±`
//!   part and Gaussian noise at every scale: the flow no longer has to make each latent
//!   bimodal out of affine couplings.
//!
//! `D = channels·rows·cols`; log-probabilities are `[batch]`.

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use nrg_core::Prior;
use nrg_core::batch::sum_per_sample as per_sample;

/// Independent standard normal latents.
#[derive(Clone, Copy, Debug, Default)]
pub struct GaussianPrior;

/// Independent standard Laplace latents.
#[derive(Clone, Copy, Debug, Default)]
pub struct LaplacePrior;

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

/// The shape of each standardised latent's distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatentShape {
    /// `N(0, 1)`.
    Gaussian,
    /// Laplace, `½e^{−|z|}`.
    Laplace,
}

/// Whether training moves the per-level scales `σ_ℓ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LevelScales {
    /// `σ_ℓ = 1`, the standard prior (the stored `a_ℓ` is not read).
    Fixed,
    /// `σ_ℓ` are parameters.
    Learnable,
}

/// A Gaussian or Laplace prior with one scale per bulk level (learnable or not).
#[derive(Module, Debug)]
pub struct LatentPrior {
    /// `a_ℓ = ln σ_ℓ`, `[levels]`.
    log_scale: Param<Tensor<1>>,
    /// `μ_ℓ` of the bimodal shape, `[levels]` (`None`: unimodal).
    location: Option<Param<Tensor<1>>>,
    /// One-hot `[levels, rows·cols]`: which level each site's latent belongs to.
    level_of_site: Tensor<2>,
    laplace: bool,
    learnable: bool,
}

impl LatentPrior {
    /// A prior over `[C, rows, cols]` latents whose sites sit at `site_levels` (row-major,
    /// values `0..levels`), of the given shape, with fixed or learnable per-level scales.
    pub fn new(
        site_levels: &[usize],
        shape: LatentShape,
        scales: LevelScales,
        device: &Device,
    ) -> Self {
        let levels = site_levels.iter().max().map_or(1, |m| m + 1);
        let sites = site_levels.len();
        let mut onehot = vec![0.0f32; levels * sites];
        for (s, &l) in site_levels.iter().enumerate() {
            onehot[l * sites + s] = 1.0;
        }
        Self {
            log_scale: Param::from_tensor(Tensor::zeros([levels], device)),
            location: None,
            level_of_site: Tensor::from_data(TensorData::new(onehot, [levels, sites]), device),
            laplace: shape == LatentShape::Laplace,
            learnable: scales == LevelScales::Learnable,
        }
    }

    /// The same prior made bimodal, `½N(μ, 1) + ½N(−μ, 1)` per standardised latent, with a
    /// learnable `μ_ℓ` per level starting at `mu`. Only the Gaussian shape has a bimodal form.
    pub fn with_bimodal(mut self, mu: f64) -> Option<Self> {
        if self.laplace || !mu.is_finite() {
            return None;
        }
        let levels = self.level_of_site.dims()[0];
        let device = self.level_of_site.device();
        self.location = Some(Param::from_tensor(
            Tensor::ones([levels], &device).mul_scalar(mu),
        ));
        Some(self)
    }

    /// `μ_ℓ` per level of a bimodal prior (empty for a unimodal one), on the host.
    pub fn locations(&self) -> Vec<f64> {
        self.location.as_ref().map_or_else(Vec::new, |m| {
            m.val()
                .into_data()
                .convert::<f64>()
                .try_to_vec::<f64>()
                .unwrap_or_default()
        })
    }

    /// A prior with one level for all sites (a flat flow).
    pub fn uniform(sites: usize, shape: LatentShape, scales: LevelScales, device: &Device) -> Self {
        Self::new(&vec![0; sites], shape, scales, device)
    }

    /// `σ_ℓ` per level, on the host (ones for fixed scales).
    pub fn scales(&self) -> Vec<f64> {
        if !self.learnable {
            return vec![1.0; self.log_scale.dims()[0]];
        }
        self.log_scale
            .val()
            .exp()
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .unwrap_or_default()
    }

    /// `ln σ` per site, `[1, 1, rows, cols]` → broadcast over batch and channels; `None`
    /// for fixed scales, `σ = 1` (whatever the stored `a` holds), where the scaling is left
    /// out rather than computed as `e⁰`: a step of the standard prior then runs no matrix
    /// products, exponentials or sums for it (kernel launches on a GPU).
    fn log_scale_per_site(&self, rows: usize, cols: usize) -> Option<Tensor<4>> {
        self.learnable
            .then(|| self.per_site(self.log_scale.val(), rows, cols))
    }

    /// A per-level vector spread over the sites, `[1, 1, rows, cols]`.
    fn per_site(&self, per_level: Tensor<1>, rows: usize, cols: usize) -> Tensor<4> {
        let levels = per_level.dims()[0];
        per_level
            .reshape([1, levels])
            .matmul(self.level_of_site.clone())
            .reshape([1, 1, rows, cols])
    }
}

/// `ln cosh a`, stable for large `|a|`: `|a| + ln(1 + e^{−2|a|}) − ln 2`.
fn ln_cosh(a: Tensor<4>) -> Tensor<4> {
    let m = a.abs();
    m.clone() + m.mul_scalar(-2.0).exp().log1p() - std::f64::consts::LN_2
}

impl Prior for LatentPrior {
    fn sample(&self, shape: [usize; 4], device: &Device) -> Tensor<4> {
        let mut base = if self.laplace {
            LaplacePrior.sample(shape, device)
        } else {
            GaussianPrior.sample(shape, device)
        };
        if let Some(mu) = &self.location {
            let sign = Tensor::<4>::random(shape, Distribution::Bernoulli(0.5), device)
                .mul_scalar(2.0)
                .sub_scalar(1.0);
            base = base + sign * self.per_site(mu.val(), shape[2], shape[3]);
        }
        match self.log_scale_per_site(shape[2], shape[3]) {
            Some(a) => base * a.exp(),
            None => base,
        }
    }

    fn log_prob(&self, z: Tensor<4>) -> Tensor<1> {
        let [_, c, rows, cols] = z.dims();
        let a = self.log_scale_per_site(rows, cols);
        let u = match &a {
            Some(a) => z * a.clone().neg().exp(),
            None => z,
        };
        let base = if self.laplace {
            LaplacePrior.log_prob(u)
        } else if let Some(mu) = &self.location {
            // −½μ² + ln cosh(μu) on top of the standard normal's −½u².
            let mu = self.per_site(mu.val(), rows, cols);
            let extra = ln_cosh(u.clone() * mu.clone()) - (mu.clone() * mu).mul_scalar(0.5);
            GaussianPrior.log_prob(u) + per_sample(extra)
        } else {
            GaussianPrior.log_prob(u)
        };
        // − Σ_i ln σ_{ℓ(i)} over channels and sites.
        match a {
            Some(a) => base - a.sum().mul_scalar(c as f64),
            None => base,
        }
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

    /// Fixed scales are the standard prior exactly (the stored `a` is left out, even when it
    /// is not zero); learnable ones at `a_ℓ` give `ln p(z) = Σ_i [ln p₁(z_i/σ_ℓ) − ln σ_ℓ]`,
    /// checked against that sum in `f64` with two levels of different scales, and their
    /// samples have `E z² = σ_ℓ²` per level (N = 10⁵ per site class; 5σ tolerances).
    #[test]
    fn fixed_scales_are_the_standard_prior_and_learnable_ones_scale_it() {
        let dev = Device::flex();
        dev.seed(9);
        // Not symmetric under the square's reflections: a transposed or flipped level
        // table fails.
        let levels = [0, 1, 0, 0];
        let z = Tensor::<4>::random([5, 2, 2, 2], Distribution::Normal(0.0, 1.5), &dev);
        let zs: Vec<f64> = z
            .clone()
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .unwrap();
        let a = [0.3f64, -0.7];
        for shape in [LatentShape::Gaussian, LatentShape::Laplace] {
            let standard = match shape {
                LatentShape::Gaussian => host(GaussianPrior.log_prob(z.clone())),
                LatentShape::Laplace => host(LaplacePrior.log_prob(z.clone())),
            };
            let with_a = |learnable| {
                let mut prior = LatentPrior::new(&levels, shape, learnable, &dev);
                prior.log_scale = Param::from_tensor(Tensor::from_data(
                    TensorData::new(a.iter().map(|&v| v as f32).collect(), [2]),
                    &dev,
                ));
                prior
            };
            let fixed = host(with_a(LevelScales::Fixed).log_prob(z.clone()));
            assert_eq!(fixed, standard, "{shape:?}: fixed scales are σ = 1");
            let scaled = host(with_a(LevelScales::Learnable).log_prob(z.clone()));
            for (k, got) in scaled.iter().enumerate() {
                let want: f64 = (0..8)
                    .map(|i| {
                        let sigma = a[levels[i % 4]].exp();
                        let u = zs[k * 8 + i] / sigma;
                        let one = match shape {
                            LatentShape::Gaussian => {
                                -0.5 * u * u - 0.5 * std::f64::consts::TAU.ln()
                            }
                            LatentShape::Laplace => -u.abs() - std::f64::consts::LN_2,
                        };
                        one - sigma.ln()
                    })
                    .sum();
                // f32 arithmetic on 8 terms of size ≲ 30: 1e-4 relative is ~100 ulps.
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{got} vs {want}"
                );
            }
            // Sampling too leaves the stored `a` out: the same draws as the standard prior.
            let draw = |prior: &dyn Prior| {
                dev.seed(17);
                prior
                    .sample([3, 2, 2, 2], &dev)
                    .into_data()
                    .convert::<f64>()
                    .try_to_vec::<f64>()
                    .unwrap()
            };
            let standard_draw = match shape {
                LatentShape::Gaussian => draw(&GaussianPrior),
                LatentShape::Laplace => draw(&LaplacePrior),
            };
            assert_eq!(
                draw(&with_a(LevelScales::Fixed)),
                standard_draw,
                "{shape:?}"
            );
            assert_eq!(with_a(LevelScales::Fixed).scales(), vec![1.0, 1.0]);
            if shape == LatentShape::Gaussian {
                let n = 100_000;
                let draws: Vec<f64> = with_a(LevelScales::Learnable)
                    .sample([n / 2, 1, 2, 2], &dev)
                    .into_data()
                    .convert::<f64>()
                    .try_to_vec::<f64>()
                    .unwrap();
                for level in 0..2 {
                    let vals: Vec<f64> = draws
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| levels[i % 4] == level)
                        .map(|(_, v)| v * v)
                        .collect();
                    let m2 = vals.iter().sum::<f64>() / vals.len() as f64;
                    let s2 = (2.0 * a[level]).exp();
                    // Var z² = 2σ⁴ for a Gaussian.
                    let tol = 5.0 * (2.0 / vals.len() as f64).sqrt() * s2;
                    assert!((m2 - s2).abs() < tol, "level {level}: {m2} vs {s2}");
                }
            }
        }
    }

    /// The bimodal prior against its definition `ln(½N(u; μ, 1) + ½N(u; −μ, 1))` (f64, on a
    /// grid), normalised (trapezoidal rule on [−12, 12], step 10⁻³: error ≪ 10⁻⁶), and its
    /// samples' moments `E z² = 1 + μ²`, `E z⁴ = μ⁴ + 6μ² + 3` (N = 2·10⁵; 5σ tolerances).
    #[test]
    fn bimodal_prior_is_the_mixture_and_samples_it() {
        let dev = Device::flex();
        dev.seed(5);
        let mu = 1.5;
        let prior = LatentPrior::uniform(1, LatentShape::Gaussian, LevelScales::Fixed, &dev)
            .with_bimodal(mu)
            .unwrap();
        assert_eq!(prior.locations(), vec![mu]);
        assert!(
            LatentPrior::uniform(1, LatentShape::Laplace, LevelScales::Fixed, &dev)
                .with_bimodal(mu)
                .is_none()
        );
        let grid: Vec<f64> = (0..=24_000).map(|i| -12.0 + 1e-3 * i as f64).collect();
        let n = grid.len();
        let zs: Vec<f32> = grid.iter().map(|&u| u as f32).collect();
        let lp = host(prior.log_prob(Tensor::from_data(TensorData::new(zs, [n, 1, 1, 1]), &dev)));
        let normal = |u: f64| (-0.5 * u * u).exp() / std::f64::consts::TAU.sqrt();
        let mut integral = 0.0;
        for (i, (&u, &l)) in grid.iter().zip(&lp).enumerate() {
            let exact = (0.5 * normal(u - mu) + 0.5 * normal(u + mu)).ln();
            assert!(
                (l - exact).abs() < 2e-5 * (1.0 + exact.abs()),
                "u = {u}: {l} vs {exact}"
            );
            let w = if i == 0 || i == n - 1 { 0.5 } else { 1.0 };
            integral += w * 1e-3 * l.exp();
        }
        assert!((integral - 1.0).abs() < 1e-5, "{integral}");

        let draws = 200_000;
        let v: Vec<f64> = prior
            .sample([draws, 1, 1, 1], &dev)
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .unwrap();
        let m2 = v.iter().map(|x| x * x).sum::<f64>() / draws as f64;
        let m4 = v.iter().map(|x| x.powi(4)).sum::<f64>() / draws as f64;
        let (e2, e4) = (1.0 + mu * mu, mu.powi(4) + 6.0 * mu * mu + 3.0);
        let e8 = {
            // E z⁸ of the mixture: Σ_k C(8,2k) μ^{8−2k} (2k−1)!!
            let mu2 = mu * mu;
            mu2.powi(4) + 28.0 * mu2.powi(3) + 210.0 * mu2 * mu2 + 420.0 * mu2 + 105.0
        };
        let sd2 = ((e4 - e2 * e2) / draws as f64).sqrt();
        let sd4 = ((e8 - e4 * e4) / draws as f64).sqrt();
        assert!((m2 - e2).abs() < 5.0 * sd2, "{m2} vs {e2}");
        assert!((m4 - e4).abs() < 5.0 * sd4, "{m4} vs {e4}");
    }
}
