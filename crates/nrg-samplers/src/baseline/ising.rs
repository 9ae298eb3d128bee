//! Ising chains: single-spin Metropolis and the Wolff cluster algorithm.
//!
//! **Metropolis.** On the torus sites are visited in lexicographic order (a sweep is `V`
//! updates); on the chain `V` sites are drawn at random, because the typewriter order in 1D
//! carries every domain wall along with the sweep (a `ΔE = 0` flip is always accepted), a
//! deterministic conveyor that breaks ergodicity. The
//! flip of `s_x` changes the energy by `ΔE = 2 s_x h_x`, `h_x = Σ_{y∼x} s_y`, and is accepted
//! with `min(1, e^{−K ΔE})`. Acceptance thresholds for the `2d + 1` possible values of
//! `s_x h_x` are precomputed as 32-bit integers, so one update costs a few neighbour loads,
//! a table look-up and — only when `ΔE > 0` — one 32-bit random number. Each single-site
//! update satisfies detailed balance; the sequential sweep preserves the Boltzmann
//! distribution.
//!
//! **Wolff.** A cluster is grown from a random seed, adding aligned neighbours with
//! probability `p = 1 − e^{−2K}`, and flipped. One [`MarkovChain::update`] flips a fixed
//! number `n_c` of clusters. `n_c` may be re-chosen during thermalisation
//! ([`IsingWolff::tune_clusters`]: `n_c ≈ V/⟨C⟩`, so an update flips about `V` spins, a
//! "sweep" of comparable cost) but must stay fixed while measuring: stopping after a
//! random number of clusters, e.g. "until `V` spins are flipped", measures at a
//! state-dependent stopping time and biases every observable.

use crate::ChainRng;
use nrg_core::{Lattice, MarkovChain};
use nrg_lattice::IsingSpins;
use rand::{Rng, RngExt, SeedableRng};

/// Probability `p` as a 32-bit acceptance threshold: accept when `u32 < threshold`.
fn threshold(p: f64) -> u64 {
    (p.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64
}

/// Shared spin state: a hot or cold start, and the observables.
#[derive(Clone, Debug)]
struct SpinState {
    model: IsingSpins,
    spins: Vec<i8>,
    rng: ChainRng,
}

impl SpinState {
    fn new(model: IsingSpins, seed: u64, hot: bool) -> Self {
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
}

impl IsingMetropolis {
    /// A chain at the model's `β`, seeded, from a random (`hot`) or ordered start.
    pub fn new(model: IsingSpins, seed: u64, hot: bool) -> Self {
        let d = model.lattice().dim() as i32;
        let k = model.beta();
        let mut thresholds = [0u64; 9];
        for sh in -2 * d..=2 * d {
            let de = 2.0 * sh as f64;
            thresholds[(sh + 2 * d) as usize] = threshold((-k * de).exp().min(1.0));
        }
        Self {
            state: SpinState::new(model, seed, hot),
            thresholds,
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

    /// One sweep; returns the number of accepted flips.
    pub fn sweep(&mut self) -> usize {
        let lattice = self.state.model.lattice();
        if lattice.dim() == 2 {
            self.sweep_2d(lattice)
        } else {
            self.sweep_1d(lattice)
        }
    }

    #[inline(always)]
    fn try_flip(
        spins: &mut [i8],
        rng: &mut ChainRng,
        thr: &[u64; 9],
        x: usize,
        sh: i32,
        off: i32,
    ) -> usize {
        let t = thr[(sh + off) as usize];
        if t >= 1 << 32 || (rng.next_u32() as u64) < t {
            spins[x] = -spins[x];
            1
        } else {
            0
        }
    }

    fn sweep_2d(&mut self, lattice: Lattice) -> usize {
        let l = lattice.l();
        let SpinState { spins, rng, .. } = &mut self.state;
        let thr = &self.thresholds;
        let mut accepted = 0;
        for i in 0..l {
            let row = i * l;
            let up = if i == 0 { (l - 1) * l } else { row - l };
            let down = if i == l - 1 { 0 } else { row + l };
            for j in 0..l {
                let left = if j == 0 { l - 1 } else { j - 1 };
                let right = if j == l - 1 { 0 } else { j + 1 };
                let x = row + j;
                let s = spins[x] as i32;
                let h = spins[row + left] as i32
                    + spins[row + right] as i32
                    + spins[up + j] as i32
                    + spins[down + j] as i32;
                accepted += Self::try_flip(spins, rng, thr, x, s * h, 4);
            }
        }
        accepted
    }

    fn sweep_1d(&mut self, lattice: Lattice) -> usize {
        let l = lattice.l();
        let SpinState { spins, rng, .. } = &mut self.state;
        let thr = &self.thresholds;
        let mut accepted = 0;
        for _ in 0..l {
            let j = rng.random_range(0..l);
            let left = if j == 0 { l - 1 } else { j - 1 };
            let right = if j == l - 1 { 0 } else { j + 1 };
            let s = spins[j] as i32;
            let h = spins[left] as i32 + spins[right] as i32;
            accepted += Self::try_flip(spins, rng, thr, j, s * h, 2);
        }
        accepted
    }
}

impl MarkovChain for IsingMetropolis {
    fn update(&mut self) -> f64 {
        self.sweep() as f64 / self.state.spins.len() as f64
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
    /// A chain at the model's `β`, seeded, from a random (`hot`) or ordered start.
    pub fn new(model: IsingSpins, seed: u64, hot: bool) -> Self {
        let p_add = threshold(1.0 - (-2.0 * model.beta()).exp());
        let neighbours = model.lattice().all_neighbours();
        Self {
            state: SpinState::new(model, seed, hot),
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
    /// Flips `n_c` clusters; returns their mean size / V.
    fn update(&mut self) -> f64 {
        let v = self.state.spins.len();
        let flipped: usize = (0..self.clusters_per_update)
            .map(|_| self.flip_cluster())
            .sum();
        flipped as f64 / (self.clusters_per_update * v) as f64
    }

    fn algorithm(&self) -> &'static str {
        "wolff"
    }
}
