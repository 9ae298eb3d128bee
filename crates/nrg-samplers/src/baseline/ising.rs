//! Ising chains: single-spin Metropolis and the Wolff cluster algorithm.
//!
//! **Metropolis.** One sweep is `V` single-site updates at sites drawn uniformly at random,
//! plus one more with probability ½. The flip of `s_x` changes the energy by
//! `ΔE = 2 s_x h_x`, `h_x = Σ_{y∼x} s_y`, and is accepted with `min(1, e^{−K ΔE})`.
//! Acceptance thresholds for the `2d + 1` possible values of `s_x h_x` are precomputed as
//! 32-bit integers, so one update costs a few neighbour loads, a table look-up and — only
//! when `ΔE > 0` — one 32-bit random number. Each single-site update satisfies detailed
//! balance, so every sweep preserves the Boltzmann distribution.
//!
//! Why not the typewriter sweep: with certain acceptance for `ΔE ≤ 0`, visiting the sites
//! in a fixed order is a deterministic map whenever the visited flips all have `ΔE ≤ 0`
//! (or `K → 0`, where every flip is accepted): on `L = 2` at `K = 0.3` the chain locks into
//! a cycle of zero-energy states, at `K = 10⁻⁹` every sweep flips every spin. Random sites
//! make the chain irreducible. Why the extra update: every accepted flip changes the parity
//! of the number of up spins, so at `K → 0` (every flip accepted) a fixed, even number of
//! updates per sweep preserves the parity of `M` between measurements — a periodic chain,
//! whose measurements see half the states (Binder −⅓ instead of ⅙ at `V = 4`). A sweep
//! length of `V` or `V + 1`, chosen independently of the state, makes it aperiodic; each of
//! the two kernels preserves the distribution, so their mixture does. (Decision 41.)
//!
//! **Wolff.** A cluster is grown from a random seed, adding aligned neighbours with
//! probability `p = 1 − e^{−2K}`, and flipped. One [`MarkovChain::update`] flips `n_c`
//! clusters, plus one more with probability ½ (the same parity argument: at `K → 0` every
//! cluster is one spin). `n_c` may be re-chosen during thermalisation
//! ([`IsingWolff::tune_clusters`]: `n_c ≈ V/⟨C⟩`, so an update flips about `V` spins, a
//! "sweep" of comparable cost) but must stay fixed while measuring: stopping after a
//! random number of clusters that depends on the state, e.g. "until `V` spins are
//! flipped", measures at a state-dependent stopping time and biases every observable; the
//! extra cluster's coin does not look at the state.

use crate::ChainRng;
use nrg_core::MarkovChain;
use nrg_lattice::IsingSpins;
use rand::{Rng, RngExt, SeedableRng};

/// Probability `p` as a 32-bit acceptance threshold: accept when `u32 < threshold`.
fn threshold(p: f64) -> u64 {
    (p.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64
}

/// How a chain starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpinStart {
    /// Every spin drawn at random (infinite temperature).
    Hot,
    /// Every spin up (the ground state).
    Cold,
}

/// Shared spin state: a hot or cold start, and the observables.
#[derive(Clone, Debug)]
struct SpinState {
    model: IsingSpins,
    spins: Vec<i8>,
    rng: ChainRng,
}

impl SpinState {
    fn new(model: IsingSpins, seed: u64, start: SpinStart) -> Self {
        let hot = start == SpinStart::Hot;
        let mut rng = ChainRng::seed_from_u64(seed);
        let v = model.lattice().volume();
        let spins = (0..v)
            .map(|_| if hot && rng.random::<bool>() { -1 } else { 1 })
            .collect();
        Self { model, spins, rng }
    }
}

/// Single-spin Metropolis for the Ising model.
#[derive(Clone, Debug)]
pub struct IsingMetropolis {
    state: SpinState,
    /// `thresholds[s·h + 2d]` for `s·h ∈ {−2d, …, 2d}`.
    thresholds: [u64; 9],
    neighbours: Vec<usize>,
    attempts: usize,
}

impl IsingMetropolis {
    /// A chain at the model's `β`, seeded, from a random or ordered start.
    pub fn new(model: IsingSpins, seed: u64, start: SpinStart) -> Self {
        let d = model.lattice().dim() as i32;
        let k = model.beta();
        let mut thresholds = [0u64; 9];
        for sh in -2 * d..=2 * d {
            let de = 2.0 * sh as f64;
            thresholds[(sh + 2 * d) as usize] = threshold((-k * de).exp().min(1.0));
        }
        let neighbours = model.lattice().all_neighbours();
        Self {
            state: SpinState::new(model, seed, start),
            thresholds,
            neighbours,
            attempts: 0,
        }
    }

