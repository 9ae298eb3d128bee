//! `nrg mc …`: baseline Monte Carlo runs with a progress bar, writing
//! `DIR/summary.json` (every observable with its error and τ_int; exact values where known)
//! and `DIR/series.csv` (the measurement series).
//!
//! `nrg mc ising … --ti [--ti-panels N]` computes `ln Z(β)` by thermodynamic integration of
//! the energy from `β = 0` instead: one chain of `--sweeps` updates at each of the 15
//! Gauss–Kronrod nodes of each of `N` panels graded towards `β` (default 1)
//! ([`nrg_samplers::free_energy::ising_ln_z_by_ti`]), writing `DIR/summary.json` (`ln Z` with
//! its statistical error, the quadrature error estimate, the exact value and the deviation)
//! and `DIR/ti.csv` (per node: `β`, weight, `⟨e⟩`, its error and `τ_int`).
//!
//! `nrg mc phi4|on … --algo hmc --ti` computes `ln Z` of the φ⁴ action by integrating
//! `ΔS = S − S₀` along `S₀ + t ΔS` from a Gaussian reference `S₀` (the same hopping, the
//! mass term `a₀` of `--reference-a`, default `max(a, 2dκ) + κ`, no quartic term; exact
//! `ln Z₀`), one HMC chain per node ([`nrg_samplers::free_energy::phi4_ln_z_by_ti`]); the
//! same files, `ti.csv` per node `t`.

use crate::device::{DeviceChoice, make};
use crate::output::write_series_csv;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use nrg_core::Lattice;
use nrg_core::stats::{Estimate, ExactComparison};
use nrg_flow::data::write_npy_f32;
use nrg_lattice::{FieldGivenSpins, IsingRelaxed, IsingSpins, PhiFour};
use nrg_run::dir::{write_atomic, write_json};
use nrg_samplers::baseline::{Hmc, IsingMetropolis, IsingWolff, PhiFourMetropolis, SpinStart};
use nrg_samplers::free_energy::{
    IsingAlgorithm, IsingTiSettings, Phi4TiSettings, QuadratureNode, ising_ln_z_by_ti,
    phi4_ln_z_by_ti,
};
use nrg_samplers::run::{IsingSimulation, PhiFourSimulation, RunConfig, Simulation, run_observed};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use serde_json::{Value, json};
use std::path::PathBuf;

/// Arguments of `nrg mc`.
#[derive(Args, Debug)]
pub struct McArgs {
    #[command(subcommand)]
    model: McModel,
}

