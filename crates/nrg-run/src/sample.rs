//! Sampling a trained run: NIS, Bennett's acceptance ratio against exact target
//! configurations (BAR), annealed importance sampling and sequential Monte Carlo from the
//! flow (AIS, SMC), NMCMC, bulk HMC, bulk local moves, or boundary HMC beside them, with
//! every estimate's error and, where the model is solvable, the exact value and the
//! deviation in σ ([`crate::reference`]).
//!
//! A [`SampleRequest`] names the method and only the options that apply to it: an option
//! that would do nothing (a symmetry average for a chain in the bulk, `save_samples` for a
//! chain that does not keep its configurations, a leapfrog count for NIS, …) is refused by
//! [`SampleRequest::check`] rather than ignored.

use crate::dir::{RunDir, write_json};
use crate::reference;
use burn::tensor::Device;
use nrg_core::lattice::SymmetrySpec;
use nrg_core::stats::ExactComparison;
use nrg_core::{Action, DensityModel, Estimate, NrgError, Result};
use nrg_flow::data::{write_npy_f32, write_npy_f64};
use nrg_flow::{FlowBijector, FlowModel};
use nrg_lattice::ModelKind;
use nrg_samplers::free_energy::{BarEstimate, SampleOrder};
use nrg_samplers::neural::{
    AisMoves, AisRequest, AisSchedule, AisSummary, BarRequest, ChainSettings, ChainSummary,
    ChainTarget, DerivedLnZ, HmcSettings, Kept, LocalSettings, Measure, NisRequest, NisSummary,
    NmcmcSettings, Resampling, SymmetrisedModel, ais, bar_with_flow, boundary_hmc, bulk_hmc,
    bulk_local, nis, nmcmc,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The samplers of a trained run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SampleMethod {
    /// Neural importance sampling.
    Nis,
    /// Bennett's acceptance ratio between the flow and target configurations.
    Bar,
    /// Annealed importance sampling from the flow to the target.
    Ais,
    /// Sequential Monte Carlo (AIS with resampling) from the flow to the target.
    Smc,
    /// Independence Metropolis with flow proposals.
    Nmcmc,
    /// HMC on the latents (the bulk).
    BulkHmc,
    /// Single-latent Metropolis moves in the bulk.
    BulkLocal,
    /// HMC on the boundary field (the baseline beside the others).
    Hmc,
}

impl SampleMethod {
    /// The method's name (`nis`, `nmcmc`, `bulk-hmc`, `bulk-local`, `hmc`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Nis => "nis",
            Self::Bar => "bar",
            Self::Ais => "ais",
            Self::Smc => "smc",
            Self::Nmcmc => "nmcmc",
            Self::BulkHmc => "bulk-hmc",
            Self::BulkLocal => "bulk-local",
            Self::Hmc => "hmc",
        }
    }

    fn is_chain(self) -> bool {
        !matches!(self, Self::Nis | Self::Bar | Self::Ais | Self::Smc)
    }
}

/// What to sample, and how. `None` options take the method's default; an option given for a
/// method it does not apply to is an error ([`SampleRequest::check`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SampleRequest {
    /// The sampler.
    pub method: SampleMethod,
    /// NIS: independent samples; chains: measured updates per chain.
    pub samples: usize,
    /// Random seed.
    pub seed: u64,
    /// NIS, BAR, NMCMC: flow samples per batch (default 4096); AIS: particles per batch
    /// (default 1024); SMC: per independent system (default `⌊samples/32⌋`: 32 systems).
    pub batch: Option<usize>,
    /// Chains: independent chains (default 1).
    pub chains: Option<usize>,
    /// Chains: thermalisation updates per chain (default `samples/10`, at least 100).
    pub thermalisation: Option<usize>,
    /// bulk-hmc, hmc: initial leapfrog step, adapted during thermalisation; AIS, SMC:
    /// adapted during the pilot run (default 0.1).
    pub step: Option<f64>,
    /// bulk-hmc, hmc: leapfrog steps per trajectory; AIS, SMC: the most, each trajectory
    /// drawing its number uniformly (default 10).
    pub leapfrog: Option<usize>,
    /// bulk-local: initial width of a move, adapted during thermalisation (default 0.5).
    pub delta: Option<f64>,
    /// bulk-local: move only the latents of this RG level (0 = finest).
    pub level: Option<usize>,
    /// NIS, BAR, NMCMC: average the flow's density over these lattice symmetries of the
    /// action.
    pub symmetry: Option<SymmetrySpec>,
    /// NIS, NMCMC: keep the configurations (and NIS's log-weights).
    pub save_samples: bool,
    /// BAR: the target configurations, a `.npy` of `[N, C, L, L]` in chain order (e.g.
    /// `relaxed.npy` of `nrg mc ising --relaxed`); BAR needs this or `target_mc`.
    pub target_data: Option<PathBuf>,
    /// BAR: draw the target configurations from the action's baseline chain instead.
    pub target_mc: Option<TargetChain>,
    /// AIS, SMC: the annealing options.
    pub anneal: AnnealOptions,
}

