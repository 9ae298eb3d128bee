//! A Monte Carlo run: thermalise, measure, analyse.
//!
//! A [`Simulation`] is a Markov chain that knows its model's observables. [`run`]
//! thermalises it (adapting the step size of HMC / local Metropolis towards a target
//! acceptance by dual averaging, [`crate::tuning`], during thermalisation only, so the
//! measured chain is stationary), records one row of primary observables every
//! `measure_every` updates, and analyses the series. A chain that accepted nothing while
//! measuring is refused (its series is constant, so it has no error bar to give):
//!
//! - every primary observable: mean, Gamma-method error and `τ_int` (in updates between
//!   measurements);
//! - derived quantities by blocked jackknife (block length `⌈4 τ_int⌉` of the slowest
//!   primary involved): `χ = V⟨M²⟩`, `χ_c = V(⟨M²⟩ − ⟨|M|⟩²)`, Binder `U₄`, the
//!   second-moment correlation length `ξ₂`, and for the Ising model the specific heat
//!   `c = K² V (⟨e²⟩ − ⟨e⟩²)`;
//! - where the model is exactly solvable, each exact value beside its estimate, with the
//!   deviation in units of the error.
//!
//! Primary columns (per measurement): `e` (Ising energy per site) or `s` (action per site),
//! `e2`, `phi2` (`V⁻¹Σ|φ|²`), `m_c` per component, `m2 = |M|²`, `abs_m`, `m4`,
//! `fmin` (power at the smallest momentum), `g_r` (`G(r)`, `r = 0 … L/2`), `acceptance`.

use crate::baseline::{Hmc, IsingMetropolis, IsingWolff, PhiFourMetropolis};
use crate::tuning::{DualAveraging, acceptance_probability};
use nrg_core::action::HostAction;
use nrg_core::observables::{
    binder, lowest_momentum_power, magnetisation, mean_square, second_moment_xi, two_point_axes,
};
pub use nrg_core::stats::ExactComparison;
use nrg_core::stats::{Estimate, gamma_method, jackknife, jackknife_block_length};
use nrg_core::{FieldSpace, MarkovChain, NrgError, OnLattice, Result, Series};
use nrg_lattice::PhiFour;
use serde::Serialize;
use std::collections::BTreeMap;

/// A Markov chain with the observables of its model (on the field space of
/// [`OnLattice`]).
pub trait Simulation: MarkovChain + OnLattice {
    /// The current configuration as `f64`, `field[c·V + site]`.
    fn configuration(&self) -> Vec<f64>;
    /// The model-specific leading column: `("e", energy per site)` or `("s", action per site)`.
    fn energy_like(&self, field: &[f64]) -> (&'static str, f64);
    /// Inverse temperature for the specific heat (Ising only).
    fn beta(&self) -> Option<f64> {
        None
    }
    /// Adapts the proposal after an update whose acceptance was `acceptance` (called during
    /// thermalisation only).
    fn tune(&mut self, _acceptance: f64) {}
    /// Fixes the adapted proposal for the measurement (called once, when thermalisation
    /// ends).
    fn finish_tuning(&mut self) {}
    /// Exact values of named observables, where known.
    fn exact(&self) -> BTreeMap<String, f64> {
        BTreeMap::new()
    }
}

/// How long to run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RunConfig {
    /// Updates discarded before measuring.
    pub thermalisation: usize,
    /// Measured updates.
    pub sweeps: usize,
    /// Updates between measurements.
    pub measure_every: usize,
}

/// The analysed result of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The update algorithm.
    pub algorithm: String,
    /// Run lengths.
    pub run: RunConfig,
    /// Number of measurements.
    pub measurements: usize,
    /// Mean acceptance (mean cluster fraction for Wolff) during measurement.
    pub acceptance: f64,
    /// Primary observables with Gamma-method errors and `τ_int`.
    pub observables: BTreeMap<String, Estimate>,
    /// Derived quantities with jackknife errors.
    pub derived: BTreeMap<String, Estimate>,
    /// Exact values and deviations, where known.
    pub exact: BTreeMap<String, ExactComparison>,
}

