//! Fused layer operations: a periodic convolution and a twin dense layer, each with its
//! bias and activation, a whole twin MLP, an affine coupling's update and a chain of block
//! couplings, as single differentiable burn operations.
//!
//! ```text
//! periodic_conv2d:  [B, cin, H, W] ⊛ [cout, cin, k, k] + [cout]   → act(·)  [B, cout, H, W]
//!                   (circular padding ⌊k/2⌋, cross-correlation as burn's Conv2d)
//! twin_dense:       [T, in, out]ᵀ · [G, in, N] + [T, 1, out]ᵀ      → act(·)  [T, out, N]
//!                   (feature-major, the batch N last; G = 1: one input shared by the T twins)
//! twin_mlp:         [G, w₀, N], flat [W₀, b₀, …, W_{L−1}, b_{L−1}]  → [T, w_L, N]
//!                   (twin_dense layers, hidden activation between them, the last linear)
//! conditioning_conv2d: state [B, C·H·W + 1], mask [1, C, H, W], weight, bias
//!                   → act(·) [B, cout, H, W]   (periodic_conv2d of m ⊙ field: a coupling
//!                   subnet's first layer, read from the state)
//! affine_update:    state [B, C·H·W + 1], net output [B, 2C, H, W], mask, σ → state
//!                   (a lattice coupling's x·eˢ + t; its ln|det| added to the last column)
//! coupling_chain:   [2, h, N], flat [net₀ … net_{K−1}, σ₀ … σ_{K−1}] → [2h + 1, N]
//!                   (K affine couplings of a block's halves, ln|det| as the last row)
//! block_layer:      state [B, C·L² + 1], flat chain parameters → state
//!                   (a hierarchical layer: every block through coupling_chain, gathered
//!                   from the state and scattered back, its ln|det| added to the last column)
//! circulant:        [B, C, R, W] ⊛ [C, R·W] (or its inverse)            → [B, C, R, W]
//!                   (a periodic convolution per channel by FFT, O(V log V))
//! ```
//!
//! `act` is the identity, LeakyReLU or ELU. The arithmetic, forward and backward, is the
//! burn-free crate `nrg-kernels`; this module makes each kernel one burn operation with a
//! hand-written backward step on the flex backend (cargo feature `flex` of this crate, in
//! `ext`, and for the hot paths in `hot`, where the `wgpu` feature adds their CubeCL kernels
//! in `cube`). Built from burn's primitives the same layer is a dozen operations (pad by
//! concatenation, convolution, bias, activation, and their adjoints), each paying for its
//! own allocation and strided copies, which dominate at lattice sizes of 8–32.
//!
//! Two dispatches: [`fused`] says whether the fused operations exist for a device (flex, with
//! the feature); [`hot_paths`] says the same for the hot paths — the convolution (also as a
//! coupling's first layer on a state), the affine update and the coupling chain — which also
//! exist as CubeCL kernels on the cubecl backend
//! (wgpu, with the `wgpu` feature: `hot` and `cube`, decisions 66, 68 and 71). A layer asks
//! once and otherwise runs its composite form; for the convolution and the dense layer the composite references are here
//! ([`periodic_conv2d_reference`], [`twin_dense_reference`]), so results never depend on
//! which path ran beyond f32 rounding.

#[cfg(feature = "wgpu")]
mod cube;
#[cfg(feature = "flex")]
mod ext;
#[cfg(any(feature = "flex", feature = "wgpu"))]
mod hot;

use burn::tensor::activation::{elu, leaky_relu};
use burn::tensor::{Device, Tensor};
pub use nrg_kernels::{Activation, Direction};

/// `act(x)` from burn's primitives.
fn activate<const D: usize>(act: Activation, x: Tensor<D>) -> Tensor<D> {
    match act {
        Activation::Identity => x,
        Activation::LeakyRelu(slope) => leaky_relu(x, slope as f64),
        Activation::Elu => elu(x, 1.0),
    }
}

/// The fused operations, for tensors on a device where they exist (see [`fused`]). A
/// token is only for tensors on the device it was obtained for: its methods run the flex
/// kernels on the tensors' primitives, so a token from a flex device must not be used
/// with tensors on another backend.
#[derive(Clone, Copy, Debug)]
pub struct Fused(Available);

/// The proof that the fused operations were compiled in (none without the `flex` feature:
/// then no [`Fused`] can exist and its methods are unreachable by construction).
#[cfg(feature = "flex")]
#[derive(Clone, Copy, Debug)]
struct Available;
#[cfg(not(feature = "flex"))]
#[derive(Clone, Copy, Debug)]
enum Available {}

/// The fused operations for tensors on `device`: `Some` on flex (with or without autodiff)
/// when this crate's `flex` feature is on, `None` elsewhere. The one place that decides
/// between the fused and the composite path.
pub fn fused(device: &Device) -> Option<Fused> {
    #[cfg(feature = "flex")]
    if ext::is_flex(device) {
        return Some(Fused(Available));
    }
    let _ = device;
    None
}

