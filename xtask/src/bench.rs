//! `cargo xtask bench --backend flex,wgpu,…`: the flow benches of `benches/` once per
//! backend (one binary built with every backend's feature, the backend picked at run time by
//! `NRG_BENCH_DEVICE`), each run saved as a criterion baseline named after its backend, and
//! one table per run: benchmark × backend, the median, and the speed-up over flex.
//!
//! The table (`backends.md` and `backends.csv` in the criterion folder) is made from the
//! baselines' `estimates.json` and `benchmark.json`, so [`summary`] can also run where
//! cargo does not (on a GPU machine, from a binary built here: `cargo xtask gpu-kit`).

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The backends the benches know (`NRG_BENCH_DEVICE`) and the cargo feature of each.
pub const BACKENDS: [(&str, &str); 3] =
    [("flex", "flex"), ("ndarray", "ndarray"), ("wgpu", "wgpu")];

/// Parses `flex,wgpu` into backend names, rejecting unknown ones and repeats.
pub fn parse_backends(list: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for b in list.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        if !BACKENDS.iter().any(|(name, _)| *name == b) {
            bail!(
                "unknown backend `{b}`: one of {}",
                BACKENDS.map(|(n, _)| n).join(", ")
            );
        }
        if out.iter().any(|o| o == b) {
            bail!("backend `{b}` given twice");
        }
        out.push(b.to_string());
    }
    if out.is_empty() {
        bail!("--backend needs at least one backend");
    }
    Ok(out)
}

/// The median (ns) of every benchmark saved under baseline `name` in `criterion`, by the
/// benchmark's full id (`group/function[/parameter]`); with `since`, only those saved at or
/// after it (one run's, not an earlier run's with another filter).
pub fn baseline_medians(
    criterion: &Path,
    name: &str,
    since: Option<SystemTime>,
) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![criterion.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let estimates = path.join("estimates.json");
            if path.file_name().is_some_and(|f| f == name) && estimates.exists() {
                let saved = std::fs::metadata(&estimates).and_then(|m| m.modified());
                if since.is_some_and(|t| saved.is_ok_and(|s| s < t)) {
                    continue;
                }
                let read = |file: &str| -> Result<Value> {
                    let p = path.join(file);
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
                };
                let id = read("benchmark.json")?
                    .get("full_id")
                    .and_then(Value::as_str)
                    .context("benchmark.json without full_id")?
                    .to_string();
                let median = read("estimates.json")?
                    .pointer("/median/point_estimate")
                    .and_then(Value::as_f64)
                    .context("estimates.json without median.point_estimate")?;
                out.insert(id, median);
            } else {
                stack.push(path);
            }
        }
    }
    Ok(out)
}

