//! Behaviour of whole flows: the hierarchical flow's invertibility and log-determinant
//! against autodiff on 4×4 lattices, the model's density against its sampler, and training
//! (free field to 0.1 % of the exact `ln Z`). The Ising L = 4 flow whose NIS `ln Z` matches
//! Kaufman is trained in `nrg-samplers`' tests, beside the NIS estimator it exercises.

use burn::tensor::{Device, Distribution, Tensor, TensorData, s};
use nrg_core::{Action, Bijector, FieldSpace, Lattice, OnLattice};
use nrg_flow::train::{TrainSettings, Trainer, weight_stats};
use nrg_flow::{
    FlowBijector, FlowKind, FlowModel, FlowSpec, HierarchicalFlow, LatentPrior, LatentShape,
    LevelScales, SubnetKind,
};
use nrg_lattice::PhiFour;
use nrg_layers::check::forward_log_det_vs_autodiff;
use nrg_layers::{BlockBijector, BlockOdeConfig, BlockRealNvpConfig};

fn host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
}

/// Hierarchical flows with random (not identity) block bijectors on a 4×4 lattice.
fn random_flows(device: &Device) -> Vec<(String, HierarchicalFlow, usize)> {
    let mut out = Vec::new();
    for (c, block, depth, repeats, kind) in [
        (1, 2, None, 1, SubnetKind::Mlp),
        (1, 2, Some(1), 2, SubnetKind::Mlp),
        (2, 2, None, 1, SubnetKind::ResidualMlp),
        (1, 4, None, 1, SubnetKind::Mlp),
        (1, 2, None, 1, SubnetKind::Ode),
    ] {
        let flow = HierarchicalFlow::new(4, block, depth, repeats, |_, _| match kind {
            SubnetKind::Ode => BlockBijector::Ode(
                BlockOdeConfig::new(c, block, vec![6])
                    .with_steps(16)
                    .with_zero_init(false)
                    .init(device),
            ),
            _ => BlockBijector::RealNvp(
                BlockRealNvpConfig::new(c, block, 3, vec![6, 6])
                    .with_residual(kind == SubnetKind::ResidualMlp)
                    .with_zero_init(false)
                    .init(device),
            ),
        })
        .unwrap();
        let name = format!("C={c} block={block} depth={depth:?} repeats={repeats} {kind:?}");
        out.push((name, flow, c));
    }
    out
}

