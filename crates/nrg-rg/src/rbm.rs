//! Restricted Boltzmann machines on `±1` spins (Mehta & Schwab, arXiv:1410.3831;
//! Iso, Shiba & Yokoo, arXiv:1801.07172): the learned coarse-graining the comparison
//! papers hold against Kadanoff's.
//!
//! Visible `v ∈ {±1}^V`, hidden `h ∈ {±1}^H`, weights `W` `[V, H]` and biases `a`, `b`:
//!
//! ```text
//! E(v, h) = −a·v − b·h − vᵀ W h,          p(v, h) = e^{−E}/Z
//! P(h_j = +1 | v) = σ(2 θ_j),  θ_j = b_j + Σ_i v_i W_ij       (likewise v given h)
//! F(v) = −a·v − Σ_j ln 2cosh θ_j(v),       p(v) = e^{−F(v)}/Z
//! ln Z = ln Σ_v e^{−F(v)}                  (or the same sum over h, whichever side is smaller)
//! ```
//!
//! Training ascends the log-likelihood, whose gradient is
//! `∂⟨ln p(v)⟩_data/∂W_ij = ⟨v_i tanh θ_j⟩_data − ⟨v_i h_j⟩_model`: the model term from
//! `k` Gibbs steps started at the data (contrastive divergence, CD-k; Hinton 2002) or from
//! persistent chains carried across updates (PCD; Tieleman 2008). Everything is `f64` on the
//! host: the machines of the comparison are small (`V ≤ 32²`).

use nrg_core::{NrgError, Result};
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// `ln 2cosh x`, stable for large `|x|`.
pub fn ln_2cosh(x: f64) -> f64 {
    let m = x.abs();
    m + (-2.0 * m).exp().ln_1p()
}

/// `±1` with `P(+1) = σ(2θ) = (1 + tanh θ)/2`.
fn spin(theta: f64, rng: &mut impl rand::Rng) -> f64 {
    if rng.random::<f64>() < 0.5 * (1.0 + theta.tanh()) {
        1.0
    } else {
        -1.0
    }
}

/// The most weights `V·H` a machine may have (800 MB of `f64`): a bound that turns an
/// absurd size into an error instead of a failed allocation.
pub const MAX_WEIGHTS: usize = 100_000_000;

/// A restricted Boltzmann machine on `±1` units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rbm {
    /// Visible units `V`.
    pub visible: usize,
    /// Hidden units `H`.
    pub hidden: usize,
    /// `W` `[V, H]` row-major.
    pub w: Vec<f64>,
    /// Visible biases `[V]`.
    pub a: Vec<f64>,
    /// Hidden biases `[H]`.
    pub b: Vec<f64>,
}

impl Rbm {
    /// A machine with weights `N(0, scale²)`-like (uniform of that standard deviation) and
    /// zero biases. Errors: no units, a negative or non-finite scale.
    pub fn new(
        visible: usize,
        hidden: usize,
        scale: f64,
        rng: &mut impl rand::Rng,
    ) -> Result<Self> {
        if visible == 0 || hidden == 0 || !(scale.is_finite() && scale >= 0.0) {
            return Err(NrgError::param(
                "rbm",
                "need ≥ 1 visible and hidden unit and a finite scale ≥ 0",
            ));
        }
        if visible.checked_mul(hidden).is_none_or(|w| w > MAX_WEIGHTS) {
            return Err(NrgError::param(
                "hidden",
                format!(
                    "{visible} × {hidden} weights exceed the {MAX_WEIGHTS} an RBM here may have"
                ),
            ));
        }
        let half = scale * 3f64.sqrt();
        Ok(Self {
            visible,
            hidden,
            w: (0..visible * hidden)
                .map(|_| half * (2.0 * rng.random::<f64>() - 1.0))
                .collect(),
            a: vec![0.0; visible],
            b: vec![0.0; hidden],
        })
    }

