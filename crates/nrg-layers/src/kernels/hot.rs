//! The hot paths as one burn operation each, on every backend that has them: the periodic
//! convolution of the flat flows' CNN subnets (also as their first layer, reading the masked
//! field straight from a coupling stack's state) and their couplings' affine update, a
//! whole flat coupling stack as one operation on its state (its parameters one flat vector,
//! decision 75: the convolutions and updates above reading their weights at offsets in it,
//! their backward entries writing the gradient's parts in place), and the chain of block
//! couplings of the hierarchical flow. On flex they run the `nrg-kernels`
//! routines (as the other fused operations in `ext`); with this crate's `wgpu` feature they
//! also run as CubeCL kernels on the cubecl backend (wgpu, and any other cubecl runtime),
//! in `cube`, with burn's fusion deferring them like any other operation. The autodiff
//! steps are written once, generic over the backend: a backward entry of the same backend
//! computes the gradients from the saved inputs (and, for the convolution, the output; for
//! the hierarchical layer, its gathered blocks instead of its input state).

use super::{
    Activation, BlockLayerShape, ChainShape, Direction, StackAffine, StackConv, StackShape,
};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, TensorMetadata, backend_extension,
};
use burn::tensor::Tensor;

/// The hot paths as backend operations. The backward entries compute the gradients of the
/// forward entries from saved values; they, and [`HotOps::block_layer_saving`] (the
/// forward entry autodiff calls to save the layer's blocks), are not differentiable
/// themselves.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    Cube: cfg(feature = "wgpu"),
    Fusion: cfg(feature = "wgpu"),
    Autodiff
)]
pub trait HotOps: Backend {
    /// See [`super::periodic_conv2d`]: `[B, cin, H, W]`, `[cout, cin, k, k]`, `[cout]` →
    /// `[B, cout, H, W]`.
    #[fusion(dtype = input, shape = conv_output_shape(input, weight))]
    fn periodic_conv2d(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        act: Activation,
    ) -> FloatTensor<Self>;

