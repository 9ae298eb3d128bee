//! `nrg sample`: physics from a trained run, with error bars.
//!
//! ```text
//! nrg sample --run runs/NAME --method nis|bar|ais|smc|nmcmc|bulk-hmc|bulk-local|hmc --samples N
//! ```
//!
//! loads `runs/NAME/config.toml` and its last checkpoint, runs the sampler with a progress
//! bar and writes `OUT/summary.json` (default `OUT = runs/NAME/sample-METHOD`): the estimates
//! with their errors (NIS: `ln Z`, free energy, `⟨S⟩`, entropy, ESS, reweighted observables;
//! chains: every observable with its `τ_int`, the acceptance, effective samples per second),
//! and beside each quantity with an exact value (the Ising solution of the lattice's
//! dimension, the free field) that value and the deviation in σ. For the relaxed Ising model
//! NIS also reports the Ising `ln Z`, free energy, energy and entropy per site (improved
//! estimators). `--save-samples` (NIS, NMCMC) writes the configurations as `samples.npy`
//! (`[N, C, L, L]`, f32; NIS adds `log_weights.npy`).
//!
//! `--method bar` (Bennett's acceptance ratio) takes `--samples` flow samples and the
//! target configurations of `--target-data X.npy` (`[N, C, L, L]` in chain order, e.g.
//! `relaxed.npy` of `nrg mc ising --algo wolff --relaxed`) or `--target-mc N` of the action's
//! baseline chain (one every `--target-every` updates: Wolff mapped to relaxed fields by the
//! exact `x | s`, HMC for the φ⁴ family; a global symmetry move before each), and reports `ln Z` with Bennett's
//! error (the target chain's `τ_int` by the Gamma method), the overlap of the two ends and the
//! one-sided estimates from each end; for the relaxed Ising model also `ln Z_Ising`.
//!
//! `--method ais` (annealed importance sampling) moves `--samples` particles from the flow's
//! density to the target along `q^{1−β} e^{−βS}`, with `--moves` HMC trajectories per stage
//! in the flow's latent space (at most `--leapfrog` steps of `--step`, the step tuned by a
//! pilot run of `--pilot` particles), and a schedule that a pilot fixes by the conditional
//! ESS `--cess` or `--stages` equal steps; `--method smc` also resamples each system of
//! `--batch` particles when its ESS falls below `--resample-ess`, and forms the errors over
//! the `samples/batch` independent systems. Both report what NIS reports (Pareto-smoothed
//! `ln Z`, observables, `k̂`) with the schedule, the step and the acceptance.
//!
//! `--samples` counts independent draws for NIS and updates per chain for the chains
//! (`--chains` of them). `hmc` is HMC on the boundary field of the same action, for
//! comparing `τ_int` per trajectory and per second with `bulk-hmc`.
//!
//! `--symmetry d4,shift=T` (NIS and NMCMC) replaces the flow's density `q` by its average
//! over a group of lattice symmetries of the action, `q_G(x) = |G|⁻¹ Σ_g q(g·x)`: the
//! translations by multiples of `T` sites (`shift=T`, `T` dividing `L`) and, with `d4`, the
//! rotations and reflections of the square. `|G|` density evaluations per sample buy
//! importance weights of smaller variance when the flow breaks those symmetries (the
//! hierarchical flow's block grid does); the action's invariance is checked before use.
//!
//! An option that does not apply to the method is refused, not ignored. The sampling itself
//! is [`nrg_run::sample::sample`].

use crate::device::{DeviceChoice, make};
use anyhow::Result;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use nrg_core::lattice::SymmetrySpec;
use nrg_run::RunDir;
use nrg_run::sample::{
    AnnealOptions, SampleMethod, SampleReport, SampleRequest, SampleResult, TargetChain, sample,
};
use std::path::PathBuf;

/// Sampling methods.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Neural importance sampling.
    Nis,
    /// Bennett's acceptance ratio between the flow and target configurations
    /// (--target-data).
    Bar,
    /// Annealed importance sampling from the flow to the target.
    Ais,
    /// Sequential Monte Carlo (AIS with resampling; errors over independent systems).
    Smc,
    /// Independence Metropolis with flow proposals.
    Nmcmc,
    /// HMC on the latents (the bulk).
    BulkHmc,
    /// Single-latent Metropolis moves in the bulk.
    BulkLocal,
    /// HMC on the boundary field (baseline).
    Hmc,
}

impl From<Method> for SampleMethod {
    fn from(m: Method) -> Self {
        match m {
            Method::Nis => SampleMethod::Nis,
            Method::Bar => SampleMethod::Bar,
            Method::Ais => SampleMethod::Ais,
            Method::Smc => SampleMethod::Smc,
            Method::Nmcmc => SampleMethod::Nmcmc,
            Method::BulkHmc => SampleMethod::BulkHmc,
            Method::BulkLocal => SampleMethod::BulkLocal,
            Method::Hmc => SampleMethod::Hmc,
        }
    }
}

