//! `nrg train`: trains a flow from a run configuration ([`crate::run_config`]) with a
//! progress bar, writing `RUNS/NAME/`:
//!
//! ```text
//! config.toml      the configuration with the command-line overrides applied
//! checkpoint/      model.bpk, optim.bpk, state.json (step) — replaced atomically
//! metrics.csv      a row every `log.every` steps: loss, F_q ± err, gap to −ln Z, ESS, …
//! training.png     F_q (or its gap to −ln Z) and the ESS against the step
//! summary.json     the last step's statistics and the timing
//! ```
//!
//! A checkpoint is written into `checkpoint.tmp/`, the previous one is moved to
//! `checkpoint.old/`, and the new one renamed into place, so an interruption at any moment
//! leaves a complete checkpoint (`checkpoint/`, else `checkpoint.old/`). Checkpoints hold only
//! models whose loss was just evaluated finite; a non-finite loss stops training with a
//! message and leaves the last checkpoint untouched. `--resume DIR` restores weights and
//! Adam state and continues; its random batches are drawn from `seed + step`, so a resumed
//! run is a valid continuation but not bit-identical to an uninterrupted one.

use crate::device::{DeviceChoice, make};
use crate::output::{write_atomic, write_json};
use crate::plot::{Curve, Panel, panels_png};
use crate::run_config::RunConfig;
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use nrg_core::Action;
use nrg_flow::data::load_configurations;
use nrg_flow::train::{StepStats, TrainError, Trainer};
use plotters::style::{BLUE, RED, RGBColor};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `nrg train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Run configuration (TOML); see configs/ for examples.
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with_all = ["config", "name", "batch", "seed", "data", "force"])]
    resume: Option<PathBuf>,
    /// Directory that holds the run directories.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Run name (default: the config's `name`, else its file name).
    #[arg(long)]
    name: Option<String>,
    /// Total optimisation steps (with --resume: extend the run to this many).
    #[arg(long)]
    steps: Option<usize>,
    /// Samples per step.
    #[arg(long)]
    batch: Option<usize>,
    /// Learning rate.
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Random seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Training configurations (.npy) for forward KL.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Replace an existing run of the same name.
    #[arg(long)]
    force: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// One row of `metrics.csv`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct MetricsRow {
    step: usize,
    loss: f64,
    free_energy: f64,
    free_energy_error: f64,
    gap: Option<f64>,
    relative_gap: Option<f64>,
    ess: f64,
    nll: Option<f64>,
    forward_kl: Option<f64>,
    lr: f64,
    gamma: f64,
    elapsed_s: f64,
}

impl MetricsRow {
    fn new(s: &StepStats, elapsed_s: f64) -> Self {
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

/// What `checkpoint/state.json` records.
#[derive(Serialize, Deserialize)]
struct CheckpointState {
    /// Steps completed; the next step to run.
    step: usize,
    /// Wall-clock seconds of training so far.
    elapsed_s: f64,
}

/// `nrg train …`.
pub fn run(args: TrainArgs, device_choice: DeviceChoice) -> Result<()> {
    let (config, dir, resume) = prepare(&args)?;
    let device = make(device_choice)?.autodiff();
    let name = format!("{device_choice:?}").to_lowercase();
    train(&config, &dir, resume, &device, &name, args.quiet)
}

/// Resolves the configuration and the run directory; creates the directory and writes
/// `config.toml` for a new run.
fn prepare(args: &TrainArgs) -> Result<(RunConfig, PathBuf, bool)> {
    if let Some(dir) = &args.resume {
        let path = dir.join("config.toml");
        let mut config = RunConfig::load(&path)
            .with_context(|| format!("{} is not a run directory", dir.display()))?;
        if find_checkpoint(dir).is_none() {
            bail!("{} has no checkpoint to resume from", dir.display());
        }
        if let Some(steps) = args.steps {
            config.train.steps = steps;
        }
        if let Some(lr) = args.lr {
            config.train.lr = lr;
            config.train.lr_min = config.train.lr_min.min(lr);
        }
        config.check()?;
        write_atomic(&path, config.to_toml()?.as_bytes())?;
        return Ok((config, dir.clone(), true));
    }
    let path = args.config.as_ref().expect("clap requires --config");
    // Checked after the command-line options are applied (they may supply `data`).
    let mut config = RunConfig::read(path)?;
    if let Some(name) = &args.name {
        config.name = Some(name.clone());
    }
    if let Some(v) = args.steps {
        config.train.steps = v;
    }
    if let Some(v) = args.batch {
        config.train.batch = v;
    }
    if let Some(v) = args.lr {
        config.train.lr = v;
        config.train.lr_min = config.train.lr_min.min(v);
    }
    if let Some(v) = args.seed {
        config.train.seed = v;
    }
    if let Some(v) = &args.data {
        config.set_data(v)?;
    }
    config.check()?;
    // Before the run directory exists, so a mistyped path leaves nothing behind.
    if let Some(data) = &config.data {
        require_data_file(data)?;
    }
    let name = config.name.clone().unwrap_or_else(|| "run".into());
    let dir = args.runs.join(&name);
    if dir.join("config.toml").exists() {
        if !args.force {
            bail!(
                "run {} exists: continue it with `nrg train --resume {}`, or pass --force to replace it",
                dir.display(),
                dir.display()
            );
        }
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(&dir.join("config.toml"), config.to_toml()?.as_bytes())?;
    Ok((config, dir, false))
}

/// A clear error, with the way to make one, when the forward-KL data file is missing.
fn require_data_file(path: &Path) -> Result<()> {
    if !path.is_file() {
        bail!(
            "the data file {} does not exist; exact relaxed-Ising configurations are made \
             with `nrg mc ising --L L --beta B --algo wolff --relaxed --out DIR` \
             (DIR/relaxed.npy)",
            path.display()
        );
    }
    Ok(())
}

/// The newest complete checkpoint in a run directory.
pub fn find_checkpoint(dir: &Path) -> Option<PathBuf> {
    ["checkpoint", "checkpoint.old"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.join("state.json").is_file())
}

fn read_state(ckpt: &Path) -> Result<CheckpointState> {
    let path = ckpt.join("state.json");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("corrupt checkpoint {}", path.display()))
}

fn write_checkpoint(dir: &Path, trainer: &Trainer, state: &CheckpointState) -> Result<()> {
    let tmp = dir.join("checkpoint.tmp");
    let cur = dir.join("checkpoint");
    let old = dir.join("checkpoint.old");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    trainer.save(&tmp)?;
    fs::write(tmp.join("state.json"), serde_json::to_string_pretty(state)?)?;
    if cur.exists() {
        if old.exists() {
            fs::remove_dir_all(&old)?;
        }
        fs::rename(&cur, &old)?;
    }
    fs::rename(&tmp, &cur).context("cannot move the new checkpoint into place")?;
    if old.exists() {
        fs::remove_dir_all(&old)?;
    }
    Ok(())
}

fn read_metrics(path: &Path, before: usize) -> Result<Vec<MetricsRow>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for row in reader.deserialize::<MetricsRow>() {
        let row = row.with_context(|| format!("corrupt {}", path.display()))?;
        if row.step < before {
            rows.push(row);
        }
    }
    Ok(rows)
}

fn write_metrics(path: &Path, rows: &[MetricsRow]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.serialize(row)?;
    }
    if rows.is_empty() {
        return write_atomic(path, b"");
    }
    write_atomic(path, &w.into_inner().context("csv buffer")?)
}

fn write_plot(path: &Path, rows: &[MetricsRow], exact: bool) -> Result<()> {
    let steps = |f: &dyn Fn(&MetricsRow) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| f(r).map(|v| (r.step as f64, v)))
            .collect()
    };
    let first = if exact {
        Panel {
            title: "variational gap (F_q + ln Z) / |ln Z|, log10",
            x_label: "step",
            curves: vec![Curve {
                label: "log10 relative gap",
                points: steps(&|r| r.relative_gap.map(|g| g.max(1e-12).log10())),
                color: BLUE,
            }],
            y_range: None,
        }
    } else {
        Panel {
            title: "variational free energy F_q",
            x_label: "step",
            curves: vec![Curve {
                label: "F_q",
                points: steps(&|r| Some(r.free_energy)),
                color: BLUE,
            }],
            y_range: None,
        }
    };
    let second = Panel {
        title: "effective sample size per sample",
        x_label: "step",
        curves: vec![Curve {
            label: "ESS",
            points: steps(&|r| Some(r.ess)),
            color: RED,
        }],
        y_range: Some((0.0, 1.0)),
    };
    let mut panels = vec![first, second];
    if rows.iter().any(|r| r.nll.is_some()) {
        panels.push(Panel {
            title: "forward NLL on the data",
            x_label: "step",
            curves: vec![Curve {
                label: "NLL",
                points: steps(&|r| r.nll),
                color: RGBColor(0, 128, 0),
            }],
            y_range: None,
        });
    }
    panels_png(path, &panels)
}

/// Trains the run in `dir` (fresh or resumed) on the autodiff `device`.
pub fn train(
    config: &RunConfig,
    dir: &Path,
    resume: bool,
    device: &Device,
    device_name: &str,
    quiet: bool,
) -> Result<()> {
    // Seed before building the model, so that its initialisation is reproducible too.
    device.seed(config.train.seed);
    let action: Box<dyn Action> = config.action.build(device)?;
    let channels = action.channels();
    let l = config.action.l;
    if config.action.dim.unwrap_or(2) != 2 {
        bail!("flows need a 2D lattice (dim = 2)");
    }
    let model = config.flow.build(channels, l, device)?;
    let data = match &config.data {
        Some(path) => {
            require_data_file(path)?;
            Some(load_configurations(path, device)?)
        }
        None => None,
    };
    let settings = config.train.clone();
    let mut trainer = Trainer::new(model, action.as_ref(), data, settings.clone(), device)?;
    let mut elapsed0 = 0.0;
    if resume {
        let ckpt = find_checkpoint(dir).context("no checkpoint")?;
        let state = read_state(&ckpt)?;
        trainer = trainer.load(&ckpt, state.step)?;
        elapsed0 = state.elapsed_s;
        device.seed(settings.seed.wrapping_add(state.step as u64));
    }
    let start_step = trainer.step_index();
    let metrics_path = dir.join("metrics.csv");
    let mut rows = if resume {
        read_metrics(&metrics_path, start_step)?
    } else {
        Vec::new()
    };
    let exact = action.exact_ln_z().is_some();
    let total = settings.steps;
    if start_step >= total {
        bail!(
            "the run already has {start_step} of {total} steps; extend it with --steps N (N > {start_step})"
        );
    }

    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps, ETA {eta}  {msg}",
        )
        .expect("valid template"),
    );
    bar.set_position(start_step as u64);
    bar.reset_eta();

    let t0 = Instant::now();
    let elapsed = || elapsed0 + t0.elapsed().as_secs_f64();
    let mut last: Option<StepStats> = None;
    let log = &config.log;
    while trainer.step_index() < total {
        let step = trainer.step_index();
        let pending = match trainer.evaluate() {
            Ok(p) => p,
            Err(TrainError::Diverged { step, what }) => {
                bar.abandon();
                write_metrics(&metrics_path, &rows)?;
                let _ = write_plot(&dir.join("training.png"), &rows, exact);
                let d = dir.display();
                match find_checkpoint(dir).and_then(|c| read_state(&c).ok()) {
                    Some(s) => bail!(
                        "training diverged at step {step}: {what} is not finite; the last good \
                         checkpoint (step {}) is kept in {d}; resume with a lower learning rate: \
                         nrg train --resume {d} --lr …",
                        s.step
                    ),
                    None => bail!(
                        "training diverged at step {step}: {what} is not finite, before the first \
                         checkpoint; start again with a lower learning rate (--lr …, --force)"
                    ),
                }
            }
            Err(TrainError::Other(e)) => return Err(e.into()),
        };
        let stats = pending.stats;
        if step % log.checkpoint_every == 0 && step > start_step {
            let state = CheckpointState {
                step,
                elapsed_s: elapsed(),
            };
            write_checkpoint(dir, &trainer, &state)?;
            write_plot(&dir.join("training.png"), &rows, exact)?;
        }
        trainer.update(pending);
        if step % log.every == 0 || step + 1 == total {
            rows.push(MetricsRow::new(&stats, elapsed()));
            write_metrics(&metrics_path, &rows)?;
        }
        let gap = stats
            .relative_gap
            .map(|g| format!(" gap {:.2}%", 100.0 * g))
            .unwrap_or_default();
        bar.set_message(format!(
            "loss {:.4} F_q {:.4}±{:.4}{gap} ESS {:.3}",
            stats.loss, stats.free_energy, stats.free_energy_error, stats.ess
        ));
        bar.inc(1);
        last = Some(stats);
    }
    bar.finish();
    let state = CheckpointState {
        step: trainer.step_index(),
        elapsed_s: elapsed(),
    };
    write_checkpoint(dir, &trainer, &state)?;
    write_metrics(&metrics_path, &rows)?;
    write_plot(&dir.join("training.png"), &rows, exact)?;
    let last = last.expect("at least one step ran");
    let steps_run = trainer.step_index() - start_step;
    let secs = t0.elapsed().as_secs_f64();
    let summary = json!({
        "name": config.name,
        "action": action.describe(),
        "device": device_name,
        "steps": trainer.step_index(),
        "steps_this_session": steps_run,
        "seconds_this_session": secs,
        "seconds_per_step": secs / steps_run as f64,
        "seconds_total": state.elapsed_s,
        "exact_ln_z": action.exact_ln_z(),
        "last_step": last,
    });
    write_json(&dir.join("summary.json"), &summary)?;
    let gap = last
        .relative_gap
        .map(|g| format!(", gap to −ln Z {:.3}%", 100.0 * g))
        .unwrap_or_default();
    println!(
        "{}: {} steps in {:.1} s ({:.1} ms/step); last batch F_q = {:.5} ± {:.5}{gap}, ESS {:.3}",
        dir.display(),
        steps_run,
        secs,
        1e3 * secs / steps_run as f64,
        last.free_energy,
        last.free_energy_error,
        last.ess
    );
    Ok(())
}
