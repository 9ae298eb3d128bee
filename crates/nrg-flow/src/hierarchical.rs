//! The hierarchical, MERA-like RG flow (NeuralRG; RG-Flow with 4×4 blocks).
//!
//! `L = 2ⁿ`. Level `k` acts on the sublattice of spacing `d = 2ᵏ` (sites with both
//! coordinates ≡ 0 mod `d`), cut into `b × b` blocks of sublattice sites. In the RG
//! direction `R = G⁻¹` (fine → coarse) each level applies, `repeats` times,
//!
//! 1. a *disentangler*: one block bijector on every block at offset `(b/2)·d`;
//! 2. a *decimator*: one block bijector on every block at offset 0.
//!
//! After level `k` the sites with both coordinates ≡ 0 mod `2^{k+1}` go on to level `k+1`;
//! the other three quarters stay behind as the level-`k` latents. A level needs at least
//! one block per side (`L/2ᵏ ≥ b`), so 2×2 blocks allow `n` levels and 4×4 blocks `n − 1`;
//! `depth` may cut this short. The generative map `G` runs the layers in reverse order
//! with their forward maps. Every layer has one block bijector shared by all of its blocks
//! (translation invariance), applied to all blocks at once as one batch `[B·m², C, b, b]`.
//! Where the device has the hot paths (flex; the cubecl backend with `wgpu`) a RealNVP
//! layer with plain MLP subnets and affine couplings is one operation on the flow's state
//! `[B, C·L² + 1]`, gather, couplings, scatter and ln|det| together
//! ([`BlockBijector::layer_on_state`], decision 74).
//!
//! **Bulk geometry.** The latent at `(i, j)` sits at bulk level `min(v₂(i), v₂(j), depth)`
//! (`v₂` the 2-adic valuation, `v₂(0) = ∞`) and at position `(⌊i/2^level⌋, ⌊j/2^level⌋)`
//! of that level's `L/2^level`-sided lattice; see [`bulk_site`].
//!
//! Shapes: `[batch, C, L, L]` in and out; log-dets `[batch]`.

use burn::module::Module;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData, s};
use nrg_core::bulk::{BlockLayer, BulkLayout, HierarchicalLayout};
use nrg_core::{Bijector, NrgError, Result};
use nrg_layers::kernels::Direction;
use nrg_layers::{BlockBijector, BlockPlacement, pack_state, unpack_state};

pub use nrg_core::bulk::{BulkSite, bulk_site};

/// The levels a hierarchical flow with `b × b` blocks can have on an `L × L` lattice.
pub fn max_depth(size: usize, block: usize) -> usize {
    let mut depth = 0;
    while size >> depth >= block && (size >> depth).is_multiple_of(block) {
        depth += 1;
    }
    depth
}

/// One layer: a shared block bijector at a dilation and an offset.
#[derive(Module, Debug)]
pub struct RgLayer {
    bijector: BlockBijector,
    /// `d = 2ᵏ`.
    dilation: usize,
    /// Block offset in lattice units (`(b/2)·d` for a disentangler, 0 for a decimator).
    offset: usize,
    block: usize,
}

impl RgLayer {
    /// Applies `f` (the block bijector's forward or inverse) to every block.
    ///
    /// The blocks are gathered from the lattice with one `select` over the flattened
    /// `(C, L, L)` sites ([`block_sites`]) and put back with one more: a `select` by the
    /// inverse permutation where the blocks cover every site (`d = 1`), else adding the
    /// blocks to the field with their sites zeroed. Built from rolls, a strided slice and a
    /// permute, the same gather and scatter were ~25 operations per layer, each a kernel
    /// launch on a GPU (decision 69).
    fn apply(
        &self,
        x: Tensor<4>,
        f: impl Fn(&BlockBijector, Tensor<4>) -> (Tensor<4>, Tensor<1>),
    ) -> (Tensor<4>, Tensor<1>) {
        let [batch, c, l, _] = x.dims();
        let (d, b, o) = (self.dilation, self.block, self.offset);
        let m = l / d / b;
        let device = x.device();
        let sites = block_sites(c, l, d, b, o);
        let n = sites.len();
        let index = |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [n]), &device);
        let flat = x.reshape([batch, c * l * l]);
        let gather = index(sites.clone());
        let blocks = flat.clone().select(1, gather.clone());
        let (y, ld) = f(&self.bijector, blocks.reshape([batch * m * m, c, b, b]));
        let y = y.reshape([batch, n]);
        let out = if n == c * l * l {
            let mut inverse = vec![0i64; n];
            for (k, &site) in sites.iter().enumerate() {
                inverse[site as usize] = k as i64;
            }
            y.select(1, index(inverse))
        } else {
            // The block sites zeroed (exactly) and the blocks added there: exact, where
            // adding `y − blocks` to the field would round.
            let mut keep = vec![1.0f32; c * l * l];
            for &site in &sites {
                keep[site as usize] = 0.0;
            }
            let keep = Tensor::<2>::from_data(TensorData::new(keep, [1, c * l * l]), &device);
            (flat * keep).select_assign(1, gather, y, IndexingUpdateOp::Add)
        };
        (
            out.reshape([batch, c, l, l]),
            ld.reshape([batch, m * m]).sum_dim(1).reshape([batch]),
        )
    }
}

