//! Image runs: the RG flow trained by maximum likelihood on pictures
//! ([`nrg_flow::image`]), from a configuration with a `[data]` table instead of an action:
//!
//! ```toml
//! name = "fashion-mnist"
//!
//! [data]
//! kind = "fashion-mnist"    # "synthetic", "fashion-mnist", "folder" or "npy"
//! split = "train"           # fashion-mnist: train on this split, test on the other
//! images = 60000            # training images (synthetic: how many to draw; others: at most)
//! test_images = 10000       # held out for bits/dim (fashion-mnist: of the other split)
//! # path = "pictures/"      # folder: its pictures; npy: images.npy of `nrg data`
//! # channels = 1            # folder: 1 (gray) or 3 (RGB)
//! # size = 32               # folder: side after resize/crop (a power of two)
//! # fit = "resize"          # folder: "resize" or "crop"
//! # seed = 1                # synthetic: the generator's seed
//! logit_alpha = 0.05
//!
//! [flow]                    # nrg_flow::FlowSpec (z2 = false)
//! block = 4
//! prior = "laplace"
//!
//! [train]                   # nrg_flow::image::ImageTrainSettings
//! steps = 2000
//! batch = 64
//!
//! [log]
//! every = 10                # a metrics.csv row every N steps
//! checkpoint_every = 100
//! test_every = 200          # test-set bits/dim every N steps (and at the end)
//!
//! [samples]
//! temperatures = [0.5, 0.75, 1.0]   # a PNG grid of samples per temperature
//! count = 64
//! ```
//!
//! Held-out images: Fashion-MNIST's other split (its first `test_images`); for the other
//! kinds the last `test_images` images, never trained on. The run directory is laid out as
//! [`crate::dir`] says, with image metrics ([`ImageMetricsRow`]), `summary.json`
//! ([`ImageTrainSummary`]), `data.png` (training images) and `samples-T*.png`. Bits per
//! dimension are per *real* pixel (784 for Fashion-MNIST padded to 32×32), as the summary
//! says.

use crate::dir::{CheckpointState, MetricsRecord, RunDir, write_atomic, write_json};
use crate::train::RunError;
use burn::module::Module;
use burn::tensor::Device;
use nrg_core::{Estimate, NrgError, Result};
use nrg_flow::FlowSpec;
use nrg_flow::data::read_configurations;
use nrg_flow::image::{
    EvalOptions, ImageStepStats, ImageTrainSettings, ImageTrainer, bits_per_dim_of, sample_images,
};
use nrg_flow::train::TrainError;
use nrg_images::ImageSet;
use nrg_images::folder::{Channels, Fit, FolderOptions, read_folder};
use nrg_images::grid::{GridOptions, write_grid};
use nrg_images::idx::{Split, fashion_mnist};
use nrg_images::likelihood::LogitTransform;
use nrg_images::synthetic::{SyntheticFactors, SyntheticOptions, multiscale_ellipses};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the pictures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageSource {
    /// The multi-scale synthetic ellipses ([`nrg_images::synthetic`]), drawn from `seed`.
    Synthetic,
    /// Fashion-MNIST (IDX files; Debian's `dataset-fashion-mnist` by default).
    FashionMnist,
    /// A folder of PNG/JPEG files.
    Folder,
    /// `images.npy` as `nrg data` writes it (levels 0–255).
    Npy,
}

/// A Fashion-MNIST split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitSpec {
    /// 60 000 images.
    Train,
    /// 10 000 images.
    Test,
}

/// How folder pictures are brought to a square.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FitSpec {
    /// Resize (aspect ratio not kept).
    Resize,
    /// Centre-crop, then resize.
    Crop,
}

fn default_test_images() -> usize {
    1000
}

fn default_alpha() -> f64 {
    0.05
}

/// The `[data]` table of an image run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDataSpec {
    /// The source.
    pub kind: ImageSource,
    /// The folder (folder, fashion-mnist) or file (npy); relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Fashion-MNIST's training split (default `train`); the other one is held out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitSpec>,
    /// Folder: 1 (gray) or 3 (RGB) channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// Folder: side of the square images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// Folder: resize or crop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<FitSpec>,
    /// Training images (synthetic: how many to draw, default 10 000; others: at most this
    /// many, default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<usize>,
    /// Held-out images for bits/dim.
    #[serde(default = "default_test_images")]
    pub test_images: usize,
    /// Synthetic: the generator's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `α` of the logit transform, in `(0, ½)`.
    #[serde(default = "default_alpha")]
    pub logit_alpha: f64,
}