    /// `(∂L/∂input, ∂L/∂weight, ∂L/∂bias)` of [`HotOps::periodic_conv2d`] from its input,
    /// weight, output and the output's cotangent.
    #[fusion(meta = conv_backward_meta)]
    fn periodic_conv2d_backward(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        act: Activation,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// See [`super::HotPaths::conditioning_conv2d`]: state `[B, C·H·W + 1]`, mask
    /// `[1, C, H, W]`, `[cout, C, k, k]`, `[cout]` → `[B, cout, H, W]`.
    #[fusion(dtype = state, shape = conditioning_output_shape(state, mask, weight))]
    fn conditioning_conv2d(
        state: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        act: Activation,
    ) -> FloatTensor<Self>;

    /// `(∂L/∂state, ∂L/∂weight, ∂L/∂bias)` of [`HotOps::conditioning_conv2d`] from its
    /// state, mask, weight, output and the output's cotangent.
    #[fusion(meta = conditioning_backward_meta)]
    fn conditioning_conv2d_backward(
        state: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        act: Activation,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// See [`super::HotPaths::coupling_chain`]: `[2, h, N]`, flat parameters → `[2h + 1, N]`.
    #[fusion(dtype = input, shape = chain_output_shape(input, shape))]
    fn coupling_chain(
        input: FloatTensor<Self>,
        params: FloatTensor<Self>,
        shape: ChainShape,
    ) -> FloatTensor<Self>;

    /// `(∂L/∂input, ∂L/∂params)` of [`HotOps::coupling_chain`].
    #[fusion(meta = chain_backward_meta)]
    fn coupling_chain_backward(
        input: FloatTensor<Self>,
        params: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        shape: ChainShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// See [`super::HotPaths::block_layer`]: state `[B, C·L² + 1]`, flat chain parameters
    /// → state.
    #[fusion(dtype = state, shape = same_shape(state))]
    fn block_layer(
        state: FloatTensor<Self>,
        params: FloatTensor<Self>,
        shape: BlockLayerShape,
    ) -> FloatTensor<Self>;

    /// [`HotOps::block_layer`] that also returns the layer's blocks, the chain's input
    /// `[2, h, N]` (`h = C·b²/2`, `N` = batch × blocks per sample), which is what the
    /// backward pass needs of the forward's input: autodiff keeps these instead of the
    /// state (decision 74).
    #[fusion(meta = block_layer_saving_meta)]
    fn block_layer_saving(
        state: FloatTensor<Self>,
        params: FloatTensor<Self>,
        shape: BlockLayerShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `(∂L/∂state, ∂L/∂params)` of [`HotOps::block_layer`] from the layer's blocks `[2, h,
    /// N]` (as [`HotOps::block_layer_saving`] returns them; the chain is recomputed) and the
    /// output's cotangent `[B, C·L² + 1]`.
    #[fusion(meta = block_layer_backward_meta)]
    fn block_layer_backward(
        blocks: FloatTensor<Self>,
        params: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        shape: BlockLayerShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// See [`super::HotPaths::affine_update`]: state `[B, C·H·W + 1]`, subnet output
    /// `[B, 2C, H, W]`, mask `[1, C, H, W]`, scales `[1, C, 1, 1]` → state `[B, C·H·W + 1]`.
    #[fusion(dtype = state, shape = same_shape(state))]
    fn affine_update(
        state: FloatTensor<Self>,
        subnet: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        direction: Direction,
    ) -> FloatTensor<Self>;

    /// `(∂L/∂state, ∂L/∂subnet, ∂L/∂scale)` of [`HotOps::affine_update`].
    #[fusion(meta = affine_backward_meta)]
    fn affine_update_backward(
        state: FloatTensor<Self>,
        subnet: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        direction: Direction,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// See [`super::HotPaths::coupling_stack`]: state `[B, C·H·W + 1]`, flat parameters
    /// `[P]`, masks `[M, C, H, W]` → state.
    #[fusion(dtype = state, shape = same_shape(state))]
    fn coupling_stack(
        state: FloatTensor<Self>,
        params: FloatTensor<Self>,
        masks: FloatTensor<Self>,
        shape: StackShape,
        direction: Direction,
    ) -> FloatTensor<Self>;

    /// One convolution of a coupling stack ([`StackConv`]), its weight and bias read from
    /// the flat parameters: `input` a state `[B, C·H·W + 1]` (a coupling's first layer, on
    /// `m ⊙ z` with mask plane `layer.mask` of `masks` `[M, C, H, W]`) or a field
    /// `[B, cin, H, W]` → `[B, cout, H, W]`.
    #[fusion(dtype = input, shape = stack_conv_shape(input, masks, layer))]
    fn stack_conv(
        input: FloatTensor<Self>,
        params: FloatTensor<Self>,
        masks: FloatTensor<Self>,
        layer: StackConv,
    ) -> FloatTensor<Self>;

    /// `(∂L/∂input, ∂L/∂params)` of a [`HotOps::stack_conv`] on a field, from its input,
    /// output and the output's cotangent: `grad_params` with this layer's weight and bias
    /// entries written (in place where the tensor is not shared), the others kept.
    #[fusion(meta = stack_conv_backward_meta)]
    fn stack_conv_backward(
        input: FloatTensor<Self>,
        params: FloatTensor<Self>,
        output: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        grad_params: FloatTensor<Self>,
        layer: StackConv,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `(∂L/∂state, ∂L/∂params)` of a coupling's first [`HotOps::stack_conv`] (on a state):
    /// `grad_state` plus this layer's `m ⊙ ∂x` (0 for the ln|det| column), and
    /// `grad_params` with the layer's entries written (both in place where not shared).
    #[fusion(meta = stack_conditioning_backward_meta)]
    #[allow(clippy::too_many_arguments)]
    fn stack_conditioning_backward(
        state: FloatTensor<Self>,
        params: FloatTensor<Self>,
        masks: FloatTensor<Self>,
        output: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        grad_state: FloatTensor<Self>,
        grad_params: FloatTensor<Self>,
        layer: StackConv,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The affine update of a coupling stack's coupling ([`StackAffine`]; as
    /// [`HotOps::affine_update`] with `σ` read from the flat parameters and mask plane
    /// `layer.mask`): state, subnet output `[B, 2C, H, W]` → state.
    #[fusion(dtype = state, shape = same_shape(state))]
    fn stack_affine(
        state: FloatTensor<Self>,
        subnet: FloatTensor<Self>,
        params: FloatTensor<Self>,
        masks: FloatTensor<Self>,
        layer: StackAffine,
    ) -> FloatTensor<Self>;

    /// `(∂L/∂state, ∂L/∂subnet, ∂L/∂params)` of [`HotOps::stack_affine`]: `grad_params`
    /// with this coupling's `σ` entries written (in place where not shared).
    #[fusion(meta = stack_affine_backward_meta)]
    fn stack_affine_backward(
        state: FloatTensor<Self>,
        subnet: FloatTensor<Self>,
        params: FloatTensor<Self>,
        masks: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        grad_params: FloatTensor<Self>,
        layer: StackAffine,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The state's own shape (an affine update maps a state to a state).
#[cfg(feature = "wgpu")]
fn same_shape(state: &burn::tensor::Shape) -> burn::tensor::Shape {
    state.clone()
}

/// `[B, cout, H, W]` of the conditioning convolution of a state `[B, C·H·W + 1]` with mask
/// `[1, C, H, W]` by `[cout, C, k, k]`.
#[cfg(feature = "wgpu")]
fn conditioning_output_shape(
    state: &burn::tensor::Shape,
    mask: &burn::tensor::Shape,
    weight: &burn::tensor::Shape,
) -> burn::tensor::Shape {
    burn::tensor::Shape::new([state[0], weight[0], mask[2], mask[3]])
}

/// `[B, cout, H, W]` of a convolution of `[B, cin, H, W]` by `[cout, cin, k, k]`.
#[cfg(feature = "wgpu")]
fn conv_output_shape(
    input: &burn::tensor::Shape,
    weight: &burn::tensor::Shape,
) -> burn::tensor::Shape {
    burn::tensor::Shape::new([input[0], weight[0], input[2], input[3]])
}

/// `[2h + 1, N]` of a chain on `[2, h, N]`.
#[cfg(feature = "wgpu")]
fn chain_output_shape(input: &burn::tensor::Shape, _: &ChainShape) -> burn::tensor::Shape {
    burn::tensor::Shape::new([2 * input[1] + 1, input[2]])
}

#[cfg(feature = "wgpu")]
use burn::backend::fusion::custom::TensorSpec;

/// The gradients' shapes: the input's, the weight's, `[cout]`.
#[cfg(feature = "wgpu")]
fn conv_backward_meta(
    input: &TensorSpec,
    weight: &TensorSpec,
    _: &TensorSpec,
    _: &TensorSpec,
    _: &Activation,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    let bias = TensorSpec::new(burn::tensor::Shape::new([weight.shape[0]]), weight.dtype);
    (input.clone(), weight.clone(), bias)
}

/// The gradients' shapes: the state's, the weight's, `[cout]`.
#[cfg(feature = "wgpu")]
fn conditioning_backward_meta(
    state: &TensorSpec,
    _: &TensorSpec,
    weight: &TensorSpec,
    _: &TensorSpec,
    _: &TensorSpec,
    _: &Activation,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    let bias = TensorSpec::new(burn::tensor::Shape::new([weight.shape[0]]), weight.dtype);
    (state.clone(), weight.clone(), bias)
}

/// The gradients' shapes: the state's, the subnet output's, the scales'.
#[cfg(feature = "wgpu")]
fn affine_backward_meta(
    state: &TensorSpec,
    subnet: &TensorSpec,
    _: &TensorSpec,
    scale: &TensorSpec,
    _: &TensorSpec,
    _: &Direction,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    (state.clone(), subnet.clone(), scale.clone())
}

/// The new state's shape (the state's) and the blocks' `[2, h, N]`.
#[cfg(feature = "wgpu")]
fn block_layer_saving_meta(
    state: &TensorSpec,
    _: &TensorSpec,
    shape: &BlockLayerShape,
) -> (TensorSpec, TensorSpec) {
    let g = shape.geometry(state.shape[0]);
    let blocks = burn::tensor::Shape::new([2, g.half(), g.columns()]);
    (state.clone(), TensorSpec::new(blocks, state.dtype))
}

/// The gradients' shapes: the state's (the cotangent's) and the parameters'.
#[cfg(feature = "wgpu")]
fn block_layer_backward_meta(
    _: &TensorSpec,
    params: &TensorSpec,
    grad_output: &TensorSpec,
    _: &BlockLayerShape,
) -> (TensorSpec, TensorSpec) {
    (grad_output.clone(), params.clone())
}

/// The gradients' shapes: the input's and the parameters'.
#[cfg(feature = "wgpu")]
fn chain_backward_meta(
    input: &TensorSpec,
    params: &TensorSpec,
    _: &TensorSpec,
    _: &ChainShape,
) -> (TensorSpec, TensorSpec) {
    (input.clone(), params.clone())
}

/// `[B, cout, H, W]` of a stack's convolution of a state `[B, C·H·W + 1]` (`H`, `W` from
/// the masks `[M, C, H, W]`) or of a field `[B, cin, H, W]`.
#[cfg(feature = "wgpu")]
fn stack_conv_shape(
    input: &burn::tensor::Shape,
    masks: &burn::tensor::Shape,
    layer: &StackConv,
) -> burn::tensor::Shape {
    let (h, w) = if input.num_dims() == 2 {
        (masks[2], masks[3])
    } else {
        (input[2], input[3])
    };
    burn::tensor::Shape::new([input[0], layer.cout, h, w])
}

/// The gradients' shapes: the input's and the parameters'.
#[cfg(feature = "wgpu")]
fn stack_conv_backward_meta(
    input: &TensorSpec,
    params: &TensorSpec,
    _: &TensorSpec,
    _: &TensorSpec,
    _: &TensorSpec,
    _: &StackConv,
) -> (TensorSpec, TensorSpec) {
    (input.clone(), params.clone())
}

/// The gradients' shapes: the state's and the parameters'.
#[cfg(feature = "wgpu")]
#[allow(clippy::too_many_arguments)]
fn stack_conditioning_backward_meta(
    state: &TensorSpec,
    params: &TensorSpec,
    _: &TensorSpec,
    _: &TensorSpec,
    _: &TensorSpec,
    _: &TensorSpec,
    _: &TensorSpec,
    _: &StackConv,
) -> (TensorSpec, TensorSpec) {
    (state.clone(), params.clone())
}

/// The gradients' shapes: the state's, the subnet output's, the parameters'.
#[cfg(feature = "wgpu")]
fn stack_affine_backward_meta(
    state: &TensorSpec,
    subnet: &TensorSpec,
    params: &TensorSpec,
    _: &TensorSpec,
    _: &TensorSpec,
    _: &TensorSpec,
    _: &StackAffine,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    (state.clone(), subnet.clone(), params.clone())
}

/// The couplings of a stack in the order `direction` applies them, each its convolutions
/// ([`HotOps::stack_conv`]) and its update ([`HotOps::stack_affine`]), by `B`'s operations.
/// With `save`, each coupling's input state and its convolutions' outputs, in the order
/// applied (what [`StackBackward`] needs).
#[allow(clippy::type_complexity)]
pub(super) fn stack_forward<B: HotOps>(
    state: FloatTensor<B>,
    params: FloatTensor<B>,
    masks: FloatTensor<B>,
    shape: &StackShape,
    direction: Direction,
    save: bool,
) -> (FloatTensor<B>, Vec<Vec<FloatTensor<B>>>) {
    let mut z = state;
    let mut saved = Vec::new();
    for k in stack_order(shape, direction) {
        let mut h = z.clone();
        let mut kept = Vec::new();
        if save {
            kept.push(z.clone());
        }
        for conv in shape.convs(k) {
            h = B::stack_conv(h, params.clone(), masks.clone(), conv);
            if save {
                kept.push(h.clone());
            }
        }
        z = B::stack_affine(
            z,
            h,
            params.clone(),
            masks.clone(),
            shape.affine(k, direction),
        );
        if save {
            saved.push(kept);
        }
    }
    (z, saved)
}

/// The couplings' indices in the order `direction` applies them.
fn stack_order(shape: &StackShape, direction: Direction) -> Vec<usize> {
    match direction {
        Direction::Forward => (0..shape.couplings).collect(),
        Direction::Inverse => (0..shape.couplings).rev().collect(),
    }
}

#[cfg(feature = "flex")]
mod on_flex {
    use super::super::ext::{
        affine_geometry, chain_geometry, chain_geometry_of, conv_geometry, host, slice, tensor,
    };
    use super::{
        Activation, BlockLayerShape, ChainShape, Direction, HotOps, StackAffine, StackConv,
        StackShape, stack_forward,
    };
    use burn::backend::flex::FlexTensor;
    use burn::backend::{Flex, TensorMetadata};
    use nrg_kernels::{AffineGeometry, ConvGeometry, Exec};

    /// `t` on the host, f32, contiguous from its storage's start and not shared: a tensor
    /// whose storage a kernel may write (a copy where needed).
    fn owned(t: FlexTensor) -> FlexTensor {
        let mut t = host(t);
        let n = t.shape().num_elements();
        if t.layout().start_offset() != 0 || t.storage_mut::<f32>().len() != n {
            t = tensor(slice(&t).to_vec(), t.shape().to_vec());
        }
        t
    }

    /// Plane `k` of the masks `[M, C, H, W]` (`C·H·W` values) and `(C, H, W)`.
    fn mask_plane(masks: &FlexTensor, k: usize) -> (&[f32], [usize; 3]) {
        let ms = masks.shape();
        let cv = ms[1] * ms[2] * ms[3];
        (&slice(masks)[k * cv..(k + 1) * cv], [ms[1], ms[2], ms[3]])
    }

    /// The affine geometry of a stack's state `[B, C·H·W + 1]` under masks `[M, C, H, W]`.
    fn stack_affine_geometry(
        state: &FlexTensor,
        masks: &FlexTensor,
        direction: Direction,
    ) -> AffineGeometry {
        let ms = masks.shape();
        AffineGeometry {
            batch: state.shape()[0],
            channels: ms[1],
            sites: ms[2] * ms[3],
            direction,
        }
    }

    /// The geometry of a stack's convolution `layer` on `batch` fields of `rows × cols`.
    fn stack_conv_geometry(
        layer: &StackConv,
        batch: usize,
        rows: usize,
        cols: usize,
    ) -> ConvGeometry {
        ConvGeometry {
            batch,
            cin: layer.cin,
            cout: layer.cout,
            rows,
            cols,
            kernel: layer.kernel,
        }
    }

    /// The weight and bias of `layer` in the flat parameters.
    fn stack_weights<'a>(p: &'a [f32], layer: &StackConv) -> (&'a [f32], &'a [f32]) {
        let nw = layer.cout * layer.cin * layer.kernel * layer.kernel;
        (
            &p[layer.weight..layer.weight + nw],
            &p[layer.bias..layer.bias + layer.cout],
        )
    }

    /// Writes `gw`, `gb` into the flat gradient at `layer`'s offsets.
    fn put_conv_grads(gp: &mut FlexTensor, layer: &StackConv, gw: &[f32], gb: &[f32]) {
        let g = gp.storage_mut::<f32>();
        g[layer.weight..layer.weight + gw.len()].copy_from_slice(gw);
        g[layer.bias..layer.bias + gb.len()].copy_from_slice(gb);
    }

    impl HotOps for Flex {
        fn coupling_stack(
            state: FlexTensor,
            params: FlexTensor,
            masks: FlexTensor,
            shape: StackShape,
            direction: Direction,
        ) -> FlexTensor {
            stack_forward::<Flex>(state, params, masks, &shape, direction, false).0
        }

        fn stack_conv(
            input: FlexTensor,
            params: FlexTensor,
            masks: FlexTensor,
            layer: StackConv,
        ) -> FlexTensor {
            let (x, p, m) = (host(input), host(params), host(masks));
            let b = x.shape()[0];
            let (plane, [_, h, w]) = mask_plane(&m, layer.mask);
            let masked;
            let input = if x.shape().num_dims() == 2 {
                let g = stack_affine_geometry(&x, &m, Direction::Forward);
                masked = nrg_kernels::conditioning(&g, slice(&x), plane);
                &masked[..]
            } else {
                slice(&x)
            };
            let g = stack_conv_geometry(&layer, b, h, w);
            let (wt, bias) = stack_weights(slice(&p), &layer);
            let y = nrg_kernels::conv_forward(Exec::native(), &g, input, wt, bias, layer.act);
            tensor(y, vec![b, layer.cout, h, w])
        }

        fn stack_conv_backward(
            input: FlexTensor,
            params: FlexTensor,
            output: FlexTensor,
            grad_output: FlexTensor,
            grad_params: FlexTensor,
            layer: StackConv,
        ) -> (FlexTensor, FlexTensor) {
            let (x, p, y, gy) = (host(input), host(params), host(output), host(grad_output));
            let xs = x.shape().to_vec();
            let g = stack_conv_geometry(&layer, xs[0], xs[2], xs[3]);
            let (wt, _) = stack_weights(slice(&p), &layer);
            let (gx, gw, gb) = nrg_kernels::conv_backward(
                Exec::native(),
                &g,
                slice(&x),
                wt,
                slice(&y),
                slice(&gy),
                layer.act,
            );
            let mut gp = owned(grad_params);
            put_conv_grads(&mut gp, &layer, &gw, &gb);
            (tensor(gx, xs), gp)
        }

        fn stack_conditioning_backward(
            state: FlexTensor,
            params: FlexTensor,
            masks: FlexTensor,
            output: FlexTensor,
            grad_output: FlexTensor,
            grad_state: FlexTensor,
            grad_params: FlexTensor,
            layer: StackConv,
        ) -> (FlexTensor, FlexTensor) {
            let (z, p, m) = (host(state), host(params), host(masks));
            let (y, gy) = (host(output), host(grad_output));
            let (plane, [_, h, w]) = mask_plane(&m, layer.mask);
            let ag = stack_affine_geometry(&z, &m, Direction::Forward);
            let x = nrg_kernels::conditioning(&ag, slice(&z), plane);
            let g = stack_conv_geometry(&layer, ag.batch, h, w);
            let (wt, _) = stack_weights(slice(&p), &layer);
            let (gx, gw, gb) = nrg_kernels::conv_backward(
                Exec::native(),
                &g,
                &x,
                wt,
                slice(&y),
                slice(&gy),
                layer.act,
            );
            let gzc = nrg_kernels::conditioning_backward(&ag, plane, &gx);
            let mut gz = owned(grad_state);
            for (a, b) in gz.storage_mut::<f32>().iter_mut().zip(&gzc) {
                *a += b;
            }
            let mut gp = owned(grad_params);
            put_conv_grads(&mut gp, &layer, &gw, &gb);
            (gz, gp)
        }

        fn stack_affine(
            state: FlexTensor,
            subnet: FlexTensor,
            params: FlexTensor,
            masks: FlexTensor,
            layer: StackAffine,
        ) -> FlexTensor {
            let (z, o, p, m) = (host(state), host(subnet), host(params), host(masks));
            let g = stack_affine_geometry(&z, &m, layer.direction);
            let (plane, _) = mask_plane(&m, layer.mask);
            let sigma = &slice(&p)[layer.sigma..layer.sigma + g.channels];
            let y =
                nrg_kernels::affine_forward(Exec::native(), &g, slice(&z), slice(&o), plane, sigma);
            tensor(y, z.shape().to_vec())
        }

        fn stack_affine_backward(
            state: FlexTensor,
            subnet: FlexTensor,
            params: FlexTensor,
            masks: FlexTensor,
            grad_output: FlexTensor,
            grad_params: FlexTensor,
            layer: StackAffine,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let (z, o, p, m) = (host(state), host(subnet), host(params), host(masks));
            let gy = host(grad_output);
            let g = stack_affine_geometry(&z, &m, layer.direction);
            let (plane, _) = mask_plane(&m, layer.mask);
            let sigma = &slice(&p)[layer.sigma..layer.sigma + g.channels];
            let (gz, go, gs) = nrg_kernels::affine_backward(
                Exec::native(),
                &g,
                slice(&z),
                slice(&o),
                plane,
                sigma,
                slice(&gy),
            );
            let mut gp = owned(grad_params);
            gp.storage_mut::<f32>()[layer.sigma..layer.sigma + gs.len()].copy_from_slice(&gs);
            (
                tensor(gz, z.shape().to_vec()),
                tensor(go, o.shape().to_vec()),
                gp,
            )
        }

        fn periodic_conv2d(
            input: FlexTensor,
            weight: FlexTensor,
            bias: FlexTensor,
            act: Activation,
        ) -> FlexTensor {
            let (x, w, b) = (host(input), host(weight), host(bias));
            let g = conv_geometry(&x, &w);
            let y =
                nrg_kernels::conv_forward(Exec::native(), &g, slice(&x), slice(&w), slice(&b), act);
            tensor(y, vec![g.batch, g.cout, g.rows, g.cols])
        }

        fn periodic_conv2d_backward(
            input: FlexTensor,
            weight: FlexTensor,
            output: FlexTensor,
            grad_output: FlexTensor,
            act: Activation,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let (x, w, y, gy) = (host(input), host(weight), host(output), host(grad_output));
            let g = conv_geometry(&x, &w);
            let (gx, gw, gb) = nrg_kernels::conv_backward(
                Exec::native(),
                &g,
                slice(&x),
                slice(&w),
                slice(&y),
                slice(&gy),
                act,
            );
            (
                tensor(gx, vec![g.batch, g.cin, g.rows, g.cols]),
                tensor(gw, vec![g.cout, g.cin, g.kernel, g.kernel]),
                tensor(gb, vec![g.cout]),
            )
        }

        fn coupling_chain(input: FlexTensor, params: FlexTensor, shape: ChainShape) -> FlexTensor {
            let (x, p) = (host(input), host(params));
            let g = chain_geometry(&x, &shape);
            let y = nrg_kernels::chain_forward(Exec::native(), &g, slice(&x), slice(&p));
            tensor(y, vec![2 * shape.widths[0] + 1, g.mlp.rows])
        }

        fn coupling_chain_backward(
            input: FlexTensor,
            params: FlexTensor,
            grad_output: FlexTensor,
            shape: ChainShape,
        ) -> (FlexTensor, FlexTensor) {
            let (x, p, gy) = (host(input), host(params), host(grad_output));
            let g = chain_geometry(&x, &shape);
            let (gx, gp) =
                nrg_kernels::chain_backward(Exec::native(), &g, slice(&x), slice(&p), slice(&gy));
            let len = gp.len();
            (
                tensor(gx, vec![2, shape.widths[0], g.mlp.rows]),
                tensor(gp, vec![len]),
            )
        }

        fn block_layer(
            state: FlexTensor,
            params: FlexTensor,
            shape: BlockLayerShape,
        ) -> FlexTensor {
            Self::block_layer_saving(state, params, shape).0
        }

        fn block_layer_saving(
            state: FlexTensor,
            params: FlexTensor,
            shape: BlockLayerShape,
        ) -> (FlexTensor, FlexTensor) {
            let (z, p) = (host(state), host(params));
            let g = shape.geometry(z.shape()[0]);
            let c = chain_geometry_of(&shape.chain, g.columns());
            let x = nrg_kernels::block_gather(&g, slice(&z), 2 * g.half());
            let y = nrg_kernels::chain_forward(Exec::native(), &c, &x, slice(&p));
            let out = nrg_kernels::block_scatter(&g, slice(&z), &y, true);
            (
                tensor(out, vec![g.batch, g.width()]),
                tensor(x, vec![2, g.half(), g.columns()]),
            )
        }

        fn block_layer_backward(
            blocks: FlexTensor,
            params: FlexTensor,
            grad_output: FlexTensor,
            shape: BlockLayerShape,
        ) -> (FlexTensor, FlexTensor) {
            let (x, p, gy) = (host(blocks), host(params), host(grad_output));
            let g = shape.geometry(gy.shape()[0]);
            debug_assert_eq!(
                x.shape().to_vec(),
                [2, g.half(), g.columns()],
                "the layer's blocks"
            );
            let c = chain_geometry_of(&shape.chain, g.columns());
            let gout = nrg_kernels::block_gather(&g, slice(&gy), 2 * g.half() + 1);
            let (gx, gp) =
                nrg_kernels::chain_backward(Exec::native(), &c, slice(&x), slice(&p), &gout);
            let gz = nrg_kernels::block_scatter(&g, slice(&gy), &gx, false);
            let len = gp.len();
            (tensor(gz, vec![g.batch, g.width()]), tensor(gp, vec![len]))
        }

        fn affine_update(
            state: FlexTensor,
            subnet: FlexTensor,
            mask: FlexTensor,
            scale: FlexTensor,
            direction: Direction,
        ) -> FlexTensor {
            let (z, o, m, s) = (host(state), host(subnet), host(mask), host(scale));
            let g = affine_geometry(&z, &m, direction);
            let shape = z.shape().to_vec();
            let (z, o, m, s) = (slice(&z), slice(&o), slice(&m), slice(&s));
            let y = nrg_kernels::affine_forward(Exec::native(), &g, z, o, m, s);
            tensor(y, shape)
        }

        fn affine_update_backward(
            state: FlexTensor,
            subnet: FlexTensor,
            mask: FlexTensor,
            scale: FlexTensor,
            grad_output: FlexTensor,
            direction: Direction,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let (z, o, m, s) = (host(state), host(subnet), host(mask), host(scale));
            let gy = host(grad_output);
            let g = affine_geometry(&z, &m, direction);
            let (zs, os, ms, ss, gys) = (slice(&z), slice(&o), slice(&m), slice(&s), slice(&gy));
            let (gz, go, gs) =
                nrg_kernels::affine_backward(Exec::native(), &g, zs, os, ms, ss, gys);
            let c = g.channels;
            (
                tensor(gz, z.shape().to_vec()),
                tensor(go, o.shape().to_vec()),
                tensor(gs, vec![1, c, 1, 1]),
            )
        }

        fn conditioning_conv2d(
            state: FlexTensor,
            mask: FlexTensor,
            weight: FlexTensor,
            bias: FlexTensor,
            act: Activation,
        ) -> FlexTensor {
            let (z, m) = (host(state), host(mask));
            let g = affine_geometry(&z, &m, Direction::Forward);
            let x = nrg_kernels::conditioning(&g, slice(&z), slice(&m));
            let ms = m.shape();
            Self::periodic_conv2d(
                tensor(x, vec![g.batch, g.channels, ms[2], ms[3]]),
                weight,
                bias,
                act,
            )
        }

        fn conditioning_conv2d_backward(
            state: FlexTensor,
            mask: FlexTensor,
            weight: FlexTensor,
            output: FlexTensor,
            grad_output: FlexTensor,
            act: Activation,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let (z, m) = (host(state), host(mask));
            let g = affine_geometry(&z, &m, Direction::Forward);
            let x = nrg_kernels::conditioning(&g, slice(&z), slice(&m));
            let ms = m.shape();
            let x = tensor(x, vec![g.batch, g.channels, ms[2], ms[3]]);
            let (gx, gw, gb) = Self::periodic_conv2d_backward(x, weight, output, grad_output, act);
            let gx = host(gx);
            let gz = nrg_kernels::conditioning_backward(&g, slice(&m), slice(&gx));
            (tensor(gz, z.shape().to_vec()), gw, gb)
        }
    }
}

/// Backward step of the convolution: the saved input, weight and output.
#[derive(Debug)]
struct ConvBackward;

impl<B: Backend + HotOps> Backward<B, 3> for ConvBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, Activation);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, w, y, act) = ops.state;
        let (gx, gw, gb) = B::periodic_conv2d_backward(x, w, y, grad, act);
        for (node, g) in [(node_x, gx), (node_w, gw), (node_b, gb)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// Backward step of the conditioning convolution: the saved state, mask, weight and output.
#[derive(Debug)]
struct ConditioningBackward;

impl<B: Backend + HotOps> Backward<B, 3> for ConditioningBackward {
    type State = ([FloatTensor<B>; 4], Activation);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_z, node_w, node_b] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let ([z, m, w, y], act) = ops.state;
        let (gz, gw, gb) = B::conditioning_conv2d_backward(z, m, w, y, grad, act);
        for (node, g) in [(node_z, gz), (node_w, gw), (node_b, gb)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// Backward step of the coupling chain: the saved input and parameters (the chain is
/// recomputed).
#[derive(Debug)]
struct ChainBackward;

impl<B: Backend + HotOps> Backward<B, 2> for ChainBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, ChainShape);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_p] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, p, shape) = ops.state;
        let (gx, gp) = B::coupling_chain_backward(x, p, grad, shape);
        for (node, g) in [(node_x, gx), (node_p, gp)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// Backward step of a hierarchical layer on the flow's state: the saved blocks (the chain's
/// input, not the whole input state) and parameters (the chain is recomputed).
#[derive(Debug)]
struct BlockLayerBackward;

impl<B: Backend + HotOps> Backward<B, 2> for BlockLayerBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, BlockLayerShape);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_z, node_p] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, p, shape) = ops.state;
        let (gz, gp) = B::block_layer_backward(x, p, grad, shape);
        for (node, g) in [(node_z, gz), (node_p, gp)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// Backward step of the affine update: the saved state, subnet output, mask and scales (the
/// update is recomputed).
#[derive(Debug)]
struct AffineBackward;

impl<B: Backend + HotOps> Backward<B, 3> for AffineBackward {
    type State = ([FloatTensor<B>; 4], Direction);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_z, node_o, node_s] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let ([z, o, m, s], direction) = ops.state;
        let (gz, go, gs) = B::affine_update_backward(z, o, m, s, grad, direction);
        for (node, g) in [(node_z, gz), (node_o, go), (node_s, gs)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// Backward step of a whole coupling stack: the saved input state and convolution
/// outputs of every coupling (in the order applied), the flat parameters, the masks. The
/// parameters' gradient is one flat tensor that every coupling's kernels write their parts
/// of; it starts uninitialised, since the stack's layers cover every entry.
#[derive(Debug)]
struct StackBackward;

impl<B: Backend + HotOps> Backward<B, 2> for StackBackward {
    #[allow(clippy::type_complexity)]
    type State = (
        Vec<Vec<FloatTensor<B>>>,
        FloatTensor<B>,
        FloatTensor<B>,
        StackShape,
        Direction,
    );

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_z, node_p] = ops.parents;
        let mut gz = grads.consume::<B>(&ops.node);
        let (saved, p, m, shape, direction) = ops.state;
        let dtype = burn::tensor::FloatDType::from(p.dtype());
        let mut gp = B::float_empty(burn::tensor::Shape::new([shape.len()]), &p.device(), dtype);
        let order = stack_order(&shape, direction);
        for (k, kept) in order.into_iter().zip(saved).rev() {
            let convs = shape.convs(k);
            let mut kept = kept.into_iter();
            let z = kept.next().expect("a coupling's input state");
            let ys: Vec<FloatTensor<B>> = kept.collect();
            let out = ys.last().expect("a coupling's subnet output").clone();
            let (gz_update, gout, gp1) = B::stack_affine_backward(
                z.clone(),
                out,
                p.clone(),
                m.clone(),
                gz,
                gp,
                shape.affine(k, direction),
            );
            let (mut g, mut gp_acc) = (gout, gp1);
            for l in (1..convs.len()).rev() {
                (g, gp_acc) = B::stack_conv_backward(
                    ys[l - 1].clone(),
                    p.clone(),
                    ys[l].clone(),
                    g,
                    gp_acc,
                    convs[l].clone(),
                );
            }
            (gz, gp) = B::stack_conditioning_backward(
                z,
                p.clone(),
                m.clone(),
                ys[0].clone(),
                g,
                gz_update,
                gp_acc,
                convs[0].clone(),
            );
        }
        for (node, g) in [(node_z, gz), (node_p, gp)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: Backend + HotOps, C: CheckpointStrategy> HotOps for Autodiff<B, C> {
    fn coupling_stack(
        state: FloatTensor<Self>,
        params: FloatTensor<Self>,
        masks: FloatTensor<Self>,
        shape: StackShape,
        direction: Direction,
    ) -> FloatTensor<Self> {
        let guards = [state.node(), params.node()];
        let (z, p) = (state.into_primitive(), params.into_primitive());
        let m = masks.into_primitive();
        match StackBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (y, saved) =
                    stack_forward::<B>(z, p.clone(), m.clone(), &shape, direction, true);
                prep.finish((saved, p, m, shape, direction), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::coupling_stack(z, p, m, shape, direction)),
        }
    }

    fn stack_conv(
        input: FloatTensor<Self>,
        params: FloatTensor<Self>,
        masks: FloatTensor<Self>,
        layer: StackConv,
    ) -> FloatTensor<Self> {
        let y = B::stack_conv(
            input.into_primitive(),
            params.into_primitive(),
            masks.into_primitive(),
            layer,
        );
        <Autodiff<B, C> as AutodiffBackend>::from_inner(y)
    }

    fn stack_conv_backward(
        input: FloatTensor<Self>,
        params: FloatTensor<Self>,
        output: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        grad_params: FloatTensor<Self>,
        layer: StackConv,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (gx, gp) = B::stack_conv_backward(
            input.into_primitive(),
            params.into_primitive(),
            output.into_primitive(),
            grad_output.into_primitive(),
            grad_params.into_primitive(),
            layer,
        );
        let lift = <Autodiff<B, C> as AutodiffBackend>::from_inner;
        (lift(gx), lift(gp))
    }

    fn stack_conditioning_backward(
        state: FloatTensor<Self>,
        params: FloatTensor<Self>,
        masks: FloatTensor<Self>,
        output: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        grad_state: FloatTensor<Self>,
        grad_params: FloatTensor<Self>,
        layer: StackConv,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (gz, gp) = B::stack_conditioning_backward(
            state.into_primitive(),
            params.into_primitive(),
            masks.into_primitive(),
            output.into_primitive(),
            grad_output.into_primitive(),
            grad_state.into_primitive(),
            grad_params.into_primitive(),
            layer,
        );
        let lift = <Autodiff<B, C> as AutodiffBackend>::from_inner;
        (lift(gz), lift(gp))
    }

    fn stack_affine(
        state: FloatTensor<Self>,
        subnet: FloatTensor<Self>,
        params: FloatTensor<Self>,
        masks: FloatTensor<Self>,
        layer: StackAffine,
    ) -> FloatTensor<Self> {
        let y = B::stack_affine(
            state.into_primitive(),
            subnet.into_primitive(),
            params.into_primitive(),
            masks.into_primitive(),
            layer,
        );
        <Autodiff<B, C> as AutodiffBackend>::from_inner(y)
    }

    fn stack_affine_backward(
        state: FloatTensor<Self>,
        subnet: FloatTensor<Self>,
        params: FloatTensor<Self>,
        masks: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        grad_params: FloatTensor<Self>,
        layer: StackAffine,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (gz, go, gp) = B::stack_affine_backward(
            state.into_primitive(),
            subnet.into_primitive(),
            params.into_primitive(),
            masks.into_primitive(),
            grad_output.into_primitive(),
            grad_params.into_primitive(),
            layer,
        );
        let lift = <Autodiff<B, C> as AutodiffBackend>::from_inner;
        (lift(gz), lift(go), lift(gp))
    }

    fn affine_update(
        state: FloatTensor<Self>,
        subnet: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        direction: Direction,
    ) -> FloatTensor<Self> {
        let guards = [state.node(), subnet.node(), scale.node()];
        let (z, o, s) = (
            state.into_primitive(),
            subnet.into_primitive(),
            scale.into_primitive(),
        );
        let m = mask.into_primitive();
        match AffineBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::affine_update(z.clone(), o.clone(), m.clone(), s.clone(), direction);
                prep.finish(([z, o, m, s], direction), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::affine_update(z, o, m, s, direction)),
        }
    }

    fn affine_update_backward(
        state: FloatTensor<Self>,
        subnet: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        direction: Direction,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (gz, go, gs) = B::affine_update_backward(
            state.into_primitive(),
            subnet.into_primitive(),
            mask.into_primitive(),
            scale.into_primitive(),
            grad_output.into_primitive(),
            direction,
        );
        let lift = <Autodiff<B, C> as AutodiffBackend>::from_inner;
        (lift(gz), lift(go), lift(gs))
    }

    fn conditioning_conv2d(
        state: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        act: Activation,
    ) -> FloatTensor<Self> {
        let guards = [state.node(), weight.node(), bias.node()];
        let (z, w, b) = (
            state.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        let m = mask.into_primitive();
        match ConditioningBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::conditioning_conv2d(z.clone(), m.clone(), w.clone(), b, act);
                prep.finish(([z, m, w, y.clone()], act), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conditioning_conv2d(z, m, w, b, act)),
        }
    }

    fn conditioning_conv2d_backward(
        state: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        act: Activation,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (gz, gw, gb) = B::conditioning_conv2d_backward(
            state.into_primitive(),
            mask.into_primitive(),
            weight.into_primitive(),
            output.into_primitive(),
            grad_output.into_primitive(),
            act,
        );
        let lift = <Autodiff<B, C> as AutodiffBackend>::from_inner;
        (lift(gz), lift(gw), lift(gb))
    }

    fn periodic_conv2d(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        act: Activation,
    ) -> FloatTensor<Self> {
        let guards = [input.node(), weight.node(), bias.node()];
        let (x, w, b) = (
            input.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        match ConvBackward.prepare::<C>(guards).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::periodic_conv2d(x.clone(), w.clone(), b, act);
                prep.finish((x, w, y.clone(), act), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::periodic_conv2d(x, w, b, act)),
        }
    }

    fn periodic_conv2d_backward(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        act: Activation,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (gx, gw, gb) = B::periodic_conv2d_backward(
            input.into_primitive(),
            weight.into_primitive(),
            output.into_primitive(),
            grad_output.into_primitive(),
            act,
        );
        let lift = <Autodiff<B, C> as AutodiffBackend>::from_inner;
        (lift(gx), lift(gw), lift(gb))
    }

    fn coupling_chain(
        input: FloatTensor<Self>,
        params: FloatTensor<Self>,
        shape: ChainShape,
    ) -> FloatTensor<Self> {
        let guards = [input.node(), params.node()];
        let (x, p) = (input.into_primitive(), params.into_primitive());
        match ChainBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::coupling_chain(x.clone(), p.clone(), shape.clone());
                prep.finish((x, p, shape), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::coupling_chain(x, p, shape)),
        }
    }

    fn block_layer(
        state: FloatTensor<Self>,
        params: FloatTensor<Self>,
        shape: BlockLayerShape,
    ) -> FloatTensor<Self> {
        let guards = [state.node(), params.node()];
        let (z, p) = (state.into_primitive(), params.into_primitive());
        match BlockLayerBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (y, x) = B::block_layer_saving(z, p.clone(), shape.clone());
                prep.finish((x, p, shape), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::block_layer(z, p, shape)),
        }
    }

    fn block_layer_saving(
        state: FloatTensor<Self>,
        params: FloatTensor<Self>,
        shape: BlockLayerShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (y, x) = B::block_layer_saving(state.into_primitive(), params.into_primitive(), shape);
        let lift = <Autodiff<B, C> as AutodiffBackend>::from_inner;
        (lift(y), lift(x))
    }

    fn block_layer_backward(
        blocks: FloatTensor<Self>,
        params: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        shape: BlockLayerShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (gz, gp) = B::block_layer_backward(
            blocks.into_primitive(),
            params.into_primitive(),
            grad_output.into_primitive(),
            shape,
        );
        let lift = <Autodiff<B, C> as AutodiffBackend>::from_inner;
        (lift(gz), lift(gp))
    }

    fn coupling_chain_backward(
        input: FloatTensor<Self>,
        params: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        shape: ChainShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (gx, gp) = B::coupling_chain_backward(
            input.into_primitive(),
            params.into_primitive(),
            grad_output.into_primitive(),
            shape,
        );
        let lift = <Autodiff<B, C> as AutodiffBackend>::from_inner;
        (lift(gx), lift(gp))
    }
}

/// [`super::HotPaths::periodic_conv2d`] on a device that has it.
pub fn periodic_conv2d(
    input: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    act: Activation,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as HotOps>::periodic_conv2d(
        input.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        act,
    ))
}

/// [`super::HotPaths::conditioning_conv2d`] on a device that has it.
pub fn conditioning_conv2d(
    state: Tensor<2>,
    mask: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    act: Activation,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as HotOps>::conditioning_conv2d(
        state.into_dispatch(),
        mask.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        act,
    ))
}

/// [`super::HotPaths::affine_update`] on a device that has it.
pub fn affine_update(
    state: Tensor<2>,
    subnet: Tensor<4>,
    mask: Tensor<4>,
    scale: Tensor<4>,
    direction: Direction,
) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as HotOps>::affine_update(
        state.into_dispatch(),
        subnet.into_dispatch(),
        mask.into_dispatch(),
        scale.into_dispatch(),
        direction,
    ))
}