    /// The spins.
    pub fn spins(&self) -> &[i8] {
        &self.state.spins
    }

    /// The model.
    pub fn model(&self) -> &IsingSpins {
        &self.state.model
    }

    /// Single-site updates attempted by the last sweep (`V` or `V + 1`).
    pub fn attempts(&self) -> usize {
        self.attempts
    }

    /// One sweep: `V` updates at random sites and, with probability ½, one more. Returns
    /// the number of accepted flips.
    pub fn sweep(&mut self) -> usize {
        let v = self.state.spins.len();
        let nn = 2 * self.state.model.lattice().dim();
        let off = nn as i32;
        let SpinState { spins, rng, .. } = &mut self.state;
        let attempts = v + usize::from(rng.random::<bool>());
        let mut accepted = 0;
        for _ in 0..attempts {
            let x = rng.random_range(0..v);
            let h: i32 = self.neighbours[x * nn..(x + 1) * nn]
                .iter()
                .map(|&y| spins[y] as i32)
                .sum();
            let t = self.thresholds[(spins[x] as i32 * h + off) as usize];
            if t >= 1 << 32 || (rng.next_u32() as u64) < t {
                spins[x] = -spins[x];
                accepted += 1;
            }
        }
        self.attempts = attempts;
        accepted
    }
}

impl MarkovChain for IsingMetropolis {
    fn update(&mut self) -> f64 {
        let accepted = self.sweep();
        accepted as f64 / self.attempts as f64
    }

    fn algorithm(&self) -> &'static str {
        "metropolis"
    }
}

/// The Wolff single-cluster algorithm for the Ising model.
#[derive(Clone, Debug)]
pub struct IsingWolff {
    state: SpinState,
    p_add: u64,
    neighbours: Vec<usize>,
    stack: Vec<usize>,
    clusters_per_update: usize,
    flipped_total: u64,
    clusters_total: u64,
}

impl IsingWolff {
    /// A chain at the model's `β`, seeded, from a random or ordered start.
    pub fn new(model: IsingSpins, seed: u64, start: SpinStart) -> Self {
        let p_add = threshold(1.0 - (-2.0 * model.beta()).exp());
        let neighbours = model.lattice().all_neighbours();
        Self {
            state: SpinState::new(model, seed, start),
            p_add,
            neighbours,
            stack: Vec::new(),
            clusters_per_update: 1,
            flipped_total: 0,
            clusters_total: 0,
        }
    }

    /// Clusters flipped per [`MarkovChain::update`].
    pub fn clusters_per_update(&self) -> usize {
        self.clusters_per_update
    }

    /// Sets `n_c ≈ V/⟨C⟩` from the clusters flipped so far (call during thermalisation only).
    pub fn tune_clusters(&mut self) {
        if self.clusters_total > 0 {
            let mean = self.flipped_total as f64 / self.clusters_total as f64;
            let v = self.state.spins.len() as f64;
            self.clusters_per_update = (v / mean).round().max(1.0) as usize;
        }
    }

    /// The spins.
    pub fn spins(&self) -> &[i8] {
        &self.state.spins
    }

    /// The model.
    pub fn model(&self) -> &IsingSpins {
        &self.state.model
    }

    /// Grows and flips one cluster; returns its size.
    pub fn flip_cluster(&mut self) -> usize {
        let v = self.state.spins.len();
        let nn = 2 * self.state.model.lattice().dim();
        let SpinState { spins, rng, .. } = &mut self.state;
        let seed = rng.random_range(0..v);
        let s0 = spins[seed];
        spins[seed] = -s0;
        self.stack.clear();
        self.stack.push(seed);
        let mut size = 1;
        while let Some(x) = self.stack.pop() {
            for &y in &self.neighbours[x * nn..(x + 1) * nn] {
                if spins[y] == s0 && (rng.next_u32() as u64) < self.p_add {
                    spins[y] = -s0;
                    self.stack.push(y);
                    size += 1;
                }
            }
        }
        self.flipped_total += size as u64;
        self.clusters_total += 1;
        size
    }
}

impl MarkovChain for IsingWolff {
    /// Flips `n_c` clusters and, with probability ½, one more; returns their mean size / V.
    fn update(&mut self) -> f64 {
        let v = self.state.spins.len();
        let clusters = self.clusters_per_update + usize::from(self.state.rng.random::<bool>());
        let flipped: usize = (0..clusters).map(|_| self.flip_cluster()).sum();
        flipped as f64 / (clusters * v) as f64
    }

    fn algorithm(&self) -> &'static str {
        "wolff"
    }
}
