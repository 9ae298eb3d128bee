//! `nrg rg compare`: a trained Ising flow's coarse field beside majority block spins and an
//! RBM's hidden units, on the same Wolff configurations ([`nrg_run::rg_compare`],
//! [`nrg_rg::compare`]), writing to `OUT` (default `RUN/compare`):
//!
//! ```text
//! summary.json     settings, timings, per scheme: receptive fields (centres, radii,
//!                  participation), implied couplings per distance class and per pair,
//!                  lattice-operator couplings where the variables sit on a lattice
//! couplings.csv    scheme, class, pairs, J ± σ, |J| ± σ
//! rbm.json         the trained RBM (weights, biases)
//! receptive.png    per scheme: the mean |response| map and the signed fields of three
//!                  coarse variables
//! couplings.png    J against the distance of the centres (coarse lattice units), per scheme
//! ```
//!
//! ```text
//! nrg rg compare --run runs/ising-l8 --configs 2000 --out runs/ising-l8/compare
//! ```

use crate::device::{DeviceChoice, make};
use crate::plot::{Curve, Grid, Marks, Panel, grids_png, panels_png};
use crate::rbm_cmd::Method;
use anyhow::{Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use nrg_rg::rbm::RbmTraining;
use nrg_run::RunDir;
use nrg_run::dir::{write_atomic, write_json};
use nrg_run::rg_compare::{
    CompareOutput, CompareRequest, check_levels, compare_run, wolff_configurations,
};
use plotters::style::RGBColor;
use std::path::PathBuf;

/// Arguments of `nrg rg compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// A trained run of the 2D Ising model with a hierarchical flow.
    #[arg(long)]
    run: PathBuf,
    /// Levels of the flow compared (block side 2^levels, V/4^levels hidden units).
    #[arg(long, default_value_t = 1)]
    levels: usize,
    /// Wolff configurations on which the three schemes are compared.
    #[arg(long, default_value_t = 2000)]
    configs: usize,
    /// Wolff configurations (a separate chain) that train the RBM.
    #[arg(long, default_value_t = 2000)]
    train_configs: usize,
    /// Wolff cluster updates between configurations.
    #[arg(long, default_value_t = 4)]
    every: usize,
    /// RBM training epochs.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// RBM learning rate.
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// RBM: CD or PCD.
    #[arg(long, value_enum, default_value_t = Method::Pcd)]
    method: Method,
    /// RBM: Gibbs steps per update.
    #[arg(long, default_value_t = 1)]
    k: usize,
    /// Configurations over which the receptive fields are averaged (V + 1 evaluations each).
    #[arg(long, default_value_t = 200)]
    receptive_configs: usize,
    /// Jackknife blocks of the couplings.
    #[arg(long, default_value_t = 10)]
    blocks: usize,
    /// Ridge of the pairwise pseudo-likelihood (per configuration).
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    ridge: f64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory [default: RUN/compare].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `nrg rg compare`.
pub fn run(a: CompareArgs, device_choice: DeviceChoice) -> Result<()> {
    if a.blocks < 5
        || a.configs < a.blocks.saturating_mul(2)
        || a.every == 0
        || a.train_configs == 0
    {
        bail!("need --blocks ≥ 5, --configs ≥ 2 × blocks, --train-configs ≥ 1 and --every ≥ 1");
    }
    let updates = a
        .configs
        .checked_add(a.train_configs)
        .and_then(|n| n.checked_mul(a.every))
        .filter(|&n| n <= 1 << 40)
        .ok_or_else(|| {
            anyhow::anyhow!("--configs, --train-configs and --every ask for too many updates")
        })?;
    if a.epochs == 0 || a.k == 0 || a.lr.is_nan() || a.lr <= 0.0 || a.receptive_configs == 0 {
        bail!("need --epochs, --k, --receptive-configs ≥ 1 and --lr > 0");
    }
    if !(a.ridge.is_finite() && a.ridge >= 0.0) {
        bail!("--ridge must be finite and ≥ 0, got {}", a.ridge);
    }
    let run = RunDir::open(a.run.clone())?;
    let device = make(device_choice)?;
    let (l, beta) = check_levels(&run, a.levels, &device)?;
    // every coarse variable needs ~10 configurations for the pair fit (nrg_rg::compare)
    let coarse = (l * l) >> (2 * a.levels);
    if a.configs < 10 * coarse {
        bail!(
            "--configs {} is too few for the pair couplings of {coarse} coarse variables: \
             give at least {}",
            a.configs,
            10 * coarse
        );
    }
    if a.receptive_configs > a.configs {
        eprintln!(
            "nrg: note: receptive fields from all {} configurations (--receptive-configs {} \
             is more)",
            a.configs, a.receptive_configs
        );
    }
    let t0 = std::time::Instant::now();
    let bar = ProgressBar::new(updates as u64 + 1000);
    bar.set_style(ProgressStyle::with_template(
        "{spinner} compare: Wolff chains [{elapsed_precise}] {wide_bar} {pos}/{len}",
    )?);
    let first = (a.train_configs * a.every + 500) as u64;
    let training = wolff_configurations(
        l,
        beta,
        a.train_configs,
        a.every,
        a.seed.wrapping_add(1000),
        &mut |done| {
            if done.is_multiple_of(200) {
                bar.set_position(done as u64);
            }
        },
    )?;
    let configs = wolff_configurations(l, beta, a.configs, a.every, a.seed, &mut |done| {
        if done.is_multiple_of(200) {
            bar.set_position(first + done as u64);
        }
    })?;
    bar.finish_and_clear();
    let seconds_chain = t0.elapsed().as_secs_f64();
    let request = CompareRequest {
        levels: a.levels,
        rbm: RbmTraining {
            epochs: a.epochs,
            batch: 50,
            lr: a.lr,
            method: a.method.contrastive(a.k),
            weight_decay: 1e-4,
        },
        receptive_configs: a.receptive_configs,
        blocks: a.blocks,
        ridge: a.ridge,
        seed: a.seed,
    };
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] compare: {msg}",
    )?);
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let out = compare_run(&run, &training, &configs, &request, &device, &mut |stage| {
        spinner.set_message(stage.to_string())
    })?;
    spinner.finish_and_clear();
    let dir = a.out.clone().unwrap_or_else(|| run.path().join("compare"));
    std::fs::create_dir_all(&dir)?;
    #[derive(serde::Serialize)]
    struct Summary<'a> {
        run: String,
        seconds_chain: f64,
        seconds: f64,
        #[serde(flatten)]
        output: &'a CompareOutput,
    }
    write_json(
        &dir.join("summary.json"),
        &Summary {
            run: a.run.display().to_string(),
            seconds_chain,
            seconds: t0.elapsed().as_secs_f64(),
            output: &out,
        },
    )?;
    write_json(&dir.join("rbm.json"), &out.rbm)?;
    write_csv(&dir, &out)?;
    plot(&dir, &out)?;
    print_report(&out);
    println!(
        "{:.1} s (chains {seconds_chain:.1} s) → {}",
        t0.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}

