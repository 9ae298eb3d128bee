//! `cargo xtask …` — the project's pipelines.
//!
//! - `cargo xtask ci`: `cargo fmt --check`, the invariants of `ARCHITECTURE.md` that the
//!   manifests show ([`arch`]), `cargo clippy --workspace --all-targets -- -D warnings`, a
//!   check that `nrg` builds with the `ndarray` backend alone (no `flex`), then the test
//!   suite (`cargo test --workspace`) and the CubeCL kernels' tests on software Vulkan
//!   (`test-wgpu`). This is what `.ci/run` runs.
//! - `cargo xtask test`: the test suite alone.
//! - `cargo xtask test-wgpu [--cli]`: the tests behind the `wgpu` features on a Vulkan device
//!   (Mesa's software one without a GPU): the CubeCL kernels, with `--cli` also the
//!   run-time switching test of `nrg`; the kernels' part is the last step of `ci`.
//! - `cargo xtask demo [--out DIR]`: the small end-to-end demo on the CPU default (exact
//!   Ising solution, Wolff and Metropolis chains checked against it, a free-field HMC run,
//!   a flow for Ising L = 4 with NIS, BAR against Wolff configurations, AIS and NMCMC).
//! - `cargo xtask bench [--features F] [-- criterion args]`: the criterion benchmarks of
//!   `benches/` (flows, chains; `F` selects their backend) and of `nrg-kernels`.
//! - `cargo xtask bench --backend flex,wgpu [--features vulkan] [-- filter]`: the flow
//!   benches once per backend and the table of medians and speed-ups over flex
//!   (`target/criterion/backends.md`, [`bench`]) of this run's results, written even when a
//!   backend fails after saving some; `cargo xtask bench-table` tables every result saved
//!   under the named baselines (earlier runs' too).
//! - `cargo xtask gpu-kit`: `.gpu/` with the benches built for flex + wgpu + vulkan (and
//!   a WGSL build as the fallback), this binary, the PyTorch peers and `measure.sh`, the
//!   GPU measurement of issue 21 in one command on a machine without a Rust toolchain.
//! - `cargo xtask reproduce STUDY [--runs DIR]`: one of the studies in `docs/benchmarks.md`
//!   end to end with the shipped configs and a release build (data, training, sampling);
//!   the results land in `DIR/…/summary.json` (`free-energy` also writes its table,
//!   [`free_energy`]).

mod arch;
mod bench;
mod free_energy;

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
    /// The wgpu tests on a Vulkan device (Mesa's software one without a GPU): the CubeCL
    /// kernels against the composite path (`nrg-layers`, feature `wgpu`); with `--cli` also
    /// `nrg`'s end-to-end run-time switching test. Built at opt-level 0 (decision 67).
    TestWgpu {
        /// Also the `nrg` program's wgpu test (another build of the tree: ~5 min to build,
        /// 2–3 min to run on software Vulkan).
        #[arg(long)]
        cli: bool,
    },
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
        /// Extra cargo features of the benches crate (e.g. `wgpu`, `vulkan`); the kernels
        /// have none.
        #[arg(long)]
        features: Option<String>,
        /// Run the flow benches once per backend (`flex,ndarray,wgpu`), each saved as a
        /// criterion baseline of that name, and write the table of this run's results,
        /// `target/criterion/backends.md` (median per backend, speed-up over flex, device
        /// names).
        #[arg(long, value_name = "LIST")]
        backend: Option<String>,
        /// Arguments passed to criterion (e.g. a filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The table of `bench --backend` from criterion baselines already saved (also runs on a
    /// machine without cargo, from the GPU kit).
    BenchTable {
        /// The criterion folder.
        #[arg(long)]
        criterion: PathBuf,
        /// The baselines (backends), flex first.
        #[arg(long, value_name = "LIST")]
        backend: String,
    },
    /// Prepares `.gpu/` for the GPU measurement on a machine without a Rust toolchain: the
    /// flow benches built with flex + wgpu + vulkan (and with flex + wgpu, WGSL, as the
    /// fallback), this xtask binary, the PyTorch peers
    /// (from `--peers`) and `measure.sh`; run there as `bash .gpu/measure.sh`.
    GpuKit {
        /// The PyTorch peers' folder.
        #[arg(long, default_value = "../shared/peers")]
        peers: PathBuf,
    },
}