/// Target configurations of BAR drawn from the run action's baseline chain: Wolff for the
/// Ising model (mapped to relaxed fields by the exact `x | s`), HMC for the φ⁴ family, with a
/// global symmetry move before each measurement (the target is invariant under it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetChain {
    /// Configurations measured.
    pub configurations: usize,
    /// Updates (Wolff clusters, HMC trajectories) between measurements.
    pub every: usize,
    /// Updates before the first measurement.
    pub thermalisation: usize,
}

/// Independent systems of a default SMC run.
const SMC_SYSTEMS: usize = 32;

/// The options of AIS and SMC ([`nrg_samplers::neural::ais`]); `None` takes the default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnnealOptions {
    /// Target conditional ESS per stage of the adaptive schedule (default 0.9).
    pub cess: Option<f64>,
    /// A fixed schedule of this many equal steps in β instead.
    pub stages: Option<usize>,
    /// HMC trajectories per stage (default 2).
    pub moves: Option<usize>,
    /// Particles of the pilot run that fixes the schedule and the step (default 512).
    pub pilot: Option<usize>,
    /// SMC: resample a system when its ESS falls below this fraction (default 0.5).
    pub resample_ess: Option<f64>,
}

impl SampleRequest {
    /// `samples` draws (or updates per chain) of `method`, seed 1, defaults elsewhere.
    pub fn new(method: SampleMethod, samples: usize) -> Self {
        Self {
            method,
            samples,
            seed: 1,
            batch: None,
            chains: None,
            thermalisation: None,
            step: None,
            leapfrog: None,
            delta: None,
            level: None,
            symmetry: None,
            save_samples: false,
            target_data: None,
            target_mc: None,
            anneal: AnnealOptions::default(),
        }
    }