/// The body of a [`Fused`] method: the flex operation, or (without the feature, where no
/// `Fused` exists) the empty match on the uninhabited proof.
macro_rules! on_flex {
    ($this:ident, ($($arg:ident),*), $call:expr) => {{
        #[cfg(feature = "flex")]
        {
            let _ = $this;
            $call
        }
        #[cfg(not(feature = "flex"))]
        {
            let _ = ($($arg),*);
            match $this.0 {}
        }
    }};
}

impl Fused {
    /// Twin dense layer with bias and activation (see the module docs for shapes).
    pub fn twin_dense(
        self,
        input: Tensor<3>,
        weight: Tensor<3>,
        bias: Tensor<3>,
        act: Activation,
    ) -> Tensor<3> {
        on_flex!(
            self,
            (input, weight, bias, act),
            ext::twin_dense(input, weight, bias, act)
        )
    }

    /// The circulant convolution of every channel with its periodic kernel (or, with
    /// `shape.inverse`, the kernel's inverse) by FFT, `O(V log V)` per field: field
    /// `[B, C, R, W]`, kernel `[C, R·W]` → `[B, C, R, W]` (`nrg_kernels::circulant`).
    pub fn circulant(
        self,
        field: Tensor<4>,
        kernel: Tensor<2>,
        shape: CirculantShape,
    ) -> Tensor<4> {
        on_flex!(
            self,
            (field, kernel, shape),
            ext::circulant(field, kernel, shape)
        )
    }

    /// A whole twin MLP as one operation: input `[G, w₀, N]` (feature-major), parameters
    /// flat as `[W₀ [T, w₀, w₁], b₀ [T, w₁], W₁, b₁, …]` → `[T, w_L, N]`. Equal to the chain
    /// of [`twin_dense`] layers; every layer of a column tile is evaluated in cache and the
    /// backward pass recomputes the hidden activations instead of storing them.
    pub fn twin_mlp(self, input: Tensor<3>, params: Tensor<1>, shape: MlpShape) -> Tensor<3> {
        on_flex!(
            self,
            (input, params, shape),
            ext::twin_mlp(input, params, shape)
        )
    }
}

/// The hot paths — the periodic convolution (also as a coupling's first layer, on a
/// state), the affine update of a lattice coupling and the chain of block couplings — as one
/// operation each, for tensors on a device where they
/// exist (see [`hot_paths`]): flex, and
/// with the `wgpu` feature the cubecl backend (CubeCL kernels, `cube.rs`). Unlike
/// [`Fused`], whose operations are flex-only, a token routes by the tensors' backend, so it
/// is only for tensors on a device [`hot_paths`] accepted.
#[derive(Clone, Copy, Debug)]
pub struct HotPaths(HotAvailable);

/// The proof that some backend with the hot paths was compiled in.
#[cfg(any(feature = "flex", feature = "wgpu"))]
#[derive(Clone, Copy, Debug)]
struct HotAvailable;
#[cfg(not(any(feature = "flex", feature = "wgpu")))]
#[derive(Clone, Copy, Debug)]
enum HotAvailable {}

/// The hot paths for tensors on `device`: `Some` on flex with the `flex` feature and on the
/// cubecl backend (wgpu, …) with the `wgpu` feature, with or without autodiff; `None`
/// elsewhere, where the layers run their composite forms.
pub fn hot_paths(device: &Device) -> Option<HotPaths> {
    #[cfg(feature = "flex")]
    if fused(device).is_some() {
        return Some(HotPaths(HotAvailable));
    }
    #[cfg(feature = "wgpu")]
    if hot::is_cube(device) {
        return Some(HotPaths(HotAvailable));
    }
    let _ = device;
    None
}

/// The body of a [`HotPaths`] method (see [`on_flex`]).
macro_rules! on_hot {
    ($this:ident, ($($arg:ident),*), $call:expr) => {{
        #[cfg(any(feature = "flex", feature = "wgpu"))]
        {
            let _ = $this;
            $call
        }
        #[cfg(not(any(feature = "flex", feature = "wgpu")))]
        {
            let _ = ($($arg),*);
            match $this.0 {}
        }
    }};
}

impl HotPaths {
    /// Periodic convolution with bias and activation (see the module docs for shapes).
    pub fn periodic_conv2d(
        self,
        input: Tensor<4>,
        weight: Tensor<4>,
        bias: Tensor<1>,
        act: Activation,
    ) -> Tensor<4> {
        on_hot!(
            self,
            (input, weight, bias, act),
            hot::periodic_conv2d(input, weight, bias, act)
        )
    }

    /// A chain of affine couplings on the two halves of a block as one operation: input
    /// `[2, h, N]` (the halves, feature-major), parameters flat as
    /// `[net₀, …, net_{K−1}, σ₀, …, σ_{K−1}]` (each net a twin MLP in [`Fused::twin_mlp`]'s
    /// layout, twin 0 giving `ŝ`, twin 1 `t`) → `[2h + 1, N]`: the two updated halves and
    /// `ln|det|` as the last row. Coupling `k` updates `v` from `u` (`k` even) or `u` from
    /// `v` (odd) by `upd·eˢ + t` (inverse: `(upd − t)·e^{−s}`), with `s = σ_k tanh ŝ`
    /// (`nrg_kernels::chain`).
    ///
    /// # Panics
    /// With no coupling (`K = 0`: the identity, which needs no kernel), or where the shapes
    /// disagree.
    pub fn coupling_chain(
        self,
        input: Tensor<3>,
        params: Tensor<1>,
        shape: ChainShape,
    ) -> Tensor<2> {
        assert!(shape.couplings >= 1, "coupling_chain: no coupling");
        on_hot!(
            self,
            (input, params, shape),
            hot::coupling_chain(input, params, shape)
        )
    }

