//! A run directory on disk: its layout, its checkpoints and its metrics.
//!
//! ```text
//! RUNS/NAME/
//!   config.toml      the configuration with the overrides applied (RunConfig)
//!   checkpoint/      model.bpk, optim.bpk, state.json (the step) — replaced atomically
//!   metrics.csv      a MetricsRow every `log.every` steps
//!   training.png     written by the program beside the metrics
//!   summary.json     the last training session (TrainSummary)
//!   sample-METHOD/   what `nrg sample` writes (summary.json, samples.npy, …)
//! ```
//!
//! A run directory is created whole: the configuration and a step-0 checkpoint are written
//! into `RUNS/.NAME.partial/`, which is then renamed to `RUNS/NAME/` ([`RunDir::create`]),
//! so every run directory has a configuration and a checkpoint to resume from, and a run
//! that fails before that (a flow that cannot be built, a missing data file) leaves nothing
//! behind. A checkpoint is written into `checkpoint.tmp/`, the previous one is moved to
//! `checkpoint.old/` and the new one renamed into place, so an interruption at any moment
//! leaves a complete checkpoint (`checkpoint/`, else `checkpoint.old/`).

use crate::config::RunConfig;
use burn::module::Module;
use burn::tensor::Device;
use nrg_core::{NrgError, Result};
use nrg_flow::FlowModel;
use nrg_flow::image::ImageTrainer;
use nrg_flow::train::{StepStats, Trainer};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// The I/O error of an operation on `path`.
pub(crate) fn io(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> NrgError {
    let path = format!("{what} {}", path.display());
    move |source| NrgError::Io { path, source }
}

/// Writes `bytes` to `path` atomically (a temporary file in the same directory, renamed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io(dir, "cannot create"))?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(io(&tmp, "cannot write"))?;
    fs::rename(&tmp, path).map_err(io(path, "cannot rename to"))?;
    Ok(())
}

/// Pretty JSON of `value`, written atomically to `path`.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| NrgError::InvalidData(format!("cannot encode {}: {e}", path.display())))?;
    write_atomic(path, format!("{text}\n").as_bytes())
}

/// Reads a JSON file written by [`write_json`].
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(io(path, "cannot read"))?;
    serde_json::from_str(&text)
        .map_err(|e| NrgError::InvalidData(format!("corrupt {}: {e}", path.display())))
}

/// A trainer whose state a checkpoint holds ([`Trainer`], [`ImageTrainer`]).
pub trait Checkpointable {
    /// The next step to run.
    fn step_index(&self) -> usize;
    /// Writes the model and optimiser state into `dir`.
    fn save(&self, dir: &Path) -> Result<()>;
}

impl Checkpointable for Trainer<'_> {
    fn step_index(&self) -> usize {
        Trainer::step_index(self)
    }
    fn save(&self, dir: &Path) -> Result<()> {
        Trainer::save(self, dir)
    }
}

impl Checkpointable for ImageTrainer {
    fn step_index(&self) -> usize {
        ImageTrainer::step_index(self)
    }
    fn save(&self, dir: &Path) -> Result<()> {
        ImageTrainer::save(self, dir)
    }
}

/// What `checkpoint/state.json` records.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Steps completed; the next step to run.
    pub step: usize,
    /// Wall-clock seconds of training so far.
    pub elapsed_s: f64,
}

/// A row of `metrics.csv`.
pub trait MetricsRecord: Serialize + for<'de> Deserialize<'de> {
    /// The step it records.
    fn step(&self) -> usize;
}

impl MetricsRecord for MetricsRow {
    fn step(&self) -> usize {
        self.step
    }
}

/// One row of `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// The step.
    pub step: usize,
    /// The loss that was minimised.
    pub loss: f64,
    /// `F_q` of the batch.
    pub free_energy: f64,
    /// Its error.
    pub free_energy_error: f64,
    /// `F_q + ln Z`, where `ln Z` is known.
    pub gap: Option<f64>,
    /// `(F_q + ln Z)/|ln Z|`.
    pub relative_gap: Option<f64>,
    /// ESS per sample of the batch.
    pub ess: f64,
    /// Forward NLL on the data batch.
    pub nll: Option<f64>,
    /// Forward KL on the data batch, where `ln Z` is known.
    pub forward_kl: Option<f64>,
    /// Learning rate.
    pub lr: f64,
    /// Tempering exponent of the target.
    pub gamma: f64,
    /// Seconds since the run began (all sessions).
    pub elapsed_s: f64,
}

