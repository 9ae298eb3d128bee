//! Block spins on configurations from the baseline chains.

use nrg_core::Lattice;
use nrg_lattice::IsingSpins;
use nrg_rg::block::{BlockRule, BlockSpin};
use nrg_rg::couplings::ring_coupling;
use nrg_samplers::baseline::{IsingWolff, SpinStart};
use nrg_samplers::run::{IsingSimulation, RunConfig, run_observed};
use rand::SeedableRng;

/// Decimating every other spin of a periodic Ising ring (64 sites, Wolff configurations)
/// gives a ring of 32 whose measured nearest-neighbour coupling equals the exact recursion
/// `K' = atanh(tanh² K)` within 3σ for K = 0.5, 1 and 2 (the Gamma method's error over
/// 20 000 configurations).
#[test]
fn decimation_of_the_chain_follows_the_exact_recursion() {
    let step = BlockSpin {
        rule: BlockRule::Decimation,
        factor: 2,
    };
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(9);
    for (k, seed) in [(0.5, 1), (1.0, 2), (2.0, 3)] {
        let lattice = Lattice::new(1, 64).unwrap();
        let model = IsingSpins::new(lattice, k).unwrap();
        let mut sim = IsingSimulation::Wolff(IsingWolff::new(model, seed, SpinStart::Hot));
        let config = RunConfig {
            thermalisation: 200,
            sweeps: 20_000,
            measure_every: 1,
        };
        let mut blocked = Vec::with_capacity(config.sweeps);
        run_observed(&mut sim, &config, &mut |_| {}, &mut |s| {
            blocked.push(step.apply(s, lattice, &mut rng)?.0);
            Ok(())
        })
        .unwrap();
        let measured = ring_coupling(&blocked, 32).unwrap();
        let exact = f64::tanh(k).powi(2).atanh();
        let dev = (measured.value - exact).abs() / measured.error;
        eprintln!("K = {k}: K' = {measured:?} vs {exact} ({dev:.2}σ)");
        assert!(dev < 3.0, "K = {k}: {measured:?} vs {exact}");
    }
}
