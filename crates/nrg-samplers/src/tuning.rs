//! Step-size adaptation during thermalisation: Nesterov dual averaging.
//!
//! Hoffman & Gelman, JMLR 15, 1593 (2014), Algorithm 5 (after Nesterov 2009). With `α_t`
//! the mean acceptance probability of window `t` (for HMC `min(1, e^{−ΔH})`, for Metropolis
//! the accepted fraction) and `δ` the target:
//!
//! ```text
//! H̄_t  = (1 − 1/(t + t₀)) H̄_{t−1} + (δ − α_t)/(t + t₀)
//! x_t  = μ − √t H̄_t / γ,           ε_t = e^{x_t}   (the step used next)
//! x̄_t  = t^{−κ} x_t + (1 − t^{−κ}) x̄_{t−1}
//! ```
//!
//! with `μ = ln(10 ε₀)`, `γ = 0.05`, `t₀ = 10`, `κ = 0.75`. When thermalisation ends the
//! chain keeps `ε̄ = e^{x̄}`, the averaged iterate, which converges to the root of
//! `E[α(ε)] = δ`. The rule it replaces — multiply `ε` by `e^{α_t − δ}` after every window
//! and keep the last value — is a random walk whose end point is wherever the last few
//! windows threw it: HMC on the free field ended above the leapfrog stability limit for 5
//! of 12 seeds and then accepted nothing (decision 42). Adaptation runs only during
//! thermalisation; the measured chain uses a fixed step, so it is stationary.

/// Dual-averaging adaptation of a step size towards a target acceptance.
#[derive(Clone, Debug)]
pub struct DualAveraging {
    initial: f64,
    target: f64,
    mu: f64,
    h_bar: f64,
    log_step: f64,
    log_step_bar: f64,
    t: usize,
    window: usize,
    sum: f64,
    count: usize,
    bounds: (f64, f64),
}

const GAMMA: f64 = 0.05;
const T0: f64 = 10.0;
const KAPPA: f64 = 0.75;

impl DualAveraging {
    /// Adapts from `step` towards acceptance `target` (in `(0, 1)`), one iteration per
    /// `window` proposals, keeping the step within `bounds = (min, max)`.
    pub fn new(step: f64, target: f64, window: usize, bounds: (f64, f64)) -> Self {
        Self {
            initial: step,
            target,
            mu: (10.0 * step).ln(),
            h_bar: 0.0,
            log_step: step.ln(),
            log_step_bar: step.ln(),
            t: 0,
            window: window.max(1),
            sum: 0.0,
            count: 0,
            bounds,
        }
    }

    /// Records `proposals` proposals whose acceptance probabilities sum to `acceptance`.
    /// Returns the step to use next when a window is complete.
    pub fn observe(&mut self, acceptance: f64, proposals: usize) -> Option<f64> {
        self.sum += if acceptance.is_finite() {
            acceptance
        } else {
            0.0
        };
        self.count += proposals;
        if self.count < self.window {
            return None;
        }
        let alpha = (self.sum / self.count as f64).clamp(0.0, 1.0);
        (self.sum, self.count) = (0.0, 0);
        self.t += 1;
        let t = self.t as f64;
        let w = 1.0 / (t + T0);
        self.h_bar = (1.0 - w) * self.h_bar + w * (self.target - alpha);
        let (lo, hi) = (self.bounds.0.ln(), self.bounds.1.ln());
        self.log_step = (self.mu - t.sqrt() / GAMMA * self.h_bar).clamp(lo, hi);
        let eta = t.powf(-KAPPA);
        self.log_step_bar = eta * self.log_step + (1.0 - eta) * self.log_step_bar;
        Some(self.log_step.exp())
    }

    /// The step to keep once thermalisation ends: `e^{x̄}` (the initial step if no window
    /// was completed).
    pub fn final_step(&self) -> f64 {
        if self.t == 0 {
            self.initial
        } else {
            self.log_step_bar.exp()
        }
    }
}

/// The acceptance probability `min(1, e^{−ΔH})` of a proposal (0 for a non-finite `ΔH`).
pub fn acceptance_probability(delta_h: f64) -> f64 {
    if delta_h.is_nan() {
        0.0
    } else {
        (-delta_h).exp().min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// A model acceptance curve `α(ε) = e^{−ε²}` observed through Bernoulli draws: the
    /// averaged step converges to the root `ε* = √(−ln δ)` (δ = 0.8: 0.4724) from starts
    /// on both sides, within 8% after 10⁴ single-proposal windows (measured: 1–6%; the
    /// average keeps a slow memory of the first iterates, which sits on the small side —
    /// acceptance a little above the target).
    #[test]
    fn converges_to_the_target_acceptance() {
        const N: usize = 10_000;
        const TOL: f64 = 0.08;
        let target: f64 = 0.8;
        let root = (-target.ln()).sqrt();
        for (start, seed) in [(0.01, 1), (0.3, 2), (5.0, 3), (50.0, 4)] {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let mut da = DualAveraging::new(start, target, 1, (1e-6, 1e3));
            let mut step = start;
            for _ in 0..N {
                let accept = rng.random::<f64>() < (-step * step).exp();
                if let Some(s) = da.observe(f64::from(u8::from(accept)), 1) {
                    step = s;
                }
            }
            let fin = da.final_step();
            assert!(
                (fin / root - 1.0).abs() < TOL,
                "start {start}: {fin} vs {root}"
            );
        }
    }

    #[test]
    fn windows_and_edges() {
        let mut da = DualAveraging::new(0.1, 0.8, 3, (1e-4, 2.0));
        assert_eq!(da.final_step(), 0.1);
        assert!(da.observe(1.0, 1).is_none());
        assert!(da.observe(2.0, 2).is_some());
        // a NaN acceptance counts as a rejection; steps stay in bounds
        for _ in 0..100 {
            let s = da.observe(f64::NAN, 3).unwrap();
            assert!((1e-4..=2.0).contains(&s));
        }
        assert!(da.final_step() < 0.1);
        assert_eq!(acceptance_probability(-1.0), 1.0);
        assert_eq!(acceptance_probability(f64::INFINITY), 0.0);
        assert_eq!(acceptance_probability(f64::NAN), 0.0);
        assert!((acceptance_probability(2.0) - (-2f64).exp()).abs() < 1e-16);
    }
}