/// Training and held-out images.
#[derive(Clone, Debug)]
pub struct ImageData {
    /// Training images.
    pub train: ImageSet,
    /// Held-out images.
    pub test: ImageSet,
    /// The generating factors of the held-out images (synthetic set only).
    pub test_factors: Option<SyntheticFactors>,
    /// Where they came from, in words.
    pub source: String,
}

impl ImageDataSpec {
    /// Checks that every option applies to the kind and has a valid value.
    pub fn check(&self) -> Result<()> {
        let only = |name: &str, set: bool, kinds: &[ImageSource]| -> Result<()> {
            if set && !kinds.contains(&self.kind) {
                return Err(NrgError::param(
                    name,
                    format!("does not apply to data of kind {:?}", self.kind),
                ));
            }
            Ok(())
        };
        use ImageSource::*;
        only("path", self.path.is_some(), &[FashionMnist, Folder, Npy])?;
        only("split", self.split.is_some(), &[FashionMnist])?;
        only("channels", self.channels.is_some(), &[Folder])?;
        only("size", self.size.is_some(), &[Folder])?;
        only("fit", self.fit.is_some(), &[Folder])?;
        only("seed", self.seed.is_some(), &[Synthetic])?;
        if matches!(self.kind, Folder | Npy) && self.path.is_none() {
            return Err(NrgError::param(
                "path",
                format!("data of kind {:?} needs `path`", self.kind),
            ));
        }
        if let Some(c) = self.channels
            && c != 1
            && c != 3
        {
            return Err(NrgError::param(
                "channels",
                format!("must be 1 or 3, got {c}"),
            ));
        }
        if self.images == Some(0) || self.test_images == 0 {
            return Err(NrgError::param("images/test_images", "must be at least 1"));
        }
        if !(self.logit_alpha > 0.0 && self.logit_alpha < 0.5) {
            return Err(NrgError::param(
                "logit_alpha",
                format!("must be in (0, ½), got {}", self.logit_alpha),
            ));
        }
        Ok(())
    }

    /// The logit transform.
    pub fn transform(&self) -> LogitTransform {
        LogitTransform {
            alpha: self.logit_alpha,
        }
    }

    /// Reads, draws or installs the images and splits off the held-out ones.
    pub fn load(&self) -> Result<ImageData> {
        self.check()?;
        let cap = |set: ImageSet| match self.images {
            Some(n) if n < set.len() => set.slice(0..n),
            _ => set,
        };
        let hold_out = |set: ImageSet, what: &str| -> Result<(ImageSet, ImageSet)> {
            let n = set.len();
            if n <= self.test_images {
                return Err(NrgError::InvalidData(format!(
                    "{what} has {n} images: too few to hold out test_images = {} and train on the rest",
                    self.test_images
                )));
            }
            Ok((
                set.slice(0..n - self.test_images),
                set.slice(n - self.test_images..n),
            ))
        };
        match self.kind {
            ImageSource::Synthetic => {
                let seed = self.seed.unwrap_or(1);
                let images = self.images.unwrap_or(10_000);
                let (set, factors) = multiscale_ellipses(&SyntheticOptions {
                    images: images + self.test_images,
                    seed,
                })?;
                let (train, test) = hold_out(set, "the synthetic set")?;
                let items = nrg_images::synthetic::GRID * nrg_images::synthetic::GRID;
                let test_factors = SyntheticFactors {
                    intensity: factors.intensity[images..].to_vec(),
                    angle: factors.angle[images * items..].to_vec(),
                    size: factors.size[images * items..].to_vec(),
                };
                Ok(ImageData {
                    train,
                    test,
                    test_factors: Some(test_factors),
                    source: format!("synthetic multi-scale ellipses, seed {seed}"),
                })
            }
            ImageSource::FashionMnist => {
                let (train_split, test_split) = match self.split.unwrap_or(SplitSpec::Train) {
                    SplitSpec::Train => (Split::Train, Split::Test),
                    SplitSpec::Test => (Split::Test, Split::Train),
                };
                let dir = self.path.as_deref();
                let train = cap(fashion_mnist(dir, train_split)?);
                let test = fashion_mnist(dir, test_split)?;
                let test = test.slice(0..self.test_images.min(test.len()));
                Ok(ImageData {
                    train,
                    test,
                    test_factors: None,
                    source: format!(
                        "Fashion-MNIST, trained on {train_split:?}, tested on {test_split:?}"
                    ),
                })
            }
            ImageSource::Folder => {
                let dir = self.path.as_deref().unwrap_or(Path::new("."));
                let options = FolderOptions {
                    channels: if self.channels == Some(3) {
                        Channels::Rgb
                    } else {
                        Channels::Gray
                    },
                    size: self.size.unwrap_or(32),
                    fit: match self.fit.unwrap_or(FitSpec::Resize) {
                        FitSpec::Resize => Fit::Resize,
                        FitSpec::Crop => Fit::CenterCrop,
                    },
                };
                let set = read_folder(dir, &options)?;
                let what = format!("the folder {}", dir.display());
                let (train, test) = hold_out(set, &what)?;
                Ok(ImageData {
                    train: cap(train),
                    test,
                    test_factors: None,
                    source: format!("pictures in {}", dir.display()),
                })
            }
            ImageSource::Npy => {
                let path = self.path.as_deref().unwrap_or(Path::new("images.npy"));
                let set = read_levels(path)?;
                let (train, test) = hold_out(set, &path.display().to_string())?;
                Ok(ImageData {
                    train: cap(train),
                    test,
                    test_factors: None,
                    source: format!("{}", path.display()),
                })
            }
        }
    }
}