#[derive(Subcommand, Debug)]
enum McModel {
    /// Ising model H = −Σ s_i s_j (J = 1): --algo metropolis|wolff.
    Ising {
        /// Linear size L ≥ 2.
        #[arg(long = "L")]
        l: usize,
        /// Inverse temperature β > 0.
        #[arg(long, allow_negative_numbers = true)]
        beta: f64,
        /// Lattice dimension (1 or 2).
        #[arg(long, default_value_t = 2)]
        dim: usize,
        /// Start from all spins up instead of random spins.
        #[arg(long)]
        cold: bool,
        /// Also write `relaxed.npy` (`[N, 1, L, L]`, f32): for every measured spin
        /// configuration `s`, one exact draw of the continuous relaxation's field,
        /// `x = M s + M^{1/2} ξ` (NeuralRG's shift; training data for forward KL).
        #[arg(long)]
        relaxed: bool,
        /// Compute ln Z(β) by thermodynamic integration of the energy from β = 0 (a chain
        /// of --sweeps updates at each of 15 Gauss–Kronrod nodes) instead of one chain at β.
        #[arg(long, conflicts_with_all = ["relaxed", "cold"])]
        ti: bool,
        /// With --ti: Gauss–Kronrod panels of [0, β], graded towards β (15 nodes each).
        #[arg(long, requires = "ti", default_value_t = 1)]
        ti_panels: usize,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Real φ⁴ (n = 1 by default): --algo hmc|metropolis.
    Phi4 {
        #[command(flatten)]
        params: FieldParams,
        /// Field components.
        #[arg(long, default_value_t = 1)]
        n: usize,
        #[command(flatten)]
        ti: FieldTiArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// O(n) φ⁴ (n = 2 by default; the complex field with --t --mu --lambda): --algo hmc|metropolis.
    On {
        #[command(flatten)]
        params: FieldParams,
        /// Field components.
        #[arg(long, default_value_t = 2)]
        n: usize,
        #[command(flatten)]
        ti: FieldTiArgs,
        #[command(flatten)]
        run: RunArgs,
    },
}

/// Thermodynamic integration of a φ⁴ action from its Gaussian reference.
#[derive(Args, Debug)]
struct FieldTiArgs {
    /// Compute ln Z by thermodynamic integration from a Gaussian reference (an HMC chain of
    /// --sweeps trajectories at each of 15 Gauss–Kronrod nodes) instead of one chain.
    #[arg(long)]
    ti: bool,
    /// With --ti: the reference's mass term a₀ (canonical form; > 2dκ) [default:
    /// max(a, 2dκ) + κ].
    #[arg(long, requires = "ti", allow_negative_numbers = true)]
    reference_a: Option<f64>,
}

/// φ⁴ parameters in one of three forms: lattice (--m2, --lambda), hopping (--kappa,
/// --lambda-hat) or complex (--t, --mu, --lambda; n = 2).
#[derive(Args, Debug)]
struct FieldParams {
    /// Linear size L ≥ 2.
    #[arg(long = "L")]
    l: usize,
    /// Lattice dimension (1 or 2).
    #[arg(long, default_value_t = 2)]
    dim: usize,
    /// Lattice form: mass squared m².
    #[arg(long, allow_negative_numbers = true, conflicts_with_all = ["kappa", "t"])]
    m2: Option<f64>,
    /// Lattice and complex forms: quartic coupling λ ≥ 0 (default 0).
    #[arg(long, allow_negative_numbers = true)]
    lambda: Option<f64>,
    /// Hopping form: hopping parameter κ > 0.
    #[arg(long, allow_negative_numbers = true, conflicts_with = "t")]
    kappa: Option<f64>,
    /// Hopping form: quartic coupling λ̂ ≥ 0.
    #[arg(long, allow_negative_numbers = true, requires = "kappa")]
    lambda_hat: Option<f64>,
    /// Complex form: hopping t > 0.
    #[arg(long, allow_negative_numbers = true, requires = "mu")]
    t: Option<f64>,
    /// Complex form: μ.
    #[arg(long, allow_negative_numbers = true, requires = "t")]
    mu: Option<f64>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Algo {
    /// Single-site Metropolis.
    Metropolis,
    /// Wolff single-cluster updates (Ising).
    Wolff,
    /// Hybrid Monte Carlo (φ⁴, O(n)).
    Hmc,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Update algorithm.
    #[arg(long, value_enum)]
    algo: Algo,
    /// Measured updates (sweeps, Wolff sweeps or HMC trajectories).
    #[arg(long, default_value_t = 10_000)]
    sweeps: usize,
    /// Thermalisation updates (default: sweeps/10, at least 100).
    #[arg(long)]
    therm: Option<usize>,
    /// Updates between measurements.
    #[arg(long, default_value_t = 1)]
    measure_every: usize,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory.
    #[arg(long, default_value = "runs/mc")]
    out: PathBuf,
    /// HMC leapfrog step ε (initial; tuned during thermalisation).
    #[arg(long, default_value_t = 0.1)]
    step: f64,
    /// HMC leapfrog steps per trajectory.
    #[arg(long, default_value_t = 10)]
    md_steps: usize,
    /// Local Metropolis proposal width δ (initial; tuned during thermalisation).
    #[arg(long, default_value_t = 1.0)]
    delta: f64,
    /// Acceptance targeted while tuning ε or δ during thermalisation.
    #[arg(long)]
    target_acceptance: Option<f64>,
}

impl FieldParams {
    fn action(&self, n: usize) -> Result<PhiFour> {
        let lattice = Lattice::new(self.dim, self.l)?;
        if let (Some(t), Some(mu)) = (self.t, self.mu) {
            if n != 2 {
                bail!("the complex form (--t, --mu) needs n = 2, got n = {n}");
            }
            return Ok(PhiFour::complex_form(
                lattice,
                t,
                mu,
                self.lambda.unwrap_or(0.0),
            )?);
        }
        if let Some(kappa) = self.kappa {
            if self.lambda.is_some() {
                bail!("--lambda belongs to the lattice form; the hopping form takes --lambda-hat");
            }
            return Ok(PhiFour::hopping_form(
                lattice,
                n,
                kappa,
                self.lambda_hat.unwrap_or(0.0),
            )?);
        }
        let Some(m2) = self.m2 else {
            bail!(
                "give --m2 (lattice form), --kappa (hopping form) or --t and --mu (complex form)"
            );
        };
        Ok(PhiFour::lattice_form(
            lattice,
            n,
            m2,
            self.lambda.unwrap_or(0.0),
        )?)
    }
}

fn validate(run: &RunArgs) -> Result<()> {
    if run.sweeps == 0 {
        bail!("--sweeps must be ≥ 1");
    }
    if run.measure_every == 0 {
        bail!("--measure-every must be ≥ 1");
    }
    if !(run.step.is_finite() && run.step > 0.0) {
        bail!("--step must be a finite number > 0, got {}", run.step);
    }
    if !(run.delta.is_finite() && run.delta > 0.0) {
        bail!("--delta must be a finite number > 0, got {}", run.delta);
    }
    if let Some(t) = run.target_acceptance
        && !(t > 0.0 && t < 1.0)
    {
        bail!("--target-acceptance must lie in (0, 1), got {t}");
    }
    Ok(())
}

/// Runs `nrg mc` (`device_choice` builds the relaxed Ising model's matrices for `--relaxed`).
pub fn run(args: McArgs, device_choice: DeviceChoice) -> Result<()> {
    let mut relaxed: Option<FieldGivenSpins> = None;
    let (mut sim, model, run): (Box<dyn Simulation>, Value, RunArgs) = match args.model {
        McModel::Ising {
            l,
            beta,
            dim,
            cold,
            relaxed: want_relaxed,
            ti,
            ti_panels,
            run,
        } => {
            validate(&run)?;
            if ti {
                return ising_ti(
                    IsingSpins::new(Lattice::new(dim, l)?, beta)?,
                    &run,
                    ti_panels,
                );
            }
            if want_relaxed {
                let device = make(device_choice)?;
                let action = IsingRelaxed::new(Lattice::new(dim, l)?, beta, &device)?;
                relaxed = Some(action.field_given_spins());
            }
            let model = IsingSpins::new(Lattice::new(dim, l)?, beta)?;
            let start = if cold {
                SpinStart::Cold
            } else {
                SpinStart::Hot
            };
            let desc = json!({"model": "ising", "dim": dim, "L": l, "beta": beta});
            let sim = match run.algo {
                Algo::Metropolis => {
                    IsingSimulation::Metropolis(IsingMetropolis::new(model, run.seed, start))
                }
                Algo::Wolff => IsingSimulation::Wolff(IsingWolff::new(model, run.seed, start)),
                Algo::Hmc => bail!("--algo hmc needs a continuous field; use metropolis or wolff"),
            };
            (Box::new(sim), desc, run)
        }
        McModel::Phi4 { params, n, ti, run } | McModel::On { params, n, ti, run } => {
            validate(&run)?;
            let action = params.action(n)?;
            if ti.ti {
                return phi4_ti(action, &run, ti.reference_a);
            }
            let desc = json!({
                "model": nrg_core::Action::describe(&action),
                "n": n, "dim": params.dim, "L": params.l, "form": action.form(),
            });
            let field = vec![0.0; n * Lattice::new(params.dim, params.l)?.volume()];
            let sim = match run.algo {
                Algo::Hmc => PhiFourSimulation::hmc(
                    Hmc::new(action, field, run.step, run.md_steps, run.seed)?,
                    run.target_acceptance.unwrap_or(0.8),
                ),
                Algo::Metropolis => PhiFourSimulation::local(
                    PhiFourMetropolis::new(action, field, run.delta, run.seed)?,
                    run.target_acceptance.unwrap_or(0.5),
                ),
                Algo::Wolff => bail!("--algo wolff is for the Ising model; use hmc or metropolis"),
            };
            (Box::new(sim), desc, run)
        }
    };

    let config = run_config(&run);
    let total = (config.thermalisation + config.sweeps) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
        )
        .context("progress template")?,
    );
    bar.set_message(format!("mc {}", sim.algorithm()));
    let stride = (total / 1000).max(1);
    let start = std::time::Instant::now();
    let mut fields: Vec<f32> = Vec::new();
    let mut rng = StdRng::seed_from_u64(run.seed.wrapping_add(0x5eed));
    let (mut noise, mut x) = (Vec::new(), Vec::new());
    let output = run_observed(
        sim.as_mut(),
        &config,
        &mut |done| {
            if (done as u64).is_multiple_of(stride) {
                bar.set_position(done as u64);
            }
        },
        &mut |spins| {
            if let Some(f) = &relaxed {
                noise.clear();
                noise.extend((0..spins.len()).map(|_| rng.sample::<f64, _>(StandardNormal)));
                x.resize(spins.len(), 0.0);
                f.sample(spins, &noise, &mut x);
                fields.extend(x.iter().map(|&v| v as f32));
            }
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();

    let mut summary = serde_json::to_value(&output.summary)?;
    if let Value::Object(map) = &mut summary {
        map.insert("model".into(), model);
        map.insert("seed".into(), json!(run.seed));
        map.insert("wall_seconds".into(), json!(seconds));
    }
    let summary_path = run.out.join("summary.json");
    write_json(&summary_path, &summary)?;
    write_series_csv(&run.out.join("series.csv"), &output.series)?;
    if let Some(f) = &relaxed {
        let lattice = sim.lattice();
        let shape = vec![fields.len() / f.volume(), 1, lattice.rows(), lattice.cols()];
        write_npy_f32(&run.out.join("relaxed.npy"), &fields, &shape)?;
        println!(
            "wrote {} ({} relaxed fields)",
            run.out.join("relaxed.npy").display(),
            shape[0]
        );
    }

    let s = &output.summary;
    println!(
        "{} updates ({} thermalisation) in {seconds:.2} s, acceptance {:.3}",
        config.sweeps, config.thermalisation, s.acceptance
    );
    for (name, e) in s.observables.iter().filter(|(n, _)| !n.starts_with("g_")) {
        println!(
            "  {name:<14} {:>+.6e} ± {:.2e}   tau_int {:.2}",
            e.value,
            e.error,
            e.tau_int.unwrap_or(f64::NAN)
        );
    }
    for (name, e) in &s.derived {
        println!("  {name:<14} {:>+.6e} ± {:.2e}", e.value, e.error);
    }
    for (name, c) in s.exact.iter().filter(|(n, _)| !n.starts_with("g_")) {
        println!(
            "  exact {name:<8} {:>+.6e}   deviation {:.2} sigma",
            c.exact, c.deviation_sigma
        );
    }
    println!("wrote {} and series.csv", summary_path.display());
    Ok(())
}

/// Thermalisation and measurement lengths from the command line.
fn run_config(run: &RunArgs) -> RunConfig {
    RunConfig {
        thermalisation: run.therm.unwrap_or((run.sweeps / 10).max(100)),
        sweeps: run.sweeps,
        measure_every: run.measure_every,
    }
}

/// The progress bar of a thermodynamic integration (one step per node).
fn ti_progress(nodes: usize) -> Result<ProgressBar> {
    let bar = ProgressBar::new(nodes as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} thermodynamic integration [{elapsed_precise}] {wide_bar} {pos}/{len} \
             nodes (ETA {eta})",
        )
        .context("progress template")?,
    );
    Ok(bar)
}

/// What both thermodynamic integrations write and print.
struct TiReport<'a> {
    /// The result, serialised; `extra` is merged into it.
    summary: Value,
    extra: Value,
    /// The first column of `ti.csv` (`beta` or `t`) and the integrand's (`e`, `delta_s`).
    columns: (&'a str, &'a str),
    nodes: &'a [QuadratureNode],
    ln_z: Estimate,
    quadrature: Estimate,
    exact: Option<&'a ExactComparison>,
    /// The first line printed.
    headline: String,
}

