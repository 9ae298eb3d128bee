//! The bulk of a hierarchical latent model: where each latent sits, which boundary sites it
//! can reach, and its effective action.
//!
//! A hierarchical flow `x = G(z)` on an `L × L` lattice keeps one latent per lattice site
//! (per component); the latent at site `(i, j)` belongs to RG level
//! `l = min(v₂(i), v₂(j), depth)` (`v₂` the 2-adic valuation) and sits at `(⌊i/2ˡ⌋,
//! ⌊j/2ˡ⌋)` of that level's coarse lattice ([`BulkSite`]). A model that has such a bulk
//! describes it by [`BulkLayout`]; a flow without one (a flat coupling stack) has none, and
//! asking it for a bulk is an error, not a made-up geometry.
//!
//! **Structural causal cone** ([`causal_cones`]). `G` is a sequence of block layers
//! ([`BlockLayer`]): each mixes the sites of every `b × b` block of a sublattice. The cone of
//! a latent is every boundary site that `G(z)` may depend on it through: start from its
//! site and, layer by layer in the order `G` applies them, add all sites of every block that
//! holds a site already in the set. It is exact for the architecture (a site outside it
//! cannot depend on the latent whatever the weights) and empty of meaning when a layer
//! couples all sites (a global, circulant layer): then every latent reaches everything.
//!
//! **Effective action** ([`evaluate_bulk`]). `S_eff(z) = S(G(z)) − ln|det ∂G/∂z|`, whose
//! density `e^{−S_eff}` maps to `e^{−S}` under `x = G(z)` (the prior does not enter). Bulk
//! HMC and the holographic analysis evaluate it (and `∂S_eff/∂z` by autodiff) here.

use crate::action::Action;
use crate::model::LatentModel;
use burn::tensor::{Device, Tensor, TensorData};

/// Where a latent lives in the bulk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BulkSite {
    /// RG level (0 = finest; `depth` for the sites that reach the top).
    pub level: usize,
    /// Row in the level's coarse lattice.
    pub row: usize,
    /// Column in the level's coarse lattice.
    pub col: usize,
}

/// The bulk level and coarse position of the latent at lattice site `(i, j)` of a flow with
/// `depth` levels.
pub fn bulk_site(i: usize, j: usize, depth: usize) -> BulkSite {
    let v2 = |x: usize| {
        if x == 0 {
            usize::MAX
        } else {
            x.trailing_zeros() as usize
        }
    };
    let level = v2(i).min(v2(j)).min(depth);
    BulkSite {
        level,
        row: i >> level,
        col: j >> level,
    }
}

/// One layer of a hierarchical map: one bijector on every `block × block` block of the
/// sublattice of spacing `dilation` (sites with both coordinates ≡ `offset` mod `dilation`),
/// the blocks starting at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockLayer {
    /// Sublattice spacing `d = 2ᵏ`.
    pub dilation: usize,
    /// Offset of the first block, in lattice units.
    pub offset: usize,
    /// Block side `b` (in sublattice sites).
    pub block: usize,
}

/// The bulk of a hierarchical latent model on an `L × L` lattice.
pub trait BulkLayout {
    /// Lattice side `L`.
    fn size(&self) -> usize;

    /// The number of RG levels (the top latents sit at level `depth`).
    fn depth(&self) -> usize;

    /// The bulk site of the latent at every lattice site, row-major (all components of a
    /// site share it).
    fn bulk_sites(&self) -> Vec<BulkSite> {
        let (l, depth) = (self.size(), self.depth());
        (0..l * l).map(|s| bulk_site(s / l, s % l, depth)).collect()
    }

    /// The layers of `G` in the order it applies them, when every layer is local (block by
    /// block); `None` when a layer couples all sites (e.g. a circulant layer).
    fn local_layers(&self) -> Option<Vec<BlockLayer>>;
}

