//! The flex-only fused kernels as a burn backend extension (the twin dense layer, the twin
//! MLP, the circulant; the hot paths — convolution, coupling chain, affine update — are in
//! `hot`): implemented on the flex backend by the `nrg-kernels` routines (natively
//! dispatched SIMD, [`Exec::native`]), and on `Autodiff<flex>` with hand-written backward
//! steps that call the same routines.

use super::{ChainShape, CirculantShape, MlpShape};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, DispatchDevice, Flex, TensorMetadata,
    backend_extension,
};
use burn::tensor::{DType, Device, Tensor, TensorData};
use nrg_kernels::{
    Activation, AffineGeometry, ChainGeometry, CirculantGeometry, ConvGeometry, DenseGeometry,
    Direction, Exec, MlpGeometry,
};

/// Operations with a fused implementation. The backward entries compute the gradients of
/// the forward entries from saved inputs and outputs; they are not differentiable themselves.
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// See [`super::twin_dense`].
    fn twin_dense(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        act: Activation,
    ) -> FloatTensor<Self>;

    /// `(∂L/∂input, ∂L/∂weight, ∂L/∂bias)` of [`FusedOps::twin_dense`].
    fn twin_dense_backward(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        act: Activation,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// See [`super::Fused::twin_mlp`].
    fn twin_mlp(
        input: FloatTensor<Self>,
        params: FloatTensor<Self>,
        shape: MlpShape,
    ) -> FloatTensor<Self>;

    /// `(∂L/∂input, ∂L/∂params)` of [`FusedOps::twin_mlp`].
    fn twin_mlp_backward(
        input: FloatTensor<Self>,
        params: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        shape: MlpShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// See [`super::Fused::circulant`].
    fn circulant(
        field: FloatTensor<Self>,
        kernel: FloatTensor<Self>,
        shape: CirculantShape,
    ) -> FloatTensor<Self>;

    /// `(∂L/∂field, ∂L/∂kernel)` of [`FusedOps::circulant`].
    fn circulant_backward(
        field: FloatTensor<Self>,
        kernel: FloatTensor<Self>,
        output: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        shape: CirculantShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// Whether `device` is flex (possibly with autodiff).
pub fn is_flex(device: &Device) -> bool {
    matches!(
        device.as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    )
}

/// A contiguous f32 copy-free view (a copy only when the tensor is strided or not f32).
pub(super) fn host(t: FloatTensor<Flex>) -> FlexTensor {
    let t = if t.dtype() == DType::F32 {
        t
    } else {
        <Flex as burn::backend::ops::FloatTensorOps<Flex>>::float_cast(
            t,
            burn::tensor::FloatDType::F32,
        )
    };
    t.to_contiguous()
}

pub(super) fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 tensor")
}

pub(super) fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

pub(super) fn conv_geometry(input: &FlexTensor, weight: &FlexTensor) -> ConvGeometry {
    let (x, w) = (input.shape(), weight.shape());
    assert_eq!(
        x.num_dims(),
        4,
        "periodic_conv2d: input must be [B, C, H, W]"
    );
    assert_eq!(
        w.num_dims(),
        4,
        "periodic_conv2d: weight must be [cout, cin, k, k]"
    );
    assert_eq!(
        x[1], w[1],
        "periodic_conv2d: input channels differ from the weight's"
    );
    assert!(
        w[2] == w[3] && w[2] % 2 == 1,
        "periodic_conv2d: kernel must be odd and square"
    );
    ConvGeometry {
        batch: x[0],
        cin: x[1],
        cout: w[0],
        rows: x[2],
        cols: x[3],
        kernel: w[2],
    }
}

fn circulant_geometry(field: &FlexTensor, kernel: &FlexTensor) -> CirculantGeometry {
    let (x, k) = (field.shape(), kernel.shape());
    assert_eq!(x.num_dims(), 4, "circulant: field must be [B, C, R, W]");
    assert!(
        k.num_dims() == 2 && k[0] == x[1] && k[1] == x[2] * x[3],
        "circulant: kernel must be [C, R·W]"
    );
    CirculantGeometry {
        batch: x[0],
        channels: x[1],
        rows: x[2],
        cols: x[3],
    }
}

fn dense_geometry(input: &FlexTensor, weight: &FlexTensor) -> DenseGeometry {
    let (x, w) = (input.shape(), weight.shape());
    assert_eq!(x.num_dims(), 3, "twin_dense: input must be [G, in, N]");
    assert_eq!(w.num_dims(), 3, "twin_dense: weight must be [T, in, out]");
    assert!(
        x[0] == 1 || x[0] == w[0],
        "twin_dense: input groups must be 1 or T"
    );
    assert_eq!(
        x[1], w[1],
        "twin_dense: input width differs from the weight's"
    );
    DenseGeometry {
        groups_in: x[0],
        twins: w[0],
        rows: x[2],
        input: x[1],
        output: w[2],
    }
}

fn mlp_geometry(input: &FlexTensor, shape: &MlpShape) -> MlpGeometry {
    let x = input.shape();
    assert_eq!(x.num_dims(), 3, "twin_mlp: input must be [G, in, N]");
    assert!(
        x[0] == 1 || x[0] == shape.twins,
        "twin_mlp: input groups must be 1 or T"
    );
    assert_eq!(x[1], shape.widths[0], "twin_mlp: input width differs");
    MlpGeometry {
        groups_in: x[0],
        twins: shape.twins,
        rows: x[2],
        widths: shape.widths.clone(),
        hidden: shape.hidden,
    }
}

pub(super) fn chain_geometry(input: &FlexTensor, shape: &ChainShape) -> ChainGeometry {
    let x = input.shape();
    assert_eq!(x.num_dims(), 3, "coupling_chain: input must be [2, h, N]");
    assert_eq!(x[0], 2, "coupling_chain: input must be [2, h, N]");
    assert_eq!(x[1], shape.widths[0], "coupling_chain: half width differs");
    chain_geometry_of(shape, x[2])
}

/// The geometry of a coupling chain on `columns` columns.
pub(super) fn chain_geometry_of(shape: &ChainShape, columns: usize) -> ChainGeometry {
    ChainGeometry {
        mlp: MlpGeometry {
            groups_in: 1,
            twins: 2,
            rows: columns,
            widths: shape.widths.clone(),
            hidden: shape.hidden,
        },
        couplings: shape.couplings,
        direction: shape.direction,
    }
}

/// The geometry of an affine update of the state `[B, C·H·W + 1]` under the mask
/// `[1, C, H, W]`.
pub(super) fn affine_geometry(
    state: &FlexTensor,
    mask: &FlexTensor,
    direction: Direction,
) -> AffineGeometry {
    let (z, m) = (state.shape(), mask.shape());
    assert!(
        m.num_dims() == 4 && m[0] == 1,
        "affine_update: mask must be [1, C, H, W]"
    );
    let sites = m[2] * m[3];
    assert!(
        z.num_dims() == 2 && z[1] == m[1] * sites + 1,
        "affine_update: state must be [B, C·H·W + 1]"
    );
    AffineGeometry {
        batch: z[0],
        channels: m[1],
        sites,
        direction,
    }
}

impl FusedOps for Flex {
    fn circulant(field: FlexTensor, kernel: FlexTensor, shape: CirculantShape) -> FlexTensor {
        let (x, k) = (host(field), host(kernel));
        let g = circulant_geometry(&x, &k);
        let y = nrg_kernels::circulant_forward(&g, slice(&x), slice(&k), shape.inverse);
        tensor(y, vec![g.batch, g.channels, g.rows, g.cols])
    }

    fn circulant_backward(
        field: FlexTensor,
        kernel: FlexTensor,
        output: FlexTensor,
        grad_output: FlexTensor,
        shape: CirculantShape,
    ) -> (FlexTensor, FlexTensor) {
        let (x, k, y, gy) = (host(field), host(kernel), host(output), host(grad_output));
        let g = circulant_geometry(&x, &k);
        let (gx, gk) = nrg_kernels::circulant_backward(
            &g,
            slice(&x),
            slice(&y),
            slice(&k),
            slice(&gy),
            shape.inverse,
        );
        (
            tensor(gx, vec![g.batch, g.channels, g.rows, g.cols]),
            tensor(gk, vec![g.channels, g.rows * g.cols]),
        )
    }

    fn twin_mlp(input: FlexTensor, params: FlexTensor, shape: MlpShape) -> FlexTensor {
        let (x, p) = (host(input), host(params));
        let g = mlp_geometry(&x, &shape);
        let y = nrg_kernels::mlp_forward(Exec::native(), &g, slice(&x), slice(&p));
        tensor(y, vec![g.twins, g.output_width(), g.rows])
    }

    fn twin_mlp_backward(
        input: FlexTensor,
        params: FlexTensor,
        grad_output: FlexTensor,
        shape: MlpShape,
    ) -> (FlexTensor, FlexTensor) {
        let (x, p, gy) = (host(input), host(params), host(grad_output));
        let g = mlp_geometry(&x, &shape);
        let (gx, gp) =
            nrg_kernels::mlp_backward(Exec::native(), &g, slice(&x), slice(&p), slice(&gy));
        let len = gp.len();
        (
            tensor(gx, vec![g.groups_in, g.widths[0], g.rows]),
            tensor(gp, vec![len]),
        )
    }

    fn twin_dense(
        input: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        act: Activation,
    ) -> FlexTensor {
        let (x, w, b) = (host(input), host(weight), host(bias));
        let g = dense_geometry(&x, &w);
        let y =
            nrg_kernels::dense_forward(Exec::native(), &g, slice(&x), slice(&w), slice(&b), act);
        tensor(y, vec![g.twins, g.output, g.rows])
    }

    fn twin_dense_backward(
        input: FlexTensor,
        weight: FlexTensor,
        output: FlexTensor,
        grad_output: FlexTensor,
        act: Activation,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (x, w, y, gy) = (host(input), host(weight), host(output), host(grad_output));
        let g = dense_geometry(&x, &w);
        let (gx, gw, gb) = nrg_kernels::dense_backward(
            Exec::native(),
            &g,
            slice(&x),
            slice(&w),
            slice(&y),
            slice(&gy),
            act,
        );
        (
            tensor(gx, vec![g.groups_in, g.input, g.rows]),
            tensor(gw, vec![g.twins, g.input, g.output]),
            tensor(gb, vec![g.twins, 1, g.output]),
        )
    }
}

/// Backward step of the fused twin dense layer: the saved input, weight and output.
#[derive(Debug)]
struct DenseBackward;

impl<B: Backend + FusedOps> Backward<B, 3> for DenseBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, Activation);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, w, y, act) = ops.state;
        let (gx, gw, gb) = B::twin_dense_backward(x, w, y, grad, act);
        for (node, g) in [(node_x, gx), (node_w, gw), (node_b, gb)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// Backward step of the fused MLP: the saved input and parameters (the hidden
/// activations are recomputed).
#[derive(Debug)]
struct MlpBackward;

impl<B: Backend + FusedOps> Backward<B, 2> for MlpBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, MlpShape);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_p] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, p, shape) = ops.state;
        let (gx, gp) = B::twin_mlp_backward(x, p, grad, shape);
        for (node, g) in [(node_x, gx), (node_p, gp)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// Backward step of the FFT circulant convolution: the saved field, kernel and output.
#[derive(Debug)]
struct CirculantBackward;

impl<B: Backend + FusedOps> Backward<B, 2> for CirculantBackward {
    type State = ([FloatTensor<B>; 3], CirculantShape);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_k] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let ([x, k, y], shape) = ops.state;
        let (gx, gk) = B::circulant_backward(x, k, y, grad, shape);
        for (node, g) in [(node_x, gx), (node_k, gk)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: Backend + FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn twin_dense(
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
        match DenseBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::twin_dense(x.clone(), w.clone(), b, act);
                prep.finish((x, w, y.clone(), act), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::twin_dense(x, w, b, act)),
        }
    }

    fn twin_dense_backward(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        act: Activation,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (gx, gw, gb) = B::twin_dense_backward(
            input.into_primitive(),
            weight.into_primitive(),
            output.into_primitive(),
            grad_output.into_primitive(),
            act,
        );
        let lift = <Autodiff<B, C> as AutodiffBackend>::from_inner;
        (lift(gx), lift(gw), lift(gb))
    }

    fn twin_mlp(
        input: FloatTensor<Self>,
        params: FloatTensor<Self>,
        shape: MlpShape,
    ) -> FloatTensor<Self> {
        let guards = [input.node(), params.node()];
        let (x, p) = (input.into_primitive(), params.into_primitive());
        match MlpBackward.prepare::<C>(guards).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::twin_mlp(x.clone(), p.clone(), shape.clone());
                prep.finish((x, p, shape), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::twin_mlp(x, p, shape)),
        }
    }

    fn circulant(
        field: FloatTensor<Self>,
        kernel: FloatTensor<Self>,
        shape: CirculantShape,
    ) -> FloatTensor<Self> {
        let guards = [field.node(), kernel.node()];
        let (x, k) = (field.into_primitive(), kernel.into_primitive());
        match CirculantBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::circulant(x.clone(), k.clone(), shape);
                prep.finish(([x, k, y.clone()], shape), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::circulant(x, k, shape)),
        }
    }

    fn circulant_backward(
        field: FloatTensor<Self>,
        kernel: FloatTensor<Self>,
        output: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        shape: CirculantShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (gx, gk) = B::circulant_backward(
            field.into_primitive(),
            kernel.into_primitive(),
            output.into_primitive(),
            grad_output.into_primitive(),
            shape,
        );
        let lift = <Autodiff<B, C> as AutodiffBackend>::from_inner;
        (lift(gx), lift(gk))
    }

    fn twin_mlp_backward(
        input: FloatTensor<Self>,
        params: FloatTensor<Self>,
        grad_output: FloatTensor<Self>,
        shape: MlpShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (gx, gp) = B::twin_mlp_backward(
            input.into_primitive(),
            params.into_primitive(),
            grad_output.into_primitive(),
            shape,
        );
        let lift = <Autodiff<B, C> as AutodiffBackend>::from_inner;
        (lift(gx), lift(gp))
    }
}

/// [`super::twin_dense`] on a flex device.
pub fn twin_dense(
    input: Tensor<3>,
    weight: Tensor<3>,
    bias: Tensor<3>,
    act: Activation,
) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::twin_dense(
        input.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        act,
    ))
}

/// [`super::Fused::twin_mlp`] on a flex device.
pub fn twin_mlp(input: Tensor<3>, params: Tensor<1>, shape: MlpShape) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::twin_mlp(
        input.into_dispatch(),
        params.into_dispatch(),
        shape,
    ))
}

/// [`super::Fused::circulant`] on a flex device.
pub fn circulant(field: Tensor<4>, kernel: Tensor<2>, shape: CirculantShape) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::circulant(
        field.into_dispatch(),
        kernel.into_dispatch(),
        shape,
    ))
}
