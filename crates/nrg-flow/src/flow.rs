//! A flow model: a prior, a bijector and, optionally, Z₂ symmetrisation.
//!
//! Sampling: `z ~ p_Z`, `(x, ℓ) = G(z)`, `ln q(x) = ln p_Z(z) − ℓ`.
//! Density: `(z, ℓ′) = R(x)`, `ln q(x) = ln p_Z(z) + ℓ′`.
//!
//! Z₂ symmetrisation (for actions with `S(−x) = S(x)`): the model's density is
//! `q_sym(x) = ½[q(x) + q(−x)]`, sampled by drawing `x ~ q` and flipping its sign with
//! probability ½; `ln q_sym = LSE(ln q(x), ln q(−x)) − ln 2` needs one extra inverse pass.
//!
//! Shapes: configurations `[batch, C, rows, cols]`, log-densities `[batch]`.

use crate::hierarchical::HierarchicalFlow;
use crate::prior::LatentPrior;
use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use nrg_core::bulk::{BlockLayer, BulkLayout};
use nrg_core::{Bijector, Prior};
use nrg_layers::{CirculantLinear, CouplingStack};

/// Samples with their exact log-density under the flow.
pub struct FlowSample {
    /// `x`, `[batch, channels, rows, cols]`.
    pub x: Tensor<4>,
    /// `ln q(x)`, `[batch]`.
    pub log_q: Tensor<1>,
}

/// The bijector of a flow model.
// One per model, moved rarely: the flat stack's inline parameter and masks (a few hundred
// bytes) are not worth a box and the indirection in every module visit.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum FlowBijector {
    /// A flat stack of lattice couplings (the φ⁴ tutorial's flow).
    Flat(CouplingStack),
    /// The hierarchical, MERA-like flow.
    Hierarchical(HierarchicalFlow),
}

impl Bijector for FlowBijector {
    fn forward(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        match self {
            FlowBijector::Flat(b) => b.forward(z),
            FlowBijector::Hierarchical(b) => b.forward(z),
        }
    }

    fn inverse(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        match self {
            FlowBijector::Flat(b) => b.inverse(x),
            FlowBijector::Hierarchical(b) => b.inverse(x),
        }
    }
}

/// A prior, a bijector `G`, and the symmetrisation switch.
#[derive(Module, Debug)]
pub struct FlowModel {
    /// The generative map `G` (its inverse is the RG map `R`).
    pub bijector: FlowBijector,
    /// The latent distribution.
    pub prior: LatentPrior,
    /// An optional circulant linear layer applied last in the generative direction.
    pub circulant: Option<CirculantLinear>,
    z2: bool,
    channels: usize,
    rows: usize,
    cols: usize,
}

/// `ln(eᵃ + eᵇ) − ln 2`, elementwise and stable.
fn log_mean_exp_pair(a: Tensor<1>, b: Tensor<1>) -> Tensor<1> {
    let m = a.clone().max_pair(b.clone()).detach();
    let s = (a - m.clone()).exp() + (b - m.clone()).exp();
    m + s.log().sub_scalar(std::f64::consts::LN_2)
}

impl FlowModel {
    /// Assembles a model of configurations `[channels, rows, cols]`.
    pub fn new(
        bijector: FlowBijector,
        prior: LatentPrior,
        z2: bool,
        [channels, rows, cols]: [usize; 3],
    ) -> Self {
        Self {
            bijector,
            prior,
            circulant: None,
            z2,
            channels,
            rows,
            cols,
        }
    }

    /// The weightless layout of a hierarchical flow (`None` for a flat one).
    pub fn hierarchical_layout(&self) -> Option<nrg_core::bulk::HierarchicalLayout> {
        match &self.bijector {
            FlowBijector::Hierarchical(flow) => Some(flow.layout()),
            _ => None,
        }
    }

    /// The parameters stored flat, with the lengths of the tensors each concatenates: the
    /// units of gradient clipping ([`crate::clip::GradClip`]).
    pub fn flat_pieces(&self) -> Vec<nrg_layers::FlatPieces> {
        match &self.bijector {
            FlowBijector::Hierarchical(flow) => flow.flat_pieces(),
            FlowBijector::Flat(stack) if !stack.is_empty() => vec![stack.flat_pieces()],
            FlowBijector::Flat(_) => Vec::new(),
        }
    }

    /// The same model with a circulant linear layer at the boundary end: `x = C(G(z))`.
    pub fn with_circulant(mut self, device: &Device) -> Self {
        self.circulant = Some(CirculantLinear::new(
            self.channels,
            self.rows,
            self.cols,
            device,
        ));
        self
    }

    /// The whole generative map `z ↦ x` with `ln|det ∂x/∂z|`.
    pub fn forward_map(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let (x, ld) = self.bijector.forward(z);
        match &self.circulant {
            Some(c) => {
                let (y, l2) = c.forward(x);
                (y, ld + l2)
            }
            None => (x, ld),
        }
    }

    /// The whole RG map `x ↦ z` with `ln|det ∂z/∂x|`.
    pub fn inverse_map(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        let (x, l1) = match &self.circulant {
            Some(c) => c.inverse(x),
            None => {
                let n = x.dims()[0];
                let device = x.device();
                (x, Tensor::zeros([n], &device))
            }
        };
        let (z, ld) = self.bijector.inverse(x);
        (z, ld + l1)
    }