    /// Refuses options that do not apply to the method, and values out of range.
    pub fn check(&self) -> Result<()> {
        use SampleMethod::*;
        let m = self.method;
        let a = &self.anneal;
        let given: [(&str, bool, &[SampleMethod]); 16] = [
            ("batch", self.batch.is_some(), &[Nis, Bar, Nmcmc, Ais, Smc]),
            (
                "chains",
                self.chains.is_some(),
                &[Nmcmc, BulkHmc, BulkLocal, Hmc],
            ),
            (
                "therm",
                self.thermalisation.is_some(),
                &[Nmcmc, BulkHmc, BulkLocal, Hmc],
            ),
            ("step", self.step.is_some(), &[BulkHmc, Hmc, Ais, Smc]),
            (
                "leapfrog",
                self.leapfrog.is_some(),
                &[BulkHmc, Hmc, Ais, Smc],
            ),
            ("delta", self.delta.is_some(), &[BulkLocal]),
            ("level", self.level.is_some(), &[BulkLocal]),
            // Not AIS/SMC: their moves need ∂ ln q/∂z, and the symmetry average's density
            // is formed on the host (no gradient).
            ("symmetry", self.symmetry.is_some(), &[Nis, Bar, Nmcmc]),
            ("save-samples", self.save_samples, &[Nis, Nmcmc]),
            ("target-data", self.target_data.is_some(), &[Bar]),
            ("target-mc", self.target_mc.is_some(), &[Bar]),
            ("cess", a.cess.is_some(), &[Ais, Smc]),
            ("stages", a.stages.is_some(), &[Ais, Smc]),
            ("moves", a.moves.is_some(), &[Ais, Smc]),
            ("pilot", a.pilot.is_some(), &[Ais, Smc]),
            ("resample-ess", a.resample_ess.is_some(), &[Smc]),
        ];
        for (name, set, applies) in given {
            if set && !applies.contains(&m) {
                let names: Vec<&str> = applies.iter().map(|a| a.name()).collect();
                return Err(NrgError::param(
                    name,
                    format!(
                        "does not apply to {} (only to {})",
                        m.name(),
                        names.join(", ")
                    ),
                ));
            }
        }
        if m == Bar && self.target_data.is_none() && self.target_mc.is_none() {
            return Err(NrgError::param(
                "target-data",
                "BAR needs target configurations: --target-data X.npy (e.g. relaxed.npy of \
                 `nrg mc ising --algo wolff --relaxed`) or --target-mc N (the baseline chain)",
            ));
        }
        if self.target_data.is_some() && self.target_mc.is_some() {
            return Err(NrgError::param(
                "target-mc",
                "--target-data and --target-mc exclude each other",
            ));
        }
        if let Some(t) = self.target_mc {
            if t.every == 0 {
                return Err(NrgError::param(
                    "target-every",
                    "needs ≥ 1 chain update between target configurations",
                ));
            }
            let updates = t
                .configurations
                .checked_mul(t.every)
                .and_then(|u| u.checked_add(t.thermalisation))
                .and_then(|u| u.checked_add(self.samples));
            if t.configurations < 2 || updates.is_none_or(|u| u > 1 << 40) {
                return Err(NrgError::param(
                    "target-mc",
                    "needs ≥ 2 configurations, and fewer chain updates than 2⁴⁰",
                ));
            }
        }
        if a.cess.is_some() && a.stages.is_some() {
            return Err(NrgError::param(
                "stages",
                "a fixed schedule (--stages) and an adaptive one (--cess) exclude each other",
            ));
        }
        if let Some(c) = a.cess
            && !(c > 0.0 && c < 1.0)
        {
            return Err(NrgError::param(
                "cess",
                format!("must be in (0, 1), got {c}"),
            ));
        }
        if let Some(t) = a.resample_ess
            && !(t > 0.0 && t <= 1.0)
        {
            return Err(NrgError::param(
                "resample-ess",
                format!("must be in (0, 1], got {t}"),
            ));
        }
        if a.stages == Some(0) || a.pilot.is_some_and(|p| p < 2) {
            return Err(NrgError::param("stages/pilot", "stages ≥ 1 and pilot ≥ 2"));
        }
        if a.moves == Some(0) && (self.step.is_some() || self.leapfrog.is_some()) {
            return Err(NrgError::param(
                "step/leapfrog",
                "do not apply with --moves 0 (no HMC moves: AIS is then NIS)",
            ));
        }
        if m == Smc {
            let batch = self.smc_batch();
            if batch == 0 {
                return Err(NrgError::param(
                    "samples",
                    format!(
                        "SMC's default is {SMC_SYSTEMS} independent systems: {} particles are too \
                         few (give ≥ {} or set --batch)",
                        self.samples, SMC_SYSTEMS
                    ),
                ));
            }
            if self.samples / batch < 2 {
                return Err(NrgError::param(
                    "samples",
                    format!(
                        "SMC forms its errors over independent systems of --batch particles: \
                         {} particles in systems of {batch} make fewer than 2 (aim for ≥ 25)",
                        self.samples
                    ),
                ));
            }
            if self.batch.is_some() && !self.samples.is_multiple_of(batch) {
                return Err(NrgError::param(
                    "samples",
                    format!(
                        "SMC needs whole systems: {} particles are not a multiple of --batch \
                         {batch}",
                        self.samples
                    ),
                ));
            }
        }
        if self.samples < 8 {
            return Err(NrgError::param("samples", "must be ≥ 8"));
        }
        if self.batch == Some(0) || self.chains == Some(0) || self.leapfrog == Some(0) {
            return Err(NrgError::param(
                "batch/chains/leapfrog",
                "must be ≥ 1 where given",
            ));
        }
        for (name, v) in [("step", self.step), ("delta", self.delta)] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(NrgError::param(name, format!("must be > 0, got {v}")));
            }
        }
        Ok(())
    }

    fn chain_settings(&self) -> ChainSettings {
        ChainSettings {
            chains: self.chains.unwrap_or(1),
            thermalisation: self.thermalisation.unwrap_or((self.samples / 10).max(100)),
            updates: self.samples,
            seed: self.seed,
        }
    }

    fn hmc(&self) -> HmcSettings {
        HmcSettings {
            step: self.step.unwrap_or(0.1),
            leapfrog: self.leapfrog.unwrap_or(10),
        }
    }

    /// SMC's particles per system: `--batch`, or `⌊samples/32⌋` (32 systems, enough for the
    /// tail diagnostic).
    fn smc_batch(&self) -> usize {
        self.batch.unwrap_or(self.samples / SMC_SYSTEMS)
    }

    /// The AIS/SMC request (the measure and derived quantities filled in by the caller).
    fn anneal_request<'a>(
        &self,
        measure: &'a dyn Measure,
        derived: Vec<DerivedLnZ>,
    ) -> AisRequest<'a> {
        let a = &self.anneal;
        let hmc = self.hmc();
        let (samples, batch) = match self.method {
            // Whole systems: with the default batch, 32 systems of ⌊samples/32⌋.
            SampleMethod::Smc => {
                let batch = self.smc_batch().max(1);
                (self.samples / batch * batch, batch)
            }
            _ => (self.samples, self.batch.unwrap_or(1024)),
        };
        AisRequest {
            measure,
            derived,
            samples,
            batch,
            pilot: a.pilot.unwrap_or(512),
            schedule: match a.stages {
                Some(t) => AisSchedule::Fixed((1..=t).map(|k| k as f64 / t as f64).collect()),
                None => AisSchedule::Adaptive {
                    cess: a.cess.unwrap_or(0.9),
                    max_stages: 1000,
                },
            },
            moves: AisMoves {
                moves: a.moves.unwrap_or(2),
                leapfrog: hmc.leapfrog,
                step: hmc.step,
            },
            resampling: match self.method {
                SampleMethod::Smc => Resampling::BelowEss(a.resample_ess.unwrap_or(0.5)),
                _ => Resampling::Never,
            },
            seed: self.seed,
        }
    }

    /// Updates (or samples) in all, for a progress bar.
    pub fn total_work(&self) -> usize {
        if self.method.is_chain() {
            let s = self.chain_settings();
            match self.method {
                // bulk chains move as one batch
                SampleMethod::BulkHmc | SampleMethod::BulkLocal => s.thermalisation + s.updates,
                _ => s.chains * (s.thermalisation + s.updates),
            }
        } else {
            self.samples
        }
    }
}

