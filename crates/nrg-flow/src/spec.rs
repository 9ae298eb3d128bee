//! A flow described by data: the `[flow]` table of a run configuration.
//!
//! ```toml
//! [flow]
//! kind = "hierarchical"   # or "flat"
//! block = 2               # 2×2 (NeuralRG) or 4×4 (RG-Flow) blocks
//! depth = 4               # levels (default: as many as fit)
//! repeats = 1             # disentangler/decimator pairs per level
//! subnet = "mlp"          # "mlp", "residual-mlp" or "ode" (block bijectors)
//! couplings = 10          # couplings per block bijector (flat: couplings in the stack)
//! hidden = [10, 10]       # hidden widths of each subnet
//! prior = "gaussian"      # or "laplace", or "bimodal" (½N(μ,1) + ½N(−μ,1), μ learned per level)
//! learn_prior_scale = false
//! z2 = true               # Z₂ symmetrisation
//! circulant = false       # learnable momentum-space linear layer at the boundary
//! ```
//!
//! Flat flows use `couplings`, `hidden`, `kernel` (odd CNN kernel) and `additive`; the
//! defaults are NeuralRG's hierarchical settings. Unknown keys are an error.

use crate::flow::{FlowBijector, FlowModel};
use crate::hierarchical::HierarchicalFlow;
use crate::prior::{LatentPrior, LatentShape, LevelScales};
use burn::tensor::Device;
use nrg_core::{NrgError, Result};
use nrg_layers::{
    AffineCouplingConfig, BlockBijector, BlockOdeConfig, BlockRealNvpConfig, CouplingStack,
};
use serde::{Deserialize, Serialize};

/// Flat or hierarchical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowKind {
    /// A stack of checkerboard couplings with periodic CNN subnets.
    Flat,
    /// The MERA-like hierarchical flow.
    Hierarchical,
}

/// Block bijectors of the hierarchical flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubnetKind {
    /// RealNVP with plain MLP subnets (NeuralRG).
    Mlp,
    /// RealNVP with residual MLP subnets (RG-Flow).
    ResidualMlp,
    /// A neural ODE (RK4, exact divergence).
    Ode,
}

/// The prior's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriorShape {
    /// `N(0, σ²)`.
    Gaussian,
    /// Laplace with scale `σ`.
    Laplace,
    /// The symmetric mixture `½N(μ, σ²) + ½N(−μ, σ²)` with a learnable `μ` per level
    /// (starting at 1).
    Bimodal,
}

/// The description of a flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowSpec {
    /// Flat or hierarchical.
    pub kind: FlowKind,
    /// Couplings per block bijector (hierarchical) or in the stack (flat).
    pub couplings: usize,
    /// Hidden widths of each subnet.
    pub hidden: Vec<usize>,
    /// Odd kernel size of the flat flow's CNN.
    pub kernel: usize,
    /// Additive (NICE) couplings.
    pub additive: bool,
    /// Block side of the hierarchical flow (2 or 4).
    pub block: usize,
    /// Levels of the hierarchical flow (`None`: as many as fit).
    pub depth: Option<usize>,
    /// Disentangler/decimator pairs per level.
    pub repeats: usize,
    /// Block bijector kind.
    pub subnet: SubnetKind,
    /// RK4 steps of ODE blocks.
    pub ode_steps: usize,
    /// Prior shape.
    pub prior: PriorShape,
    /// Learn one prior scale per bulk level.
    pub learn_prior_scale: bool,
    /// Z₂ symmetrisation.
    pub z2: bool,
    /// A learnable circulant (momentum-space) linear layer at the boundary end, which
    /// captures the Gaussian part of the target exactly.
    pub circulant: bool,
}

impl Default for FlowSpec {
    fn default() -> Self {
        Self {
            kind: FlowKind::Hierarchical,
            couplings: 10,
            hidden: vec![10, 10],
            kernel: 3,
            additive: false,
            block: 2,
            depth: None,
            repeats: 1,
            subnet: SubnetKind::Mlp,
            ode_steps: 8,
            prior: PriorShape::Gaussian,
            learn_prior_scale: false,
            z2: false,
            circulant: false,
        }
    }
}

impl FlowSpec {
    /// The φ⁴ tutorial's flat flow: 16 affine couplings, CNN `1 → 8 → 8 → 2`, 3×3 kernels.
    pub fn phi4_tutorial() -> Self {
        Self {
            kind: FlowKind::Flat,
            couplings: 16,
            hidden: vec![8, 8],
            ..Self::default()
        }
    }

