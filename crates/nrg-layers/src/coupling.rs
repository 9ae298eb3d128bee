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
//! the 20 launches a coupling's training step took). Elsewhere the couplings are composed
//! from burn's operations.
//!
//! Shapes: `[batch, C, rows, cols]`; log-dets `[batch]`; states `[batch, C·rows·cols + 1]`.

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

impl AffineCoupling {
    /// `(s, t)` on the updated variables, from the conditioning variables `m ⊙ y`.
    fn scale_shift(&self, conditioning: Tensor<4>) -> (Option<Tensor<4>>, Tensor<4>) {
        let c = self.mask.dims()[1];
        let out = self.net.forward(conditioning);
        let free = self.mask.clone().neg().add_scalar(1.0);
        let t = out.clone().slice_dim(1, c..2 * c) * free.clone();
        if self.additive {
            return (None, t);
        }
        let s = crate::activation::tanh(out.slice_dim(1, 0..c)) * self.scale.val() * free;
        (Some(s), t)
    }

    fn sum_per_sample(s: Tensor<4>) -> Tensor<1> {
        let b = s.dims()[0];
        s.sum_dims(&[1, 2, 3]).reshape([b])
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
    /// The generative direction from burn's operations.
    fn composite_forward(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let b = z.dims()[0];
        let (s, t) = self.scale_shift(z.clone() * self.mask.clone());
        match s {
            Some(s) => {
                let x = z * s.clone().exp() + t;
                (x, Self::sum_per_sample(s))
            }
            None => {
                let device = z.device();
                (z + t, Tensor::zeros([b], &device))
            }
        }
    }

    /// The inverse direction from burn's operations.
    fn composite_inverse(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let b = x.dims()[0];
        let (s, t) = self.scale_shift(x.clone() * self.mask.clone());
        match s {
            Some(s) => {
                let z = (x - t) * s.clone().neg().exp();
                (z, Self::sum_per_sample(s).neg())
            }
            None => {
                let device = x.device();
                (x - t, Tensor::zeros([b], &device))
            }
        }
    }
}

/// A flat stack of couplings, applied in order for `forward` and reversed for `inverse`.
#[derive(Module, Debug)]
pub struct CouplingStack {
    layers: Vec<AffineCoupling>,
}

impl CouplingStack {
    /// `n` couplings with alternating checkerboard masks (the φ⁴ tutorial's flow).
    pub fn checkerboard(config: &AffineCouplingConfig, n: usize, device: &Device) -> Self {
        let layers = (0..n)
            .map(|k| config.init(MaskKind::Checkerboard { parity: k % 2 }, device))
            .collect();
        Self { layers }
    }

    /// Number of couplings.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the stack is empty (the identity).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl CouplingStack {
    /// The hot paths, where every coupling has them (see the module docs).
    fn hot(&self) -> Option<kernels::HotPaths> {
        if self.layers.iter().any(|l| l.additive) {
            return None;
        }
        self.layers.first()?.hot()
    }

    /// The couplings in `order` on one state (packed once, unpacked once).
    fn fused<'a>(
        &'a self,
        hot: kernels::HotPaths,
        z: Tensor<4>,
        order: impl Iterator<Item = &'a AffineCoupling>,
        direction: Direction,
    ) -> (Tensor<4>, Tensor<1>) {
        let dims = z.dims();
        let mut state = pack_state(z);
        for layer in order {
            state = layer.update_state(hot, state, direction);
        }
        unpack_state(state, dims)
    }

    /// The couplings in `order`, each on its own (the composite path, or the identity).
    fn layered<'a>(
        z: Tensor<4>,
        order: impl Iterator<Item = &'a AffineCoupling>,
        direction: Direction,
    ) -> (Tensor<4>, Tensor<1>) {
        let b = z.dims()[0];
        let mut logdet = Tensor::zeros([b], &z.device());
        let mut x = z;
        for layer in order {
            let (y, ld) = match direction {
                Direction::Forward => layer.forward(x),
                Direction::Inverse => layer.inverse(x),
            };
            x = y;
            logdet = logdet + ld;
        }
        (x, logdet)
    }
}