/// Pixel levels from an `images.npy` of `nrg data` (values must be integers in `0 … 255`);
/// the real pixels per image from the `summary.json` beside it, where there is one.
pub fn read_levels(path: &Path) -> Result<ImageSet> {
    let (values, shape) = read_configurations(path)?;
    let mut pixels = Vec::with_capacity(values.len());
    for (i, &v) in values.iter().enumerate() {
        if !(0.0..=255.0).contains(&v) || v.fract() != 0.0 {
            return Err(NrgError::InvalidData(format!(
                "{}: value {i} is {v}, not a pixel level 0 … 255",
                path.display()
            )));
        }
        pixels.push(v as u8);
    }
    let mut set = ImageSet::new(pixels, shape)?;
    let summary = path.with_file_name("summary.json");
    if let Ok(text) = std::fs::read_to_string(&summary)
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && let Some(real) = v.get("real_pixels_per_image").and_then(|r| r.as_u64())
    {
        let real = real as usize;
        if real == 0 || real > set.dims() {
            return Err(NrgError::InvalidData(format!(
                "{}: real_pixels_per_image = {real} does not fit images of {} pixels",
                summary.display(),
                set.dims()
            )));
        }
        set.real_dims = real;
    }
    Ok(set)
}

/// Logging of an image run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageLogSettings {
    /// Steps between rows of `metrics.csv`.
    pub every: usize,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Steps between test-set bits/dim.
    pub test_every: usize,
}

impl Default for ImageLogSettings {
    fn default() -> Self {
        Self {
            every: 10,
            checkpoint_every: 100,
            test_every: 200,
        }
    }
}

/// The sample grids written at the end of training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleGrids {
    /// Prior temperatures, one grid each.
    pub temperatures: Vec<f64>,
    /// Images per grid.
    pub count: usize,
}

impl Default for SampleGrids {
    fn default() -> Self {
        Self {
            temperatures: vec![0.5, 0.75, 1.0],
            count: 64,
        }
    }
}

/// Everything that defines an image run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRunConfig {
    /// Name of the run directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The images.
    pub data: ImageDataSpec,
    /// The flow.
    #[serde(default)]
    pub flow: FlowSpec,
    /// The optimisation.
    #[serde(default)]
    pub train: ImageTrainSettings,
    /// Logging, checkpoints and test evaluations.
    #[serde(default)]
    pub log: ImageLogSettings,
    /// Sample grids.
    #[serde(default)]
    pub samples: SampleGrids,
}

/// Whether a configuration's TOML text describes an image run (a `[data]` table).
pub fn is_image_config(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .ok()
        .is_some_and(|t| t.get("data").is_some_and(|d| d.is_table()))
}