/// Writes `summary.json` and `ti.csv` into `out` and prints the result, with a warning when
/// the quadrature error is resolved above the noise and exceeds the statistical error (the
/// error bar of `ln Z` does not include it).
fn write_ti(out: &std::path::Path, report: TiReport) -> Result<()> {
    let mut summary = report.summary;
    if let (Value::Object(map), Value::Object(extra)) = (&mut summary, report.extra) {
        map.extend(extra);
    }
    let summary_path = out.join("summary.json");
    write_json(&summary_path, &summary)?;
    let (at, value) = report.columns;
    let mut csv = format!("{at},weight,{value},{value}_error,tau_int\n");
    for n in report.nodes {
        csv.push_str(&format!(
            "{:.17e},{:.17e},{:.17e},{:.17e},{:.6}\n",
            n.at,
            n.weight,
            n.value.value,
            n.value.error,
            n.value.tau_int.unwrap_or(f64::NAN)
        ));
    }
    write_atomic(&out.join("ti.csv"), csv.as_bytes())?;
    let q = report.quadrature;
    println!(
        "{}: ln Z = {} ± {} (quadrature {:.1e} ± {:.1e})",
        report.headline, report.ln_z.value, report.ln_z.error, q.value, q.error
    );
    if let Some(e) = report.exact {
        println!(
            "  exact ln Z {}   deviation {:.2} sigma",
            e.exact, e.deviation_sigma
        );
    }
    if q.value > report.ln_z.error && q.value > 3.0 * q.error {
        println!(
            "  warning: the quadrature error ({:.1e}) exceeds the statistical one and its own \
             noise: the integrand varies fast on the interval (near a transition?); the error \
             bar of ln Z does not include it",
            q.value
        );
    }
    println!("wrote {} and ti.csv", summary_path.display());
    Ok(())
}