/// The measurement series and its analysis.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// One row per measurement.
    pub series: Series,
    /// The analysis.
    pub summary: Summary,
}

fn column_names(sim: &dyn Simulation) -> Vec<String> {
    let field = sim.configuration();
    let (lead, _) = sim.energy_like(&field);
    let mut names = vec![lead.to_string(), format!("{lead}2"), "phi2".to_string()];
    for c in 0..sim.channels() {
        names.push(format!("m_{c}"));
    }
    names.extend(["m2", "abs_m", "m4", "fmin"].map(String::from));
    for r in 0..=sim.lattice().l() / 2 {
        names.push(format!("g_{r}"));
    }
    names.push("acceptance".into());
    names
}

fn measure(sim: &dyn Simulation, field: &[f64], acceptance: f64) -> Vec<f64> {
    let lattice = sim.lattice();
    let n = sim.channels();
    let (_, e) = sim.energy_like(field);
    let m = magnetisation(field, n);
    let m2: f64 = m.iter().map(|x| x * x).sum();
    let mut row = vec![e, e * e, mean_square(field, n)];
    row.extend(&m);
    row.extend([
        m2,
        m2.sqrt(),
        m2 * m2,
        lowest_momentum_power(field, n, &lattice),
    ]);
    row.extend(two_point_axes(field, n, &lattice));
    row.push(acceptance);
    row
}

/// Runs `sim` and analyses the series. `progress` is called with the number of updates
/// done (thermalisation included) after each update.
pub fn run(
    sim: &mut dyn Simulation,
    config: &RunConfig,
    progress: &mut dyn FnMut(usize),
) -> Result<RunOutput> {
    run_observed(sim, config, progress, &mut |_| Ok(()))
}

/// [`run`], handing every measured configuration ([`Simulation::configuration`]) to
/// `observe` as well (e.g. to write it out); an error from `observe` stops the run.
pub fn run_observed(
    sim: &mut dyn Simulation,
    config: &RunConfig,
    progress: &mut dyn FnMut(usize),
    observe: &mut dyn FnMut(&[f64]) -> Result<()>,
) -> Result<RunOutput> {
    if config.sweeps == 0 || config.measure_every == 0 {
        return Err(NrgError::param("sweeps", "must be ≥ 1"));
    }
    let mut done = 0;
    for _ in 0..config.thermalisation {
        let acc = sim.update();
        sim.tune(acc);
        done += 1;
        progress(done);
    }
    sim.finish_tuning();
    let mut series = Series::new(column_names(sim));
    for s in 0..config.sweeps {
        let acc = sim.update();
        done += 1;
        if (s + 1).is_multiple_of(config.measure_every) {
            let field = sim.configuration();
            let row = measure(sim, &field, acc);
            if let Some(bad) = row.iter().position(|v| !v.is_finite()) {
                return Err(NrgError::InvalidData(format!(
                    "observable `{}` became non-finite at update {done}: the chain diverged \
                     (reduce the step size)",
                    series.names()[bad]
                )));
            }
            series.push(&row)?;
            observe(&field)?;
        }
        progress(done);
    }
    let summary = analyse(sim, &series, config)?;
    Ok(RunOutput { series, summary })
}

