//! Gradient clipping by norm, per parameter tensor, whatever the storage.
//!
//! Every tensor `g` of the gradient is rescaled on its own (burn's
//! `GradientClipping::Norm`, the formula of `torch.nn.utils.clip_grad_norm_` applied to one
//! tensor at a time):
//!
//! ```text
//! g ← g · min(1, c / (‖g‖₂ + ε)),   ε = f32::MIN_POSITIVE
//! ```
//!
//! A parameter stored flat — a block bijector's plain subnets, all their weights, biases
//! and scales in one vector for the fused chain kernel (decision 70) — is clipped piece by
//! piece, one piece per tensor it concatenates ([`nrg_layers::FlatPieces`]), so that
//! `clip_grad_norm` means what it meant when every weight and bias was a parameter of its
//! own. The pieces' squared norms are summed by one scatter-add and the factors gathered
//! back by one `select`: a handful of operations per flat parameter. (On a GPU backend
//! burn's scatter-add runs a thread per entry with atomic adds where the device has float
//! atomics, else one thread per row: a 1-D gradient is then summed by one thread.)
//!
//! A whole tensor goes through burn's `GradientClipping` itself; the pieces use its formula
//! for f32 gradients (nrg trains in f32: no cast for half precision, `ε` the f32 one).

use crate::flow::FlowModel;
use burn::grad_clipping::GradientClipping;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};
use std::collections::HashMap;

/// Clipping of the gradient of a [`FlowModel`] by norm, per parameter tensor, with the
/// flat parameters cut into their pieces (see the module docs).
#[derive(Clone, Debug)]
pub struct GradClip {
    threshold: f32,
    /// Each flat parameter's piece index (the piece of every entry) on the gradients'
    /// device, made once rather than built and uploaded at every step; remade where the
    /// pieces or the device differ.
    index: HashMap<ParamId, PieceIndex>,
}

/// The piece of every entry of one flat parameter, as a device tensor.
#[derive(Clone, Debug)]
struct PieceIndex {
    lengths: Vec<usize>,
    index: Tensor<1, Int>,
}

impl PieceIndex {
    fn new(lengths: &[usize], device: &Device) -> Self {
        let index: Vec<i32> = lengths
            .iter()
            .enumerate()
            .flat_map(|(k, &n)| std::iter::repeat_n(k as i32, n))
            .collect();
        let n = index.len();
        Self {
            lengths: lengths.to_vec(),
            index: Tensor::from_data(TensorData::new(index, [n]), device),
        }
    }
}

impl GradClip {
    /// Clipping at norm `threshold` (> 0, finite: [`crate::train::TrainSettings`] and
    /// [`crate::image::ImageTrainSettings`] validate it).
    pub fn new(threshold: f64) -> Self {
        debug_assert!(threshold > 0.0 && threshold.is_finite(), "clip threshold");
        Self {
            threshold: threshold as f32,
            index: HashMap::new(),
        }
    }

    /// The clipped gradients of `model`'s parameters (those without a gradient are left
    /// out, as they came). The pieces are read from the model at every call, so that they
    /// follow its parameters through loading a checkpoint; their index tensors are kept
    /// while the pieces and the device stay the same.
    pub fn apply(&mut self, model: &FlowModel, mut grads: GradientsParams) -> GradientsParams {
        let lengths = model
            .flat_pieces()
            .into_iter()
            .map(|p| (p.id, p.lengths))
            .collect();
        let mut visitor = Clipper {
            threshold: self.threshold,
            lengths,
            cache: std::mem::take(&mut self.index),
            kept: HashMap::new(),
            grads: &mut grads,
        };
        model.visit(&mut visitor);
        self.index = visitor.kept;
        grads
    }
}

/// `g · min(1, c / (‖g‖ + ε))` at `c = threshold`: burn's own `GradientClipping::Norm`.
fn clip_whole<const D: usize>(threshold: f32, g: Tensor<D>) -> Tensor<D> {
    GradientClipping::Norm(threshold).clip_gradient(g)
}

/// [`clip_whole`] per piece of a flat gradient `g` `[n]`, `index[i]` the piece of entry `i`
/// (on `g`'s device).
fn clip_by_piece(threshold: f32, g: Tensor<1>, index: Tensor<1, Int>, pieces: usize) -> Tensor<1> {
    let device = g.device();
    let squares = Tensor::<1>::zeros([pieces], &device).scatter(
        0,
        index.clone(),
        g.clone().square(),
        IndexingUpdateOp::Add,
    );
    let coef = (squares.sqrt().add_scalar(f32::MIN_POSITIVE).recip() * threshold).clamp_max(1.0);
    g * coef.select(0, index)
}

/// Replaces every parameter's gradient in `grads` by its clipped form.
struct Clipper<'a> {
    threshold: f32,
    /// The pieces' lengths of every flat parameter.
    lengths: HashMap<ParamId, Vec<usize>>,
    /// The piece indices of the previous call, and those of this one.
    cache: HashMap<ParamId, PieceIndex>,
    kept: HashMap<ParamId, PieceIndex>,
    grads: &'a mut GradientsParams,
}

