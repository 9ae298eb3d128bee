//! `nrg rg mcrg`: Swendsen's Monte Carlo RG on 2D Ising configurations from a Wolff chain
//! ([`nrg_rg::mcrg`], [`nrg_rg::pseudo`]), writing to `OUT`:
//!
//! ```text
//! summary.json        the run, y_t and y_h per step at the largest truncation, every
//!                     linearised RG matrix's eigenvalues (per step, sector, truncation),
//!                     pseudo-likelihood couplings per level, timings
//! eigenvalues.csv     sector, step, operators, eigenvalue index, value, error
//! exponents.png       y_t and y_h against the RG step, one curve per truncation (the
//!                     largest with its jackknife error bars), with the exact 1 and 15/8
//! ```
//!
//! ```text
//! nrg rg mcrg --L 64 --b 2 --steps 3 --configs 20000 --out runs/mcrg-l64
//! ```

use crate::plot::{Curve, Marks, Panel, panels_png};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use nrg_core::{Estimate, Lattice};
use nrg_lattice::IsingSpins;
use nrg_lattice::exact::ising2d::critical_beta;
use nrg_rg::block::{BlockRule, BlockSpin};
use nrg_rg::mcrg::{McrgData, McrgReport, analyse, even_operators, odd_operators};
use nrg_rg::pseudo::pseudo_likelihood;
use nrg_run::dir::{write_atomic, write_json};
use nrg_samplers::baseline::{IsingWolff, SpinStart};
use nrg_samplers::run::{IsingSimulation, RunConfig, run_observed};
use plotters::style::{BLUE, RED, RGBColor};
use rand::SeedableRng;
use serde::Serialize;
use std::path::PathBuf;

/// Jackknife blocks of the pseudo-likelihood couplings. With 10 the z-scores of known
/// couplings follow Student's t with 9 degrees of freedom (variance 1.29, and a 3.5σ
/// deviation in 0.7 % of fits), which is how a 4.7σ outlier came about; 20 brings the
/// error bar's own noise down (t₁₉, variance 1.12).
const COUPLING_BLOCKS: usize = 20;

/// Arguments of `nrg rg`.
#[derive(Args, Debug)]
pub struct RgArgs {
    #[command(subcommand)]
    command: RgCommand,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// Majority of the block (random tie-breaks for even b).
    Majority,
    /// The block's corner spin.
    Decimation,
}

#[derive(Subcommand, Debug)]
enum RgCommand {
    /// Monte Carlo RG: the linearised RG map from block-spin correlations, y_t and y_h.
    Mcrg(McrgArgs),
    /// Block spins of Ising configurations (a .npy of ±1, or a Wolff chain), iterated,
    /// with the renormalised couplings of every level.
    Block(BlockArgs),
    /// A trained Ising flow's coarse field beside majority block spins and an RBM's hidden
    /// units on the same configurations: receptive fields and implied couplings.
    Compare(crate::compare_cmd::CompareArgs),
}

