//! Block bijectors: RealNVP on the variables of one `b × b` block (NeuralRG, RG-Flow).
//!
//! A block holds `D = C·b·b` variables, `[N, C, b, b]`. They are split by column parity
//! into two halves `u` (even columns) and `v` (odd columns), `D/2` each, and `n` couplings
//! alternate which half is updated (coupling `k` updates `v` from `u` when `k` is even, `u`
//! from `v` when odd):
//!
//! ```text
//! (ŝ, t) = (s-net, t-net)(cond),  s = σ_k tanh ŝ
//! updated ← updated ⊙ e^{s} + t            forward,  ln|det| += Σ s
//! updated ← (updated − t) ⊙ e^{−s}          inverse,  ln|det| −= Σ s
//! ```
//!
//! With 2×2 blocks and one channel this is NeuralRG's block bijector: masks `[1,0,1,0]` and
//! `[0,1,0,1]` on the flattened block, separate `s` and `t` MLPs (here evaluated as one
//! [`TwinMlp`]), a learnable scale per coupling (`σ_k`, initialised to 1). The nets act on
//! the `D/2` conditioning variables only, the same function class as a `D`-input net with
//! the masked inputs zeroed. Additive coupling (NICE) sets `s = 0`.
//!
//! Shapes: `[N, C, b, b]` in and out (one block per row of the batch); log-dets `[N]`. Inside,
//! the halves are feature-major `[D/2, N]`, the layout of the fused MLP kernels. On flex, with
//! plain MLP subnets and affine couplings, the whole chain of couplings (both directions,
//! with its log-det) is one operation, [`kernels::HotPaths::coupling_chain`] (also on the
//! cubecl backend with the `wgpu` feature); elsewhere it is composed
//! from burn's operations, coupling by coupling. Plain subnets keep all their weights and
//! biases and the `σ_k` as one parameter in that operation's flat layout ([`PlainChain`]).
//! On the same devices a whole layer of a hierarchical flow — the bijector on every block
//! of a dilated sublattice, gathered from the flow's state `[B, C·L² + 1]` and scattered
//! back with the blocks' ln|det| — is one operation as well ([`BlockRealNvp::layer_on_state`]).

use crate::kernels::{self, Direction};
use crate::mlp::{self, TwinMlp, TwinMlpConfig};
use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::tensor::{Device, Tensor};
use nrg_core::Bijector;

/// Configuration of a [`BlockRealNvp`].
#[derive(Config, Debug)]
pub struct BlockRealNvpConfig {
    /// Field channels `C`.
    pub channels: usize,
    /// Block side `b` (even: 2 for NeuralRG, 4 for RG-Flow).
    pub block: usize,
    /// Number of couplings.
    pub couplings: usize,
    /// Hidden widths of each `s`/`t` network.
    pub hidden: Vec<usize>,
    /// Residual MLP subnets (RG-Flow) instead of plain ones.
    #[config(default = false)]
    pub residual: bool,
    /// Additive (NICE) couplings.
    #[config(default = false)]
    pub additive: bool,
    /// Zero-initialised output layers (a fresh bijector is the identity).
    #[config(default = true)]
    pub zero_init: bool,
}

/// RealNVP on one block, shared by every block it is applied to.
#[derive(Module, Debug)]
pub struct BlockRealNvp {
    subnets: Subnets,
    couplings: usize,
    channels: usize,
    block: usize,
    additive: bool,
}

/// The couplings' `s`/`t` networks and their scales `σ_k`, in the layout their evaluation
/// wants.
#[derive(Module, Debug)]
pub enum Subnets {
    /// Plain MLPs: one flat parameter vector, the fused chain kernel's layout.
    Plain(PlainChain),
    /// Residual MLPs (RG-Flow), one [`TwinMlp`] per coupling.
    Residual(ResidualChain),
}

/// The plain MLPs of `K` couplings and their scales as **one** parameter, in the layout of
/// the fused coupling chain ([`kernels::ChainShape`]):
///
/// ```text
/// [net₀ … net_{K−1}, σ₀ … σ_{K−1}],   net_k = [W₀ [2, w₀, w₁], b₀ [2, w₁], W₁, b₁, …]
/// ```
///
/// (`2`: the twins `s`, `t`; `max(K, 1)` scales). The chain kernel reads it as it is and its
/// gradient is the parameter's: no concatenation of the pieces per call and no slicing of
/// the gradient (on a GPU, one launch per piece — most of a hierarchical training step's
/// launches, decision 70). The composite path slices it.
#[derive(Module, Debug)]
pub struct PlainChain {
    params: Param<Tensor<1>>,
    /// MLP widths `w₀ → … → w_L` (`w₀ = w_L = D/2`).
    widths: Vec<usize>,
}

