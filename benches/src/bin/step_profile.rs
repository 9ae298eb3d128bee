//! `step-profile`: the kernel launches of one reverse-KL training step on wgpu — the φ⁴
//! tutorial flow (batch 256) and NeuralRG's hierarchical Ising L = 16 flow (batch 512), the
//! steps of the `train_step` benches, or at any batch with `--batch N` — counted per
//! kernel, and with `--timed` timed on the device (timestamp queries; a GPU has them,
//! software Vulkan may not).
//!
//! ```text
//! cargo run --release -p nrg-benches --features wgpu --bin step-profile -- --out DIR
//! ```
//!
//! Writes `DIR/launches.md` (the tables), `DIR/launches.json` (every kernel) and
//! `DIR/sequence-<flow>.txt` (every observed launch in order, to tell the phases of a step
//! apart), and prints the tables. Exit status 2 on bad options, without a wgpu adapter, or when `DIR` cannot be
//! written; 1 when a step fails.

use clap::Parser;
use nrg_benches::step_profile::{StepProfileSettings, TrainFlow, profile_train_steps};
use nrg_benches::wgpu_device;
use std::path::PathBuf;
use std::process::ExitCode;

/// The kernel launches of the training steps of the `train_step` benches on wgpu.
#[derive(Parser)]
#[command(version)]
struct Options {
    /// Steps observed (and, before them, steps timed unobserved).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    steps: u32,
    /// Steps run first and not counted (shader compilation, autotune).
    #[arg(long, default_value_t = 3)]
    warmup: u32,
    /// Time every launch on the device (timestamp queries).
    #[arg(long)]
    timed: bool,
    /// Kernels listed per flow; the rest share one row.
    #[arg(long, default_value_t = 15)]
    top: usize,
    /// Folder for `launches.md`, `launches.json` and `sequence-<flow>.txt`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The batch of every flow (default: each bench's, 256 for φ⁴ and 512 for Ising). At a
    /// small batch the device's work shrinks: what is left is mostly the cost per launch
    /// (host, driver, and the device's fixed cost per kernel).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    batch: Option<u32>,
    /// The flows profiled.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "phi4,ising")]
    flow: Vec<TrainFlow>,
}

fn main() -> ExitCode {
    let opts = Options::parse();
    let (dev, adapter) = match wgpu_device() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("step-profile: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = StepProfileSettings {
        steps: opts.steps as usize,
        warmup: opts.warmup as usize,
        timed: opts.timed,
        flows: opts.flow.clone(),
        batch: opts.batch.map(|b| b as usize),
    };
    if let Some(dir) = &opts.out
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("step-profile: cannot create {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    // The report so far after each flow, so that a run cut short keeps what it finished.
    let mut written = Ok(());
    let report = profile_train_steps(
        &settings,
        &dev.autodiff(),
        adapter,
        &mut |phase| eprintln!("step-profile: {phase}"),
        &mut |partial| {
            if let Some(dir) = &opts.out {
                written = partial.write(dir, opts.top);
            }
        },
    );
    if let (Some(dir), Err(e)) = (&opts.out, &written) {
        eprintln!("step-profile: cannot write into {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    match report {
        Ok(report) => {
            print!("{}", report.markdown(opts.top));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("step-profile: {e}");
            ExitCode::FAILURE
        }
    }
}
