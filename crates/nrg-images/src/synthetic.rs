//! A multi-scale synthetic set with known causes, in the spirit of RG-Flow's MSDS
//! (arXiv:2010.00029, section 4): 32×32 grayscale images, each a 4×4 grid of ellipses (one
//! centred in every 8×8 cell) drawn with
//!
//! - one factor shared image-wide: the **intensity** `I ∼ U[0.35, 1]` of every ellipse;
//! - two factors per ellipse: its **angle** `θ ∼ U[0, π)` and its **size** (semi-major axis
//!   `a ∼ U[2, 3.6]` pixels, semi-minor `0.45 a`).
//!
//! A pixel's value is `I ×` the fraction of its 4×4 sub-pixel grid inside the ellipse,
//! quantised to `0 … 255`. The factors are returned beside the images, so that which RG
//! level of a flow's latents carries which factor can be measured (the image-wide intensity
//! should live at the top, angles and sizes at the scale of one cell).

use crate::ImageSet;
use nrg_core::{NrgError, Result};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// Side of the images.
pub const SIDE: usize = 32;
/// Ellipses per row and column.
pub const GRID: usize = 4;

/// How many images, and the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticOptions {
    /// Images to draw.
    pub images: usize,
    /// Seed (the same seed gives the same set).
    pub seed: u64,
}

/// The generating factors of a synthetic set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyntheticFactors {
    /// Image-wide intensity, `[N]`.
    pub intensity: Vec<f32>,
    /// Angle of every ellipse in radians, `[N, 16]` (row-major over the grid).
    pub angle: Vec<f32>,
    /// Semi-major axis of every ellipse in pixels, `[N, 16]`.
    pub size: Vec<f32>,
}

impl SyntheticFactors {
    /// One row per ellipse: `image,item,intensity,angle,size`.
    pub fn to_csv(&self) -> String {
        let items = GRID * GRID;
        let mut out = String::from("image,item,intensity,angle,size\n");
        for (i, intensity) in self.intensity.iter().enumerate() {
            for k in 0..items {
                out.push_str(&format!(
                    "{i},{k},{intensity},{},{}\n",
                    self.angle[i * items + k],
                    self.size[i * items + k]
                ));
            }
        }
        out
    }
}

/// Draws the set. Errors: no images asked for.
pub fn multiscale_ellipses(options: &SyntheticOptions) -> Result<(ImageSet, SyntheticFactors)> {
    if options.images == 0 {
        return Err(NrgError::param("images", "must be ≥ 1"));
    }
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(options.seed);
    let items = GRID * GRID;
    let cell = (SIDE / GRID) as f64;
    let n = options.images;
    let mut factors = SyntheticFactors {
        intensity: Vec::with_capacity(n),
        angle: Vec::with_capacity(n * items),
        size: Vec::with_capacity(n * items),
    };
    let mut pixels = vec![0u8; n * SIDE * SIDE];
    const SUB: usize = 4;
    for img in 0..n {
        let intensity = 0.35 + 0.65 * rng.random::<f64>();
        factors.intensity.push(intensity as f32);
        for k in 0..items {
            let angle = std::f64::consts::PI * rng.random::<f64>();
            let a = 2.0 + 1.6 * rng.random::<f64>();
            factors.angle.push(angle as f32);
            factors.size.push(a as f32);
            let b = 0.45 * a;
            let (gi, gj) = (k / GRID, k % GRID);
            let (ci, cj) = ((gi as f64 + 0.5) * cell, (gj as f64 + 0.5) * cell);
            let (cos, sin) = (angle.cos(), angle.sin());
            let first = (SIDE / GRID) * gi;
            for r in first..first + SIDE / GRID {
                let first_c = (SIDE / GRID) * gj;
                for c in first_c..first_c + SIDE / GRID {
                    let mut inside = 0;
                    for u in 0..SUB {
                        for w in 0..SUB {
                            let y = r as f64 + (u as f64 + 0.5) / SUB as f64 - ci;
                            let x = c as f64 + (w as f64 + 0.5) / SUB as f64 - cj;
                            let (p, q) = (x * cos + y * sin, -x * sin + y * cos);
                            if (p / a).powi(2) + (q / b).powi(2) <= 1.0 {
                                inside += 1;
                            }
                        }
                    }
                    let value = intensity * inside as f64 / (SUB * SUB) as f64;
                    pixels[(img * SIDE + r) * SIDE + c] = (255.0 * value).round() as u8;
                }
            }
        }
    }
    Ok((ImageSet::new(pixels, [n, 1, SIDE, SIDE])?, factors))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded and reproducible; every ellipse lies in its cell; the brightest pixel of an
    /// image is its intensity (an ellipse of semi-minor axis ≥ 0.9 px covers some pixel
    /// fully); the ellipse's area, `π a b`, is its pixel sum over the intensity within the
    /// error of the 4×4 sub-pixel grid.
    #[test]
    fn ellipses_follow_their_factors() {
        let opts = SyntheticOptions { images: 6, seed: 3 };
        let (set, f) = multiscale_ellipses(&opts).unwrap();
        assert_eq!(
            (set.clone(), f.clone()),
            multiscale_ellipses(&opts).unwrap()
        );
        assert_eq!(set.shape, [6, 1, 32, 32]);
        for i in 0..6 {
            let img = set.image(i);
            let top = *img.iter().max().unwrap() as f64 / 255.0;
            assert!((top - f.intensity[i] as f64).abs() < 1.0 / 255.0 + 1e-6);
            for k in 0..16 {
                let (gi, gj) = (k / 4, k % 4);
                let mut sum = 0.0;
                for r in gi * 8..gi * 8 + 8 {
                    for c in gj * 8..gj * 8 + 8 {
                        sum += img[r * 32 + c] as f64 / 255.0;
                    }
                }
                let a = f.size[i * 16 + k] as f64;
                let area = std::f64::consts::PI * a * 0.45 * a;
                let measured = sum / f.intensity[i] as f64;
                assert!(
                    (measured - area).abs() < 0.1 * area,
                    "image {i} item {k}: {measured} vs {area}"
                );
            }
        }
        assert!(f.to_csv().lines().count() == 6 * 16 + 1);
        assert!(multiscale_ellipses(&SyntheticOptions { images: 0, seed: 1 }).is_err());
    }
}
