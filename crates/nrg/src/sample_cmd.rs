//! `nrg sample`: physics from a trained run, with error bars.
//!
//! ```text
//! nrg sample --run runs/NAME --method nis|nmcmc|bulk-hmc|bulk-local|hmc --samples N
//! ```
//!
//! loads `runs/NAME/config.toml` and its last checkpoint, runs the sampler with a progress
//! bar and writes `OUT/summary.json` (default `OUT = runs/NAME/sample-METHOD`): the estimates
//! with their errors (NIS: `ln Z`, free energy, `⟨S⟩`, entropy, ESS, reweighted observables;
//! chains: every observable with its `τ_int`, the acceptance, effective samples per second),
//! and beside each quantity with an exact value (Kaufman for the Ising model, the free field)
//! that value and the deviation in σ. For the relaxed Ising model NIS also reports the Ising
//! `ln Z`, free energy, energy and entropy per site (improved estimators). `--save-samples`
//! writes the configurations as `samples.npy` (`[N, C, L, L]`, f32; NIS adds
//! `log_weights.npy`).
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

use crate::device::{DeviceChoice, make};
use crate::output::write_json;
use crate::run_config::RunConfig;
use crate::train_cmd::find_checkpoint;
use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use nrg_core::{Action, DensityModel};
use nrg_flow::data::write_npy_f32;
use nrg_flow::{FlowBijector, FlowModel};
use nrg_lattice::exact::gaussian::GaussianExact;
use nrg_lattice::exact::ising2d::kaufman;
use nrg_lattice::{IsingRelaxed, ModelKind};
use nrg_samplers::neural::{
    ChainSettings, ChainSummary, FieldObservables, IsingImproved, Measure, NisRequest,
    SymmetrisedModel, boundary_hmc, bulk_hmc, bulk_local, nis, nmcmc,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Sampling methods.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Neural importance sampling.
    Nis,
    /// Independence Metropolis with flow proposals.
    Nmcmc,
    /// HMC on the latents (the bulk).
    BulkHmc,
    /// Single-latent Metropolis moves in the bulk.
    BulkLocal,
    /// HMC on the boundary field (baseline).
    Hmc,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Nis => "nis",
            Method::Nmcmc => "nmcmc",
            Method::BulkHmc => "bulk-hmc",
            Method::BulkLocal => "bulk-local",
            Method::Hmc => "hmc",
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
    /// NIS: independent samples; chains: measured updates per chain.
    #[arg(long, default_value_t = 10_000)]
    samples: usize,
    /// Flow samples per batch (NIS, NMCMC proposals).
    #[arg(long, default_value_t = 4096)]
    batch: usize,
    /// Independent chains (bulk-hmc and bulk-local move them as one batch).
    #[arg(long, default_value_t = 1)]
    chains: usize,
    /// Thermalisation updates per chain (default: samples/10, at least 100).
    #[arg(long)]
    therm: Option<usize>,
    /// Initial HMC leapfrog step (tuned during thermalisation).
    #[arg(long, default_value_t = 0.1)]
    step: f64,
    /// Leapfrog steps per HMC trajectory.
    #[arg(long, default_value_t = 10)]
    leapfrog: usize,
    /// Initial width of a bulk-local move (tuned during thermalisation).
    #[arg(long, default_value_t = 0.5)]
    delta: f64,
    /// bulk-local: move only the latents of this RG level (0 = finest).
    #[arg(long)]
    level: Option<usize>,
    /// NIS, NMCMC: average the flow's density over lattice symmetries of the action:
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
    /// Also write the configurations (samples.npy; NIS adds log_weights.npy).
    #[arg(long)]
    save_samples: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn bar(total: usize, quiet: bool, what: &str) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {what}, ETA {{eta}}"
        ))
        .expect("valid template"),
    );
    bar
}