    /// The first layer of a coupling's subnet read from a coupling stack's state: the state
    /// `[B, C·H·W + 1]` (each sample's field flattened, then its ln|det| so far), the 0/1
    /// mask `[1, C, H, W]` (1 = conditioning), weight `[cout, C, k, k]` and bias `[cout]` →
    /// `[B, cout, H, W]`, the [`HotPaths::periodic_conv2d`] of `m ⊙ field`. The masked field
    /// is never materialised on the GPU (the kernels read the state through strides and
    /// multiply by the mask), and the state's cotangent comes back as one tensor, so a
    /// coupling stack needs no slicing between its couplings.
    pub fn conditioning_conv2d(
        self,
        state: Tensor<2>,
        mask: Tensor<4>,
        weight: Tensor<4>,
        bias: Tensor<1>,
        act: Activation,
    ) -> Tensor<4> {
        on_hot!(
            self,
            (state, mask, weight, bias, act),
            hot::conditioning_conv2d(state, mask, weight, bias, act)
        )
    }

    /// The elementwise part of an affine lattice coupling as one operation on a coupling
    /// stack's state: the state `[B, C·H·W + 1]` (each sample's field `z` flattened, then
    /// `ℓ`, its ln|det| so far), the subnet's output `[B, 2C, H, W]` (`ŝ`, then `t`), the 0/1
    /// mask `[1, C, H, W]` (1 = conditioning) and the scales `[1, C, 1, 1]` → the updated
    /// state `[B, C·H·W + 1]`. With `f = 1 − m`, `s = σ f tanh ŝ`: `z eˢ + f t` and
    /// `ℓ + Σ s` (inverse: `(z − f t) e^{−s}` and `ℓ − Σ s`) (`nrg_kernels::affine`). A
    /// field's first state has `ℓ = 0` ([`crate::pack_state`]; [`crate::unpack_state`]
    /// splits a state into the field and `ℓ`).
    pub fn affine_update(
        self,
        state: Tensor<2>,
        subnet: Tensor<4>,
        mask: Tensor<4>,
        scale: Tensor<4>,
        direction: Direction,
    ) -> Tensor<2> {
        on_hot!(
            self,
            (state, subnet, mask, scale, direction),
            hot::affine_update(state, subnet, mask, scale, direction)
        )
    }

    /// A whole flat coupling stack as one operation on its state (decision 75): the state
    /// `[B, C·H·W + 1]` (each sample's field flattened, then its ln|det| so far), the
    /// stack's flat parameters `[P]` ([`StackShape`]'s layout) and its masks `[M, C, H, W]`
    /// (constant) → the state after every coupling (forward: coupling 0 first; inverse: the
    /// last first), their ln|det| added to the last column. Each coupling is the subnet on
    /// `m ⊙ z` and the affine update, as [`HotPaths::conditioning_conv2d`],
    /// [`HotPaths::periodic_conv2d`] and [`HotPaths::affine_update`] with the weights read
    /// from the flat vector. Its gradient with respect to the parameters is one flat tensor,
    /// each kernel writing its part of it in place, and the state's two cotangents (through
    /// the update and through the subnet) are summed inside the first layer's backward
    /// kernel: on a GPU, with `L` convolutions per subnet, `L + 1` launches per coupling
    /// forward and `L + 1` backward, and the optimiser updates one tensor instead of
    /// `2L + 1` per coupling (the φ⁴ tutorial's 1 → 8 → 8 → 2 CNN: 4, 4 and 7).
    ///
    /// # Panics
    /// Where the shapes disagree with `shape` ([`StackShape`]), or the batch is empty
    /// ([`crate::CouplingStack`] sends an empty batch to its composite path).
    pub fn coupling_stack(
        self,
        state: Tensor<2>,
        params: Tensor<1>,
        masks: Tensor<4>,
        shape: StackShape,
        direction: Direction,
    ) -> Tensor<2> {
        shape.check(&state.dims(), &params.dims(), &masks.dims());
        on_hot!(
            self,
            (state, params, masks, shape, direction),
            hot::coupling_stack(state, params, masks, shape, direction)
        )
    }