/// The relaxed Ising model's quantities from NIS, after the exact offset to `ln Z_Ising`
/// (improved estimators).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct IsingNis {
    /// `ln Z_Ising`.
    pub ln_z: Estimate,
    /// Free energy per site `−ln Z/(βV)`.
    pub free_energy_per_site: Estimate,
    /// Energy per site.
    pub energy_per_site: Estimate,
    /// Entropy per site `(ln Z − β⟨H⟩)/V`.
    pub entropy_per_site: Estimate,
}

/// A sampler's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleResult {
    /// NIS.
    Nis(Box<NisSummary>),
    /// A Markov chain.
    Chain(ChainSummary),
    /// Bennett's acceptance ratio.
    Bar(Box<BarSummary>),
    /// AIS or SMC.
    Ais(Box<AisSummary>),
}

/// The result of BAR between a run's flow and target configurations.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BarSummary {
    /// The estimate, its error, the overlap and the one-sided estimates.
    pub bar: BarEstimate,
    /// The file the target configurations came from (`None`: the baseline chain).
    pub target_data: Option<PathBuf>,
    /// The baseline chain the target configurations came from, if not a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_chain: Option<TargetChain>,
    /// Wall time of that chain, seconds (not in `seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_seconds: Option<f64>,
    /// Wall time of the sampling and the density evaluations, seconds.
    pub seconds: f64,
}

