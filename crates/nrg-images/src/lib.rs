//! # nrg-images
//!
//! Image data for the RG flow as a generative model of pictures (RG-Flow, Hu et al.,
//! arXiv:2010.00029), without a tensor backend: a user program can read and prepare images
//! with this crate alone.
//!
//! Images are held as an [`ImageSet`]: quantised levels `0 … 255` of shape `[N, C, H, W]`,
//! the number of real pixels per image (for padded images) and optional labels. Modules:
//!
//! - [`idx`]: IDX files (the MNIST family; gzip or plain), and Fashion-MNIST from Debian's
//!   `dataset-fashion-mnist` package (28×28 padded to 32×32);
//! - [`folder`]: a folder of PNG/JPEG files, grayscale or RGB, resized or centre-cropped to a
//!   power-of-two side;
//! - [`grid`]: a PNG grid of images (samples, data, receptive fields) for a talk;
//! - [`synthetic`]: a multi-scale synthetic set in the spirit of RG-Flow's MSDS — a 4×4 grid
//!   of rotated ellipses on 32×32, one factor shared image-wide and the others per ellipse —
//!   with its generating factors;
//! - [`likelihood`]: what image-flow likelihoods need — uniform dequantisation, the logit
//!   transform with its log-determinant, and bits per dimension.
//!
//! Every reader names the file in its errors (a corrupt image, a wrong size, an empty
//! folder, an IDX file with a wrong magic number).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod folder;
pub mod grid;
pub mod idx;
pub mod likelihood;
pub mod synthetic;

use nrg_core::{NrgError, Result};

/// Quantised images.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    /// Pixel levels `0 … 255`, `[N, C, H, W]` row-major.
    pub pixels: Vec<u8>,
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    /// Real pixels per image (`C·H·W` unless the images were padded: 784 for Fashion-MNIST
    /// padded to 32×32) — what bits per dimension are reported per.
    pub real_dims: usize,
    /// Class labels, one per image, where the source has them.
    pub labels: Option<Vec<u8>>,
}

impl ImageSet {
    /// Images of `shape` from `pixels`. Errors: a length that does not match the shape.
    pub fn new(pixels: Vec<u8>, shape: [usize; 4]) -> Result<Self> {
        if pixels.len() != shape.iter().product::<usize>() || shape.contains(&0) {
            return Err(NrgError::InvalidData(format!(
                "{} pixels do not make images of shape {shape:?}",
                pixels.len()
            )));
        }
        Ok(Self {
            pixels,
            shape,
            real_dims: shape[1] * shape[2] * shape[3],
            labels: None,
        })
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }

    /// Dimensions per image, `C·H·W`.
    pub fn dims(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }

    /// The levels of image `i`, `[C, H, W]`.
    pub fn image(&self, i: usize) -> &[u8] {
        let d = self.dims();
        &self.pixels[i * d..(i + 1) * d]
    }

    /// Images `range` as a set of their own (labels kept).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        let d = self.dims();
        Self {
            pixels: self.pixels[range.start * d..range.end * d].to_vec(),
            shape: [range.len(), self.shape[1], self.shape[2], self.shape[3]],
            real_dims: self.real_dims,
            labels: self.labels.as_ref().map(|l| l[range].to_vec()),
        }
    }

    /// Pads every image with `pad` zero pixels on each side (`H + 2·pad`, `W + 2·pad`),
    /// keeping `real_dims`.
    pub fn padded(&self, pad: usize) -> Self {
        let [n, c, h, w] = self.shape;
        let (hp, wp) = (h + 2 * pad, w + 2 * pad);
        let mut pixels = vec![0u8; n * c * hp * wp];
        for img in 0..n * c {
            for r in 0..h {
                let src = &self.pixels[(img * h + r) * w..(img * h + r + 1) * w];
                let at = (img * hp + r + pad) * wp + pad;
                pixels[at..at + w].copy_from_slice(src);
            }
        }
        Self {
            pixels,
            shape: [n, c, hp, wp],
            real_dims: self.real_dims,
            labels: self.labels.clone(),
        }
    }
}

/// Whether `n` is a power of two (≥ 2), as the hierarchical flow needs.
pub(crate) fn require_power_of_two(name: &str, n: usize) -> Result<()> {
    if n >= 2 && n.is_power_of_two() {
        Ok(())
    } else {
        Err(NrgError::param(
            name,
            format!("must be a power of two ≥ 2 (the hierarchical flow halves it), got {n}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_keeps_the_image_in_the_middle() {
        let set = ImageSet::new((1..=8).collect(), [2, 1, 2, 2]).unwrap();
        let p = set.padded(1);
        assert_eq!(p.shape, [2, 1, 4, 4]);
        assert_eq!(p.real_dims, 4);
        assert_eq!(
            p.image(1),
            &[0, 0, 0, 0, 0, 5, 6, 0, 0, 7, 8, 0, 0, 0, 0, 0]
        );
        assert!(ImageSet::new(vec![0; 7], [2, 1, 2, 2]).is_err());
        assert_eq!(set.slice(1..2).image(0), &[5, 6, 7, 8]);
        assert!(require_power_of_two("size", 24).is_err());
        assert!(require_power_of_two("size", 32).is_ok());
    }
}
