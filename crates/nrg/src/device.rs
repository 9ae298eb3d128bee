//! Backend selection: `--device cpu|ndarray|wgpu` (`flex` is another name for `cpu`), each
//! available when the program is built with the matching cargo feature (`flex`, the
//! default; `ndarray`; `wgpu`, with burn's operation fusion and autotuning; `vulkan` adds
//! the SPIR-V compiler on Vulkan).
//!
//! The wgpu runtime is initialised once per process ([`Device::wgpu_options`]), so that a
//! machine without a usable adapter gets an error naming what to install instead of a panic
//! inside the runtime, and `nrg info` can name the adapter.

use anyhow::{Result, bail};
use burn::tensor::{Device, Tensor};

/// A compute backend chosen on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// burn's pure-Rust `flex` CPU backend (also `--device flex`, the name of its cargo
    /// feature and of the benches' backend).
    #[value(alias = "flex")]
    Cpu,
    /// burn's (deprecated) `ndarray` CPU backend.
    Ndarray,
    /// A GPU through wgpu (Vulkan).
    Wgpu,
}

impl DeviceChoice {
    /// The name a run's and a sample's summary record (`cpu`, `ndarray`, `wgpu`).
    pub fn name(self) -> &'static str {
        match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Ndarray => "ndarray",
            DeviceChoice::Wgpu => "wgpu",
        }
    }
}

/// The backends this binary was built with.
pub fn compiled() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("cpu (flex)");
    }
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    v
}

/// Creates the device, or explains which feature is missing.
#[allow(unreachable_code)]
pub fn make(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => {
            #[cfg(feature = "flex")]
            return Ok(Device::flex());
            bail!("this nrg was built without the `flex` feature; rebuild with --features flex")
        }
        DeviceChoice::Ndarray => {
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            return Ok(Device::ndarray());
            bail!(
                "this nrg was built without the `ndarray` feature; rebuild with --features ndarray"
            )
        }
        DeviceChoice::Wgpu => {
            #[cfg(feature = "wgpu")]
            return wgpu_device().map(|(device, _)| device);
            bail!("this nrg was built without the `wgpu` feature; rebuild with --features wgpu")
        }
    }
}

/// The wgpu device and a description of its adapter (name, graphics API, type, driver),
/// initialised on first use.
#[cfg(feature = "wgpu")]
pub fn wgpu_device() -> Result<(Device, String)> {
    use std::sync::OnceLock;
    static WGPU: OnceLock<std::result::Result<(Device, String), String>> = OnceLock::new();
    WGPU.get_or_init(|| {
        let (device, setup) = Device::wgpu_options().init_with_setup().map_err(|e| {
            format!(
                "no usable wgpu adapter ({e}); a GPU driver with Vulkan is needed, or \
                     Mesa's software Vulkan for testing (apt-get install mesa-vulkan-drivers)"
            )
        })?;
        let info = setup.adapter.get_info();
        // wgpu falls back to OpenGL where it finds no Vulkan; on the CPU (llvmpipe) that is
        // correct but minutes for what takes milliseconds on flex (docs/benchmarks.md,
        // session 18), so it is refused rather than run.
        use burn::tensor::wgpu::wgpu::{Backend, DeviceType};
        let software = info.device_type == DeviceType::Cpu;
        if software && info.backend == Backend::Gl {
            return Err(format!(
                "wgpu found only a software OpenGL adapter ({}); the wgpu path needs a \
                 Vulkan driver: the GPU's, or Mesa's software Vulkan for testing (apt-get \
                 install mesa-vulkan-drivers); on the CPU use --device cpu",
                info.name
            ));
        }
        if software {
            eprintln!(
                "nrg: warning: the wgpu adapter is a software one on the CPU ({}): correct, \
                 but far slower than --device cpu, and a flow's first step compiles its \
                 kernels (minutes: about twenty for the hierarchical flow on a cold shader \
                 cache)",
                info.name
            );
        }
        let driver = [info.driver.as_str(), info.driver_info.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let description = format!(
            "{} ({:?}, {:?}{})",
            info.name,
            info.backend,
            info.device_type,
            if driver.is_empty() {
                String::new()
            } else {
                format!(", {driver}")
            }
        );
        Ok((device, description))
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

/// `nrg info`: lists the compiled backends and runs a small matmul on the chosen one.
pub fn info(choice: DeviceChoice) -> Result<()> {
    println!("nrg {}", env!("CARGO_PKG_VERSION"));
    println!("compiled backends: {}", compiled().join(", "));
    let device = make(choice)?;
    #[cfg(feature = "wgpu")]
    if choice == DeviceChoice::Wgpu {
        println!("adapter: {}", wgpu_device()?.1);
    }
    let a = Tensor::<2>::ones([64, 64], &device);
    let s: f32 = a.clone().matmul(a).sum().into_scalar();
    if (s - 64.0 * 64.0 * 64.0).abs() > 1.0 {
        bail!("device {device:?} computed a wrong matmul checksum {s}");
    }
    println!("device {device:?}: ok (64×64 matmul checksum {s})");
    Ok(())
}