/// What `sample-METHOD/summary.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleReport {
    /// The run directory.
    pub run: PathBuf,
    /// The sampler.
    pub method: SampleMethod,
    /// The symmetry average of the flow, if any (`d4,shift=2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetry: Option<String>,
    /// The action, described.
    pub action: String,
    /// The estimates.
    pub result: SampleResult,
    /// NIS, BAR, AIS, SMC: the free energy per site `−ln Z/V`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_energy_per_site: Option<Estimate>,
    /// NIS, AIS, SMC of the relaxed Ising model: the Ising quantities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ising: Option<IsingNis>,
    /// Exact values beside the estimates, where known.
    pub exact: BTreeMap<String, ExactComparison>,
    /// The random seed of the sampling (`None` in summaries written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The backend it ran on, as the caller names it (`nrg sample` writes its `--device`);
    /// [`sample`] leaves it `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// A report and, when asked for, the configurations behind it.
#[derive(Clone, Debug)]
pub struct SampleOutput {
    /// The report.
    pub report: SampleReport,
    /// The configurations (`[N, C, L, L]`) and NIS's log-weights.
    pub kept: Option<Kept>,
    shape: [usize; 3],
}

impl SampleOutput {
    /// Writes `out/summary.json` and, with kept configurations, `out/samples.npy`
    /// (`[N, C, L, L]`, f32) and for NIS `out/log_weights.npy`.
    pub fn write(&self, out: &Path) -> Result<()> {
        write_json(&out.join("summary.json"), &self.report)?;
        if let Some(kept) = &self.kept {
            let [c, l, w] = self.shape;
            let n = kept.configurations.len() / (c * l * w);
            write_npy_f32(
                &out.join("samples.npy"),
                &kept.configurations,
                &[n, c, l, w],
            )?;
            if !kept.log_weights.is_empty() {
                let lw = &kept.log_weights;
                write_npy_f64(&out.join("log_weights.npy"), lw, &[lw.len()])?;
            }
        }
        Ok(())
    }
}