/// The flattened `(channel, row, col)` site of every entry of the blocks of a layer with
/// dilation `d`, block side `b` and offset `o` on `C` channels of an `L × L` lattice, in the
/// order of the blocks' batch `[m, m, C, b, b]` (`m = L/(d·b)`): block `(I, J)`, channel
/// `c`, entry `(i, j)` sits at row `((I·b + i)·d + o) mod L`, column `((J·b + j)·d + o)
/// mod L`. Distinct sites; all `C·L²` of them when `d = 1`.
fn block_sites(c: usize, l: usize, d: usize, b: usize, o: usize) -> Vec<i64> {
    let m = l / d / b;
    let mut sites = Vec::with_capacity(m * m * c * b * b);
    for bi in 0..m {
        for bj in 0..m {
            for ch in 0..c {
                for i in 0..b {
                    let row = ((bi * b + i) * d + o) % l;
                    for j in 0..b {
                        let col = ((bj * b + j) * d + o) % l;
                        sites.push(((ch * l + row) * l + col) as i64);
                    }
                }
            }
        }
    }
    sites
}

/// The hierarchical flow: layers in RG order (fine → coarse).
#[derive(Module, Debug)]
pub struct HierarchicalFlow {
    layers: Vec<RgLayer>,
    size: usize,
    depth: usize,
}

impl HierarchicalFlow {
    /// Builds the flow on an `L × L` lattice (`L = size`) with `b × b` blocks (`block`),
    /// `depth` levels (`None`: as many as fit) and `repeats` disentangler/decimator pairs per
    /// level; `make_block(level, layer_in_level)` creates each layer's block bijector.
    pub fn new(
        size: usize,
        block: usize,
        depth: Option<usize>,
        repeats: usize,
        mut make_block: impl FnMut(usize, usize) -> BlockBijector,
    ) -> Result<Self> {
        if !size.is_power_of_two() || size < 2 {
            return Err(NrgError::param(
                "L",
                format!("the hierarchical flow needs L a power of two ≥ 2, got {size}"),
            ));
        }
        if !(block == 2 || block == 4) {
            return Err(NrgError::param(
                "block",
                format!("blocks are 2×2 or 4×4, got {block}"),
            ));
        }
        let possible = max_depth(size, block);
        if possible == 0 {
            return Err(NrgError::param(
                "L",
                format!("L = {size} is smaller than one {block}×{block} block"),
            ));
        }
        let depth = depth.unwrap_or(possible);
        if depth == 0 || depth > possible {
            return Err(NrgError::param(
                "depth",
                format!(
                    "depth must be in 1..={possible} for L = {size} and {block}×{block} blocks, got {depth}"
                ),
            ));
        }
        if repeats == 0 {
            return Err(NrgError::param("repeats", "must be at least 1"));
        }
        let mut layers = Vec::new();
        for level in 0..depth {
            let d = 1 << level;
            for r in 0..repeats {
                for (k, offset) in [(2 * r, block / 2 * d), (2 * r + 1, 0)] {
                    layers.push(RgLayer {
                        bijector: make_block(level, k),
                        dilation: d,
                        offset,
                        block,
                    });
                }
            }
        }
        Ok(Self {
            layers,
            size,
            depth,
        })
    }

    /// Number of RG levels.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Lattice side `L`.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Number of layers (block bijectors).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The parameters its block bijectors store flat, with their pieces
    /// ([`nrg_layers::BlockRealNvp::flat_pieces`]).
    pub fn flat_pieces(&self) -> Vec<nrg_layers::FlatPieces> {
        self.layers
            .iter()
            .filter_map(|l| l.bijector.flat_pieces())
            .collect()
    }

