//! The invariants of `ARCHITECTURE.md` that the manifests and sources show, checked by
//! `cargo xtask ci` (and as this crate's unit tests, so `cargo test --workspace` checks
//! them too).

use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The library crates (everything but the program, the benches and this tool).
pub const LIBRARIES: [&str; 10] = [
    "nrg-core",
    "nrg-lattice",
    "nrg-kernels",
    "nrg-layers",
    "nrg-flow",
    "nrg-samplers",
    "nrg-run",
    "nrg-holo",
    "nrg-images",
    "nrg-rg",
];

/// burn features a library may enable: no execution backend.
const LIBRARY_BURN_FEATURES: [&str; 3] = ["std", "autodiff", "optim"];

/// burn's backend features and backend crates.
const BACKENDS: [&str; 8] = [
    "flex", "ndarray", "wgpu", "cuda", "rocm", "metal", "vulkan", "candle",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn manifest(path: &Path) -> Result<toml::Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))
}

fn crate_manifest(name: &str) -> Result<toml::Table> {
    manifest(&root().join("crates").join(name).join("Cargo.toml"))
}

fn table<'a>(t: &'a toml::Table, key: &str) -> Option<&'a toml::Table> {
    t.get(key).and_then(|v| v.as_table())
}

/// Library crates enable no backend: their `[dependencies]` give burn only `std`,
/// `autodiff`, `optim`, name a backend crate only as an optional dependency (of an opt-in
/// feature such as `nrg-layers/wgpu`), and their default features are empty.
pub fn libraries_enable_no_backend() -> Result<()> {
    for name in LIBRARIES {
        let m = crate_manifest(name)?;
        let deps = table(&m, "dependencies").cloned().unwrap_or_default();
        for (dep, spec) in &deps {
            let backend_crate = dep.starts_with("burn-")
                && (BACKENDS.iter().any(|b| dep.contains(b)) || dep == "burn-cubecl");
            let optional = spec.get("optional").and_then(|o| o.as_bool()) == Some(true);
            if backend_crate && !optional {
                bail!("{name} depends on the backend crate {dep} (only an opt-in feature may)");
            }
            if dep == "burn"
                && let Some(features) = spec.get("features").and_then(|f| f.as_array())
            {
                for f in features {
                    let f = f.as_str().unwrap_or_default();
                    if !LIBRARY_BURN_FEATURES.contains(&f) {
                        bail!("{name} enables burn's `{f}` feature");
                    }
                }
            }
        }
        if let Some(features) = table(&m, "features")
            && let Some(default) = features.get("default").and_then(|d| d.as_array())
            && !default.is_empty()
        {
            bail!("{name} has default features {default:?}: a library enables no backend");
        }
    }
    Ok(())
}

/// Names of `[dependencies]` (not dev-dependencies) of a crate.
fn dependencies(name: &str) -> Result<BTreeSet<String>> {
    let m = crate_manifest(name)?;
    Ok(table(&m, "dependencies")
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default())
}

/// The samplers and the holographic analysis see flows only through `nrg-core`'s traits:
/// neither depends on `nrg-flow`, `nrg-layers` or `nrg-run`; the CPU kernels are a leaf
/// without burn or any nrg crate; and no library depends on the program.
pub fn dependency_rules() -> Result<()> {
    for name in ["nrg-samplers", "nrg-holo"] {
        let deps = dependencies(name)?;
        for forbidden in ["nrg-flow", "nrg-layers", "nrg-run"] {
            if deps.contains(forbidden) {
                bail!("{name} depends on {forbidden}");
            }
        }
    }
    let kernels = dependencies("nrg-kernels")?;
    if let Some(d) = kernels
        .iter()
        .find(|d| d.starts_with("burn") || d.starts_with("nrg"))
    {
        bail!("nrg-kernels depends on {d}: the kernels are burn-free and a leaf of the graph");
    }
    for name in LIBRARIES {
        if dependencies(name)?.contains("nrg") {
            bail!("the library {name} depends on the program `nrg`");
        }
    }
    let images = dependencies("nrg-images")?;
    if let Some(d) = images
        .iter()
        .find(|d| d.starts_with("burn") || (d.starts_with("nrg") && *d != "nrg-core"))
    {
        bail!("nrg-images depends on {d}: image data needs no tensors, only nrg-core's errors");
    }
    let core = dependencies("nrg-core")?;
    if let Some(d) = core.iter().find(|d| d.starts_with("nrg")) {
        bail!("nrg-core depends on {d}: it must be the root of the graph");
    }
    Ok(())
}