/// The layout of the standard hierarchical flow (NeuralRG's MERA-like network, RG-Flow's
/// with 4×4 blocks) without its weights: on an `L × L` lattice, level `k = 0 … depth − 1`
/// acts on the sublattice of spacing `2ᵏ` with, `repeats` times, a disentangler (blocks at
/// offset `(b/2)·2ᵏ`) then a decimator (offset 0), in the RG direction; `G` applies these
/// layers in reverse. What the causal cones of a flow of any size depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HierarchicalLayout {
    /// Lattice side `L`.
    pub size: usize,
    /// Block side `b` (2 or 4).
    pub block: usize,
    /// RG levels.
    pub depth: usize,
    /// Disentangler/decimator pairs per level.
    pub repeats: usize,
}

impl HierarchicalLayout {
    /// The layers in the RG direction (fine → coarse).
    pub fn rg_layers(&self) -> Vec<BlockLayer> {
        let mut layers = Vec::new();
        for level in 0..self.depth {
            let d = 1 << level;
            for _ in 0..self.repeats {
                for offset in [self.block / 2 * d, 0] {
                    layers.push(BlockLayer {
                        dilation: d,
                        offset,
                        block: self.block,
                    });
                }
            }
        }
        layers
    }
}

impl BulkLayout for HierarchicalLayout {
    fn size(&self) -> usize {
        self.size
    }

    fn depth(&self) -> usize {
        self.depth
    }

    fn local_layers(&self) -> Option<Vec<BlockLayer>> {
        let mut layers = self.rg_layers();
        layers.reverse();
        Some(layers)
    }
}

/// The structural causal cone of every latent site: `cones[s][t]` is whether boundary
/// site `t` can depend on the latent at site `s` (module docs). `None` when the map has a
/// global layer.
pub fn causal_cones(layout: &dyn BulkLayout) -> Option<Vec<Vec<bool>>> {
    let layers = layout.local_layers()?;
    let l = layout.size();
    let v = l * l;
    // the sites of every block of every layer, once
    let blocks: Vec<Vec<Vec<usize>>> = layers
        .iter()
        .map(|layer| {
            let (d, o, b) = (layer.dilation, layer.offset, layer.block);
            let side = l / d;
            let m = side / b;
            let mut out = Vec::with_capacity(m * m);
            for bi in 0..m {
                for bj in 0..m {
                    let mut sites = Vec::with_capacity(b * b);
                    for u in 0..b {
                        for w in 0..b {
                            let i = (o + (bi * b + u) * d) % l;
                            let j = (o + (bj * b + w) * d) % l;
                            sites.push(i * l + j);
                        }
                    }
                    out.push(sites);
                }
            }
            out
        })
        .collect();
    Some(
        (0..v)
            .map(|s| {
                let mut cone = vec![false; v];
                cone[s] = true;
                for layer in &blocks {
                    for block in layer {
                        if block.iter().any(|&t| cone[t]) {
                            for &t in block {
                                cone[t] = true;
                            }
                        }
                    }
                }
                cone
            })
            .collect(),
    )
}

/// Whether [`evaluate_bulk`] computes `∂S_eff/∂z` (needs an autodiff device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gradient {
    /// The value only.
    Skip,
    /// The value and the gradient.
    Compute,
}

/// Whether [`evaluate_bulk`] returns the configurations `x = G(z)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Configurations {
    /// Not needed.
    Skip,
    /// Returned.
    Keep,
}

/// `S_eff`, `S(G(z))`, and where asked `∂S_eff/∂z` and `x = G(z)` of a batch of latents, on
/// the host in `f64` (rows of `C·R·W` numbers per latent configuration).
#[derive(Clone, Debug)]
pub struct BulkEvaluation {
    /// `S_eff(z)` per configuration, `[B]`.
    pub effective_action: Vec<f64>,
    /// `S(G(z))` per configuration, `[B]`.
    pub action: Vec<f64>,
    /// `∂S_eff/∂z`, `[B·C·R·W]`, when asked for.
    pub gradient: Option<Vec<f64>>,
    /// `x = G(z)`, `[B·C·R·W]`, when asked for.
    pub configurations: Option<Vec<f64>>,
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .unwrap_or_default()
}

