//! The holographic analysis of a trained run ([`nrg_holo`]), end to end: bulk samples from a
//! chosen source, the correlation / distance / information analysis, receptive fields,
//! multi-scale mixing and inpainting, with the flow's KL gap (the bound on the bulk's total
//! correlation) beside them.
//!
//! Sources of bulk samples ([`HoloSource`]): NIS-reweighted flow samples; HMC in the bulk
//! (on `S_eff`); exact boundary configurations from a `.npy` file; or the baseline chain of
//! the run's action (HMC for φ⁴ and O(n), Wolff with the exact relaxed field for the Ising
//! model), mapped by the RG map `z = R(x)`.

use crate::dir::RunDir;
use burn::tensor::Device;
use nrg_core::{Action, Estimate, NrgError, OnLattice, Result};
use nrg_flow::data::read_configurations;
use nrg_holo::analysis::{Analysis, AnalysisOptions, analyse};
use nrg_holo::receptive::{ReceptiveFields, receptive_fields};
use nrg_holo::repair::{InpaintSettings, conditional_boundary_chain, inpaint, mix, region_phi2};
use nrg_holo::{BulkGeometry, LatentSamples};
use nrg_lattice::{IsingSpins, ModelKind};
use nrg_samplers::baseline::{Hmc, IsingWolff, SpinStart};
use nrg_samplers::neural::{ChainSettings, ChainTarget, HmcSettings, bulk_hmc_latents};
use nrg_samplers::run::{IsingSimulation, PhiFourSimulation, RunConfig, run_observed};
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Where the bulk samples come from.
#[derive(Clone, Debug, PartialEq)]
pub enum HoloSource {
    /// `samples` flow samples with NIS weights.
    Flow {
        /// Samples.
        samples: usize,
    },
    /// Exact boundary configurations from a `.npy` file (`[N, C, L, L]` or `[N, L, L]`).
    Data {
        /// The file.
        path: PathBuf,
    },
    /// HMC in the bulk itself (`S_eff`, gradients through the flow): `chains` chains batched
    /// through the flow, `updates` measured trajectories each after `thermalisation`.
    Bulk {
        /// Chains.
        chains: usize,
        /// Measured trajectories per chain.
        updates: usize,
        /// Trajectories discarded first (the step adapts during them).
        thermalisation: usize,
    },
    /// The baseline chain of the run's action: `samples` configurations, one every `every`
    /// updates after `thermalisation`, each moved by a random global symmetry of the field
    /// (sign, U(1) or O(n) rotation).
    Chain {
        /// Configurations.
        samples: usize,
        /// Updates between configurations.
        every: usize,
        /// Updates discarded first.
        thermalisation: usize,
    },
}

/// What to analyse, and how.
#[derive(Clone, Debug)]
pub struct HoloRequest {
    /// The source of bulk samples.
    pub source: HoloSource,
    /// Options of the correlation analysis (blocks, KSG).
    pub analysis: AnalysisOptions,
    /// Bulk samples for the receptive fields (`C·V` forward and backward passes of this
    /// batch).
    pub receptive_samples: usize,
    /// Side of the square corrupted region at the lattice centre.
    pub region: usize,
    /// The inpainting chains (bulk and boundary).
    pub inpaint: InpaintSettings,
    /// Lattice sizes at which the number of cone latents of the region is counted, for the
    /// same blocks and repeats at full depth.
    pub cone_sizes: Vec<usize>,
    /// Seed of the sources' random numbers.
    pub seed: u64,
}

impl HoloRequest {
    /// Defaults for a source: 50 blocks, 4 receptive samples, a 2×2 region, 400 + 2000
    /// inpainting updates, cone counts for L = 8 … 64.
    pub fn new(source: HoloSource) -> Self {
        Self {
            source,
            analysis: AnalysisOptions::default(),
            receptive_samples: 4,
            region: 2,
            inpaint: InpaintSettings {
                burn_in: 400,
                updates: 2000,
                keep_every: 20,
                delta: 0.5,
                seed: 1,
            },
            cone_sizes: vec![8, 16, 32, 64],
            seed: 1,
        }
    }
}