    /// `θ_j = b_j + Σ_i v_i W_ij` for every hidden unit.
    pub fn hidden_field(&self, v: &[f64], out: &mut [f64]) {
        out.copy_from_slice(&self.b);
        for (i, &vi) in v.iter().enumerate() {
            let row = &self.w[i * self.hidden..(i + 1) * self.hidden];
            for (o, &wij) in out.iter_mut().zip(row) {
                *o += vi * wij;
            }
        }
    }

    /// `a_i + Σ_j W_ij h_j` for every visible unit.
    pub fn visible_field(&self, h: &[f64], out: &mut [f64]) {
        for (i, o) in out.iter_mut().enumerate() {
            let row = &self.w[i * self.hidden..(i + 1) * self.hidden];
            *o = self.a[i] + row.iter().zip(h).map(|(w, h)| w * h).sum::<f64>();
        }
    }

    /// Draws `h ~ P(h | v)`.
    pub fn sample_hidden(&self, v: &[f64], rng: &mut impl rand::Rng, h: &mut [f64]) {
        self.hidden_field(v, h);
        for x in h.iter_mut() {
            *x = spin(*x, rng);
        }
    }

    /// Draws `v ~ P(v | h)`.
    pub fn sample_visible(&self, h: &[f64], rng: &mut impl rand::Rng, v: &mut [f64]) {
        self.visible_field(h, v);
        for x in v.iter_mut() {
            *x = spin(*x, rng);
        }
    }

    /// `k` steps of block Gibbs sampling `v → h → v` from `v` (in place).
    pub fn gibbs(&self, v: &mut [f64], k: usize, rng: &mut impl rand::Rng) {
        let mut h = vec![0.0; self.hidden];
        for _ in 0..k {
            self.sample_hidden(v, rng, &mut h);
            self.sample_visible(&h, rng, v);
        }
    }

    /// The free energy `F(v) = −a·v − Σ_j ln 2cosh θ_j(v)`.
    pub fn free_energy(&self, v: &[f64]) -> f64 {
        let mut theta = vec![0.0; self.hidden];
        self.hidden_field(v, &mut theta);
        -self.a.iter().zip(v).map(|(a, v)| a * v).sum::<f64>()
            - theta.iter().map(|&t| ln_2cosh(t)).sum::<f64>()
    }

    /// `F̃(h) = −b·h − Σ_i ln 2cosh(a_i + Σ_j W_ij h_j)`, the hidden side's free energy.
    fn hidden_free_energy(&self, h: &[f64]) -> f64 {
        let mut phi = vec![0.0; self.visible];
        self.visible_field(h, &mut phi);
        -self.b.iter().zip(h).map(|(b, h)| b * h).sum::<f64>()
            - phi.iter().map(|&p| ln_2cosh(p)).sum::<f64>()
    }

    /// `ln Z` exactly, by enumerating the smaller side (`2^min(V, H)` terms, log-sum-exp in
    /// `f64`). Errors: both sides above 24 units.
    pub fn ln_z(&self) -> Result<f64> {
        type FreeEnergy<'a> = Box<dyn Fn(&[f64]) -> f64 + 'a>;
        let (n, f): (usize, FreeEnergy) = if self.visible <= self.hidden {
            (self.visible, Box::new(|v: &[f64]| self.free_energy(v)))
        } else {
            (
                self.hidden,
                Box::new(|h: &[f64]| self.hidden_free_energy(h)),
            )
        };
        if n > 24 {
            return Err(NrgError::param(
                "rbm",
                format!("exact ln Z enumerates 2^{n} states; needs min(V, H) ≤ 24"),
            ));
        }
        let mut s = vec![0.0; n];
        let terms: Vec<f64> = (0..1u64 << n)
            .map(|code| {
                for (k, x) in s.iter_mut().enumerate() {
                    *x = if code >> k & 1 == 1 { 1.0 } else { -1.0 };
                }
                -f(&s)
            })
            .collect();
        let top = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        Ok(top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln())
    }