impl ImageRunConfig {
    /// Reads and checks a configuration file; a relative `data.path` is resolved against the
    /// file's directory, and the name defaults to the file's stem.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| NrgError::Io {
            path: format!("cannot read config {}", path.display()),
            source: e,
        })?;
        let mut config: ImageRunConfig = toml::from_str(&text)
            .map_err(|e| NrgError::InvalidData(format!("config {}: {e}", path.display())))?;
        if let Some(p) = &config.data.path {
            let base = path.parent().unwrap_or(Path::new("."));
            let abs = std::path::absolute(base.join(p))
                .map_err(|e| NrgError::param("path", format!("{}: {e}", p.display())))?;
            config.data.path = Some(abs);
        }
        if config.name.is_none() {
            config.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        config.check()?;
        Ok(config)
    }

    /// Checks what can be checked without reading images.
    pub fn check(&self) -> Result<()> {
        crate::config::check_run_name(self.name.as_deref())?;
        self.data.check()?;
        self.train.validate()?;
        let l = &self.log;
        if l.every == 0 || l.checkpoint_every == 0 || l.test_every == 0 {
            return Err(NrgError::param(
                "log",
                "`every`, `checkpoint_every` and `test_every` must be at least 1",
            ));
        }
        if self.flow.z2 {
            return Err(NrgError::param(
                "z2",
                "images have no x → −x symmetry; set z2 = false",
            ));
        }
        if self.samples.count == 0
            || self
                .samples
                .temperatures
                .iter()
                .any(|t| !(t.is_finite() && *t > 0.0))
        {
            return Err(NrgError::param(
                "samples",
                "need count ≥ 1 and positive, finite temperatures",
            ));
        }
        Ok(())
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| NrgError::InvalidData(format!("config: {e}")))
    }
}

impl RunDir {
    /// The image-run configuration of this run, checked.
    pub fn image_config(&self) -> Result<ImageRunConfig> {
        ImageRunConfig::load(&self.config_path())
    }

    /// Whether this run is an image run.
    pub fn is_image_run(&self) -> bool {
        std::fs::read_to_string(self.config_path()).is_ok_and(|t| is_image_config(&t))
    }

    /// The image-run configuration and the trained flow of the newest checkpoint.
    pub fn load_image_model(
        &self,
        device: &Device,
    ) -> Result<(ImageRunConfig, nrg_flow::FlowModel)> {
        let config = self.image_config()?;
        let (c, l) = image_shape(&config)?;
        let model = config.flow.build(c, l, device)?;
        Ok((config, self.load_checkpoint_weights(model)?))
    }
}

/// `[C, L]` of the images a configuration describes, without reading them all where the
/// kind says (synthetic, Fashion-MNIST: 1 channel of 32×32; folder: its options; npy: the
/// file's header).
fn image_shape(config: &ImageRunConfig) -> Result<(usize, usize)> {
    let d = &config.data;
    Ok(match d.kind {
        ImageSource::Synthetic | ImageSource::FashionMnist => (1, 32),
        ImageSource::Folder => (d.channels.unwrap_or(1), d.size.unwrap_or(32)),
        ImageSource::Npy => {
            let set = read_levels(d.path.as_deref().unwrap_or(Path::new("images.npy")))?;
            (set.shape[1], set.shape[2])
        }
    })
}

/// One row of an image run's `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageMetricsRow {
    /// The step.
    pub step: usize,
    /// The loss, nats per dimension of `y`.
    pub loss: f64,
    /// Bits per real pixel of the training batch.
    pub bits_per_dim: f64,
    /// Bits per real pixel of the held-out images, where evaluated at this step.
    pub test_bits_per_dim: Option<f64>,
    /// Its standard error.
    pub test_bits_per_dim_error: Option<f64>,
    /// Learning rate.
    pub lr: f64,
    /// Seconds since the run began (all sessions).
    pub elapsed_s: f64,
}

impl MetricsRecord for ImageMetricsRow {
    fn step(&self) -> usize {
        self.step
    }
}