    /// One layer of the hierarchical flow as one operation on the flow's state: the state
    /// `[B, C·L² + 1]` (each sample's field flattened as `(channel, row, col)`, then its
    /// ln|det| so far) and a [`crate::BlockRealNvp`]'s flat parameters → the state with
    /// every block of the layer replaced by the [`HotPaths::coupling_chain`] of its halves
    /// and the blocks' ln|det| added to the sample's (`nrg_kernels::blocks`). On a GPU the
    /// gather, the chain and the scatter are three launches forward and four backward,
    /// where the same layer from burn's operations (a `select`, the halves' transposes,
    /// slices of the chain's output, a scatter, the log-det's sum, and their adjoints) took
    /// twenty (decision 74).
    ///
    /// # Panics
    /// Where the shapes disagree ([`BlockLayerShape`]), or with no coupling.
    pub fn block_layer(
        self,
        state: Tensor<2>,
        params: Tensor<1>,
        shape: BlockLayerShape,
    ) -> Tensor<2> {
        shape.check(&state.dims());
        on_hot!(
            self,
            (state, params, shape),
            hot::block_layer(state, params, shape)
        )
    }
}

/// Where a hierarchical layer's blocks sit and the chain applied to each
/// ([`HotPaths::block_layer`]; `nrg_kernels::blocks` for the layout).
#[derive(Clone, Debug, PartialEq)]
pub struct BlockLayerShape {
    /// Field channels `C`.
    pub channels: usize,
    /// Lattice side `L`.
    pub size: usize,
    /// Dilation `d`.
    pub dilation: usize,
    /// Block side `b`.
    pub block: usize,
    /// Offset `o` in lattice units.
    pub offset: usize,
    /// The chain on every block's halves (`widths[0] = C·b²/2`).
    pub chain: ChainShape,
}

impl BlockLayerShape {
    /// The geometry for `batch` samples.
    pub fn geometry(&self, batch: usize) -> nrg_kernels::BlockGeometry {
        nrg_kernels::BlockGeometry {
            batch,
            channels: self.channels,
            size: self.size,
            dilation: self.dilation,
            block: self.block,
            offset: self.offset,
        }
    }

    /// # Panics
    /// Where the state is not `[B, C·L² + 1]`, the blocks do not tile the sublattice, the
    /// chain's half width is not `C·b²/2`, or the chain has no coupling.
    fn check(&self, state: &[usize; 2]) {
        let g = self.geometry(state[0]);
        assert_eq!(
            state[1],
            g.width(),
            "block_layer: state must be [B, C·L² + 1]"
        );
        assert!(
            g.block >= 1 && g.dilation >= 1 && g.size.is_multiple_of(g.dilation * g.block),
            "block_layer: L must be a multiple of d·b"
        );
        assert!(
            (g.channels * g.block * g.block).is_multiple_of(2),
            "block_layer: a block's entries must split in halves"
        );
        assert_eq!(
            self.chain.widths.first(),
            Some(&g.half()),
            "block_layer: the chain's half width must be C·b²/2"
        );
        assert!(self.chain.couplings >= 1, "block_layer: no coupling");
    }
}

/// Periodic convolution with bias and activation (see the module docs for shapes): one
/// operation where [`hot_paths`] says so, else [`periodic_conv2d_reference`].
pub fn periodic_conv2d(
    input: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    act: Activation,
) -> Tensor<4> {
    match hot_paths(&input.device()) {
        Some(f) => f.periodic_conv2d(input, weight, bias, act),
        None => periodic_conv2d_reference(input, weight, bias, act),
    }
}

/// [`periodic_conv2d`] from burn's primitives: circular padding by concatenation, a valid
/// `conv2d`, the bias and the activation.
pub fn periodic_conv2d_reference(
    input: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    act: Activation,
) -> Tensor<4> {
    let k = weight.dims()[2];
    let padded = crate::subnet::periodic_pad(input, k / 2);
    let options = burn::tensor::ops::ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    let y = burn::tensor::module::conv2d(padded, weight, Some(bias), options);
    activate(act, y)
}

/// Twin dense layer with bias and activation (see the module docs for shapes): fused where
/// [`fused`] says so, else [`twin_dense_reference`].
pub fn twin_dense(
    input: Tensor<3>,
    weight: Tensor<3>,
    bias: Tensor<3>,
    act: Activation,
) -> Tensor<3> {
    match fused(&input.device()) {
        Some(f) => f.twin_dense(input, weight, bias, act),
        None => twin_dense_reference(input, weight, bias, act),
    }
}

/// [`twin_dense`] from burn's primitives: a broadcast batched matmul `Wᵀ·x`, the bias, the
/// activation.
pub fn twin_dense_reference(
    input: Tensor<3>,
    weight: Tensor<3>,
    bias: Tensor<3>,
    act: Activation,
) -> Tensor<3> {
    activate(
        act,
        weight.swap_dims(1, 2).matmul(input) + bias.swap_dims(1, 2),
    )
}

/// The direction of a fused circulant convolution ([`Fused::circulant`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CirculantShape {
    /// Convolve with the kernel's inverse (`x̂ / K̂`) instead of the kernel (`K̂ x̂`).
    pub inverse: bool,
}

/// The shape of a fused twin MLP: `twins` networks of widths `widths[0] → … → widths[L]`,
/// `hidden` after every layer but the last.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpShape {
    /// Twins `T`.
    pub twins: usize,
    /// Layer widths, input first.
    pub widths: Vec<usize>,
    /// Activation of the hidden layers.
    pub hidden: Activation,
}