    /// The mean exact log-likelihood `⟨−F(v) − ln Z⟩` of `data` (each `[V]`, `±1`).
    pub fn log_likelihood(&self, data: &[Vec<f64>]) -> Result<f64> {
        check_data(data, self.visible)?;
        let ln_z = self.ln_z()?;
        Ok(-data.iter().map(|v| self.free_energy(v)).sum::<f64>() / data.len() as f64 - ln_z)
    }

    /// The mean-field reconstruction error of `data`: `v̂ = tanh(a + W tanh θ(v))`, and the
    /// mean over configurations and sites of `(v − v̂)²/4 ∈ [0, 1]` (0: reconstructed exactly;
    /// 0.25 for `v̂ = 0`). A training diagnostic where `ln Z` cannot be enumerated.
    /// Errors: empty or malformed data.
    pub fn reconstruction_error(&self, data: &[Vec<f64>]) -> Result<f64> {
        check_data(data, self.visible)?;
        let mut theta = vec![0.0; self.hidden];
        let mut back = vec![0.0; self.visible];
        let mut total = 0.0;
        for v in data {
            self.hidden_field(v, &mut theta);
            for t in theta.iter_mut() {
                *t = t.tanh();
            }
            self.visible_field(&theta, &mut back);
            total += v
                .iter()
                .zip(&back)
                .map(|(v, f)| 0.25 * (v - f.tanh()).powi(2))
                .sum::<f64>();
        }
        Ok(total / (data.len() * self.visible) as f64)
    }

    /// The receptive field of hidden unit `j`: its weights `W_·j` over the visible units.
    pub fn receptive_field(&self, j: usize) -> Vec<f64> {
        (0..self.visible)
            .map(|i| self.w[i * self.hidden + j])
            .collect()
    }
}

fn check_data(data: &[Vec<f64>], visible: usize) -> Result<()> {
    if data.is_empty() {
        return Err(NrgError::InvalidData("no training configurations".into()));
    }
    if let Some(v) = data
        .iter()
        .find(|v| v.len() != visible || v.iter().any(|s| s.abs() != 1.0))
    {
        return Err(NrgError::InvalidData(format!(
            "a configuration of {} values is not {visible} spins ±1",
            v.len()
        )));
    }
    Ok(())
}

/// How the model term of the gradient is estimated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contrastive {
    /// `k` Gibbs steps from each data configuration (CD-k).
    Cd {
        /// Gibbs steps.
        k: usize,
    },
    /// `k` Gibbs steps per update of persistent chains, one per batch element (PCD-k).
    Pcd {
        /// Gibbs steps.
        k: usize,
    },
}

/// Settings of RBM training.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RbmTraining {
    /// Passes over the data.
    pub epochs: usize,
    /// Configurations per update.
    pub batch: usize,
    /// Learning rate (plain stochastic gradient ascent).
    pub lr: f64,
    /// The model term.
    pub method: Contrastive,
    /// L2 weight decay.
    pub weight_decay: f64,
}

