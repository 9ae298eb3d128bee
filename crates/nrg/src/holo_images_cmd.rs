//! `nrg holo-images --run RUN`: the holographic tools on an image run
//! ([`nrg_run::image_holo`]), writing to `OUT` (default `RUN/holo`): `summary.json`
//! (receptive-field radii per level, inpainting MSE/PSNR per method, factor correlations),
//! `receptive.png`, `mixing.png`, `inpainting.png` and, on the synthetic set, `factors.csv`.

use crate::device::{DeviceChoice, make};
use anyhow::{Result, bail};
use clap::Args;
use nrg_run::RunDir;
use nrg_run::image_holo::{ImageHoloRequest, image_holo};
use std::path::PathBuf;

/// Arguments of `nrg holo-images`.
#[derive(Args, Debug)]
pub struct HoloImagesArgs {
    /// The image run (trained by `nrg train` from a config with a [data] table).
    #[arg(long)]
    run: PathBuf,
    /// Held-out images to inpaint (mixing pairs are drawn from them).
    #[arg(long, default_value_t = 32)]
    images: usize,
    /// Images whose latents give the receptive fields.
    #[arg(long, default_value_t = 4)]
    receptive_images: usize,
    /// Side of the centred masked square.
    #[arg(long, default_value_t = 8)]
    mask: usize,
    /// Adam steps of the optimised completion.
    #[arg(long, default_value_t = 150)]
    steps: usize,
    /// Step size of the optimised completion.
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// Prior temperature of the resampled completions.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Held-out images for the factor correlations (synthetic set).
    #[arg(long, default_value_t = 1000)]
    factor_images: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory (default RUN/holo).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `nrg holo-images …`.
pub fn run(args: HoloImagesArgs, device_choice: DeviceChoice) -> Result<()> {
    let run = RunDir::open(args.run.clone())?;
    if !run.is_image_run() {
        bail!(
            "{} is not an image run; `nrg holo --run {}` analyses lattice runs",
            args.run.display(),
            args.run.display()
        );
    }
    if !(args.lr.is_finite()
        && args.lr > 0.0
        && args.temperature.is_finite()
        && args.temperature > 0.0)
    {
        bail!("--lr and --temperature must be positive");
    }
    let request = ImageHoloRequest {
        images: args.images,
        receptive_images: args.receptive_images,
        mask: args.mask,
        steps: args.steps,
        lr: args.lr,
        temperature: args.temperature,
        factor_images: args.factor_images,
        seed: args.seed,
    };
    let out = args.out.unwrap_or_else(|| run.path().join("holo"));
    let device = make(device_choice)?.autodiff();
    eprintln!(
        "nrg: receptive fields, mixing, inpainting ({} images) …",
        args.images
    );
    let report = image_holo(&run, &request, &device, &out)?;
    println!("receptive-field radius per level (pixels):");
    for r in &report.radii {
        println!(
            "  level {}: {:.2} ± {:.2} ({} latents)",
            r.level, r.radius.value, r.radius.error, r.latents
        );
    }
    println!(
        "inpainting a {0}×{0} square on {1} held-out images (MSE on the masked pixels, x in [0, 1]):",
        args.mask, report.inpainted_images
    );
    for s in &report.inpainting {
        let changed = s
            .latents_changed
            .map(|k| format!(" ({k} of {} latents)", report.latents))
            .unwrap_or_default();
        println!(
            "  {:<24} MSE {:.5} ± {:.5}  PSNR {:.2} dB{changed}",
            s.method, s.mse.value, s.mse.error, s.psnr_db
        );
    }
    if let Some(f) = &report.factors {
        println!(
            "mean |corr| of each level's latents with each factor (null {:.3}):",
            f.null
        );
        for e in &f.levels {
            println!(
                "  {:<10} level {}: {:.3} ± {:.3} (max {:.3})",
                e.factor, e.level, e.mean_abs_corr.value, e.mean_abs_corr.error, e.max_abs_corr
            );
        }
    }
    println!("{:.1} s → {}", report.seconds, out.display());
    Ok(())
}
