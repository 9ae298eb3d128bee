//! `cargo xtask …` — the project's pipelines.
//!
//! - `cargo xtask ci`: `cargo fmt --check`, the invariants of `ARCHITECTURE.md` that the
//!   manifests show ([`arch`]), `cargo clippy --workspace --all-targets -- -D warnings`, a
//!   check that `nrg` builds with the `ndarray` backend alone (no `flex`), then the test
//!   suite (`cargo test --workspace`). This is what `.ci/run` runs.
//! - `cargo xtask test`: the test suite alone.
//! - `cargo xtask demo [--out DIR]`: the small end-to-end demo on the CPU default (exact
//!   Ising solution, Wolff and Metropolis chains checked against it, a free-field HMC run,
//!   a flow for Ising L = 4 with NIS, BAR against Wolff configurations, AIS and NMCMC).
//! - `cargo xtask bench [--features F] [-- criterion args]`: the criterion benchmarks of
//!   `benches/` (flows, chains; `F` selects their backend) and of `nrg-kernels`.
//! - `cargo xtask reproduce STUDY [--runs DIR]`: one of the studies in `docs/benchmarks.md`
//!   end to end with the shipped configs and a release build (data, training, sampling);
//!   the results land in `DIR/…/summary.json`.

mod arch;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::Command;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// fmt check, clippy -D warnings, and the tests.
    Ci,
    /// The test suite.
    Test,
    /// A small end-to-end demo on the CPU.
    Demo {
        /// Where the demo writes its results.
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
    },
    /// A study of docs/benchmarks.md end to end (release build; tens of minutes).
    Reproduce {
        /// Which study.
        study: Study,
        /// Where the runs go.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
    },
    /// Criterion benchmarks (`benches/` and `crates/nrg-kernels/benches`).
    Bench {
        /// Extra cargo features of the benches crate (e.g. `wgpu`); the kernels have none.
        #[arg(long)]
        features: Option<String>,
        /// Arguments passed to criterion (e.g. a filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn test() -> Result<()> {
    cargo(&["test", "--workspace", "--no-fail-fast"])
}

/// `nrg ARGS` through `cargo run`, in the dev profile (the demo) or the release one (the
/// studies).
fn nrg_in(release: bool, args: &[&str]) -> Result<()> {
    let mut full = vec!["run", "--quiet", "-p", "nrg"];
    if release {
        full.push("--release");
    }
    full.push("--");
    full.extend_from_slice(args);
    cargo(&full)
}

fn nrg(args: &[&str]) -> Result<()> {
    nrg_in(false, args)
}

fn nrg_release(args: &[&str]) -> Result<()> {
    nrg_in(true, args)
}

/// `nrg sample --run RUN --method METHOD --samples N EXTRA…`.
fn sample(release: bool, run: &str, method: &str, samples: &str, extra: &[&str]) -> Result<()> {
    let mut args = vec![
        "sample",
        "--run",
        run,
        "--method",
        method,
        "--samples",
        samples,
    ];
    args.extend_from_slice(extra);
    nrg_in(release, &args)
}

/// The studies `cargo xtask reproduce` knows.
#[derive(Clone, Copy, ValueEnum)]
enum Study {
    /// Ising L = 16 at β_c: exact Wolff data, a flow trained on both KL directions, NIS
    /// `ln Z_Ising` against Kaufman from 10⁵ samples.
    IsingL16Betac,
    /// Free energies at Ising L = 16, β_c: the NIS flow of `ising-l16-betac` (trained here
    /// if absent), NIS and BAR (against a fresh Wolff chain) with 10⁵ flow samples, AIS
    /// with 512 particles, and thermodynamic integration at L = 16 and 32 as the classical
    /// reference.
    FreeEnergy,
    /// The φ⁴ tutorial point: flat flow, NIS and NMCMC.
    Phi4Tutorial,
    /// Complex φ⁴, L = 32: bulk HMC against boundary HMC.
    ComplexPhi4L32,
    /// The holographic study: complex φ⁴ at L = 32 in its critical and its disordered phase —
    /// the phase check with baseline HMC, training, and `nrg holo` on exact (chain) and on
    /// reweighted flow samples.
    Holography,
    /// Images: the synthetic multi-scale set (drawn) and Fashion-MNIST (Debian's
    /// `dataset-fashion-mnist`, installed by apt-get if missing) — the data sets written,
    /// training with test-set bits/dim and sample grids, then `nrg holo-images` (receptive
    /// fields, mixing, inpainting, factor correlations on the synthetic set). About an hour.
    Images,
}

