//! Writing measurement series as CSV a user can open, atomically (JSON goes through
//! [`nrg_run::dir::write_json`]).

use anyhow::{Context, Result};
use nrg_core::Series;
use nrg_run::dir::write_atomic;
use std::path::Path;

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
    Ok(write_atomic(path, &bytes)?)
}