/// No `unsafe`: the workspace forbids it, and every member inherits the workspace lints.
pub fn unsafe_is_forbidden() -> Result<()> {
    let ws = manifest(&root().join("Cargo.toml"))?;
    let rust = ws
        .get("workspace")
        .and_then(|w| w.get("lints"))
        .and_then(|l| l.get("rust"))
        .context("no [workspace.lints.rust]")?;
    if rust.get("unsafe_code").and_then(|v| v.as_str()) != Some("forbid") {
        bail!("[workspace.lints.rust] must set unsafe_code = \"forbid\"");
    }
    let members = ws
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .context("no workspace members")?;
    for member in members {
        let dir = member.as_str().unwrap_or_default();
        let m = manifest(&root().join(dir).join("Cargo.toml"))?;
        let inherits = m
            .get("lints")
            .and_then(|l| l.get("workspace"))
            .and_then(|w| w.as_bool())
            == Some(true);
        if !inherits {
            bail!("{dir}/Cargo.toml does not set [lints] workspace = true");
        }
    }
    Ok(())
}

/// Every public module of a library is described in its crate documentation (a bullet
/// naming it as [`module`]), and every module described exists.
pub fn module_lists_match() -> Result<()> {
    for name in LIBRARIES {
        let path = root().join("crates").join(name).join("src/lib.rs");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let declared: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod "))
            .map(|l| l.trim_end_matches(';').trim())
            .collect();
        let described: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("//! - [`"))
            .filter_map(|l| l.split_once("`]").map(|(m, _)| m))
            .collect();
        if declared != described {
            bail!(
                "{name}/src/lib.rs: public modules {declared:?} but the crate docs list \
                 {described:?}"
            );
        }
    }
    Ok(())
}

/// Library code does not `unwrap()` or `panic!` outside its unit tests: each library's
/// `lib.rs` denies `clippy::unwrap_used` and `clippy::panic` (clippy then enforces it).
pub fn libraries_deny_unwrap_and_panic() -> Result<()> {
    for name in LIBRARIES {
        let path = root().join("crates").join(name).join("src/lib.rs");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let denied = text.lines().any(|l| {
            l.starts_with("#![cfg_attr(not(test), deny(")
                && l.contains("clippy::unwrap_used")
                && l.contains("clippy::panic")
        });
        if !denied {
            bail!(
                "{name}/src/lib.rs must deny clippy::unwrap_used and clippy::panic outside tests"
            );
        }
    }
    Ok(())
}

/// All checks.
pub fn check() -> Result<()> {
    libraries_enable_no_backend()?;
    dependency_rules()?;
    unsafe_is_forbidden()?;
    module_lists_match()?;
    libraries_deny_unwrap_and_panic()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_enable_no_backend_holds() {
        libraries_enable_no_backend().unwrap();
    }

    #[test]
    fn dependency_rules_hold() {
        dependency_rules().unwrap();
    }

    #[test]
    fn unsafe_is_forbidden_everywhere() {
        unsafe_is_forbidden().unwrap();
    }

    #[test]
    fn module_lists_are_in_step() {
        module_lists_match().unwrap();
    }

    #[test]
    fn libraries_deny_unwrap_and_panic_holds() {
        libraries_deny_unwrap_and_panic().unwrap();
    }
}