fn write_csv(dir: &std::path::Path, out: &CompareOutput) -> Result<()> {
    let mut csv =
        String::from("scheme,class,pairs,coupling,coupling_error,magnitude,magnitude_error\n");
    for s in &out.schemes {
        for c in &s.couplings.classes {
            let (j, m) = (
                c.coupling
                    .unwrap_or(nrg_core::Estimate::new(f64::NAN, f64::NAN)),
                c.magnitude
                    .unwrap_or(nrg_core::Estimate::new(f64::NAN, f64::NAN)),
            );
            csv.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                s.name, c.name, c.pairs, j.value, j.error, m.value, m.error
            ));
        }
    }
    write_atomic(&dir.join("couplings.csv"), csv.as_bytes())?;
    Ok(())
}

/// The nominal distance of a class, for the plot's x axis.
fn nominal(name: &str) -> f64 {
    match name {
        "overlap" => 0.0,
        "nn" => 1.0,
        "nnn" => 2f64.sqrt(),
        "(2,0)" => 2.0,
        _ => 2.6,
    }
}

const COLOURS: [RGBColor; 3] = [
    RGBColor(0, 0, 0),
    RGBColor(200, 30, 30),
    RGBColor(30, 60, 200),
];

fn plot(dir: &std::path::Path, out: &CompareOutput) -> Result<()> {
    let l = out.lattice;
    let mut grids = Vec::new();
    for s in &out.schemes {
        let r = &s.receptive;
        grids.push(Grid {
            title: format!("{}: mean |response|, r = {:.2}", s.name, r.radius.value),
            rows: l,
            cols: l,
            values: r.mean_field.clone(),
            diverging: false,
        });
        for j in [0, s.coarse / 2, s.coarse - 1] {
            grids.push(Grid {
                title: format!("{} unit {j}", s.name),
                rows: l,
                cols: l,
                values: r.signed[j].clone(),
                diverging: true,
            });
        }
    }
    grids_png(&dir.join("receptive.png"), &grids, 4)?;
    // per scheme: the (distance, J) points and their errors
    type Series = (Vec<(f64, f64)>, Vec<f64>);
    let series: Vec<Series> = out
        .schemes
        .iter()
        .map(|s| {
            let classes = s
                .couplings
                .classes
                .iter()
                .filter_map(|c| c.coupling.map(|j| ((nominal(&c.name), j.value), j.error)));
            classes.unzip()
        })
        .collect();
    let curves: Vec<Curve> = out
        .schemes
        .iter()
        .zip(&series)
        .enumerate()
        .map(|(k, (s, (points, errors)))| Curve {
            label: s.name.as_str(),
            points: points.clone(),
            color: COLOURS[k % COLOURS.len()],
            marks: Marks::ErrorBars(errors),
        })
        .collect();
    panels_png(
        &dir.join("couplings.png"),
        &[Panel {
            title: "implied pair couplings J against the distance of the centres",
            x_label: "distance (coarse lattice units; 2.6 = farther)",
            curves,
            y_range: None,
        }],
    )
}

fn print_report(out: &CompareOutput) {
    println!(
        "Ising L = {}, K = {:.5}: {} levels (block side {}), {} configurations, RBM trained on {}",
        out.lattice,
        out.beta,
        out.levels,
        out.block,
        out.configurations,
        out.training_configurations
    );
    println!(
        "{:<10} {:>6} {:>14} {:>14} {:>16} {:>16} {:>16}",
        "scheme", "units", "radius", "participation", "J_nn", "J_nnn", "J_(2,0)"
    );
    for s in &out.schemes {
        let class = |n: &str| {
            s.couplings
                .classes
                .iter()
                .find(|c| c.name == n)
                .and_then(|c| c.coupling)
                .map_or("—".to_string(), |j| {
                    format!("{:.4}({:.0})", j.value, 1e4 * j.error)
                })
        };
        println!(
            "{:<10} {:>6} {:>14} {:>14} {:>16} {:>16} {:>16}",
            s.name,
            s.coarse,
            format!(
                "{:.3} ± {:.3}",
                s.receptive.radius.value, s.receptive.radius.error
            ),
            format!(
                "{:.2} ± {:.2}",
                s.receptive.mean_participation.value, s.receptive.mean_participation.error
            ),
            class("nn"),
            class("nnn"),
            class("(2,0)")
        );
    }
}