fn human(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// A speed-up with two decimals, or two significant digits below 0.1 (`0.0064×`, not
/// `0.01×`).
fn ratio_text(r: f64) -> String {
    let digits = if r > 0.0 && r < 0.1 {
        (1.0 - r.log10().floor()) as usize
    } else {
        2
    };
    format!("{r:.digits$}×")
}

/// The table of one run: for each benchmark the median per backend and, beside every
/// backend but flex, its speed-up over flex (`flex median / median`, > 1 is faster).
/// `devices` names each backend's device. Returns markdown and CSV.
pub fn table(
    backends: &[String],
    medians: &BTreeMap<String, BTreeMap<String, f64>>,
    devices: &BTreeMap<String, String>,
) -> (String, String) {
    let mut md = String::from("Devices:\n\n");
    for b in backends {
        let d = devices.get(b).map_or("(not recorded)", String::as_str);
        let _ = writeln!(md, "- {b}: {d}");
    }
    md.push_str("\n| benchmark |");
    let mut rule = String::from("|---|");
    for b in backends {
        let _ = write!(md, " {b} |");
        rule.push_str("---|");
        if b != "flex" && backends.iter().any(|x| x == "flex") {
            let _ = write!(md, " {b} vs flex |");
            rule.push_str("---|");
        }
    }
    md.push('\n');
    md.push_str(&rule);
    md.push('\n');
    let mut csv = String::from("benchmark,backend,device,median_ns,speedup_vs_flex\n");
    let ids: std::collections::BTreeSet<&String> =
        medians.values().flat_map(|m| m.keys()).collect();
    for id in ids {
        let flex = medians.get("flex").and_then(|m| m.get(id)).copied();
        let _ = write!(md, "| {id} |");
        for b in backends {
            let m = medians.get(b).and_then(|m| m.get(id)).copied();
            let _ = write!(md, " {} |", m.map_or("—".into(), human));
            let ratio = match (flex, m) {
                (Some(f), Some(x)) if x > 0.0 => Some(f / x),
                _ => None,
            };
            if b != "flex" && backends.iter().any(|x| x == "flex") {
                let _ = write!(md, " {} |", ratio.map_or("—".into(), ratio_text));
            }
            if let Some(x) = m {
                let _ = writeln!(
                    csv,
                    "{id},{b},\"{}\",{x},{}",
                    devices.get(b).map_or("", String::as_str),
                    ratio.map_or(String::new(), |r| r.to_string())
                );
            }
        }
        md.push('\n');
    }
    (md, csv)
}

/// Reads the baselines of `backends` (and `device-<backend>.txt`) in `criterion`, those
/// saved since `since` where given, writes `backends.md` and `backends.csv` there and
/// returns the markdown.
pub fn summary(criterion: &Path, backends: &[String], since: Option<SystemTime>) -> Result<String> {
    let mut medians = BTreeMap::new();
    let mut devices = BTreeMap::new();
    for b in backends {
        let m = baseline_medians(criterion, b, since)?;
        if m.is_empty() {
            bail!(
                "no criterion results under baseline `{b}` in {}",
                criterion.display()
            );
        }
        medians.insert(b.clone(), m);
        if let Ok(d) = std::fs::read_to_string(device_file(criterion, b)) {
            devices.insert(b.clone(), d.trim().to_string());
        }
    }
    let (md, csv) = table(backends, &medians, &devices);
    std::fs::write(criterion.join("backends.md"), &md)?;
    std::fs::write(criterion.join("backends.csv"), &csv)?;
    Ok(md)
}

/// Where a backend's device description goes (`NRG_BENCH_INFO`).
pub fn device_file(criterion: &Path, backend: &str) -> PathBuf {
    criterion.join(format!("device-{backend}.txt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_speedups_keep_two_significant_digits() {
        assert_eq!(ratio_text(3.0), "3.00×");
        assert_eq!(ratio_text(0.25), "0.25×");
        assert_eq!(ratio_text(0.0064), "0.0064×");
        assert_eq!(ratio_text(0.05), "0.050×");
    }

    #[test]
    fn backends_parse_and_reject() {
        assert_eq!(parse_backends("flex, wgpu").unwrap(), ["flex", "wgpu"]);
        assert!(parse_backends("flex,cuda").is_err());
        assert!(parse_backends("flex,flex").is_err());
        assert!(parse_backends(",").is_err());
    }

    /// Baselines are found by name at any depth, keyed by criterion's full id, and the
    /// table's ratio is flex's median over the backend's.
    #[test]
    fn table_from_criterion_baselines() {
        let root = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        let save = |dir: &str, baseline: &str, id: &str, median: f64| {
            let d = root.join(dir).join(baseline);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("benchmark.json"),
                serde_json::json!({ "full_id": id }).to_string(),
            )
            .unwrap();
            std::fs::write(
                d.join("estimates.json"),
                serde_json::json!({ "median": { "point_estimate": median } }).to_string(),
            )
            .unwrap();
        };
        save("train_step/ising_l16", "flex", "train_step/ising_l16", 6e8);
        save("train_step/ising_l16", "wgpu", "train_step/ising_l16", 2e8);
        save("circulant/forward_16", "flex", "circulant/forward/16", 1e5);
        std::fs::write(device_file(&root, "wgpu"), "NVIDIA H200 (Vulkan)\n").unwrap();
        let backends = vec!["flex".to_string(), "wgpu".to_string()];
        let md = summary(&root, &backends, None).unwrap();
        assert!(md.contains("- wgpu: NVIDIA H200 (Vulkan)"), "{md}");
        assert!(
            md.contains("| train_step/ising_l16 | 600.00 ms | 200.00 ms | 3.00× |"),
            "{md}"
        );
        assert!(
            md.contains("| circulant/forward/16 | 100.0 µs | — | — |"),
            "{md}"
        );
        let csv = std::fs::read_to_string(root.join("backends.csv")).unwrap();
        assert!(csv.contains("train_step/ising_l16,wgpu,\"NVIDIA H200 (Vulkan)\",200000000,3"));
        assert!(summary(&root, &["ndarray".to_string()], None).is_err());
        // Only what was saved since the run began: an earlier run's result is left out.
        let start = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert!(summary(&root, &backends, Some(start)).is_err());
        let before = SystemTime::now() - std::time::Duration::from_secs(3600);
        assert_eq!(summary(&root, &backends, Some(before)).unwrap(), md);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