/// Residual MLPs, one per coupling, and the scales `σ_k` `[max(K, 1)]`.
#[derive(Module, Debug)]
pub struct ResidualChain {
    nets: Vec<TwinMlp>,
    scale: Param<Tensor<1>>,
}

/// Where the blocks of one layer of a hierarchical flow sit on an `L × L` lattice: block
/// `(I, J)`'s entry `(i, j)` at row `((I·b + i)·d + o) mod L`, column `((J·b + j)·d + o) mod
/// L` (`b` the bijector's block side; NeuralRG's disentangler has `o = (b/2)·d`, its
/// decimator `o = 0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPlacement {
    /// Lattice side `L`.
    pub size: usize,
    /// Dilation `d`, the spacing of the sublattice the blocks are cut from.
    pub dilation: usize,
    /// Offset `o` in lattice units.
    pub offset: usize,
}

impl BlockRealNvpConfig {
    /// Builds the bijector on `device`. The parameters are drawn in the same order for both
    /// layouts: coupling by coupling, layer by layer (weight, then bias), then `σ = 1`.
    pub fn init(&self, device: &Device) -> BlockRealNvp {
        assert!(
            self.block >= 2 && self.block.is_multiple_of(2),
            "block side must be even"
        );
        let half = self.channels * self.block * self.block / 2;
        let nets: Vec<TwinMlp> = (0..self.couplings)
            .map(|_| {
                TwinMlpConfig::new(half, half, self.hidden.clone())
                    .with_residual(self.residual)
                    .with_zero_init(self.zero_init)
                    .init(device)
            })
            .collect();
        let scale = Tensor::ones([self.couplings.max(1)], device);
        let subnets = if self.residual {
            Subnets::Residual(ResidualChain {
                nets,
                scale: Param::from_tensor(scale),
            })
        } else {
            let mut widths = vec![half];
            widths.extend(&self.hidden);
            widths.push(half);
            let mut flat = Vec::with_capacity(2 * self.couplings * (widths.len() - 1) + 1);
            for net in &nets {
                flat.extend(net.flat_parameters(half).expect("a plain MLP").1);
            }
            flat.push(scale);
            Subnets::Plain(PlainChain {
                params: Param::from_tensor(Tensor::cat(flat, 0).detach()),
                widths,
            })
        };
        BlockRealNvp {
            subnets,
            couplings: self.couplings,
            channels: self.channels,
            block: self.block,
            additive: self.additive,
        }
    }
}

impl BlockRealNvp {
    /// `[N, C, b, b] → (even columns, odd columns)`, each feature-major `[D/2, N]` (the
    /// layout of [`TwinMlp::forward_features`], so the couplings need no transposes).
    fn split(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let x = self.halves(x);
        let [_, half, n] = x.dims();
        (
            x.clone().slice_dim(0, 0..1).reshape([half, n]),
            x.slice_dim(0, 1..2).reshape([half, n]),
        )
    }

    /// Inverse of [`Self::split`].
    fn merge(&self, u: Tensor<2>, v: Tensor<2>) -> Tensor<4> {
        self.join_halves(Tensor::stack::<3>(vec![u, v], 0))
    }

    /// `[N, C, b, b] → [2, D/2, N]`: the even and odd columns, feature-major.
    fn halves(&self, x: Tensor<4>) -> Tensor<3> {
        let n = x.dims()[0];
        let half = self.channels * self.block * self.block / 2;
        x.reshape([n, half, 2]).permute([2, 1, 0])
    }

    /// Inverse of [`Self::halves`].
    fn join_halves(&self, h: Tensor<3>) -> Tensor<4> {
        let n = h.dims()[2];
        let (c, b) = (self.channels, self.block);
        h.permute([2, 1, 0]).reshape([n, c, b, b])
    }

    /// The whole chain of couplings as one fused operation ([`kernels::HotPaths::coupling_chain`]),
    /// where it is available: flex or the cubecl backend ([`kernels::hot_paths`]), affine
    /// couplings, plain MLP subnets (whose flat parameters are the kernel's, as they are).
    fn fused(&self, x: Tensor<4>, direction: Direction) -> Option<(Tensor<4>, Tensor<1>)> {
        let (params, shape) = self.plain_chain(direction)?;
        let fused = kernels::hot_paths(&x.device())?;
        let n = x.dims()[0];
        let half = self.channels * self.block * self.block / 2;
        let out = fused.coupling_chain(self.halves(x), params, shape);
        let y = self.join_halves(out.clone().slice_dim(0, 0..2 * half).reshape([2, half, n]));
        Some((y, out.slice_dim(0, 2 * half..2 * half + 1).reshape([n])))
    }

