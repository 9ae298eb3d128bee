//! Affine (RealNVP) and additive (NICE) coupling layers.
//!
//! With a mask `m` (1 = conditioning), `a = m ⊙ z` and `(ŝ, t) = net(a)`:
//!
//! ```text
//! s = (1 − m) ⊙ σ ⊙ tanh ŝ                     (bounded log-scale, σ learnable per channel)
//! x = m ⊙ z + (1 − m) ⊙ (z ⊙ e^{s} + t)        forward,  ln|det ∂x/∂z| = Σ s
//! z = m ⊙ x + (1 − m) ⊙ (x − t) ⊙ e^{−s}       inverse,  ln|det ∂z/∂x| = −Σ s
//! ```
//!
//! Additive coupling (NICE) fixes `s = 0`. The inverse recomputes `net(m ⊙ x)`, which equals
//! `net(m ⊙ z)` because the conditioning part passes unchanged. [`CouplingStack`] composes
//! couplings with alternating masks (the flat flow of the φ⁴ tutorial).
//!
//! On flex and on the cubecl backend (wgpu), an affine coupling runs on a *state*
//! `[batch, C·rows·cols + 1]`: each sample's field flattened, then its ln|det| so far. The
//! subnet's first layer reads `m ⊙ z` from the state
//! ([`kernels::HotPaths::conditioning_conv2d`]) and the update after the subnet (`tanh`, the
//! scale, `eˢ`, the shift, the log-det) is one operation with a hand-written backward pass
//! that adds its log-det to the state's ([`kernels::HotPaths::affine_update`]). A
//! [`CouplingStack`] packs the field into a state once, runs every coupling on it and
//! unpacks once, so no slicing, copying or log-det bookkeeping runs between couplings
//! (forward or backward: on a GPU, where each operation is a kernel launch, that is 7 of
//! the 20 launches a coupling's training step took). A [`CouplingStack`] keeps all its
//! couplings' weights, biases and scales as **one** flat parameter and runs as one
//! differentiable operation ([`kernels::HotPaths::coupling_stack`], decision 75): its
//! gradient is one tensor, written in place by the kernels, so the optimiser updates one
//! tensor, not seven per coupling. Elsewhere the couplings are composed from burn's
//! operations (the stack slicing its flat parameter).
//!
//! Shapes: `[batch, C, rows, cols]`; log-dets `[batch]`; states `[batch, C·rows·cols + 1]`.

use crate::block::FlatPieces;
use crate::kernels::{self, Direction};
use crate::mask::MaskKind;
use crate::subnet::{PeriodicCnn, PeriodicCnnConfig};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use nrg_core::Bijector;

/// Configuration of an [`AffineCoupling`].
#[derive(Config, Debug)]
pub struct AffineCouplingConfig {
    /// Field channels `C`.
    pub channels: usize,
    /// Lattice rows.
    pub rows: usize,
    /// Lattice columns.
    pub cols: usize,
    /// Hidden widths of the subnet.
    pub hidden: Vec<usize>,
    /// Kernel size of the subnet.
    #[config(default = 3)]
    pub kernel: usize,
    /// Additive (NICE) instead of affine coupling.
    #[config(default = false)]
    pub additive: bool,
    /// Zero-initialise the subnet's last layer (identity at initialisation).
    #[config(default = true)]
    pub zero_init: bool,
}

/// An affine or additive coupling layer.
#[derive(Module, Debug)]
pub struct AffineCoupling {
    net: PeriodicCnn,
    /// `m`, `[1, C, rows, cols]` (constant).
    mask: Tensor<4>,
    /// `σ`, `[1, C, 1, 1]`, initialised to 1.
    scale: Param<Tensor<4>>,
    additive: bool,
}

impl AffineCouplingConfig {
    /// Builds the layer with mask `mask` on `device`.
    pub fn init(&self, mask: MaskKind, device: &Device) -> AffineCoupling {
        let net = PeriodicCnnConfig::new(self.channels, self.hidden.clone())
            .with_kernel(self.kernel)
            .with_zero_init(self.zero_init)
            .init(device);
        AffineCoupling {
            net,
            mask: mask.tensor(self.channels, self.rows, self.cols, device),
            scale: Param::from_tensor(Tensor::ones([1, self.channels, 1, 1], device)),
            additive: self.additive,
        }
    }
}