/// Trains `rbm` on `data` as `settings` say; `on_epoch(epoch, rbm)` after every epoch.
///
/// Errors: empty or malformed data, zero epochs/batch/k, a batch larger than the data, a
/// non-positive learning rate, weights that become non-finite.
pub fn train(
    rbm: &mut Rbm,
    data: &[Vec<f64>],
    settings: &RbmTraining,
    rng: &mut impl rand::Rng,
    on_epoch: &mut dyn FnMut(usize, &Rbm),
) -> Result<()> {
    check_data(data, rbm.visible)?;
    let k = match settings.method {
        Contrastive::Cd { k } | Contrastive::Pcd { k } => k,
    };
    if settings.epochs == 0
        || settings.batch == 0
        || k == 0
        || settings.lr.is_nan()
        || settings.lr <= 0.0
    {
        return Err(NrgError::param(
            "rbm training",
            "need epochs, batch and k ≥ 1 and lr > 0",
        ));
    }
    if settings.batch > data.len() {
        return Err(NrgError::param(
            "batch",
            format!(
                "a batch of {} is larger than the {} training configurations",
                settings.batch,
                data.len()
            ),
        ));
    }
    let (nv, nh) = (rbm.visible, rbm.hidden);
    let mut chains: Vec<Vec<f64>> = (0..settings.batch)
        .map(|c| data[c % data.len()].clone())
        .collect();
    let mut order: Vec<usize> = (0..data.len()).collect();
    let (mut theta, mut h) = (vec![0.0; nh], vec![0.0; nh]);
    for epoch in 0..settings.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        for batch in order.chunks(settings.batch) {
            let mut gw = vec![0.0; nv * nh];
            let (mut ga, mut gb) = (vec![0.0; nv], vec![0.0; nh]);
            for (c, &idx) in batch.iter().enumerate() {
                let v = &data[idx];
                // positive phase: ⟨v_i tanh θ_j⟩ over the data
                rbm.hidden_field(v, &mut theta);
                for j in 0..nh {
                    theta[j] = theta[j].tanh();
                }
                for i in 0..nv {
                    ga[i] += v[i];
                    for j in 0..nh {
                        gw[i * nh + j] += v[i] * theta[j];
                    }
                }
                for j in 0..nh {
                    gb[j] += theta[j];
                }
                // negative phase from the model's chain
                let neg = match settings.method {
                    Contrastive::Cd { .. } => {
                        let mut x = v.clone();
                        rbm.gibbs(&mut x, k, rng);
                        x
                    }
                    Contrastive::Pcd { .. } => {
                        rbm.gibbs(&mut chains[c], k, rng);
                        chains[c].clone()
                    }
                };
                rbm.hidden_field(&neg, &mut h);
                for j in 0..nh {
                    h[j] = h[j].tanh();
                }
                for i in 0..nv {
                    ga[i] -= neg[i];
                    for j in 0..nh {
                        gw[i * nh + j] -= neg[i] * h[j];
                    }
                }
                for j in 0..nh {
                    gb[j] -= h[j];
                }
            }
            let step = settings.lr / batch.len() as f64;
            for (w, g) in rbm.w.iter_mut().zip(&gw) {
                *w += step * g - settings.lr * settings.weight_decay * *w;
            }
            for (a, g) in rbm.a.iter_mut().zip(&ga) {
                *a += step * g;
            }
            for (b, g) in rbm.b.iter_mut().zip(&gb) {
                *b += step * g;
            }
        }
        if !rbm
            .w
            .iter()
            .chain(&rbm.a)
            .chain(&rbm.b)
            .all(|x| x.is_finite())
        {
            return Err(NrgError::InvalidData(format!(
                "RBM training diverged in epoch {epoch} (lower lr)"
            )));
        }
        on_epoch(epoch, rbm);
    }
    Ok(())
}

/// Hears `(layer, epoch, machine, that layer's training input)` after every epoch of
/// [`Dbn::train_observed`].
pub type LayerObserver<'a> = dyn FnMut(usize, usize, &Rbm, &[Vec<f64>]) + 'a;

/// A deep belief net: RBMs stacked greedily (Hinton, Osindero & Teh 2006), each trained on
/// hidden samples `h ~ P(h | v)` of the one below.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dbn {
    /// The machines, visible layer first; `layers[k].hidden == layers[k + 1].visible`.
    pub layers: Vec<Rbm>,
}

impl Dbn {
    /// Trains a stack with hidden sizes `hidden` on `data`, layer by layer with `settings`.
    /// Errors: no layers, and those of [`train`].
    pub fn train(
        data: &[Vec<f64>],
        hidden: &[usize],
        settings: &RbmTraining,
        rng: &mut impl rand::Rng,
    ) -> Result<Self> {
        Self::train_observed(data, hidden, settings, rng, &mut |_, _, _, _| {})
    }