    /// The flat parameters and the [`kernels::ChainShape`] of the chain in `direction`, for
    /// the chain kernels: `None` for residual subnets, additive couplings or no coupling.
    fn plain_chain(&self, direction: Direction) -> Option<(Tensor<1>, kernels::ChainShape)> {
        let Subnets::Plain(chain) = &self.subnets else {
            return None;
        };
        if self.additive || self.couplings == 0 {
            return None;
        }
        let shape = kernels::ChainShape {
            couplings: self.couplings,
            widths: chain.widths.clone(),
            hidden: kernels::Activation::Elu,
            direction,
        };
        Some((chain.params.val(), shape))
    }

    /// Whether [`Self::layer_on_state`] exists for states on `device`.
    pub fn runs_on_state(&self, device: &Device) -> bool {
        self.plain_chain(Direction::Forward).is_some() && kernels::hot_paths(device).is_some()
    }

    /// The bijector on every block of one layer of a hierarchical flow, as one operation on
    /// the flow's *state* `[B, C·L² + 1]` (each sample's field flattened as `(channel, row,
    /// col)`, then its ln|det| so far; [`crate::pack_state`]): every `b × b` block of the
    /// sublattice of spacing `placement.dilation`, shifted by `placement.offset`, goes
    /// through the forward (or inverse) couplings, and the blocks' ln|det| is added to the
    /// sample's ([`kernels::HotPaths::block_layer`]; `nrg_kernels::blocks` for the layout).
    /// The same numbers as gathering the blocks into `[B·m², C, b, b]`, applying
    /// [`Bijector::forward`] (or `inverse`) and scattering them back (the ln|det| up to the
    /// rounding of its sum over the blocks, taken in another order), in one operation
    /// where that took about twenty on a GPU (decision 74).
    ///
    /// `None` where the operation does not exist: no hot paths on the state's device
    /// ([`kernels::hot_paths`]), residual subnets, additive couplings or no coupling.
    ///
    /// # Panics
    /// Where the state is not `[B, C·L² + 1]` for `L = placement.size`, or the blocks do
    /// not tile the sublattice (`L` a multiple of `dilation·b`).
    pub fn layer_on_state(
        &self,
        state: Tensor<2>,
        placement: BlockPlacement,
        direction: Direction,
    ) -> Option<Tensor<2>> {
        let (params, chain) = self.plain_chain(direction)?;
        let hot = kernels::hot_paths(&state.device())?;
        let shape = kernels::BlockLayerShape {
            channels: self.channels,
            size: placement.size,
            dilation: placement.dilation,
            block: self.block,
            offset: placement.offset,
            chain,
        };
        Some(hot.block_layer(state, params, shape))
    }

    /// `(s, t)` of coupling `k` from the conditioning half, all `[D/2, N]`; `s` is `None`
    /// for NICE.
    fn scale_shift(&self, k: usize, cond: Tensor<2>) -> (Option<Tensor<2>>, Tensor<2>) {
        let (out, sigma) = match &self.subnets {
            Subnets::Plain(chain) => {
                let [h, n] = cond.dims();
                let per_net = nrg_kernels::twin_layout(2, &chain.widths).1;
                let params = chain.params.val();
                let net = params.clone().slice(k * per_net..(k + 1) * per_net);
                let at = self.couplings * per_net + k;
                (
                    mlp::plain_twin_mlp(cond.reshape([1, h, n]), net, &chain.widths),
                    params.slice(at..at + 1),
                )
            }
            Subnets::Residual(chain) => (
                chain.nets[k].forward_features(cond),
                chain.scale.val().slice(k..k + 1),
            ),
        };
        let [_, h, n] = out.dims();
        let t = out.clone().slice_dim(0, 1..2).reshape([h, n]);
        if self.additive {
            return (None, t);
        }
        let s =
            crate::activation::tanh(out.slice_dim(0, 0..1).reshape([h, n])) * sigma.reshape([1, 1]);
        (Some(s), t)
    }
}

/// A parameter stored flat and the lengths of the tensors it concatenates, in order: the
/// units in which its gradient is clipped, so that clipping "per parameter tensor" means the
/// same whatever the storage ([`BlockRealNvp::flat_pieces`]).
#[derive(Clone, Debug, PartialEq)]
pub struct FlatPieces {
    /// The flat parameter.
    pub id: ParamId,
    /// The lengths of its pieces (summing to its length).
    pub lengths: Vec<usize>,
}