/// Arguments of `nrg sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// The run directory (written by `nrg train`).
    #[arg(long)]
    run: PathBuf,
    /// Sampler.
    #[arg(long, value_enum)]
    method: Method,
    /// NIS, BAR: independent flow samples; AIS, SMC: particles; chains: measured updates per
    /// chain.
    #[arg(long, default_value_t = 10_000)]
    samples: usize,
    /// BAR: target configurations, a .npy of [N, C, L, L] in chain order (e.g. relaxed.npy
    /// of `nrg mc ising --algo wolff --relaxed`).
    #[arg(long)]
    target_data: Option<PathBuf>,
    /// BAR: draw N target configurations from the action's baseline chain instead (Wolff
    /// mapped to relaxed fields for the Ising model, HMC for φ⁴, O(n), the free field).
    #[arg(long, value_name = "N")]
    target_mc: Option<usize>,
    /// BAR with --target-mc: chain updates between configurations [default: 4].
    #[arg(long)]
    target_every: Option<usize>,
    /// NIS, BAR, NMCMC: flow samples per batch [default: 4096]; AIS: particles per batch
    /// [default: 1024]; SMC: particles per independent system [default: samples/32].
    #[arg(long)]
    batch: Option<usize>,
    /// Chains: independent chains (bulk-hmc and bulk-local move them as one batch)
    /// [default: 1].
    #[arg(long)]
    chains: Option<usize>,
    /// Chains: thermalisation updates per chain [default: samples/10, at least 100].
    #[arg(long)]
    therm: Option<usize>,
    /// bulk-hmc, hmc: initial leapfrog step, tuned during thermalisation; AIS, SMC: tuned
    /// by the pilot run [default: 0.1].
    #[arg(long)]
    step: Option<f64>,
    /// bulk-hmc, hmc: leapfrog steps per trajectory; AIS, SMC: the most (each trajectory
    /// draws its number uniformly) [default: 10].
    #[arg(long)]
    leapfrog: Option<usize>,
    /// AIS, SMC: target conditional ESS per stage of the adaptive schedule [default: 0.9].
    #[arg(long)]
    cess: Option<f64>,
    /// AIS, SMC: a fixed schedule of this many equal steps in β (instead of --cess).
    #[arg(long)]
    stages: Option<usize>,
    /// AIS, SMC: HMC trajectories per stage [default: 2].
    #[arg(long)]
    moves: Option<usize>,
    /// AIS, SMC: particles of the pilot run that fixes the schedule and the step
    /// [default: 512].
    #[arg(long)]
    pilot: Option<usize>,
    /// SMC: resample a system when its ESS per particle falls below this [default: 0.5].
    #[arg(long)]
    resample_ess: Option<f64>,
    /// bulk-local: initial width of a move, tuned during thermalisation [default: 0.5].
    #[arg(long)]
    delta: Option<f64>,
    /// bulk-local: move only the latents of this RG level (0 = finest).
    #[arg(long)]
    level: Option<usize>,
    /// NIS, BAR, NMCMC: average the flow's density over lattice symmetries of the action:
    /// `d4` (rotations and reflections), `shift=T` (translations by multiples of T sites),
    /// or both, comma-separated. Costs |G| density evaluations per sample.
    #[arg(long)]
    symmetry: Option<String>,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory (default: RUN/sample-METHOD).
    #[arg(long)]
    out: Option<PathBuf>,
    /// NIS, NMCMC: also write the configurations (samples.npy; NIS adds log_weights.npy).
    #[arg(long)]
    save_samples: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// `nrg sample …`.
pub fn run(args: SampleArgs, device_choice: DeviceChoice) -> Result<()> {
    if args.target_every.is_some() && args.target_mc.is_none() {
        anyhow::bail!("--target-every applies to --target-mc only");
    }
    let request = SampleRequest {
        method: args.method.into(),
        samples: args.samples,
        seed: args.seed,
        batch: args.batch,
        chains: args.chains,
        thermalisation: args.therm,
        step: args.step,
        leapfrog: args.leapfrog,
        delta: args.delta,
        level: args.level,
        symmetry: args
            .symmetry
            .as_deref()
            .map(SymmetrySpec::parse)
            .transpose()?,
        save_samples: args.save_samples,
        target_data: args.target_data.clone(),
        target_mc: args.target_mc.map(|n| TargetChain {
            configurations: n,
            every: args.target_every.unwrap_or(4),
            thermalisation: 1000,
        }),
        anneal: AnnealOptions {
            cess: args.cess,
            stages: args.stages,
            moves: args.moves,
            pilot: args.pilot,
            resample_ess: args.resample_ess,
        },
    };
    request.check()?;
    let run = RunDir::open(args.run.clone())?;
    let device = make(device_choice)?;
    let unit = match request.method {
        SampleMethod::Nis | SampleMethod::Bar => "samples",
        SampleMethod::Ais | SampleMethod::Smc => "particles",
        SampleMethod::BulkHmc | SampleMethod::Hmc => "trajectories",
        _ => "updates",
    };
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(request.total_work() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit}, ETA {{eta}}"
        ))
        .expect("valid template"),
    );
    if let Some(spec) = &request.symmetry
        && !args.quiet
    {
        eprintln!("averaging the flow over the lattice symmetries {spec}");
    }
    if matches!(request.method, SampleMethod::Ais | SampleMethod::Smc) && !args.quiet {
        eprintln!("pilot run: fixing the schedule and the HMC step …");
    }
    let mut out = sample(&run, &request, &device, &mut |d| bar.set_position(d as u64))?;
    out.report.device = Some(device_choice.name().to_string());
    bar.finish_and_clear();
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| run.sample_dir(request.method.name()));
    out.write(&dir)?;
    print_report(&out.report);
    println!("wrote {}", dir.join("summary.json").display());
    Ok(())
}