/// Analyses a measurement series of `sim`'s model.
pub fn analyse(sim: &dyn Simulation, series: &Series, config: &RunConfig) -> Result<Summary> {
    let mut observables = BTreeMap::new();
    for (name, col) in series.iter() {
        if name == "acceptance" {
            continue;
        }
        observables.insert(name.to_string(), Estimate::from(gamma_method(col)?));
    }
    let acc = series.require("acceptance")?;
    let acceptance = acc.iter().sum::<f64>() / acc.len() as f64;
    if acceptance == 0.0 {
        return Err(NrgError::InvalidData(format!(
            "the {} chain accepted no proposal in {} measured updates: it did not move, so              its estimates have no error bar (tune the step, run longer, or use another              algorithm)",
            sim.algorithm(),
            config.sweeps
        )));
    }

    let lattice = sim.lattice();
    let v = lattice.volume() as f64;
    let l = lattice.l();
    let tau = |names: &[&str]| {
        names
            .iter()
            .filter_map(|n| observables.get(*n).and_then(|e: &Estimate| e.tau_int))
            .fold(0.5, f64::max)
    };
    let n = series.len();
    let jk = |names: &[&str], f: &dyn Fn(&[f64]) -> f64| -> Result<Estimate> {
        let cols: Vec<&[f64]> = names
            .iter()
            .map(|name| series.require(name))
            .collect::<Result<_>>()?;
        let block = jackknife_block_length(tau(names), n);
        jackknife(&cols, block, f)
    };
    let mut derived = BTreeMap::new();
    derived.insert("chi".into(), jk(&["m2"], &|m| v * m[0])?);
    derived.insert(
        "chi_conn".into(),
        jk(&["m2", "abs_m"], &|m| v * (m[0] - m[1] * m[1]))?,
    );
    derived.insert("binder".into(), jk(&["m2", "m4"], &|m| binder(m[0], m[1]))?);
    if let Ok(xi) = jk(&["m2", "fmin"], &|m| second_moment_xi(v * m[0], m[1], l)) {
        derived.insert("xi2".into(), xi);
    }
    if let Some(beta) = sim.beta() {
        derived.insert(
            "specific_heat".into(),
            jk(&["e", "e2"], &|m| beta * beta * v * (m[1] - m[0] * m[0]))?,
        );
    }

    let mut exact = BTreeMap::new();
    for (name, value) in sim.exact() {
        let est = observables.get(&name).or_else(|| derived.get(&name));
        if let Some(est) = est {
            exact.insert(name, ExactComparison::new(*est, value));
        }
    }
    Ok(Summary {
        algorithm: sim.algorithm().to_string(),
        run: *config,
        measurements: n,
        acceptance,
        observables,
        derived,
        exact,
    })
}

/// The Ising model with Metropolis or Wolff updates.
pub enum IsingSimulation {
    /// Single-spin Metropolis.
    Metropolis(IsingMetropolis),
    /// Wolff clusters.
    Wolff(IsingWolff),
}

impl IsingSimulation {
    fn spins(&self) -> &[i8] {
        match self {
            Self::Metropolis(c) => c.spins(),
            Self::Wolff(c) => c.spins(),
        }
    }

    fn model(&self) -> &nrg_lattice::IsingSpins {
        match self {
            Self::Metropolis(c) => c.model(),
            Self::Wolff(c) => c.model(),
        }
    }
}

impl MarkovChain for IsingSimulation {
    fn update(&mut self) -> f64 {
        match self {
            Self::Metropolis(c) => c.update(),
            Self::Wolff(c) => c.update(),
        }
    }

    fn algorithm(&self) -> &'static str {
        match self {
            Self::Metropolis(c) => c.algorithm(),
            Self::Wolff(c) => c.algorithm(),
        }
    }
}

impl OnLattice for IsingSimulation {
    fn space(&self) -> FieldSpace {
        FieldSpace::new(self.model().lattice(), 1)
    }
}

impl Simulation for IsingSimulation {
    fn configuration(&self) -> Vec<f64> {
        self.spins().iter().map(|s| *s as f64).collect()
    }

    fn energy_like(&self, _field: &[f64]) -> (&'static str, f64) {
        let spins = self.spins();
        ("e", self.model().energy(spins) as f64 / spins.len() as f64)
    }

    fn beta(&self) -> Option<f64> {
        Some(self.model().beta())
    }