#[test]
fn hierarchical_flow_is_invertible_with_the_autodiff_log_det() {
    let dev = Device::flex().autodiff();
    dev.seed(11);
    for (name, flow, c) in random_flows(&dev) {
        let x = Tensor::<4>::random([6, c, 4, 4], Distribution::Normal(0.0, 1.5), &dev);
        let (z, ld_inv) = flow.inverse(x.clone());
        let (x2, ld_fwd) = flow.forward(z);
        let err = host((x2 - x).abs().max())[0];
        assert!(err < 1e-4, "{name}: ‖G(R(x)) − x‖∞ = {err}");
        let cancel = host((ld_inv + ld_fwd).abs().max())[0];
        assert!(cancel < 1e-4, "{name}: log-dets do not cancel ({cancel})");
        // The flow moved things: not the identity.
        let z0 = Tensor::<4>::random([1, c, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
        let moved = host((flow.forward(z0.clone()).0 - z0.clone()).abs().max())[0];
        assert!(moved > 1e-2, "{name}: random flow is the identity");
        let (reported, exact) = forward_log_det_vs_autodiff(&flow, z0);
        assert!(
            (reported - exact).abs() < 1e-3,
            "{name}: log-det {reported} vs autodiff {exact}"
        );
    }
}

#[test]
fn model_density_matches_its_sampler() {
    let dev = Device::flex();
    dev.seed(5);
    for z2 in [false, true] {
        for shape in [LatentShape::Gaussian, LatentShape::Laplace] {
            let (_, flow, _) = random_flows(&dev).remove(0);
            let levels: Vec<usize> = flow.bulk_sites().iter().map(|s| s.level).collect();
            let prior = LatentPrior::new(&levels, shape, LevelScales::Learnable, &dev);
            let model = FlowModel::new(FlowBijector::Hierarchical(flow), prior, z2, [1, 4, 4]);
            let sample = model.sample(16, &dev);
            let again = host(model.log_prob(sample.x.clone()));
            let sampled = host(sample.log_q);
            for (a, b) in again.iter().zip(&sampled) {
                assert!(
                    (a - b).abs() < 1e-3 * (1.0 + b.abs()),
                    "z2={z2} {shape:?}: {a} vs {b}"
                );
            }
            if z2 {
                let flipped = host(model.log_prob(sample.x.neg()));
                for (a, b) in flipped.iter().zip(&sampled) {
                    assert!(
                        (a - b).abs() < 1e-3 * (1.0 + b.abs()),
                        "q_sym(−x) ≠ q_sym(x)"
                    );
                }
            }
        }
    }
}

/// The free field L = 4, m² = 1 (λ = 0; exact −ln Z = 2.8579…, a Gaussian target) on a
/// seeded autodiff device, and a flat flow of 2 couplings with a circulant layer (which
/// holds the exact answer).
fn free_field_and_flat_flow(seed: u64) -> (Device, PhiFour, f64, FlowSpec) {
    let device = Device::flex().autodiff();
    device.seed(seed);
    let action = PhiFour::free_field(Lattice::square(4).unwrap(), 1, 1.0).unwrap();
    let exact = action.exact_ln_z().unwrap();
    let spec = FlowSpec {
        kind: FlowKind::Flat,
        couplings: 2,
        hidden: vec![4],
        circulant: true,
        ..FlowSpec::default()
    };
    (device, action, exact, spec)
}

/// Reverse KL on the free field (L = 4, m² = 1, a Gaussian target): a flat flow of 2
/// couplings and a circulant layer (which holds the exact answer) reaches `F_q` within 0.1 % of the exact `−ln Z`, never below it (up to 3σ).
#[test]
fn free_field_flow_reaches_exact_ln_z() {
    let (device, action, exact, spec) = free_field_and_flat_flow(7);
    let model = spec.build(1, 4, &device).unwrap();
    let settings = TrainSettings {
        steps: 1000,
        batch: 256,
        lr: 3e-2,
        lr_schedule: nrg_flow::train::LrSchedule::Cosine,
        lr_min: 1e-4,
        ..TrainSettings::default()
    };
    let mut trainer = Trainer::new(model, &action, None, settings, &device).unwrap();
    let first = trainer.step().unwrap();
    while trainer.step_index() < trainer.settings().steps {
        trainer.step().unwrap();
    }
    let model = trainer.into_model();
    let sample = model.sample(16384, &device);
    let s = action.action(sample.x.clone());
    let log_w: Vec<f64> = host(s + sample.log_q).iter().map(|v| -v).collect();
    let (f_q, f_err, ess) = weight_stats(&log_w);
    let rel = (f_q + exact).abs() / exact.abs();
    eprintln!("free field: exact ln Z {exact}, F_q {f_q} ± {f_err}, rel {rel:e}, ESS {ess}");
    assert!(first.free_energy + exact > 0.5, "identity flow too good?");
    assert!(f_q > -exact - 3.0 * f_err, "F_q below −ln Z");
    assert!(rel < 1e-3, "F_q misses −ln Z by {rel:e}");
}

/// The trainer clips: one Adam step of a seeded hierarchical flow moves the parameters as
/// without clipping when the threshold is never reached (1e30: the factor is exactly 1), and
/// barely at all when it squeezes every gradient tensor below Adam's ε (1e-14: updates of
/// ~lr·10⁻⁶ against ~lr).
#[test]
fn training_clips_the_gradient() {
    let run = |clip: Option<f64>| {
        let (device, action, _, _) = free_field_and_flat_flow(3);
        let spec = FlowSpec {
            couplings: 2,
            hidden: vec![4],
            ..FlowSpec::default()
        };
        let model = spec.build(1, 4, &device).unwrap();
        let before = parameters(&model);
        let settings = TrainSettings {
            steps: 1,
            batch: 64,
            lr: 1e-2,
            clip_grad_norm: clip,
            ..TrainSettings::default()
        };
        let mut trainer = Trainer::new(model, &action, None, settings, &device).unwrap();
        trainer.step().unwrap();
        let after = parameters(&trainer.into_model());
        before
            .iter()
            .zip(&after)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f64, f64::max)
    };
    let (free, loose, tight) = (run(None), run(Some(1e30)), run(Some(1e-14)));
    assert!(
        free > 5e-3,
        "an unclipped step moves some parameter by ~lr: {free}"
    );
    assert!((loose - free).abs() < 1e-6, "{loose} vs {free}");
    assert!(tight < 1e-4, "a clipped step barely moves: {tight}");
}

/// Every float parameter of `model`, flattened in visiting order.
fn parameters(model: &FlowModel) -> Vec<f64> {
    struct All(Vec<f64>);
    impl burn::module::ModuleVisitor for All {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            self.0.extend(host(param.val()));
        }
    }
    let mut all = All(Vec::new());
    burn::module::Module::visit(model, &mut all);
    all.0
}

/// The free field plus a mass term on one site only: not translation invariant.
struct PinnedField {
    base: Box<dyn Action>,
}

impl OnLattice for PinnedField {
    fn space(&self) -> FieldSpace {
        self.base.space()
    }
}

