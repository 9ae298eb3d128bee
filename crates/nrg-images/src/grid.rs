//! A grid of images as one PNG a physicist can show: `cols` images per row, one-pixel
//! mid-gray gaps, each pixel enlarged `scale × scale` (nearest neighbour). Grayscale sets
//! (`C = 1`) give a gray PNG, RGB sets (`C = 3`) an RGB one. Written to a temporary file
//! beside the target and renamed, so a reader never sees half a picture.

use crate::ImageSet;
use nrg_core::{NrgError, Result};
use std::path::Path;

/// Layout of a grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridOptions {
    /// Images per row.
    pub cols: usize,
    /// Enlargement per pixel.
    pub scale: usize,
}

/// Writes the images of `set` as a PNG grid at `path`. Errors: not 1 or 3 channels, an
/// empty set, `cols` or `scale` zero, the file not writable.
pub fn write_grid(path: &Path, set: &ImageSet, options: &GridOptions) -> Result<()> {
    let [n, c, h, w] = set.shape;
    if n == 0 || options.cols == 0 || options.scale == 0 {
        return Err(NrgError::param(
            "grid",
            "need at least one image, cols ≥ 1 and scale ≥ 1",
        ));
    }
    if c != 1 && c != 3 {
        return Err(NrgError::param(
            "channels",
            format!("a PNG grid needs 1 or 3 channels, got {c}"),
        ));
    }
    let (cols, s) = (options.cols.min(n), options.scale);
    let rows = n.div_ceil(cols);
    let (cell_h, cell_w) = (h * s + 1, w * s + 1);
    let (height, width) = (rows * cell_h + 1, cols * cell_w + 1);
    let mut buf = vec![128u8; height * width * c];
    for i in 0..n {
        let img = set.image(i);
        let (top, left) = ((i / cols) * cell_h + 1, (i % cols) * cell_w + 1);
        for ch in 0..c {
            for r in 0..h * s {
                for q in 0..w * s {
                    let v = img[(ch * h + r / s) * w + q / s];
                    buf[((top + r) * width + left + q) * c + ch] = v;
                }
            }
        }
    }
    let color = if c == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    let tmp = path.with_extension("png.part");
    let io = |source| NrgError::Io {
        path: path.display().to_string(),
        source,
    };
    image::save_buffer_with_format(
        &tmp,
        &buf,
        width as u32,
        height as u32,
        color,
        image::ImageFormat::Png,
    )
    .map_err(|e| {
        NrgError::InvalidData(format!("{}: cannot write the PNG ({e})", path.display()))
    })?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3-image gray grid of 2×2 images at scale 2 round-trips through the PNG decoder
    /// pixel for pixel, with mid-gray gaps.
    #[test]
    fn grids_round_trip_through_png() {
        let set = ImageSet::new((0..12).map(|v| v * 20).collect(), [3, 1, 2, 2]).unwrap();
        let dir = std::env::temp_dir().join(format!("nrg-grid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grid.png");
        let opts = GridOptions { cols: 2, scale: 2 };
        write_grid(&path, &set, &opts).unwrap();
        let img = image::open(&path).unwrap().to_luma8();
        // 2 rows × 2 cols of 5×5 cells (4 pixels + gap) + 1
        assert_eq!((img.width(), img.height()), (11, 11));
        assert_eq!(img.get_pixel(0, 0)[0], 128);
        // image 1 (top right), its pixel (1, 0) = level 5·20 = 100, at x = 6 + 2, y = 1
        assert_eq!(img.get_pixel(8, 1)[0], 100);
        assert_eq!(img.get_pixel(9, 2)[0], 100);
        // image 2 (bottom left), pixel (1, 1) = 11·20 = 220
        assert_eq!(img.get_pixel(3, 9)[0], 220);
        let rgb2 = ImageSet::new(vec![0; 8], [1, 2, 2, 2]).unwrap();
        assert!(write_grid(&path, &rgb2, &opts).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