impl BlockRealNvp {
    /// The pieces of its flat parameter, for plain subnets: per coupling, every layer's
    /// weight `[2, w_l, w_{l+1}]` and bias `[2, w_{l+1}]`, then all the scales `σ` as one
    /// piece (the tensors of a [`TwinMlp`] per coupling and one `σ` vector, decision 70).
    /// `None` for residual subnets, whose tensors are parameters of their own.
    pub fn flat_pieces(&self) -> Option<FlatPieces> {
        let Subnets::Plain(chain) = &self.subnets else {
            return None;
        };
        let mut lengths = Vec::new();
        for _ in 0..self.couplings {
            for w in chain.widths.windows(2) {
                lengths.push(2 * w[0] * w[1]);
                lengths.push(2 * w[1]);
            }
        }
        lengths.push(self.couplings.max(1));
        Some(FlatPieces {
            id: chain.params.id,
            lengths,
        })
    }
}

impl BlockBijector {
    /// [`BlockRealNvp::flat_pieces`] of a RealNVP block; `None` for the others.
    pub fn flat_pieces(&self) -> Option<FlatPieces> {
        match self {
            BlockBijector::RealNvp(b) => b.flat_pieces(),
            BlockBijector::Ode(_) | BlockBijector::Haar(_) => None,
        }
    }
}

impl Bijector for BlockRealNvp {
    fn forward(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        match self.fused(z.clone(), Direction::Forward) {
            Some(out) => out,
            None => self.composite_forward(z),
        }
    }

    fn inverse(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        match self.fused(x.clone(), Direction::Inverse) {
            Some(out) => out,
            None => self.composite_inverse(x),
        }
    }
}

impl BlockRealNvp {
    /// The generative direction composed from burn's operations, coupling by coupling.
    fn composite_forward(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let n = z.dims()[0];
        let (mut u, mut v) = self.split(z);
        let mut logdet: Option<Tensor<2>> = None;
        for k in 0..self.couplings {
            let (cond, upd) = if k % 2 == 0 { (u, v) } else { (v, u) };
            let (s, t) = self.scale_shift(k, cond.clone());
            let upd = match s {
                Some(s) => {
                    let ls = s.clone().sum_dim(0);
                    logdet = Some(match logdet {
                        Some(l) => l + ls,
                        None => ls,
                    });
                    upd * s.exp() + t
                }
                None => upd + t,
            };
            (u, v) = if k % 2 == 0 { (cond, upd) } else { (upd, cond) };
        }
        let device = u.device();
        let logdet = logdet.map_or_else(|| Tensor::zeros([n], &device), |l| l.reshape([n]));
        (self.merge(u, v), logdet)
    }

    /// The inverse direction composed from burn's operations.
    fn composite_inverse(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let n = x.dims()[0];
        let (mut u, mut v) = self.split(x);
        let mut logdet: Option<Tensor<2>> = None;
        for k in (0..self.couplings).rev() {
            let (cond, upd) = if k % 2 == 0 { (u, v) } else { (v, u) };
            let (s, t) = self.scale_shift(k, cond.clone());
            let upd = match s {
                Some(s) => {
                    let ls = s.clone().sum_dim(0).neg();
                    logdet = Some(match logdet {
                        Some(l) => l + ls,
                        None => ls,
                    });
                    (upd - t) * s.neg().exp()
                }
                None => upd - t,
            };
            (u, v) = if k % 2 == 0 { (cond, upd) } else { (upd, cond) };
        }
        let device = u.device();
        let logdet = logdet.map_or_else(|| Tensor::zeros([n], &device), |l| l.reshape([n]));
        (self.merge(u, v), logdet)
    }
}

/// A block bijector of either kind, as chosen at run time.
#[derive(Module, Debug)]
pub enum BlockBijector {
    /// Couplings with MLP subnets.
    RealNvp(BlockRealNvp),
    /// A neural ODE.
    Ode(crate::ode::BlockOde),
    /// The fixed 2×2 Haar transform.
    Haar(HaarBlock),
}

impl BlockBijector {
    /// Whether [`Self::layer_on_state`] exists for states on `device`.
    pub fn runs_on_state(&self, device: &Device) -> bool {
        match self {
            BlockBijector::RealNvp(b) => b.runs_on_state(device),
            BlockBijector::Ode(_) | BlockBijector::Haar(_) => false,
        }
    }

    /// [`BlockRealNvp::layer_on_state`] of a RealNVP block; `None` for the others (their
    /// layers gather the blocks with burn's operations).
    pub fn layer_on_state(
        &self,
        state: Tensor<2>,
        placement: BlockPlacement,
        direction: Direction,
    ) -> Option<Tensor<2>> {
        match self {
            BlockBijector::RealNvp(b) => b.layer_on_state(state, placement, direction),
            BlockBijector::Ode(_) | BlockBijector::Haar(_) => None,
        }
    }
}

