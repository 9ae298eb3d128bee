//! Training a run: a new one from a configuration, or an existing one resumed from its last
//! checkpoint, with metrics and checkpoints written as it goes.
//!
//! A new run is built completely (action, flow, data, trainer) and its first step evaluated
//! before its directory is created, so a configuration that cannot train leaves nothing
//! behind; the directory is then created whole with the initial model as a step-0
//! checkpoint ([`RunDir::create`]). Checkpoints hold only
//! models whose loss was just evaluated finite: a non-finite loss stops training with
//! [`RunError::Diverged`] and leaves the last checkpoint untouched. A new run is seeded once
//! (`train.seed`, before the flow is built, so its initialisation is reproducible too); a
//! resumed run draws its batches from `seed + step`, a valid continuation but not
//! bit-identical to an uninterrupted run.

use crate::config::{Overrides, RunConfig};
use crate::dir::{CheckpointState, MetricsRow, RunDir, write_json};
use burn::tensor::Device;
use nrg_core::{Action, NrgError};
use nrg_flow::data::load_configurations;
use nrg_flow::train::{StepStats, TrainError, Trainer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Why a run could not be trained.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The loss became non-finite; the last good checkpoint is kept.
    #[error(
        "training diverged at step {step}: {what} is not finite; the last good checkpoint \
         (step {checkpoint}) is kept in {}",
        dir.display()
    )]
    Diverged {
        /// The step that diverged.
        step: usize,
        /// What was not finite.
        what: &'static str,
        /// The step of the checkpoint that is kept.
        checkpoint: usize,
        /// The run directory.
        dir: PathBuf,
    },
    /// The run already has the steps asked for.
    #[error(
        "the run already has {done} steps, and {total} were asked for; resume it with more \
         steps than {done}"
    )]
    Complete {
        /// Steps done.
        done: usize,
        /// Steps asked for.
        total: usize,
    },
    /// Anything else.
    #[error(transparent)]
    Other(#[from] NrgError),
}

/// Where training starts.
#[derive(Clone, Debug)]
pub enum Start {
    /// A new run `runs/NAME` from a configuration (already with its overrides applied);
    /// `replace` allows replacing an existing run of the same name.
    New {
        /// The directory that holds run directories.
        runs: PathBuf,
        /// The configuration.
        config: Box<RunConfig>,
        /// Replace an existing run of the same name.
        replace: bool,
    },
    /// An existing run, continued from its last checkpoint; only `steps` and `lr` of the
    /// overrides apply.
    Resume {
        /// The run directory.
        dir: PathBuf,
        /// Changes to the stored configuration.
        overrides: Overrides,
    },
}

/// Called as training goes (a progress bar, plots).
pub trait TrainObserver {
    /// Training is about to run steps `start .. total`.
    fn started(&mut self, _dir: &RunDir, _start: usize, _total: usize) {}
    /// A step was evaluated (before its update).
    fn step(&mut self, _stats: &StepStats) {}
    /// A checkpoint was written, or training stopped; `rows` are the metrics so far.
    fn checkpoint(&mut self, _dir: &RunDir, _rows: &[MetricsRow]) {}
}

/// An observer that does nothing.
pub struct Silent;

impl TrainObserver for Silent {}

/// What `summary.json` of a run records about its last training session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    /// The run's name.
    pub name: Option<String>,
    /// The action, described.
    pub action: String,
    /// The device it ran on.
    pub device: String,
    /// Steps completed in all sessions.
    pub steps: usize,
    /// Steps of this session.
    pub steps_this_session: usize,
    /// Wall time of this session.
    pub seconds_this_session: f64,
    /// Seconds per step in this session.
    pub seconds_per_step: f64,
    /// Wall time of all sessions.
    pub seconds_total: f64,
    /// The exact `ln Z`, where known.
    pub exact_ln_z: Option<f64>,
    /// The last step's statistics.
    pub last_step: StepStats,
}

/// Trains from `start` to `config.train.steps` on the autodiff `device` (named
/// `device_name` in the summary), writing the run directory as it goes.
pub fn train(
    start: Start,
    device: &Device,
    device_name: &str,
    observer: &mut dyn TrainObserver,
) -> Result<(RunDir, TrainSummary), RunError> {
    let (config, resume_dir) = match &start {
        Start::New { config, .. } => {
            config.check()?;
            ((**config).clone(), None)
        }
        Start::Resume { dir, overrides } => {
            let run = RunDir::open(dir.clone())?;
            let mut config = run.config()?;
            let o = Overrides {
                steps: overrides.steps,
                lr: overrides.lr,
                ..Overrides::default()
            };
            config.apply(&o)?;
            config.check()?;
            (config, Some(run))
        }
    };
    // Seed before building the model, so that its initialisation is reproducible too.
    device.seed(config.train.seed);
    let action: Box<dyn Action> = config.action.build(device)?;
    if config.action.dim.unwrap_or(2) != 2 {
        return Err(NrgError::param("dim", "flows need a 2D lattice (dim = 2)").into());
    }
    let model = config
        .flow
        .build(action.channels(), config.action.l, device)?;
    let data = match &config.data {
        Some(path) => {
            require_data_file(path)?;
            Some(load_configurations(path, device)?)
        }
        None => None,
    };
    let mut trainer = Trainer::new(model, action.as_ref(), data, config.train.clone(), device)?;
    let (place, elapsed0) = match (start, resume_dir) {
        (Start::New { runs, replace, .. }, _) => (Place::New { runs, replace }, 0.0),
        (Start::Resume { .. }, Some(run)) => {
            let (restored, state) = run.restore(trainer)?;
            trainer = restored;
            run.write_config(&config)?;
            device.seed(config.train.seed.wrapping_add(state.step as u64));
            (Place::Existing(run), state.elapsed_s)
        }
        (Start::Resume { .. }, None) => unreachable!("a resumed run was opened above"),
    };
    let session = Session {
        config: &config,
        action: action.as_ref(),
        elapsed0,
        device_name,
    };
    session.run(place, trainer, observer)
}