/// Arguments of `nrg rg block`.
#[derive(Args, Debug)]
struct BlockArgs {
    /// Configurations of ±1 spins ([N, L, L] or [N, 1, L, L]); without it, a Wolff chain.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Chain: lattice side.
    #[arg(long = "L")]
    l: Option<usize>,
    /// Chain: coupling K [default: K_c].
    #[arg(long, allow_negative_numbers = true)]
    beta: Option<f64>,
    /// Chain: configurations.
    #[arg(long, default_value_t = 2000)]
    configs: usize,
    /// Block side b.
    #[arg(long, default_value_t = 2)]
    b: usize,
    /// Block rule.
    #[arg(long, value_enum, default_value_t = Rule::Majority)]
    rule: Rule,
    /// Block steps.
    #[arg(long, default_value_t = 2)]
    steps: usize,
    /// Seed (chain, tie-breaks).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

/// One level of `nrg rg block`.
#[derive(Serialize)]
struct BlockLevel {
    level: usize,
    side: usize,
    energy_per_site: Estimate,
    magnetisation: Estimate,
    operators: Vec<String>,
    couplings: Option<Vec<Estimate>>,
    file: String,
}

/// Arguments of `nrg rg mcrg`.
#[derive(Args, Debug)]
struct McrgArgs {
    /// Lattice side (divisible by b^steps).
    #[arg(long = "L")]
    l: usize,
    /// Coupling K = βJ [default: K_c = ln(1 + √2)/2].
    #[arg(long, allow_negative_numbers = true)]
    beta: Option<f64>,
    /// Block side b.
    #[arg(long, default_value_t = 2)]
    b: usize,
    /// Block rule.
    #[arg(long, value_enum, default_value_t = Rule::Majority)]
    rule: Rule,
    /// Block steps.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Configurations measured.
    #[arg(long, default_value_t = 20_000)]
    configs: usize,
    /// Wolff cluster updates between configurations.
    #[arg(long, default_value_t = 4)]
    every: usize,
    /// Jackknife blocks.
    #[arg(long, default_value_t = 20)]
    blocks: usize,
    /// Configurations (every k-th) kept for the pseudo-likelihood couplings.
    #[arg(long, default_value_t = 1000)]
    coupling_configs: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

/// The couplings of one level.
#[derive(Serialize)]
struct LevelCouplings {
    level: usize,
    side: usize,
    operators: Vec<String>,
    couplings: Vec<Estimate>,
}

/// What `summary.json` holds.
#[derive(Serialize)]
struct McrgSummary {
    lattice: usize,
    beta: f64,
    rule: String,
    factor: usize,
    seconds_chain: f64,
    seconds_analysis: f64,
    y_t: Vec<Estimate>,
    y_h: Vec<Estimate>,
    exact_y_t: f64,
    exact_y_h: f64,
    couplings: Vec<LevelCouplings>,
    mcrg: McrgReport,
}

/// `nrg rg …`.
pub fn run(args: RgArgs, device: crate::device::DeviceChoice) -> Result<()> {
    match args.command {
        RgCommand::Mcrg(a) => mcrg(a),
        RgCommand::Block(a) => block(a),
        RgCommand::Compare(a) => crate::compare_cmd::run(a, device),
    }
}

/// Ising configurations of `±1` spins from a `.npy` of `[N, L, L]` (or `[N, 1, L, L]`), with
/// `L`; anything else is refused, naming the file.
pub(crate) fn read_spins(path: &std::path::Path) -> Result<(Vec<Vec<f64>>, usize)> {
    let (values, [n, c, r, w]) = nrg_flow::data::read_configurations(path)?;
    if c != 1 || r != w {
        bail!(
            "{}: need [N, L, L] spins, got [{n}, {c}, {r}, {w}]",
            path.display()
        );
    }
    if let Some(v) = values.iter().find(|v| v.abs() != 1.0) {
        bail!("{}: need ±1 spins, found {v}", path.display());
    }
    let configs = values
        .chunks(r * w)
        .map(|c| c.iter().map(|&v| v as f64).collect())
        .collect();
    Ok((configs, r))
}

fn block(a: BlockArgs) -> Result<()> {
    let rule = match a.rule {
        Rule::Majority => BlockRule::Majority,
        Rule::Decimation => BlockRule::Decimation,
    };
    let step = BlockSpin { rule, factor: a.b };
    let (configs, side) = match (&a.data, a.l) {
        (Some(_), Some(_)) => bail!("--L applies to the chain; a --data file has its own size"),
        (Some(_), None) if a.beta.is_some() => bail!("--beta applies to the chain only"),
        (Some(path), None) => read_spins(path)?,
        (None, Some(l)) => {
            let beta = a.beta.unwrap_or_else(critical_beta);
            if !(beta.is_finite() && beta > 0.0) {
                bail!("--beta must be positive and finite, got {beta}");
            }
            let lattice = Lattice::square(l)?;
            let model = IsingSpins::new(lattice, beta)?;
            let mut sim = IsingSimulation::Wolff(IsingWolff::new(model, a.seed, SpinStart::Hot));
            let config = RunConfig {
                thermalisation: 500,
                sweeps: a.configs * 4,
                measure_every: 4,
            };
            let mut configs = Vec::with_capacity(a.configs);
            run_observed(&mut sim, &config, &mut |_| {}, &mut |s| {
                configs.push(s.to_vec());
                Ok(())
            })?;
            (configs, l)
        }
        (None, None) => bail!("give --data FILE.npy or --L (a Wolff chain)"),
    };
    if configs.len() < 2 * COUPLING_BLOCKS {
        bail!(
            "need at least {} configurations, got {}",
            2 * COUPLING_BLOCKS,
            configs.len()
        );
    }
    let lattice = Lattice::square(side)?;
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(a.seed.wrapping_add(0xb10c));
    let mut levels: Vec<Vec<Vec<f64>>> = vec![configs];
    let mut sides = vec![side];
    let mut lat = lattice;
    for _ in 0..a.steps {
        let coarse = step.coarse(lat)?;
        let prev = levels.last().map(Vec::as_slice).unwrap_or_default();
        let next = prev
            .iter()
            .map(|s| step.apply(s, lat, &mut rng).map(|r| r.0))
            .collect::<nrg_core::Result<Vec<_>>>()?;
        levels.push(next);
        sides.push(coarse.l());
        lat = coarse;
    }
    std::fs::create_dir_all(&a.out)?;
    let fit = &even_operators()[..4];
    let mut out = Vec::new();
    for (level, (set, &l)) in levels.iter().zip(&sides).enumerate() {
        let file = format!("level{level}.npy");
        let flat: Vec<f32> = set.iter().flatten().map(|&v| v as f32).collect();
        nrg_flow::data::write_npy_f32(&a.out.join(&file), &flat, &[set.len(), l, l])?;
        let (e, m) = nrg_rg::rbm_flow::observables(set, l);
        let couplings = if l >= 4 {
            Some(pseudo_likelihood(set, l, l, fit, COUPLING_BLOCKS)?)
        } else {
            None
        };
        out.push(BlockLevel {
            level,
            side: l,
            energy_per_site: e,
            magnetisation: m,
            operators: fit.iter().map(|o| o.name.to_string()).collect(),
            couplings,
            file,
        });
    }
    write_json(
        &a.out.join("summary.json"),
        &serde_json::json!({
            "rule": format!("{:?}", a.rule).to_lowercase(),
            "factor": a.b,
            "configurations": levels[0].len(),
            "levels": out,
        }),
    )?;
    for l in &out {
        let ks = l
            .couplings
            .as_ref()
            .map_or("(too small to fit)".to_string(), |k| {
                l.operators
                    .iter()
                    .zip(k)
                    .map(|(o, k)| format!("{o} {:.4}±{:.4}", k.value, k.error))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
        println!(
            "level {} (L = {}): e = {:.4}±{:.4}, |m| = {:.4}±{:.4}; {ks}",
            l.level,
            l.side,
            l.energy_per_site.value,
            l.energy_per_site.error,
            l.magnetisation.value,
            l.magnetisation.error
        );
    }
    println!("→ {}", a.out.display());
    Ok(())
}

fn mcrg(a: McrgArgs) -> Result<()> {
    let beta = a.beta.unwrap_or_else(critical_beta);
    if !(beta.is_finite() && beta > 0.0) {
        bail!("--beta must be positive and finite, got {beta}");
    }
    if a.configs < 2 * a.blocks || a.blocks < 2 || a.every == 0 || a.steps == 0 {
        bail!("need --steps ≥ 1, --every ≥ 1, --blocks ≥ 2 and --configs ≥ 2 × blocks");
    }
    let lattice = Lattice::square(a.l)?;
    let rule = match a.rule {
        Rule::Majority => BlockRule::Majority,
        Rule::Decimation => BlockRule::Decimation,
    };
    let step = BlockSpin { rule, factor: a.b };
    let ops: Vec<_> = even_operators()
        .into_iter()
        .chain(odd_operators())
        .collect();
    let mut data = McrgData::new(ops, lattice, step, a.steps)?;
    data.keep_every = (a.configs / a.coupling_configs.max(1)).max(1);
    let model = IsingSpins::new(lattice, beta)?;
    let mut sim = IsingSimulation::Wolff(IsingWolff::new(model, a.seed, SpinStart::Hot));
    let config = RunConfig {
        thermalisation: 1000,
        sweeps: a.configs * a.every,
        measure_every: a.every,
    };
    let bar = ProgressBar::new((config.thermalisation + config.sweeps) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} mcrg [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
        )
        .context("progress template")?,
    );
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(a.seed.wrapping_add(0xb10c));
    let t0 = std::time::Instant::now();
    run_observed(
        &mut sim,
        &config,
        &mut |done| {
            if done.is_multiple_of(100) {
                bar.set_position(done as u64);
            }
        },
        &mut |spins| data.push(spins, lattice, &step, &mut rng),
    )?;
    bar.finish_and_clear();
    let seconds_chain = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let report = analyse(&data, a.blocks)?;
    let mut couplings = Vec::new();
    let even = even_operators();
    for (level, kept) in data.kept.iter().enumerate() {
        let side = data.sides[level];
        // the fit needs enough spins per configuration and blocks of configurations
        if side < 4 || kept.len() < 2 * COUPLING_BLOCKS {
            continue;
        }
        let fit = &even[..4];
        let k = pseudo_likelihood(kept, side, side, fit, COUPLING_BLOCKS)?;
        couplings.push(LevelCouplings {
            level,
            side,
            operators: fit.iter().map(|o| o.name.to_string()).collect(),
            couplings: k,
        });
    }
    let seconds_analysis = t1.elapsed().as_secs_f64();
    let last = |m: &Vec<Vec<nrg_rg::mcrg::RgMatrix>>| -> Vec<Estimate> {
        m.iter()
            .map(|per| {
                per.last()
                    .map_or(Estimate::new(f64::NAN, f64::NAN), |r| r.exponent)
            })
            .collect()
    };
    let summary = McrgSummary {
        lattice: a.l,
        beta,
        rule: format!("{:?}", a.rule).to_lowercase(),
        factor: a.b,
        seconds_chain,
        seconds_analysis,
        y_t: last(&report.even),
        y_h: last(&report.odd),
        exact_y_t: 1.0,
        exact_y_h: 15.0 / 8.0,
        couplings,
        mcrg: report,
    };
    std::fs::create_dir_all(&a.out)?;
    write_json(&a.out.join("summary.json"), &summary)?;
    let mut csv = String::from("sector,step,operators,index,eigenvalue,error\n");
    for (sector, per) in [("even", &summary.mcrg.even), ("odd", &summary.mcrg.odd)] {
        for (s, truncs) in per.iter().enumerate() {
            for m in truncs {
                for (i, e) in m.eigenvalues.iter().enumerate() {
                    csv.push_str(&format!(
                        "{sector},{s},{},{i},{},{}\n",
                        m.operators.len(),
                        e.value,
                        e.error
                    ));
                }
            }
        }
    }
    write_atomic(&a.out.join("eigenvalues.csv"), csv.as_bytes())?;
    plot(&a, &summary)?;
    println!(
        "MCRG, Ising L = {} at K = {beta:.6}, b = {} {}: {} configurations ({:.1} s chain, {:.1} s analysis)",
        a.l, a.b, summary.rule, a.configs, seconds_chain, seconds_analysis
    );
    for (s, (yt, yh)) in summary.y_t.iter().zip(&summary.y_h).enumerate() {
        println!(
            "  step {} → {} (L' = {}): y_t = {:.4} ± {:.4}  y_h = {:.4} ± {:.4}",
            s,
            s + 1,
            summary.mcrg.sides[s + 1],
            yt.value,
            yt.error,
            yh.value,
            yh.error
        );
    }
    for c in &summary.couplings {
        let ks: Vec<String> = c
            .operators
            .iter()
            .zip(&c.couplings)
            .map(|(o, k)| format!("{o} {:.4}±{:.4}", k.value, k.error))
            .collect();
        println!(
            "  couplings at level {} (L = {}): {}",
            c.level,
            c.side,
            ks.join(", ")
        );
    }
    println!("→ {}", a.out.display());
    Ok(())
}

/// Largest number of operators kept at any step (at most `max`).
fn truncations(per: &[Vec<nrg_rg::mcrg::RgMatrix>], max: usize) -> usize {
    per.iter().map(Vec::len).max().unwrap_or(0).min(max)
}

/// One sector's exponent against the step, one curve per truncation; the largest drawn
/// with the error bars `bars`.
fn exponent_curves<'a>(
    per: &[Vec<nrg_rg::mcrg::RgMatrix>],
    exact: f64,
    bars: &'a [f64],
    labels: &'a [String],
    colours: &[RGBColor],
) -> Vec<Curve<'a>> {
    let n = truncations(per, labels.len());
    let mut c: Vec<Curve> = (0..n)
        .map(|m| Curve {
            label: labels[m].as_str(),
            points: per
                .iter()
                .enumerate()
                .filter_map(|(step, t)| t.get(m).map(|r| ((step + 1) as f64, r.exponent.value)))
                .collect(),
            color: colours[m.min(colours.len() - 1)],
            marks: if m + 1 == n {
                Marks::ErrorBars(bars)
            } else {
                Marks::Line
            },
        })
        .collect();
    c.push(Curve {
        label: "exact",
        points: vec![(1.0, exact), (per.len() as f64, exact)],
        color: RED,
        marks: Marks::Line,
    });
    c
}

/// `exponents.png`: `y_t` and `y_h` against the step, one curve per truncation.
fn plot(a: &McrgArgs, s: &McrgSummary) -> Result<()> {
    let colours = [
        RGBColor(200, 200, 255),
        RGBColor(150, 150, 255),
        RGBColor(100, 100, 240),
        RGBColor(60, 60, 220),
        RGBColor(30, 30, 200),
        RGBColor(0, 0, 160),
        BLUE,
    ];
    let labels: Vec<String> = (1..=7)
        .map(|m| format!("{m} operator{}", if m == 1 { "" } else { "s" }))
        .collect();
    // the largest truncation's jackknife errors, drawn as bars
    let errors = |per: &Vec<Vec<nrg_rg::mcrg::RgMatrix>>| -> Vec<f64> {
        let m = truncations(per, labels.len());
        per.iter()
            .filter_map(|t| m.checked_sub(1).and_then(|m| t.get(m)))
            .map(|r| r.exponent.error)
            .collect()
    };
    let (even_errors, odd_errors) = (errors(&s.mcrg.even), errors(&s.mcrg.odd));
    panels_png(
        &a.out.join("exponents.png"),
        &[
            Panel {
                title: "thermal exponent y_t against the RG step",
                x_label: "block step n (L / b^n)",
                curves: exponent_curves(&s.mcrg.even, 1.0, &even_errors, &labels, &colours),
                y_range: None,
            },
            Panel {
                title: "magnetic exponent y_h against the RG step",
                x_label: "block step n (L / b^n)",
                curves: exponent_curves(&s.mcrg.odd, 15.0 / 8.0, &odd_errors, &labels, &colours),
                y_range: None,
            },
        ],
    )
}
