//! Likelihoods of images as image flows report them (Dinh, Sohl-Dickstein & Bengio, RealNVP,
//! arXiv:1605.08803, section 4.1; Theis, van den Oord & Bethge, arXiv:1511.01844).
//!
//! **Dequantisation.** Pixel levels `v ∈ {0, …, 255}` become `x = (v + u)/256`, `u ∼ U[0, 1)`
//! per pixel, so `x ∈ [0, 1)^D`. For any density `p` on `[0, 1)^D`,
//! `P(v) = ∫_{cell(v)} p(x) dx ≥ 256^{−D} exp E_u[ln p((v + u)/256)]` (Jensen), so the
//! dequantised negative log-likelihood bounds the discrete one.
//!
//! **Logit transform.** A flow on unbounded variables models `y = logit(s)`,
//! `s = α + (1 − 2α) x` (`α = 0.05` keeps `y` finite), with
//!
//! ```text
//! ln |dy/dx| = ln(1 − 2α) − ln s − ln(1 − s)          per pixel
//! ln p_X(x) = ln p_Y(y) + Σ_pixels ln |dy/dx|
//! ```
//!
//! **Bits per dimension** of an image of `D` pixels, reported per `P` real pixels (`P = D`,
//! or 784 for Fashion-MNIST padded to 32×32):
//! `bpd = (−ln p_X(x) + D ln 256) / (P ln 2)`, the code length of the levels `v` in bits.

use rand::RngExt;

/// Levels per pixel.
pub const LEVELS: f64 = 256.0;

/// `x = (v + u)/256` with fresh uniform noise `u` per pixel.
pub fn dequantise(pixels: &[u8], rng: &mut impl rand::Rng) -> Vec<f32> {
    pixels
        .iter()
        .map(|&v| ((v as f64 + rng.random::<f64>()) / LEVELS) as f32)
        .collect()
}

/// The logit transform `y = logit(α + (1 − 2α) x)` on `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogitTransform {
    /// `α ∈ (0, ½)`.
    pub alpha: f64,
}

impl Default for LogitTransform {
    /// RealNVP's `α = 0.05`.
    fn default() -> Self {
        Self { alpha: 0.05 }
    }
}

impl LogitTransform {
    fn squeeze(&self, x: f64) -> f64 {
        self.alpha + (1.0 - 2.0 * self.alpha) * x
    }

    /// `y` of one pixel.
    pub fn forward_pixel(&self, x: f64) -> f64 {
        let s = self.squeeze(x);
        (s / (1.0 - s)).ln()
    }

    /// `ln |dy/dx|` at one pixel.
    pub fn log_det_pixel(&self, x: f64) -> f64 {
        let s = self.squeeze(x);
        (1.0 - 2.0 * self.alpha).ln() - s.ln() - (1.0 - s).ln()
    }

    /// `x` of one pixel's `y`.
    pub fn inverse_pixel(&self, y: f64) -> f64 {
        let s = 1.0 / (1.0 + (-y).exp());
        (s - self.alpha) / (1.0 - 2.0 * self.alpha)
    }

    /// `y` of a whole image and `Σ ln |dy/dx|` (accumulated in f64).
    pub fn forward(&self, x: &[f32]) -> (Vec<f32>, f64) {
        let mut log_det = 0.0;
        let y = x
            .iter()
            .map(|&v| {
                log_det += self.log_det_pixel(v as f64);
                self.forward_pixel(v as f64) as f32
            })
            .collect();
        (y, log_det)
    }

    /// `x` of a whole image's `y`.
    pub fn inverse(&self, y: &[f32]) -> Vec<f32> {
        y.iter()
            .map(|&v| self.inverse_pixel(v as f64) as f32)
            .collect()
    }
}

/// Bits per dimension from `−ln p_X(x)` (nats, density on `[0, 1)^D`) of an image of `dims`
/// pixels, per `per` real pixels.
pub fn bits_per_dim(neg_log_density: f64, dims: usize, per: usize) -> f64 {
    (neg_log_density + dims as f64 * LEVELS.ln()) / (per as f64 * std::f64::consts::LN_2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The log-determinant against a central difference of `y(x)`, the inverse, and the
    /// dequantised values within their pixel's cell.
    #[test]
    fn logit_log_det_matches_finite_differences() {
        let t = LogitTransform::default();
        for k in 0..=100 {
            let x = k as f64 / 100.0;
            let h = 1e-6;
            let fd = (t.forward_pixel(x + h) - t.forward_pixel(x - h)) / (2.0 * h);
            assert!((t.log_det_pixel(x) - fd.ln()).abs() < 1e-8, "x = {x}");
            assert!((t.inverse_pixel(t.forward_pixel(x)) - x).abs() < 1e-12);
        }
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let pixels: Vec<u8> = (0..=255).collect();
        let x = dequantise(&pixels, &mut rng);
        for (v, x) in pixels.iter().zip(&x) {
            assert!((*x as f64) * 256.0 >= *v as f64 && (*x as f64) * 256.0 < *v as f64 + 1.0);
        }
        let (y, ld) = t.forward(&x);
        let direct: f64 = x.iter().map(|v| t.log_det_pixel(*v as f64)).sum();
        assert!((ld - direct).abs() < 1e-9);
        assert!(
            t.inverse(&y)
                .iter()
                .zip(&x)
                .all(|(a, b)| (a - b).abs() < 1e-5)
        );
    }

    /// A known density: the uniform density on `[0, 1)^D` is 8 bits per dimension exactly,
    /// whether evaluated in `x` or through the logit transform as the density of `y` it
    /// induces (`p_Y(y) = |dx/dy|`); per 784 real pixels of a padded 32×32 image, `8·1024/784`.
    #[test]
    fn the_uniform_density_is_eight_bits() {
        assert!((bits_per_dim(0.0, 1024, 1024) - 8.0).abs() < 1e-12);
        let t = LogitTransform::default();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(2);
        let pixels: Vec<u8> = (0..1024).map(|i| (i * 37 % 256) as u8).collect();
        let x = dequantise(&pixels, &mut rng);
        let (_, log_det) = t.forward(&x);
        // ln p_Y(y) = ln p_X(x) − Σ ln|dy/dx| = −log_det; back: ln p_X = ln p_Y + log_det = 0
        let log_p_y = -log_det;
        let nll_x = -(log_p_y + log_det);
        assert!((bits_per_dim(nll_x, 1024, 1024) - 8.0).abs() < 1e-12);
        assert!((bits_per_dim(nll_x, 1024, 784) - 8.0 * 1024.0 / 784.0).abs() < 1e-12);
    }
}