/// The update of a coupling from burn's operations: `y` `[B, C, H, W]`, the subnet's output
/// `out` `[B, 2C, H, W]` (`ŝ`, then `t`), the mask `[1, C, H, W]` and the scales `σ`
/// `[1, C, 1, 1]` (unread when `additive`) → the updated field and its ln|det| `[B]` (the
/// formulas of the module docs).
fn composite_update(
    y: Tensor<4>,
    out: Tensor<4>,
    mask: Tensor<4>,
    scale: Tensor<4>,
    additive: bool,
    direction: Direction,
) -> (Tensor<4>, Tensor<1>) {
    let [b, c, _, _] = y.dims();
    let free = mask.neg().add_scalar(1.0);
    let t = out.clone().slice_dim(1, c..2 * c) * free.clone();
    if additive {
        let zero = Tensor::zeros([b], &y.device());
        return match direction {
            Direction::Forward => (y + t, zero),
            Direction::Inverse => (y - t, zero),
        };
    }
    let s = crate::activation::tanh(out.slice_dim(1, 0..c)) * scale * free;
    let ld = nrg_core::batch::sum_per_sample(s.clone());
    match direction {
        Direction::Forward => (y * s.exp() + t, ld),
        Direction::Inverse => ((y - t) * s.neg().exp(), ld.neg()),
    }
}

/// The state `[B, C·H·W + 1]` of a field `[B, C, H, W]` (see the module docs): the field
/// flattened per sample, then its ln|det| so far, 0.
pub fn pack_state(z: Tensor<4>) -> Tensor<2> {
    let [b, c, h, w] = z.dims();
    let device = z.device();
    Tensor::cat(
        vec![z.reshape([b, c * h * w]), Tensor::zeros([b, 1], &device)],
        1,
    )
}

/// The field `[B, C, H, W]` (`dims`) and the ln|det| `[B]` of a state `[B, C·H·W + 1]`
/// ([`pack_state`]'s inverse, the log-det accumulated on the way).
///
/// # Panics
/// If the state's width is not `C·H·W + 1`.
pub fn unpack_state(state: Tensor<2>, dims: [usize; 4]) -> (Tensor<4>, Tensor<1>) {
    let [b, c, h, w] = dims;
    let v = c * h * w;
    let x = state.clone().slice_dim(1, 0..v).reshape(dims);
    (x, state.slice_dim(1, v..v + 1).reshape([b]))
}

impl AffineCoupling {
    /// The coupling on a stack's state `[B, C·H·W + 1]` (see the module docs): the subnet
    /// on `m ⊙ z` read from the state, then the update, its ln|det| added to the state's.
    fn update_state(
        &self,
        hot: kernels::HotPaths,
        state: Tensor<2>,
        direction: Direction,
    ) -> Tensor<2> {
        let out = self
            .net
            .forward_state(hot, state.clone(), self.mask.clone());
        hot.affine_update(state, out, self.mask.clone(), self.scale.val(), direction)
    }

    /// The hot paths for this coupling's tensors, where it has them: affine, on flex or
    /// the cubecl backend.
    fn hot(&self) -> Option<kernels::HotPaths> {
        if self.additive {
            return None;
        }
        kernels::hot_paths(&self.mask.device())
    }

    /// The coupling through [`AffineCoupling::update_state`] (field packed into a state and
    /// back), where [`AffineCoupling::hot`] allows.
    fn fused(&self, y: Tensor<4>, direction: Direction) -> Option<(Tensor<4>, Tensor<1>)> {
        let hot = self.hot()?;
        let dims = y.dims();
        Some(unpack_state(
            self.update_state(hot, pack_state(y), direction),
            dims,
        ))
    }
}

