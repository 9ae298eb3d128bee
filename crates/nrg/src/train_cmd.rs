//! `nrg train`: trains a flow from a run configuration with a progress bar, writing
//! `RUNS/NAME/` as [`nrg_run::dir`] describes (configuration, atomic checkpoints,
//! `metrics.csv`, `summary.json`) and `training.png`. The run logic is
//! [`nrg_run::train::train`]; this command parses options, shows progress and plots.
//!
//! `--resume DIR` restores weights and Adam state and continues; its random batches are
//! drawn from `seed + step`, so a resumed run is a valid continuation but not bit-identical
//! to an uninterrupted one.

use crate::device::{DeviceChoice, make};
use crate::plot::{Curve, Marks, Panel, panels_png};
use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use nrg_core::{Estimate, NrgError};
use nrg_flow::image::ImageStepStats;
use nrg_flow::train::StepStats;
use nrg_run::dir::MetricsRow;
use nrg_run::image::{
    ImageMetricsRow, ImageObserver, ImageRunConfig, ImageStart, is_image_config, train_images,
};
use nrg_run::train::{RunError, Start, TrainObserver, train};
use nrg_run::{Overrides, RunConfig, RunDir};
use plotters::style::{BLUE, RED, RGBColor};
use std::path::{Path, PathBuf};

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

/// The progress bar and the training plot.
struct Progress {
    bar: ProgressBar,
}

impl TrainObserver for Progress {
    fn started(&mut self, _dir: &RunDir, start: usize, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(start as u64);
        self.bar.reset_eta();
    }

    fn step(&mut self, stats: &StepStats) {
        let gap = stats
            .relative_gap
            .map(|g| format!(" gap {:.2}%", 100.0 * g))
            .unwrap_or_default();
        self.bar.set_message(format!(
            "loss {:.4} F_q {:.4}±{:.4}{gap} ESS {:.3}",
            stats.loss, stats.free_energy, stats.free_energy_error, stats.ess
        ));
        self.bar.inc(1);
    }

    fn checkpoint(&mut self, dir: &RunDir, rows: &[MetricsRow]) {
        if let Err(e) = write_plot(&dir.plot_path(), rows) {
            self.bar.println(format!(
                "nrg: warning: cannot draw the training plot: {e:#}"
            ));
        }
    }
}

/// Whether the arguments name an image run (a config with a `[data]` table, or a run
/// directory holding one).
fn image_run(args: &TrainArgs) -> bool {
    let path = match (&args.resume, &args.config) {
        (Some(dir), _) => dir.join(RunDir::CONFIG),
        (None, Some(config)) => config.clone(),
        (None, None) => return false,
    };
    std::fs::read_to_string(path).is_ok_and(|t| is_image_config(&t))
}

/// `nrg train …`.
pub fn run(args: TrainArgs, device_choice: DeviceChoice) -> Result<()> {
    if image_run(&args) {
        return run_images(args, device_choice);
    }
    let overrides = Overrides {
        name: args.name.clone(),
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        seed: args.seed,
        data: args.data.clone(),
    };
    let start = match &args.resume {
        Some(dir) => Start::Resume {
            dir: dir.clone(),
            overrides,
        },
        None => {
            let path = args.config.as_ref().expect("clap requires --config");
            // Checked after the command-line options are applied (they may supply `data`).
            let mut config = RunConfig::read(path)?;
            config.apply(&overrides)?;
            config.check()?;
            Start::New {
                runs: args.runs.clone(),
                config: Box::new(config),
                replace: args.force,
            }
        }
    };
    let device = make(device_choice)?.autodiff();
    let name = device_choice.name();
    let mut progress = Progress {
        bar: progress_bar(args.quiet),
    };
    let (dir, summary) = match train(start, &device, name, &mut progress) {
        Ok(done) => done,
        Err(e) => {
            progress.bar.abandon();
            return Err(explain(e));
        }
    };
    progress.bar.finish();
    let last = &summary.last_step;
    let gap = last
        .relative_gap
        .map(|g| format!(", gap to −ln Z {:.3}%", 100.0 * g))
        .unwrap_or_default();
    println!(
        "{}: {} steps in {:.1} s ({:.1} ms/step); last batch F_q = {:.5} ± {:.5}{gap}, ESS {:.3}",
        dir.path().display(),
        summary.steps_this_session,
        summary.seconds_this_session,
        1e3 * summary.seconds_per_step,
        last.free_energy,
        last.free_energy_error,
        last.ess
    );
    Ok(())
}