    fn tune(&mut self, _acceptance: f64) {
        if let Self::Wolff(c) = self {
            c.tune_clusters();
        }
    }

    fn exact(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        if let Ok(t) = self.model().exact() {
            out.insert("e".into(), t.energy_per_site);
            out.insert("specific_heat".into(), t.specific_heat_per_site);
        }
        out
    }
}

/// φ⁴ / O(n) with HMC or local Metropolis.
pub enum PhiFourSimulation {
    /// Hybrid Monte Carlo, with its step adaptation (used during thermalisation).
    Hmc(Hmc<PhiFour>, DualAveraging),
    /// Local Metropolis, with its proposal-width adaptation (used during thermalisation).
    Local(PhiFourMetropolis, DualAveraging),
}

impl PhiFourSimulation {
    /// HMC whose leapfrog step adapts towards acceptance `target` during thermalisation.
    pub fn hmc(chain: Hmc<PhiFour>, target: f64) -> Self {
        let tuner = DualAveraging::new(chain.step(), target, 1, (1e-4, 2.0));
        Self::Hmc(chain, tuner)
    }

    /// Local Metropolis whose proposal width adapts towards acceptance `target` during
    /// thermalisation.
    pub fn local(chain: PhiFourMetropolis, target: f64) -> Self {
        let tuner = DualAveraging::new(chain.delta(), target, 1, (1e-4, 100.0));
        Self::Local(chain, tuner)
    }

    fn action(&self) -> &PhiFour {
        match self {
            Self::Hmc(c, _) => c.action(),
            Self::Local(c, _) => c.action(),
        }
    }

    fn field(&self) -> &[f64] {
        match self {
            Self::Hmc(c, _) => c.field(),
            Self::Local(c, _) => c.field(),
        }
    }
}

impl MarkovChain for PhiFourSimulation {
    fn update(&mut self) -> f64 {
        match self {
            Self::Hmc(c, _) => c.update(),
            Self::Local(c, _) => c.update(),
        }
    }

    fn algorithm(&self) -> &'static str {
        match self {
            Self::Hmc(c, _) => c.algorithm(),
            Self::Local(c, _) => c.algorithm(),
        }
    }
}

impl OnLattice for PhiFourSimulation {
    fn space(&self) -> FieldSpace {
        self.action().space()
    }
}

impl Simulation for PhiFourSimulation {
    fn configuration(&self) -> Vec<f64> {
        self.field().to_vec()
    }

    fn energy_like(&self, field: &[f64]) -> (&'static str, f64) {
        let v = self.lattice().volume() as f64;
        ("s", self.action().action_host(field) / v)
    }

    /// Dual averaging of the step (HMC: on `min(1, e^{−ΔH})` of each trajectory; local
    /// Metropolis: on each sweep's accepted fraction).
    fn tune(&mut self, acceptance: f64) {
        match self {
            Self::Hmc(c, tuner) => {
                if let Some(step) = tuner.observe(acceptance_probability(c.last_delta_h()), 1) {
                    c.set_step(step);
                }
            }
            Self::Local(c, tuner) => {
                if let Some(delta) = tuner.observe(acceptance, 1) {
                    c.set_delta(delta);
                }
            }
        }
    }

    fn finish_tuning(&mut self) {
        match self {
            Self::Hmc(c, tuner) => c.set_step(tuner.final_step()),
            Self::Local(c, tuner) => c.set_delta(tuner.final_step()),
        }
    }

    fn exact(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        if let Some(g) = self.action().exact_gaussian() {
            let t = g.thermo();
            out.insert("phi2".into(), t.phi2);
            out.insert("s".into(), t.action_per_site);
            out.insert("chi".into(), t.chi);
            for (r, gr) in t.two_point.iter().enumerate() {
                out.insert(format!("g_{r}"), *gr);
            }
        }
        out
    }
}