fn reproduce(study: Study, runs: PathBuf) -> Result<()> {
    let runs = runs.to_str().context("runs path is not UTF-8")?.to_string();
    let train = |config: &str, extra: &[&str]| -> Result<()> {
        let mut args = vec!["train", "--config", config, "--runs", &runs, "--force"];
        args.extend_from_slice(extra);
        nrg_release(&args)
    };
    match study {
        Study::IsingL16Betac => {
            println!("== exact relaxed-Ising data: Wolff chain + Hubbard-Stratonovich fields");
            nrg_release(&[
                "mc",
                "ising",
                "--L",
                "16",
                "--beta",
                "0.44068679350977147",
                "--algo",
                "wolff",
                "--sweeps",
                "100000",
                "--seed",
                "7",
                "--relaxed",
                "--out",
                &format!("{runs}/wolff-l16-betac"),
            ])?;
            println!("== train the flow (reverse + forward KL)");
            let data = format!("{runs}/wolff-l16-betac/relaxed.npy");
            train("configs/ising-l16-betac-nis.toml", &["--data", &data])?;
            println!("== NIS, 10^5 samples: ln Z_Ising against Kaufman");
            sample(
                true,
                &format!("{runs}/ising-l16-betac-nis"),
                "nis",
                "100000",
                &[],
            )
        }
        Study::FreeEnergy => {
            let beta = "0.44068679350977147";
            let run = format!("{runs}/ising-l16-betac-nis");
            let wolff = |seed: &str, out: &str| -> Result<()> {
                nrg_release(&[
                    "mc",
                    "ising",
                    "--L",
                    "16",
                    "--beta",
                    beta,
                    "--algo",
                    "wolff",
                    "--sweeps",
                    "100000",
                    "--seed",
                    seed,
                    "--relaxed",
                    "--out",
                    out,
                ])
            };
            if !std::path::Path::new(&run).join("checkpoint").exists() {
                println!("== training data and the NIS flow (as `reproduce ising-l16-betac`)");
                let data = format!("{runs}/wolff-l16-betac");
                wolff("7", &data)?;
                train(
                    "configs/ising-l16-betac-nis.toml",
                    &["--data", &format!("{data}/relaxed.npy")],
                )?;
            }
            println!("== NIS, 10^5 flow samples");
            sample(true, &run, "nis", "100000", &[])?;
            println!(
                "== BAR, 10^5 flow samples against a fresh Wolff chain (not the training data)"
            );
            let target = format!("{runs}/wolff-l16-betac-seed8");
            wolff("8", &target)?;
            let data = format!("{target}/relaxed.npy");
            sample(true, &run, "bar", "100000", &["--target-data", &data])?;
            println!("== AIS from the same flow: 512 particles, HMC in the latent space");
            let ais = [
                "--batch",
                "256",
                "--pilot",
                "128",
                "--cess",
                "0.7",
                "--moves",
                "1",
                "--leapfrog",
                "4",
            ];
            sample(true, &run, "ais", "512", &ais)?;
            // L = 32: four graded panels (60 nodes) resolve the specific-heat peak below
            // β_c and reach σ ≈ 0.016 (docs/benchmarks.md, session 17)
            for (l, sweeps, panels, seed) in [("16", "100000", "1", "1"), ("32", "80000", "4", "2")]
            {
                println!("== thermodynamic integration, L = {l}, {panels} panel(s)");
                nrg_release(&[
                    "mc",
                    "ising",
                    "--L",
                    l,
                    "--beta",
                    beta,
                    "--algo",
                    "wolff",
                    "--sweeps",
                    sweeps,
                    "--seed",
                    seed,
                    "--ti",
                    "--ti-panels",
                    panels,
                    "--out",
                    &format!("{runs}/ti-ising-l{l}"),
                ])?;
            }
            Ok(())
        }
        Study::Phi4Tutorial => {
            train("configs/phi4-tutorial.toml", &[])?;
            let run = format!("{runs}/phi4-tutorial");
            sample(true, &run, "nis", "65536", &[])?;
            sample(true, &run, "nmcmc", "100000", &[])
        }
        Study::ComplexPhi4L32 => {
            train("configs/complex-phi4-l32.toml", &[])?;
            let run = format!("{runs}/complex-phi4-l32");
            sample(true, &run, "bulk-hmc", "200", &["--chains", "16"])?;
            sample(true, &run, "hmc", "20000", &[])
        }
        Study::Images => {
            let fmnist = std::path::Path::new(nrg_images_dir());
            if !fmnist.exists() {
                println!("== installing Debian's dataset-fashion-mnist");
                for args in [
                    &["update"][..],
                    &["install", "-y", "dataset-fashion-mnist"][..],
                ] {
                    let status = Command::new("apt-get").args(args).status()?;
                    if !status.success() {
                        bail!(
                            "apt-get {} failed: install dataset-fashion-mnist by hand",
                            args.join(" ")
                        );
                    }
                }
            }
            println!("== the data sets as files (images.npy, grid.png, factors/labels)");
            nrg_release(&[
                "data",
                "synthetic",
                "--images",
                "10000",
                "--seed",
                "1",
                "--out",
                &format!("{runs}/data-synthetic"),
            ])?;
            nrg_release(&[
                "data",
                "fashion-mnist",
                "--split",
                "test",
                "--out",
                &format!("{runs}/data-fashion-mnist-test"),
            ])?;
            for name in ["images-synthetic", "images-fashion-mnist"] {
                println!("== {name}: training (test bits/dim, sample grids)");
                train(&format!("configs/{name}.toml"), &[])?;
                println!("== {name}: receptive fields, mixing, inpainting");
                nrg_release(&["holo-images", "--run", &format!("{runs}/{name}")])?;
            }
            Ok(())
        }
        Study::Holography => {
            for (phase, t) in [("critical", "1.0"), ("disordered", "0.9")] {
                println!("== {phase} phase (t = {t}): baseline HMC at L = 16 and 32");
                for l in ["16", "32"] {
                    nrg_release(&[
                        "mc",
                        "on",
                        "--n",
                        "2",
                        "--L",
                        l,
                        "--t",
                        t,
                        "--mu",
                        "2",
                        "--lambda",
                        "1",
                        "--algo",
                        "hmc",
                        "--sweeps",
                        "4000",
                        "--seed",
                        "1",
                        "--out",
                        &format!("{runs}/holo-phase-{phase}-l{l}"),
                    ])?;
                }
                println!("== {phase} phase: train the flow");
                train(&format!("configs/holo-complex-phi4-{phase}.toml"), &[])?;
                let run = format!("{runs}/holo-complex-phi4-{phase}");
                println!("== {phase} phase: holography on exact samples of the boundary chain");
                nrg_release(&[
                    "holo",
                    "--run",
                    &run,
                    "--source",
                    "chain",
                    "--samples",
                    "4000",
                    "--every",
                    "10",
                    "--out",
                    &format!("{run}/holo-chain"),
                ])?;
                println!("== {phase} phase: holography on reweighted flow samples");
                nrg_release(&[
                    "holo",
                    "--run",
                    &run,
                    "--source",
                    "flow",
                    "--samples",
                    "20000",
                    "--out",
                    &format!("{run}/holo-flow"),
                ])?;
            }
            Ok(())
        }
    }
}

