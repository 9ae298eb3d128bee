//! Flow throughput on the backend the benches were built with (`flex` by default; build
//! with `--features ndarray` or `--features wgpu` and set `NRG_BENCH_DEVICE=ndarray|wgpu`;
//! `cargo xtask bench --backend flex,wgpu` does both and writes a table per run). With
//! `NRG_BENCH_INFO=FILE` the bench writes the device's description (CPU model or GPU
//! adapter) to `FILE`. With the `wgpu` feature and `NRG_STEP_PROFILE=DIR` it runs no bench
//! but writes the kernel launches of the two training steps (`nrg_benches::step_profile`)
//! into `DIR`.
//!
//! - `coupling/{forward,inverse}`: one affine checkerboard coupling with the φ⁴ tutorial's
//!   CNN (1 → 8 → 8 → 2, 3×3), batch 256, L = 8;
//! - `hierarchical/{forward,inverse}`: NeuralRG's hierarchical flow (2×2 blocks, 10
//!   couplings, MLP 10-10), Z₂-free, batch 512, L = 16;
//! - `train_step/{phi4_tutorial,ising_l16}`: one whole reverse-KL step (sample, action,
//!   backward, Adam) — the number to compare with the PyTorch peers (batch 256 and 512);
//!   `train_step/phi4_tutorial_b1024` the φ⁴ step at batch 1024;
//! - `nis/{phi4_tutorial,ising_l16}`: one NIS batch of 4096 flow samples with `ln q`, the
//!   action and the streamed importance sums (the flows of `train_step`, untrained);
//! - `circulant/{forward,inverse,backward}/L`: the circulant layer with a random kernel, batch 16,
//!   L = 16, 32, 64 (the separable DFT's `O(V^{3/2})` against the `O(V²)` of dense matrices).

/// The allocator of the `nrg` program (mimalloc), so that the benches time what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::tensor::{Device, Distribution, Tensor};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group};
use nrg_benches::{ising_l16_flow, phi4_tutorial_flow};
use nrg_core::{Action, Bijector};
use nrg_flow::FlowModel;
use nrg_flow::train::{TrainSettings, Trainer};
use nrg_layers::{AffineCouplingConfig, BlockRealNvpConfig, CirculantLinear, MaskKind};
use std::hint::black_box;

/// The device, created once per process (the wgpu runtime initialises once).
fn device() -> Device {
    static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let backend = std::env::var("NRG_BENCH_DEVICE").unwrap_or_else(|_| "flex".into());
            let (device, description) = nrg_benches::device_named(&backend).unwrap_or_else(|| {
                panic!("NRG_BENCH_DEVICE={backend}: build the benches with that backend's feature")
            });
            if let Ok(path) = std::env::var("NRG_BENCH_INFO") {
                let path = std::path::PathBuf::from(path);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).expect("NRG_BENCH_INFO's folder");
                }
                std::fs::write(&path, format!("{description}\n"))
                    .expect("NRG_BENCH_INFO is writable");
            }
            device
        })
        .clone()
}

fn sync(t: Tensor<1>) -> f32 {
    t.sum().into_scalar()
}

fn coupling(c: &mut Criterion) {
    let dev = device();
    let layer = AffineCouplingConfig::new(1, 8, 8, vec![8, 8])
        .with_zero_init(false)
        .init(MaskKind::Checkerboard { parity: 0 }, &dev);
    let z = Tensor::<4>::random([256, 1, 8, 8], Distribution::Normal(0.0, 1.0), &dev);
    let mut group = c.benchmark_group("coupling");
    group.bench_function("forward", |b| {
        b.iter(|| black_box(sync(layer.forward(z.clone()).1)))
    });
    group.bench_function("inverse", |b| {
        b.iter(|| black_box(sync(layer.inverse(z.clone()).1)))
    });
    group.finish();
}

fn hierarchical(c: &mut Criterion) {
    let dev = device();
    let flow = nrg_flow::HierarchicalFlow::new(16, 2, None, 1, |_, _| {
        nrg_layers::BlockBijector::RealNvp(
            BlockRealNvpConfig::new(1, 2, 10, vec![10, 10])
                .with_zero_init(false)
                .init(&dev),
        )
    })
    .expect("valid flow");
    let z = Tensor::<4>::random([512, 1, 16, 16], Distribution::Normal(0.0, 1.0), &dev);
    let mut group = c.benchmark_group("hierarchical");
    group.sample_size(10);
    group.bench_function("forward", |b| {
        b.iter(|| black_box(sync(flow.forward(z.clone()).1)))
    });
    group.bench_function("inverse", |b| {
        b.iter(|| black_box(sync(flow.inverse(z.clone()).1)))
    });
    group.finish();
}

/// `train_step/NAME`: whole training steps of `model` against `action` at `batch`.
fn bench_training(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    (action, model): (impl Action, FlowModel),
    batch: usize,
    dev: &Device,
) {
    let settings = TrainSettings {
        batch,
        ..TrainSettings::default()
    };
    let mut trainer = Trainer::new(model, &action, None, settings, dev).expect("trainer");
    group.bench_function(name, |b| {
        b.iter(|| black_box(trainer.step().expect("finite")))
    });
}