/// Loads the run's configuration and its flow from the last checkpoint, on `device`.
pub fn load_run(run: &Path, device: &Device) -> Result<(RunConfig, FlowModel)> {
    let config = RunConfig::load(&run.join("config.toml"))
        .with_context(|| format!("{} is not a run directory", run.display()))?;
    let ckpt = find_checkpoint(run)
        .with_context(|| format!("{} has no checkpoint: train it first", run.display()))?;
    let channels = config.action.channels();
    let model = config.flow.build(channels, config.action.l, device)?;
    let model = model
        .try_load_file(ckpt.join("model.bpk"))
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", ckpt.join("model.bpk").display()))?;
    Ok((config, model))
}

/// The `σ` distance of an estimate from an exact value.
fn versus(value: f64, error: f64, exact: f64) -> Value {
    json!({
        "estimate": value,
        "error": error,
        "exact": exact,
        "deviation_sigma": (value - exact).abs() / error,
    })
}

/// What the model measures: Ising improved estimators for the relaxed Ising model, field
/// moments otherwise.
fn measure_for(config: &RunConfig) -> Box<dyn Measure> {
    match config.action.model {
        ModelKind::Ising => Box::new(IsingImproved::new(
            &config.action.lattice().expect("checked"),
        )),
        _ => Box::new(FieldObservables::new(config.action.channels())),
    }
}

/// Exact chain observables where known.
fn exact_chain_values(config: &RunConfig, action: &dyn Action) -> Result<Vec<(String, f64)>> {
    let lattice = config.action.lattice()?;
    Ok(match config.action.model {
        ModelKind::Ising => {
            let beta = config.action.beta.unwrap_or(f64::NAN);
            let k = kaufman(config.action.l, beta)?;
            vec![("ising_e".into(), k.energy_per_site)]
        }
        ModelKind::FreeField => {
            let n = action.channels();
            let m2 = config.action.m2.unwrap_or(f64::NAN);
            let t = GaussianExact::free_field(lattice, n, m2)?.thermo();
            vec![
                ("phi2".into(), t.phi2),
                ("s".into(), t.action_per_site),
                ("m2".into(), t.chi / lattice.volume() as f64),
            ]
        }
        _ => Vec::new(),
    })
}