    /// The bulk site of every latent, row-major over the lattice.
    pub fn bulk_sites(&self) -> Vec<BulkSite> {
        BulkLayout::bulk_sites(self)
    }

    /// The renormalised field after the first `levels` levels of the RG map `R`: the layers
    /// of levels `< levels` applied to `x` `[batch, C, L, L]`, then the sites with both
    /// coordinates ≡ 0 mod `2^levels` kept, `[batch, C, L/2^levels, L/2^levels]` — the
    /// variables the flow passes on to level `levels`, its analogue of `levels` block-spin
    /// steps of side 2. With `levels = depth` these are the top latents (the sites of bulk
    /// level `depth`). Errors: `levels` outside `1..=depth`.
    pub fn coarse_field(&self, x: Tensor<4>, levels: usize) -> Result<Tensor<4>> {
        if levels == 0 || levels > self.depth {
            return Err(NrgError::param(
                "levels",
                format!("must be in 1..={}, got {levels}", self.depth),
            ));
        }
        let mut y = x;
        for layer in self.layers.iter().filter(|l| l.dilation < 1 << levels) {
            y = layer.apply(y, |b, v| b.inverse(v)).0;
        }
        let d = 1usize << levels;
        Ok(y.slice(s![.., .., ..;d, ..;d]))
    }

    /// The flow's layout without its weights (block side, depth, repeats).
    pub fn layout(&self) -> HierarchicalLayout {
        let block = self.layers.first().map_or(2, |l| l.block);
        HierarchicalLayout {
            size: self.size,
            block,
            depth: self.depth,
            repeats: self.layers.len() / (2 * self.depth.max(1)),
        }
    }
}

impl BulkLayout for HierarchicalFlow {
    fn size(&self) -> usize {
        self.size
    }

    fn depth(&self) -> usize {
        self.depth
    }

    /// `G` applies the layers from the coarsest to the finest.
    fn local_layers(&self) -> Option<Vec<BlockLayer>> {
        Some(
            self.layers
                .iter()
                .rev()
                .map(|l| BlockLayer {
                    dilation: l.dilation,
                    offset: l.offset,
                    block: l.block,
                })
                .collect(),
        )
    }
}

impl HierarchicalFlow {
    /// The layers in the order `direction` runs them (generative: coarse → fine, each
    /// forward; RG: fine → coarse, each inverse).
    fn ordered(&self, direction: Direction) -> Vec<&RgLayer> {
        match direction {
            Direction::Forward => self.layers.iter().rev().collect(),
            Direction::Inverse => self.layers.iter().collect(),
        }
    }

    /// Every layer with its gather, block bijector and scatter composed from burn's
    /// operations ([`RgLayer::apply`]), the log-dets summed layer by layer: the path of
    /// devices without hot paths, and the reference of [`Self::run_on_state`].
    fn run_layered(&self, x: Tensor<4>, direction: Direction) -> (Tensor<4>, Tensor<1>) {
        let mut x = x;
        let mut logdet: Option<Tensor<1>> = None;
        for layer in self.ordered(direction) {
            let (y, ld) = layer.apply(x, |b, v| run_block(b, v, direction));
            x = y;
            logdet = Some(logdet.map_or(ld.clone(), |l| l + ld));
        }
        let n = x.dims()[0];
        let device = x.device();
        (x, logdet.unwrap_or_else(|| Tensor::zeros([n], &device)))
    }

    /// The layers on the flow's state `[B, C·L² + 1]` (the field flattened, then its
    /// ln|det| so far; [`nrg_layers::pack_state`]): each layer one operation
    /// ([`BlockBijector::layer_on_state`]) where its bijector has one on this device, else
    /// through the field and back. On a GPU this is three launches per layer forward and
    /// four backward where [`Self::run_layered`] takes about twenty (decision 74).
    fn run_on_state(&self, x: Tensor<4>, direction: Direction) -> (Tensor<4>, Tensor<1>) {
        let dims = x.dims();
        let [batch, c, l, _] = dims;
        let mut state = pack_state(x);
        for layer in self.ordered(direction) {
            let placement = BlockPlacement {
                size: l,
                dilation: layer.dilation,
                offset: layer.offset,
            };
            state = match layer
                .bijector
                .layer_on_state(state.clone(), placement, direction)
            {
                Some(next) => next,
                None => {
                    let (x, ld0) = unpack_state(state, dims);
                    let (y, ld) = layer.apply(x, |b, v| run_block(b, v, direction));
                    Tensor::cat(
                        vec![
                            y.reshape([batch, c * l * l]),
                            (ld0 + ld).reshape([batch, 1]),
                        ],
                        1,
                    )
                }
            };
        }
        unpack_state(state, dims)
    }