/// `nrg mc ising … --ti`.
fn ising_ti(model: IsingSpins, run: &RunArgs, panels: usize) -> Result<()> {
    if panels == 0 || panels > 64 {
        bail!("--ti-panels must be in 1..=64 (15 chains each), got {panels}");
    }
    let algorithm = match run.algo {
        Algo::Metropolis => IsingAlgorithm::Metropolis,
        Algo::Wolff => IsingAlgorithm::Wolff,
        Algo::Hmc => bail!("--algo hmc needs a continuous field; use metropolis or wolff"),
    };
    let settings = IsingTiSettings {
        algorithm,
        run: run_config(run),
        seed: run.seed,
        panels,
    };
    let bar = ti_progress(15 * panels)?;
    let ti = ising_ln_z_by_ti(&model, &settings, &mut |k| bar.set_position(k as u64))?;
    bar.finish_and_clear();
    let lattice = model.lattice();
    write_ti(
        &run.out,
        TiReport {
            summary: serde_json::to_value(&ti)?,
            extra: json!({
                "model": {"model": "ising", "dim": lattice.dim(), "L": lattice.l(), "beta": model.beta()},
                "algorithm": algorithm, "run": settings.run, "seed": run.seed,
            }),
            columns: ("beta", "e"),
            nodes: &ti.energy_integral.nodes,
            ln_z: ti.ln_z,
            quadrature: ti.quadrature_error,
            exact: ti.exact.as_ref(),
            headline: format!(
                "thermodynamic integration, {} nodes × {} updates, {:.1} s",
                15 * panels,
                run.sweeps,
                ti.seconds
            ),
        },
    )
}

