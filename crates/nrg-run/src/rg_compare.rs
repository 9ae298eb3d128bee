//! The learned coarse-graining beside Kadanoff's and an RBM's, on the same configurations
//! (issue 23, item 4): a trained hierarchical flow of the relaxed 2D Ising model, majority
//! block spins of side `b = 2^levels`, and an RBM with `V/4^levels` hidden units trained on
//! the same model, each compared by [`nrg_rg::compare`] — receptive fields from single-spin
//! flips and the pairwise couplings its coarse variables imply.
//!
//! **The flow's coarse variables.** A configuration `s` becomes a relaxed field by the
//! model's exact conditional `x = M s + M^{1/2} ξ` (`nrg_lattice::FieldGivenSpins`), with one
//! `ξ` per configuration, shared by its single-spin flips; the flow's RG map then runs its
//! first `levels` levels ([`nrg_flow::FlowModel::coarse_field`]) and the coarse variable is
//! the sign of the field on the `L/2^levels` sublattice — the variables the flow passes on to
//! the next level, the counterpart of `levels` block-spin steps of side 2. Its conditional
//! mean given `s` is that sign (deterministic given `ξ`).
//!
//! Shapes: spins are site-major `f64` slices of `±1`, `L²` each.

use crate::dir::RunDir;
use burn::tensor::{Device, Tensor, TensorData};
use nrg_core::{NrgError, Result};
use nrg_flow::FlowModel;
use nrg_lattice::{FieldGivenSpins, IsingSpins, ModelKind};
use nrg_rg::block::{BlockRule, BlockSpin};
use nrg_rg::compare::{
    BlockCoarse, CoarseGraining, CompareSettings, RbmHidden, SchemeReport, compare,
};
use nrg_rg::rbm::{Rbm, RbmTraining, train};
use nrg_samplers::baseline::{IsingWolff, SpinStart};
use nrg_samplers::run::{IsingSimulation, RunConfig, run_observed};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

/// `n` configurations of the 2D Ising model on an `L × L` torus at coupling `beta` from a
/// Wolff chain (hot start, 500 cluster updates of thermalisation, one configuration every
/// `every` updates). `progress(done)` hears the updates. Errors: `L < 2`, a non-positive
/// coupling, `n` or `every` zero.
pub fn wolff_configurations(
    l: usize,
    beta: f64,
    n: usize,
    every: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<f64>>> {
    if n == 0 || every == 0 {
        return Err(NrgError::param(
            "configurations",
            "need ≥ 1 configuration and ≥ 1 update between them",
        ));
    }
    let sweeps = n.checked_mul(every).ok_or_else(|| {
        NrgError::param("configurations", format!("{n} × {every} updates overflow"))
    })?;
    let model = IsingSpins::new(nrg_core::Lattice::square(l)?, beta)?;
    let mut sim = IsingSimulation::Wolff(IsingWolff::new(model, seed, SpinStart::Hot));
    let config = RunConfig {
        thermalisation: 500,
        sweeps,
        measure_every: every,
    };
    let mut out = Vec::with_capacity(n);
    run_observed(&mut sim, &config, progress, &mut |s| {
        out.push(s.to_vec());
        Ok(())
    })?;
    Ok(out)
}

/// Checks that `run` can be compared at `levels` before any work is done: a run of the 2D
/// Ising model with a hierarchical flow of at least `levels` levels, and a lattice that
/// `levels` halvings leave at least 2 sites wide. Returns `(L, K)`.
pub fn check_levels(run: &RunDir, levels: usize, device: &Device) -> Result<(usize, f64)> {
    let (config, model) = run.load_model(device)?;
    if config.action.model != ModelKind::Ising || config.action.lattice()?.dim() != 2 {
        return Err(NrgError::InvalidData(format!(
            "{}: the comparison needs a run of the 2D Ising model",
            run.path().display()
        )));
    }
    let depth = model
        .hierarchical_layout()
        .ok_or_else(|| NrgError::param("flow", "the comparison needs a hierarchical flow"))?
        .depth;
    let l = config.action.l;
    let most = depth.min((l / 2).max(1).ilog2() as usize);
    if levels == 0 || levels > most {
        return Err(NrgError::param(
            "levels",
            format!(
                "must be in 1..={most} for this run (a flow of {depth} levels on L = {l}, and \
                 at least 2 × 2 coarse variables), got {levels}"
            ),
        ));
    }
    Ok((l, config.action.beta.unwrap_or(f64::NAN)))
}

/// A trained flow's coarse field as a [`CoarseGraining`] (module docs).
pub struct FlowCoarse<'a> {
    model: &'a FlowModel,
    levels: usize,
    side: usize,
    relax: FieldGivenSpins,
    seed: u64,
    device: Device,
}