/// `nrg sample …`.
pub fn run(args: SampleArgs, device_choice: DeviceChoice) -> Result<()> {
    if args.samples < 8 || args.batch == 0 || args.chains == 0 {
        bail!("need --samples ≥ 8, --batch ≥ 1 and --chains ≥ 1");
    }
    if !(args.step.is_finite() && args.step > 0.0 && args.delta.is_finite() && args.delta > 0.0) {
        bail!("--step and --delta must be positive");
    }
    let plain = make(device_choice)?;
    plain.seed(args.seed);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run.join(format!("sample-{}", args.method.name())));
    let summary = match args.method {
        Method::Nis => run_nis(&args, &plain, &out)?,
        Method::BulkHmc => {
            let ad = plain.clone().autodiff();
            let (config, model) = load_run(&args.run, &ad)?;
            let action = config.action.build(&ad)?;
            let settings = chain_settings(&args);
            let measure = measure_for(&config);
            let pb = bar(
                settings.thermalisation + settings.updates,
                args.quiet,
                "trajectories",
            );
            let s = bulk_hmc(
                &model,
                action.as_ref(),
                measure.as_ref(),
                &settings,
                args.step,
                args.leapfrog,
                &ad,
                &mut |d| pb.set_position(d as u64),
            )?;
            pb.finish_and_clear();
            chain_json(&args, &config, action.as_ref(), &s)?
        }
        Method::Nmcmc | Method::BulkLocal => {
            let (config, model) = load_run(&args.run, &plain)?;
            let action = config.action.build(&plain)?;
            let settings = chain_settings(&args);
            let measure = measure_for(&config);
            let per = settings.thermalisation + settings.updates;
            // NMCMC runs its chains one after another; bulk-local moves them as one batch.
            let total = if args.method == Method::Nmcmc {
                settings.chains * per
            } else {
                per
            };
            let pb = bar(total, args.quiet, "updates");
            let mut kept = Vec::new();
            let s = if args.method == Method::Nmcmc {
                let symmetrised = symmetrise(&args, &config, &model, action.as_ref(), &plain)?;
                let proposal: &dyn DensityModel = match &symmetrised {
                    Some(m) => m,
                    None => &model,
                };
                nmcmc(
                    proposal,
                    action.as_ref(),
                    measure.as_ref(),
                    &settings,
                    args.batch,
                    &plain,
                    &mut |d| pb.set_position(d as u64),
                    args.save_samples.then_some(&mut kept),
                )?
            } else {
                let allowed = level_latents(&config, &model, args.level)?;
                bulk_local(
                    &model,
                    action.as_ref(),
                    measure.as_ref(),
                    &settings,
                    args.delta,
                    &allowed,
                    &plain,
                    &mut |d| pb.set_position(d as u64),
                )?
            };
            pb.finish_and_clear();
            if args.save_samples && !kept.is_empty() {
                save_samples(&out, &config, &kept)?;
            }
            chain_json(&args, &config, action.as_ref(), &s)?
        }
        Method::Hmc => {
            let config = RunConfig::load(&args.run.join("config.toml"))
                .with_context(|| format!("{} is not a run directory", args.run.display()))?;
            let action = config.action.build(&plain)?;
            let settings = chain_settings(&args);
            let measure = measure_for(&config);
            let total = settings.chains * (settings.thermalisation + settings.updates);
            let pb = bar(total, args.quiet, "trajectories");
            let starts =
                vec![vec![0.0; action.channels() * action.lattice().volume()]; args.chains];
            let mut tick = |d: usize| pb.set_position(d as u64);
            let (m, step, leapfrog) = (measure.as_ref(), args.step, args.leapfrog);
            let s = match config.action.model {
                ModelKind::Ising => {
                    let host = config.action.build_ising(&plain)?;
                    boundary_hmc(&host, starts, m, &settings, step, leapfrog, &mut tick)?
                }
                _ => {
                    let host = config.action.build_phi4()?;
                    boundary_hmc(&host, starts, m, &settings, step, leapfrog, &mut tick)?
                }
            };
            pb.finish_and_clear();
            chain_json(&args, &config, action.as_ref(), &s)?
        }
    };
    write_json(&out.join("summary.json"), &summary)?;
    print_summary(&summary);
    println!("wrote {}", out.join("summary.json").display());
    Ok(())
}

/// The `--symmetry` group: `(shift, point_group)`.
fn parse_symmetry(spec: &str, l: usize) -> Result<(usize, bool)> {
    let (mut shift, mut point) = (l, false);
    for token in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match token.split_once('=') {
            None if token == "d4" => point = true,
            Some(("shift", t)) => {
                shift = t
                    .parse()
                    .with_context(|| format!("--symmetry: `{t}` is not a number of sites"))?
            }
            _ => bail!("--symmetry: unknown element `{token}` (expected `d4` or `shift=T`)"),
        }
    }
    Ok((shift, point))
}

/// The flow's density averaged over `--symmetry`, if given.
fn symmetrise<'a>(
    args: &SampleArgs,
    config: &RunConfig,
    model: &'a FlowModel,
    action: &dyn Action,
    device: &Device,
) -> Result<Option<SymmetrisedModel<'a>>> {
    let Some(spec) = &args.symmetry else {
        return Ok(None);
    };
    let lattice = config.action.lattice()?;
    let (shift, point) = parse_symmetry(spec, lattice.l())?;
    let group = lattice.symmetry_group(shift, point)?;
    let size = group.len();
    let m = SymmetrisedModel::new(model, action, group, device)?;
    if !args.quiet {
        eprintln!("averaging the flow over {size} lattice symmetries ({spec})");
    }
    Ok(Some(m))
}