impl Bijector for AffineCoupling {
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

impl AffineCoupling {
    /// The coupling from burn's operations (its subnet through [`PeriodicCnn::forward`]).
    fn composite(&self, y: Tensor<4>, direction: Direction) -> (Tensor<4>, Tensor<1>) {
        let out = self.net.forward(y.clone() * self.mask.clone());
        let scale = self.scale.val();
        composite_update(y, out, self.mask.clone(), scale, self.additive, direction)
    }

    /// The generative direction from burn's operations.
    fn composite_forward(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        self.composite(z, Direction::Forward)
    }

    /// The inverse direction from burn's operations.
    fn composite_inverse(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        self.composite(x, Direction::Inverse)
    }
}

/// A flat stack of couplings with alternating checkerboard masks (the φ⁴ tutorial's flow),
/// applied in order for `forward` and reversed for `inverse`. All its couplings' subnet
/// weights and biases and their scales `σ` are **one** parameter, in the layout of
/// [`kernels::StackShape`] (decision 75): on flex and the cubecl backend, for affine
/// couplings, the whole stack is one operation on a state ([`kernels::HotPaths::coupling_stack`]);
/// elsewhere (ndarray, additive couplings) the couplings are composed from burn's
/// operations on slices of it.
///
/// Shapes: `[batch, C, rows, cols]` in and out, log-dets `[batch]`.
#[derive(Module, Debug)]
pub struct CouplingStack {
    /// Per coupling: every convolution's weight `[cout, cin, k, k]` and bias `[cout]`, then
    /// `σ` `[C]` (initialised to 1).
    params: Param<Tensor<1>>,
    /// The mask planes `[2, C, rows, cols]` (constant): coupling `k` uses plane `k mod 2`
    /// (checkerboard parity `k mod 2`).
    masks: Tensor<4>,
    channels: usize,
    rows: usize,
    cols: usize,
    kernel: usize,
    /// CNN widths `C → h₁ → … → 2C`.
    widths: Vec<usize>,
    couplings: usize,
    additive: bool,
}

impl CouplingStack {
    /// `n` couplings with alternating checkerboard masks (the φ⁴ tutorial's flow). The
    /// parameters are drawn as [`AffineCouplingConfig::init`] draws them, coupling by
    /// coupling and in each subnet layer by layer, weight then bias, so a seeded stack
    /// starts from the numbers its couplings would have on their own when read in that
    /// order (burn draws a parameter when it is first read).
    pub fn checkerboard(config: &AffineCouplingConfig, n: usize, device: &Device) -> Self {
        let layers: Vec<AffineCoupling> = (0..n)
            .map(|k| config.init(MaskKind::Checkerboard { parity: k % 2 }, device))
            .collect();
        let c = config.channels;
        let mut flat = Vec::new();
        for layer in &layers {
            for i in 0..layer.net.depth() {
                let (w, b, _) = layer.net.layer(i);
                let len = w.dims().iter().product::<usize>();
                flat.extend([w.reshape([len]), b]);
            }
            flat.push(layer.scale.val().reshape([c]));
        }
        let params = if flat.is_empty() {
            Tensor::zeros([0], device)
        } else {
            Tensor::cat(flat, 0).detach()
        };
        let plane =
            |parity| MaskKind::Checkerboard { parity }.tensor(c, config.rows, config.cols, device);
        let mut widths = vec![c];
        widths.extend(&config.hidden);
        widths.push(2 * c);
        Self {
            params: Param::from_tensor(params),
            masks: Tensor::cat(vec![plane(0), plane(1)], 0),
            channels: c,
            rows: config.rows,
            cols: config.cols,
            kernel: config.kernel,
            widths,
            couplings: n,
            additive: config.additive,
        }
    }

    /// Number of couplings.
    pub fn len(&self) -> usize {
        self.couplings
    }

    /// Whether the stack is empty (the identity).
    pub fn is_empty(&self) -> bool {
        self.couplings == 0
    }