impl ModuleVisitor for Clipper<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(g) = self.grads.remove::<D>(param.id) else {
            return;
        };
        let g = match self.lengths.get(&param.id) {
            Some(lengths) => {
                let device = g.device();
                let p = match self.cache.remove(&param.id) {
                    Some(c) if &c.lengths == lengths && c.index.device() == device => c,
                    _ => PieceIndex::new(lengths, &device),
                };
                let p = self.kept.entry(param.id).or_insert(p);
                // The pieces tile the parameter (tested in nrg-layers); were they not to,
                // clipping the whole vector would silently clip the pieces jointly.
                let n = p.index.dims()[0];
                debug_assert_eq!(n, g.shape().num_elements(), "flat pieces");
                let dims = g.dims();
                clip_by_piece(
                    self.threshold,
                    g.reshape([n]),
                    p.index.clone(),
                    p.lengths.len(),
                )
                .reshape(dims)
            }
            _ => clip_whole(self.threshold, g),
        };
        self.grads.register(param.id, g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::FlowSpec;
    use burn::tensor::Distribution;

    /// A flat gradient clipped piece by piece equals each piece clipped on its own by
    /// burn's `GradientClipping::Norm` (f32 rounding of sums of ≤ 200 squares: 1e-6 relative), for pieces
    /// above and below the threshold.
    #[test]
    fn flat_gradient_is_clipped_per_piece() {
        let dev = Device::flex();
        dev.seed(2);
        let lengths = [7usize, 200, 1, 30];
        let scales = [10.0f64, 0.01, 5.0, 0.2];
        let parts: Vec<Tensor<1>> = lengths
            .iter()
            .zip(scales)
            .map(|(&n, s)| Tensor::random([n], Distribution::Normal(0.0, s), &dev))
            .collect();
        let index = PieceIndex::new(&lengths, &dev).index;
        let got = clip_by_piece(1.0, Tensor::cat(parts.clone(), 0), index, lengths.len());
        let want = Tensor::cat(parts.into_iter().map(|p| clip_whole(1.0, p)).collect(), 0);
        let diff: f32 = (got.clone() - want).abs().max().into_scalar();
        assert!(diff < 1e-6, "{diff}");
        // Pieces 0 and 2 were above the threshold: now of norm 1.
        let first: f32 = got.slice(0..7).square().sum().sqrt().into_scalar();
        assert!((first - 1.0).abs() < 1e-5, "{first}");
    }

    /// On a hierarchical flow, clipping through the model visits every parameter, cuts the
    /// flat ones into their pieces and leaves small gradients as they are.
    #[test]
    fn clipping_a_flow_keeps_small_gradients_and_bounds_every_piece() {
        let dev = Device::flex().autodiff();
        dev.seed(5);
        let spec = FlowSpec {
            couplings: 2,
            hidden: vec![4],
            ..FlowSpec::default()
        };
        let model = spec.build(1, 4, &dev).unwrap();
        let pieces = model.flat_pieces();
        assert!(!pieces.is_empty());
        assert_eq!(
            pieces.len(),
            model_layers(&model),
            "one flat parameter per block"
        );
        // A gradient of every parameter: d/dθ Σ θ² · s, large for s = 100, small for 1e-4.
        // One clipper for both gradients: the second call reuses the piece indices the
        // first made (one per flat parameter).
        let threshold = 1.0f64;
        let mut clip = GradClip::new(threshold);
        for s in [100.0f32, 1e-4] {
            let mut loss = Tensor::<1>::zeros([1], &dev);
            model.visit(&mut SumSquares(&mut loss));
            let grads = GradientsParams::from_grads((loss * s).backward(), &model);
            let before = grads_of(&model, &grads);
            let clipped = clip.apply(&model, grads);
            assert_eq!(
                clip.index.len(),
                pieces.len(),
                "one index per flat parameter"
            );
            let after = grads_of(&model, &clipped);
            assert_eq!(before.len(), after.len(), "every parameter kept");
            for ((id, b), (_, a)) in before.iter().zip(&after) {
                let lengths = pieces
                    .iter()
                    .find(|p| p.id == *id)
                    .map_or_else(|| vec![b.len()], |p| p.lengths.clone());
                let mut at = 0;
                for n in lengths {
                    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
                    let (nb, na) = (norm(&b[at..at + n]), norm(&a[at..at + n]));
                    let want = nb.min(threshold as f32);
                    assert!(
                        (na - want).abs() <= 1e-5 * want.max(1e-6) + 1e-12,
                        "s {s}: piece norm {na}, want {want}"
                    );
                    at += n;
                }
            }
        }
    }

    fn model_layers(model: &FlowModel) -> usize {
        match &model.bijector {
            crate::flow::FlowBijector::Hierarchical(h) => h.num_layers(),
            crate::flow::FlowBijector::Flat(_) => 0,
        }
    }

    /// `loss += Σ θ²` over every float parameter.
    struct SumSquares<'a>(&'a mut Tensor<1>);

    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let sq = param.val().square().sum();
            *self.0 = self.0.clone() + sq;
        }
    }

    /// Every parameter's id and gradient, in visiting order.
    fn grads_of(model: &FlowModel, grads: &GradientsParams) -> Vec<(ParamId, Vec<f32>)> {
        let mut v = Norms(grads, Vec::new());
        model.visit(&mut v);
        v.1
    }

    struct Norms<'a>(&'a GradientsParams, Vec<(ParamId, Vec<f32>)>);

    impl ModuleVisitor for Norms<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(param.id) {
                self.1
                    .push((param.id, g.into_data().try_to_vec::<f32>().unwrap()));
            }
        }
    }
}