fn chain_settings(args: &SampleArgs) -> ChainSettings {
    ChainSettings {
        chains: args.chains,
        thermalisation: args.therm.unwrap_or((args.samples / 10).max(100)),
        updates: args.samples,
        seed: args.seed,
    }
}

/// Flat latent indices of one bulk level (empty: all).
fn level_latents(
    config: &RunConfig,
    model: &FlowModel,
    level: Option<usize>,
) -> Result<Vec<usize>> {
    let Some(level) = level else {
        return Ok(Vec::new());
    };
    let FlowBijector::Hierarchical(flow) = &model.bijector else {
        bail!("--level needs a hierarchical flow");
    };
    let sites = flow.bulk_sites();
    let v = sites.len();
    let top = sites.iter().map(|s| s.level).max().unwrap_or(0);
    if level > top {
        bail!("--level {level} does not exist: the flow's levels are 0 … {top}");
    }
    let channels = config.action.channels();
    Ok((0..channels)
        .flat_map(|c| {
            sites
                .iter()
                .enumerate()
                .filter(move |(_, s)| s.level == level)
                .map(move |(i, _)| c * v + i)
        })
        .collect())
}

fn save_samples(out: &Path, config: &RunConfig, configs: &[f32]) -> Result<()> {
    let c = config.action.channels();
    let l = config.action.l;
    let n = configs.len() / (c * l * l);
    std::fs::create_dir_all(out)?;
    write_npy_f32(&out.join("samples.npy"), configs, &[n, c, l, l])?;
    Ok(())
}

fn chain_json(
    args: &SampleArgs,
    config: &RunConfig,
    action: &dyn Action,
    s: &ChainSummary,
) -> Result<Value> {
    let mut exact = serde_json::Map::new();
    for (name, value) in exact_chain_values(config, action)? {
        if let Some(e) = s.observables.get(&name) {
            exact.insert(name, versus(e.estimate.value, e.estimate.error, value));
        }
    }
    Ok(json!({
        "run": args.run,
        "method": args.method.name(),
        "symmetry": args.symmetry,
        "action": action.describe(),
        "result": s,
        "exact": exact,
    }))
}