fn print_report(r: &SampleReport) {
    match &r.result {
        SampleResult::Nis(s) => print_weights("NIS", "samples", s),
        SampleResult::Ais(a) => {
            println!(
                "{}: {} stages, {} HMC trajectories per stage (≤ {} leapfrog steps of {:.4}), \
                 acceptance {:.3}, {:.1} resamplings per system, final ESS {:.4}; {:.1} s \
                 (pilot {:.1} s)",
                a.method.to_uppercase(),
                a.schedule.len(),
                a.moves,
                a.leapfrog,
                a.step,
                a.acceptance,
                a.resamplings,
                a.final_ess,
                a.seconds,
                a.pilot_seconds
            );
            let unit = if a.method == "smc" {
                "independent systems"
            } else {
                "particles"
            };
            print_weights(&a.method.to_uppercase(), unit, &a.estimates);
        }
        SampleResult::Bar(b) => {
            let e = &b.bar;
            if let (Some(t), Some(sec)) = (b.target_chain, b.chain_seconds) {
                println!(
                    "target: {} configurations of the baseline chain, one every {} updates \
                     after {}, {sec:.1} s",
                    t.configurations, t.every, t.thermalisation
                );
            }
            println!(
                "BAR, {} flow + {} target samples: ln Z = {} ± {} (target τ_int {:.2}), \
                 overlap {:.4}, {:.1} s",
                e.forward_samples,
                e.reverse_samples,
                e.ln_z.value,
                e.ln_z.error,
                e.ln_z.tau_int.unwrap_or(f64::NAN),
                e.overlap,
                b.seconds
            );
            println!(
                "  one-sided: flow samples {} ± {}, target samples {} ± {}",
                e.forward_only.value,
                e.forward_only.error,
                e.reverse_only.value,
                e.reverse_only.error
            );
        }
        SampleResult::Chain(s) => {
            println!(
                "{}: {} chain(s) × {} updates, acceptance {:.3}, {:.1} s",
                s.method, s.chains, s.updates, s.acceptance, s.seconds
            );
            for (name, e) in &s.observables {
                println!(
                    "  {name:>10} = {:.6} ± {:.6}   τ_int {:.2}",
                    e.estimate.value,
                    e.estimate.error,
                    e.estimate.tau_int.unwrap_or(f64::NAN)
                );
            }
        }
    }
    for (name, c) in &r.exact {
        println!(
            "  {name}: {} ± {} vs exact {} ({:.2}σ)",
            c.estimate, c.error, c.exact, c.deviation_sigma
        );
    }
}

/// Importance-sampling estimates (NIS, AIS, SMC): `ln Z`, ESS, `k̂`, and a warning when the
/// error bars cannot be trusted.
fn print_weights(method: &str, unit: &str, s: &nrg_samplers::neural::NisSummary) {
    println!(
        "{method}, {} {unit}: ln Z = {} ± {} (Pareto-smoothed weights), ESS {:.4}, \
         max weight fraction {:.2e}, Pareto k̂ {}",
        s.samples,
        s.ln_z.value,
        s.ln_z.error,
        s.ess,
        s.max_weight_fraction,
        s.pareto_k.map_or("n/a".into(), |k| format!("{k:.2}")),
    );
    if let Some(raw) = &s.ln_z_unsmoothed {
        println!("  raw weights: ln Z = {} ± {}", raw.value, raw.error);
    }
    if !s.reliable {
        match s.pareto_k {
            Some(_) => println!(
                "  warning: a heavy tail of weights for {} {unit} (k̂ at or above \
                 {:.2}): the error bars may be too small (see docs/benchmarks.md, \
                 session 14)",
                s.samples, s.pareto_k_threshold
            ),
            None => println!(
                "  warning: too few {unit} to fit the weights' tail (25 needed): the \
                 error bars may be too small"
            ),
        }
    }
}
