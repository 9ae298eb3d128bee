//! `nrg rbm train`: an RBM or a deep belief net on Ising configurations at one temperature,
//! writing `OUT/summary.json` (settings, per-epoch reconstruction error and — where
//! `min(V, H) ≤ 20` — exact log-likelihood, train and held out; top-layer receptive-field
//! radii), `training.csv`, `training.png`, `rbm.json` or `dbn.json`, and `receptive.png`
//! (the top layer's product weights, Mehta & Schwab's figure).
//!
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
use nrg_rg::rbm::{Contrastive, Dbn, Rbm, RbmTraining, train};
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
    /// Train an RBM, or a deep belief net (several --hidden sizes), on Ising configurations
    /// at one temperature (a .npy of ±1 spins or a Wolff chain).
    Train(TrainArgs),
    /// Train an RBM on Ising configurations of many temperatures and iterate v → h → v.
    Flow(FlowArgs),
}

/// Arguments of `nrg rbm train`.
#[derive(Args, Debug)]
struct TrainArgs {
    /// Configurations of ±1 spins ([N, L, L] or [N, 1, L, L]); without it, a Wolff chain.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Chain: lattice side.
    #[arg(long = "L")]
    l: Option<usize>,
    /// Chain: coupling K [default: K_c].
    #[arg(long, allow_negative_numbers = true)]
    beta: Option<f64>,
    /// Chain: configurations [default: 2000].
    #[arg(long)]
    configs: Option<usize>,
    /// Hidden units per layer; several (e.g. 64,16) stack a deep belief net.
    #[arg(long, value_delimiter = ',', default_values_t = vec![64])]
    hidden: Vec<usize>,
    /// Training epochs (per layer).
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
    /// Configurations per update.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// L2 weight decay.
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    weight_decay: f64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

/// One epoch of one layer of `nrg rbm train`.
#[derive(Serialize)]
struct EpochRecord {
    layer: usize,
    epoch: usize,
    reconstruction_train: f64,
    /// The held-out configurations (first layer only).
    reconstruction_test: Option<f64>,
    /// Exact mean log-likelihood per configuration where `min(V, H) ≤ 20`.
    log_likelihood_train: Option<f64>,
    log_likelihood_test: Option<f64>,
}

#[derive(Serialize)]
struct TrainSummary {
    source: String,
    lattice: usize,
    beta: Option<f64>,
    training_configurations: usize,
    test_configurations: usize,
    hidden: Vec<usize>,
    training: RbmTraining,
    seconds: f64,
    epochs: Vec<EpochRecord>,
    /// Receptive-field radius of each top-layer unit's weights (product over the layers):
    /// `(Σ w² d²/Σ w²)^{1/2}` about the torus centroid of `w²`, lattice units.
    receptive_radius: Vec<f64>,
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

/// How an RBM's model term is estimated (also `nrg rg compare`'s).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    /// Contrastive divergence.
    Cd,
    /// Persistent contrastive divergence.
    Pcd,
}

impl Method {
    /// The library's setting with `k` Gibbs steps.
    pub(crate) fn contrastive(self, k: usize) -> Contrastive {
        match self {
            Method::Cd => Contrastive::Cd { k },
            Method::Pcd => Contrastive::Pcd { k },
        }
    }
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
        RbmCommand::Train(a) => train_rbm(a),
        RbmCommand::Flow(a) => flow(a),
    }
}

/// Ising configurations from `--data` or a Wolff chain, with the lattice side and a
/// description of the source.
fn configurations(a: &TrainArgs) -> Result<(Vec<Vec<f64>>, usize, String)> {
    match (&a.data, a.l) {
        (Some(_), Some(_)) => bail!("--L applies to the chain; a --data file has its own size"),
        (Some(_), None) if a.beta.is_some() || a.configs.is_some() => {
            bail!("--beta and --configs apply to the chain only")
        }
        (Some(path), None) => {
            let (configs, side) = crate::rg_cmd::read_spins(path)?;
            Ok((configs, side, path.display().to_string()))
        }
        (None, Some(l)) => {
            let beta = a
                .beta
                .unwrap_or_else(nrg_lattice::exact::ising2d::critical_beta);
            if !(beta.is_finite() && beta > 0.0) {
                bail!("--beta must be positive and finite, got {beta}");
            }
            let n = a.configs.unwrap_or(2000);
            if n > 100_000_000 {
                bail!("--configs {n} is more than this command will hold");
            }
            let bar = ProgressBar::new((n * 4 + 500) as u64);
            let configs =
                nrg_run::rg_compare::wolff_configurations(l, beta, n, 4, a.seed, &mut |d| {
                    if d.is_multiple_of(200) {
                        bar.set_position(d as u64)
                    }
                })?;
            bar.finish_and_clear();
            Ok((configs, l, format!("Wolff chain, L = {l}, K = {beta}")))
        }
        (None, None) => bail!("give --data FILE.npy or --L (a Wolff chain)"),
    }
}