/// The cargo that runs xtask (`$CARGO`), or `cargo`.
fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// `bench -p nrg-benches --bench flows` with exactly `features` (no defaults).
fn flows_bench_args(features: &str) -> Vec<&str> {
    vec![
        "bench",
        "-p",
        "nrg-benches",
        "--bench",
        "flows",
        "--no-default-features",
        "--features",
        features,
    ]
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = cargo_bin();
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

/// `cargo ARGS` with extra environment variables, its standard output returned (standard
/// error passes through).
fn cargo_stdout(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Result<String> {
    let cargo = cargo_bin();
    eprintln!("xtask: cargo {}", args.join(" "));
    let output = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !output.status.success() {
        print!("{}", String::from_utf8_lossy(&output.stdout));
        bail!("cargo {} failed ({})", args.join(" "), output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The workspace's criterion folder (`CARGO_TARGET_DIR` or `target/`, then `criterion`).
fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("criterion")
}

/// `cargo xtask bench --backend LIST`: one build with every listed backend, one run per
/// backend saved as a baseline of its name, then the table.
fn bench_backends(list: &str, features: Option<&str>, args: &[String]) -> Result<()> {
    let backends = bench::parse_backends(list)?;
    let mut feats: Vec<&str> = backends
        .iter()
        .filter_map(|b| {
            bench::BACKENDS
                .iter()
                .find(|(n, _)| n == b)
                .map(|(_, f)| *f)
        })
        .collect();
    feats.extend(features.iter().flat_map(|f| f.split(',')));
    let feats = feats.join(",");
    let base = flows_bench_args(&feats);
    cargo(&[&base[..], &["--no-run"]].concat())?;
    let criterion = criterion_dir();
    std::fs::create_dir_all(&criterion)?;
    // The run's start as the criterion folder's clock and granularity read it (a marker's
    // modification time), and no device description of an earlier run.
    let marker = criterion.join(".bench-run-start");
    std::fs::write(&marker, b"")?;
    let start = std::fs::metadata(&marker)?.modified()?;
    for b in &backends {
        let _ = std::fs::remove_file(bench::device_file(&criterion, b));
    }
    let mut failed = Vec::new();
    let mut tabled = backends.clone();
    for b in &backends {
        let mut run: Vec<&str> = base.clone();
        run.extend(["--", "--save-baseline", b]);
        run.extend(args.iter().map(String::as_str));
        let cargo_bin = cargo_bin();
        eprintln!("xtask: NRG_BENCH_DEVICE={b} cargo {}", run.join(" "));
        let status = Command::new(&cargo_bin)
            .args(&run)
            .env("NRG_BENCH_DEVICE", b)
            .env("NRG_BENCH_INFO", bench::device_file(&criterion, b))
            .env("CRITERION_HOME", &criterion)
            .status()
            .with_context(|| format!("cannot run {cargo_bin}"))?;
        if !status.success() {
            // A crash on the way out (seen once on lavapipe) may come after every result
            // was saved: the table takes what this run saved, and the failure is reported.
            eprintln!("xtask: the benches on {b} failed ({status})");
            failed.push(format!("{b} ({status})"));
            // One that saved nothing is left out of the table, which the others still get.
            if bench::baseline_medians(&criterion, b, Some(start))?.is_empty() {
                tabled.retain(|t| t != b);
            }
        }
    }
    if tabled.is_empty() {
        bail!(
            "the benches failed on {} before saving a result",
            failed.join(", ")
        );
    }
    // This run's results only: a baseline of the same name from an earlier run with another
    // filter is not mixed in.
    let md = match bench::summary(&criterion, &tabled, Some(start)) {
        Err(e) if !failed.is_empty() => bail!("the benches failed on {}: {e:#}", failed.join(", ")),
        table => table?,
    };
    println!(
        "{md}\nwritten to {}/backends.md and backends.csv",
        criterion.display()
    );
    if !failed.is_empty() {
        bail!(
            "the benches failed on {}; the table holds what they saved before",
            failed.join(", ")
        );
    }
    Ok(())
}

/// `cargo xtask gpu-kit`: see [`Task::GpuKit`].
/// The flows bench built with `features` (release), its executable's path.
fn build_flows_bench(features: &str) -> Result<PathBuf> {
    let mut args = flows_bench_args(features);
    args.extend(["--no-run", "--message-format=json-render-diagnostics"]);
    cargo_stdout(&args, &[])?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.pointer("/target/name").and_then(|n| n.as_str()) == Some("flows"))
        .find_map(|v| v.get("executable")?.as_str().map(PathBuf::from))
        .context("cargo named no executable of the flows bench")
}

fn gpu_kit(peers: &std::path::Path) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let kit = root.join(".gpu");
    // First, as it takes seconds and can fail: the builds below take minutes. Not fatal:
    // measure.sh needs the loader only where the GPU machine has no libvulkan.
    if let Err(e) = vulkan_loader_debs(&root.join(".gl")) {
        eprintln!(
            "xtask: could not download the Vulkan loader into .gl/ ({e:#}); measure.sh needs \
             it only on a GPU machine without libvulkan"
        );
    }
    std::fs::create_dir_all(kit.join("peers"))?;
    let copy = |from: &std::path::Path, to: &std::path::Path| -> Result<()> {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        Ok(())
    };
    // The SPIR-V build is the one measured; the WGSL one (the path the tests check on
    // software Vulkan, whose SPIR-V pipelines crash lavapipe) is the fallback should the
    // first fail on the GPU's driver, so that a lent GPU is not spent for nothing.
    for (features, name) in [("flex,wgpu,vulkan", "flows"), ("flex,wgpu", "flows-wgsl")] {
        let executable = build_flows_bench(features)?;
        copy(&executable, &kit.join(name))?;
    }
    copy(&std::env::current_exe()?, &kit.join("xtask"))?;
    copy(&root.join("xtask/gpu/measure.sh"), &kit.join("measure.sh"))?;
    for peer in ["phi4_flow_torch.py", "neuralrg_ising_torch.py"] {
        copy(&peers.join(peer), &kit.join("peers").join(peer))?;
    }
    // Smaller to carry: the debug information is not needed there.
    for bin in ["flows", "flows-wgsl", "xtask"] {
        let status = Command::new("strip").arg(kit.join(bin)).status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("xtask: could not strip .gpu/{bin}; carrying it as it is");
        }
    }
    // The carried tree is limited to 64 MiB and each stripped bench is ~100 MB: gzip.
    for bin in ["flows", "flows-wgsl"] {
        let status = Command::new("gzip")
            .args(["-f", "-9"])
            .arg(kit.join(bin))
            .status();
        if !status.is_ok_and(|s| s.success()) {
            bail!("gzip of .gpu/{bin} failed");
        }
    }
    println!(
        "the kit is in {}: on the device machine run `bash .gpu/measure.sh` with .gpu and \
         .gl (the Vulkan loader) carried",
        kit.display()
    );
    Ok(())
}

/// The Vulkan loader and GL dispatch libraries as Debian packages in `dir` (`.gl/`), for a
/// GPU machine without them (`measure.sh` unpacks them there): amd64 packages (the GPU
/// machines' architecture) downloaded with apt from this machine's package sources, as the
/// device tool's README says. Kept if already there.
fn vulkan_loader_debs(dir: &std::path::Path) -> Result<()> {
    const PACKAGES: [&str; 7] = [
        "libvulkan1",
        "libegl1",
        "libglvnd0",
        "libopengl0",
        "libgl1",
        "libglx0",
        "libgles2",
    ];
    let have = |p: &str| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{p}_"))
            })
        })
    };
    if PACKAGES.iter().all(|p| have(p)) {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let lists = std::env::temp_dir().join("nrg-apt-amd64");
    std::fs::create_dir_all(lists.join("partial"))?;
    let opts = [
        "-oAPT::Architecture=amd64".to_string(),
        "-oAPT::Architectures=amd64".to_string(),
        format!("-oDir::State::Lists={}", lists.display()),
    ];
    let apt = |args: &[&str]| -> Result<()> {
        let status = Command::new("apt-get")
            .args(&opts)
            .args(args)
            .current_dir(dir)
            .status()
            .context("cannot run apt-get (the Vulkan loader for .gl/)")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    apt(&[&["download"][..], &PACKAGES[..]].concat())
}

fn test() -> Result<()> {
    cargo(&["test", "--workspace", "--no-fail-fast"])
}

/// The profile the wgpu tests build in: every crate at opt-level 0 (but `nrg-rg`, whose own
/// opt-level 3 in the manifest wins, as it should: its fits are slow unoptimised). A build
/// with `wgpu` shares no artifacts with the default one (feature unification), and the tree
/// at the test profile's opt-level 3 took over 25 min on two cores; at 0 it is ~5 min, and
/// the tests, dominated by the driver's shader compilation, run about as fast (decision 67).
const WGPU_TEST_PROFILE: [&str; 4] = [
    "--config",
    "profile.dev.package.\"*\".opt-level=0",
    "--config",
    "profile.dev.opt-level=0",
];

/// The wgpu tests `test-wgpu` must see pass: a filter that matched nothing (a test renamed,
/// a feature gate changed) would otherwise pass with "0 passed". New `cube_…` tests run by
/// the filter without being listed here.
const WGPU_KERNEL_TESTS: [&str; 4] = [
    "coupling::tests::cube_affine_equals_composite_with_gradients",
    "kernels::tests::cube_conv_equals_reference_with_gradients",
    "block::tests::cube_chain_equals_composite_couplings_with_gradients",
    "block::tests::cube_layer_on_state_equals_gathered_composite_with_gradients",
];
const WGPU_CLI_TESTS: [&str; 1] = ["wgpu_gives_the_same_physics_as_the_cpu"];

/// On Linux, a Vulkan driver's manifest (an ICD file) must exist before minutes of building:
/// Mesa's software one is a package away. Looks where the Vulkan loader looks: the
/// `VK_*DRIVER_FILES`/`VK_ICD_FILENAMES` variables, `vulkan/icd.d` under `/etc`,
/// `$XDG_CONFIG_DIRS`, `$XDG_DATA_HOME` (or `~/.local/share`) and `$XDG_DATA_DIRS` (or
/// `/usr/local/share:/usr/share`).
fn vulkan_driver_present() -> Result<()> {
    let set = |v: &str| std::env::var_os(v).is_some_and(|x| !x.is_empty());
    if !cfg!(target_os = "linux")
        || ["VK_ICD_FILENAMES", "VK_DRIVER_FILES", "VK_ADD_DRIVER_FILES"]
            .iter()
            .any(|v| set(v))
    {
        return Ok(());
    }
    let var = |v: &str, default: &str| {
        std::env::var(v)
            .ok()
            .filter(|x| !x.is_empty())
            .unwrap_or_else(|| default.to_string())
    };
    let home = var("HOME", "/root");
    let mut roots = vec!["/etc".to_string()];
    roots.extend(
        var("XDG_CONFIG_DIRS", "/etc/xdg")
            .split(':')
            .map(String::from),
    );
    roots.push(var("XDG_DATA_HOME", &format!("{home}/.local/share")));
    roots.extend(
        var("XDG_DATA_DIRS", "/usr/local/share:/usr/share")
            .split(':')
            .map(String::from),
    );
    let dirs: Vec<String> = roots.iter().map(|r| format!("{r}/vulkan/icd.d")).collect();
    let found = dirs.iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
        })
    });
    if !found {
        bail!(
            "the wgpu tests need a Vulkan driver and none is installed (no ICD file in {}); \
             without a GPU install Mesa's software one: apt-get install mesa-vulkan-drivers",
            dirs.join(", ")
        );
    }
    Ok(())
}