impl Action for PinnedField {
    fn action(&self, x: Tensor<4>) -> Tensor<1> {
        let [n, ..] = x.dims();
        let pinned = x
            .clone()
            .slice(s![.., 0..1, 0..1, 0..1])
            .powi_scalar(2)
            .reshape([n]);
        self.base.action(x) + pinned
    }
    fn grad(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, c, r, w] = x.dims();
        let mask = Tensor::<4>::zeros([n, c, r, w], &x.device()).slice_assign(
            s![.., 0..1, 0..1, 0..1],
            Tensor::ones([n, 1, 1, 1], &x.device()),
        );
        self.base.grad(x.clone()) + x * mask.mul_scalar(2.0)
    }
    fn describe(&self) -> String {
        "free field with one pinned site".into()
    }
    fn to_device(&self, device: &Device) -> Box<dyn Action> {
        Box::new(PinnedField {
            base: self.base.to_device(device),
        })
    }
}

/// Forward KL alone on exact samples of the free field (L = 4, m² = 1), each step's batch
/// moved by a random lattice symmetry (`augment`): a flat circulant flow reaches `F_q`
/// within 1 % of the exact `−ln Z` (it starts over 0.5 nats away; 2000 data for 16 Gaussian
/// variables, so over-fitting would show as a gap). Augmentation of an action that is not
/// translation invariant is refused.
#[test]
fn augmented_forward_kl_learns_the_free_field() {
    let (device, action, exact, spec) = free_field_and_flat_flow(11);
    // S = ½ φᵀKφ: K's columns are the gradients at the unit fields. Exact draws
    // φ = U⁻¹ξ with K = UᵀU (Cholesky), so that Cov φ = K⁻¹.
    let v = 16;
    let eye: Vec<f32> = (0..v * v)
        .map(|k| if k / v == k % v { 1.0 } else { 0.0 })
        .collect();
    let units = Tensor::<4>::from_data(TensorData::new(eye, [v, 1, 4, 4]), &device);
    let k = host(action.grad(units));
    let mut u = vec![0.0f64; v * v];
    for i in 0..v {
        for j in i..v {
            let dot: f64 = (0..i).map(|m| u[m * v + i] * u[m * v + j]).sum();
            let kij = k[i * v + j] - dot;
            u[i * v + j] = if i == j {
                kij.sqrt()
            } else {
                kij / u[i * v + i]
            };
        }
    }
    let draws = 2000;
    let xi = host(Tensor::<2>::random(
        [draws, v],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    let mut fields = vec![0.0f32; draws * v];
    for d in 0..draws {
        let (xi, phi) = (&xi[d * v..(d + 1) * v], &mut fields[d * v..(d + 1) * v]);
        let mut back = vec![0.0f64; v];
        for i in (0..v).rev() {
            let s: f64 = (i + 1..v).map(|j| u[i * v + j] * back[j]).sum();
            back[i] = (xi[i] - s) / u[i * v + i];
        }
        for (p, b) in phi.iter_mut().zip(back) {
            *p = b as f32;
        }
    }
    let data = Tensor::<4>::from_data(TensorData::new(fields, [draws, 1, 4, 4]), &device);
    let settings = TrainSettings {
        steps: 600,
        batch: 1024,
        data_batch: 256,
        forward_weight: 1.0,
        augment: true,
        lr: 3e-2,
        lr_schedule: nrg_flow::train::LrSchedule::Cosine,
        lr_min: 1e-4,
        ..TrainSettings::default()
    };
    let pinned = PinnedField {
        base: action.to_device(&device),
    };
    let model = spec.build(1, 4, &device).unwrap();
    let refused = Trainer::new(
        model,
        &pinned,
        Some(data.clone()),
        settings.clone(),
        &device,
    );
    let message = refused
        .err()
        .expect("augmenting a non-invariant action")
        .to_string();
    assert!(message.contains("not invariant"), "{message}");

    let model = spec.build(1, 4, &device).unwrap();
    let mut trainer = Trainer::new(model, &action, Some(data), settings, &device).unwrap();
    let first = trainer.step().unwrap();
    let mut last = first;
    while trainer.step_index() < trainer.settings().steps {
        last = trainer.step().unwrap();
    }
    let rel = |f: f64| (f + exact).abs() / exact.abs();
    eprintln!(
        "augmented forward KL: first F_q {} last {} ± {} (exact −ln Z {})",
        first.free_energy, last.free_energy, last.free_energy_error, -exact
    );
    assert!(
        first.free_energy + exact > 0.5,
        "the untrained flow is already close"
    );
    assert!(
        rel(last.free_energy) < 0.01,
        "F_q misses −ln Z by {:e}",
        rel(last.free_energy)
    );
}