/// Receptive-field radius of a weight map over an `l × l` torus (see `TrainSummary`).
fn weight_radius(w: &[f64], l: usize) -> f64 {
    let squares: Vec<f64> = w.iter().map(|x| x * x).collect();
    if squares.iter().sum::<f64>() <= 0.0 {
        return f64::NAN;
    }
    nrg_rg::compare::torus_spread(&squares, l).radius
}

fn train_rbm(a: TrainArgs) -> Result<()> {
    if a.hidden.is_empty() || a.hidden.len() > 16 || a.hidden.contains(&0) {
        bail!("--hidden needs 1 to 16 layer sizes, each ≥ 1");
    }
    if a.configs.is_some_and(|n| n < 2)
        || a.epochs == 0
        || a.epochs > 1_000_000
        || a.k == 0
        || a.batch == 0
        || a.lr.is_nan()
        || a.lr <= 0.0
    {
        bail!("need --configs ≥ 2, --epochs in 1..=10⁶, --k, --batch ≥ 1 and --lr > 0");
    }
    if !(a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
        bail!("--weight-decay must be finite and ≥ 0");
    }
    let t0 = std::time::Instant::now();
    let (configs, l, source) = configurations(&a)?;
    if configs.len() < 2 {
        bail!("need at least 2 configurations, got {}", configs.len());
    }
    // the last tenth (at least one) is held out
    let test_n = (configs.len() / 10).max(1);
    let (train_set, test_set) = configs.split_at(configs.len() - test_n);
    let settings = RbmTraining {
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        method: a.method.contrastive(a.k),
        weight_decay: a.weight_decay,
    };
    let bar = ProgressBar::new((a.epochs * a.hidden.len()) as u64);
    let mut records = Vec::new();
    let mut failure = None;
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(a.seed.wrapping_add(77));
    let dbn = Dbn::train_observed(
        train_set,
        &a.hidden,
        &settings,
        &mut rng,
        &mut |layer, epoch, rbm, input| {
            bar.inc(1);
            let exact = rbm.visible.min(rbm.hidden) <= 20;
            let metric = || -> nrg_core::Result<EpochRecord> {
                // ln Z once per epoch, shared by the training and the held-out likelihood
                let ln_z = if exact { Some(rbm.ln_z()?) } else { None };
                let likelihood = |data: &[Vec<f64>]| {
                    ln_z.map(|z| {
                        -data.iter().map(|v| rbm.free_energy(v)).sum::<f64>() / data.len() as f64
                            - z
                    })
                };
                Ok(EpochRecord {
                    layer,
                    epoch,
                    reconstruction_train: rbm.reconstruction_error(input)?,
                    reconstruction_test: if layer == 0 {
                        Some(rbm.reconstruction_error(test_set)?)
                    } else {
                        None
                    },
                    log_likelihood_train: likelihood(input),
                    log_likelihood_test: if layer == 0 {
                        likelihood(test_set)
                    } else {
                        None
                    },
                })
            };
            match metric() {
                Ok(r) => records.push(r),
                Err(e) => failure = Some(e),
            }
        },
    )?;
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e.into());
    }
    let top = dbn.receptive_fields();
    let h_top = dbn.layers.last().map_or(0, |r| r.hidden);
    let field = |j: usize| -> Vec<f64> { (0..l * l).map(|i| top[i * h_top + j]).collect() };
    let receptive_radius: Vec<f64> = (0..h_top).map(|j| weight_radius(&field(j), l)).collect();
    let summary = TrainSummary {
        source,
        lattice: l,
        beta: if a.data.is_none() {
            Some(
                a.beta
                    .unwrap_or_else(nrg_lattice::exact::ising2d::critical_beta),
            )
        } else {
            None
        },
        training_configurations: train_set.len(),
        test_configurations: test_set.len(),
        hidden: a.hidden.clone(),
        training: settings,
        seconds: t0.elapsed().as_secs_f64(),
        epochs: records,
        receptive_radius,
    };
    std::fs::create_dir_all(&a.out)?;
    write_json(&a.out.join("summary.json"), &summary)?;
    if dbn.layers.len() == 1 {
        write_json(&a.out.join("rbm.json"), &dbn.layers[0])?;
    } else {
        write_json(&a.out.join("dbn.json"), &dbn)?;
    }
    let mut csv = String::from(
        "layer,epoch,reconstruction_train,reconstruction_test,log_likelihood_train,log_likelihood_test\n",
    );
    let opt = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
    for r in &summary.epochs {
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            r.layer,
            r.epoch,
            r.reconstruction_train,
            opt(r.reconstruction_test),
            opt(r.log_likelihood_train),
            opt(r.log_likelihood_test)
        ));
    }
    write_atomic(&a.out.join("training.csv"), csv.as_bytes())?;
    let labels: Vec<String> = (0..dbn.layers.len())
        .map(|k| format!("layer {k} (train)"))
        .collect();
    let mut curves: Vec<Curve> = labels
        .iter()
        .enumerate()
        .map(|(k, label)| Curve {
            label: label.as_str(),
            points: summary
                .epochs
                .iter()
                .filter(|r| r.layer == k)
                .map(|r| ((r.epoch + 1) as f64, r.reconstruction_train))
                .collect(),
            color: RGBColor((30 + 150 * k % 200) as u8, 60, (200 - 80 * k % 200) as u8),
            marks: Marks::Line,
        })
        .collect();
    curves.push(Curve {
        label: "layer 0 (held out)",
        points: summary
            .epochs
            .iter()
            .filter_map(|r| r.reconstruction_test.map(|t| ((r.epoch + 1) as f64, t)))
            .collect(),
        color: BLACK,
        marks: Marks::Dots,
    });
    panels_png(
        &a.out.join("training.png"),
        &[Panel {
            title: "mean-field reconstruction error against the epoch",
            x_label: "epoch",
            curves,
            y_range: None,
        }],
    )?;
    let shown = h_top.min(16);
    let mut pixels = Vec::with_capacity(shown * l * l);
    for j in 0..shown {
        let f = field(j);
        let m = f.iter().fold(1e-12f64, |m, x| m.max(x.abs()));
        pixels.extend(f.iter().map(|w| (127.5 + 127.5 * w / m).round() as u8));
    }
    write_grid(
        &a.out.join("receptive.png"),
        &ImageSet::new(pixels, [shown, 1, l, l])?,
        &GridOptions { cols: 8, scale: 8 },
    )?;
    let last = summary.epochs.iter().rev().find(|r| r.layer == 0);
    println!(
        "RBM {:?} on {} configurations ({}; {} held out), {} epochs of {:?}:",
        a.hidden,
        train_set.len(),
        summary.source,
        test_set.len(),
        a.epochs,
        settings.method
    );
    if let Some(r) = last {
        println!(
            "  layer 0: reconstruction error {:.4} (held out {:.4}){}",
            r.reconstruction_train,
            r.reconstruction_test.unwrap_or(f64::NAN),
            match (r.log_likelihood_train, r.log_likelihood_test) {
                (Some(tr), Some(te)) =>
                    format!(", exact log-likelihood {tr:.4} (held out {te:.4})"),
                _ => String::new(),
            }
        );
    }
    let radii: Vec<f64> = summary
        .receptive_radius
        .iter()
        .copied()
        .filter(|r| r.is_finite())
        .collect();
    println!(
        "  top-layer receptive-field radius {:.2} (mean over {} units); {:.1} s → {}",
        radii.iter().sum::<f64>() / radii.len().max(1) as f64,
        radii.len(),
        summary.seconds,
        a.out.display()
    );
    Ok(())
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
        method: a.method.contrastive(a.k),
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
