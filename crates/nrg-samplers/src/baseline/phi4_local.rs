//! Local Metropolis for φ⁴ / O(n).
//!
//! Sites are visited in order; at each, `φ_x′ = φ_x + δ u`, `u` uniform in `[−1, 1]ⁿ`, is
//! accepted with `min(1, e^{−ΔS})`, where `ΔS` is the difference of the site's local action
//! ([`PhiFour::local_action`]). The proposal is symmetric, so each update satisfies detailed
//! balance.

use crate::ChainRng;
use nrg_core::error::require_positive;
use nrg_core::{MarkovChain, OnLattice, Result};
use nrg_lattice::PhiFour;
use rand::{RngExt, SeedableRng};

/// Local Metropolis for a [`PhiFour`] action.
pub struct PhiFourMetropolis {
    action: PhiFour,
    field: Vec<f64>,
    delta: f64,
    rng: ChainRng,
}

impl PhiFourMetropolis {
    /// A chain from `field` (length `n·V`) with proposal width `delta > 0`.
    pub fn new(action: PhiFour, field: Vec<f64>, delta: f64, seed: u64) -> Result<Self> {
        super::check_start(&action.space(), &field)?;
        let delta = require_positive("delta", delta)?;
        Ok(Self {
            action,
            field,
            delta,
            rng: ChainRng::seed_from_u64(seed),
        })
    }

    /// The current configuration.
    pub fn field(&self) -> &[f64] {
        &self.field
    }

    /// The action.
    pub fn action(&self) -> &PhiFour {
        &self.action
    }

    /// Proposal width `δ`.
    pub fn delta(&self) -> f64 {
        self.delta
    }

    /// Sets `δ` (use only during thermalisation).
    pub fn set_delta(&mut self, delta: f64) {
        self.delta = delta;
    }

    /// One sweep; returns the acceptance rate.
    pub fn sweep(&mut self) -> f64 {
        let v = self.action.lattice().volume();
        let n = self.action.channels();
        let mut old = vec![0.0; n];
        let mut new = vec![0.0; n];
        let mut accepted = 0;
        for x in 0..v {
            for c in 0..n {
                old[c] = self.field[c * v + x];
                new[c] = old[c] + self.delta * (2.0 * self.rng.random::<f64>() - 1.0);
            }
            let ds = self.action.local_action(&self.field, x, &new)
                - self.action.local_action(&self.field, x, &old);
            if ds <= 0.0 || self.rng.random::<f64>() < (-ds).exp() {
                for c in 0..n {
                    self.field[c * v + x] = new[c];
                }
                accepted += 1;
            }
        }
        accepted as f64 / v as f64
    }
}

impl MarkovChain for PhiFourMetropolis {
    fn update(&mut self) -> f64 {
        self.sweep()
    }

    fn algorithm(&self) -> &'static str {
        "metropolis"
    }
}