/// `cargo xtask test-wgpu [--cli]`: the tests behind the `wgpu` features. First clippy on
/// `nrg-layers` and the benches with `wgpu` (the CubeCL kernels and the launch profile are
/// not linted by the workspace's clippy, which builds without the feature), then the `cube_…` tests of `nrg-layers` (one at a
/// time: lavapipe uses every core itself), with `--cli` also `nrg`'s `wgpu_…` test. Each
/// test of [`WGPU_KERNEL_TESTS`] (and [`WGPU_CLI_TESTS`]) must be seen passing.
fn test_wgpu(cli: bool) -> Result<()> {
    vulkan_driver_present()?;
    // The CubeCL kernels and the benches' launch profile: code no default build compiles.
    let mut lint = vec![
        "clippy",
        "-p",
        "nrg-layers",
        "-p",
        "nrg-benches",
        "--features",
        "nrg-layers/wgpu,nrg-benches/wgpu",
        "--lib",
        "--tests",
        "--bins",
        "--benches",
    ];
    lint.extend(WGPU_TEST_PROFILE);
    lint.extend(["--", "-D", "warnings"]);
    cargo(&lint)?;
    let mut runs: Vec<(Vec<&str>, &str, &[&str])> = vec![(
        vec!["test", "-p", "nrg-layers", "--features", "wgpu", "--lib"],
        "cube_",
        &WGPU_KERNEL_TESTS,
    )];
    if cli {
        runs.push((
            vec!["test", "-p", "nrg", "--features", "wgpu", "--test", "cli"],
            "wgpu",
            &WGPU_CLI_TESTS,
        ));
    }
    // Mesa warns on every process without a runtime directory.
    let tmp = std::env::temp_dir();
    let env: Vec<(&str, &std::ffi::OsStr)> = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(_) => vec![],
        None => vec![("XDG_RUNTIME_DIR", tmp.as_os_str())],
    };
    for (mut args, filter, expected) in runs {
        args.extend(WGPU_TEST_PROFILE);
        args.extend(["--", filter, "--test-threads=1"]);
        let stdout = cargo_stdout(&args, &env)?;
        print!("{stdout}");
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|name| !stdout.contains(&format!("test {name} ... ok")))
            .collect();
        if !missing.is_empty() {
            bail!(
                "cargo {} ran without these tests passing: {}",
                args.join(" "),
                missing.join(", ")
            );
        }
    }
    Ok(())
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

