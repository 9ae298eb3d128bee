//! IDX files (LeCun's format of the MNIST family): a 4-byte magic `0x00 0x00 type dims`
//! (type `0x08` = unsigned bytes), then `dims` big-endian `u32` sizes, then the data. Files
//! may be gzip-compressed (as Debian ships them). Images are `dims = 3` (`[N, rows, cols]`),
//! labels `dims = 1`.
//!
//! [`fashion_mnist`] reads a split of Fashion-MNIST (Xiao, Rasul & Vollgraf,
//! arXiv:1708.07747) from Debian's `dataset-fashion-mnist` package
//! ([`FASHION_MNIST_DIR`]) and pads the 28×28 images to 32×32 (two zero pixels on each side),
//! so the hierarchical flow can halve them; `real_dims` stays 784.

use crate::ImageSet;
use nrg_core::{NrgError, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where Debian's `dataset-fashion-mnist` installs the data.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// A Fashion-MNIST split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The 60 000 training images.
    Train,
    /// The 10 000 test images.
    Test,
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> NrgError {
    NrgError::InvalidData(format!("{}: {what}", path.display()))
}

/// The bytes of a file, gunzipped if it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| NrgError::Io {
        path: path.display().to_string(),
        source,
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| invalid(path, format!("not a valid gzip file ({e})")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX file of unsigned bytes with `dims` dimensions: `(sizes, data)`.
fn parse(path: &Path, bytes: &[u8], dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(invalid(path, "not an IDX file (wrong magic number)"));
    }
    if bytes[2] != 0x08 {
        return Err(invalid(
            path,
            format!(
                "IDX data type 0x{:02x}, only unsigned bytes (0x08) are supported",
                bytes[2]
            ),
        ));
    }
    if bytes[3] as usize != dims {
        return Err(invalid(
            path,
            format!(
                "an IDX file of {} dimensions where {dims} were expected (magic 0x0000{:02x}{:02x})",
                bytes[3], bytes[2], bytes[3]
            ),
        ));
    }
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        return Err(invalid(path, "truncated IDX header"));
    }
    let sizes: Vec<usize> = (0..dims)
        .map(|k| {
            let b = &bytes[4 + 4 * k..8 + 4 * k];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let n: usize = sizes.iter().product();
    if bytes.len() != header + n {
        return Err(invalid(
            path,
            format!(
                "{} data bytes where the header {sizes:?} says {n}",
                bytes.len() - header
            ),
        ));
    }
    Ok((sizes, bytes[header..].to_vec()))
}

/// Images `[N, 1, rows, cols]` from an IDX image file (magic `0x00000803`).
pub fn read_idx_images(path: &Path) -> Result<ImageSet> {
    let bytes = read_maybe_gz(path)?;
    let (sizes, data) = parse(path, &bytes, 3)?;
    ImageSet::new(data, [sizes[0], 1, sizes[1], sizes[2]]).map_err(|e| invalid(path, e))
}

/// Labels from an IDX label file (magic `0x00000801`).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gz(path)?;
    Ok(parse(path, &bytes, 1)?.1)
}

/// Fashion-MNIST's `split` from `dir` (default [`FASHION_MNIST_DIR`]), padded to 32×32,
/// with labels. Errors name the missing or corrupt file (and how to install the package).
pub fn fashion_mnist(dir: Option<&Path>, split: Split) -> Result<ImageSet> {
    let dir: PathBuf = dir.map_or_else(|| PathBuf::from(FASHION_MNIST_DIR), Path::to_path_buf);
    let stem = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let find = |kind: &str| -> Result<PathBuf> {
        for name in [
            format!("{stem}-{kind}-ubyte.gz"),
            format!("{stem}-{kind}-ubyte"),
        ] {
            let p = dir.join(name);
            if p.exists() {
                return Ok(p);
            }
        }
        Err(NrgError::InvalidData(format!(
            "{}: no {stem}-{kind}-ubyte[.gz] (install Debian's dataset-fashion-mnist, or point \
             to a folder with the IDX files)",
            dir.display()
        )))
    };
    let images_path = find("images-idx3")?;
    let mut set = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&find("labels-idx1")?)?;
    if labels.len() != set.len() {
        return Err(invalid(
            &images_path,
            format!("{} images but {} labels", set.len(), labels.len()),
        ));
    }
    if set.shape[2..] != [28, 28] {
        return Err(invalid(
            &images_path,
            format!("images of {:?}, Fashion-MNIST's are 28×28", &set.shape[2..]),
        ));
    }
    set.labels = Some(labels);
    Ok(set.padded(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic: [u8; 4], sizes: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_vec();
        for s in sizes {
            out.extend(s.to_be_bytes());
        }
        out.extend(data);
        out
    }

    #[test]
    fn idx_files_parse_and_bad_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("nrg-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("img");
        std::fs::write(
            &good,
            idx(
                [0, 0, 8, 3],
                &[2, 2, 3],
                &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            ),
        )
        .unwrap();
        let set = read_idx_images(&good).unwrap();
        assert_eq!(set.shape, [2, 1, 2, 3]);
        assert_eq!(set.image(1), &[7, 8, 9, 10, 11, 12]);
        // gzip
        let gz = dir.join("img.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &std::fs::read(&good).unwrap()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_idx_images(&gz).unwrap(), set);
        // labels read as images, a wrong magic, a truncated body
        let labels = dir.join("lab");
        std::fs::write(&labels, idx([0, 0, 8, 1], &[2], &[3, 4])).unwrap();
        assert_eq!(read_idx_labels(&labels).unwrap(), vec![3, 4]);
        let err = read_idx_images(&labels).unwrap_err().to_string();
        assert!(err.contains("lab") && err.contains("dimensions"), "{err}");
        let bad = dir.join("bad");
        std::fs::write(&bad, [0x50, 0x4b, 3, 4, 0, 0]).unwrap();
        let err = read_idx_images(&bad).unwrap_err().to_string();
        assert!(err.contains("bad") && err.contains("magic"), "{err}");
        let short = dir.join("short");
        std::fs::write(&short, idx([0, 0, 8, 3], &[2, 2, 3], &[1, 2, 3])).unwrap();
        assert!(
            read_idx_images(&short)
                .unwrap_err()
                .to_string()
                .contains("short")
        );
        assert!(read_idx_images(&dir.join("missing")).is_err());
        let broken_gz = dir.join("broken.gz");
        std::fs::write(&broken_gz, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        assert!(
            read_idx_images(&broken_gz)
                .unwrap_err()
                .to_string()
                .contains("gzip")
        );
        let err = fashion_mnist(Some(&dir), Split::Test)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dataset-fashion-mnist"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
