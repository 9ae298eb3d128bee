//! Behaviour of the baseline chains: each reproduces exact results within 3σ of its own
//! Gamma-method error (fixed seeds make every test deterministic; a correct chain fails a
//! single 3σ check with probability ≈ 0.3 %).

use nrg_core::Lattice;
use nrg_lattice::{IsingSpins, PhiFour};
use nrg_samplers::baseline::{Hmc, IsingMetropolis, IsingWolff, PhiFourMetropolis};
use nrg_samplers::run::{IsingSimulation, PhiFourSimulation, RunConfig, Simulation, run};

fn config(thermalisation: usize, sweeps: usize) -> RunConfig {
    RunConfig {
        thermalisation,
        sweeps,
        measure_every: 1,
    }
}

fn check_exact(sim: &mut dyn Simulation, cfg: RunConfig, names: &[&str]) {
    let out = run(sim, &cfg, &mut |_| {}).unwrap();
    for name in names {
        let c = out
            .summary
            .exact
            .get(*name)
            .unwrap_or_else(|| panic!("no exact {name}"));
        assert!(
            c.deviation_sigma < 3.0,
            "{} {name}: {} ± {} vs exact {} ({:.2}σ)",
            sim.algorithm(),
            c.estimate,
            c.error,
            c.exact,
            c.deviation_sigma
        );
        // an error bar that is too large would pass trivially: it must be small
        assert!(
            c.error < 0.02 * c.exact.abs().max(0.1),
            "{name}: error {} too large",
            c.error
        );
    }
}

fn ising16() -> IsingSpins {
    IsingSpins::new(Lattice::square(16).unwrap(), 0.4).unwrap()
}

#[test]
fn metropolis_reproduces_kaufman_energy() {
    let mut sim = IsingSimulation::Metropolis(IsingMetropolis::new(ising16(), 11, true));
    check_exact(&mut sim, config(2000, 40_000), &["e", "specific_heat"]);
}

#[test]
fn wolff_reproduces_kaufman_energy() {
    let mut sim = IsingSimulation::Wolff(IsingWolff::new(ising16(), 12, true));
    check_exact(&mut sim, config(500, 20_000), &["e", "specific_heat"]);
}

#[test]
fn metropolis_on_the_chain_reproduces_the_transfer_matrix() {
    let model = IsingSpins::new(Lattice::chain(32).unwrap(), 0.8).unwrap();
    let mut sim = IsingSimulation::Metropolis(IsingMetropolis::new(model, 13, false));
    check_exact(&mut sim, config(1000, 50_000), &["e", "specific_heat"]);
}

fn free_field() -> PhiFour {
    PhiFour::free_field(Lattice::square(8).unwrap(), 1, 0.5).unwrap()
}

#[test]
fn hmc_reproduces_free_field() {
    let field = vec![0.0; 64];
    let mut sim = PhiFourSimulation::Hmc(Hmc::new(free_field(), field, 0.2, 10, 21), 0.8);
    check_exact(&mut sim, config(500, 10_000), &["phi2", "s", "g_1", "chi"]);
}

#[test]
fn local_metropolis_reproduces_free_field() {
    let field = vec![0.0; 64];
    let mut sim =
        PhiFourSimulation::Local(PhiFourMetropolis::new(free_field(), field, 1.0, 22), 0.5);
    check_exact(&mut sim, config(500, 20_000), &["phi2", "s", "g_1"]);
}

/// Detailed balance on a Gaussian O(2) target in 1D: both chains reproduce the exact
/// variance of every component (⟨|φ|²⟩) and zero mean.
#[test]
fn chains_sample_an_o2_gaussian() {
    let action = PhiFour::free_field(Lattice::chain(16).unwrap(), 2, 1.0).unwrap();
    let field = vec![0.0; 32];
    let mut hmc = PhiFourSimulation::Hmc(Hmc::new(action.clone(), field.clone(), 0.2, 8, 31), 0.8);
    check_exact(&mut hmc, config(500, 10_000), &["phi2", "s"]);
    let mut local = PhiFourSimulation::Local(PhiFourMetropolis::new(action, field, 1.0, 32), 0.5);
    let out = run(&mut local, &config(500, 20_000), &mut |_| {}).unwrap();
    for c in ["m_0", "m_1"] {
        let m = out.summary.observables[c];
        assert!(
            m.value.abs() < 3.0 * m.error,
            "{c}: {} ± {}",
            m.value,
            m.error
        );
    }
    let phi2 = out.summary.exact["phi2"];
    assert!(phi2.deviation_sigma < 3.0, "{phi2:?}");
}

/// The same seed gives the same chain; another seed another chain.
#[test]
fn chains_are_reproducible() {
    let series = |seed| {
        let mut sim = IsingSimulation::Wolff(IsingWolff::new(ising16(), seed, true));
        run(&mut sim, &config(10, 50), &mut |_| {}).unwrap().series
    };
    assert_eq!(series(5), series(5));
    assert_ne!(series(5), series(6));
}

/// Tuning during thermalisation moves HMC's acceptance towards the target.
#[test]
fn hmc_step_is_tuned_during_thermalisation() {
    let action = PhiFour::lattice_form(Lattice::square(8).unwrap(), 1, -4.0, 8.0).unwrap();
    let mut sim = PhiFourSimulation::Hmc(Hmc::new(action, vec![0.0; 64], 1.0, 10, 41), 0.8);
    let out = run(&mut sim, &config(1000, 2000), &mut |_| {}).unwrap();
    assert!(
        (out.summary.acceptance - 0.8).abs() < 0.15,
        "acceptance {}",
        out.summary.acceptance
    );
}

/// On the 4×4 torus at β_c (where Kaufman equals enumeration of all 2¹⁶ states) both
/// algorithms reproduce the exact energy and specific heat.
#[test]
fn both_ising_algorithms_are_exact_on_a_small_critical_torus() {
    let model = || {
        let beta = nrg_lattice::exact::ising2d::critical_beta();
        IsingSpins::new(Lattice::square(4).unwrap(), beta).unwrap()
    };
    let mut metropolis = IsingSimulation::Metropolis(IsingMetropolis::new(model(), 51, true));
    check_exact(
        &mut metropolis,
        config(1000, 100_000),
        &["e", "specific_heat"],
    );
    let mut wolff = IsingSimulation::Wolff(IsingWolff::new(model(), 52, true));
    check_exact(&mut wolff, config(1000, 50_000), &["e", "specific_heat"]);
}
