//! A serialisable description of an action, as it appears in a run's TOML config:
//!
//! ```toml
//! [action]
//! model = "ising"          # relaxed 2D Ising: L, beta
//! L = 16
//! beta = 0.4406867935
//! ```
//!
//! Models and their parameters (`dim` is 2 unless given; 1 gives a chain):
//!
//! | `model`        | parameters                                         | action                  |
//! | -------------- | -------------------------------------------------- | ----------------------- |
//! | `ising`        | `L`, `beta`                                        | relaxed Ising           |
//! | `phi4`         | `L`, `m2`, `lambda` *or* `kappa`, `lambda_hat`; `n` | real / O(n) φ⁴          |
//! | `complex-phi4` | `L`, `t`, `mu`, `lambda`                           | complex φ⁴ (`n = 2`)    |
//! | `free-field`   | `L`, `m2`; `n`                                     | Gaussian, `λ = 0`       |
//!
//! Unknown keys and parameters that do not belong to the model are errors, so a typo cannot
//! silently fall back to a default.

use crate::{IsingRelaxed, PhiFour};
use burn::tensor::Device;
use nrg_core::{Action, Lattice, NrgError, Result};
use serde::{Deserialize, Serialize};

/// Which lattice theory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// The continuous relaxation of the Ising model.
    Ising,
    /// Real or O(n) φ⁴ in the lattice or the hopping form.
    Phi4,
    /// The complex field in the `(t, μ, λ)` form.
    ComplexPhi4,
    /// The free field.
    FreeField,
}

/// An action and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// The model.
    pub model: ModelKind,
    /// Linear size.
    #[serde(rename = "L")]
    pub l: usize,
    /// Lattice dimension (2 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dim: Option<usize>,
    /// Field components (φ⁴, free field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// Inverse temperature (Ising).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// Mass squared (lattice form, free field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m2: Option<f64>,
    /// Quartic coupling (lattice and complex forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    /// Hopping parameter (hopping form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kappa: Option<f64>,
    /// Quartic coupling (hopping form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_hat: Option<f64>,
    /// Hopping (complex form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<f64>,
    /// μ (complex form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mu: Option<f64>,
}

impl ActionSpec {
    /// The relaxed Ising model on an `l × l` torus.
    pub fn ising(l: usize, beta: f64) -> Self {
        Self {
            beta: Some(beta),
            ..Self::empty(ModelKind::Ising, l)
        }
    }

    /// Real φ⁴ (`n = 1`) in the lattice form.
    pub fn phi4(l: usize, m2: f64, lambda: f64) -> Self {
        Self {
            m2: Some(m2),
            lambda: Some(lambda),
            ..Self::empty(ModelKind::Phi4, l)
        }
    }

    /// The complex field in the `(t, μ, λ)` form.
    pub fn complex_phi4(l: usize, t: f64, mu: f64, lambda: f64) -> Self {
        Self {
            t: Some(t),
            mu: Some(mu),
            lambda: Some(lambda),
            ..Self::empty(ModelKind::ComplexPhi4, l)
        }
    }

    /// The free field (`n = 1`).
    pub fn free_field(l: usize, m2: f64) -> Self {
        Self {
            m2: Some(m2),
            ..Self::empty(ModelKind::FreeField, l)
        }
    }

    fn empty(model: ModelKind, l: usize) -> Self {
        Self {
            model,
            l,
            dim: None,
            n: None,
            beta: None,
            m2: None,
            lambda: None,
            kappa: None,
            lambda_hat: None,
            t: None,
            mu: None,
        }
    }

    /// The lattice.
    pub fn lattice(&self) -> Result<Lattice> {
        Lattice::new(self.dim.unwrap_or(2), self.l)
    }

    /// Field components per site.
    pub fn channels(&self) -> usize {
        match self.model {
            ModelKind::Ising => 1,
            ModelKind::ComplexPhi4 => 2,
            ModelKind::Phi4 | ModelKind::FreeField => self.n.unwrap_or(1),
        }
    }