    /// Builds the model for `[channels, L, L]` configurations on `device`.
    pub fn build(&self, channels: usize, size: usize, device: &Device) -> Result<FlowModel> {
        if channels == 0 || size < 2 {
            return Err(NrgError::param(
                "lattice",
                format!("need channels ≥ 1 and L ≥ 2, got {channels} and {size}"),
            ));
        }
        if self.hidden.contains(&0) {
            return Err(NrgError::param("hidden", "widths must be positive"));
        }
        let (bijector, site_levels) = match self.kind {
            FlowKind::Flat => {
                if self.kernel.is_multiple_of(2) {
                    return Err(NrgError::param("kernel", "must be odd"));
                }
                if self.couplings == 0 {
                    return Err(NrgError::param("couplings", "must be at least 1"));
                }
                let config = AffineCouplingConfig::new(channels, size, size, self.hidden.clone())
                    .with_kernel(self.kernel)
                    .with_additive(self.additive);
                let stack = CouplingStack::checkerboard(&config, self.couplings, device);
                (FlowBijector::Flat(stack), vec![0; size * size])
            }
            FlowKind::Hierarchical => {
                if self.subnet != SubnetKind::Ode && self.couplings == 0 {
                    return Err(NrgError::param("couplings", "must be at least 1"));
                }
                if self.subnet == SubnetKind::Ode && self.ode_steps == 0 {
                    return Err(NrgError::param("ode_steps", "must be at least 1"));
                }
                let flow =
                    HierarchicalFlow::new(size, self.block, self.depth, self.repeats, |_, _| {
                        match self.subnet {
                            SubnetKind::Ode => BlockBijector::Ode(
                                BlockOdeConfig::new(channels, self.block, self.hidden.clone())
                                    .with_steps(self.ode_steps)
                                    .init(device),
                            ),
                            kind => BlockBijector::RealNvp(
                                BlockRealNvpConfig::new(
                                    channels,
                                    self.block,
                                    self.couplings,
                                    self.hidden.clone(),
                                )
                                .with_residual(kind == SubnetKind::ResidualMlp)
                                .with_additive(self.additive)
                                .init(device),
                            ),
                        }
                    })?;
                let levels = flow.bulk_sites().iter().map(|s| s.level).collect();
                (FlowBijector::Hierarchical(flow), levels)
            }
        };
        let shape = match self.prior {
            PriorShape::Laplace => LatentShape::Laplace,
            PriorShape::Gaussian | PriorShape::Bimodal => LatentShape::Gaussian,
        };
        let scales = if self.learn_prior_scale {
            LevelScales::Learnable
        } else {
            LevelScales::Fixed
        };
        let mut prior = LatentPrior::new(&site_levels, shape, scales, device);
        if self.prior == PriorShape::Bimodal {
            prior = prior
                .with_bimodal(1.0)
                .ok_or_else(|| NrgError::param("prior", "bimodal needs the Gaussian shape"))?;
        }
        let model = FlowModel::new(bijector, prior, self.z2, [channels, size, size]);
        Ok(if self.circulant {
            model.with_circulant(device)
        } else {
            model
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_reject_unknown_keys() {
        let spec: FlowSpec = toml::from_str("kind = \"flat\"\ncouplings = 4\nz2 = true").unwrap();
        assert_eq!(spec.kind, FlowKind::Flat);
        assert_eq!(spec.couplings, 4);
        assert!(spec.z2);
        assert_eq!(spec.hidden, vec![10, 10]);
        assert!(toml::from_str::<FlowSpec>("kidn = \"flat\"").is_err());
        assert!(toml::from_str::<FlowSpec>("subnet = \"transformer\"").is_err());
    }

    #[test]
    fn bad_specs_are_errors_not_panics() {
        let dev = Device::flex();
        let spec = FlowSpec::default();
        assert!(spec.build(1, 12, &dev).is_err());
        let deep = FlowSpec {
            depth: Some(5),
            ..FlowSpec::default()
        };
        assert!(deep.build(1, 16, &dev).is_err());
        let four = FlowSpec {
            block: 4,
            ..FlowSpec::default()
        };
        assert!(four.build(1, 2, &dev).is_err());
        assert!(four.build(1, 8, &dev).is_ok());
    }
}