/// The shape of a fused coupling chain (a [`crate::BlockRealNvp`] on `[2, h, N]`):
/// `couplings` affine couplings, each with a twin MLP of widths `h → … → h`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainShape {
    /// Couplings `K`.
    pub couplings: usize,
    /// Widths of every coupling's MLP, `h` first and last.
    pub widths: Vec<usize>,
    /// Activation of the hidden layers.
    pub hidden: Activation,
    /// Forward (generative) or inverse (`x → z`, couplings undone from the last).
    pub direction: Direction,
}

/// The shape of a flat coupling stack whose parameters are one flat vector
/// ([`HotPaths::coupling_stack`], [`crate::CouplingStack`]): `couplings` affine couplings
/// on fields `[B, C, rows, cols]`, each with a periodic CNN of widths `C → h₁ → … → 2C`
/// (`k × k` kernels, `hidden` between layers, none after the last), coupling `k` under
/// mask plane `k mod masks`. The flat layout, coupling by coupling:
///
/// ```text
/// [W₀ [h₁, C, k, k], b₀ [h₁], W₁, b₁, …, W_{L−1} [2C, h_{L−1}, k, k], b_{L−1} [2C], σ [C]]
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct StackShape {
    /// Field channels `C`.
    pub channels: usize,
    /// Lattice rows.
    pub rows: usize,
    /// Lattice columns.
    pub cols: usize,
    /// Odd kernel side `k`.
    pub kernel: usize,
    /// Channel widths of every coupling's CNN, `C` first, `2C` last.
    pub widths: Vec<usize>,
    /// Activation of the hidden layers.
    pub hidden: Activation,
    /// Couplings `K`.
    pub couplings: usize,
    /// Mask planes `M` (`[M, C, rows, cols]`; coupling `k` uses plane `k mod M`).
    pub masks: usize,
}

/// One convolution of a [`StackShape`]: where its weight `[cout, cin, k, k]` and bias
/// `[cout]` sit in the stack's flat parameters, its activation, and (for a coupling's first
/// layer, which reads `m ⊙ z` from the state) its mask plane.
#[derive(Clone, Debug, PartialEq)]
pub struct StackConv {
    /// Offset of the weight.
    pub weight: usize,
    /// Offset of the bias.
    pub bias: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Odd kernel side `k`.
    pub kernel: usize,
    /// Activation after the convolution.
    pub act: Activation,
    /// Mask plane (read only by a coupling's first layer).
    pub mask: usize,
}

/// The affine update of a [`StackShape`]'s coupling: where its scales `σ` `[C]` sit in the
/// flat parameters, its mask plane and the direction.
#[derive(Clone, Debug, PartialEq)]
pub struct StackAffine {
    /// Offset of `σ`.
    pub sigma: usize,
    /// Mask plane.
    pub mask: usize,
    /// Forward or inverse update.
    pub direction: Direction,
}

impl StackShape {
    /// The parameters of one coupling (its convolutions' weights and biases, then `σ`).
    pub fn coupling_len(&self) -> usize {
        let k2 = self.kernel * self.kernel;
        let nets: usize = self.widths.windows(2).map(|w| w[1] * (w[0] * k2 + 1)).sum();
        nets + self.channels
    }

    /// The flat parameters' length.
    pub fn len(&self) -> usize {
        self.couplings * self.coupling_len()
    }

    /// Whether the stack has no parameter (no coupling).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lengths of the tensors the flat vector concatenates, in order: per coupling every
    /// layer's weight and bias, then `σ` (the units of gradient clipping).
    pub fn pieces(&self) -> Vec<usize> {
        let k2 = self.kernel * self.kernel;
        let mut lengths = Vec::new();
        for _ in 0..self.couplings {
            for w in self.widths.windows(2) {
                lengths.extend([w[1] * w[0] * k2, w[1]]);
            }
            lengths.push(self.channels);
        }
        lengths
    }

    /// The convolutions of coupling `k`, first to last.
    pub fn convs(&self, k: usize) -> Vec<StackConv> {
        let k2 = self.kernel * self.kernel;
        let layers = self.widths.len() - 1;
        let mut at = k * self.coupling_len();
        let mut convs = Vec::with_capacity(layers);
        for (l, w) in self.widths.windows(2).enumerate() {
            let weight = at;
            at += w[1] * w[0] * k2;
            convs.push(StackConv {
                weight,
                bias: at,
                cin: w[0],
                cout: w[1],
                kernel: self.kernel,
                act: if l + 1 == layers {
                    Activation::Identity
                } else {
                    self.hidden
                },
                mask: k % self.masks,
            });
            at += w[1];
        }
        convs
    }

    /// The affine update of coupling `k`.
    pub fn affine(&self, k: usize, direction: Direction) -> StackAffine {
        StackAffine {
            sigma: (k + 1) * self.coupling_len() - self.channels,
            mask: k % self.masks,
            direction,
        }
    }

