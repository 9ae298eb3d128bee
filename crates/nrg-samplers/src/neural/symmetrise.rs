//! Symmetry-averaged model densities.
//!
//! For a finite group `G` of lattice symmetries of the action (`S(g·x) = S(x)`, each `g` a
//! permutation of sites, so `|det g| = 1`) and any normalised model density `q`,
//!
//! ```text
//! q_G(x) = |G|⁻¹ Σ_{g∈G} q(g·x)
//! ```
//!
//! is normalised and `G`-invariant. It is sampled exactly by drawing `x₀ ∼ q` and applying a
//! uniformly random `h ∈ G`: the density of `h·x₀` is `|G|⁻¹ Σ_h q(h⁻¹·x) = q_G(x)` because
//! `h ↦ h⁻¹` runs over the whole group. The target `p ∝ e^{−S}` being invariant, convexity of
//! the KL divergence gives `KL(q_G‖p) ≤ KL(q‖p)`, with a gain of at most `ln|G|`: a flow
//! that breaks a symmetry of the action (a hierarchical flow's block grid breaks
//! translations by one site; its couplings break the rotations) gets importance weights of
//! smaller variance for `|G|` density evaluations per sample.
//!
//! `ln q_G(x) = LSE_g ln q(g·x) − ln|G|`, accumulated in `f64`. Shapes: configurations
//! `[batch, channels, rows, cols]`, the same permutation of sites for every channel.

use super::host;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use nrg_core::{Action, DensityModel, NrgError, Result};

/// A model density averaged over a group of lattice symmetries of the action.
pub struct SymmetrisedModel<'a> {
    base: &'a dyn DensityModel,
    /// Site permutations, `(g·x)[site] = x[p[site]]`.
    group: Vec<Vec<usize>>,
    /// The same permutations as index tensors on the model's device.
    indices: Vec<Tensor<1, Int>>,
}

impl<'a> SymmetrisedModel<'a> {
    /// Averages `base` over `group` (e.g. [`nrg_core::Lattice::symmetry_group`]). Checks on a
    /// few samples of `base` that `action` is invariant under every element; an action that
    /// is not (or a group of the wrong size) is an error, since the average would then
    /// target a different distribution.
    pub fn new(
        base: &'a dyn DensityModel,
        action: &dyn Action,
        group: Vec<Vec<usize>>,
        device: &Device,
    ) -> Result<Self> {
        let [_, rows, cols] = base.shape();
        let sites = rows * cols;
        if group.is_empty() || group.iter().any(|p| p.len() != sites) {
            return Err(NrgError::param(
                "symmetry group",
                format!("every element must permute the model's {sites} sites"),
            ));
        }
        let indices = group
            .iter()
            .map(|p| {
                let idx: Vec<i64> = p.iter().map(|&s| s as i64).collect();
                Tensor::from_data(TensorData::new(idx, [sites]), device)
            })
            .collect();
        let model = Self {
            base,
            group,
            indices,
        };
        model.check_invariance(action, device)?;
        Ok(model)
    }

    /// The number of group elements (density evaluations per `ln q_G`).
    pub fn group_size(&self) -> usize {
        self.group.len()
    }

    /// `g·x` for the `k`-th element.
    fn apply(&self, k: usize, x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        x.reshape([n, c, h * w])
            .select(2, self.indices[k].clone())
            .reshape([n, c, h, w])
    }

    /// `max |S(g·x) − S(x)| ≤ 1e-4 (1 + |S(x)|)` on 16 samples (f32 sums of a few hundred
    /// terms reorder to ~1e-6 relative; a broken symmetry changes `S` by O(1)).
    fn check_invariance(&self, action: &dyn Action, device: &Device) -> Result<()> {
        let (x, _) = self.base.sample_with_log_q(16, device);
        let s0 = host(action.action(x.clone()));
        for k in 1..self.group.len() {
            let s = host(action.action(self.apply(k, x.clone())));
            if let Some((a, b)) = s0.iter().zip(&s).find(|(a, b)| {
                // NaN counts as a difference.
                let d = (*a - *b).abs();
                d.is_nan() || d > 1e-4 * (1.0 + a.abs())
            }) {
                return Err(NrgError::param(
                    "symmetry group",
                    format!(
                        "the action is not invariant under symmetry {k} (S = {a} before, {b} after); \
                         averaging over it would change the target"
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl DensityModel for SymmetrisedModel<'_> {
    fn shape(&self) -> [usize; 3] {
        self.base.shape()
    }

    fn sample_with_log_q(&self, n: usize, device: &Device) -> (Tensor<4>, Tensor<1>) {
        let (x, _) = self.base.sample_with_log_q(n, device);
        let [_, c, h, w] = x.dims();
        let sites = h * w;
        let pick = Tensor::<1, Int>::random(
            [n],
            Distribution::Uniform(0.0, self.group.len() as f64),
            device,
        )
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("i64 data");
        let x0 = host(x);
        let mut moved = vec![0f32; x0.len()];
        for (b, &g) in pick.iter().enumerate() {
            let p = &self.group[(g as usize).min(self.group.len() - 1)];
            for ch in 0..c {
                let base = (b * c + ch) * sites;
                for (site, &from) in p.iter().enumerate() {
                    moved[base + site] = x0[base + from] as f32;
                }
            }
        }
        let x = Tensor::from_data(TensorData::new(moved, [n, c, h, w]), device);
        let log_q = self.log_q(x.clone());
        (x, log_q)
    }

    fn log_q(&self, x: Tensor<4>) -> Tensor<1> {
        let device = x.device();
        let n = x.dims()[0];
        let terms: Vec<Vec<f64>> = (0..self.group.len())
            .map(|k| host(self.base.log_q(self.apply(k, x.clone()))))
            .collect();
        let ln_size = (self.group.len() as f64).ln();
        let out: Vec<f32> = (0..n)
            .map(|i| {
                let top = terms.iter().map(|t| t[i]).fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = terms.iter().map(|t| (t[i] - top).exp()).sum();
                (top + sum.ln() - ln_size) as f32
            })
            .collect();
        Tensor::from_data(TensorData::new(out, [n]), &device)
    }
}
