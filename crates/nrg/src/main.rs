//! `nrg` — the neural-network renormalization group, on the command line.
//!
//! ```text
//! nrg exact ising --L 16 --beta 0.4406868          # Kaufman: ln Z, f, u, c per site
//! nrg mc ising --L 16 --beta 0.4 --algo wolff --sweeps 10000 --seed 1 --out runs/ising
//! nrg train --config configs/phi4-tutorial.toml   # train a flow into runs/phi4-tutorial/
//! nrg sample --run runs/phi4-tutorial --method nmcmc --samples 100000
//! nrg holo --run runs/complex-phi4-l32             # the holographic analysis
//! nrg train --config configs/images-synthetic.toml  # the RG flow on pictures
//! nrg holo-images --run runs/images-synthetic      # receptive fields, mixing, inpainting
//! nrg rg mcrg --L 64 --steps 3 --out runs/mcrg   # Swendsen's MCRG: y_t, y_h at K_c
//! nrg rbm flow --L 8 --out runs/rbm-flow          # the RBM flow against T_c
//! nrg info --device wgpu                           # check a backend
//! nrg data synthetic --out data/ellipses           # image data sets for the image flows
//! ```
//!
//! Every failure prints one line `nrg: error: …` and exits with status 2.

mod compare_cmd;
mod data_cmd;
mod device;
mod exact_cmd;
mod holo_cmd;
mod holo_images_cmd;
mod mc_cmd;
mod output;
mod plot;
mod rbm_cmd;
mod rg_cmd;
mod sample_cmd;
mod train_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Neural-network renormalization group: exact solutions, Monte Carlo baselines, flows.
#[derive(Parser, Debug)]
#[command(name = "nrg", version, about, long_about = None)]
struct Cli {
    /// Compute backend for tensor work (flows, training, sampling, holography, and the
    /// relaxed Ising model's matrices of `mc --relaxed`; the exact solutions and the Monte
    /// Carlo chains themselves run on the host whatever it says). `cpu` (alias
    /// `flex`) is always there; `ndarray` and `wgpu` need the cargo feature of that name:
    /// `nrg info` lists what this binary was built with.
    #[arg(long, global = true, value_enum, default_value_t = device::DeviceChoice::Cpu)]
    device: device::DeviceChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Exact solutions (Kaufman, Onsager, the Ising chain, the free field).
    Exact(exact_cmd::ExactArgs),
    /// Baseline Monte Carlo: Metropolis and Wolff (Ising), HMC and local Metropolis (φ⁴, O(n)).
    Mc(mc_cmd::McArgs),
    /// Train a flow from a run configuration (TOML), writing runs/NAME/.
    Train(train_cmd::TrainArgs),
    /// Sample a trained run: NIS, NMCMC, bulk HMC / local moves, or boundary HMC.
    Sample(sample_cmd::SampleArgs),
    /// The holographic analysis of a trained hierarchical flow: bulk geometry, correlations,
    /// mutual information, emergent distance, receptive fields, mixing, inpainting.
    Holo(holo_cmd::HoloArgs),
    /// The holographic tools on an image run: receptive fields per level, mixing, inpainting
    /// against baselines, which level carries which generating factor.
    HoloImages(holo_images_cmd::HoloImagesArgs),
    /// The classical real-space RG: Monte Carlo RG (linearised RG matrix, y_t, y_h),
    /// block-spin couplings, and block spins vs an RBM vs a trained flow side by side.
    Rg(rg_cmd::RgArgs),
    /// Restricted Boltzmann machines: the RBM flow of Ising configurations and its control.
    Rbm(rbm_cmd::RbmArgs),
    /// Show the compiled backends and check that the selected device runs a tensor op.
    Info,
    /// Image data sets: the synthetic multi-scale ellipses, Fashion-MNIST, a folder of
    /// pictures (images.npy, grid.png, summary.json).
    Data(data_cmd::DataArgs),
}

/// mimalloc instead of glibc's allocator: the tensor operations allocate and free
/// buffers of 0.1–1 MB at a high rate, which glibc serves by `mmap`/`munmap` with a page
/// fault per touched page (a flow's inference ran up to 2× slower; docs/decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The whole command on a worker of the CPU thread pool: each parallel kernel then
    // shares its work out without a sleep and wake-up of this thread (docs/decisions.md).
    let result = nrg_core::parallel::on_pool(|| match cli.command {
        Command::Exact(args) => exact_cmd::run(args),
        Command::Mc(args) => mc_cmd::run(args, cli.device),
        Command::Train(args) => train_cmd::run(args, cli.device),
        Command::Sample(args) => sample_cmd::run(args, cli.device),
        Command::Holo(args) => holo_cmd::run(args, cli.device),
        Command::HoloImages(args) => holo_images_cmd::run(args, cli.device),
        Command::Rg(args) => rg_cmd::run(args, cli.device),
        Command::Rbm(args) => rbm_cmd::run(args),
        Command::Info => device::info(cli.device),
        Command::Data(args) => data_cmd::run(args),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The causes after the message, each once: an error that prints its source
            // (`NrgError::Io`) would otherwise show it twice.
            let mut msg = e.to_string();
            let mut last = msg.clone();
            for cause in e.chain().skip(1).map(|c| c.to_string()) {
                if !last.ends_with(&cause) {
                    msg = format!("{msg}: {cause}");
                }
                last = cause;
            }
            let msg = msg.replace('\n', " ");
            eprintln!("nrg: error: {msg}");
            ExitCode::from(2)
        }
    }
}