    /// # Panics
    /// Where the widths do not run `C → … → 2C`, the kernel is even, there is no mask
    /// plane, the batch is empty, or the state, parameters or masks do not have this
    /// shape's sizes.
    fn check(&self, state: &[usize], params: &[usize], masks: &[usize]) {
        assert!(
            self.widths.len() >= 2
                && self.widths[0] == self.channels
                && self.widths.last() == Some(&(2 * self.channels)),
            "coupling_stack: widths must run C → … → 2C"
        );
        assert!(self.kernel % 2 == 1, "coupling_stack: kernel must be odd");
        assert!(self.masks >= 1, "coupling_stack: no mask plane");
        let v = self.channels * self.rows * self.cols;
        assert!(
            state.len() == 2 && state[1] == v + 1,
            "coupling_stack: state must be [B, C·H·W + 1]"
        );
        assert!(state[0] > 0, "coupling_stack: empty batch");
        assert_eq!(params, [self.len()], "coupling_stack: parameter length");
        assert_eq!(
            masks,
            [self.masks, self.channels, self.rows, self.cols],
            "coupling_stack: masks must be [M, C, H, W]"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Gradients};

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// `max |∂₁t − ∂₂t|` between the gradients of `t` in two backward passes.
    fn grad_diff<const D: usize>(t: &Tensor<D>, g1: &Gradients, g2: &Gradients) -> f32 {
        max_diff(t.grad(g1).unwrap(), t.grad(g2).unwrap())
    }

    /// The fused path equals the composite path, values and every gradient, on the flex
    /// autodiff device (1e-5 on values of size ~1; 1e-4 on gradients summed over the batch).
    #[test]
    fn fused_equals_reference_with_gradients() {
        let _rng = crate::test_util::rng_lock();
        let dev = Device::flex().autodiff();
        dev.seed(11);
        // The tests build with the flex feature (dev-dependencies).
        assert!(
            fused(&dev).is_some(),
            "the flex device has the fused kernels"
        );
        let n = Distribution::Normal(0.0, 1.0);
        for act in [
            Activation::LeakyRelu(0.01),
            Activation::Elu,
            Activation::Identity,
        ] {
            // Rows of 4 and 8: which takes the direct and which the unfolding kernel
            // depends on the host's SIMD width (nrg-kernels' tests force both on every
            // width); here the fused op as a whole is compared with burn's.
            for [h, w_] in [[6, 4], [3, 8]] {
                let x = Tensor::<4>::random([5, 2, h, w_], n, &dev).require_grad();
                let w = Tensor::<4>::random([3, 2, 3, 3], n, &dev).require_grad();
                let b = Tensor::<1>::random([3], n, &dev).require_grad();
                let c = Tensor::<4>::random([5, 3, h, w_], n, &dev);
                let fused = periodic_conv2d(x.clone(), w.clone(), b.clone(), act);
                let reference = periodic_conv2d_reference(x.clone(), w.clone(), b.clone(), act);
                assert!(
                    max_diff(fused.clone(), reference.clone()) < 1e-5,
                    "{act:?} values"
                );
                let g1 = (fused * c.clone()).sum().backward();
                let g2 = (reference * c).sum().backward();
                assert!(grad_diff(&x, &g1, &g2) < 1e-4, "{act:?} dx");
                assert!(grad_diff(&w, &g1, &g2) < 1e-4, "{act:?} dw");
                assert!(grad_diff(&b, &g1, &g2) < 1e-4, "{act:?} db");
            }

            for groups in [1, 2] {
                let x = Tensor::<3>::random([groups, 3, 33], n, &dev).require_grad();
                let w = Tensor::<3>::random([2, 3, 4], n, &dev).require_grad();
                let b = Tensor::<3>::random([2, 1, 4], n, &dev).require_grad();
                let c = Tensor::<3>::random([2, 4, 33], n, &dev);
                let fused = twin_dense(x.clone(), w.clone(), b.clone(), act);
                let reference = twin_dense_reference(x.clone(), w.clone(), b.clone(), act);
                assert!(
                    max_diff(fused.clone(), reference.clone()) < 1e-5,
                    "dense values"
                );
                let g1 = (fused * c.clone()).sum().backward();
                let g2 = (reference * c).sum().backward();
                assert!(grad_diff(&x, &g1, &g2) < 1e-4, "dense dx");
                assert!(grad_diff(&w, &g1, &g2) < 1e-4, "dense dw");
                assert!(grad_diff(&b, &g1, &g2) < 1e-4, "dense db");
            }
        }
    }

    /// The fused MLP equals the chain of composite dense layers, values and the gradients
    /// of the input and every parameter, through autodiff (1e-5 on values, 1e-4 on
    /// gradients, as above).
    #[test]
    fn fused_mlp_equals_reference_chain_with_gradients() {
        let _rng = crate::test_util::rng_lock();
        let dev = Device::flex().autodiff();
        dev.seed(12);
        let n = Distribution::Normal(0.0, 1.0);
        let widths = [3usize, 6, 5, 2];
        for groups in [1, 2] {
            let x = Tensor::<3>::random([groups, 3, 300], n, &dev).require_grad();
            let ws: Vec<Tensor<3>> = widths
                .windows(2)
                .map(|w| Tensor::random([2, w[0], w[1]], n, &dev).require_grad())
                .collect();
            let bs: Vec<Tensor<3>> = widths
                .windows(2)
                .map(|w| Tensor::random([2, 1, w[1]], n, &dev).require_grad())
                .collect();
            let c = Tensor::<3>::random([2, 2, 300], n, &dev);
            let flat: Vec<Tensor<1>> = ws
                .iter()
                .zip(&bs)
                .flat_map(|(w, b)| [w.clone().reshape([-1]), b.clone().reshape([-1])])
                .collect();
            let shape = MlpShape {
                twins: 2,
                widths: widths.to_vec(),
                hidden: Activation::Elu,
            };
            let f = fused(&dev).expect("the flex device has the fused kernels");
            let fused = f.twin_mlp(x.clone(), Tensor::cat(flat, 0), shape);
            let mut h = x.clone();
            for (l, (w, b)) in ws.iter().zip(&bs).enumerate() {
                let act = if l == 2 {
                    Activation::Identity
                } else {
                    Activation::Elu
                };
                h = twin_dense_reference(h, w.clone(), b.clone(), act);
            }
            assert!(max_diff(fused.clone(), h.clone()) < 1e-5, "mlp values");
            let g1 = (fused * c.clone()).sum().backward();
            let g2 = (h * c).sum().backward();
            assert!(grad_diff(&x, &g1, &g2) < 1e-4, "mlp dx");
            for (w, b) in ws.iter().zip(&bs) {
                assert!(grad_diff(w, &g1, &g2) < 1e-4, "mlp dw");
                assert!(grad_diff(b, &g1, &g2) < 1e-4, "mlp db");
            }
        }
    }

    /// `max |a − b| / max(1, max |b|)`: the error relative to the reference's size, computed
    /// on the reference's device (`a` is copied there).
    #[cfg(feature = "wgpu")]
    fn rel_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let a = Tensor::<D>::from_data(a.into_data(), &b.device());
        let scale: f32 = b.clone().abs().max().into_scalar();
        max_diff(a, b) / scale.max(1.0)
    }