/// Runs the studies' commands through [`nrg_release`].
struct Release;

impl free_energy::Runner for Release {
    fn nrg(&self, args: &[&str]) -> Result<()> {
        nrg_release(args)
    }
}

/// `sample --run RUN --method METHOD --samples N EXTRA…`, the arguments of `nrg`.
fn sample_args<'a>(
    run: &'a str,
    method: &'a str,
    samples: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
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
    args
}

/// `nrg sample --run RUN --method METHOD --samples N EXTRA…`.
fn sample(release: bool, run: &str, method: &str, samples: &str, extra: &[&str]) -> Result<()> {
    nrg_in(release, &sample_args(run, method, samples, extra))
}

/// The studies `cargo xtask reproduce` knows.
#[derive(Clone, Copy, ValueEnum)]
enum Study {
    /// Ising L = 16 at β_c: exact Wolff data, a flow trained on both KL directions, NIS
    /// `ln Z_Ising` against Kaufman from 10⁵ samples.
    IsingL16Betac,
    /// Free energies: at Ising β_c the NIS flow of `ising-l16-betac` (trained here if
    /// absent), NIS and BAR (against a fresh Wolff chain) with 10⁵ flow samples, AIS with
    /// 512 particles, thermodynamic integration at L = 16 and 32 as the classical reference;
    /// the same four on the φ⁴ tutorial point (its flow trained if absent). One table,
    /// `free-energy.md` and `.csv`, with σ per CPU-second; about two hours from scratch.
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
            cargo(&["build", "--release", "-p", "nrg"])?;
            free_energy::study(&Release, &runs)
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
            // The last step needs a Vulkan driver: say so before the first.
            vulkan_driver_present()?;
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
            test()?;
            test_wgpu(false)
        }
        Task::Test => test(),
        Task::TestWgpu { cli } => test_wgpu(cli),
        Task::Demo { out } => demo(out),
        Task::Reproduce { study, runs } => reproduce(study, runs),
        Task::BenchTable { criterion, backend } => {
            let md = bench::summary(&criterion, &bench::parse_backends(&backend)?, None)?;
            println!("{md}");
            Ok(())
        }
        Task::GpuKit { peers } => gpu_kit(&peers),
        Task::Bench {
            features,
            backend: Some(list),
            args,
        } => bench_backends(&list, features.as_deref(), &args),
        Task::Bench {
            features,
            backend: None,
            args,
        } => {
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