impl<'a> FlowCoarse<'a> {
    /// The coarse field after `levels` levels of `model` on an `L × L` torus, relaxed by
    /// `relax`; `seed` fixes the relaxation noise of each configuration index. Errors: a
    /// model that is not one channel on `L × L`, `levels` outside the flow's depth.
    pub fn new(
        model: &'a FlowModel,
        levels: usize,
        relax: FieldGivenSpins,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let [c, l, w] = model.shape();
        if c != 1 || l != w || relax.volume() != l * w {
            return Err(NrgError::InvalidData(format!(
                "the flow models [{c}, {l}, {w}]; the comparison needs one channel on the \
                 Ising lattice of {} sites",
                relax.volume()
            )));
        }
        let depth = model
            .hierarchical_layout()
            .ok_or_else(|| NrgError::param("flow", "the comparison needs a hierarchical flow"))?
            .depth;
        if levels == 0 || levels > depth {
            return Err(NrgError::param(
                "levels",
                format!("the flow has {depth} levels; --levels must be in 1..={depth}"),
            ));
        }
        Ok(Self {
            model,
            levels,
            side: l,
            relax,
            seed,
            device: device.clone(),
        })
    }

    /// The relaxation noise `ξ` of configuration `index`.
    fn noise(&self, index: usize) -> Vec<f64> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(
            self.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        (0..self.side * self.side)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect()
    }
}

impl CoarseGraining for FlowCoarse<'_> {
    fn coarse_len(&self) -> usize {
        let lc = self.side >> self.levels;
        lc * lc
    }

    fn coarse_side(&self) -> Option<usize> {
        Some(self.side >> self.levels)
    }

    fn means(&mut self, inputs: &[(usize, &[f64])]) -> Result<Vec<Vec<f64>>> {
        let v = self.side * self.side;
        let mut x = vec![0.0f32; inputs.len() * v];
        let mut field = vec![0.0; v];
        let mut last: Option<(usize, Vec<f64>)> = None;
        for (k, &(index, spins)) in inputs.iter().enumerate() {
            if spins.len() != v {
                return Err(NrgError::InvalidData(format!(
                    "{} spins for a flow of {v} sites",
                    spins.len()
                )));
            }
            let xi = match &last {
                Some((i, xi)) if *i == index => xi.clone(),
                _ => self.noise(index),
            };
            self.relax.sample(spins, &xi, &mut field);
            for (o, f) in x[k * v..(k + 1) * v].iter_mut().zip(&field) {
                *o = *f as f32;
            }
            last = Some((index, xi));
        }
        let n = inputs.len();
        let t = Tensor::<4>::from_data(
            TensorData::new(x, [n, 1, self.side, self.side]),
            &self.device,
        );
        let coarse = self.model.coarse_field(t, self.levels)?;
        let h = self.coarse_len();
        let values = coarse
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| NrgError::InvalidData(format!("reading the coarse field: {e:?}")))?;
        if values.len() != n * h {
            return Err(NrgError::InvalidData(
                "the coarse field has the wrong size".into(),
            ));
        }
        Ok(values
            .chunks(h)
            .map(|c| {
                c.iter()
                    .map(|&f| if f >= 0.0 { 1.0 } else { -1.0 })
                    .collect()
            })
            .collect())
    }
}