    /// The CubeCL convolution on the wgpu device (Mesa's software Vulkan without a GPU)
    /// equals burn's composite one on flex with the same inputs: values, and the gradients
    /// of input, weight and bias, for kernels of 3 and 5, batches of 1–5 and every
    /// activation; also on the plain (non-autodiff) device. 1e-5 relative on values (sums
    /// of ≤ 75 products), 1e-4 relative on gradients (sums over the batch and the
    /// lattice). The reference runs on flex: the composite path on wgpu compiles dozens of
    /// fused shaders (minutes on software Vulkan) and checks nothing of ours. Then the
    /// conditioning convolution on a strided state ([`conditioning_equals_reference`]).
    #[cfg(feature = "wgpu")]
    #[test]
    fn cube_conv_equals_reference_with_gradients() {
        let _rng = crate::test_util::rng_lock();
        let plain = crate::test_util::wgpu_device();
        let dev = plain.clone().autodiff();
        let flex = Device::flex().autodiff();
        assert!(hot_paths(&dev).is_some() && hot_paths(&plain).is_some());
        assert!(
            fused(&dev).is_none(),
            "the other fused operations are flex-only"
        );
        flex.seed(13);
        let n = Distribution::Normal(0.0, 1.0);
        let on = |t: &Tensor<4>, device: &Device| Tensor::<4>::from_data(t.to_data(), device);
        for act in [
            Activation::LeakyRelu(0.01),
            Activation::Elu,
            Activation::Identity,
        ] {
            for (xs, ws) in [
                ([5, 2, 6, 4], [3, 2, 3, 3]),
                ([1, 1, 4, 4], [2, 1, 5, 5]),
                ([2, 3, 8, 8], [4, 3, 3, 3]),
                // more inputs and more (sample, site) positions than a cube has threads
                ([9, 2, 8, 6], [3, 2, 3, 3]),
            ] {
                // Inputs drawn on flex (the reference), copied to wgpu.
                let x = Tensor::<4>::random(xs, n, &flex).require_grad();
                let w = Tensor::<4>::random(ws, n, &flex).require_grad();
                let b = Tensor::<1>::random([ws[0]], n, &flex).require_grad();
                let c = Tensor::<4>::random([xs[0], ws[0], xs[2], xs[3]], n, &flex);
                let (xc, wc, cc) = (
                    on(&x, &dev).require_grad(),
                    on(&w, &dev).require_grad(),
                    on(&c, &dev),
                );
                let bc = Tensor::<1>::from_data(b.to_data(), &dev).require_grad();
                let cube = periodic_conv2d(xc.clone(), wc.clone(), bc.clone(), act);
                let reference = periodic_conv2d_reference(x.clone(), w.clone(), b.clone(), act);
                let d = rel_diff(cube.clone(), reference.clone());
                assert!(d < 1e-5, "{act:?} {xs:?} values: {d}");
                let g1 = (cube * cc).sum().backward();
                let g2 = (reference.clone() * c).sum().backward();
                for (name, t1, t2) in [("dx", &xc, &x), ("dw", &wc, &w)] {
                    let d = rel_diff(t1.grad(&g1).unwrap(), t2.grad(&g2).unwrap());
                    assert!(d < 1e-4, "{act:?} {xs:?} {name}: {d}");
                }
                let d = rel_diff(bc.grad(&g1).unwrap(), b.grad(&g2).unwrap());
                assert!(d < 1e-4, "{act:?} {xs:?} db: {d}");
                let (xp, wp, bp) = (
                    on(&x, &plain),
                    on(&w, &plain),
                    Tensor::<1>::from_data(b.to_data(), &plain),
                );
                let d = rel_diff(periodic_conv2d(xp, wp, bp, act), reference);
                assert!(d < 1e-5, "{act:?} {xs:?} plain device: {d}");
            }
        }
        conditioning_equals_reference(&dev, &flex);
    }