/// Where Debian's `dataset-fashion-mnist` puts the IDX files.
fn nrg_images_dir() -> &'static str {
    "/usr/share/datasets/fashion-mnist"
}

fn demo(out: PathBuf) -> Result<()> {
    let out = out
        .to_str()
        .context("output path is not UTF-8")?
        .to_string();
    println!("== exact: 2D Ising, L = 16, at beta_c (Kaufman)");
    nrg(&["exact", "ising", "--L", "16"])?;
    println!("== Wolff cluster chain, L = 16, beta = 0.4, against the exact energy");
    nrg(&[
        "mc",
        "ising",
        "--L",
        "16",
        "--beta",
        "0.4",
        "--algo",
        "wolff",
        "--sweeps",
        "20000",
        "--seed",
        "1",
        "--out",
        &format!("{out}/ising-wolff"),
    ])?;
    println!("== single-spin Metropolis chain, same point");
    nrg(&[
        "mc",
        "ising",
        "--L",
        "16",
        "--beta",
        "0.4",
        "--algo",
        "metropolis",
        "--sweeps",
        "20000",
        "--seed",
        "2",
        "--out",
        &format!("{out}/ising-metropolis"),
    ])?;
    println!("== HMC on the free field (m^2 = 0.5), L = 8, against the exact <phi^2>");
    nrg(&[
        "mc",
        "phi4",
        "--L",
        "8",
        "--m2",
        "0.5",
        "--algo",
        "hmc",
        "--sweeps",
        "5000",
        "--seed",
        "3",
        "--out",
        &format!("{out}/free-field-hmc"),
    ])?;
    println!("== HMC at the phi^4 tutorial point (m^2 = -4, lambda = 8), L = 8");
    nrg(&[
        "mc",
        "phi4",
        "--L",
        "8",
        "--m2=-4",
        "--lambda",
        "8",
        "--algo",
        "hmc",
        "--sweeps",
        "5000",
        "--seed",
        "4",
        "--out",
        &format!("{out}/phi4-hmc"),
    ])?;
    println!("== train a hierarchical flow for the Ising model, L = 4, at beta_c");
    nrg(&[
        "train",
        "--config",
        "configs/demo-ising-l4.toml",
        "--runs",
        &out,
        "--force",
    ])?;
    let run = format!("{out}/demo-ising-l4");
    println!("== neural importance sampling with it: ln Z against Kaufman");
    sample(false, &run, "nis", "65536", &[])?;
    println!("== Bennett's acceptance ratio between the flow and exact Wolff configurations");
    let wolff = format!("{out}/wolff-l4");
    nrg(&[
        "mc",
        "ising",
        "--L",
        "4",
        "--beta",
        "0.44068679350977147",
        "--algo",
        "wolff",
        "--sweeps",
        "65536",
        "--seed",
        "3",
        "--relaxed",
        "--out",
        &wolff,
    ])?;
    let data = format!("{wolff}/relaxed.npy");
    sample(false, &run, "bar", "65536", &["--target-data", &data])?;
    println!("== annealed importance sampling from the flow (HMC moves in the latent space)");
    sample(false, &run, "ais", "2048", &[])?;
    println!("== neural MCMC with it: the Ising energy against Kaufman");
    sample(false, &run, "nmcmc", "20000", &["--batch", "1024"])?;
    println!("demo results are in {out}/");
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Ci => {
            cargo(&["fmt", "--all", "--check"])?;
            arch::check()?;
            eprintln!("xtask: the architecture's invariants hold (ARCHITECTURE.md)");
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            // The program must build with another backend than the default one alone.
            cargo(&[
                "check",
                "-p",
                "nrg",
                "--no-default-features",
                "--features",
                "ndarray",
            ])?;
            test()
        }
        Task::Test => test(),
        Task::Demo { out } => demo(out),
        Task::Reproduce { study, runs } => reproduce(study, runs),
        Task::Bench { features, args } => {
            let mut benches = vec!["bench", "-p", "nrg-benches", "--bench", "*"];
            if let Some(f) = features.as_deref() {
                benches.extend(["--features", f]);
            }
            let mut kernels = vec!["bench", "-p", "nrg-kernels", "--bench", "*"];
            for run in [&mut benches, &mut kernels] {
                if !args.is_empty() {
                    run.push("--");
                    run.extend(args.iter().map(String::as_str));
                }
            }
            cargo(&benches)?;
            cargo(&kernels)
        }
    }
}