/// The inpainting experiment's numbers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InpaintReport {
    /// The corrupted sites (the centre `region × region` square).
    pub region: Vec<usize>,
    /// Latent sites resampled (their cones meet the region).
    pub latents_touched: usize,
    /// All latent sites.
    pub total_latents: usize,
    /// Acceptance of the bulk chain.
    pub acceptance: f64,
    /// `⟨φ²⟩` on the region in the original configuration.
    pub phi2_original: f64,
    /// `⟨φ²⟩` on the region over the repaired configurations.
    pub phi2_bulk: Estimate,
    /// `⟨φ²⟩` on the region from the boundary chain conditioned on the other sites.
    pub phi2_boundary: Estimate,
    /// Acceptance of the boundary chain.
    pub boundary_acceptance: f64,
    /// `(L, cone latents of the region)` for the same architecture at several sizes, beside
    /// `L²`.
    pub cone_counts: Vec<(usize, usize, usize)>,
}

/// What `nrg holo` writes to `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HoloReport {
    /// The run directory.
    pub run: PathBuf,
    /// The action, described.
    pub action: String,
    /// The source of the bulk samples, described.
    pub source: String,
    /// The correlation, distance and information analysis.
    pub analysis: Analysis,
    /// Receptive fields and radii per level.
    pub receptive: ReceptiveFields,
    /// `KL(q‖p) = F_q + ln Z` of the flow (flow samples only): the bound on the bulk's total
    /// correlation, in nats.
    pub kl_gap: Option<Estimate>,
    /// Error correction.
    pub inpainting: InpaintReport,
    /// Wall time per stage, seconds.
    pub seconds: BTreeMap<String, f64>,
}

/// The report and what the program draws.
#[derive(Clone, Debug)]
pub struct HoloOutput {
    /// The report.
    pub report: HoloReport,
    /// Mixing: configurations `A`, `B` (`[C, V]`) and the decoded mixtures, `h = 0 … depth + 1`.
    pub mixing: (Vec<f32>, Vec<f32>, Vec<Vec<f32>>),
    /// Inpainting: the original, the corrupted, one repaired configuration and one from the
    /// boundary chain.
    pub inpainting: [Vec<f32>; 4],
    /// Channels and lattice side.
    pub shape: (usize, usize),
}

/// A random element of the field's global symmetry group applied to every configuration
/// (`[N, C, V]`): a sign for one component (Z₂), a rotation for two (U(1)), a random
/// orthogonal matrix (Gram–Schmidt of a Gaussian one) for more. A global move that local
/// chains make only by slow diffusion: in the critical phase HMC keeps the global phase of
/// the field nearly fixed over thousands of trajectories, and a non-equivariant RG map then
/// turns that phase into large latent means. Each move leaves the (O(n)-invariant) target
/// invariant, so the chain with a move before each measurement is still exact.
fn global_symmetry_moves(x: &mut [f32], channels: usize, sites: usize, seed: u64) {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x00c0_ffee);
    for config in x.chunks_mut(channels * sites) {
        // a random orthogonal matrix, row-major
        let mut q: Vec<f64> = (0..channels * channels)
            .map(|_| rng.sample::<f64, _>(StandardNormal))
            .collect();
        for a in 0..channels {
            for b in 0..a {
                let dot: f64 = (0..channels)
                    .map(|k| q[a * channels + k] * q[b * channels + k])
                    .sum();
                for k in 0..channels {
                    q[a * channels + k] -= dot * q[b * channels + k];
                }
            }
            let norm: f64 = (0..channels)
                .map(|k| q[a * channels + k].powi(2))
                .sum::<f64>()
                .sqrt();
            for k in 0..channels {
                q[a * channels + k] /= norm;
            }
        }
        for s in 0..sites {
            let old: Vec<f64> = (0..channels)
                .map(|c| config[c * sites + s] as f64)
                .collect();
            for a in 0..channels {
                config[a * sites + s] = (0..channels)
                    .map(|k| q[a * channels + k] * old[k])
                    .sum::<f64>() as f32;
            }
        }
    }
}