/// [`super::HotPaths::coupling_chain`] on a device that has it.
pub fn coupling_chain(input: Tensor<3>, params: Tensor<1>, shape: ChainShape) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as HotOps>::coupling_chain(
        input.into_dispatch(),
        params.into_dispatch(),
        shape,
    ))
}

/// [`super::HotPaths::coupling_stack`] on a device that has it.
pub fn coupling_stack(
    state: Tensor<2>,
    params: Tensor<1>,
    masks: Tensor<4>,
    shape: StackShape,
    direction: Direction,
) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as HotOps>::coupling_stack(
        state.into_dispatch(),
        params.into_dispatch(),
        masks.into_dispatch(),
        shape,
        direction,
    ))
}

/// [`super::HotPaths::block_layer`] on a device that has it.
pub fn block_layer(state: Tensor<2>, params: Tensor<1>, shape: BlockLayerShape) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as HotOps>::block_layer(
        state.into_dispatch(),
        params.into_dispatch(),
        shape,
    ))
}

/// Whether `device` is a cubecl device (possibly with autodiff).
#[cfg(feature = "wgpu")]
pub fn is_cube(device: &burn::tensor::Device) -> bool {
    matches!(
        device.as_dispatch().clone().inner(),
        burn::backend::DispatchDevice::Cube(_)
    )
}
