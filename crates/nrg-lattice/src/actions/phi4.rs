//! φ⁴ theory: real (`n = 1`), O(n), and the complex field (`n = 2`).
//!
//! Every form is held in one canonical shape, with `φ_x ∈ ℝⁿ`:
//!
//! ```text
//! S(φ) = Σ_x [ −2κ Σ_μ φ_x·φ_{x+μ̂} + a |φ_x|² + b |φ_x|⁴ ]
//! ∂S/∂φ_x = −2κ Σ_μ (φ_{x+μ̂} + φ_{x−μ̂}) + 2a φ_x + 4b |φ_x|² φ_x
//! ```
//!
//! | form | parameters | κ | a | b |
//! |---|---|---|---|---|
//! | lattice `Σ[Σ_μ(φ_{x+μ}−φ_x)² + m²φ² + λφ⁴]` | `m², λ` | 1 | `2d + m²` | `λ` |
//! | hopping `Σ[−2κ Σ_μ φ_xφ_{x+μ} + (1−2λ̂)φ² + λ̂φ⁴]` | `κ, λ̂` | κ | `1 − 2λ̂` | `λ̂` |
//! | complex `−t Σ_⟨ij⟩(φ_i*φ_j + c.c.) + Σ(μ|φ|² + λ|φ|⁴)` | `t, μ, λ` | t | μ | λ |
//!
//! (the complex form is `n = 2` with `φ = φ¹ + iφ²`, since `φ_i*φ_j + c.c. = 2 φ_i·φ_j`).
//! The lattice and hopping forms describe the same theory for `φ_lat = √κ φ_hop`,
//! `m² = (1 − 2λ̂)/κ − 2d`, `λ = λ̂/κ²`; `ln Z_hop = ln Z_lat − (nV/2) ln κ`.
//! With `b = 0` (the free field) `ln Z` is exact ([`crate::exact::gaussian`]).
//!
//! Shapes: `φ` is `[batch, n, rows, cols]`; the action is `[batch]`.

use crate::exact::gaussian::GaussianExact;
use burn::tensor::{Device, Int, Tensor, TensorData};
use nrg_core::action::HostAction;
use nrg_core::error::{require_finite, require_non_negative, require_positive};
use nrg_core::{Action, FieldSpace, Lattice, NrgError, OnLattice, Result};
use serde::{Deserialize, Serialize};

/// Which parameterisation a [`PhiFour`] was built from (kept for reporting).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "form", rename_all = "snake_case")]
pub enum PhiFourForm {
    /// `Σ[Σ_μ(φ_{x+μ}−φ_x)² + m²|φ|² + λ|φ|⁴]`
    Lattice {
        /// `m²`
        m2: f64,
        /// `λ`
        lambda: f64,
    },
    /// `Σ[−2κ Σ_μ φ_x·φ_{x+μ} + (1−2λ̂)|φ|² + λ̂|φ|⁴]`
    Hopping {
        /// `κ`
        kappa: f64,
        /// `λ̂`
        lambda_hat: f64,
    },
    /// `−t Σ_⟨ij⟩(φ_i*φ_j + c.c.) + Σ(μ|φ|² + λ|φ|⁴)`, `n = 2`
    Complex {
        /// `t`
        t: f64,
        /// `μ`
        mu: f64,
        /// `λ`
        lambda: f64,
    },
    /// The canonical coefficients themselves, `Σ[−2κ Σ_μ φ_x·φ_{x+μ} + a|φ|² + b|φ|⁴]`
    /// (e.g. the actions along a thermodynamic-integration path).
    Canonical {
        /// `κ`
        kappa: f64,
        /// `a`
        a: f64,
        /// `b`
        b: f64,
    },
}

/// φ⁴ / O(n) φ⁴ / free field on a chain or a torus.
#[derive(Clone, Debug)]
pub struct PhiFour {
    lattice: Lattice,
    channels: usize,
    form: PhiFourForm,
    kappa: f64,
    a: f64,
    b: f64,
    all_neighbours: Vec<usize>,
    /// Exact `ln Z` (free field), computed once on first use (training asks every step).
    exact_ln_z: std::sync::OnceLock<Option<f64>>,
}

impl PhiFour {
    /// The lattice form with `n` components, mass² `m2` and coupling `lambda ≥ 0`.
    pub fn lattice_form(lattice: Lattice, n: usize, m2: f64, lambda: f64) -> Result<Self> {
        let m2 = require_finite("m2", m2)?;
        let lambda = require_non_negative("lambda", lambda)?;
        let a = 2.0 * lattice.dim() as f64 + m2;
        Self::canonical(
            lattice,
            n,
            PhiFourForm::Lattice { m2, lambda },
            1.0,
            a,
            lambda,
        )
    }