    /// [`Self::run_on_state`] where a layer of the flow has its one-operation form on the
    /// device of `x`, else [`Self::run_layered`].
    fn run(&self, x: Tensor<4>, direction: Direction) -> (Tensor<4>, Tensor<1>) {
        let device = x.device();
        if self
            .layers
            .iter()
            .any(|layer| layer.bijector.runs_on_state(&device))
        {
            self.run_on_state(x, direction)
        } else {
            self.run_layered(x, direction)
        }
    }
}

/// The block bijector's forward or inverse on a batch of blocks.
fn run_block(b: &BlockBijector, v: Tensor<4>, direction: Direction) -> (Tensor<4>, Tensor<1>) {
    match direction {
        Direction::Forward => b.forward(v),
        Direction::Inverse => b.inverse(v),
    }
}

impl Bijector for HierarchicalFlow {
    fn forward(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        self.run(z, Direction::Forward)
    }

    fn inverse(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        self.run(x, Direction::Inverse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// The gather and scatter of [`RgLayer::apply`] as they were first written (rolls, a
    /// strided slice, a permute), applying `f` to the blocks.
    fn apply_by_rolls(
        x: Tensor<4>,
        (d, b, o): (usize, usize, usize),
        f: impl Fn(Tensor<4>) -> Tensor<4>,
    ) -> Tensor<4> {
        let [batch, c, l, _] = x.dims();
        let shifted = x.roll_dim(-(o as i64), 2).roll_dim(-(o as i64), 3);
        let (side, m) = (l / d, l / d / b);
        let sub = shifted.clone().slice(s![.., .., ..;d, ..;d]);
        let blocks = sub
            .reshape([batch, c, m, b, m, b])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([batch * m * m, c, b, b]);
        let y = f(blocks)
            .reshape([batch, m, m, c, b, b])
            .permute([0, 3, 1, 4, 2, 5])
            .reshape([batch, c, side, side]);
        let out = shifted.slice_assign(s![.., .., ..;d, ..;d], y);
        out.roll_dim(o as i64, 2).roll_dim(o as i64, 3)
    }

    /// The gather/scatter by index equals the one by rolls and slices for every dilation,
    /// offset, block side and channel count a flow on L = 8 uses, with a map that depends
    /// on the position in the block and on the block (so a wrong order would show): exact,
    /// both being copies, and so are the gradients through a squaring map on the autodiff
    /// device. The log-det sums one value per block.
    #[test]
    fn block_gather_and_scatter_equal_rolls_and_slices() {
        let dev = Device::flex();
        dev.seed(3);
        let layer = |d: usize, b: usize, o: usize, c: usize| RgLayer {
            bijector: BlockBijector::RealNvp(
                nrg_layers::BlockRealNvpConfig::new(c, b, 1, vec![2]).init(&dev),
            ),
            dilation: d,
            offset: o,
            block: b,
        };
        for (d, b, c) in [(1, 2, 1), (2, 2, 1), (4, 2, 2), (1, 4, 1), (2, 4, 2)] {
            for o in [0, (b / 2) * d] {
                let x = Tensor::<4>::random([3, c, 8, 8], Distribution::Default, &dev);
                let nb = 3 * (8 / d / b) * (8 / d / b);
                let ramp = Tensor::<1>::from_data(
                    TensorData::new(
                        (0..nb * c * b * b).map(|v| v as f32).collect(),
                        [nb * c * b * b],
                    ),
                    &dev,
                )
                .reshape([nb, c, b, b]);
                let map = |t: Tensor<4>| t * 2.0 + ramp.clone();
                let (got, ld) = layer(d, b, o, c).apply(x.clone(), |_, t| {
                    let n = t.dims()[0];
                    (map(t), Tensor::ones([n], &dev))
                });
                let want = apply_by_rolls(x, (d, b, o), map);
                let (got, want) = (got.into_data(), want.into_data());
                assert_eq!(got, want, "d={d} b={b} o={o} C={c}");
                // and the gradient of a weighted sum, through both (autodiff)
                let ad = dev.clone().autodiff();
                let xa = Tensor::<4>::random([3, c, 8, 8], Distribution::Default, &ad);
                let w = Tensor::<4>::random([3, c, 8, 8], Distribution::Default, &ad);
                let grad = |out: Tensor<4>, x: &Tensor<4>| {
                    let g = (out * w.clone()).sum().backward();
                    x.grad(&g).unwrap().into_data()
                };
                let x1 = xa.clone().require_grad();
                let (y1, _) = layer(d, b, o, c).apply(x1.clone(), |_, t| {
                    let n = t.dims()[0];
                    (t.clone() * t, Tensor::zeros([n], &ad))
                });
                let x2 = xa.require_grad();
                let y2 = apply_by_rolls(x2.clone(), (d, b, o), |t| t.clone() * t);
                assert_eq!(
                    grad(y1, &x1),
                    grad(y2, &x2),
                    "gradient, d={d} b={b} o={o} C={c}"
                );
                let m = 8 / d / b;
                let ld = ld.into_data().try_to_vec::<f32>().unwrap();
                assert_eq!(ld, vec![(m * m) as f32; 3]);
            }
        }
    }

    #[test]
    fn bulk_levels_follow_the_two_adic_valuation() {
        // L = 8, depth 3: (0,0) reaches the top; 3 sites at level 2, 12 at 1, 48 at 0.
        let mut count = [0usize; 4];
        for i in 0..8 {
            for j in 0..8 {
                count[bulk_site(i, j, 3).level] += 1;
            }
        }
        assert_eq!(count, [48, 12, 3, 1]);
        assert_eq!(
            bulk_site(4, 6, 3),
            BulkSite {
                level: 1,
                row: 2,
                col: 3
            }
        );
        // A cut flow stops at its depth.
        assert_eq!(bulk_site(0, 0, 1).level, 1);
        assert_eq!(bulk_site(4, 4, 1).level, 1);
        assert_eq!(max_depth(16, 2), 4);
        assert_eq!(max_depth(16, 4), 3);
        assert_eq!(max_depth(4, 4), 1);
    }

    /// The weightless layout describes the flow's layers exactly (generative order), for 2×2
    /// and 4×4 blocks, repeats and a cut depth.
    #[test]
    fn layout_matches_the_flow() {
        let dev = burn::tensor::Device::flex();
        for (size, block, depth, repeats) in
            [(8, 2, None, 1), (16, 4, None, 2), (16, 2, Some(2), 1)]
        {
            let flow = HierarchicalFlow::new(size, block, depth, repeats, |_, _| {
                BlockBijector::RealNvp(
                    nrg_layers::BlockRealNvpConfig::new(1, block, 1, vec![2]).init(&dev),
                )
            })
            .unwrap();
            let layout = flow.layout();
            assert_eq!(layout.local_layers(), flow.local_layers());
            assert_eq!(layout.bulk_sites(), flow.bulk_sites());
            assert_eq!((layout.block, layout.repeats), (block, repeats));
        }
    }

    /// At full depth the coarse field is the top latent; after `k` levels it lives on the
    /// `L/2^k` sublattice; levels outside `1..=depth` are refused.
    #[test]
    fn coarse_field_is_the_field_passed_on() {
        let dev = burn::tensor::Device::flex();
        let flow = HierarchicalFlow::new(8, 2, None, 1, |_, _| {
            BlockBijector::RealNvp(nrg_layers::BlockRealNvpConfig::new(1, 2, 1, vec![4]).init(&dev))
        })
        .unwrap();
        let x = Tensor::<4>::random(
            [3, 1, 8, 8],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let (z, _) = flow.inverse(x.clone());
        let top = flow.coarse_field(x.clone(), 3).unwrap();
        assert_eq!(top.dims(), [3, 1, 1, 1]);
        let z00 = z.clone().slice(s![.., .., 0..1, 0..1]);
        let diff: f32 = (top - z00).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
        let one = flow.coarse_field(x.clone(), 1).unwrap();
        assert_eq!(one.dims(), [3, 1, 4, 4]);
        let two = flow.coarse_field(x, 2).unwrap();
        assert_eq!(two.dims(), [3, 1, 2, 2]);
        assert!(flow.coarse_field(z.clone(), 0).is_err());
        assert!(flow.coarse_field(z, 4).is_err());
    }

    /// Every parameter's gradient, flattened, in visiting order.
    struct ParamGrads<'a>(&'a burn::tensor::Gradients, Vec<Vec<f32>>);

    impl burn::module::ModuleVisitor for ParamGrads<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let g = param
                .val()
                .grad(self.0)
                .expect("every parameter has a gradient");
            self.1.push(g.into_data().try_to_vec::<f32>().unwrap());
        }
    }