/// Boundary configurations from the baseline chain of the action `spec` (`[N, C, V]`,
/// `f32`): Wolff for the Ising model, mapped to relaxed fields by the exact conditional
/// `x | s`; HMC (step adapted during thermalisation) for the φ⁴ family. A global symmetry
/// move comes before each measurement ([`global_symmetry_moves`]). `progress(done)` hears
/// the chain's updates.
pub(crate) fn chain_samples(
    spec: &nrg_lattice::ActionSpec,
    device: &Device,
    (samples, every, thermalisation): (usize, usize, usize),
    seed: u64,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<f32>> {
    let lattice = spec.lattice()?;
    let run = RunConfig {
        thermalisation,
        sweeps: samples * every,
        measure_every: every,
    };
    let mut out = Vec::new();
    match spec.model {
        ModelKind::Ising => {
            let relaxed = spec.build_ising(device)?.field_given_spins();
            let model = IsingSpins::new(lattice, spec.beta.unwrap_or(f64::NAN))?;
            let mut sim = IsingSimulation::Wolff(IsingWolff::new(model, seed, SpinStart::Hot));
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed);
            let (mut noise, mut x) = (Vec::new(), Vec::new());
            run_observed(&mut sim, &run, progress, &mut |spins| {
                noise.clear();
                noise.extend((0..spins.len()).map(|_| rng.sample::<f64, _>(StandardNormal)));
                x.resize(spins.len(), 0.0);
                relaxed.sample(spins, &noise, &mut x);
                out.extend(x.iter().map(|v| *v as f32));
                Ok(())
            })?;
        }
        _ => {
            let action = spec.build_phi4()?;
            let start = vec![0.0; action.space().len()];
            let hmc = Hmc::new(action, start, 0.1, 10, seed)?;
            let mut sim = PhiFourSimulation::hmc(hmc, 0.8);
            run_observed(&mut sim, &run, progress, &mut |field| {
                out.extend(field.iter().map(|v| *v as f32));
                Ok(())
            })?;
        }
    }
    global_symmetry_moves(&mut out, spec.channels(), lattice.volume(), seed);
    Ok(out)
}

