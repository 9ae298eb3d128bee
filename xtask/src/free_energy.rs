//! `cargo xtask reproduce free-energy`: NIS, BAR, AIS and thermodynamic integration on the
//! Ising model at β_c (L = 16 and 32) and on the φ⁴ tutorial point, timed one by one, and
//! one table of `ln Z`, σ, deviation and σ per CPU-second assembled from the runs'
//! `summary.json` files (`free-energy.md`, `free-energy.csv` in the runs folder).
//!
//! Efficiency is `1/(σ² · CPU s)`: the number of CPU-seconds a σ of 1 would need, inverted,
//! so that it does not depend on how long a method ran. CPU seconds are the children's
//! user + system time from `/proc/self/stat` (the `cargo run` wrapper included, a fraction of
//! a second once the release build exists; it is built before the first timed step).
//! Training is timed apart and listed in its own table.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// β_c of the 2D Ising model, `ln(1 + √2)/2`.
const BETA_C: &str = "0.44068679350977147";

/// Where an estimate's numbers are in its `summary.json`.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// `nrg sample` on an Ising run: `exact.ising_ln_z.{estimate, error, exact}`.
    SampleIsing,
    /// `nrg sample --method nis` without an exact value: `result.ln_z.{value, error}`.
    Nis,
    /// `nrg sample --method bar`: `result.bar.ln_z.{value, error}`.
    Bar,
    /// `nrg sample --method ais|smc`: `result.estimates.ln_z.{value, error}`.
    Ais,
    /// `nrg mc … --ti`: `ln_z.{value, error}`, and `exact.exact` where known.
    Ti,
}

/// `ln Z` with its error and the exact value where the summary has one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The estimate.
    pub value: f64,
    /// Its standard error.
    pub error: f64,
    /// The exact value, where known.
    pub exact: Option<f64>,
}

fn number(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

/// Reads `ln Z ± σ` (and the exact value) out of a summary of the given layout.
pub fn read_estimate(summary: &Value, layout: Layout) -> Option<Estimate> {
    let pair = |base: &[&str], value: &str| -> Option<(f64, f64)> {
        let v = number(summary, &[base, &[value]].concat())?;
        let e = number(summary, &[base, &["error"]].concat())?;
        Some((v, e))
    };
    let (value, error, exact) = match layout {
        Layout::SampleIsing => {
            let (v, e) = pair(&["exact", "ising_ln_z"], "estimate")?;
            (v, e, number(summary, &["exact", "ising_ln_z", "exact"]))
        }
        Layout::Nis => {
            let (v, e) = pair(&["result", "ln_z"], "value")?;
            (v, e, None)
        }
        Layout::Bar => {
            let (v, e) = pair(&["result", "bar", "ln_z"], "value")?;
            (v, e, None)
        }
        Layout::Ais => {
            let (v, e) = pair(&["result", "estimates", "ln_z"], "value")?;
            (v, e, None)
        }
        Layout::Ti => {
            let (v, e) = pair(&["ln_z"], "value")?;
            (v, e, number(summary, &["exact", "exact"]))
        }
    };
    Some(Estimate {
        value,
        error,
        exact,
    })
}

/// Wall and CPU seconds of one step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    /// Wall-clock seconds.
    pub wall: f64,
    /// User + system CPU seconds of the child processes.
    pub cpu: f64,
}

/// User + system CPU seconds of the reaped children so far (`cutime + cstime` of
/// `/proc/self/stat`, in clock ticks of 1/100 s, the Linux `USER_HZ`).
fn children_cpu() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The fields after the command name `(…)`, which may itself hold spaces: state is
    // field 3, cutime and cstime fields 16 and 17.
    let rest = stat
        .rsplit_once(')')
        .context("unexpected /proc/self/stat")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i - 3)
            .context("short /proc/self/stat")?
            .parse::<f64>()?)
    };
    Ok((tick(16)? + tick(17)?) / 100.0)
}

/// Runs `f` and returns its wall and children's CPU seconds.
pub fn timed(f: impl FnOnce() -> Result<()>) -> Result<Cost> {
    let (start, cpu0) = (Instant::now(), children_cpu()?);
    f()?;
    Ok(Cost {
        wall: start.elapsed().as_secs_f64(),
        cpu: children_cpu()? - cpu0,
    })
}

