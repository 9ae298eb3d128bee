//! The error type of the `nrg` library crates.
//!
//! Every user-facing failure (bad parameter, non-finite input, corrupt file) is an
//! [`NrgError`] with a one-line message; library code never panics on bad input.

use thiserror::Error;

/// Errors raised by the `nrg` library crates.
#[derive(Debug, Error)]
pub enum NrgError {
    /// A parameter is out of its domain (e.g. `L < 2`, `β ≤ 0`, NaN).
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The parameter's name as the user wrote it.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Input data (a configuration, a series) is unusable.
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
}

/// Result with [`NrgError`].
pub type Result<T> = std::result::Result<T, NrgError>;

impl NrgError {
    /// Shorthand for [`NrgError::InvalidParameter`].
    pub fn param(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidParameter {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// Checks that `value` is finite, naming it in the error.
pub fn require_finite(name: &str, value: f64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(NrgError::param(
            name,
            format!("must be a finite number, got {value}"),
        ))
    }
}

/// Checks that `value` is finite and strictly positive.
pub fn require_positive(name: &str, value: f64) -> Result<f64> {
    require_finite(name, value)?;
    if value > 0.0 {
        Ok(value)
    } else {
        Err(NrgError::param(name, format!("must be > 0, got {value}")))
    }
}

/// Checks that `value` is finite and non-negative.
pub fn require_non_negative(name: &str, value: f64) -> Result<f64> {
    require_finite(name, value)?;
    if value >= 0.0 {
        Ok(value)
    } else {
        Err(NrgError::param(name, format!("must be ≥ 0, got {value}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_reject_nan_and_sign() {
        assert!(require_finite("beta", f64::NAN).is_err());
        assert!(require_positive("beta", 0.0).is_err());
        assert!(require_positive("beta", -1.0).is_err());
        assert!(require_non_negative("lambda", -0.1).is_err());
        assert_eq!(require_positive("beta", 0.5).unwrap(), 0.5);
        let msg = require_positive("beta", -1.0).unwrap_err().to_string();
        assert!(msg.contains("beta") && msg.contains("> 0"), "{msg}");
    }
}