/// What `summary.json` of an image run records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageTrainSummary {
    /// The run's name.
    pub name: Option<String>,
    /// Where the images came from.
    pub data: String,
    /// `[C, H, W]` of an image.
    pub image_shape: [usize; 3],
    /// Training images.
    pub train_images: usize,
    /// Held-out images.
    pub test_images: usize,
    /// Real pixels per image that bits/dim are reported per (784 for padded Fashion-MNIST).
    pub bits_per: usize,
    /// Trainable parameters of the flow.
    pub parameters: usize,
    /// The device it ran on.
    pub device: String,
    /// Steps completed in all sessions.
    pub steps: usize,
    /// Steps of this session.
    pub steps_this_session: usize,
    /// Seconds per step in this session.
    pub seconds_per_step: f64,
    /// Wall time of all sessions (training and test evaluations).
    pub seconds_total: f64,
    /// Bits per real pixel on the held-out images at the end (dequantised: an upper bound on
    /// the discrete code length), with its standard error over the images.
    pub test_bits_per_dim: Estimate,
    /// The last training step.
    pub last_step: ImageStepStats,
    /// The sample grids written (file name, temperature).
    pub sample_grids: Vec<(String, f64)>,
}

/// Where image training starts.
#[derive(Clone, Debug)]
pub enum ImageStart {
    /// A new run `runs/NAME`; `replace` allows replacing one of the same name.
    New {
        /// The directory of run directories.
        runs: PathBuf,
        /// The configuration.
        config: Box<ImageRunConfig>,
        /// Replace an existing run.
        replace: bool,
    },
    /// An existing run continued from its last checkpoint, to `steps` steps if given, with
    /// a new `lr` if given.
    Resume {
        /// The run directory.
        dir: PathBuf,
        /// Total steps.
        steps: Option<usize>,
        /// Learning rate.
        lr: Option<f64>,
    },
}

/// Called as image training goes.
pub trait ImageObserver {
    /// Training is about to run steps `start .. total`.
    fn started(&mut self, _start: usize, _total: usize) {}
    /// A step was evaluated.
    fn step(&mut self, _stats: &ImageStepStats) {}
    /// The held-out bits/dim were evaluated.
    fn tested(&mut self, _step: usize, _bpd: &Estimate) {}
}

impl ImageObserver for crate::train::Silent {}