impl Bijector for BlockBijector {
    fn forward(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        match self {
            BlockBijector::RealNvp(b) => b.forward(z),
            BlockBijector::Ode(b) => b.forward(z),
            BlockBijector::Haar(b) => b.forward(z),
        }
    }

    fn inverse(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        match self {
            BlockBijector::RealNvp(b) => b.inverse(x),
            BlockBijector::Ode(b) => b.inverse(x),
            BlockBijector::Haar(b) => b.inverse(x),
        }
    }
}

/// The 2×2 Haar transform of every block and channel, a fixed orthogonal map:
///
/// ```text
///         ⎡1  1  1  1⎤
/// H = ½ · ⎢1 −1  1 −1⎥     on (v₀₀, v₀₁, v₁₀, v₁₁) of a block,  H = Hᵀ = H⁻¹,  ln|det H| = 0
///         ⎢1  1 −1 −1⎥
///         ⎣1 −1 −1  1⎦
/// ```
///
/// In the RG direction the block's `(0, 0)` entry becomes the block average (times 2), the
/// coarse variable that goes on to the next level, and the other three its differences. A
/// hierarchical flow of Haar blocks is the 2D Haar wavelet transform: a linear,
/// volume-preserving RG whose bulk covariance `R Σ_x Rᵀ` is known in closed form (the
/// reference the holographic analysis is tested against). Shapes `[N, C, 2, 2]`.
#[derive(Module, Debug)]
pub struct HaarBlock {
    matrix: Tensor<2>,
}

impl HaarBlock {
    /// The transform on `device`.
    pub fn new(device: &Device) -> Self {
        let h = [
            [1.0f32, 1.0, 1.0, 1.0],
            [1.0, -1.0, 1.0, -1.0],
            [1.0, 1.0, -1.0, -1.0],
            [1.0, -1.0, -1.0, 1.0],
        ];
        let flat: Vec<f32> = h.iter().flatten().map(|v| 0.5 * v).collect();
        Self {
            matrix: Tensor::from_data(burn::tensor::TensorData::new(flat, [4, 4]), device),
        }
    }

    fn apply(&self, v: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let [n, c, r, w] = v.dims();
        let out = v
            .reshape([n * c, r * w])
            .matmul(self.matrix.clone())
            .reshape([n, c, r, w]);
        let device = out.device();
        (out, Tensor::zeros([n], &device))
    }
}

impl Bijector for HaarBlock {
    fn forward(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        self.apply(z)
    }