/// `training.png`: the variational gap where `ln Z` is known (else `F_q`), the ESS, and the
/// forward NLL when training on data.
fn write_plot(path: &Path, rows: &[MetricsRow]) -> Result<()> {
    let exact = rows.iter().any(|r| r.relative_gap.is_some());
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
                marks: Marks::Line,
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
                marks: Marks::Line,
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
            marks: Marks::Line,
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
                marks: Marks::Line,
            }],
            y_range: None,
        });
    }
    panels_png(path, &panels)
}

/// The training progress bar (hidden with `--quiet`).
fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps, ETA {eta}  {msg}",
        )
        .expect("valid template"),
    );
    bar
}

/// Progress of an image run.
struct ImageProgress {
    bar: ProgressBar,
    test: Option<Estimate>,
}

impl ImageObserver for ImageProgress {
    fn started(&mut self, start: usize, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(start as u64);
        self.bar.reset_eta();
    }

    fn step(&mut self, stats: &ImageStepStats) {
        let test = self
            .test
            .map(|t| format!(", test {:.4}±{:.4}", t.value, t.error))
            .unwrap_or_default();
        self.bar
            .set_message(format!("bits/dim: batch {:.4}{test}", stats.bits_per_dim));
        self.bar.inc(1);
    }

    fn tested(&mut self, _step: usize, bpd: &Estimate) {
        self.test = Some(*bpd);
    }
}

/// `nrg train` of an image run (a config with a `[data]` table).
fn run_images(args: TrainArgs, device_choice: DeviceChoice) -> Result<()> {
    if args.data.is_some() {
        return Err(NrgError::param(
            "--data",
            "does not apply to an image run: its images are the config's [data] table",
        )
        .into());
    }
    let start = match &args.resume {
        Some(dir) => ImageStart::Resume {
            dir: dir.clone(),
            steps: args.steps,
            lr: args.lr,
        },
        None => {
            let path = args.config.as_ref().expect("clap requires --config");
            let mut config = ImageRunConfig::load(path)?;
            if let Some(n) = &args.name {
                config.name = Some(n.clone());
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
            config.check()?;
            ImageStart::New {
                runs: args.runs.clone(),
                config: Box::new(config),
                replace: args.force,
            }
        }
    };
    let device = make(device_choice)?.autodiff();
    let name = device_choice.name();
    let mut progress = ImageProgress {
        bar: progress_bar(args.quiet),
        test: None,
    };
    let result = train_images(start, &device, name, &mut progress);
    let (dir, summary) = match result {
        Ok(done) => done,
        Err(e) => {
            progress.bar.abandon();
            return Err(explain(e));
        }
    };
    progress.bar.finish();
    let rows: Vec<ImageMetricsRow> = dir.read_metrics(usize::MAX)?;
    write_image_plot(&dir.plot_path(), &rows)?;
    let t = summary.test_bits_per_dim;
    println!(
        "{}: {} steps ({:.1} ms/step, {} parameters); test bits/dim {:.4} ± {:.4} per {} real \
         pixels on {} held-out images; samples: {}",
        dir.path().display(),
        summary.steps_this_session,
        1e3 * summary.seconds_per_step,
        summary.parameters,
        t.value,
        t.error,
        summary.bits_per,
        summary.test_images,
        summary
            .sample_grids
            .iter()
            .map(|g| g.0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// `training.png` of an image run: bits/dim of the training batches and of the held-out
/// images against the step.
fn write_image_plot(path: &Path, rows: &[ImageMetricsRow]) -> Result<()> {
    let points = |f: &dyn Fn(&ImageMetricsRow) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| f(r).map(|v| (r.step as f64, v)))
            .collect()
    };
    panels_png(
        path,
        &[Panel {
            title: "bits per dimension (per real pixel)",
            x_label: "step",
            curves: vec![
                Curve {
                    label: "training batch",
                    points: points(&|r| Some(r.bits_per_dim)),
                    color: BLUE,
                    marks: Marks::Line,
                },
                Curve {
                    label: "held-out images",
                    points: points(&|r| r.test_bits_per_dim),
                    color: RED,
                    marks: Marks::Dots,
                },
            ],
            y_range: None,
        }],
    )
}

/// A training error with what the user can do about it.
fn explain(e: RunError) -> anyhow::Error {
    match e {
        RunError::Diverged { ref dir, .. } => anyhow::anyhow!(
            "{e}; resume with a lower learning rate: nrg train --resume {} --lr …",
            dir.display()
        ),
        RunError::Complete { .. } => anyhow::anyhow!("{e} (nrg train --resume DIR --steps N)"),
        RunError::Other(e) => e.into(),
    }
}