/// Trains an image run from `start` on the autodiff `device` (named `device_name`),
/// writing its directory as it goes (module docs).
pub fn train_images(
    start: ImageStart,
    device: &Device,
    device_name: &str,
    observer: &mut dyn ImageObserver,
) -> std::result::Result<(RunDir, ImageTrainSummary), RunError> {
    let (config, existing) = match &start {
        ImageStart::New { config, .. } => {
            config.check()?;
            ((**config).clone(), None)
        }
        ImageStart::Resume { dir, steps, lr } => {
            let run = RunDir::open(dir.clone())?;
            let mut config = run.image_config()?;
            if let Some(s) = steps {
                config.train.steps = *s;
            }
            if let Some(lr) = lr {
                config.train.lr = *lr;
                config.train.lr_min = config.train.lr_min.min(*lr);
            }
            config.check()?;
            (config, Some(run))
        }
    };
    let data = config.data.load()?;
    let transform = config.data.transform();
    device.seed(config.train.seed);
    let [_, c, h, w] = data.train.shape;
    if h != w {
        return Err(NrgError::InvalidData(format!("images are {h}×{w}, not square")).into());
    }
    let model = config.flow.build(c, h, device)?;
    let mut trainer = ImageTrainer::new(
        model,
        data.train.clone(),
        transform,
        config.train.clone(),
        device,
    )?;
    let mut elapsed0 = 0.0;
    let mut dir = None;
    if let Some(run) = existing {
        let (restored, state) = run.restore_with(trainer, |t, ckpt, step| t.load(ckpt, step))?;
        trainer = restored;
        write_atomic(&run.config_path(), config.to_toml()?.as_bytes())?;
        elapsed0 = state.elapsed_s;
        dir = Some(run);
    }
    let total = config.train.steps;
    let start_step = trainer.step_index();
    if start_step >= total {
        return Err(RunError::Complete {
            done: start_step,
            total,
        });
    }
    let mut rows: Vec<ImageMetricsRow> = match &dir {
        Some(d) => d.read_metrics(start_step)?,
        None => Vec::new(),
    };
    let t0 = Instant::now();
    let elapsed = || elapsed0 + t0.elapsed().as_secs_f64();
    let eval = EvalOptions::default();
    let test = |trainer: &ImageTrainer| {
        bits_per_dim_of(trainer.model(), &data.test, &transform, eval, device).map(|r| r.0)
    };
    let log = &config.log;
    observer.started(start_step, total);
    let mut last = None;
    let mut train_seconds = 0.0;
    while trainer.step_index() < total {
        let step = trainer.step_index();
        let ts = Instant::now();
        let pending = trainer.evaluate();
        if dir.is_none() {
            if let Err(e) = &pending {
                return Err(NrgError::InvalidData(format!(
                    "the first step failed ({e}); no run was written"
                ))
                .into());
            }
            let ImageStart::New { runs, replace, .. } = &start else {
                unreachable!("a resumed run has its directory")
            };
            let name = config.name.clone().unwrap_or_else(|| "images".into());
            dir = Some(RunDir::create_with(
                runs,
                &name,
                &config.to_toml()?,
                &trainer,
                *replace,
            )?);
            if let Some(d) = &dir {
                let shown = data.train.slice(0..data.train.len().min(64));
                write_grid(
                    &d.path().join("data.png"),
                    &shown,
                    &GridOptions { cols: 8, scale: 2 },
                )?;
            }
        }
        let Some(d) = &dir else {
            unreachable!("created above")
        };
        let pending = match pending {
            Ok(p) => p,
            Err(TrainError::Diverged { step, what }) => {
                d.write_metrics(&rows)?;
                let checkpoint = d.checkpoint_state()?.step;
                return Err(RunError::Diverged {
                    step,
                    what,
                    checkpoint,
                    dir: d.path().to_path_buf(),
                });
            }
            Err(TrainError::Other(e)) => return Err(e.into()),
        };
        let stats = pending.stats;
        if step.is_multiple_of(log.checkpoint_every) && step > start_step {
            let state = CheckpointState {
                step,
                elapsed_s: elapsed(),
            };
            d.write_checkpoint(&trainer, &state)?;
        }
        trainer.update(pending);
        train_seconds += ts.elapsed().as_secs_f64();
        observer.step(&stats);
        let tested =
            if (step > start_step && step.is_multiple_of(log.test_every)) || step + 1 == total {
                let bpd = test(&trainer)?;
                observer.tested(step + 1, &bpd);
                Some(bpd)
            } else {
                None
            };
        if step.is_multiple_of(log.every) || step + 1 == total || tested.is_some() {
            rows.push(ImageMetricsRow {
                step,
                loss: stats.loss,
                bits_per_dim: stats.bits_per_dim,
                test_bits_per_dim: tested.map(|e| e.value),
                test_bits_per_dim_error: tested.map(|e| e.error),
                lr: stats.lr,
                elapsed_s: elapsed(),
            });
            d.write_metrics(&rows)?;
        }
        last = Some((stats, tested));
    }
    let Some(d) = dir else {
        unreachable!("at least one step ran")
    };
    let state = CheckpointState {
        step: trainer.step_index(),
        elapsed_s: elapsed(),
    };
    d.write_checkpoint(&trainer, &state)?;
    let Some((last, Some(test_bpd))) = last else {
        unreachable!("the last step is tested")
    };
    let mut grids = Vec::new();
    for &t in &config.samples.temperatures {
        let set = sample_images(trainer.model(), config.samples.count, t, &transform, device)?;
        let name = format!("samples-T{t:.2}.png");
        write_grid(
            &d.path().join(&name),
            &set,
            &GridOptions { cols: 8, scale: 2 },
        )?;
        grids.push((name, t));
    }
    let steps_run = trainer.step_index() - start_step;
    let summary = ImageTrainSummary {
        name: config.name.clone(),
        data: data.source.clone(),
        image_shape: [c, h, w],
        train_images: data.train.len(),
        test_images: data.test.len(),
        bits_per: data.train.real_dims,
        parameters: trainer.model().num_params(),
        device: device_name.to_string(),
        steps: trainer.step_index(),
        steps_this_session: steps_run,
        seconds_per_step: train_seconds / steps_run as f64,
        seconds_total: state.elapsed_s,
        test_bits_per_dim: test_bpd,
        last_step: last,
        sample_grids: grids,
    };
    write_json(&d.summary_path(), &summary)?;
    Ok((d, summary))
}