    /// The layout of the flat parameter.
    pub fn shape(&self) -> kernels::StackShape {
        kernels::StackShape {
            channels: self.channels,
            rows: self.rows,
            cols: self.cols,
            kernel: self.kernel,
            widths: self.widths.clone(),
            hidden: kernels::Activation::LeakyRelu(crate::subnet::LEAKY_SLOPE),
            couplings: self.couplings,
            masks: 2,
        }
    }

    /// The flat parameter and the lengths of the tensors it stores (per coupling every
    /// convolution's weight and bias, then `σ`): the units of gradient clipping, which
    /// clips each as the separate tensor it was before decision 75.
    pub fn flat_pieces(&self) -> FlatPieces {
        FlatPieces {
            id: self.params.id,
            lengths: self.shape().pieces(),
        }
    }

    /// The hot paths, for affine couplings on a device that has them (see the module docs).
    fn hot(&self) -> Option<kernels::HotPaths> {
        if self.additive {
            return None;
        }
        kernels::hot_paths(&self.masks.device())
    }

    /// The stack in `direction`: one operation on a state where [`CouplingStack::hot`]
    /// allows (and the batch is not empty), else [`CouplingStack::composite`] with the
    /// fastest convolution the device has.
    fn run(&self, z: Tensor<4>, direction: Direction) -> (Tensor<4>, Tensor<1>) {
        let dims = z.dims();
        if self.couplings == 0 {
            return (z, Tensor::zeros([dims[0]], &self.masks.device()));
        }
        match self.hot() {
            Some(hot) if dims[0] > 0 => {
                let state = hot.coupling_stack(
                    pack_state(z),
                    self.params.val(),
                    self.masks.clone(),
                    self.shape(),
                    direction,
                );
                unpack_state(state, dims)
            }
            _ => self.composite(z, direction, kernels::periodic_conv2d),
        }
    }

    /// The couplings from burn's operations on slices of the flat parameter, each
    /// convolution by `conv(h, weight, bias, act)`.
    fn composite(
        &self,
        z: Tensor<4>,
        direction: Direction,
        conv: fn(Tensor<4>, Tensor<4>, Tensor<1>, kernels::Activation) -> Tensor<4>,
    ) -> (Tensor<4>, Tensor<1>) {
        let shape = self.shape();
        let p = self.params.val();
        let c = self.channels;
        let mut logdet = Tensor::zeros([z.dims()[0]], &z.device());
        let mut x = z;
        let order: Vec<usize> = match direction {
            Direction::Forward => (0..self.couplings).collect(),
            Direction::Inverse => (0..self.couplings).rev().collect(),
        };
        for k in order {
            let plane = k % 2;
            let mask = self.masks.clone().slice_dim(0, plane..plane + 1);
            let mut h = x.clone() * mask.clone();
            for layer in shape.convs(k) {
                let (o, i, kk) = (layer.cout, layer.cin, layer.kernel);
                let w = p
                    .clone()
                    .slice(layer.weight..layer.weight + o * i * kk * kk);
                let b = p.clone().slice(layer.bias..layer.bias + o);
                h = conv(h, w.reshape([o, i, kk, kk]), b, layer.act);
            }
            let sigma = shape.affine(k, direction).sigma;
            let scale = p.clone().slice(sigma..sigma + c).reshape([1, c, 1, 1]);
            let (y, ld) = composite_update(x, h, mask, scale, self.additive, direction);
            (x, logdet) = (y, logdet + ld);
        }
        (x, logdet)
    }
}

impl Bijector for CouplingStack {
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
    use crate::test_util::{GradsOf, magnitude, max_diff};
    use burn::tensor::{Distribution, Gradients};

    /// The fused update equals the composite one on the flex autodiff device, both
    /// directions, one and two channels: values and log-dets (1e-5), the gradients of the
    /// input and of every parameter (1e-4 of the largest, sums over the batch).
    #[test]
    fn fused_update_equals_composite_with_gradients() {
        let _rng = crate::test_util::rng_lock();
        let flex = Device::flex().autodiff();
        update_equals_composite(&flex, &flex);
    }