/// One row of the table: what ran, where its summary is, how long it took.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The system, e.g. `Ising L = 16, β_c`.
    pub system: String,
    /// The method and its size, e.g. `BAR, 10⁵ flow + 10⁵ target`.
    pub method: String,
    /// The run's `summary.json`.
    pub summary: PathBuf,
    /// Where the numbers are in it.
    pub layout: Layout,
    /// What the sampling cost.
    pub cost: Cost,
}

/// One training run, listed apart from the sampling.
#[derive(Clone, Debug)]
pub struct Training {
    /// The config.
    pub config: String,
    /// What it cost (`None`: an existing checkpoint was used).
    pub cost: Option<Cost>,
}

/// The markdown table and the CSV of the entries. Rows without an exact value are compared
/// with the system's thermodynamic integration row, if any (deviation in the combined σ).
pub fn tables(entries: &[Entry], training: &[Training]) -> Result<(String, String)> {
    let mut rows = Vec::new();
    for e in entries {
        let text = std::fs::read_to_string(&e.summary)
            .with_context(|| format!("reading {}", e.summary.display()))?;
        let summary: Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", e.summary.display()))?;
        let Some(est) = read_estimate(&summary, e.layout) else {
            bail!(
                "{}: no ln Z in the layout {:?}",
                e.summary.display(),
                e.layout
            );
        };
        rows.push((e, est));
    }
    let reference = |system: &str| {
        rows.iter()
            .find(|(e, _)| e.system == system && matches!(e.layout, Layout::Ti))
            .map(|(_, est)| *est)
    };
    let mut md = String::from(
        "| system | method | ln Z | σ | reference | deviation | wall s | CPU s | 1/(σ²·CPU s) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut csv = String::from(
        "system,method,ln_z,sigma,reference,reference_kind,deviation_sigma,wall_s,cpu_s,efficiency\n",
    );
    for (e, est) in &rows {
        let (refv, kind, dev) = match (est.exact, reference(&e.system)) {
            (Some(x), _) => (Some(x), "exact", Some((est.value - x) / est.error)),
            (None, Some(ti)) if !matches!(e.layout, Layout::Ti) => (
                Some(ti.value),
                "TI",
                Some((est.value - ti.value) / est.error.hypot(ti.error)),
            ),
            _ => (None, "", None),
        };
        // A zero error (a run too short to estimate one) has no deviation in σ.
        let dev = dev.filter(|d| d.is_finite());
        let eff = 1.0 / (est.error * est.error * e.cost.cpu.max(1e-3));
        let refs = refv.map_or(String::from("—"), |x| format!("{x:.5} ({kind})"));
        let devs = dev.map_or(String::from("—"), |d| format!("{d:+.2}σ"));
        writeln!(
            md,
            "| {} | {} | {:.4} | {:.4} | {} | {} | {:.0} | {:.0} | {:.3} |",
            e.system, e.method, est.value, est.error, refs, devs, e.cost.wall, e.cost.cpu, eff
        )?;
        writeln!(
            csv,
            "\"{}\",\"{}\",{},{},{},{},{},{},{},{}",
            e.system,
            e.method,
            est.value,
            est.error,
            refv.map_or(String::new(), |x| x.to_string()),
            kind,
            dev.map_or(String::new(), |d| d.to_string()),
            e.cost.wall,
            e.cost.cpu,
            eff
        )?;
    }
    if !training.is_empty() {
        md.push_str("\n| training (not counted above) | wall s | CPU s |\n|---|---|---|\n");
        for t in training {
            match t.cost {
                Some(c) => writeln!(md, "| {} | {:.0} | {:.0} |", t.config, c.wall, c.cpu)?,
                None => writeln!(md, "| {} | (existing checkpoint) | |", t.config)?,
            }
        }
    }
    Ok((md, csv))
}

/// The commands the study runs (`nrg …` through a release `cargo run`).
pub trait Runner {
    /// `nrg ARGS` in the release profile.
    fn nrg(&self, args: &[&str]) -> Result<()>;
}