    /// The hopping form with `n` components, hopping `kappa > 0` and coupling `lambda_hat ≥ 0`.
    pub fn hopping_form(lattice: Lattice, n: usize, kappa: f64, lambda_hat: f64) -> Result<Self> {
        let kappa = require_positive("kappa", kappa)?;
        let lambda_hat = require_non_negative("lambda_hat", lambda_hat)?;
        let form = PhiFourForm::Hopping { kappa, lambda_hat };
        Self::canonical(lattice, n, form, kappa, 1.0 - 2.0 * lambda_hat, lambda_hat)
    }

    /// The complex field in the `(t, μ, λ)` form.
    pub fn complex_form(lattice: Lattice, t: f64, mu: f64, lambda: f64) -> Result<Self> {
        let t = require_positive("t", t)?;
        let mu = require_finite("mu", mu)?;
        let lambda = require_non_negative("lambda", lambda)?;
        Self::canonical(
            lattice,
            2,
            PhiFourForm::Complex { t, mu, lambda },
            t,
            mu,
            lambda,
        )
    }

    /// The canonical form with `n` components: hopping `kappa > 0`, `a` and `b ≥ 0` (a
    /// Gaussian action, `b = 0`, must be normalisable).
    pub fn canonical_form(lattice: Lattice, n: usize, kappa: f64, a: f64, b: f64) -> Result<Self> {
        let kappa = require_positive("kappa", kappa)?;
        let a = require_finite("a", a)?;
        let b = require_non_negative("b", b)?;
        let form = PhiFourForm::Canonical { kappa, a, b };
        Self::canonical(lattice, n, form, kappa, a, b)
    }

    /// The free field (lattice form, `λ = 0`) with mass² `m2 > 0`.
    pub fn free_field(lattice: Lattice, n: usize, m2: f64) -> Result<Self> {
        require_positive("m2", m2)?;
        Self::lattice_form(lattice, n, m2, 0.0)
    }

    fn canonical(
        lattice: Lattice,
        n: usize,
        form: PhiFourForm,
        kappa: f64,
        a: f64,
        b: f64,
    ) -> Result<Self> {
        if n == 0 {
            return Err(NrgError::param("n", "must be ≥ 1"));
        }
        let action = Self {
            lattice,
            channels: n,
            form,
            kappa,
            a,
            b,
            all_neighbours: lattice.all_neighbours(),
            exact_ln_z: std::sync::OnceLock::new(),
        };
        if b == 0.0 {
            // A Gaussian action must be normalisable.
            action.gaussian()?;
        }
        Ok(action)
    }

    fn gaussian(&self) -> Result<GaussianExact> {
        GaussianExact::new(self.lattice, self.channels, self.a, self.kappa)
    }

    /// The parameterisation this action was built from.
    pub fn form(&self) -> PhiFourForm {
        self.form
    }

    /// Canonical coefficients `(κ, a, b)`.
    pub fn coefficients(&self) -> (f64, f64, f64) {
        (self.kappa, self.a, self.b)
    }

    /// The exact solution when the action is Gaussian (`λ = 0`).
    pub fn exact_gaussian(&self) -> Option<GaussianExact> {
        if self.b == 0.0 {
            self.gaussian().ok()
        } else {
            None
        }
    }

    /// `S_x`-dependent part of the action at one site for the value `phi` (all other sites
    /// fixed): `a|φ|² + b|φ|⁴ − 2κ φ·Σ_{±μ} φ_{x±μ}`. The change of `S` under a local update
    /// is the difference of this at the new and the old value.
    pub fn local_action(&self, field: &[f64], site: usize, phi: &[f64]) -> f64 {
        let v = self.lattice.volume();
        let nn = 2 * self.lattice.dim();
        let neighbours = &self.all_neighbours[site * nn..(site + 1) * nn];
        let mut p2 = 0.0;
        let mut hop = 0.0;
        for (c, p) in phi.iter().enumerate() {
            p2 += p * p;
            let f = &field[c * v..(c + 1) * v];
            let s: f64 = neighbours.iter().map(|&y| f[y]).sum();
            hop += p * s;
        }
        self.a * p2 + self.b * p2 * p2 - 2.0 * self.kappa * hop
    }

    /// `N_x = Σ_μ (φ_{x+μ̂} + φ_{x−μ̂})` per channel, `[batch, n, rows, cols]`: one gather
    /// of every site's `2d` neighbours (the lattice's neighbour table, uploaded per call)
    /// and one sum, where four rolls would be sixteen slices and copies on a GPU.
    fn neighbour_sum(&self, x: &Tensor<4>) -> Tensor<4> {
        let dims = x.dims();
        let [b, c, rows, cols] = dims;
        assert_eq!(
            [rows, cols],
            [self.lattice.rows(), self.lattice.cols()],
            "phi4: the field's lattice differs from the action's"
        );
        let v = rows * cols;
        let nn = 2 * self.lattice.dim();
        let table: Vec<i64> = self.all_neighbours.iter().map(|&s| s as i64).collect();
        let index = Tensor::<1, Int>::from_data(TensorData::new(table, [v * nn]), &x.device());
        x.clone()
            .reshape([b, c, v])
            .select(2, index)
            .reshape([b, c, v, nn])
            .sum_dim(3)
            .reshape(dims)
    }

