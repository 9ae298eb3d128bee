//! Backend selection: `--device cpu|ndarray|wgpu`, each available when the program is built
//! with the matching cargo feature (`flex`, the default; `ndarray`; `wgpu`).

use anyhow::{Result, bail};
use burn::tensor::{Device, Tensor};

/// A compute backend chosen on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// burn's pure-Rust `flex` CPU backend.
    Cpu,
    /// burn's (deprecated) `ndarray` CPU backend.
    Ndarray,
    /// A GPU through wgpu (Vulkan).
    Wgpu,
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
            return Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice));
            bail!("this nrg was built without the `wgpu` feature; rebuild with --features wgpu")
        }
    }
}

/// `nrg info`: lists the compiled backends and runs a small matmul on the chosen one.
pub fn info(choice: DeviceChoice) -> Result<()> {
    println!("nrg {}", env!("CARGO_PKG_VERSION"));
    println!("compiled backends: {}", compiled().join(", "));
    let device = make(choice)?;
    let a = Tensor::<2>::ones([64, 64], &device);
    let s: f32 = a.clone().matmul(a).sum().into_scalar();
    if (s - 64.0 * 64.0 * 64.0).abs() > 1.0 {
        bail!("device {device:?} computed a wrong matmul checksum {s}");
    }
    println!("device {device:?}: ok (64×64 matmul checksum {s})");
    Ok(())
}
