//! A table of measurement series: one named column per observable, one row per
//! measurement. What a chain writes to `series.csv` and what the error analysis reads.

use crate::error::{NrgError, Result};

/// Named columns of `f64` measurements of equal length.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    names: Vec<String>,
    columns: Vec<Vec<f64>>,
}

impl Series {
    /// An empty table with the given column names.
    pub fn new(names: Vec<String>) -> Self {
        let columns = vec![Vec::new(); names.len()];
        Self { names, columns }
    }

    /// Appends one measurement (one value per column).
    pub fn push(&mut self, row: &[f64]) -> Result<()> {
        if row.len() != self.names.len() {
            return Err(NrgError::InvalidData(format!(
                "a row of {} values for {} columns",
                row.len(),
                self.names.len()
            )));
        }
        for (c, v) in self.columns.iter_mut().zip(row) {
            c.push(*v);
        }
        Ok(())
    }

    /// Column names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of measurements.
    pub fn len(&self) -> usize {
        self.columns.first().map_or(0, Vec::len)
    }

    /// Whether there are no measurements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&[f64]> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.columns[i].as_slice())
    }

    /// The column named `name`, or an error naming it.
    pub fn require(&self, name: &str) -> Result<&[f64]> {
        self.column(name)
            .ok_or_else(|| NrgError::InvalidData(format!("no series named `{name}`")))
    }

    /// Iterates over `(name, column)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[f64])> {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.columns.iter().map(Vec::as_slice))
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> Vec<f64> {
        self.columns.iter().map(|c| c[i]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_read() {
        let mut s = Series::new(vec!["a".into(), "b".into()]);
        s.push(&[1.0, 2.0]).unwrap();
        s.push(&[3.0, 4.0]).unwrap();
        assert!(s.push(&[1.0]).is_err());
        assert_eq!(s.len(), 2);
        assert_eq!(s.column("b").unwrap(), &[2.0, 4.0]);
        assert_eq!(s.row(1), vec![3.0, 4.0]);
        assert!(s.require("c").is_err());
    }
}