/// Samples the run in `run` as `request` says, on `device` (not autodiff: bulk HMC makes its
/// own autodiff device from it). `progress` gets the work done so far (out of
/// [`SampleRequest::total_work`]).
pub fn sample(
    run: &RunDir,
    request: &SampleRequest,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<SampleOutput> {
    request.check()?;
    device.seed(request.seed);
    let config = run.config()?;
    let shape = [
        config.action.channels(),
        config.action.l,
        config.action.lattice()?.cols(),
    ];
    let spec = &config.action;
    let measure = reference::measure_for(spec)?;
    let settings = request.chain_settings();
    let mut nis_reference = reference::NisReference::default();
    let (result, kept, action_name) = match request.method {
        SampleMethod::Nis => {
            let (_, model) = run.load_model(device)?;
            let action = spec.build(device)?;
            let derived = ising_derived(spec, action.as_ref());
            let nis_request = NisRequest {
                measure: measure.as_ref(),
                derived,
                samples: request.samples,
                batch: request.batch.unwrap_or(4096),
                keep: request.save_samples,
            };
            let sym = symmetrise(request, &model, action.as_ref(), device)?;
            let proposal: &dyn DensityModel = sym.as_ref().map_or(&model, |m| m);
            let out = nis(proposal, action.as_ref(), &nis_request, device, progress)?;
            let ising = match spec.model {
                ModelKind::Ising => Some(spec.build_ising(device)?),
                _ => None,
            };
            nis_reference = reference::NisReference::of(action.as_ref(), ising.as_ref());
            (
                SampleResult::Nis(Box::new(out.summary)),
                out.kept,
                action.describe(),
            )
        }
        SampleMethod::Bar => {
            let chain_updates = request.target_mc.map_or(0, |t| {
                t.thermalisation
                    .saturating_add(t.configurations.saturating_mul(t.every))
            });
            // Progress in flow samples: the chain, then both ends, scaled onto `samples`
            // (in f64: the products of counts may not fit a usize).
            let s = request.samples as f64;
            let total = s + chain_updates as f64;
            let chain_start = std::time::Instant::now();
            let target = match (&request.target_data, request.target_mc) {
                (Some(path), _) => {
                    let (target, tshape) = nrg_flow::data::read_configurations(path)?;
                    if tshape[1..] != shape {
                        return Err(NrgError::InvalidData(format!(
                            "{}: configurations of shape {:?}, the run's are {shape:?}",
                            path.display(),
                            &tshape[1..]
                        )));
                    }
                    check_target_beta(path, spec)?;
                    target
                }
                (None, Some(t)) => crate::holo::chain_samples(
                    spec,
                    device,
                    (t.configurations, t.every, t.thermalisation),
                    request.seed.wrapping_add(0x7a2e),
                    &mut |done| progress((done as f64 * s / total) as usize),
                )?,
                (None, None) => {
                    return Err(NrgError::param(
                        "target-data",
                        "BAR needs target configurations",
                    ));
                }
            };
            let chain_seconds = request
                .target_mc
                .map(|_| chain_start.elapsed().as_secs_f64());
            let (_, model) = run.load_model(device)?;
            let action = spec.build(device)?;
            let sym = symmetrise(request, &model, action.as_ref(), device)?;
            let proposal: &dyn DensityModel = sym.as_ref().map_or(&model, |m| m);
            let bar_request = BarRequest {
                samples: request.samples,
                batch: request.batch.unwrap_or(4096),
                target: &target,
                target_order: SampleOrder::Chain,
            };
            let start = std::time::Instant::now();
            let ends = (request.samples + target.len() / shape.iter().product::<usize>()) as f64;
            let mut scaled = |k: usize| {
                let done = chain_updates as f64 + k as f64 * s / ends;
                progress((done * s / total) as usize)
            };
            let estimate =
                bar_with_flow(proposal, action.as_ref(), &bar_request, device, &mut scaled)?;
            let ising = match spec.model {
                ModelKind::Ising => Some(spec.build_ising(device)?),
                _ => None,
            };
            nis_reference = reference::NisReference::of(action.as_ref(), ising.as_ref());
            let summary = BarSummary {
                bar: estimate,
                target_data: request.target_data.clone(),
                target_chain: request.target_mc,
                chain_seconds,
                seconds: start.elapsed().as_secs_f64(),
            };
            (
                SampleResult::Bar(Box::new(summary)),
                None,
                action.describe(),
            )
        }
        SampleMethod::Ais | SampleMethod::Smc => {
            let ad = device.clone().autodiff();
            let (_, model) = run.load_model(&ad)?;
            let action = spec.build(&ad)?;
            let derived = ising_derived(spec, action.as_ref());
            let ais_request = request.anneal_request(measure.as_ref(), derived);
            // The path starts at the flow's own density (Z₂-symmetrised if it was trained
            // so: both magnetisation sectors), else at its prior.
            let start: Option<&dyn DensityModel> = model.symmetrised().then_some(&model as _);
            let out = ais(&model, start, action.as_ref(), &ais_request, &ad, progress)?;
            let ising = match spec.model {
                ModelKind::Ising => Some(spec.build_ising(&ad)?),
                _ => None,
            };
            nis_reference = reference::NisReference::of(action.as_ref(), ising.as_ref());
            (
                SampleResult::Ais(Box::new(out.summary)),
                None,
                action.describe(),
            )
        }
        SampleMethod::Nmcmc => {
            let (_, model) = run.load_model(device)?;
            let action = spec.build(device)?;
            let target = ChainTarget {
                action: action.as_ref(),
                measure: measure.as_ref(),
            };
            let options = NmcmcSettings {
                batch: request.batch.unwrap_or(4096),
                keep: request.save_samples,
            };
            let sym = symmetrise(request, &model, action.as_ref(), device)?;
            let proposal: &dyn DensityModel = sym.as_ref().map_or(&model, |m| m);
            let out = nmcmc(proposal, &target, &settings, &options, device, progress)?;
            (
                SampleResult::Chain(out.summary),
                out.kept,
                action.describe(),
            )
        }
        SampleMethod::BulkHmc => {
            let ad = device.clone().autodiff();
            let (_, model) = run.load_model(&ad)?;
            let action = spec.build(&ad)?;
            let target = ChainTarget {
                action: action.as_ref(),
                measure: measure.as_ref(),
            };
            let s = bulk_hmc(&model, &target, &settings, &request.hmc(), &ad, progress)?;
            (SampleResult::Chain(s), None, action.describe())
        }
        SampleMethod::BulkLocal => {
            let (_, model) = run.load_model(device)?;
            let action = spec.build(device)?;
            let target = ChainTarget {
                action: action.as_ref(),
                measure: measure.as_ref(),
            };
            let local = LocalSettings {
                delta: request.delta.unwrap_or(0.5),
                allowed: level_latents(&model, shape[0], request.level)?,
            };
            let s = bulk_local(&model, &target, &settings, &local, device, progress)?;
            (SampleResult::Chain(s), None, action.describe())
        }
        SampleMethod::Hmc => {
            let action = spec.build(device)?;
            let volume = action.lattice().volume();
            let starts = vec![vec![0.0; action.channels() * volume]; settings.chains];
            let (m, hmc) = (measure.as_ref(), request.hmc());
            let s = match spec.model {
                ModelKind::Ising => {
                    let host = spec.build_ising(device)?;
                    boundary_hmc(&host, starts, m, &settings, &hmc, progress)?
                }
                _ => {
                    let host = spec.build_phi4()?;
                    boundary_hmc(&host, starts, m, &settings, &hmc, progress)?
                }
            };
            (SampleResult::Chain(s), None, action.describe())
        }
    };
    let mut report = SampleReport {
        run: run.path().to_path_buf(),
        method: request.method,
        symmetry: request.symmetry.map(|s| s.to_string()),
        action: action_name,
        result,
        free_energy_per_site: None,
        ising: None,
        exact: BTreeMap::new(),
        seed: Some(request.seed),
        device: None,
    };
    reference::compare(spec, nis_reference, &mut report)?;
    Ok(SampleOutput {
        report,
        kept,
        shape,
    })
}

/// The derived quantities importance weights give for the relaxed Ising model:
/// `ln Z_x + βV⟨e⟩` (with the offset, `ln Z_Ising − β⟨H⟩ = V ×` the entropy per site).
fn ising_derived(spec: &nrg_lattice::ActionSpec, action: &dyn Action) -> Vec<DerivedLnZ> {
    match spec.model {
        ModelKind::Ising => vec![DerivedLnZ {
            name: "ising_ln_z_plus_beta_e".into(),
            observable: "ising_e".into(),
            coefficient: spec.beta.unwrap_or(f64::NAN) * action.lattice().volume() as f64,
        }],
        _ => Vec::new(),
    }
}

/// Where the target configurations came from `nrg mc ising` (its `summary.json` beside
/// them), their `β` must be the run's: configurations of another temperature would give a
/// biased `ln Z` without any other sign.
fn check_target_beta(path: &Path, spec: &nrg_lattice::ActionSpec) -> Result<()> {
    let Some(summary) = path.parent().map(|d| d.join("summary.json")) else {
        return Ok(());
    };
    let Ok(text) = std::fs::read_to_string(&summary) else {
        return Ok(());
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(());
    };
    let model = &json["model"];
    if let (Some(beta), Some(want)) = (model["beta"].as_f64(), spec.beta)
        && model["model"] == "ising"
        && (beta - want).abs() > 1e-12 * want.abs().max(1.0)
    {
        return Err(NrgError::InvalidData(format!(
            "{}: the target configurations are at β = {beta} ({}), the run's action at β = {want}",
            path.display(),
            summary.display()
        )));
    }
    Ok(())
}

/// The flow's density averaged over the request's symmetries, if any.
fn symmetrise<'a>(
    request: &SampleRequest,
    model: &'a FlowModel,
    action: &dyn Action,
    device: &Device,
) -> Result<Option<SymmetrisedModel<'a>>> {
    let Some(spec) = &request.symmetry else {
        return Ok(None);
    };
    let group = action.lattice().symmetry_group(spec)?;
    SymmetrisedModel::new(model, action, group, device).map(Some)
}

