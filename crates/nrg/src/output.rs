//! Writing results a user can open: JSON for numbers, CSV for series, written atomically
//! (to a temporary file in the same directory, then renamed).

use anyhow::{Context, Result};
use nrg_core::Series;
use std::fs;
use std::path::Path;

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

/// Pretty JSON of `value` to `path`.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, format!("{text}\n").as_bytes())
}

/// A measurement series as CSV with a header row and a leading `index` column.
pub fn write_series_csv(path: &Path, series: &Series) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["index".to_string()];
    header.extend(series.names().iter().cloned());
    w.write_record(&header)?;
    for i in 0..series.len() {
        let mut rec = vec![i.to_string()];
        rec.extend(series.row(i).iter().map(|v| format!("{v:.17e}")));
        w.write_record(&rec)?;
    }
    let bytes = w.into_inner().context("csv buffer")?;
    write_atomic(path, &bytes)
}