    /// Checks that exactly the parameters of the model are present.
    fn check_keys(&self) -> Result<()> {
        let given = [
            ("n", self.n.is_some()),
            ("beta", self.beta.is_some()),
            ("m2", self.m2.is_some()),
            ("lambda", self.lambda.is_some()),
            ("kappa", self.kappa.is_some()),
            ("lambda_hat", self.lambda_hat.is_some()),
            ("t", self.t.is_some()),
            ("mu", self.mu.is_some()),
        ];
        let hopping = self.kappa.is_some() || self.lambda_hat.is_some();
        let allowed: &[&str] = match self.model {
            ModelKind::Ising => &["beta"],
            ModelKind::Phi4 if hopping => &["n", "kappa", "lambda_hat"],
            ModelKind::Phi4 => &["n", "m2", "lambda"],
            ModelKind::ComplexPhi4 => &["t", "mu", "lambda"],
            ModelKind::FreeField => &["n", "m2"],
        };
        for (name, present) in given {
            if present && !allowed.contains(&name) {
                return Err(NrgError::param(
                    name,
                    format!("does not belong to model {:?}", self.model),
                ));
            }
        }
        for name in allowed {
            let present = given.iter().any(|(n, p)| n == name && *p);
            if !present && *name != "n" {
                return Err(NrgError::param(
                    *name,
                    format!("missing for model {:?}", self.model),
                ));
            }
        }
        Ok(())
    }

    /// Builds the action on `device`.
    pub fn build(&self, device: &Device) -> Result<Box<dyn Action>> {
        Ok(match self.model {
            ModelKind::Ising => Box::new(self.build_ising(device)?),
            _ => Box::new(self.build_phi4()?),
        })
    }

    /// The φ⁴-family action itself (it also serves as a host action); an error for the Ising
    /// model.
    pub fn build_phi4(&self) -> Result<PhiFour> {
        self.check_keys()?;
        let lattice = self.lattice()?;
        let n = self.n.unwrap_or(1);
        let want = |v: Option<f64>| v.unwrap_or(f64::NAN);
        match self.model {
            ModelKind::Ising => Err(NrgError::param(
                "model",
                "the Ising model is not a φ⁴ action",
            )),
            ModelKind::Phi4 if self.kappa.is_some() => {
                PhiFour::hopping_form(lattice, n, want(self.kappa), want(self.lambda_hat))
            }
            ModelKind::Phi4 => PhiFour::lattice_form(lattice, n, want(self.m2), want(self.lambda)),
            ModelKind::ComplexPhi4 => {
                PhiFour::complex_form(lattice, want(self.t), want(self.mu), want(self.lambda))
            }
            ModelKind::FreeField => PhiFour::free_field(lattice, n, want(self.m2)),
        }
    }

    /// The relaxed Ising action itself (for its Ising-specific estimators); an error for
    /// other models.
    pub fn build_ising(&self, device: &Device) -> Result<IsingRelaxed> {
        if self.model != ModelKind::Ising {
            return Err(NrgError::param(
                "model",
                format!("{:?} is not the Ising model", self.model),
            ));
        }
        self.check_keys()?;
        IsingRelaxed::new(self.lattice()?, self.beta.unwrap_or(f64::NAN), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_builds_and_rejects() {
        let device = Device::flex();
        let spec: ActionSpec =
            toml::from_str("model = \"phi4\"\nL = 8\nm2 = -4.0\nlambda = 8.0\n").unwrap();
        assert_eq!(spec, ActionSpec::phi4(8, -4.0, 8.0));
        let action = spec.build(&device).unwrap();
        assert_eq!((action.channels(), action.lattice().l()), (1, 8));
        let text = toml::to_string(&ActionSpec::complex_phi4(4, 1.0, 2.0, 0.5)).unwrap();
        let back: ActionSpec = toml::from_str(&text).unwrap();
        assert_eq!(back.build(&device).unwrap().channels(), 2);
        assert!(ActionSpec::ising(4, 0.4).build_ising(&device).is_ok());
        let bad = [
            "model = \"phi4\"\nL = 8\nm2 = -4.0\n", // λ missing
            "model = \"ising\"\nL = 8\nbeta = 0.4\nm2 = 1.0\n", // stray m2
            "model = \"complex-phi4\"\nL = 8\nt = 1.0\nmu = 1.0\n", // λ missing
            "model = \"ising\"\nL = 8\nbeta = -0.4\n", // β < 0
            "model = \"free-field\"\nL = 1\nm2 = 1.0\n", // L < 2
            "model = \"phi4\"\nL = 8\nkappa = 0.3\nlambda_hat = 0.02\nm2 = 1.0\n", // mixed
        ];
        for text in bad {
            let spec: ActionSpec = toml::from_str(text).unwrap();
            assert!(spec.build(&device).is_err(), "{text}");
        }
        assert!(ActionSpec::phi4(8, 1.0, 1.0).build_ising(&device).is_err());
        assert!(ActionSpec::ising(8, 0.4).build_phi4().is_err());
        for text in [
            "model = \"ising\"\nL = 8\nbeta = 0.4\nfoo = 1\n",
            "model = \"potts\"\nL = 8\n",
        ] {
            assert!(toml::from_str::<ActionSpec>(text).is_err(), "{text}");
        }
    }
}