/// What [`compare_run`] needs besides the run.
#[derive(Clone, Debug, Serialize)]
pub struct CompareRequest {
    /// Levels of the flow (block side `2^levels`, `V/4^levels` hidden units).
    pub levels: usize,
    /// RBM training.
    pub rbm: RbmTraining,
    /// Configurations over which the receptive fields are averaged.
    pub receptive_configs: usize,
    /// Jackknife blocks of the couplings.
    pub blocks: usize,
    /// Ridge of the pairwise pseudo-likelihood.
    pub ridge: f64,
    /// Seed (relaxation noise, tie-breaks, RBM).
    pub seed: u64,
}

/// The comparison of one run.
#[derive(Clone, Debug, Serialize)]
pub struct CompareOutput {
    /// Lattice side.
    pub lattice: usize,
    /// Coupling `K` of the run's model.
    pub beta: f64,
    /// Levels compared.
    pub levels: usize,
    /// Block side `2^levels`.
    pub block: usize,
    /// RBM training configurations.
    pub training_configurations: usize,
    /// Evaluation configurations.
    pub configurations: usize,
    /// The request.
    pub request: CompareRequest,
    /// The trained RBM (to save and reuse).
    #[serde(skip)]
    pub rbm: Rbm,
    /// Majority block spins, the RBM's hidden units, the flow's coarse field.
    pub schemes: Vec<SchemeReport>,
    /// Seconds: RBM training, each scheme.
    pub seconds: Vec<(String, f64)>,
}

/// The side-by-side comparison on `run` (a hierarchical flow of the 2D relaxed Ising
/// model): an RBM trained on `training`, then majority block spins, the RBM's hidden units
/// and the flow's coarse field on `configs` (module docs). `progress` hears each stage.
///
/// Errors: a run that is not a hierarchical flow of the 2D Ising model, configurations of
/// the wrong size or not `±1`, `levels` outside the flow's depth, those of
/// [`nrg_rg::compare::compare`] and [`nrg_rg::rbm::train`].
pub fn compare_run(
    run: &RunDir,
    training: &[Vec<f64>],
    configs: &[Vec<f64>],
    request: &CompareRequest,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<CompareOutput> {
    check_levels(run, request.levels, device)?;
    let (config, model) = run.load_model(device)?;
    let ising = config.action.build_ising(device)?;
    let l = config.action.l;
    let levels = request.levels;
    let flow = FlowCoarse::new(
        &model,
        levels,
        ising.field_given_spins(),
        request.seed,
        device,
    )?;
    let block = 1usize << levels;
    let settings = CompareSettings {
        side: l,
        spacing: block,
        receptive_configs: request.receptive_configs,
        blocks: request.blocks,
        ridge: request.ridge,
    };
    let mut seconds = Vec::new();
    let mut clock = std::time::Instant::now();
    let mut lap = |name: &str, seconds: &mut Vec<(String, f64)>| {
        seconds.push((name.to_string(), clock.elapsed().as_secs_f64()));
        clock = std::time::Instant::now();
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(request.seed.wrapping_add(0xc0a5));
    progress("rbm training");
    let hidden = (l * l) >> (2 * levels);
    let mut rbm = Rbm::new(l * l, hidden, 0.01, &mut rng)?;
    train(&mut rbm, training, &request.rbm, &mut rng, &mut |_, _| {})?;
    lap("rbm training", &mut seconds);
    let mut schemes = Vec::new();
    progress("majority block spins");
    let mut majority = BlockCoarse::new(
        BlockSpin {
            rule: BlockRule::Majority,
            factor: block,
        },
        l,
    )?;
    schemes.push(compare(
        "majority",
        &mut majority,
        configs,
        &settings,
        &mut rng,
    )?);
    lap("majority", &mut seconds);
    progress("rbm hidden units");
    let mut hidden_units = RbmHidden { rbm: &rbm };
    schemes.push(compare(
        "rbm",
        &mut hidden_units,
        configs,
        &settings,
        &mut rng,
    )?);
    lap("rbm", &mut seconds);
    progress("flow coarse field");
    let mut flow = flow;
    schemes.push(compare("flow", &mut flow, configs, &settings, &mut rng)?);
    lap("flow", &mut seconds);
    Ok(CompareOutput {
        lattice: l,
        beta: ising.beta(),
        levels,
        block,
        training_configurations: training.len(),
        configurations: configs.len(),
        request: request.clone(),
        rbm,
        schemes,
        seconds,
    })
}
