//! `nrg rbm flow`: the RBM flow study of Iso, Shiba & Yokoo (arXiv:1801.07172) on the 2D
//! Ising model ([`nrg_rg::rbm`], [`nrg_rg::rbm_flow`]), writing to `OUT`:
//!
//! ```text
//! summary.json      settings, training set, the reference curves, per start temperature
//!                   the flow (energy, |m|, temperature read) after every step
//! flow.csv          start, step, energy ± σ, |m| ± σ, temperature read
//! rbm_flow.png      the temperature read against the step, one curve per start, T_c marked
//! receptive.png     the weights of the first 16 hidden units over the lattice
//! ```
//!
//! Wolff configurations at every temperature of the grid give the reference curves; the
//! machine trains on those of `--train all` temperatures, or only those below or above
//! `T_c` (the control); the flow starts from the configurations of every grid temperature.

use crate::plot::{Curve, Marks, Panel, panels_png};
use anyhow::{Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::ProgressBar;
use nrg_core::Lattice;
use nrg_images::ImageSet;
use nrg_images::grid::{GridOptions, write_grid};
use nrg_lattice::IsingSpins;
use nrg_rg::rbm::{Contrastive, Rbm, RbmTraining, train};
use nrg_rg::rbm_flow::{FlowPoint, ReferenceCurves, rbm_flow};
use nrg_run::dir::{write_atomic, write_json};
use nrg_samplers::baseline::{IsingWolff, SpinStart};
use nrg_samplers::run::{IsingSimulation, RunConfig, run_observed};
use plotters::style::{BLACK, RGBColor};
use rand::SeedableRng;
use serde::Serialize;
use std::path::PathBuf;

/// Arguments of `nrg rbm`.
#[derive(Args, Debug)]
pub struct RbmArgs {
    #[command(subcommand)]
    command: RbmCommand,
}

#[derive(Subcommand, Debug)]
enum RbmCommand {
    /// Train an RBM on Ising configurations of many temperatures and iterate v → h → v.
    Flow(FlowArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum TrainRange {
    /// Every temperature of the grid.
    All,
    /// Only temperatures below T_c (the ordered phase).
    Below,
    /// Only temperatures above T_c (the disordered phase).
    Above,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// Contrastive divergence.
    Cd,
    /// Persistent contrastive divergence.
    Pcd,
}

/// Arguments of `nrg rbm flow`.
#[derive(Args, Debug)]
struct FlowArgs {
    /// Lattice side.
    #[arg(long = "L", default_value_t = 8)]
    l: usize,
    /// Lowest temperature of the grid.
    #[arg(long, default_value_t = 1.0)]
    t_min: f64,
    /// Highest temperature of the grid.
    #[arg(long, default_value_t = 4.0)]
    t_max: f64,
    /// Temperatures in the grid.
    #[arg(long, default_value_t = 13)]
    temperatures: usize,
    /// Configurations per temperature.
    #[arg(long, default_value_t = 500)]
    configs: usize,
    /// Which temperatures train the machine.
    #[arg(long, value_enum, default_value_t = TrainRange::All)]
    train: TrainRange,
    /// Hidden units.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Training epochs.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// CD or PCD.
    #[arg(long, value_enum, default_value_t = Method::Pcd)]
    method: Method,
    /// Gibbs steps per update.
    #[arg(long, default_value_t = 1)]
    k: usize,
    /// Applications of the machine in the flow.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

/// One start temperature's flow.
#[derive(Serialize)]
struct StartFlow {
    start_temperature: f64,
    trained_on: bool,
    flow: Vec<FlowPoint>,
}

#[derive(Serialize)]
struct FlowSummary {
    lattice: usize,
    train: TrainRange,
    training_temperatures: Vec<f64>,
    training_configurations: usize,
    hidden: usize,
    epochs: usize,
    method: String,
    exact_tc: f64,
    seconds: f64,
    reference: ReferenceCurves,
    flows: Vec<StartFlow>,
}

/// `nrg rbm …`.
pub fn run(args: RbmArgs) -> Result<()> {
    match args.command {
        RbmCommand::Flow(a) => flow(a),
    }
}

fn flow(a: FlowArgs) -> Result<()> {
    if !(a.t_min > 0.0 && a.t_max > a.t_min && a.t_max.is_finite()) || a.temperatures < 2 {
        bail!("need 0 < --t-min < --t-max and --temperatures ≥ 2");
    }
    if a.configs < 2 || a.hidden == 0 || a.epochs == 0 || a.k == 0 || a.lr.is_nan() || a.lr <= 0.0 {
        bail!("need --configs ≥ 2, --hidden, --epochs, --k ≥ 1 and --lr > 0");
    }
    let t0 = std::time::Instant::now();
    let lattice = Lattice::square(a.l)?;
    let tc = 2.0 / (1.0 + 2f64.sqrt()).ln();
    let temps: Vec<f64> = (0..a.temperatures)
        .map(|k| a.t_min + (a.t_max - a.t_min) * k as f64 / (a.temperatures - 1) as f64)
        .collect();
    let bar = ProgressBar::new(temps.len() as u64);
    let mut sets = Vec::with_capacity(temps.len());
    for (k, &t) in temps.iter().enumerate() {
        let model = IsingSpins::new(lattice, 1.0 / t)?;
        let mut sim = IsingSimulation::Wolff(IsingWolff::new(
            model,
            a.seed.wrapping_add(k as u64),
            SpinStart::Hot,
        ));
        let config = RunConfig {
            thermalisation: 500,
            sweeps: a.configs * 10,
            measure_every: 10,
        };
        let mut set = Vec::with_capacity(a.configs);
        run_observed(&mut sim, &config, &mut |_| {}, &mut |s| {
            set.push(s.to_vec());
            Ok(())
        })?;
        sets.push(set);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let reference = ReferenceCurves::new(&temps, &sets, a.l)?;
    let trained = |t: f64| match a.train {
        TrainRange::All => true,
        TrainRange::Below => t < tc,
        TrainRange::Above => t > tc,
    };
    let training_temperatures: Vec<f64> = temps.iter().copied().filter(|&t| trained(t)).collect();
    if training_temperatures.is_empty() {
        bail!("no grid temperature is in the --train range");
    }
    let data: Vec<Vec<f64>> = temps
        .iter()
        .zip(&sets)
        .filter(|(t, _)| trained(**t))
        .flat_map(|(_, s)| s.iter().cloned())
        .collect();
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(a.seed.wrapping_add(77));
    let mut rbm = Rbm::new(a.l * a.l, a.hidden, 0.01, &mut rng)?;
    let settings = RbmTraining {
        epochs: a.epochs,
        batch: 50,
        lr: a.lr,
        method: match a.method {
            Method::Cd => Contrastive::Cd { k: a.k },
            Method::Pcd => Contrastive::Pcd { k: a.k },
        },
        weight_decay: 1e-4,
    };
    eprintln!(
        "nrg: training an RBM ({} hidden) on {} configurations at {} temperatures …",
        a.hidden,
        data.len(),
        training_temperatures.len()
    );
    train(&mut rbm, &data, &settings, &mut rng, &mut |_, _| {})?;
    let mut flows = Vec::new();
    for (&t, set) in temps.iter().zip(&sets) {
        let flow = rbm_flow(&rbm, set, a.l, a.steps, &reference, &mut rng)?;
        flows.push(StartFlow {
            start_temperature: t,
            trained_on: trained(t),
            flow,
        });
    }
    let summary = FlowSummary {
        lattice: a.l,
        train: a.train,
        training_temperatures,
        training_configurations: data.len(),
        hidden: a.hidden,
        epochs: a.epochs,
        method: format!("{:?}-{}", a.method, a.k).to_lowercase(),
        exact_tc: tc,
        seconds: t0.elapsed().as_secs_f64(),
        reference,
        flows,
    };
    std::fs::create_dir_all(&a.out)?;
    write_json(&a.out.join("summary.json"), &summary)?;
    let mut csv = String::from(
        "start,step,energy,energy_error,magnetisation,magnetisation_error,temperature\n",
    );
    for f in &summary.flows {
        for p in &f.flow {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                f.start_temperature,
                p.step,
                p.energy.value,
                p.energy.error,
                p.magnetisation.value,
                p.magnetisation.error,
                p.temperature
            ));
        }
    }
    write_atomic(&a.out.join("flow.csv"), csv.as_bytes())?;
    let labels: Vec<String> = summary
        .flows
        .iter()
        .map(|f| format!("T0 = {:.2}", f.start_temperature))
        .collect();
    let n = summary.flows.len().max(2) as f64;
    let mut curves: Vec<Curve> = summary
        .flows
        .iter()
        .zip(&labels)
        .enumerate()
        .map(|(k, (f, label))| {
            let x = k as f64 / (n - 1.0);
            Curve {
                label: label.as_str(),
                points: f
                    .flow
                    .iter()
                    .map(|p| (p.step as f64, p.temperature))
                    .collect(),
                color: RGBColor((255.0 * x) as u8, 60, (255.0 * (1.0 - x)) as u8),
                marks: Marks::Line,
            }
        })
        .collect();
    curves.push(Curve {
        label: "T_c",
        points: vec![(0.0, tc), (a.steps as f64, tc)],
        color: BLACK,
        marks: Marks::Line,
    });
    panels_png(
        &a.out.join("rbm_flow.png"),
        &[Panel {
            title: "RBM flow: temperature read from (e, |m|) against the step",
            x_label: "applications of v → h → v",
            curves,
            y_range: Some((a.t_min, a.t_max)),
        }],
    )?;
    let shown = a.hidden.min(16);
    let mut pixels = Vec::with_capacity(shown * a.l * a.l);
    for j in 0..shown {
        let f = rbm.receptive_field(j);
        let top = f.iter().fold(1e-12f64, |m, x| m.max(x.abs()));
        pixels.extend(f.iter().map(|w| (127.5 + 127.5 * w / top).round() as u8));
    }
    write_grid(
        &a.out.join("receptive.png"),
        &ImageSet::new(pixels, [shown, 1, a.l, a.l])?,
        &GridOptions { cols: 8, scale: 8 },
    )?;
    println!(
        "RBM flow, Ising L = {}, trained on {:?} ({} configurations), {} steps:",
        a.l, a.train, summary.training_configurations, a.steps
    );
    for f in &summary.flows {
        let last = f.flow.last().map_or(f64::NAN, |p| p.temperature);
        println!(
            "  T0 = {:.3}{} → T = {:.3} after {} steps",
            f.start_temperature,
            if f.trained_on {
                ""
            } else {
                " (not trained on)"
            },
            last,
            a.steps
        );
    }
    println!(
        "T_c = {tc:.4}; {:.1} s → {}",
        summary.seconds,
        a.out.display()
    );
    Ok(())
}