/// `nrg mc phi4|on … --ti`.
fn phi4_ti(action: PhiFour, run: &RunArgs, reference_a: Option<f64>) -> Result<()> {
    use nrg_core::OnLattice;
    if run.algo != Algo::Hmc {
        bail!("--ti for φ⁴ runs HMC chains: use --algo hmc");
    }
    let settings = Phi4TiSettings {
        run: run_config(run),
        step: run.step,
        leapfrog: run.md_steps,
        target_acceptance: run.target_acceptance.unwrap_or(0.8),
        seed: run.seed,
        reference_a,
    };
    let bar = ti_progress(15)?;
    let ti = phi4_ln_z_by_ti(&action, &settings, &mut |k| bar.set_position(k as u64))?;
    bar.finish_and_clear();
    let lattice = action.lattice();
    write_ti(
        &run.out,
        TiReport {
            summary: serde_json::to_value(&ti)?,
            extra: json!({
                "model": {
                    "model": nrg_core::Action::describe(&action),
                    "n": action.channels(), "dim": lattice.dim(), "L": lattice.l(),
                    "form": action.form(),
                },
                "algorithm": "hmc", "run": settings.run, "seed": run.seed,
            }),
            columns: ("t", "delta_s"),
            nodes: &ti.integral.nodes,
            ln_z: ti.ln_z,
            quadrature: ti.quadrature_error,
            exact: ti.exact.as_ref(),
            headline: format!(
                "thermodynamic integration from the Gaussian reference a₀ = {} (ln Z₀ = {}), \
                 15 nodes × {} trajectories, {:.1} s",
                ti.reference_a, ti.reference_ln_z, run.sweeps, ti.seconds
            ),
        },
    )
}