    /// [`Dbn::train`], calling `on_epoch(layer, epoch, rbm, input)` after every epoch of
    /// every layer, `input` being the configurations that layer trains on.
    pub fn train_observed(
        data: &[Vec<f64>],
        hidden: &[usize],
        settings: &RbmTraining,
        rng: &mut impl rand::Rng,
        on_epoch: &mut LayerObserver<'_>,
    ) -> Result<Self> {
        check_data(data, data.first().map_or(0, Vec::len))?;
        if hidden.is_empty() {
            return Err(NrgError::param("dbn", "need at least one hidden layer"));
        }
        let mut layers: Vec<Rbm> = Vec::with_capacity(hidden.len());
        let mut below: Vec<Vec<f64>> = data.to_vec();
        for (layer, &h) in hidden.iter().enumerate() {
            let mut rbm = Rbm::new(below[0].len(), h, 0.01, rng)?;
            train(&mut rbm, &below, settings, rng, &mut |epoch, r| {
                on_epoch(layer, epoch, r, &below)
            })?;
            below = below
                .iter()
                .map(|v| {
                    let mut out = vec![0.0; h];
                    rbm.sample_hidden(v, rng, &mut out);
                    out
                })
                .collect();
            layers.push(rbm);
        }
        Ok(Self { layers })
    }

    /// Receptive fields of the top layer's units over the visible units: the product of
    /// the stacked weights `W₁ W₂ ⋯ W_n` (`[V, H_n]` row-major), the linear response of a
    /// top unit's field to the visible spins, as the comparison papers draw it.
    pub fn receptive_fields(&self) -> Vec<f64> {
        let first = &self.layers[0];
        let mut prod = first.w.clone();
        let mut cols = first.hidden;
        for layer in &self.layers[1..] {
            let rows = prod.len() / cols;
            let mut next = vec![0.0; rows * layer.hidden];
            for i in 0..rows {
                for k in 0..cols {
                    let p = prod[i * cols + k];
                    for j in 0..layer.hidden {
                        next[i * layer.hidden + j] += p * layer.w[k * layer.hidden + j];
                    }
                }
            }
            prod = next;
            cols = layer.hidden;
        }
        prod
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    type Rng = rand_xoshiro::Xoshiro256PlusPlus;

    fn spins(code: u64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|k| if code >> k & 1 == 1 { 1.0 } else { -1.0 })
            .collect()
    }

    fn random_rbm(v: usize, h: usize, seed: u64) -> Rbm {
        let mut rng = Rng::seed_from_u64(seed);
        let mut r = Rbm::new(v, h, 0.6, &mut rng).unwrap();
        r.a = (0..v).map(|_| rng.random::<f64>() - 0.5).collect();
        r.b = (0..h).map(|_| rng.random::<f64>() - 0.5).collect();
        r
    }

    /// `ln Z` from the visible side, the hidden side and the joint `(v, h)` sum agree.
    #[test]
    fn ln_z_matches_the_joint_enumeration() {
        for (v, h) in [(5, 4), (3, 6)] {
            let r = random_rbm(v, h, 3);
            let mut joint = Vec::new();
            for cv in 0..1u64 << v {
                for ch in 0..1u64 << h {
                    let (sv, sh) = (spins(cv, v), spins(ch, h));
                    let mut e = 0.0;
                    for i in 0..v {
                        e -= r.a[i] * sv[i];
                        for j in 0..h {
                            e -= sv[i] * r.w[i * h + j] * sh[j];
                        }
                    }
                    for j in 0..h {
                        e -= r.b[j] * sh[j];
                    }
                    joint.push(-e);
                }
            }
            let top = joint.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let brute = top + joint.iter().map(|t| (t - top).exp()).sum::<f64>().ln();
            let by_side = r.ln_z().unwrap();
            assert!((brute - by_side).abs() < 1e-10, "{brute} {by_side}");
            let mut t = r.clone();
            std::mem::swap(&mut t.visible, &mut t.hidden);
            // the transposed machine has the same partition function
            t.w = (0..v * h).map(|k| r.w[(k % v) * h + k / v]).collect();
            std::mem::swap(&mut t.a, &mut t.b);
            assert!((t.ln_z().unwrap() - by_side).abs() < 1e-10);
        }
    }