/// Runs the holographic analysis of `run` on `device` (not autodiff: the receptive fields
/// make their own autodiff device from it). `progress` hears each stage's name.
pub fn holo(
    run: &RunDir,
    request: &HoloRequest,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<HoloOutput> {
    let mut seconds = BTreeMap::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, seconds: &mut BTreeMap<String, f64>| {
        seconds.insert(name.to_string(), clock.elapsed().as_secs_f64());
        clock = Instant::now();
    };
    device.seed(request.seed);
    let (config, model) = run.load_model(device)?;
    let geometry = BulkGeometry::of_model(&model)?;
    let action: Box<dyn Action> = config.action.build(device)?;
    let [c, l, _] = nrg_core::LatentModel::latent_shape(&model);
    let v = l * l;
    progress("bulk samples");
    let (samples, source) = match &request.source {
        HoloSource::Flow { samples } => (
            LatentSamples::from_flow(&model, action.as_ref(), *samples, 2048, device)?,
            format!("{samples} flow samples with NIS weights"),
        ),
        HoloSource::Data { path } => {
            let (x, shape) = read_configurations(path)?;
            if shape[1..] != [c, l, l] {
                return Err(NrgError::InvalidData(format!(
                    "{}: configurations of shape {shape:?} do not fit the run's [N, {c}, {l}, {l}]",
                    path.display()
                )));
            }
            (
                LatentSamples::from_boundary(&model, &x, shape, 1024, device)?,
                format!("{} exact configurations from {}", shape[0], path.display()),
            )
        }
        HoloSource::Bulk {
            chains,
            updates,
            thermalisation,
        } => {
            let ad = device.clone().autodiff();
            let (_, model_ad) = run.load_model(&ad)?;
            let action_ad = config.action.build(&ad)?;
            let measure = crate::reference::measure_for(&config.action)?;
            let target = ChainTarget {
                action: action_ad.as_ref(),
                measure: measure.as_ref(),
            };
            let settings = ChainSettings {
                chains: *chains,
                thermalisation: *thermalisation,
                updates: *updates,
                seed: request.seed,
            };
            let hmc = HmcSettings {
                step: 0.1,
                leapfrog: 10,
            };
            let out = bulk_hmc_latents(&model_ad, &target, &settings, &hmc, &ad, &mut |_| {})?;
            let z = out.kept.map(|k| k.configurations).unwrap_or_default();
            let n = chains * updates;
            // decode the boundary configurations for G(r)
            let mut x = Vec::with_capacity(z.len());
            for chunk in z.chunks(1024 * c * v) {
                let b = chunk.len() / (c * v);
                let zt = burn::tensor::Tensor::<4>::from_data(
                    burn::tensor::TensorData::new(chunk.to_vec(), [b, c, l, l]),
                    device,
                );
                let (xt, _) = nrg_core::LatentModel::generate_with_log_det(&model, zt);
                x.extend(
                    xt.into_data()
                        .convert::<f32>()
                        .try_to_vec::<f32>()
                        .unwrap_or_default(),
                );
            }
            (
                LatentSamples::new(z, [n, c, v], None)?.with_boundary(x)?,
                format!(
                    "{chains} bulk HMC chains × {updates} trajectories (acceptance {:.3})",
                    out.summary.acceptance
                ),
            )
        }
        HoloSource::Chain {
            samples,
            every,
            thermalisation,
        } => {
            let x = chain_samples(
                &config.action,
                device,
                (*samples, *every, *thermalisation),
                request.seed,
                &mut |_| {},
            )?;
            let n = x.len() / (c * v);
            (
                LatentSamples::from_boundary(&model, &x, [n, c, l, l], 1024, device)?,
                format!("{n} configurations of the baseline chain, one every {every} updates"),
            )
        }
    };
    lap("samples", &mut seconds);
    let kl_gap = samples.log_weights.as_ref().map(|lw| {
        let n = lw.len() as f64;
        let mean = lw.iter().sum::<f64>() / n;
        let var = lw.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let top = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let ln_z_nis = top + (lw.iter().map(|x| (x - top).exp()).sum::<f64>() / n).ln();
        let ln_z = action.exact_ln_z().unwrap_or(ln_z_nis);
        // F_q + ln Z = ln Z − ⟨ln w⟩_q
        Estimate::new(ln_z - mean, (var / n).sqrt())
    });
    let analysis = analyse(&geometry, &samples, &request.analysis, progress)?;
    lap("analysis", &mut seconds);

    progress("receptive fields");
    let ad = device.clone().autodiff();
    let (_, model_ad) = run.load_model(&ad)?;
    let take = request.receptive_samples.clamp(1, samples.n);
    let picks: Vec<usize> = match &samples.log_weights {
        None => (0..take).collect(),
        Some(_) => nrg_holo::mutual::resample(&samples.weights(), take, request.seed)?,
    };
    let z: Vec<f32> = picks
        .iter()
        .flat_map(|&k| samples.configuration(k).to_vec())
        .collect();
    let receptive = receptive_fields(&model_ad, &geometry, &z, &ad)?;
    lap("receptive fields", &mut seconds);

    progress("mixing and inpainting");
    let boundary = samples.boundary.as_ref().ok_or_else(|| {
        NrgError::InvalidData("the samples carry no boundary configurations".into())
    })?;
    let pick = |k: usize| picks.get(k).copied().unwrap_or(k % samples.n);
    let (ka, kb) = (pick(0), pick(1.min(picks.len() - 1)));
    let (za, zb) = (
        samples.configuration(ka).to_vec(),
        samples.configuration(kb).to_vec(),
    );
    let mixes = mix(&model, &geometry, &za, &zb, device)?;
    let original = boundary[ka * c * v..(ka + 1) * c * v].to_vec();
    let side = request.region.clamp(1, l);
    let start = (l - side) / 2;
    let region: Vec<usize> = (0..side)
        .flat_map(|i| (0..side).map(move |j| (start + i) * l + start + j))
        .collect();
    let mut corrupted = original.clone();
    for ch in 0..c {
        for &t in &region {
            corrupted[ch * v + t] = 0.0;
        }
    }
    let bulk = inpaint(
        &model,
        action.as_ref(),
        &corrupted,
        &region,
        &request.inpaint,
        device,
    )?;
    let (boundary_configs, boundary_acceptance) = match config.action.model {
        ModelKind::Ising => {
            let a = config.action.build_ising(device)?;
            conditional_boundary_chain(&a, &corrupted, &region, &request.inpaint)?
        }
        _ => {
            let a = config.action.build_phi4()?;
            conditional_boundary_chain(&a, &corrupted, &region, &request.inpaint)?
        }
    };
    let phi2_original = region_phi2(std::slice::from_ref(&original), &region, c, v).value;
    let layout = model
        .hierarchical_layout()
        .ok_or_else(|| NrgError::param("flow", "no hierarchical layout"))?;
    let mut cone_counts = Vec::new();
    for &size in &request.cone_sizes {
        // the same blocks and repeats at full depth
        let depth = nrg_flow::hierarchical::max_depth(size, layout.block);
        let scaled = nrg_core::bulk::HierarchicalLayout {
            size,
            depth,
            ..layout
        };
        if size.is_power_of_two() && depth > 0 && size >= side {
            let s0 = (size - side) / 2;
            let reg: Vec<usize> = (0..side)
                .flat_map(|i| (0..side).map(move |j| (s0 + i) * size + s0 + j))
                .collect();
            let cones = nrg_core::bulk::causal_cones(&scaled);
            if let Some(cones) = cones {
                let n = cones
                    .iter()
                    .filter(|cone| reg.iter().any(|&t| cone[t]))
                    .count();
                cone_counts.push((size, n, size * size));
            }
        }
    }
    let inpainting = InpaintReport {
        region: region.clone(),
        latents_touched: bulk.latents.len(),
        total_latents: bulk.total_latents,
        acceptance: bulk.acceptance,
        phi2_original,
        phi2_bulk: region_phi2(&bulk.configurations, &region, c, v),
        phi2_boundary: region_phi2(&boundary_configs, &region, c, v),
        boundary_acceptance,
        cone_counts,
    };
    lap("mixing and inpainting", &mut seconds);
    let repaired = bulk.configurations.last().cloned().unwrap_or_default();
    let chained = boundary_configs.last().cloned().unwrap_or_default();
    Ok(HoloOutput {
        report: HoloReport {
            run: run.path().to_path_buf(),
            action: action.describe(),
            source,
            analysis,
            receptive,
            kl_gap,
            inpainting,
            seconds,
        },
        mixing: (za, zb, mixes),
        inpainting: [original, corrupted, repaired, chained],
        shape: (c, l),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The moves are orthogonal (every site keeps its |φ|) and make the mean field vanish
    /// (a configuration with a fixed direction, moved 20 000 times: |⟨φ⟩| < 0.02).
    #[test]
    fn global_symmetry_moves_are_orthogonal_and_symmetrise() {
        for channels in [1usize, 2, 3] {
            let sites = 5;
            let one: Vec<f32> = (0..channels * sites)
                .map(|k| 0.3 + 0.1 * k as f32)
                .collect();
            let n = 20_000;
            let mut x: Vec<f32> = (0..n).flat_map(|_| one.clone()).collect();
            global_symmetry_moves(&mut x, channels, sites, 3);
            let norm = |cfg: &[f32], s: usize| -> f64 {
                (0..channels)
                    .map(|c| (cfg[c * sites + s] as f64).powi(2))
                    .sum::<f64>()
            };
            let mut mean = vec![0.0; channels];
            for cfg in x.chunks(channels * sites) {
                for s in 0..sites {
                    assert!((norm(cfg, s) - norm(&one, s)).abs() < 1e-5);
                }
                for (c, m) in mean.iter_mut().enumerate() {
                    *m += cfg[c * sites] as f64 / n as f64;
                }
            }
            let len = mean.iter().map(|m| m * m).sum::<f64>().sqrt();
            assert!(len < 0.02, "channels {channels}: mean {mean:?}");
        }
    }
}
