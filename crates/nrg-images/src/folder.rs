//! A folder of PNG/JPEG pictures as an [`ImageSet`]: every `*.png`, `*.jpg`, `*.jpeg` (case
//! insensitive) in name order, decoded by the `image` crate, converted to grayscale (`C = 1`,
//! luma) or RGB (`C = 3`), and brought to `size × size` (`size` a power of two) by
//! [`Fit::Resize`] (a triangle filter, aspect ratio not kept) or [`Fit::CenterCrop`] (the
//! largest centred square, then resized).

use crate::{ImageSet, require_power_of_two};
use image::imageops::FilterType;
use nrg_core::{NrgError, Result};
use std::path::{Path, PathBuf};

/// Colour channels of the images read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channels {
    /// Luma, `C = 1`.
    Gray,
    /// Red, green, blue, `C = 3`.
    Rgb,
}

/// How a picture is brought to a square of the wanted side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Resize to the square (aspect ratio not kept).
    Resize,
    /// Crop the largest centred square, then resize.
    CenterCrop,
}

/// How to read a folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderOptions {
    /// Grayscale or RGB.
    pub channels: Channels,
    /// Side of the square images, a power of two.
    pub size: usize,
    /// Resize or crop.
    pub fit: Fit,
}

/// The picture files of `dir`, in name order.
fn pictures(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| NrgError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(NrgError::InvalidData(format!(
            "{}: no PNG or JPEG files in this folder",
            dir.display()
        )));
    }
    Ok(files)
}

/// Reads every picture of `dir` as `options` say. Errors: a missing or empty folder, a size
/// that is not a power of two, a file that does not decode (named).
pub fn read_folder(dir: &Path, options: &FolderOptions) -> Result<ImageSet> {
    require_power_of_two("size", options.size)?;
    let files = pictures(dir)?;
    let s = options.size as u32;
    let c = match options.channels {
        Channels::Gray => 1,
        Channels::Rgb => 3,
    };
    let per = c * options.size * options.size;
    let mut pixels = Vec::with_capacity(files.len() * per);
    for path in &files {
        let img = image::ImageReader::open(path)
            .map_err(|source| NrgError::Io {
                path: path.display().to_string(),
                source,
            })?
            .with_guessed_format()
            .map_err(|source| NrgError::Io {
                path: path.display().to_string(),
                source,
            })?
            .decode()
            .map_err(|e| {
                NrgError::InvalidData(format!("{}: not a readable image ({e})", path.display()))
            })?;
        let img = match options.fit {
            Fit::Resize => img,
            Fit::CenterCrop => {
                let side = img.width().min(img.height());
                img.crop_imm(
                    (img.width() - side) / 2,
                    (img.height() - side) / 2,
                    side,
                    side,
                )
            }
        };
        let img = if img.width() == s && img.height() == s {
            img
        } else {
            img.resize_exact(s, s, FilterType::Triangle)
        };
        match options.channels {
            Channels::Gray => pixels.extend_from_slice(img.to_luma8().as_raw()),
            Channels::Rgb => {
                // interleaved RGB → planar [3, H, W]
                let rgb = img.to_rgb8();
                let raw = rgb.as_raw();
                for ch in 0..3 {
                    pixels.extend(raw.iter().skip(ch).step_by(3));
                }
            }
        }
    }
    ImageSet::new(pixels, [files.len(), c, options.size, options.size])
}