    /// A two-layer net: each layer's input is the layer below's hidden samples, and the
    /// receptive fields are the product of the weights (checked against a direct sum).
    #[test]
    fn dbn_stacks_and_multiplies_weights() {
        let mut rng = Rng::seed_from_u64(2);
        let data: Vec<Vec<f64>> = (0..200)
            .map(|k| spins(if k % 2 == 0 { 0b1111_0000 } else { 0b0000_1111 }, 8))
            .collect();
        let settings = RbmTraining {
            epochs: 5,
            batch: 20,
            lr: 0.05,
            method: Contrastive::Cd { k: 1 },
            weight_decay: 0.0,
        };
        let dbn = Dbn::train(&data, &[6, 3], &settings, &mut rng).unwrap();
        assert_eq!(dbn.layers[1].visible, 6);
        let f = dbn.receptive_fields();
        assert_eq!(f.len(), 8 * 3);
        let (w1, w2) = (&dbn.layers[0].w, &dbn.layers[1].w);
        for i in 0..8 {
            for j in 0..3 {
                let direct: f64 = (0..6).map(|k| w1[i * 6 + k] * w2[k * 3 + j]).sum();
                assert!((f[i * 3 + j] - direct).abs() < 1e-12);
            }
        }
        assert!(Dbn::train(&data, &[], &settings, &mut rng).is_err());
    }

    /// Block Gibbs sampling reproduces the exact marginal `p(v) = e^{−F(v)}/Z` of a small
    /// machine: over 200 000 sweeps (after 1000), every one of the 16 states' frequency is
    /// within 5σ of its probability, σ from the binomial with the chain's `τ_int` ≤ 5 folded
    /// in, and a χ² over all states is below its 0.999 quantile at that inflation.
    #[test]
    fn gibbs_sampling_matches_the_exact_marginal() {
        let r = random_rbm(4, 3, 7);
        let ln_z = r.ln_z().unwrap();
        let mut rng = Rng::seed_from_u64(11);
        let mut v = vec![1.0; 4];
        r.gibbs(&mut v, 1000, &mut rng);
        let n = 200_000;
        let mut counts = [0usize; 16];
        for _ in 0..n {
            r.gibbs(&mut v, 1, &mut rng);
            let code = v
                .iter()
                .enumerate()
                .filter(|(_, s)| **s > 0.0)
                .map(|(k, _)| 1 << k)
                .sum::<usize>();
            counts[code] += 1;
        }
        let inflation = 5.0;
        let mut chi2 = 0.0;
        for (code, &c) in counts.iter().enumerate() {
            let p = (-r.free_energy(&spins(code as u64, 4)) - ln_z).exp();
            let f = c as f64 / n as f64;
            let sigma = (inflation * p * (1.0 - p) / n as f64).sqrt();
            assert!((f - p).abs() < 5.0 * sigma, "state {code}: {f} vs {p}");
            chi2 += (f - p).powi(2) / (inflation * p / n as f64);
        }
        // χ²₁₅ 0.999 quantile ≈ 37.7
        assert!(chi2 < 37.7, "χ² = {chi2}");
    }

    /// A zero machine reconstructs `v̂ = 0`: error ¼. A machine with one strong hidden unit
    /// per visible one (`W = 5·I`) reconstructs almost exactly.
    #[test]
    fn reconstruction_error_of_known_machines() {
        let data: Vec<Vec<f64>> = (0..16).map(|c| spins(c, 4)).collect();
        let mut r = Rbm::new(4, 4, 0.0, &mut Rng::seed_from_u64(1)).unwrap();
        assert!((r.reconstruction_error(&data).unwrap() - 0.25).abs() < 1e-15);
        for i in 0..4 {
            r.w[i * 4 + i] = 5.0;
        }
        // v̂ = tanh(5 tanh 5) = 1 − 9e-5 on every site
        let e = r.reconstruction_error(&data).unwrap();
        assert!(e < 1e-8, "{e}");
        assert!(r.reconstruction_error(&[vec![1.0; 3]]).is_err());
    }
}