    /// The same for the CubeCL affine-update kernels on the wgpu device (its subnet through
    /// the CubeCL convolutions), against the composite update on flex with the same
    /// parameters and inputs (see `block`'s chain test for why the reference is on flex);
    /// then a whole stack as one operation ([`stack_equals_composite`]).
    #[cfg(feature = "wgpu")]
    #[test]
    fn cube_affine_equals_composite_with_gradients() {
        let _rng = crate::test_util::rng_lock();
        let plain = crate::test_util::wgpu_device();
        let dev = plain.clone().autodiff();
        assert!(kernels::hot_paths(&dev).is_some(), "wgpu has the hot paths");
        update_equals_composite(&dev, &Device::flex().autodiff());
        stack_equals_composite([&dev, &plain], &Device::flex().autodiff());
    }

    /// A stack as one operation on its flat parameter equals its couplings composed from
    /// burn's operations on slices of it, on flex: values, log-dets and gradients (the
    /// tolerances of [`fused_update_equals_composite_with_gradients`], three couplings
    /// deep), with and without autodiff.
    #[test]
    fn fused_stack_equals_composite_with_gradients() {
        let _rng = crate::test_util::rng_lock();
        let flex = Device::flex();
        stack_equals_composite(
            [&flex.clone().autodiff(), &flex],
            &Device::flex().autodiff(),
        );
    }

    /// The flat stack draws its parameters as its couplings would on their own: seeded the
    /// same, it maps a field as the [`AffineCoupling`]s composed one by one (1e-6: the same
    /// operations on the same numbers, up to the order of sums), and its pieces are those
    /// couplings' parameter tensors.
    #[test]
    fn flat_stack_is_its_couplings() {
        let _rng = crate::test_util::rng_lock();
        let dev = Device::flex().autodiff();
        let config = AffineCouplingConfig::new(2, 4, 6, vec![3]).with_zero_init(false);
        dev.seed(21);
        let stack = CouplingStack::checkerboard(&config, 3, &dev);
        dev.seed(21);
        let layers: Vec<AffineCoupling> = (0..3)
            .map(|k| config.init(MaskKind::Checkerboard { parity: k % 2 }, &dev))
            .collect();
        // burn draws a parameter when it is first read: read the couplings' in the order
        // the stack reads them (layer by layer, weight then bias) before drawing the input
        for layer in &layers {
            for i in 0..layer.net.depth() {
                let _ = layer.net.layer(i);
            }
        }
        let x = Tensor::<4>::random([5, 2, 4, 6], Distribution::Normal(0.0, 1.0), &dev);
        let conv = kernels::periodic_conv2d_reference;
        let (y1, l1) = stack.composite(x.clone(), Direction::Forward, conv);
        let (mut y2, mut l2) = (x, Tensor::<1>::zeros([5], &dev));
        for layer in &layers {
            let (y, l) = layer.composite_forward(y2);
            (y2, l2) = (y, l2 + l);
        }
        let v = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
        let (y1, y2) = (v(y1), v(y2));
        let d = max_diff(&y1, &y2);
        assert!(d < 1e-6 * magnitude(&y2), "values differ by {d}");
        let v1 = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
        let (l1, l2) = (v1(l1), v1(l2));
        let d = max_diff(&l1, &l2);
        assert!(d < 1e-6 * magnitude(&l2), "log-dets differ by {d}");
        let mut lengths = Vec::new();
        for layer in &layers {
            let mut n = ParamLengths(vec![]);
            layer.visit(&mut n);
            lengths.extend(n.0);
        }
        let pieces = stack.flat_pieces();
        assert_eq!(
            pieces.lengths.len(),
            3 * 5,
            "per coupling two weights, two biases, σ"
        );
        assert_eq!(
            pieces.lengths.iter().sum::<usize>(),
            stack.params.val().dims()[0]
        );
        let mut sorted = pieces.lengths.clone();
        sorted.sort_unstable();
        lengths.sort_unstable();
        assert_eq!(sorted, lengths, "the pieces are the couplings' tensors");
    }

    /// The lengths of a module's parameter tensors.
    struct ParamLengths(Vec<usize>);