/// Where the run's files go: an existing directory, or one to create.
enum Place {
    Existing(RunDir),
    New { runs: PathBuf, replace: bool },
}

/// One training session.
struct Session<'a> {
    config: &'a RunConfig,
    action: &'a dyn Action,
    elapsed0: f64,
    device_name: &'a str,
}

/// A clear error, with the way to make one, when the forward-KL data file is missing.
pub fn require_data_file(path: &Path) -> Result<(), NrgError> {
    if !path.is_file() {
        return Err(NrgError::InvalidData(format!(
            "the data file {} does not exist; exact relaxed-Ising configurations are made \
             with `nrg mc ising --L L --beta B --algo wolff --relaxed --out DIR` \
             (DIR/relaxed.npy)",
            path.display()
        )));
    }
    Ok(())
}

impl Session<'_> {
    /// Runs the steps. A new run's directory is created after the first step has been
    /// evaluated and before it is applied, with the initial model as its step-0 checkpoint:
    /// a first step that diverges leaves nothing behind, and parameters that burn initialises
    /// lazily are initialised by the first forward pass, in the same order as without a
    /// checkpoint, so a seeded run repeats to the last bit.
    fn run(
        &self,
        mut place: Place,
        mut trainer: Trainer,
        observer: &mut dyn TrainObserver,
    ) -> Result<(RunDir, TrainSummary), RunError> {
        let config = self.config;
        let start_step = trainer.step_index();
        let total = config.train.steps;
        if start_step >= total {
            return Err(RunError::Complete {
                done: start_step,
                total,
            });
        }
        let mut rows = match &place {
            Place::Existing(dir) => dir.read_metrics(start_step)?,
            Place::New { .. } => Vec::new(),
        };
        let t0 = Instant::now();
        let elapsed = || self.elapsed0 + t0.elapsed().as_secs_f64();
        let mut last: Option<StepStats> = None;
        let log = &config.log;
        while trainer.step_index() < total {
            let step = trainer.step_index();
            let evaluated = trainer.evaluate();
            if let Place::New { runs, replace } = &place {
                // the first step: the directory comes into existence with the initial model
                if let Err(TrainError::Diverged { step, what }) = &evaluated {
                    return Err(NrgError::InvalidData(format!(
                        "training diverged at its first step {step}: {what} is not finite; \
                         no run was written (check the action and the flow, or lower lr)"
                    ))
                    .into());
                }
                let dir = RunDir::create(runs, config, &trainer, *replace)?;
                place = Place::Existing(dir);
            }
            let Place::Existing(dir) = &place else {
                unreachable!("created above")
            };
            if step == start_step {
                observer.started(dir, start_step, total);
            }
            let pending = match evaluated {
                Ok(p) => p,
                Err(TrainError::Diverged { step, what }) => {
                    dir.write_metrics(&rows)?;
                    observer.checkpoint(dir, &rows);
                    let checkpoint = dir.checkpoint_state()?.step;
                    return Err(RunError::Diverged {
                        step,
                        what,
                        checkpoint,
                        dir: dir.path().to_path_buf(),
                    });
                }
                Err(TrainError::Other(e)) => return Err(e.into()),
            };
            let stats = pending.stats;
            if step.is_multiple_of(log.checkpoint_every) && step > start_step {
                let state = CheckpointState {
                    step,
                    elapsed_s: elapsed(),
                };
                dir.write_checkpoint(&trainer, &state)?;
                observer.checkpoint(dir, &rows);
            }
            trainer.update(pending);
            if step.is_multiple_of(log.every) || step + 1 == total {
                rows.push(MetricsRow::new(&stats, elapsed()));
                dir.write_metrics(&rows)?;
            }
            observer.step(&stats);
            last = Some(stats);
        }
        let Place::Existing(dir) = place else {
            unreachable!("at least one step ran")
        };
        let state = CheckpointState {
            step: trainer.step_index(),
            elapsed_s: elapsed(),
        };
        dir.write_checkpoint(&trainer, &state)?;
        dir.write_metrics(&rows)?;
        observer.checkpoint(&dir, &rows);
        let last = last.expect("at least one step ran");
        let steps_run = trainer.step_index() - start_step;
        // This session's share of the total, read at the same instant.
        let secs = state.elapsed_s - self.elapsed0;
        let summary = TrainSummary {
            name: config.name.clone(),
            action: self.action.describe(),
            device: self.device_name.to_string(),
            steps: trainer.step_index(),
            steps_this_session: steps_run,
            seconds_this_session: secs,
            seconds_per_step: secs / steps_run as f64,
            seconds_total: state.elapsed_s,
            exact_ln_z: self.action.exact_ln_z(),
            last_step: last,
        };
        write_json(&dir.summary_path(), &summary)?;
        Ok((dir, summary))
    }
}
