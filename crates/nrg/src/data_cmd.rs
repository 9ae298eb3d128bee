//! `nrg data …`: image data sets for the image flows, written where a run config or a
//! script can read them.
//!
//! ```text
//! nrg data synthetic --images 10000 --seed 1 --out data/ellipses
//! nrg data fashion-mnist --split test --out data/fmnist-test
//! nrg data folder --dir pictures/ --size 32 --channels rgb --fit crop --out data/pictures
//! ```
//!
//! Each writes `OUT/images.npy` (`[N, C, H, W]`, f32 pixel levels 0–255: dequantisation
//! happens at training), `OUT/grid.png` (the first 64 images), and `OUT/summary.json`
//! (kind, shape, real pixels per image — 784 for Fashion-MNIST padded to 32×32 — and the
//! source); the synthetic set adds `factors.csv` (per ellipse: image, item, intensity, angle,
//! size), Fashion-MNIST `labels.csv`. The readers are [`nrg_images`]'s.

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use nrg_flow::data::write_npy_f32;
use nrg_images::ImageSet;
use nrg_images::folder::{Channels, Fit, FolderOptions, read_folder};
use nrg_images::grid::{GridOptions, write_grid};
use nrg_images::idx::{Split, fashion_mnist};
use nrg_images::synthetic::{SyntheticOptions, multiscale_ellipses};
use nrg_run::dir::{write_atomic, write_json};
use serde_json::json;
use std::path::PathBuf;

/// Arguments of `nrg data`.
#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    set: DataSet,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SplitArg {
    /// 60 000 training images.
    Train,
    /// 10 000 test images.
    Test,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ChannelsArg {
    /// Luma, one channel.
    Gray,
    /// Red, green, blue.
    Rgb,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum FitArg {
    /// Resize to the square (aspect ratio not kept).
    Resize,
    /// Crop the largest centred square, then resize.
    Crop,
}

#[derive(Subcommand, Debug)]
enum DataSet {
    /// The multi-scale synthetic set: 4×4 rotated ellipses on 32×32, an image-wide intensity
    /// and per-ellipse angles and sizes, with the factors in factors.csv.
    Synthetic {
        /// Images to draw.
        #[arg(long, default_value_t = 10_000)]
        images: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Fashion-MNIST from Debian's dataset-fashion-mnist (IDX files), padded to 32×32.
    FashionMnist {
        /// The split.
        #[arg(long, value_enum)]
        split: SplitArg,
        /// Folder of the IDX files [default: /usr/share/datasets/fashion-mnist].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// A folder of PNG/JPEG pictures, brought to size × size.
    Folder {
        /// The folder of pictures.
        #[arg(long)]
        dir: PathBuf,
        /// Side of the square images (a power of two).
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// Grayscale or RGB.
        #[arg(long, value_enum, default_value_t = ChannelsArg::Gray)]
        channels: ChannelsArg,
        /// Resize, or centre-crop then resize.
        #[arg(long, value_enum, default_value_t = FitArg::Resize)]
        fit: FitArg,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Writes `images.npy`, `grid.png` and `summary.json` of `set` into `out`.
fn write_set(set: &ImageSet, out: &std::path::Path, source: serde_json::Value) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let levels: Vec<f32> = set.pixels.iter().map(|&v| v as f32).collect();
    write_npy_f32(&out.join("images.npy"), &levels, &set.shape)?;
    let shown = set.slice(0..set.len().min(64));
    write_grid(
        &out.join("grid.png"),
        &shown,
        &GridOptions { cols: 8, scale: 2 },
    )?;
    write_json(
        &out.join("summary.json"),
        &json!({
            "source": source,
            "shape": set.shape,
            "real_pixels_per_image": set.real_dims,
            "values": "pixel levels 0-255 as f32 (dequantise at training)",
        }),
    )?;
    println!(
        "{} images of {:?} ({} real pixels each) → {}",
        set.len(),
        &set.shape[1..],
        set.real_dims,
        out.join("images.npy").display()
    );
    Ok(())
}

/// `nrg data …`.
pub fn run(args: DataArgs) -> Result<()> {
    match args.set {
        DataSet::Synthetic { images, seed, out } => {
            let (set, factors) = multiscale_ellipses(&SyntheticOptions { images, seed })?;
            let source = json!({"kind": "synthetic-ellipses", "images": images, "seed": seed});
            write_set(&set, &out, source)?;
            write_atomic(&out.join("factors.csv"), factors.to_csv().as_bytes())?;
            println!("factors → {}", out.join("factors.csv").display());
        }
        DataSet::FashionMnist { split, dir, out } => {
            let s = match split {
                SplitArg::Train => Split::Train,
                SplitArg::Test => Split::Test,
            };
            let set = fashion_mnist(dir.as_deref(), s)?;
            let source = json!({
                "kind": "fashion-mnist",
                "split": format!("{split:?}").to_lowercase(),
                "dir": dir.map_or(nrg_images::idx::FASHION_MNIST_DIR.into(), |d| d.display().to_string()),
            });
            write_set(&set, &out, source)?;
            if let Some(labels) = &set.labels {
                let mut csv = String::from("image,label\n");
                for (i, l) in labels.iter().enumerate() {
                    csv.push_str(&format!("{i},{l}\n"));
                }
                write_atomic(&out.join("labels.csv"), csv.as_bytes())?;
            }
        }
        DataSet::Folder {
            dir,
            size,
            channels,
            fit,
            out,
        } => {
            let options = FolderOptions {
                channels: match channels {
                    ChannelsArg::Gray => Channels::Gray,
                    ChannelsArg::Rgb => Channels::Rgb,
                },
                size,
                fit: match fit {
                    FitArg::Resize => Fit::Resize,
                    FitArg::Crop => Fit::CenterCrop,
                },
            };
            let set = read_folder(&dir, &options)?;
            let source = json!({"kind": "folder", "dir": dir.display().to_string(), "size": size});
            write_set(&set, &out, source)?;
        }
    }
    Ok(())
}
