//! Benchmarks of nrg live in `benches/`; this library hosts their shared set-up and the
//! launch profile of a training step on the GPU path.
//!
//! - `baselines`: the single-spin Metropolis sweep (reported as spin updates per second),
//!   the Wolff cluster update and an HMC trajectory of φ⁴;
//! - `flows`: a coupling layer and the hierarchical flow, forward and inverse, and whole
//!   training steps of the φ⁴ tutorial flow and the hierarchical Ising L = 16 flow;
//! - [`launches`], [`step_profile`] and the `step-profile` program (`wgpu` feature): the
//!   kernel launches of those two training steps on a cubecl device, counted per kernel and,
//!   on a GPU with timestamp queries, timed on the device.

pub mod launches;
pub mod step_profile;

use burn::tensor::Device;
use nrg_core::Lattice;
use nrg_flow::{FlowModel, FlowSpec};
use nrg_lattice::{IsingRelaxed, IsingSpins, PhiFour};

/// The 2D Ising model at `β` on an `L × L` torus.
pub fn ising(l: usize, beta: f64) -> IsingSpins {
    IsingSpins::new(Lattice::square(l).expect("L ≥ 2"), beta).expect("β > 0")
}

/// The φ⁴ tutorial point (lattice form, `m² = −4`, `λ = 8`) on an `L × L` torus.
pub fn phi4_tutorial(l: usize) -> PhiFour {
    PhiFour::lattice_form(Lattice::square(l).expect("L ≥ 2"), 1, -4.0, 8.0).expect("valid")
}

/// The φ⁴ tutorial point at L = 8 and its flat flow (16 affine couplings, CNN 1 → 8 → 8 → 2),
/// untrained: the `train_step/phi4_tutorial` and `nis/phi4_tutorial` benches.
pub fn phi4_tutorial_flow(dev: &Device) -> (PhiFour, FlowModel) {
    let model = FlowSpec::phi4_tutorial().build(1, 8, dev).expect("flow");
    (phi4_tutorial(8), model)
}

/// The relaxed Ising model at L = 16, β_c, and the default hierarchical flow with Z₂
/// (NeuralRG's): the `train_step/ising_l16` and `nis/ising_l16` benches.
pub fn ising_l16_flow(dev: &Device) -> (IsingRelaxed, FlowModel) {
    let beta_c = (1.0 + 2f64.sqrt()).ln() / 2.0;
    let ising = IsingRelaxed::new(Lattice::square(16).expect("L"), beta_c, dev).expect("Ising");
    let spec = FlowSpec {
        z2: true,
        ..FlowSpec::default()
    };
    (ising, spec.build(1, 16, dev).expect("flow"))
}

/// The CPU's model name, from `/proc/cpuinfo`, and its thread count.
pub fn cpu_model() -> String {
    let cpus = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpus
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {threads} threads")
}

/// The wgpu device and its adapter's description (name, graphics API, device type, driver).
///
/// # Errors
/// When no wgpu adapter is found (no GPU driver with Vulkan, and no `mesa-vulkan-drivers`).
#[cfg(feature = "wgpu")]
pub fn wgpu_device() -> Result<(Device, String), String> {
    let (device, setup) = Device::wgpu_options().init_with_setup().map_err(|e| {
        format!("no wgpu adapter (a GPU driver with Vulkan, or mesa-vulkan-drivers): {e:?}")
    })?;
    let info = setup.adapter.get_info();
    let text = format!(
        "{} ({:?}, {:?}, {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    );
    Ok((device, text))
}

/// The device named by `backend` (`flex`, `ndarray` or `wgpu`, each if compiled in) and
/// its description; `None` for a backend this build does not have.
#[allow(deprecated)]
pub fn device_named(backend: &str) -> Option<(Device, String)> {
    match backend {
        #[cfg(feature = "wgpu")]
        "wgpu" => Some(wgpu_device().unwrap_or_else(|e| panic!("{e}"))),
        #[cfg(feature = "ndarray")]
        "ndarray" => Some((Device::ndarray(), format!("ndarray on {}", cpu_model()))),
        #[cfg(feature = "flex")]
        "flex" => Some((Device::flex(), format!("flex on {}", cpu_model()))),
        _ => None,
    }
}