impl MetricsRow {
    /// The row of a step's statistics at `elapsed_s`.
    pub fn new(s: &StepStats, elapsed_s: f64) -> Self {
        Self {
            step: s.step,
            loss: s.loss,
            free_energy: s.free_energy,
            free_energy_error: s.free_energy_error,
            gap: s.gap,
            relative_gap: s.relative_gap,
            ess: s.ess,
            nll: s.nll,
            forward_kl: s.forward_kl,
            lr: s.lr,
            gamma: s.gamma,
            elapsed_s,
        }
    }
}

/// A run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The configuration file's name.
    pub const CONFIG: &'static str = "config.toml";

    /// An existing run directory: it must hold a configuration and a checkpoint.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let dir = Self { path: path.into() };
        if !dir.config_path().is_file() {
            return Err(NrgError::InvalidData(format!(
                "{} is not a run directory (no {})",
                dir.path.display(),
                Self::CONFIG
            )));
        }
        if dir.checkpoint().is_none() {
            return Err(NrgError::InvalidData(format!(
                "{} has no checkpoint: train it first",
                dir.path.display()
            )));
        }
        Ok(dir)
    }

    /// Creates `runs/NAME` (`NAME` from the configuration) whole: `config.toml` and the
    /// trainer's state as a step-0 checkpoint, written in `runs/.NAME.partial/` and renamed
    /// into place. An existing run of that name is an error unless `replace` is set.
    pub fn create(
        runs: &Path,
        config: &RunConfig,
        trainer: &dyn Checkpointable,
        replace: bool,
    ) -> Result<Self> {
        let name = config.name.clone().unwrap_or_else(|| "run".into());
        Self::create_with(runs, &name, &config.to_toml()?, trainer, replace)
    }

    /// [`RunDir::create`] for a configuration given as its name and TOML text.
    pub fn create_with(
        runs: &Path,
        name: &str,
        config_toml: &str,
        trainer: &dyn Checkpointable,
        replace: bool,
    ) -> Result<Self> {
        let dir = Self {
            path: runs.join(name),
        };
        if dir.path.exists() && !replace {
            return Err(NrgError::InvalidData(format!(
                "run {} exists: continue it with `--resume {}`, or replace it (--force)",
                dir.path.display(),
                dir.path.display()
            )));
        }
        let partial = Self {
            path: runs.join(format!(".{name}.partial")),
        };
        if partial.path.exists() {
            fs::remove_dir_all(&partial.path).map_err(io(&partial.path, "cannot remove"))?;
        }
        fs::create_dir_all(&partial.path).map_err(io(&partial.path, "cannot create"))?;
        let written = write_atomic(&partial.config_path(), config_toml.as_bytes()).and_then(|()| {
            let state = CheckpointState {
                step: trainer.step_index(),
                elapsed_s: 0.0,
            };
            partial.write_checkpoint(trainer, &state)
        });
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&partial.path);
            return Err(e);
        }
        if dir.path.exists() {
            fs::remove_dir_all(&dir.path).map_err(io(&dir.path, "cannot remove"))?;
        }
        fs::rename(&partial.path, &dir.path).map_err(io(&dir.path, "cannot create"))?;
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.path.join(Self::CONFIG)
    }

    /// `metrics.csv`.
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.csv")
    }

    /// `summary.json` of the last training session.
    pub fn summary_path(&self) -> PathBuf {
        self.path.join("summary.json")
    }

    /// `training.png`.
    pub fn plot_path(&self) -> PathBuf {
        self.path.join("training.png")
    }

    /// Where a sampler's results go by default: `sample-METHOD/`.
    pub fn sample_dir(&self, method: &str) -> PathBuf {
        self.path.join(format!("sample-{method}"))
    }

    /// The configuration, checked.
    pub fn config(&self) -> Result<RunConfig> {
        if self.is_image_run() {
            return Err(NrgError::InvalidData(format!(
                "{} is an image run (its config has a [data] table, no action): analyse it \
                 with `nrg holo-images`; sampling and `nrg holo` need a lattice run",
                self.path.display()
            )));
        }
        RunConfig::load(&self.config_path())
    }

    /// Replaces the configuration (atomically).
    pub fn write_config(&self, config: &RunConfig) -> Result<()> {
        config.check()?;
        write_atomic(&self.config_path(), config.to_toml()?.as_bytes())
    }

    /// The newest complete checkpoint.
    pub fn checkpoint(&self) -> Option<PathBuf> {
        ["checkpoint", "checkpoint.old"]
            .iter()
            .map(|n| self.path.join(n))
            .find(|p| p.join("state.json").is_file())
    }

    /// The state of the newest checkpoint.
    pub fn checkpoint_state(&self) -> Result<CheckpointState> {
        let ckpt = self.checkpoint().ok_or_else(|| {
            NrgError::InvalidData(format!("{} has no checkpoint", self.path.display()))
        })?;
        read_json(&ckpt.join("state.json"))
    }

    /// Writes the trainer's model and optimiser state as the new checkpoint, atomically.
    pub fn write_checkpoint(
        &self,
        trainer: &dyn Checkpointable,
        state: &CheckpointState,
    ) -> Result<()> {
        let tmp = self.path.join("checkpoint.tmp");
        let cur = self.path.join("checkpoint");
        let old = self.path.join("checkpoint.old");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp, "cannot remove"))?;
        }
        fs::create_dir_all(&tmp).map_err(io(&tmp, "cannot create"))?;
        trainer.save(&tmp)?;
        write_json(&tmp.join("state.json"), state)?;
        if cur.exists() {
            if old.exists() {
                fs::remove_dir_all(&old).map_err(io(&old, "cannot remove"))?;
            }
            fs::rename(&cur, &old).map_err(io(&old, "cannot move the checkpoint to"))?;
        }
        fs::rename(&tmp, &cur).map_err(io(&cur, "cannot move the new checkpoint to"))?;
        if old.exists() {
            fs::remove_dir_all(&old).map_err(io(&old, "cannot remove"))?;
        }
        Ok(())
    }

    /// Restores the trainer's state from the newest checkpoint; returns that state.
    pub fn restore<'a>(&self, trainer: Trainer<'a>) -> Result<(Trainer<'a>, CheckpointState)> {
        self.restore_with(trainer, |t, ckpt, step| t.load(ckpt, step))
    }

    /// Restores any trainer's state from the newest checkpoint with `load(trainer, dir,
    /// step)`; returns it and the checkpoint's state.
    pub fn restore_with<T>(
        &self,
        trainer: T,
        load: impl FnOnce(T, &Path, usize) -> Result<T>,
    ) -> Result<(T, CheckpointState)> {
        let ckpt = self.checkpoint().ok_or_else(|| {
            NrgError::InvalidData(format!("{} has no checkpoint", self.path.display()))
        })?;
        let state: CheckpointState = read_json(&ckpt.join("state.json"))?;
        Ok((load(trainer, &ckpt, state.step)?, state))
    }

    /// The configuration and the trained flow of the newest checkpoint, on `device`.
    pub fn load_model(&self, device: &Device) -> Result<(RunConfig, FlowModel)> {
        let config = self.config()?;
        let ckpt = self.checkpoint().ok_or_else(|| {
            NrgError::InvalidData(format!(
                "{} has no checkpoint: train it first",
                self.path.display()
            ))
        })?;
        let model = config
            .flow
            .build(config.action.channels(), config.action.l, device)?;
        let model = Self::load_weights(&ckpt, model)?;
        Ok((config, model))
    }

    /// `model` (built as the run's configuration says) with the weights of the newest
    /// checkpoint.
    pub fn load_checkpoint_weights(&self, model: FlowModel) -> Result<FlowModel> {
        let ckpt = self.checkpoint().ok_or_else(|| {
            NrgError::InvalidData(format!(
                "{} has no checkpoint: train it first",
                self.path.display()
            ))
        })?;
        Self::load_weights(&ckpt, model)
    }

    fn load_weights(ckpt: &Path, model: FlowModel) -> Result<FlowModel> {
        let file = ckpt.join("model.bpk");
        model
            .try_load_file(&file)
            .map_err(|e| nrg_flow::train::checkpoint_error(&file.display().to_string(), e))
    }

    /// The rows of `metrics.csv` before `step` (all of them for `usize::MAX`).
    pub fn read_metrics<T: MetricsRecord>(&self, before: usize) -> Result<Vec<T>> {
        let path = self.metrics_path();
        if !path.exists() {
            return Ok(Vec::new());
        }
        let corrupt =
            |e: csv::Error| NrgError::InvalidData(format!("corrupt {}: {e}", path.display()));
        let mut reader = csv::Reader::from_path(&path).map_err(corrupt)?;
        let mut rows = Vec::new();
        for row in reader.deserialize::<T>() {
            let row = row.map_err(corrupt)?;
            if row.step() < before {
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// Replaces `metrics.csv` with `rows` (atomically).
    pub fn write_metrics<T: MetricsRecord>(&self, rows: &[T]) -> Result<()> {
        let path = self.metrics_path();
        let bad =
            |e: String| NrgError::InvalidData(format!("cannot write {}: {e}", path.display()));
        let mut w = csv::Writer::from_writer(Vec::new());
        for row in rows {
            w.serialize(row).map_err(|e| bad(e.to_string()))?;
        }
        let bytes = if rows.is_empty() {
            Vec::new()
        } else {
            w.into_inner().map_err(|e| bad(e.to_string()))?
        };
        write_atomic(&path, &bytes)
    }
}