    impl burn::module::ModuleVisitor for ParamLengths {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().dims().iter().product());
        }
    }

    /// `count` parameters, each one's gradient in `grads[0]` (of `module`) within 1e-4 of
    /// the largest of `reference`'s in `grads[1]`.
    fn param_grads_close<M: Module>(
        module: &M,
        reference: &M,
        grads: [&Gradients; 2],
        count: usize,
        what: &str,
    ) {
        let (mut p1, mut p2) = (GradsOf(grads[0], vec![]), GradsOf(grads[1], vec![]));
        module.visit(&mut p1);
        reference.visit(&mut p2);
        assert_eq!(p1.1.len(), count, "{what}: parameters");
        for (k, (a, b)) in p1.1.iter().zip(&p2.1).enumerate() {
            assert!(max_diff(a, b) < 1e-4 * magnitude(b), "{what}: param {k}");
        }
    }

    /// [`CouplingStack`] on `devs[0]` (autodiff: one operation through three couplings,
    /// both directions) and on `devs[1]` (the same device without autodiff: values only)
    /// against its couplings composed on `reference` from burn's operations, the flat
    /// parameter drawn at random there; 300 samples (more than a cube of the CubeCL kernels
    /// holds); one and two channels with two hidden layers of 3 × 3 kernels, and two
    /// channels with a single 1 × 1 layer. The flat gradient is compared piece by piece
    /// (each weight, bias and `σ` to 1e-4 of its own largest), so a small wrong piece fails.
    fn stack_equals_composite(devs: [&Device; 2], reference: &Device) {
        reference.seed(11);
        for (c, hidden, kernel) in [(1, vec![3, 2], 3), (2, vec![3, 2], 3), (2, vec![], 1)] {
            let config = AffineCouplingConfig::new(c, 4, 4, hidden).with_kernel(kernel);
            let mut stack_ref = CouplingStack::checkerboard(&config, 3, reference);
            let len = stack_ref.params.val().dims()[0];
            stack_ref.params = Param::from_tensor(Tensor::random(
                [len],
                Distribution::Uniform(-0.6, 0.6),
                reference,
            ));
            let stack = stack_ref.clone().fork(devs[0]);
            let plain = stack_ref.clone().fork(devs[1]);
            assert!(stack.hot().is_some(), "the stack runs as one operation");
            let normal = Distribution::Normal(0.0, 1.0);
            let x_ref = Tensor::<4>::random([300, c, 4, 4], normal, reference).require_grad();
            let cy = Tensor::<4>::random([300, c, 4, 4], normal, reference);
            let cl = Tensor::<1>::random([300], normal, reference);
            let on4 = |t: &Tensor<4>, d: &Device| Tensor::<4>::from_data(t.to_data(), d);
            let x = on4(&x_ref, devs[0]).require_grad();
            let (cy1, cl1) = (
                on4(&cy, devs[0]),
                Tensor::<1>::from_data(cl.to_data(), devs[0]),
            );
            let v4 = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
            let v1 = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
            for direction in [Direction::Forward, Direction::Inverse] {
                let what = format!("C={c} k={kernel} {direction:?}");
                let (y1, l1) = stack.run(x.clone(), direction);
                let conv = kernels::periodic_conv2d_reference;
                let (y2, l2) = stack_ref.composite(x_ref.clone(), direction, conv);
                let close = |a: &[f32], b: &[f32], part: &str| {
                    let d = max_diff(a, b);
                    assert!(d < 1e-5 * magnitude(b), "{what}: {part} differ by {d}");
                };
                close(&v4(y1.clone()), &v4(y2.clone()), "values");
                close(&v1(l1.clone()), &v1(l2.clone()), "log-dets");
                let (y3, l3) = plain.run(on4(&x_ref, devs[1]), direction);
                close(&v4(y3), &v4(y2.clone()), "untracked values");
                close(&v1(l3), &v1(l2.clone()), "untracked log-dets");
                let g1 = ((y1 * cy1.clone()).sum() + (l1 * cl1.clone()).sum()).backward();
                let g2 = ((y2 * cy.clone()).sum() + (l2 * cl.clone()).sum()).backward();
                let (gx1, gx2) = (v4(x.grad(&g1).unwrap()), v4(x_ref.grad(&g2).unwrap()));
                assert!(max_diff(&gx1, &gx2) < 1e-4 * magnitude(&gx2), "{what}: dx");
                param_grads_close(&stack, &stack_ref, [&g1, &g2], 1, &what);
                let (mut p1, mut p2) = (GradsOf(&g1, vec![]), GradsOf(&g2, vec![]));
                stack.visit(&mut p1);
                stack_ref.visit(&mut p2);
                let mut at = 0;
                for (k, n) in stack.shape().pieces().into_iter().enumerate() {
                    let (a, b) = (&p1.1[0][at..at + n], &p2.1[0][at..at + n]);
                    let d = max_diff(a, b);
                    assert!(d < 1e-4 * magnitude(b), "{what}: piece {k} differs by {d}");
                    at += n;
                }
                assert_eq!(at, p1.1[0].len(), "{what}: the pieces tile the gradient");
            }
        }
    }

    /// The update on `dev` ([`AffineCoupling::fused`]) against the composite update on
    /// `reference`, parameters and inputs drawn there and copied to `dev`; 300 samples,
    /// more than one cube of the CubeCL kernels holds (sums over samples and sites cross
    /// cubes and threads).
    fn update_equals_composite(dev: &Device, reference: &Device) {
        reference.seed(8);
        for (c, mask) in [
            (1, MaskKind::Checkerboard { parity: 1 }),
            (2, MaskKind::ChannelSplit { first: false }),
        ] {
            let mut layer_ref = AffineCouplingConfig::new(c, 4, 8, vec![4])
                .with_zero_init(false)
                .init(mask, reference);
            layer_ref.scale = Param::from_tensor(Tensor::random(
                [1, c, 1, 1],
                Distribution::Uniform(0.5, 1.5),
                reference,
            ));
            let layer = layer_ref.clone().fork(dev);
            let normal = Distribution::Normal(0.0, 1.0);
            let x_ref = Tensor::<4>::random([300, c, 4, 8], normal, reference).require_grad();
            let cy = Tensor::<4>::random([300, c, 4, 8], normal, reference);
            let cl = Tensor::<1>::random([300], normal, reference);
            let x = Tensor::<4>::from_data(x_ref.to_data(), dev).require_grad();
            let (cy1, cl1) = (
                Tensor::<4>::from_data(cy.to_data(), dev),
                Tensor::<1>::from_data(cl.to_data(), dev),
            );
            for inverse in [false, true] {
                let direction = if inverse {
                    Direction::Inverse
                } else {
                    Direction::Forward
                };
                let fused = layer.fused(x.clone(), direction);
                assert_eq!(fused.is_some(), kernels::hot_paths(dev).is_some());
                let Some((y1, l1)) = fused else {
                    return;
                };
                let (y2, l2) = if inverse {
                    layer_ref.composite_inverse(x_ref.clone())
                } else {
                    layer_ref.composite_forward(x_ref.clone())
                };
                let v4 = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
                let v1 = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
                assert!(max_diff(&v4(y1.clone()), &v4(y2.clone())) < 1e-5, "values");
                assert!(
                    max_diff(&v1(l1.clone()), &v1(l2.clone())) < 1e-5,
                    "log-dets"
                );
                let g1 = ((y1 * cy1.clone()).sum() + (l1 * cl1.clone()).sum()).backward();
                let g2 = ((y2 * cy.clone()).sum() + (l2 * cl.clone()).sum()).backward();
                let gx = |x: &Tensor<4>, g: &Gradients| v4(x.grad(g).unwrap());
                assert!(
                    max_diff(&gx(&x, &g1), &gx(&x_ref, &g2)) < 1e-4,
                    "C={c} inverse {inverse}: dx"
                );
                // two conv layers (weight, bias) and the scale
                let what = format!("C={c} inverse {inverse}");
                param_grads_close(&layer, &layer_ref, [&g1, &g2], 5, &what);
            }
        }
    }
}