fn train_step(c: &mut Criterion) {
    let dev = device().autodiff();
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    bench_training(
        &mut group,
        "phi4_tutorial",
        phi4_tutorial_flow(&dev),
        256,
        &dev,
    );
    // The same flow at batch 1024: where a GPU has to beat the CPU (issue 21 asks for it at
    // batch ≥ 512; the Ising step is at 512).
    bench_training(
        &mut group,
        "phi4_tutorial_b1024",
        phi4_tutorial_flow(&dev),
        1024,
        &dev,
    );
    bench_training(&mut group, "ising_l16", ising_l16_flow(&dev), 512, &dev);
    group.finish();
}

fn nis_batch(c: &mut Criterion) {
    use nrg_samplers::neural::{FieldObservables, NisRequest, nis};
    let dev = device();
    let mut group = c.benchmark_group("nis");
    group.sample_size(10);
    let request = NisRequest {
        measure: &FieldObservables::new(1),
        derived: Vec::new(),
        samples: 4096,
        batch: 4096,
        keep: false,
    };
    let (phi4, model) = phi4_tutorial_flow(&dev);
    group.bench_function("phi4_tutorial", |b| {
        b.iter(|| black_box(nis(&model, &phi4, &request, &dev, &mut |_| {}).expect("finite")))
    });
    let (ising, model) = ising_l16_flow(&dev);
    group.bench_function("ising_l16", |b| {
        b.iter(|| black_box(nis(&model, &ising, &request, &dev, &mut |_| {}).expect("finite")))
    });
    group.finish();
}

fn circulant(c: &mut Criterion) {
    let dev = device();
    let mut group = c.benchmark_group("circulant");
    group.sample_size(10);
    for l in [16, 32, 64] {
        let v = l * l;
        let kernel = Tensor::<2>::random([1, v], Distribution::Normal(0.0, 0.01), &dev)
            + Tensor::<2>::ones([1, 1], &dev).pad((0, v - 1, 0, 0), 0.0);
        let layer = CirculantLinear::new(1, l, l, &dev).with_kernel(kernel);
        let z = Tensor::<4>::random([16, 1, l, l], Distribution::Normal(0.0, 1.0), &dev);
        group.bench_function(format!("forward/{l}"), |b| {
            b.iter(|| black_box(sync(layer.forward(z.clone()).0.sum_dim(1).flatten(0, 3))))
        });
        group.bench_function(format!("inverse/{l}"), |b| {
            b.iter(|| black_box(sync(layer.inverse(z.clone()).0.sum_dim(1).flatten(0, 3))))
        });
        // a training step's share: forward on the autodiff device, then the backward pass
        // to the kernel and the field
        let ad = dev.clone().autodiff();
        let kernel_ad = Tensor::<2>::random([1, v], Distribution::Normal(0.0, 0.01), &ad)
            + Tensor::<2>::ones([1, 1], &ad).pad((0, v - 1, 0, 0), 0.0);
        let layer_ad = CirculantLinear::new(1, l, l, &ad).with_kernel(kernel_ad.require_grad());
        let z_ad =
            Tensor::<4>::random([16, 1, l, l], Distribution::Normal(0.0, 1.0), &ad).require_grad();
        group.bench_function(format!("backward/{l}"), |b| {
            b.iter(|| {
                let (x, _) = layer_ad.forward(z_ad.clone());
                black_box(x.sum().backward())
            })
        });
    }
    group.finish();
}

criterion_group!(
    flows,
    coupling,
    hierarchical,
    train_step,
    nis_batch,
    circulant
);

/// `NRG_STEP_PROFILE=DIR`: the launch profile of the `train_step` benches on wgpu, timed on
/// the device, into `DIR` (`nrg_benches::step_profile`), instead of the benches.
#[cfg(feature = "wgpu")]
fn step_profile(dir: &std::path::Path) {
    use nrg_benches::step_profile::{StepProfileSettings, profile_train_steps};
    // The report so far after each flow: a timeout during the second keeps the first.
    let mut write = |report: &nrg_benches::step_profile::StepProfileReport| {
        if let Err(e) = report.write(dir, 15) {
            eprintln!("step profile: cannot write into {}: {e}", dir.display());
            std::process::exit(2);
        }
    };
    let report = nrg_benches::wgpu_device().and_then(|(dev, adapter)| {
        let settings = StepProfileSettings::default();
        profile_train_steps(
            &settings,
            &dev.autodiff(),
            adapter,
            &mut |phase| eprintln!("step profile: {phase}"),
            &mut write,
        )
    });
    match report {
        Ok(report) => print!("{}", report.markdown(15)),
        Err(e) => {
            eprintln!("step profile: {e}");
            std::process::exit(1);
        }
    }
}

fn main() {
    #[cfg(feature = "wgpu")]
    if let Some(dir) = std::env::var_os("NRG_STEP_PROFILE") {
        return step_profile(std::path::Path::new(&dir));
    }
    flows();
    Criterion::default().configure_from_args().final_summary();
}
