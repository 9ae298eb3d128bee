//! Configurations on disk as NumPy `.npy` arrays (`f32` or `f64`, C order).
//!
//! Accepted shapes: `[N, L, L]` (one channel) or `[N, C, L, L]`. Values must be finite.

use burn::tensor::{Device, Tensor, TensorData};
use npyz::WriterBuilder;
use nrg_core::NrgError;
use std::path::Path;

/// Reads configurations `[N, C, rows, cols]` from `path`.
pub fn read_configurations(path: &Path) -> Result<(Vec<f32>, [usize; 4]), NrgError> {
    let bad = |msg: String| NrgError::InvalidData(format!("{}: {msg}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| bad(format!("not a .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(bad("Fortran-ordered arrays are not supported".into()));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let shape = match shape[..] {
        [n, r, c] => [n, 1, r, c],
        [n, ch, r, c] => [n, ch, r, c],
        _ => {
            return Err(bad(format!(
                "expected shape [N, L, L] or [N, C, L, L], got {shape:?}"
            )));
        }
    };
    let descr = npy.dtype().descr();
    let type_str = descr.trim_matches(|c| c == '\'' || c == '"');
    let values: Vec<f32> = match type_str {
        "<f4" => npy
            .into_vec::<f32>()
            .map_err(|e| bad(format!("corrupt data: {e}")))?,
        "<f8" => npy
            .into_vec::<f64>()
            .map_err(|e| bad(format!("corrupt data: {e}")))?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        other => return Err(bad(format!("dtype {other} is not little-endian f4/f8"))),
    };
    if values.len() != shape.iter().product::<usize>() {
        return Err(bad("truncated data".into()));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("value {i} is not finite")));
    }
    Ok((values, shape))
}

/// Reads configurations into a tensor on `device`.
pub fn load_configurations(path: &Path, device: &Device) -> Result<Tensor<4>, NrgError> {
    let (values, shape) = read_configurations(path)?;
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

/// Writes `values` with `shape` as a little-endian `f32` `.npy` file (atomically: a
/// temporary file, then a rename).
pub fn write_npy_f32(path: &Path, values: &[f32], shape: &[usize]) -> Result<(), NrgError> {
    let io = |e: std::io::Error| NrgError::InvalidData(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("npy.tmp");
    {
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut writer = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape.iter().map(|&d| d as u64).collect::<Vec<_>>())
            .writer(std::io::BufWriter::new(file))
            .begin_nd()
            .map_err(io)?;
        writer.extend(values.iter().copied()).map_err(io)?;
        writer.finish().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("nrg-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.npy");
        let v: Vec<f32> = (0..32).map(|i| i as f32 * 0.5).collect();
        write_npy_f32(&path, &v, &[2, 4, 4]).unwrap();
        let (back, shape) = read_configurations(&path).unwrap();
        assert_eq!(shape, [2, 1, 4, 4]);
        assert_eq!(back, v);
        std::fs::write(&path, b"not numpy").unwrap();
        assert!(read_configurations(&path).is_err());
        assert!(read_configurations(&dir.join("missing.npy")).is_err());
        write_npy_f32(&path, &[f32::NAN; 4], &[1, 2, 2]).unwrap();
        assert!(read_configurations(&path).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