/// Flat latent indices of one bulk level (empty: all).
fn level_latents(model: &FlowModel, channels: usize, level: Option<usize>) -> Result<Vec<usize>> {
    let Some(level) = level else {
        return Ok(Vec::new());
    };
    let FlowBijector::Hierarchical(flow) = &model.bijector else {
        return Err(NrgError::param("level", "needs a hierarchical flow"));
    };
    let sites = flow.bulk_sites();
    let v = sites.len();
    let top = sites.iter().map(|s| s.level).max().unwrap_or(0);
    if level > top {
        return Err(NrgError::param(
            "level",
            format!("{level} does not exist: the flow's levels are 0 … {top}"),
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option is accepted by the methods it applies to and refused by the others.
    #[test]
    fn options_that_do_not_apply_are_refused() {
        use SampleMethod::*;
        let all = [Nis, Bar, Ais, Smc, Nmcmc, BulkHmc, BulkLocal, Hmc];
        // BAR needs its target configurations.
        let base = |m: SampleMethod| {
            let mut r = SampleRequest::new(m, 100);
            if m == Bar {
                r.target_data = Some("relaxed.npy".into());
            }
            r
        };
        type Set = fn(&mut SampleRequest);
        let options: [(&str, Set, &[SampleMethod]); 15] = [
            (
                "batch",
                |r| r.batch = Some(50),
                &[Nis, Bar, Nmcmc, Ais, Smc],
            ),
            (
                "chains",
                |r| r.chains = Some(2),
                &[Nmcmc, BulkHmc, BulkLocal, Hmc],
            ),
            (
                "therm",
                |r| r.thermalisation = Some(10),
                &[Nmcmc, BulkHmc, BulkLocal, Hmc],
            ),
            ("step", |r| r.step = Some(0.2), &[BulkHmc, Hmc, Ais, Smc]),
            (
                "leapfrog",
                |r| r.leapfrog = Some(3),
                &[BulkHmc, Hmc, Ais, Smc],
            ),
            ("delta", |r| r.delta = Some(0.3), &[BulkLocal]),
            ("level", |r| r.level = Some(0), &[BulkLocal]),
            (
                "symmetry",
                |r| r.symmetry = Some(SymmetrySpec::parse("d4").unwrap()),
                &[Nis, Bar, Nmcmc],
            ),
            ("save-samples", |r| r.save_samples = true, &[Nis, Nmcmc]),
            (
                "target-data",
                |r| r.target_data = Some("x.npy".into()),
                &[Bar],
            ),
            ("cess", |r| r.anneal.cess = Some(0.8), &[Ais, Smc]),
            ("stages", |r| r.anneal.stages = Some(4), &[Ais, Smc]),
            ("moves", |r| r.anneal.moves = Some(1), &[Ais, Smc]),
            ("pilot", |r| r.anneal.pilot = Some(64), &[Ais, Smc]),
            (
                "resample-ess",
                |r| r.anneal.resample_ess = Some(0.3),
                &[Smc],
            ),
        ];
        let err = SampleRequest::new(Bar, 100).check().unwrap_err();
        assert!(err.to_string().contains("--target-data"), "{err}");
        for method in all {
            assert!(base(method).check().is_ok());
            for (name, set, applies) in &options {
                let mut r = base(method);
                set(&mut r);
                let result = r.check();
                assert_eq!(
                    result.is_ok(),
                    applies.contains(&method),
                    "{name} for {method:?}"
                );
                if let Err(e) = result {
                    assert!(e.to_string().contains("does not apply"), "{e}");
                }
            }
        }
        let mut r = SampleRequest::new(Hmc, 100);
        r.step = Some(-1.0);
        assert!(r.check().is_err());
        assert!(SampleRequest::new(Nis, 4).check().is_err());
        let mut r = SampleRequest::new(Nis, 100);
        r.batch = Some(0);
        assert!(r.check().is_err());
        for bad in [
            |r: &mut SampleRequest| r.batch = Some(64),
            |r: &mut SampleRequest| r.batch = Some(30),
            |r: &mut SampleRequest| {
                r.anneal.moves = Some(0);
                r.step = Some(0.1);
            },
            |r: &mut SampleRequest| r.anneal.cess = Some(1.0),
            |r: &mut SampleRequest| r.anneal.resample_ess = Some(0.0),
            |r: &mut SampleRequest| r.anneal.stages = Some(0),
            |r: &mut SampleRequest| r.anneal.pilot = Some(1),
            |r: &mut SampleRequest| {
                r.anneal.cess = Some(0.9);
                r.anneal.stages = Some(5);
            },
        ] {
            let mut r = SampleRequest::new(Smc, 100);
            bad(&mut r);
            assert!(r.check().is_err(), "{r:?}");
        }
    }

    #[test]
    fn method_names_round_trip_through_json() {
        for m in [
            SampleMethod::Nis,
            SampleMethod::Bar,
            SampleMethod::Ais,
            SampleMethod::Smc,
            SampleMethod::Nmcmc,
            SampleMethod::BulkHmc,
            SampleMethod::BulkLocal,
            SampleMethod::Hmc,
        ] {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
            assert_eq!(serde_json::from_str::<SampleMethod>(&json).unwrap(), m);
        }
    }
}