fn run_nis(args: &SampleArgs, device: &Device, out: &Path) -> Result<Value> {
    let (config, model) = load_run(&args.run, device)?;
    let action = config.action.build(device)?;
    let measure = measure_for(&config);
    let volume = action.lattice().volume() as f64;
    let ising: Option<IsingRelaxed> = match config.action.model {
        ModelKind::Ising => Some(config.action.build_ising(device)?),
        _ => None,
    };
    let derived = match &ising {
        // ln Z_x + βV⟨e⟩: with the offset, ln Z_Ising − β⟨H⟩ = V × the Ising entropy per site.
        Some(a) => vec![(
            "ising_ln_z_plus_beta_e".into(),
            "ising_e".into(),
            a.beta() * volume,
        )],
        None => Vec::new(),
    };
    let request = NisRequest {
        measure: measure.as_ref(),
        derived,
    };
    let symmetrised = symmetrise(args, &config, &model, action.as_ref(), device)?;
    let proposal: &dyn DensityModel = match &symmetrised {
        Some(m) => m,
        None => &model,
    };
    let pb = bar(args.samples, args.quiet, "samples");
    let mut kept = (Vec::new(), Vec::new());
    let keep = args.save_samples.then_some(&mut kept);
    let s = nis(
        proposal,
        action.as_ref(),
        &request,
        args.samples,
        args.batch,
        device,
        &mut |d| pb.set_position(d as u64),
        keep,
    )?;
    pb.finish_and_clear();
    if args.save_samples {
        save_samples(out, &config, &kept.0)?;
        let lw: Vec<f32> = kept.1.iter().map(|v| *v as f32).collect();
        write_npy_f32(&out.join("log_weights.npy"), &lw, &[lw.len()])?;
    }
    let mut exact = serde_json::Map::new();
    if let Some(ln_z) = action.exact_ln_z() {
        exact.insert("ln_z".into(), versus(s.ln_z.value, s.ln_z.error, ln_z));
    }
    let mut ising_json = Value::Null;
    if let Some(a) = &ising {
        let beta = a.beta();
        let off = a.ln_z_offset();
        let ln_z = s.ln_z.value + off;
        let err = s.ln_z.error;
        let e = s.observables["ising_e"];
        let ent = s.derived["ising_ln_z_plus_beta_e"];
        ising_json = json!({
            "ln_z": {"value": ln_z, "error": err},
            "free_energy_per_site": {"value": -ln_z / (beta * volume), "error": err / (beta * volume)},
            "energy_per_site": e,
            "entropy_per_site": {"value": (ent.value + off) / volume, "error": ent.error / volume},
        });
        if let Ok(k) = kaufman(config.action.l, beta) {
            exact.insert("ising_ln_z".into(), versus(ln_z, err, k.ln_z));
            exact.insert(
                "ising_energy_per_site".into(),
                versus(e.value, e.error, k.energy_per_site),
            );
            let s_exact = k.ln_z / volume + beta * k.energy_per_site;
            exact.insert(
                "ising_entropy_per_site".into(),
                versus((ent.value + off) / volume, ent.error / volume, s_exact),
            );
        }
    }
    if config.action.model == ModelKind::FreeField
        && let Ok(t) = GaussianExact::free_field(
            config.action.lattice()?,
            action.channels(),
            config.action.m2.unwrap_or(f64::NAN),
        )
        .map(|g| g.thermo())
    {
        let phi2 = s.observables["phi2"];
        exact.insert("phi2".into(), versus(phi2.value, phi2.error, t.phi2));
    }
    Ok(json!({
        "run": args.run,
        "method": "nis",
        "symmetry": args.symmetry,
        "action": action.describe(),
        "result": s,
        "free_energy_per_site": {"value": -s.ln_z.value / volume, "error": s.ln_z.error / volume},
        "ising": ising_json,
        "exact": exact,
    }))
}

fn print_summary(v: &Value) {
    let method = v["method"].as_str().unwrap_or("");
    let r = &v["result"];
    if method == "nis" {
        println!(
            "NIS, {} samples: ln Z = {} ± {}, ESS {:.4}, max weight fraction {:.2e}, \
             Pareto k̂ {}",
            r["samples"],
            r["ln_z"]["value"],
            r["ln_z"]["error"],
            r["ess"].as_f64().unwrap_or(0.0),
            r["max_weight_fraction"].as_f64().unwrap_or(0.0),
            match r["pareto_k"].as_f64() {
                Some(k) if k >= 0.7 =>
                    format!("{k:.2} (a heavy tail: the error bars may be too small)"),
                Some(k) => format!("{k:.2}"),
                None => "n/a".into(),
            }
        );
    } else {
        println!(
            "{method}: {} chain(s) × {} updates, acceptance {:.3}, {:.1} s",
            r["chains"],
            r["updates"],
            r["acceptance"].as_f64().unwrap_or(0.0),
            r["seconds"].as_f64().unwrap_or(0.0)
        );
        if let Some(obs) = r["observables"].as_object() {
            for (name, e) in obs {
                println!(
                    "  {name:>10} = {:.6} ± {:.6}   τ_int {:.2}",
                    e["value"].as_f64().unwrap_or(f64::NAN),
                    e["error"].as_f64().unwrap_or(f64::NAN),
                    e["tau_int"].as_f64().unwrap_or(f64::NAN)
                );
            }
        }
    }
    if let Some(exact) = v["exact"].as_object() {
        for (name, c) in exact {
            println!(
                "  {name}: {} ± {} vs exact {} ({:.2}σ)",
                c["estimate"],
                c["error"],
                c["exact"],
                c["deviation_sigma"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
}