impl Bijector for CouplingStack {
    fn forward(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let order = self.layers.iter();
        match self.hot() {
            Some(hot) => self.fused(hot, z, order, Direction::Forward),
            None => Self::layered(z, order, Direction::Forward),
        }
    }

    fn inverse(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let order = self.layers.iter().rev();
        match self.hot() {
            Some(hot) => self.fused(hot, x, order, Direction::Inverse),
            None => Self::layered(x, order, Direction::Inverse),
        }
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
    /// then a stack of three couplings on one state ([`stack_equals_composite`]).
    #[cfg(feature = "wgpu")]
    #[test]
    fn cube_affine_equals_composite_with_gradients() {
        let _rng = crate::test_util::rng_lock();
        let dev = crate::test_util::wgpu_device().autodiff();
        assert!(kernels::hot_paths(&dev).is_some(), "wgpu has the hot paths");
        update_equals_composite(&dev, &Device::flex().autodiff());
        stack_equals_composite(&dev, &Device::flex().autodiff());
    }

    /// A stack of couplings on one state equals the couplings composed one by one from
    /// burn's operations, on flex: values, log-dets and gradients (the tolerances of
    /// [`fused_update_equals_composite_with_gradients`], three couplings deep).
    #[test]
    fn fused_stack_equals_composite_with_gradients() {
        let _rng = crate::test_util::rng_lock();
        let flex = Device::flex().autodiff();
        stack_equals_composite(&flex, &flex);
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

    /// [`CouplingStack`] on `dev` (one state through three couplings, both directions)
    /// against the composite couplings composed on `reference`.
    fn stack_equals_composite(dev: &Device, reference: &Device) {
        reference.seed(11);
        let config = AffineCouplingConfig::new(1, 4, 4, vec![3, 2]).with_zero_init(false);
        let mut stack_ref = CouplingStack::checkerboard(&config, 3, reference);
        for layer in &mut stack_ref.layers {
            layer.scale = Param::from_tensor(Tensor::random(
                [1, 1, 1, 1],
                Distribution::Uniform(0.5, 1.5),
                reference,
            ));
        }
        let stack = stack_ref.clone().fork(dev);
        assert!(stack.hot().is_some(), "the stack runs on one state");
        let normal = Distribution::Normal(0.0, 1.0);
        let x_ref = Tensor::<4>::random([9, 1, 4, 4], normal, reference).require_grad();
        let cy = Tensor::<4>::random([9, 1, 4, 4], normal, reference);
        let cl = Tensor::<1>::random([9], normal, reference);
        let on4 = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), dev);
        let x = on4(&x_ref).require_grad();
        let (cy1, cl1) = (on4(&cy), Tensor::<1>::from_data(cl.to_data(), dev));
        let v4 = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
        let v1 = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
        for inverse in [false, true] {
            let (y1, l1) = if inverse {
                stack.inverse(x.clone())
            } else {
                stack.forward(x.clone())
            };
            let (mut y2, mut l2) = (x_ref.clone(), Tensor::<1>::zeros([9], reference));
            let order: Vec<&AffineCoupling> = if inverse {
                stack_ref.layers.iter().rev().collect()
            } else {
                stack_ref.layers.iter().collect()
            };
            for layer in order {
                let (y, l) = if inverse {
                    layer.composite_inverse(y2)
                } else {
                    layer.composite_forward(y2)
                };
                (y2, l2) = (y, l2 + l);
            }
            assert!(max_diff(&v4(y1.clone()), &v4(y2.clone())) < 1e-5, "values");
            assert!(
                max_diff(&v1(l1.clone()), &v1(l2.clone())) < 1e-5,
                "log-dets"
            );
            let g1 = ((y1 * cy1.clone()).sum() + (l1 * cl1.clone()).sum()).backward();
            let g2 = ((y2 * cy.clone()).sum() + (l2 * cl.clone()).sum()).backward();
            let (gx1, gx2) = (v4(x.grad(&g1).unwrap()), v4(x_ref.grad(&g2).unwrap()));
            assert!(max_diff(&gx1, &gx2) < 1e-4, "inverse {inverse}: dx");
            // three conv layers (weight, bias) and the scale, per coupling
            param_grads_close(
                &stack,
                &stack_ref,
                [&g1, &g2],
                3 * 7,
                &format!("inverse {inverse}"),
            );
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