    /// `H` is its own inverse.
    fn inverse(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        self.apply(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{GradsOf, magnitude, max_diff};
    use burn::tensor::{Distribution, Gradients};

    /// The pieces of the flat parameter are the tensors of per-coupling MLPs and one `σ`
    /// vector, and they tile the parameter exactly: drawn from the same seed, the
    /// per-coupling [`TwinMlp`]s' weights and biases are the pieces, in order (the draw
    /// order of decision 70), and the last piece is `σ = 1`.
    #[test]
    fn flat_pieces_tile_the_parameter() {
        let _rng = crate::test_util::rng_lock();
        let dev = Device::flex();
        dev.seed(9);
        let block = BlockRealNvpConfig::new(1, 2, 3, vec![5, 4])
            .with_zero_init(false)
            .init(&dev);
        dev.seed(9);
        let mut want_values = Vec::new();
        for _ in 0..3 {
            let net = TwinMlpConfig::new(2, 2, vec![5, 4])
                .with_zero_init(false)
                .init(&dev);
            for t in net.flat_parameters(2).unwrap().1 {
                want_values.extend(t.into_data().try_to_vec::<f32>().unwrap());
            }
        }
        want_values.extend([1.0f32; 3]);
        let pieces = block.flat_pieces().unwrap();
        let Subnets::Plain(chain) = &block.subnets else {
            panic!("plain subnets")
        };
        assert_eq!(pieces.id, chain.params.id);
        let per_coupling = [2 * 2 * 5, 2 * 5, 2 * 5 * 4, 2 * 4, 2 * 4 * 2, 2 * 2];
        let mut want: Vec<usize> = per_coupling.repeat(3);
        want.push(3);
        assert_eq!(pieces.lengths, want);
        assert_eq!(pieces.lengths.iter().sum::<usize>(), chain.params.dims()[0]);
        let got = chain.params.val().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(got, want_values, "the same numbers, in the same order");
        let residual = BlockRealNvpConfig::new(1, 2, 3, vec![5, 5])
            .with_residual(true)
            .init(&dev);
        assert!(residual.flat_pieces().is_none());
    }

    /// The fused chain equals the composite couplings on the flex autodiff device, both
    /// directions: values and log-dets (1e-5 of values of size ~1), the gradients of the
    /// input and of every parameter, the scales σ included (1e-4: sums over 300 blocks).
    #[test]
    fn fused_chain_equals_composite_couplings_with_gradients() {
        let _rng = crate::test_util::rng_lock();
        let flex = Device::flex().autodiff();
        chain_equals_composite(&flex, &flex, [1, 2, 3], vec![5, 5], 300);
    }

    /// The same for the CubeCL chain kernels on the wgpu device, for NeuralRG's 2×2 blocks
    /// and for 4×4 blocks with two channels (half width 16) and an odd number of
    /// couplings. The reference is the composite couplings on flex, with the same
    /// parameters and input (their MLPs take flex's fused twin MLP, itself checked against
    /// burn's operations in `kernels`' tests): the composite path on wgpu would compile
    /// dozens of fused shaders, minutes on software Vulkan, and check nothing of ours.
    #[cfg(feature = "wgpu")]
    #[test]
    fn cube_chain_equals_composite_couplings_with_gradients() {
        let _rng = crate::test_util::rng_lock();
        let dev = crate::test_util::wgpu_device().autodiff();
        assert!(kernels::hot_paths(&dev).is_some(), "wgpu has the hot paths");
        let flex = Device::flex().autodiff();
        chain_equals_composite(&dev, &flex, [1, 2, 3], vec![5, 5], 300);
        // More columns than the parameter gradient's cubes have threads (256), the last
        // stride partial: 1001 = 3·256 + 233, 301 = 256 + 45.
        chain_equals_composite(&dev, &flex, [1, 2, 3], vec![5, 5], 1001);
        chain_equals_composite(&dev, &flex, [2, 4, 3], vec![7], 301);
    }

    /// Two gradients of `block`'s flat parameter agree piece by piece (each weight, bias
    /// and the σ vector, [`BlockRealNvp::flat_pieces`]), each to 1e-4 of its own largest
    /// magnitude (at least 1): sums over every block of the batch.
    fn assert_pieces_close(block: &BlockRealNvp, a: &[f32], b: &[f32], case: &str) {
        let mut at = 0;
        for (k, n) in block.flat_pieces().unwrap().lengths.into_iter().enumerate() {
            let (a, b) = (&a[at..at + n], &b[at..at + n]);
            assert!(
                max_diff(a, b) < 1e-4 * magnitude(b),
                "{case}: piece {k}: {}",
                max_diff(a, b)
            );
            at += n;
        }
        assert_eq!(at, a.len(), "{case}: the pieces tile the parameter");
    }

    /// Fused chain on `dev` against composite couplings on `reference` (the same parameters
    /// and input, moved there) for `blocks` blocks `[channels, side, side]` with
    /// `couplings` couplings and MLP hidden widths `hidden`.
    fn chain_equals_composite(
        dev: &Device,
        reference: &Device,
        [c, side, couplings]: [usize; 3],
        hidden: Vec<usize>,
        blocks: usize,
    ) {
        // Parameters and inputs drawn on the reference device and copied to `dev`.
        reference.seed(4);
        let half = c * side * side / 2;
        let mut widths = vec![half];
        widths.extend(&hidden);
        widths.push(half);
        let params = couplings * (nrg_kernels::twin_layout(2, &widths).1 + 1);
        let block_ref = BlockRealNvpConfig::new(c, side, couplings, hidden)
            .with_zero_init(false)
            .init(reference);
        let block = block_ref.clone().fork(dev);
        let normal = Distribution::Normal(0.0, 1.0);
        let x_ref = Tensor::<4>::random([blocks, c, side, side], normal, reference).require_grad();
        let cy = Tensor::<4>::random([blocks, c, side, side], normal, reference);
        let cl = Tensor::<1>::random([blocks], normal, reference);
        let x = Tensor::<4>::from_data(x_ref.to_data(), dev).require_grad();
        for inverse in [false, true] {
            let direction = if inverse {
                Direction::Inverse
            } else {
                Direction::Forward
            };
            let fused = block.fused(x.clone(), direction);
            assert_eq!(fused.is_some(), kernels::hot_paths(dev).is_some());
            let Some((y1, l1)) = fused else {
                return;
            };
            let (y2, l2) = if inverse {
                block_ref.composite_inverse(x_ref.clone())
            } else {
                block_ref.composite_forward(x_ref.clone())
            };
            // The cotangents live on the reference device; the fused side gets copies.
            let (cy1, cl1) = (
                Tensor::<4>::from_data(cy.to_data(), dev),
                Tensor::<1>::from_data(cl.to_data(), dev),
            );

            let vals = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
            let lds = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
            assert!(
                max_diff(&vals(y1.clone()), &vals(y2.clone())) < 1e-5,
                "values"
            );
            assert!(
                max_diff(&lds(l1.clone()), &lds(l2.clone())) < 1e-5,
                "log-dets"
            );
            let g1 = ((y1 * cy1).sum() + (l1 * cl1).sum()).backward();
            let g2 = ((y2 * cy.clone()).sum() + (l2 * cl.clone()).sum()).backward();
            let gx = |x: &Tensor<4>, g: &Gradients| {
                x.grad(g).unwrap().into_data().try_to_vec::<f32>().unwrap()
            };
            assert!(
                max_diff(&gx(&x, &g1), &gx(&x_ref, &g2)) < 1e-4,
                "inverse {inverse}: dx"
            );
            let (mut p1, mut p2) = (GradsOf(&g1, vec![]), GradsOf(&g2, vec![]));
            block.visit(&mut p1);
            block_ref.visit(&mut p2);
            // One flat parameter: every weight, bias and scale of the chain, compared
            // piece by piece (each weight, bias and the σ), each to its own scale.
            assert_eq!(p1.1.len(), 1, "one parameter");
            assert_eq!(p1.1[0].len(), params, "every weight, bias and scale");
            assert_pieces_close(&block, &p1.1[0], &p2.1[0], &format!("inverse {inverse}"));
        }
    }

    /// A layer on the state equals gathering the blocks by their sites, the composite
    /// couplings and scattering back, on flex with autodiff, for every placement a flow on
    /// L = 8 uses (2×2 blocks at d = 1, 2, 4 with the disentangler's and the decimator's
    /// offsets; 4×4 blocks with two channels at d = 1, 2): values, the ln|det| column, the
    /// gradients of the state and of every parameter, both directions (values 1e-5 and
    /// gradients 1e-4 of each tensor's largest magnitude, at least 1, as in
    /// [`chain_equals_composite`]; the ln|det| column sums the blocks in another order).
    #[test]
    fn layer_on_state_equals_gathered_composite_with_gradients() {
        let _rng = crate::test_util::rng_lock();
        let flex = Device::flex().autodiff();
        for d in [1, 2, 4] {
            for offset in [0, d] {
                layer_equals_composite(&flex, &flex, [1, 2, 3], vec![5], [3, 8, d, offset]);
            }
        }
        for d in [1, 2] {
            for offset in [0, 2 * d] {
                layer_equals_composite(&flex, &flex, [2, 4, 2], vec![6], [2, 8, d, offset]);
            }
        }
    }

    /// The same for the CubeCL chain kernels (reading their blocks from the state) and the
    /// scatter on the wgpu device, against the composite on flex (see
    /// [`cube_chain_equals_composite_couplings_with_gradients`] for why flex): a
    /// disentangler and a decimator with 2×2 blocks on 5 samples of 16 × 16 (320 blocks,
    /// more than a cube's 256 threads) and a dilated 4×4 layer with two channels.
    #[cfg(feature = "wgpu")]
    #[test]
    fn cube_layer_on_state_equals_gathered_composite_with_gradients() {
        let _rng = crate::test_util::rng_lock();
        let dev = crate::test_util::wgpu_device().autodiff();
        let flex = Device::flex().autodiff();
        layer_equals_composite(&dev, &flex, [1, 2, 3], vec![5], [5, 16, 1, 1]);
        layer_equals_composite(&dev, &flex, [1, 2, 3], vec![5], [5, 16, 2, 0]);
        layer_equals_composite(&dev, &flex, [2, 4, 2], vec![6], [2, 8, 2, 4]);
    }

    /// [`BlockRealNvp::layer_on_state`] on `dev` against the reference on `reference`
    /// (the same parameters and state): the blocks gathered with a `select` of the sites
    /// `nrg_kernels::BlockGeometry::site` gives (itself checked against the definition in
    /// `nrg_kernels::blocks`' tests), [`BlockRealNvp::composite_forward`] (or inverse),
    /// and put back over the field with its block sites zeroed, the ln|det| summed per
    /// sample. Blocks `[channels, side, side]` with `couplings` couplings, hidden widths
    /// `hidden`, on `batch` samples of `L × L` at dilation `d` and offset `o`.
    fn layer_equals_composite(
        dev: &Device,
        reference: &Device,
        [c, side, couplings]: [usize; 3],
        hidden: Vec<usize>,
        [batch, l, d, o]: [usize; 4],
    ) {
        use burn::tensor::{IndexingUpdateOp, Int, TensorData};
        reference.seed(5);
        let block_ref = BlockRealNvpConfig::new(c, side, couplings, hidden)
            .with_zero_init(false)
            .init(reference);
        let block = block_ref.clone().fork(dev);
        let width = c * l * l + 1;
        let normal = Distribution::Normal(0.0, 1.0);
        let z_ref = Tensor::<2>::random([batch, width], normal, reference).require_grad();
        let cot = Tensor::<2>::random([batch, width], normal, reference);
        let z = Tensor::<2>::from_data(z_ref.to_data(), dev).require_grad();
        let g = nrg_kernels::BlockGeometry {
            batch,
            channels: c,
            size: l,
            dilation: d,
            block: side,
            offset: o,
        };
        let (h, mm) = (g.half(), g.per_side().pow(2));
        // The sites in the blocks' batch order [m², C, b, b]: entry e of a block is chain
        // row (e mod 2)·h + ⌊e/2⌋.
        let sites: Vec<i64> = (0..mm)
            .flat_map(|blk| (0..2 * h).map(move |e| g.site((e % 2) * h + e / 2, blk) as i64))
            .collect();
        let n = sites.len();
        let index = Tensor::<1, Int>::from_data(TensorData::new(sites.clone(), [n]), reference);
        let mut keep = vec![1.0f32; c * l * l];
        for &site in &sites {
            keep[site as usize] = 0.0;
        }
        let keep = Tensor::<2>::from_data(TensorData::new(keep, [1, c * l * l]), reference);
        let placement = BlockPlacement {
            size: l,
            dilation: d,
            offset: o,
        };
        for direction in [Direction::Forward, Direction::Inverse] {
            let got = block.layer_on_state(z.clone(), placement, direction);
            assert_eq!(got.is_some(), kernels::hot_paths(dev).is_some());
            let Some(got) = got else {
                return;
            };
            let field = z_ref.clone().slice_dim(1, 0..c * l * l);
            let blocks = field.clone().select(1, index.clone());
            let blocks = blocks.reshape([batch * mm, c, side, side]);
            let (y, ld) = match direction {
                Direction::Forward => block_ref.composite_forward(blocks),
                Direction::Inverse => block_ref.composite_inverse(blocks),
            };
            let field = (field * keep.clone()).select_assign(
                1,
                index.clone(),
                y.reshape([batch, n]),
                IndexingUpdateOp::Add,
            );
            let ld =
                z_ref.clone().slice_dim(1, c * l * l..width) + ld.reshape([batch, mm]).sum_dim(1);
            let want = Tensor::cat(vec![field, ld], 1);

            let vals = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
            let case = format!("{direction:?} C={c} b={side} L={l} d={d} o={o}");
            // Without autodiff (as when sampling) the layer runs the forward entry that keeps
            // nothing for a backward pass: the same arithmetic, so the same values up to the
            // shader compiler contracting another product into a fused multiply-add (1e-6).
            let plain = block
                .valid()
                .layer_on_state(z.clone().inner(), placement, direction)
                .expect("the hot path of the same device without autodiff");
            let (a, b) = (vals(plain), vals(got.clone()));
            assert!(
                max_diff(&a, &b) < 1e-6 * magnitude(&b),
                "{case}: no autodiff"
            );
            // The field to 1e-5 of its largest magnitude (at least 1), as the chain test:
            // the kernel against burn's operations. The ln|det| column on its own scale: it
            // sums a sample's blocks, in another order.
            let (a, b) = (vals(got.clone()), vals(want.clone()));
            for (part, last) in [("field", false), ("ln|det|", true)] {
                let pick = |v: &[f32]| -> Vec<f32> {
                    v.iter()
                        .enumerate()
                        .filter(|(k, _)| (k % width == width - 1) == last)
                        .map(|(_, x)| *x)
                        .collect()
                };
                let (a, b) = (pick(&a), pick(&b));
                assert!(max_diff(&a, &b) < 1e-5 * magnitude(&b), "{case}: {part}");
            }
            let cot1 = Tensor::<2>::from_data(cot.to_data(), dev);
            let g1 = (got * cot1).sum().backward();
            let g2 = (want * cot.clone()).sum().backward();
            let gz = |z: &Tensor<2>, g: &Gradients| vals(z.grad(g).unwrap());
            let (a, b) = (gz(&z, &g1), gz(&z_ref, &g2));
            assert!(max_diff(&a, &b) < 1e-4 * magnitude(&b), "{case}: d state");
            let (mut p1, mut p2) = (GradsOf(&g1, vec![]), GradsOf(&g2, vec![]));
            block.visit(&mut p1);
            block_ref.visit(&mut p2);
            assert_eq!(p1.1.len(), 1, "one parameter");
            assert_pieces_close(&block, &p1.1[0], &p2.1[0], &case);
        }
    }
}