    /// `S = Σ_x [a φ² + b φ⁴ − κ φ·N]` from `φ²` (summed over channels, `[batch, 1, rows,
    /// cols]`) and the neighbour sum `N`: each bond counted from both ends, so `κ`, not `2κ`.
    fn value_from(&self, x: Tensor<4>, p2: Tensor<4>, neighbours: Tensor<4>) -> Tensor<1> {
        let hop = (x * neighbours).sum_dim(1);
        let local = p2.clone().mul_scalar(self.a) + (p2.clone() * p2).mul_scalar(self.b);
        let density = local - hop.mul_scalar(self.kappa);
        nrg_core::batch::sum_per_sample(density)
    }

    /// `∂S/∂φ = φ (2a + 4b φ²) − 2κ N` from `φ²` and `N`, as [`PhiFour::value_from`].
    fn grad_from(&self, x: Tensor<4>, p2: Tensor<4>, neighbours: Tensor<4>) -> Tensor<4> {
        let radial = p2.mul_scalar(4.0 * self.b).add_scalar(2.0 * self.a);
        x * radial - neighbours.mul_scalar(2.0 * self.kappa)
    }
}

impl OnLattice for PhiFour {
    fn space(&self) -> FieldSpace {
        FieldSpace::new(self.lattice, self.channels)
    }
}

impl Action for PhiFour {
    fn action(&self, x: Tensor<4>) -> Tensor<1> {
        let neighbours = self.neighbour_sum(&x);
        let p2 = (x.clone() * x.clone()).sum_dim(1);
        self.value_from(x, p2, neighbours)
    }

    fn grad(&self, x: Tensor<4>) -> Tensor<4> {
        let neighbours = self.neighbour_sum(&x);
        let p2 = (x.clone() * x.clone()).sum_dim(1);
        self.grad_from(x, p2, neighbours)
    }

    /// One neighbour sum `N` and one `φ²` for both.
    fn action_and_grad(&self, x: Tensor<4>) -> (Tensor<1>, Tensor<4>) {
        let neighbours = self.neighbour_sum(&x);
        let p2 = (x.clone() * x.clone()).sum_dim(1);
        let value = self.value_from(x.clone(), p2.clone(), neighbours.clone());
        (value, self.grad_from(x, p2, neighbours))
    }

    fn exact_ln_z(&self) -> Option<f64> {
        *self
            .exact_ln_z
            .get_or_init(|| self.exact_gaussian().map(|g| g.thermo().ln_z))
    }

    fn describe(&self) -> String {
        let d = self.lattice.dim();
        let l = self.lattice.l();
        let n = self.channels;
        match self.form {
            PhiFourForm::Lattice { m2, lambda } => {
                format!("phi4 (lattice form), n={n}, {d}D L={l}, m2={m2}, lambda={lambda}")
            }
            PhiFourForm::Hopping { kappa, lambda_hat } => format!(
                "phi4 (hopping form), n={n}, {d}D L={l}, kappa={kappa}, lambda_hat={lambda_hat}"
            ),
            PhiFourForm::Complex { t, mu, lambda } => {
                format!("complex phi4, {d}D L={l}, t={t}, mu={mu}, lambda={lambda}")
            }
            PhiFourForm::Canonical { kappa, a, b } => {
                format!("phi4 (canonical form), n={n}, {d}D L={l}, kappa={kappa}, a={a}, b={b}")
            }
        }
    }

    fn to_device(&self, _device: &Device) -> Box<dyn Action> {
        Box::new(self.clone())
    }
}

impl HostAction for PhiFour {
    fn action_host(&self, field: &[f64]) -> f64 {
        let v = self.lattice.volume();
        let d = self.lattice.dim();
        let nn = 2 * d;
        let mut s = 0.0;
        for x in 0..v {
            let mut p2 = 0.0;
            let mut hop = 0.0;
            for c in 0..self.channels {
                let f = &field[c * v..(c + 1) * v];
                p2 += f[x] * f[x];
                for mu in 0..d {
                    hop += f[x] * f[self.all_neighbours[x * nn + mu]];
                }
            }
            s += self.a * p2 + self.b * p2 * p2 - 2.0 * self.kappa * hop;
        }
        s
    }

    fn grad_host(&self, field: &[f64], grad: &mut [f64]) {
        let v = self.lattice.volume();
        let nn = 2 * self.lattice.dim();
        for x in 0..v {
            let p2: f64 = (0..self.channels).map(|c| field[c * v + x].powi(2)).sum();
            let radial = 2.0 * self.a + 4.0 * self.b * p2;
            let neighbours = &self.all_neighbours[x * nn..(x + 1) * nn];
            for c in 0..self.channels {
                let f = &field[c * v..(c + 1) * v];
                let s: f64 = neighbours.iter().map(|&y| f[y]).sum();
                grad[c * v + x] = radial * f[x] - 2.0 * self.kappa * s;
            }
        }
    }
}