/// The whole study into `runs`.
pub fn study(runner: &dyn Runner, runs: &str) -> Result<()> {
    let mut entries = Vec::new();
    let mut training = Vec::new();
    let mut add = |system: &str, method: &str, summary: PathBuf, layout, cost| {
        entries.push(Entry {
            system: system.into(),
            method: method.into(),
            summary,
            layout,
            cost,
        });
    };
    let sample = |run: &str, method: &str, samples: &str, extra: &[&str]| -> Result<Cost> {
        timed(|| runner.nrg(&crate::sample_args(run, method, samples, extra)))
    };
    let summary =
        |run: &str, method: &str| Path::new(run).join(format!("sample-{method}/summary.json"));
    let train = |config: &str, run: &str, extra: &[&str]| -> Result<Option<Cost>> {
        if Path::new(run).join("checkpoint").exists() {
            println!("== {run} exists: its flow is used as it is");
            return Ok(None);
        }
        let mut args = vec!["train", "--config", config, "--runs", runs, "--force"];
        args.extend_from_slice(extra);
        Ok(Some(timed(|| runner.nrg(&args))?))
    };
    let wolff = |seed: &str, out: &str| -> Result<()> {
        runner.nrg(&[
            "mc",
            "ising",
            "--L",
            "16",
            "--beta",
            BETA_C,
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

    // Ising L = 16 at β_c with the shipped NIS flow.
    let ising = "Ising L = 16, β_c";
    let run = format!("{runs}/ising-l16-betac-nis");
    if !Path::new(&run).join("checkpoint").exists() {
        println!("== training data for the NIS flow (as `reproduce ising-l16-betac`)");
        wolff("7", &format!("{runs}/wolff-l16-betac"))?;
    }
    let data = format!("{runs}/wolff-l16-betac/relaxed.npy");
    println!("== the NIS flow (configs/ising-l16-betac-nis.toml)");
    let cost = train("configs/ising-l16-betac-nis.toml", &run, &["--data", &data])?;
    training.push(Training {
        config: "configs/ising-l16-betac-nis.toml".into(),
        cost,
    });
    println!("== NIS, 10^5 flow samples");
    let cost = sample(&run, "nis", "100000", &[])?;
    add(
        ising,
        "NIS, 10⁵ flow samples",
        summary(&run, "nis"),
        Layout::SampleIsing,
        cost,
    );
    println!("== BAR, 10^5 flow samples against 10^5 configurations of a fresh Wolff chain");
    let cost = sample(&run, "bar", "100000", &["--target-mc", "100000"])?;
    add(
        ising,
        "BAR, 10⁵ flow + 10⁵ Wolff (chain included)",
        summary(&run, "bar"),
        Layout::SampleIsing,
        cost,
    );
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
    let cost = sample(&run, "ais", "512", &ais)?;
    add(
        ising,
        "AIS, 512 particles",
        summary(&run, "ais"),
        Layout::SampleIsing,
        cost,
    );
    // L = 32: four graded panels (60 nodes) resolve the specific-heat peak below β_c and
    // reach σ ≈ 0.016 (docs/benchmarks.md, session 17).
    for (l, sweeps, panels, seed, system, method) in [
        ("16", "100000", "1", "1", ising, "TI, Wolff, 15 × 10⁵"),
        (
            "32",
            "80000",
            "4",
            "2",
            "Ising L = 32, β_c",
            "TI, Wolff, 4 panels, 60 × 8·10⁴",
        ),
    ] {
        println!("== thermodynamic integration, L = {l}, {panels} panel(s)");
        let out = format!("{runs}/ti-ising-l{l}");
        let cost = timed(|| {
            runner.nrg(&[
                "mc",
                "ising",
                "--L",
                l,
                "--beta",
                BETA_C,
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
                &out,
            ])
        })?;
        add(
            system,
            method,
            Path::new(&out).join("summary.json"),
            Layout::Ti,
            cost,
        );
    }

    // The φ⁴ tutorial point (L = 8, m² = −4, λ = 8): no exact value; the rows are compared
    // with thermodynamic integration from a Gaussian reference.
    let phi4 = "φ⁴ L = 8, m² = −4, λ = 8";
    let run = format!("{runs}/phi4-tutorial");
    println!("== the φ⁴ tutorial flow (configs/phi4-tutorial.toml)");
    let cost = train("configs/phi4-tutorial.toml", &run, &[])?;
    training.push(Training {
        config: "configs/phi4-tutorial.toml".into(),
        cost,
    });
    println!("== φ⁴: thermodynamic integration from the Gaussian reference a₀ = 5");
    let out = format!("{runs}/ti-phi4-tutorial");
    let cost = timed(|| {
        runner.nrg(&[
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
            "20000",
            "--seed",
            "1",
            "--ti",
            "--reference-a",
            "5",
            "--out",
            &out,
        ])
    })?;
    add(
        phi4,
        "TI, HMC, 15 × 2·10⁴",
        Path::new(&out).join("summary.json"),
        Layout::Ti,
        cost,
    );
    println!("== φ⁴: NIS, 2·10^5 flow samples");
    let cost = sample(&run, "nis", "200000", &[])?;
    add(
        phi4,
        "NIS, 2·10⁵ flow samples",
        summary(&run, "nis"),
        Layout::Nis,
        cost,
    );
    println!("== φ⁴: BAR, 10^5 flow samples against 2·10^4 HMC configurations");
    let cost = sample(&run, "bar", "100000", &["--target-mc", "20000"])?;
    add(
        phi4,
        "BAR, 10⁵ flow + 2·10⁴ HMC (chain included)",
        summary(&run, "bar"),
        Layout::Bar,
        cost,
    );
    println!("== φ⁴: AIS, 4096 particles");
    let cost = sample(&run, "ais", "4096", &[])?;
    add(
        phi4,
        "AIS, 4096 particles",
        summary(&run, "ais"),
        Layout::Ais,
        cost,
    );

    let (md, csv) = tables(&entries, &training)?;
    std::fs::write(format!("{runs}/free-energy.md"), &md)?;
    std::fs::write(format!("{runs}/free-energy.csv"), &csv)?;
    println!("{md}\nwritten to {runs}/free-energy.md and {runs}/free-energy.csv");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, v: Value) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    }

    /// Each layout reads its own keys; the table compares rows without an exact value with
    /// the system's TI row in the combined σ, and rows with one against it.
    #[test]
    fn the_table_reads_every_layout_and_compares_with_the_right_reference() {
        let dir = std::env::temp_dir().join(format!("xtask-fe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ti = write(
            &dir,
            "ti.json",
            serde_json::json!({"ln_z": {"value": 10.0, "error": 0.03}}),
        );
        let bar = write(
            &dir,
            "bar.json",
            serde_json::json!({"result": {"bar": {"ln_z": {"value": 10.1, "error": 0.04}}}}),
        );
        let ising = write(
            &dir,
            "ising.json",
            serde_json::json!({"exact": {"ising_ln_z":
                {"estimate": 5.2, "error": 0.1, "exact": 5.0}}}),
        );
        let cost = Cost {
            wall: 2.0,
            cpu: 4.0,
        };
        let entry = |system: &str, summary: &Path, layout| Entry {
            system: system.into(),
            method: "m".into(),
            summary: summary.into(),
            layout,
            cost,
        };
        let entries = [
            entry("phi", &ti, Layout::Ti),
            entry("phi", &bar, Layout::Bar),
            entry("ising", &ising, Layout::SampleIsing),
        ];
        let (md, csv) = tables(&entries, &[]).unwrap();
        let rows: Vec<Vec<&str>> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect())
            .collect();
        assert_eq!(rows.len(), 3, "{csv}");
        let num = |r: usize, c: usize| rows[r][c].parse::<f64>().unwrap();
        // BAR against TI: 0.1 / √(0.04² + 0.03²) = 2σ; efficiency 1/(0.04²·4) = 156.25.
        assert_eq!(rows[1][5], "TI");
        assert!((num(1, 6) - 2.0).abs() < 1e-9 && (num(1, 9) - 156.25).abs() < 1e-9);
        // The Ising row against its exact value: 0.2 / 0.1 = 2σ.
        assert_eq!(rows[2][5], "exact");
        assert!((num(2, 6) - 2.0).abs() < 1e-9);
        // TI is not compared with itself.
        assert!(rows[0][4].is_empty() && rows[0][6].is_empty(), "{csv}");
        assert!(md.contains("+2.00σ"));
        let missing = entry("x", &dir.join("absent.json"), Layout::Nis);
        assert!(tables(&[missing], &[]).is_err());
        let wrong = entry("x", &ti, Layout::Ais);
        assert!(tables(&[wrong], &[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn children_cpu_reads_proc() {
        let t = children_cpu().unwrap();
        assert!(t >= 0.0);
    }
}
