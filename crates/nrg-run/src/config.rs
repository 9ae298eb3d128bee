//! A training run's configuration, one TOML file (`configs/*.toml`, copied to
//! `runs/NAME/config.toml` with the command-line overrides applied):
//!
//! ```toml
//! name = "ising-l16-betac"        # the run directory runs/NAME (default: the file's stem)
//! data = "configs.npy"            # optional: configurations for forward KL
//!
//! [action]                        # nrg_lattice::ActionSpec
//! model = "ising"
//! L = 16
//! beta = 0.44068679350977147
//!
//! [flow]                          # nrg_flow::FlowSpec
//! kind = "hierarchical"
//!
//! [train]                         # nrg_flow::train::TrainSettings
//! steps = 2000
//! batch = 512
//!
//! [log]
//! every = 10                      # a metrics.csv row every N steps
//! checkpoint_every = 100          # an atomic checkpoint every N steps
//! ```

use nrg_core::{NrgError, Result};
use nrg_flow::FlowSpec;
use nrg_flow::train::{TrainSettings, TrainingData};
use nrg_lattice::ActionSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Checks that a run name is a plain directory name (no separators, not `.` or `..`).
pub(crate) fn check_run_name(name: Option<&str>) -> Result<()> {
    if let Some(name) = name
        && (name.is_empty() || name.contains(['/', '\\']) || name == "." || name == "..")
    {
        return Err(NrgError::param(
            "name",
            format!("{name:?} is not a plain directory name"),
        ));
    }
    Ok(())
}

/// How often to log and checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// Steps between rows of `metrics.csv`.
    pub every: usize,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            every: 10,
            checkpoint_every: 100,
        }
    }
}

/// Changes to a configuration given beside it (e.g. on the command line); `None` keeps the
/// configuration's value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// Run name.
    pub name: Option<String>,
    /// Total optimisation steps.
    pub steps: Option<usize>,
    /// Samples per step.
    pub batch: Option<usize>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Random seed.
    pub seed: Option<u64>,
    /// Training configurations for forward KL.
    pub data: Option<PathBuf>,
}

/// Everything that defines a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Name of the run directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Training configurations (`.npy`, `[N, C, L, L]` or `[N, L, L]`), relative to the
    /// config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    /// The action.
    pub action: ActionSpec,
    /// The flow.
    #[serde(default)]
    pub flow: FlowSpec,
    /// The optimisation.
    #[serde(default)]
    pub train: TrainSettings,
    /// Logging and checkpoints.
    #[serde(default)]
    pub log: LogSettings,
}

impl RunConfig {
    /// Reads and checks a configuration file; a relative `data` path is resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let config = Self::read(path)?;
        config.check()?;
        Ok(config)
    }

    /// Parses and checks a configuration from TOML text (no file: `data` stays as written).
    pub fn parse(text: &str) -> Result<Self> {
        let config: RunConfig =
            toml::from_str(text).map_err(|e| NrgError::InvalidData(format!("config: {e}")))?;
        config.check()?;
        Ok(config)
    }

    /// Reads a configuration file without [`RunConfig::check`]ing it, for a caller that
    /// applies command-line options first (they may supply what the check requires, e.g.
    /// `--data` for a config with `forward_weight`).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| NrgError::Io {
            path: format!("cannot read config {}", path.display()),
            source: e,
        })?;
        let mut config: RunConfig = toml::from_str(&text)
            .map_err(|e| NrgError::InvalidData(format!("config {}: {e}", path.display())))?;
        if let Some(d) = &config.data {
            let base = path.parent().unwrap_or(Path::new("."));
            config.set_data(&base.join(d))?;
        }
        if config.name.is_none() {
            config.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(config)
    }

    /// Sets the `data` path, made absolute (against the working directory) so that it
    /// survives the copy of the configuration into the run directory.
    pub fn set_data(&mut self, path: &Path) -> Result<()> {
        let abs = std::path::absolute(path)
            .map_err(|e| NrgError::param("data", format!("{}: {e}", path.display())))?;
        self.data = Some(abs);
        Ok(())
    }

    /// Checks what can be checked without building tensors.
    pub fn check(&self) -> Result<()> {
        check_run_name(self.name.as_deref())?;
        if self.log.every == 0 || self.log.checkpoint_every == 0 {
            return Err(NrgError::param(
                "log",
                "`every` and `checkpoint_every` must be at least 1",
            ));
        }
        self.action.lattice()?;
        self.train.validate(TrainingData::of(&self.data))?;
        Ok(())
    }

    /// Applies command-line style overrides (a new learning rate also lowers `lr_min` to it
    /// when it is below). Call [`RunConfig::check`] afterwards.
    pub fn apply(&mut self, o: &Overrides) -> Result<()> {
        if let Some(name) = &o.name {
            self.name = Some(name.clone());
        }
        if let Some(v) = o.steps {
            self.train.steps = v;
        }
        if let Some(v) = o.batch {
            self.train.batch = v;
        }
        if let Some(v) = o.lr {
            self.train.lr = v;
            self.train.lr_min = self.train.lr_min.min(v);
        }
        if let Some(v) = o.seed {
            self.train.seed = v;
        }
        if let Some(v) = &o.data {
            self.set_data(v)?;
        }
        Ok(())
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| NrgError::InvalidData(format!("config: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_parse_and_check() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if crate::image::is_image_config(&text) {
                    // image runs have their own configuration
                    let config = crate::image::ImageRunConfig::load(&path).unwrap();
                    let back: crate::image::ImageRunConfig =
                        toml::from_str(&config.to_toml().unwrap()).unwrap();
                    assert_eq!(back, config, "{}", path.display());
                    seen += 1;
                    continue;
                }
                let config = RunConfig::load(&path).unwrap();
                let back: RunConfig = toml::from_str(&config.to_toml().unwrap()).unwrap();
                assert_eq!(back, config, "{}", path.display());
                seen += 1;
            }
        }
        assert!(
            seen >= 3,
            "expected the shipped configs in {}",
            dir.display()
        );
    }

    #[test]
    fn rejects_typos_and_bad_values() {
        let base = "[action]\nmodel = \"ising\"\nL = 4\nbeta = 0.4\n";
        assert!(toml::from_str::<RunConfig>(base).is_ok());
        for bad in [
            format!("{base}[train]\nstepz = 3\n"),
            format!("{base}[flow]\nkind = \"deep\"\n"),
            format!("bogus = 1\n{base}"),
        ] {
            assert!(toml::from_str::<RunConfig>(&bad).is_err(), "{bad}");
        }
        for bad in [
            format!("{base}[train]\nlr = -1.0\n"),
            format!("{base}[log]\nevery = 0\n"),
            format!("name = \"a/b\"\n{base}"),
            format!("{base}[train]\nforward_weight = 0.5\n"),
        ] {
            let config: RunConfig = toml::from_str(&bad).unwrap();
            assert!(config.check().is_err(), "{bad}");
        }
    }
}