    /// The flow on its state (one operation per layer) equals the layer-by-layer flow on
    /// the flex autodiff device, both directions: log-dets to 1e-5 of their largest
    /// magnitude (at least 1; they reach ~70 and are summed in another order, a few ulps
    /// apart), every parameter's gradient to 1e-4 of its largest (its cotangents reach it
    /// through those log-dets). The fields and the input's gradient are bit for bit the
    /// same: both paths run the same chain kernel on the same columns, and their gathers
    /// and scatters are copies. NeuralRG's 2×2 flow, an RG-Flow 4×4 flow with two channels
    /// and two repeats, and a flow whose first level has residual subnets (a nonzero
    /// ln|det|) and whose second is the fixed Haar transform: neither has the state
    /// operation, so those levels run through the field and back.
    #[test]
    fn state_path_equals_layered_path_with_gradients() {
        use burn::module::Module;
        use nrg_layers::{BlockRealNvpConfig, HaarBlock};
        let dev = Device::flex().autodiff();
        dev.seed(3);
        let real_nvp = |c: usize, b: usize| {
            BlockBijector::RealNvp(
                BlockRealNvpConfig::new(c, b, 2, vec![6])
                    .with_zero_init(false)
                    .init(&dev),
            )
        };
        let flows = [
            (
                1,
                HierarchicalFlow::new(8, 2, None, 1, |_, _| real_nvp(1, 2)).unwrap(),
            ),
            (
                2,
                HierarchicalFlow::new(16, 4, None, 2, |_, _| real_nvp(2, 4)).unwrap(),
            ),
            (
                1,
                HierarchicalFlow::new(8, 2, None, 1, |level, _| match level {
                    0 => BlockBijector::RealNvp(
                        BlockRealNvpConfig::new(1, 2, 2, vec![6, 6])
                            .with_residual(true)
                            .with_zero_init(false)
                            .init(&dev),
                    ),
                    1 => BlockBijector::Haar(HaarBlock::new(&dev)),
                    _ => real_nvp(1, 2),
                })
                .unwrap(),
            ),
        ];
        let vals = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
        let lds = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
        let diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        };
        // The largest magnitude, at least 1: f32 sums in another order differ by a few
        // ulps of it.
        let scale = |v: &[f32]| v.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        for (c, flow) in flows {
            assert!(flow.layers.iter().any(|l| l.bijector.runs_on_state(&dev)));
            let l = flow.size();
            let x = Tensor::<4>::random([3, c, l, l], Distribution::Normal(0.0, 1.0), &dev)
                .require_grad();
            let cot = Tensor::<4>::random([3, c, l, l], Distribution::Normal(0.0, 1.0), &dev);
            for direction in [Direction::Forward, Direction::Inverse] {
                let (y1, l1) = flow.run_on_state(x.clone(), direction);
                let (y2, l2) = flow.run_layered(x.clone(), direction);
                let case = format!("L={l} C={c} {direction:?}");
                assert_eq!(vals(y1.clone()), vals(y2.clone()), "{case}: fields");
                let (d1, d2) = (lds(l1.clone()), lds(l2.clone()));
                assert!(
                    diff(&d1, &d2) < 1e-5 * scale(&d2),
                    "{case}: {}",
                    diff(&d1, &d2)
                );
                let g1 = ((y1 * cot.clone()).sum() + l1.sum()).backward();
                let g2 = ((y2 * cot.clone()).sum() + l2.sum()).backward();
                let (a, b) = (vals(x.grad(&g1).unwrap()), vals(x.grad(&g2).unwrap()));
                assert_eq!(a, b, "{case}: dx");
                let (mut p1, mut p2) = (ParamGrads(&g1, vec![]), ParamGrads(&g2, vec![]));
                flow.visit(&mut p1);
                flow.visit(&mut p2);
                assert_eq!(p1.1.len(), p2.1.len());
                assert!(!p1.1.is_empty());
                for (a, b) in p1.1.iter().zip(&p2.1) {
                    assert!(diff(a, b) < 1e-4 * scale(b), "{case}: {}", diff(a, b));
                }
            }
        }
    }
}