/// The bulk effective action `S_eff(z) = S(G(z)) − ln|det ∂G/∂z|` of the latents `z`
/// (`[B, C, R, W]`) as a tensor `[B]`, with `x = G(z)`.
pub fn effective_action(
    model: &dyn LatentModel,
    action: &dyn Action,
    z: Tensor<4>,
) -> (Tensor<1>, Tensor<1>, Tensor<4>) {
    let (x, log_det) = model.generate_with_log_det(z);
    let s = action.action(x.clone());
    (s.clone() - log_det, s, x)
}

/// Evaluates [`effective_action`] for latents given on the host (`z` of `shape =
/// [B, C, R, W]`, `f64`, computed in the device's precision), with `∂S_eff/∂z` by autodiff
/// when asked (then `device` must be an autodiff device) and the configurations when asked.
pub fn evaluate_bulk(
    model: &dyn LatentModel,
    action: &dyn Action,
    z: &[f64],
    shape: [usize; 4],
    (gradient, configurations): (Gradient, Configurations),
    device: &Device,
) -> BulkEvaluation {
    let data: Vec<f32> = z.iter().map(|v| *v as f32).collect();
    let mut zt = Tensor::<4>::from_data(TensorData::new(data, shape), device);
    if gradient == Gradient::Compute {
        zt = zt.require_grad();
    }
    let (u, s, x) = effective_action(model, action, zt.clone());
    let grad = match gradient {
        Gradient::Compute => {
            let grads = u.clone().sum().backward();
            zt.grad(&grads).map(host)
        }
        Gradient::Skip => None,
    };
    BulkEvaluation {
        effective_action: host(u),
        action: host(s),
        gradient: grad,
        configurations: (configurations == Configurations::Keep).then(|| host(x)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Toy {
        size: usize,
        depth: usize,
        layers: Vec<BlockLayer>,
    }

    impl BulkLayout for Toy {
        fn size(&self) -> usize {
            self.size
        }
        fn depth(&self) -> usize {
            self.depth
        }
        fn local_layers(&self) -> Option<Vec<BlockLayer>> {
            Some(self.layers.clone())
        }
    }

    #[test]
    fn bulk_sites_follow_the_two_adic_valuation() {
        assert_eq!(bulk_site(0, 0, 3).level, 3);
        assert_eq!(bulk_site(4, 2, 3).level, 1);
        assert_eq!(bulk_site(1, 4, 3).level, 0);
        assert_eq!(
            bulk_site(4, 12, 3),
            BulkSite {
                level: 2,
                row: 1,
                col: 3
            }
        );
    }

    /// One 2×2 decimator layer on a 4×4 lattice: a latent's cone is its own block; with a
    /// disentangler (offset 1) applied after it, the cone grows to the blocks that overlap.
    #[test]
    fn cones_grow_block_by_block() {
        let one = Toy {
            size: 4,
            depth: 1,
            layers: vec![BlockLayer {
                dilation: 1,
                offset: 0,
                block: 2,
            }],
        };
        let cones = causal_cones(&one).unwrap();
        let set = |c: &Vec<bool>| -> Vec<usize> { (0..16).filter(|&t| c[t]).collect() };
        assert_eq!(set(&cones[0]), vec![0, 1, 4, 5]);
        assert_eq!(set(&cones[15]), vec![10, 11, 14, 15]);
        let two = Toy {
            layers: vec![
                BlockLayer {
                    dilation: 1,
                    offset: 0,
                    block: 2,
                },
                BlockLayer {
                    dilation: 1,
                    offset: 1,
                    block: 2,
                },
            ],
            ..one
        };
        let cones = causal_cones(&two).unwrap();
        // block {0,1,4,5}, then the offset blocks touching it: {5,6,9,10}, {15,12,3,0}
        // (wrapped), {13,14,1,2}, {7,4,11,8}
        assert_eq!(cones[0].iter().filter(|&&b| b).count(), 16);
        for (s, cone) in cones.iter().enumerate() {
            assert!(cone[s], "a latent is in its own cone");
        }
    }
}