    /// The coarse field after `levels` levels of the RG map of a hierarchical flow (the
    /// circulant's inverse first, if there is one): `[batch, C, L/2^levels, L/2^levels]`,
    /// see [`HierarchicalFlow::coarse_field`]. Errors: a flat flow, `levels` outside
    /// `1..=depth`.
    pub fn coarse_field(&self, x: Tensor<4>, levels: usize) -> nrg_core::Result<Tensor<4>> {
        let x = match &self.circulant {
            Some(c) => c.inverse(x).0,
            None => x,
        };
        match &self.bijector {
            FlowBijector::Hierarchical(flow) => flow.coarse_field(x, levels),
            FlowBijector::Flat(_) => Err(nrg_core::NrgError::param(
                "flow",
                "a flat flow has no coarse field: it needs a hierarchical flow",
            )),
        }
    }

    /// `[channels, rows, cols]` of one configuration.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.rows, self.cols]
    }

    /// Whether the density is Z₂-symmetrised.
    pub fn symmetrised(&self) -> bool {
        self.z2
    }

    /// `ln q(x)` of the unsymmetrised flow.
    fn log_prob_plain(&self, x: Tensor<4>) -> Tensor<1> {
        let (z, logdet) = self.inverse_map(x);
        self.prior.log_prob(z) + logdet
    }

    /// `x = G(z)` with `ln q(x)` (symmetrised if the model is).
    pub fn generate(&self, z: Tensor<4>) -> FlowSample {
        let log_pz = self.prior.log_prob(z.clone());
        let (x, logdet) = self.forward_map(z);
        let log_q = log_pz - logdet;
        if !self.z2 {
            return FlowSample { x, log_q };
        }
        let log_q_flipped = self.log_prob_plain(x.clone().neg());
        FlowSample {
            x,
            log_q: log_mean_exp_pair(log_q, log_q_flipped),
        }
    }

    /// Draws `n` samples with `ln q` (for a symmetrised model, with random global signs).
    pub fn sample(&self, n: usize, device: &Device) -> FlowSample {
        let z = self
            .prior
            .sample([n, self.channels, self.rows, self.cols], device);
        let sample = self.generate(z);
        if !self.z2 {
            return sample;
        }
        let sign = Tensor::<4>::random([n, 1, 1, 1], Distribution::Bernoulli(0.5), device)
            .mul_scalar(2.0)
            .sub_scalar(1.0);
        FlowSample {
            x: sample.x * sign,
            log_q: sample.log_q,
        }
    }

    /// `ln q(x)` of given configurations.
    pub fn log_prob(&self, x: Tensor<4>) -> Tensor<1> {
        if !self.z2 {
            return self.log_prob_plain(x);
        }
        let n = x.dims()[0];
        let both = self.log_prob_plain(Tensor::cat(vec![x.clone(), x.neg()], 0));
        log_mean_exp_pair(both.clone().slice_dim(0, 0..n), both.slice_dim(0, n..2 * n))
    }

    /// The latents `z = R(x)` with `ln|det ∂z/∂x|` (unsymmetrised).
    pub fn encode(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        self.inverse_map(x)
    }
}

impl nrg_core::DensityModel for FlowModel {
    fn shape(&self) -> [usize; 3] {
        FlowModel::shape(self)
    }

    fn sample_with_log_q(&self, n: usize, device: &Device) -> (Tensor<4>, Tensor<1>) {
        let s = self.sample(n, device);
        (s.x, s.log_q)
    }

    fn log_q(&self, x: Tensor<4>) -> Tensor<1> {
        self.log_prob(x)
    }
}

/// The bulk view uses the unsymmetrised map `G`: the bulk target
/// `exp(−S(G(z)) + ln|det ∂G/∂z|)` is exact for any bijective `G`.
impl nrg_core::LatentModel for FlowModel {
    fn latent_shape(&self) -> [usize; 3] {
        FlowModel::shape(self)
    }

    fn generate_with_log_det(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        self.forward_map(z)
    }

    fn rg_map(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
        self.inverse_map(x)
    }

    fn sample_latent(&self, n: usize, device: &Device) -> Tensor<4> {
        let [c, r, w] = FlowModel::shape(self);
        self.prior.sample([n, c, r, w], device)
    }

    fn prior_log_prob(&self, z: Tensor<4>) -> Tensor<1> {
        self.prior.log_prob(z)
    }

    /// The hierarchical flow's bulk; a circulant layer makes `G` global (no finite cones).
    fn bulk_layout(&self) -> Option<Box<dyn BulkLayout + '_>> {
        match &self.bijector {
            FlowBijector::Hierarchical(flow) => Some(Box::new(FlowBulk {
                flow,
                global: self.circulant.is_some(),
            })),
            _ => None,
        }
    }
}

/// A hierarchical flow's bulk, with whether a global layer follows it.
struct FlowBulk<'a> {
    flow: &'a HierarchicalFlow,
    global: bool,
}

impl BulkLayout for FlowBulk<'_> {
    fn size(&self) -> usize {
        self.flow.size()
    }

    fn depth(&self) -> usize {
        self.flow.depth()
    }

    fn local_layers(&self) -> Option<Vec<BlockLayer>> {
        if self.global {
            None
        } else {
            self.flow.local_layers()
        }
    }
}