    /// The conditioning convolution on `dev` equals the composite convolution of `m ⊙ z` on
    /// `reference` (flex): values (1e-5 relative) and the gradients of the state, weight and
    /// bias (1e-4 relative, sums over the batch), for two channels under a random 0/1 mask
    /// and a state that is a transposed, strided view (`[V + 1, B]` swapped), so that the
    /// field is read through general strides; a batch of 0 gives an empty output.
    fn conditioning_equals_reference(dev: &Device, reference: &Device) {
        let hot = hot_paths(dev).expect("the device has the hot paths");
        reference.seed(17);
        let n = Distribution::Normal(0.0, 1.0);
        let (b, c, h, w) = (3, 2, 4, 6);
        let v = c * h * w;
        let on = |t: &Tensor<2>| Tensor::<2>::from_data(t.to_data(), dev);
        let st = Tensor::<2>::random([v + 1, b], n, reference).require_grad();
        let mask = Tensor::<4>::random([1, c, h, w], Distribution::Bernoulli(0.5), reference);
        let wt = Tensor::<4>::random([3, c, 3, 3], n, reference).require_grad();
        let bias = Tensor::<1>::random([3], n, reference).require_grad();
        let cot = Tensor::<4>::random([b, 3, h, w], n, reference);
        let act = Activation::LeakyRelu(0.01);
        let field = st
            .clone()
            .swap_dims(0, 1)
            .slice_dim(1, 0..v)
            .reshape([b, c, h, w]);
        let want = periodic_conv2d_reference(field * mask.clone(), wt.clone(), bias.clone(), act);
        let st1 = on(&st).require_grad();
        let (wt1, bias1) = (
            Tensor::<4>::from_data(wt.to_data(), dev).require_grad(),
            Tensor::<1>::from_data(bias.to_data(), dev).require_grad(),
        );
        let (mask1, cot1) = (
            Tensor::<4>::from_data(mask.to_data(), dev),
            Tensor::<4>::from_data(cot.to_data(), dev),
        );
        let got = hot.conditioning_conv2d(
            st1.clone().swap_dims(0, 1),
            mask1.clone(),
            wt1.clone(),
            bias1.clone(),
            act,
        );
        let rel = |a: Vec<f32>, b: Vec<f32>| {
            crate::test_util::max_diff(&a, &b) / crate::test_util::magnitude(&b)
        };
        let v4 = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
        assert!(rel(v4(got.clone()), v4(want.clone())) < 1e-5, "values");
        let g1 = (got * cot1).sum().backward();
        let g2 = (want * cot).sum().backward();
        let v2 = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
        let (gs1, gs2) = (v2(st1.grad(&g1).unwrap()), v2(st.grad(&g2).unwrap()));
        assert!(rel(gs1.clone(), gs2) < 1e-4, "d state");
        for k in 0..b {
            assert_eq!(gs1[v * b + k], 0.0, "no gradient to ln|det|");
        }
        let dw = rel(v4(wt1.grad(&g1).unwrap()), v4(wt.grad(&g2).unwrap()));
        assert!(dw < 1e-4, "dw {dw}");
        let v1 = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
        let db = rel(v1(bias1.grad(&g1).unwrap()), v1(bias.grad(&g2).unwrap()));
        assert!(db < 1e-4, "db {db}");
        let empty = hot.conditioning_conv2d(Tensor::zeros([0, v + 1], dev), mask1, wt1, bias1, act);
        assert_eq!(empty.dims(), [0, 3, h, w]);
    }

    /// [`conditioning_equals_reference`] on flex.
    #[test]
    fn conditioning_conv_equals_reference_with_gradients() {
        let _rng = crate::test_util::rng_lock();
        let flex = Device::flex().autodiff();
        conditioning_equals_reference(&flex, &flex);
    }

    /// Without autodiff (sampling, inference) the fused path gives the same values.
    #[test]
    fn fused_runs_on_the_plain_device() {
        let _rng = crate::test_util::rng_lock();
        let dev = Device::flex();
        dev.seed(2);
        let n = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<4>::random([3, 1, 8, 8], n, &dev);
        let w = Tensor::<4>::random([2, 1, 3, 3], n, &dev);
        let b = Tensor::<1>::random([2], n, &dev);
        let act = Activation::LeakyRelu(0.01);
        let d = max_diff(
            periodic_conv2d(x.clone(), w.clone(), b.clone(), act),
            periodic_conv2d_reference(x, w, b, act),
        );
        assert!(d < 1e-5, "{d}");
    }
}
