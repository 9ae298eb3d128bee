//! The `nrg` program end to end: outputs, files, and one-line errors with exit code 2.

use std::path::Path;
use std::process::{Command, Output};

fn nrg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nrg"))
        .args(args)
        .output()
        .expect("run nrg")
}

fn assert_usage_error(args: &[&str], needle: &str) {
    let out = nrg(args);
    assert_eq!(out.status.code(), Some(2), "{args:?} should exit 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(needle),
        "{args:?}: stderr `{err}` lacks `{needle}`"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
}

#[test]
fn exact_ising_json_matches_library() {
    let out = nrg(&[
        "exact",
        "ising",
        "--L",
        "16",
        "--beta",
        "0.4406868",
        "--json",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = nrg_lattice::exact::ising2d::kaufman(16, 0.4406868).unwrap();
    assert_eq!(v["result"]["ln_z"].as_f64().unwrap(), t.ln_z);
    assert_eq!(
        v["result"]["energy_per_site"].as_f64().unwrap(),
        t.energy_per_site
    );
    let text = nrg(&["exact", "ising", "--L", "32"]);
    let s = String::from_utf8_lossy(&text.stdout);
    assert!(s.contains("ln Z") && s.contains("952.64"), "{s}");
}

#[test]
fn exact_other_models() {
    for args in [
        vec!["exact", "ising1d", "--L", "16", "--beta", "0.5"],
        vec!["exact", "onsager", "--beta", "0.3"],
        vec!["exact", "free-field", "--L", "8", "--m2", "0.5", "--json"],
    ] {
        let out = nrg(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    assert_usage_error(&["exact", "ising", "--L", "1", "--beta", "0.4"], "L");
    assert_usage_error(&["exact", "ising", "--L", "8", "--beta", "-0.4"], "beta");
    assert_usage_error(&["exact", "ising", "--L", "8", "--beta", "NaN"], "beta");
    assert_usage_error(&["exact", "free-field", "--L", "8", "--m2", "-1"], "m2");
    assert_usage_error(&["exact", "potts", "--L", "8"], "potts");
    assert_usage_error(
        &["mc", "ising", "--L", "8", "--beta", "0.4", "--algo", "hmc"],
        "hmc",
    );
    assert_usage_error(&["mc", "phi4", "--L", "8", "--algo", "hmc"], "--m2");
    assert_usage_error(
        &[
            "mc",
            "phi4",
            "--L",
            "8",
            "--m2",
            "1",
            "--lambda=-1",
            "--algo",
            "hmc",
        ],
        "lambda",
    );
    let out = nrg(&["exact", "ising", "--L", "0", "--beta", "0.4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    // A missing file names its cause once (an error that prints its source would repeat it).
    let missing = std::env::temp_dir().join("nrg-no-such-config.toml");
    let out = nrg(&["train", "--config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("os error 2").count(),
        1,
        "the cause once: {err}"
    );
    // `flex`, the CPU backend's feature and bench name, is accepted for `cpu`.
    let out = nrg(&["--device", "flex", "info"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn mc_writes_summary_and_series() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("ising");
    let out = nrg(&[
        "mc",
        "ising",
        "--L",
        "8",
        "--beta",
        "0.3",
        "--algo",
        "wolff",
        "--sweeps",
        "3000",
        "--seed",
        "7",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = read_json(&out_dir.join("summary.json"));
    let e = &summary["observables"]["e"];
    assert!(e["error"].as_f64().unwrap() > 0.0);
    assert!(e["tau_int"].as_f64().unwrap() >= 0.5);
    assert!(summary["exact"]["e"]["deviation_sigma"].as_f64().unwrap() < 4.0);
    assert_eq!(summary["model"]["L"], 8);
    let csv = std::fs::read_to_string(out_dir.join("series.csv")).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("index,e,e2,phi2,m_0"));
    assert_eq!(lines.count(), 3000);

    let phi_dir = dir.path().join("phi4");
    let out = nrg(&[
        "mc",
        "on",
        "--L",
        "4",
        "--t",
        "0.2",
        "--mu",
        "0.5",
        "--lambda",
        "0.3",
        "--algo",
        "metropolis",
        "--sweeps",
        "500",
        "--out",
        phi_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = read_json(&phi_dir.join("summary.json"));
    assert!(summary["observables"]["m_1"]["value"].is_number());

    // Thermodynamic integration: ln Z against Kaufman, the nodes as CSV; it cannot be
    // combined with --relaxed.
    let ti_dir = dir.path().join("ti");
    let t = ti_dir.to_str().unwrap();
    let ti = [
        "mc", "ising", "--L", "4", "--beta", "0.44", "--algo", "wolff", "--sweeps", "1000", "--ti",
        "--out", t,
    ];
    run_nrg_ok(&ti);
    let summary = read_json(&ti_dir.join("summary.json"));
    assert!(
        summary["ln_z"]["error"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    assert!(
        summary["exact"]["deviation_sigma"].as_f64().unwrap() < 4.0,
        "{summary}"
    );
    let csv = std::fs::read_to_string(ti_dir.join("ti.csv")).unwrap();
    assert!(csv.starts_with("beta,weight,e,e_error,tau_int"));
    assert_eq!(csv.lines().count(), 16);
    let mut both = ti.to_vec();
    both.push("--relaxed");
    assert_usage_error(&both, "relaxed");
    // two graded panels: 30 nodes, increasing in β; zero panels refused
    run_nrg_ok(&[&ti[..], &["--ti-panels", "2"]].concat());
    let csv = std::fs::read_to_string(ti_dir.join("ti.csv")).unwrap();
    assert_eq!(csv.lines().count(), 31);
    let betas: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(betas.windows(2).all(|w| w[0] < w[1]), "{betas:?}");
    assert_usage_error(&[&ti[..], &["--ti-panels", "0"]].concat(), "--ti-panels");

    // φ⁴ by thermodynamic integration from a Gaussian reference: the free field, whose ln Z
    // is exact; HMC only; a reference that is not normalisable is refused.
    let phi_ti = dir.path().join("phi-ti");
    let p = phi_ti.to_str().unwrap();
    let args = [
        "mc",
        "phi4",
        "--L",
        "4",
        "--m2",
        "1",
        "--algo",
        "hmc",
        "--sweeps",
        "1000",
        "--ti",
        "--reference-a",
        "9",
        "--out",
        p,
    ];
    run_nrg_ok(&args);
    let summary = read_json(&phi_ti.join("summary.json"));
    assert_eq!(summary["reference_a"].as_f64(), Some(9.0), "{summary}");
    assert!(
        summary["exact"]["deviation_sigma"].as_f64().unwrap() < 4.0,
        "{summary}"
    );
    let csv = std::fs::read_to_string(phi_ti.join("ti.csv")).unwrap();
    assert!(csv.starts_with("t,weight,delta_s,delta_s_error,tau_int"));
    assert_eq!(csv.lines().count(), 16);
    let mut local = args.to_vec();
    local[7] = "metropolis";
    assert_usage_error(&local, "--algo hmc");
    let mut unstable = args.to_vec();
    unstable[12] = "2";
    assert_usage_error(&unstable, "not normalisable");
}

#[test]
fn info_runs_a_tensor_op_on_the_cpu() {
    let out = nrg(&["info"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

const TINY_RUN: &str = r#"
name = "ff"
[action]
model = "free-field"
L = 4
m2 = 1.0
[flow]
kind = "hierarchical"
couplings = 2
hidden = [4]
circulant = true
[train]
steps = 30
batch = 64
lr = 3e-2
[log]
every = 5
checkpoint_every = 10
"#;

/// `nrg sample --run RUN --method METHOD` followed by `extra`.
fn sample_args<'a>(run: &'a str, method: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["sample", "--run", run, "--method", method];
    args.extend_from_slice(extra);
    args
}

fn run_nrg_ok(args: &[&str]) -> String {
    let out = nrg(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn checkpoint_step(run: &Path) -> u64 {
    read_json(&run.join("checkpoint/state.json"))["step"]
        .as_u64()
        .unwrap()
}

#[test]
fn train_writes_a_run_resumes_and_survives_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, TINY_RUN).unwrap();
    let runs = dir.path().join("runs");
    let (c, r) = (config.to_str().unwrap(), runs.to_str().unwrap());
    let out = run_nrg_ok(&["train", "--config", c, "--runs", r, "--quiet"]);
    assert!(out.contains("30 steps"), "{out}");
    let run = runs.join("ff");
    for f in ["config.toml", "metrics.csv", "training.png", "summary.json"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    assert_eq!(checkpoint_step(&run), 30);
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = metrics.lines().collect();
    assert!(
        lines[0].starts_with("step,loss,free_energy"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.len(), 1 + 7, "rows at 0,5,…,25 and the last step");
    let summary = read_json(&run.join("summary.json"));
    let gap = summary["last_step"]["relative_gap"].as_f64().unwrap();
    assert!(gap.is_finite() && gap < 1.0, "gap {gap}");

    // The same name again is refused; --resume continues from the checkpoint.
    assert_usage_error(&["train", "--config", c, "--runs", r], "--resume");
    let run_s = run.to_str().unwrap();
    assert_usage_error(&["train", "--resume", run_s], "--steps N");
    let out = run_nrg_ok(&["train", "--resume", run_s, "--steps", "40", "--quiet"]);
    assert!(out.contains("10 steps"), "{out}");
    assert_eq!(checkpoint_step(&run), 40);
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(
        metrics.lines().count(),
        1 + 7 + 3,
        "old rows kept; 30, 35, 39 appended"
    );

    // A learning rate that blows up stops with a message and keeps the good checkpoint.
    let out = nrg(&[
        "train", "--resume", run_s, "--steps", "80", "--lr", "1e7", "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("diverged") && err.contains("last good checkpoint"),
        "{err}"
    );
    let kept = checkpoint_step(&run);
    assert!((40..80).contains(&kept), "checkpoint at {kept}");
    let model = std::fs::read(run.join("checkpoint/model.bpk")).unwrap();
    assert!(!model.is_empty());

    // Sampling the trained run: every method writes a summary with the exact comparison.
    for (method, option) in [
        ("nis", ["--batch", "256"]),
        ("nmcmc", ["--batch", "256"]),
        ("bulk-hmc", ["--leapfrog", "3"]),
        ("bulk-local", ["--delta", "0.5"]),
        ("hmc", ["--leapfrog", "3"]),
    ] {
        let out_dir = dir.path().join(format!("sample-{method}"));
        let o = out_dir.to_str().unwrap();
        let extra = [
            "--samples",
            "300",
            option[0],
            option[1],
            "--out",
            o,
            "--quiet",
        ];
        run_nrg_ok(&sample_args(run_s, method, &extra));
        let v = read_json(&out_dir.join("summary.json"));
        let phi2 = &v["exact"]["phi2"];
        let sigma = phi2["deviation_sigma"].as_f64().unwrap();
        assert!(
            sigma.is_finite() && phi2["exact"].as_f64().unwrap() > 0.0,
            "{method}: {v}"
        );
        if method == "nis" {
            assert!(v["result"]["ess"].as_f64().unwrap() > 0.0);
            assert!(v["result"]["pareto_k"].as_f64().unwrap().is_finite(), "{v}");
            assert!(v["exact"]["ln_z"]["error"].as_f64().unwrap() > 0.0);
        } else {
            let tau = v["result"]["observables"]["phi2"]["tau_int"]
                .as_f64()
                .unwrap();
            assert!(tau >= 0.4, "{method}: τ_int {tau}");
        }
    }
    let out_dir = dir.path().join("saved");
    run_nrg_ok(&sample_args(
        run_s,
        "nis",
        &[
            "--samples",
            "100",
            "--save-samples",
            "--out",
            out_dir.to_str().unwrap(),
            "--quiet",
        ],
    ));
    let (values, shape) =
        nrg_flow::data::read_configurations(&out_dir.join("samples.npy")).unwrap();
    assert_eq!((values.len(), shape), (1600, [100, 1, 4, 4]));
    assert_usage_error(
        &sample_args(run_s, "bulk-local", &["--level", "7"]),
        "7 does not exist",
    );
    // Options that do not apply to the method are refused, not ignored (they were accepted
    // and written into summary.json for the chains in the bulk and on the boundary).
    for (method, option) in [
        ("bulk-hmc", &["--symmetry", "d4"][..]),
        ("bulk-local", &["--symmetry", "shift=2"]),
        ("hmc", &["--symmetry", "d4"]),
        ("bulk-hmc", &["--save-samples"]),
        ("hmc", &["--save-samples"]),
        ("nis", &["--leapfrog", "3"]),
        ("nis", &["--chains", "2"]),
        ("nmcmc", &["--level", "0"]),
        ("hmc", &["--delta", "0.3"]),
    ] {
        let out_dir = dir.path().join("refused");
        let mut extra = option.to_vec();
        extra.extend(["--out", out_dir.to_str().unwrap()]);
        assert_usage_error(&sample_args(run_s, method, &extra), "does not apply");
        assert!(!out_dir.exists(), "{method} {option:?} wrote output");
    }
    assert_usage_error(
        &["sample", "--run", "/nonexistent", "--method", "nis"],
        "not a run directory",
    );

    // Symmetry-averaged proposals: NIS and NMCMC run and record the group; bad groups are
    // refused with a message.
    for method in ["nis", "nmcmc"] {
        let out_dir = dir.path().join(format!("sym-{method}"));
        run_nrg_ok(&sample_args(
            run_s,
            method,
            &[
                "--samples",
                "200",
                "--symmetry",
                "d4,shift=2",
                "--out",
                out_dir.to_str().unwrap(),
                "--quiet",
            ],
        ));
        let v = read_json(&out_dir.join("summary.json"));
        assert_eq!(v["symmetry"], "d4,shift=2", "{method}: {v}");
        let sigma = v["exact"]["phi2"]["deviation_sigma"].as_f64().unwrap();
        assert!(sigma.is_finite(), "{method}: {v}");
    }
    for (spec, message) in [("shift=3", "must divide L"), ("c6", "unknown element")] {
        assert_usage_error(&sample_args(run_s, "nis", &["--symmetry", spec]), message);
    }

    // A run that cannot be built (a hierarchical flow needs L a power of two) leaves nothing
    // behind: before, it left a config without a checkpoint, which --resume then refused.
    let l12 = dir.path().join("l12.toml");
    std::fs::write(
        &l12,
        TINY_RUN
            .replace("L = 4", "L = 12")
            .replace("\"ff\"", "\"l12\""),
    )
    .unwrap();
    assert_usage_error(
        &["train", "--config", l12.to_str().unwrap(), "--runs", r],
        "power of two",
    );
    let left: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["ff"], "a failed run left {left:?}");

    // The holographic analysis of the trained run: every file, and a summary a program can
    // read back; a flat flow is refused.
    let holo_dir = dir.path().join("holo");
    let h = holo_dir.to_str().unwrap();
    let out = run_nrg_ok(&[
        "holo",
        "--run",
        run_s,
        "--samples",
        "600",
        "--blocks",
        "20",
        "--out",
        h,
        "--quiet",
    ]);
    assert!(out.contains("receptive field, level 0"), "{out}");
    for f in [
        "summary.json",
        "correlations.csv",
        "mutual_information.csv",
        "boundary_g.csv",
        "radii.csv",
        "bulk_correlations.png",
        "mutual_information.png",
        "receptive_fields.png",
        "mixing.png",
        "inpainting.png",
    ] {
        assert!(holo_dir.join(f).is_file(), "{f} missing");
    }
    let summary = read_json(&holo_dir.join("summary.json"));
    assert_eq!(
        summary["analysis"]["latents_per_level"],
        serde_json::json!([12, 3, 1])
    );
    assert!(summary["kl_gap"]["value"].as_f64().unwrap().is_finite());
    assert_usage_error(&["holo", "--run", run_s, "--source", "data"], "--data");

    // Bad inputs: missing file, unknown key, corrupt checkpoint.
    assert_usage_error(
        &["train", "--config", "/nonexistent.toml"],
        "cannot read config",
    );
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, TINY_RUN.replace("batch", "bacth")).unwrap();
    assert_usage_error(&["train", "--config", typo.to_str().unwrap()], "bacth");
    std::fs::write(run.join("checkpoint/model.bpk"), b"not a model").unwrap();
    assert_usage_error(
        &["train", "--resume", run_s, "--steps", "90"],
        "missing, truncated or not a checkpoint",
    );
}

#[test]
fn relaxed_ising_data_feeds_forward_kl_training() {
    let dir = tempfile::tempdir().unwrap();
    let mc = dir.path().join("wolff");
    run_nrg_ok(&[
        "mc",
        "ising",
        "--L",
        "4",
        "--beta",
        "0.44",
        "--algo",
        "wolff",
        "--sweeps",
        "400",
        "--relaxed",
        "--out",
        mc.to_str().unwrap(),
    ]);
    let data = mc.join("relaxed.npy");
    let (values, shape) = nrg_flow::data::read_configurations(&data).unwrap();
    assert_eq!(shape, [400, 1, 4, 4]);
    assert!(values.iter().all(|v| v.is_finite()));
    // Spins are ±1 and the field is x = M s + M^{1/2} ξ with M_ii = α = 0.1 + 4K: the
    // per-site mean square is far from zero (≥ α² ≈ 3.3 on average over spins).
    let ms = values.iter().map(|v| (v * v) as f64).sum::<f64>() / values.len() as f64;
    assert!(ms > 2.0, "mean square {ms}");

    let config = dir.path().join("ising.toml");
    let toml = "name = \"fkl\"\ndata = \"wolff/relaxed.npy\"\n\
        [action]\nmodel = \"ising\"\nL = 4\nbeta = 0.44\n\
        [flow]\nkind = \"hierarchical\"\ncouplings = 2\nhidden = [4]\nprior = \"bimodal\"\nz2 = true\n\
        [train]\nsteps = 6\nbatch = 32\ndata_batch = 32\nforward_weight = 0.5\n\
        [log]\nevery = 2\ncheckpoint_every = 3\n";
    std::fs::write(&config, toml).unwrap();
    let (c, runs) = (config.to_str().unwrap(), dir.path().join("runs"));
    let r = runs.to_str().unwrap();
    run_nrg_ok(&["train", "--config", c, "--runs", r, "--quiet"]);
    let metrics = std::fs::read_to_string(runs.join("fkl/metrics.csv")).unwrap();
    let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "forward_kl").unwrap();
    let last: Vec<&str> = metrics.lines().last().unwrap().split(',').collect();
    let fkl: f64 = last[col].parse().unwrap();
    assert!(fkl.is_finite(), "forward KL {fkl}");
    // The data path is stored absolute, so resuming from another directory finds it.
    let stored = std::fs::read_to_string(runs.join("fkl/config.toml")).unwrap();
    assert!(stored.contains(data.to_str().unwrap()), "{stored}");
    run_nrg_ok(&[
        "train",
        "--resume",
        runs.join("fkl").to_str().unwrap(),
        "--steps",
        "8",
        "--quiet",
    ]);

    // BAR between the trained flow and the Wolff fields: ln Z and ln Z_Ising with their
    // exact values, the overlap, the one-sided estimates.
    let run_dir = runs.join("fkl");
    let run_s = run_dir.to_str().unwrap();
    let out_dir = dir.path().join("bar");
    run_nrg_ok(&sample_args(
        run_s,
        "bar",
        &[
            "--samples",
            "256",
            "--target-data",
            data.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
    ));
    let v = read_json(&out_dir.join("summary.json"));
    let bar = &v["result"]["bar"];
    let overlap = bar["overlap"].as_f64().unwrap();
    assert!(0.0 < overlap && overlap <= 1.0, "{v}");
    assert_eq!(bar["reverse_samples"], 400, "{v}");
    for key in ["ln_z", "ising_ln_z"] {
        let sigma = v["exact"][key]["deviation_sigma"].as_f64().unwrap();
        assert!(sigma.is_finite(), "{key}: {v}");
    }
    // BAR without target data, with data of another lattice, or a missing file: exit 2.
    assert_usage_error(&sample_args(run_s, "bar", &[]), "--target-data");
    let other = dir.path().join("l2");
    nrg_flow::data::write_npy_f32(&other, &[0.5; 3 * 4], &[3, 1, 2, 2]).unwrap();
    let o = other.to_str().unwrap();
    assert_usage_error(&sample_args(run_s, "bar", &["--target-data", o]), "shape");
    let missing = dir.path().join("none.npy");
    let m = missing.to_str().unwrap();
    assert_usage_error(
        &sample_args(run_s, "bar", &["--target-data", m]),
        "none.npy",
    );
    // Target configurations of another temperature are refused (nrg mc's summary says β).
    let hot = dir.path().join("hot");
    run_nrg_ok(&[
        "mc",
        "ising",
        "--L",
        "4",
        "--beta",
        "0.3",
        "--algo",
        "wolff",
        "--sweeps",
        "50",
        "--relaxed",
        "--out",
        hot.to_str().unwrap(),
    ]);
    let h = hot.join("relaxed.npy");
    let h = h.to_str().unwrap();
    assert_usage_error(&sample_args(run_s, "bar", &["--target-data", h]), "β = 0.3");

    // BAR with target configurations from the baseline chain itself (--target-mc): the
    // chain is recorded, and a wrong combination of options is refused.
    let mc_dir = dir.path().join("bar-mc");
    let text = run_nrg_ok(&sample_args(
        run_s,
        "bar",
        &[
            "--samples",
            "256",
            "--target-mc",
            "300",
            "--target-every",
            "2",
            "--out",
            mc_dir.to_str().unwrap(),
        ],
    ));
    assert!(
        text.contains("300 configurations of the baseline chain"),
        "{text}"
    );
    let v = read_json(&mc_dir.join("summary.json"));
    let bar = &v["result"]["bar"];
    assert_eq!(bar["reverse_samples"], 300, "{v}");
    assert_eq!(v["result"]["target_chain"]["every"], 2, "{v}");
    assert!(v["result"]["target_data"].is_null(), "{v}");
    let sigma = v["exact"]["ising_ln_z"]["deviation_sigma"]
        .as_f64()
        .unwrap();
    assert!(sigma.is_finite(), "{v}");
    let d = data.to_str().unwrap();
    assert_usage_error(
        &sample_args(run_s, "bar", &["--target-mc", "300", "--target-data", d]),
        "exclude",
    );
    assert_usage_error(
        &sample_args(run_s, "bar", &["--target-data", d, "--target-every", "2"]),
        "--target-mc",
    );
    assert_usage_error(
        &sample_args(run_s, "nis", &["--target-mc", "300"]),
        "target-mc",
    );

    // AIS and SMC from the same (Z₂-symmetrised) flow: ln Z and ln Z_Ising against exact,
    // the schedule ending at β = 1, the step and acceptance; SMC's errors over 4 systems.
    for (method, extra) in [
        (
            "ais",
            vec!["--samples", "128", "--pilot", "64", "--moves", "1"],
        ),
        (
            "smc",
            vec![
                "--samples",
                "128",
                "--batch",
                "32",
                "--stages",
                "3",
                "--resample-ess",
                "0.6",
            ],
        ),
    ] {
        let out_dir = dir.path().join(method);
        let mut args = extra.clone();
        args.extend(["--leapfrog", "3", "--out", out_dir.to_str().unwrap()]);
        let stdout = run_nrg_ok(&sample_args(run_s, method, &args));
        assert!(stdout.contains(&method.to_uppercase()), "{stdout}");
        let v = read_json(&out_dir.join("summary.json"));
        assert_eq!(v["method"], method, "{v}");
        assert_eq!(v["device"], "cpu", "the backend is recorded: {v}");
        assert_eq!(v["seed"], 1, "the seed (the default) is recorded: {v}");
        let r = &v["result"];
        let schedule = r["schedule"].as_array().unwrap();
        assert_eq!(schedule.last().unwrap().as_f64(), Some(1.0), "{v}");
        assert!(r["step"].as_f64().unwrap() > 0.0, "{v}");
        assert!(r["acceptance"].as_f64().unwrap() > 0.0, "{v}");
        assert_eq!(r["systems"], if method == "smc" { 4 } else { 128 }, "{v}");
        for key in ["ln_z", "ising_ln_z"] {
            let sigma = v["exact"][key]["deviation_sigma"].as_f64().unwrap();
            assert!(sigma.is_finite(), "{key}: {v}");
        }
        assert!(
            v["ising"]["energy_per_site"]["value"].as_f64().is_some(),
            "{v}"
        );
    }
    // Options that do not apply or are out of range: exit 2 with the reason.
    assert_usage_error(
        &sample_args(run_s, "ais", &["--resample-ess", "0.5"]),
        "does not apply",
    );
    assert_usage_error(
        &sample_args(run_s, "nis", &["--cess", "0.5"]),
        "does not apply",
    );
    assert_usage_error(&sample_args(run_s, "ais", &["--cess", "1.5"]), "cess");
    assert_usage_error(
        &sample_args(run_s, "smc", &["--cess", "0.9", "--stages", "4"]),
        "exclude",
    );
    assert_usage_error(
        &sample_args(run_s, "smc", &["--samples", "100", "--batch", "32"]),
        "multiple",
    );

    // Issue 17, item 7: a config with `forward_weight` and no `data =` takes its data from
    // `--data` (options apply before the config is checked); without `--data` it is refused.
    let no_data = dir.path().join("no-data.toml");
    std::fs::write(&no_data, toml.replace("data = \"wolff/relaxed.npy\"\n", "")).unwrap();
    let nd = no_data.to_str().unwrap();
    let d = data.to_str().unwrap();
    run_nrg_ok(&[
        "train", "--config", nd, "--runs", r, "--name", "cli-data", "--data", d, "--quiet",
    ]);
    let stored = std::fs::read_to_string(runs.join("cli-data/config.toml")).unwrap();
    assert!(stored.contains(d), "{stored}");
    assert_usage_error(
        &["train", "--config", nd, "--runs", r, "--name", "x"],
        "data",
    );
    assert!(!runs.join("x").exists());

    // A missing data file: a one-line error that says how to make one, and no run left.
    std::fs::write(&config, toml.replace("wolff/relaxed", "nowhere/relaxed")).unwrap();
    let args = ["train", "--config", c, "--runs", r, "--name", "missing"];
    assert_usage_error(&args, "nrg mc ising");
    assert!(!runs.join("missing").exists());
}

/// `nrg data`: the synthetic set with its factors, Fashion-MNIST's test split padded to
/// 32×32 with labels, a folder of pictures; bad inputs exit 2 naming the problem.
#[test]
fn data_sets_are_written_for_the_image_flows() {
    let dir = tempfile::tempdir().unwrap();
    let syn = dir.path().join("ellipses");
    let s = syn.to_str().unwrap();
    run_nrg_ok(&[
        "data",
        "synthetic",
        "--images",
        "20",
        "--seed",
        "3",
        "--out",
        s,
    ]);
    let (values, shape) = nrg_flow::data::read_configurations(&syn.join("images.npy")).unwrap();
    assert_eq!(shape, [20, 1, 32, 32]);
    assert!(
        values
            .iter()
            .all(|v| (0.0..=255.0).contains(v) && v.fract() == 0.0)
    );
    let factors = std::fs::read_to_string(syn.join("factors.csv")).unwrap();
    assert_eq!(factors.lines().count(), 20 * 16 + 1);
    assert!(syn.join("grid.png").exists());
    let summary = read_json(&syn.join("summary.json"));
    assert_eq!(summary["real_pixels_per_image"], 1024, "{summary}");

    let fm = dir.path().join("fmnist");
    let f = fm.to_str().unwrap();
    run_nrg_ok(&["data", "fashion-mnist", "--split", "test", "--out", f]);
    let summary = read_json(&fm.join("summary.json"));
    assert_eq!(summary["shape"], serde_json::json!([10000, 1, 32, 32]));
    assert_eq!(summary["real_pixels_per_image"], 784, "{summary}");
    let labels = std::fs::read_to_string(fm.join("labels.csv")).unwrap();
    assert_eq!(labels.lines().count(), 10_001);

    let pics = dir.path().join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    assert_usage_error(
        &[
            "data",
            "folder",
            "--dir",
            pics.to_str().unwrap(),
            "--out",
            f,
        ],
        "no PNG or JPEG",
    );
    std::fs::write(pics.join("broken.png"), b"not a png").unwrap();
    assert_usage_error(
        &[
            "data",
            "folder",
            "--dir",
            pics.to_str().unwrap(),
            "--out",
            f,
        ],
        "broken.png",
    );
    assert_usage_error(
        &[
            "data",
            "folder",
            "--dir",
            pics.to_str().unwrap(),
            "--size",
            "24",
            "--out",
            f,
        ],
        "power of two",
    );
    let empty_idx = dir.path().join("no-idx");
    std::fs::create_dir_all(&empty_idx).unwrap();
    assert_usage_error(
        &[
            "data",
            "fashion-mnist",
            "--split",
            "train",
            "--dir",
            empty_idx.to_str().unwrap(),
            "--out",
            f,
        ],
        "dataset-fashion-mnist",
    );
}

/// An image run end to end: `nrg train` on the synthetic set from a `[data]` table (test
/// bits/dim, sample grids, resume), `nrg holo-images` (receptive fields, mixing, inpainting,
/// factor correlations), and the options that do not apply refused.
#[test]
fn image_runs_train_resume_and_analyse() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let config = dir.path().join("img.toml");
    std::fs::write(
        &config,
        r#"
name = "img"
[data]
kind = "synthetic"
images = 24
test_images = 8
seed = 2
[flow]
block = 4
couplings = 2
hidden = [4]
prior = "laplace"
[train]
steps = 6
batch = 8
lr = 5e-3
[log]
every = 2
checkpoint_every = 3
test_every = 3
[samples]
temperatures = [0.5, 1.0]
count = 4
"#,
    )
    .unwrap();
    let (c, r) = (config.to_str().unwrap(), runs.to_str().unwrap());
    let out = run_nrg_ok(&["train", "--config", c, "--runs", r, "--quiet"]);
    assert!(out.contains("test bits/dim"), "{out}");
    let run = runs.join("img");
    let summary = read_json(&run.join("summary.json"));
    assert_eq!(summary["steps"], 6);
    assert_eq!(summary["bits_per"], 1024);
    assert_eq!(summary["test_images"], 8);
    let bpd = summary["test_bits_per_dim"]["value"].as_f64().unwrap();
    assert!(bpd > 0.0 && bpd < 8.5, "{bpd}");
    for f in [
        "samples-T0.50.png",
        "samples-T1.00.png",
        "data.png",
        "training.png",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(metrics.starts_with("step,loss,bits_per_dim,test_bits_per_dim"));
    // resume to 8 steps
    let rs = run.to_str().unwrap();
    run_nrg_ok(&["train", "--resume", rs, "--steps", "8", "--quiet"]);
    assert_eq!(checkpoint_step(&run), 8);
    assert_eq!(read_json(&run.join("summary.json"))["steps"], 8);
    // the holographic tools on it
    let out = run_nrg_ok(&[
        "holo-images",
        "--run",
        rs,
        "--images",
        "4",
        "--receptive-images",
        "1",
        "--steps",
        "2",
        "--factor-images",
        "8",
    ]);
    assert!(out.contains("optimise cone latents"), "{out}");
    let holo = read_json(&run.join("holo/summary.json"));
    assert_eq!(holo["inpainting"].as_array().unwrap().len(), 4);
    let radii = holo["radii"].as_array().unwrap();
    let r0 = radii[0]["radius"]["value"].as_f64().unwrap();
    let r_top = radii[radii.len() - 1]["radius"]["value"].as_f64().unwrap();
    assert!(
        r_top > r0,
        "receptive fields must grow with level: {radii:?}"
    );
    assert_eq!(holo["outside_cone_max"], 0.0);
    for f in [
        "receptive.png",
        "mixing.png",
        "inpainting.png",
        "factors.csv",
    ] {
        assert!(run.join("holo").join(f).is_file(), "{f} missing");
    }
    // what does not apply, or is wrong
    assert_usage_error(
        &["train", "--config", c, "--runs", r, "--data", "x.npy"],
        "does not apply to an image run",
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[data]\nkind = \"synthetic\"\npath = \"x\"\n").unwrap();
    assert_usage_error(
        &["train", "--config", bad.to_str().unwrap(), "--runs", r],
        "does not apply",
    );
    std::fs::write(&bad, "[data]\nkind = \"npy\"\npath = \"missing.npy\"\n").unwrap();
    assert_usage_error(
        &["train", "--config", bad.to_str().unwrap(), "--runs", r],
        "missing.npy",
    );
    std::fs::write(&bad, "[data]\nkind = \"synthetic\"\n[flow]\nz2 = true\n").unwrap();
    assert_usage_error(
        &["train", "--config", bad.to_str().unwrap(), "--runs", r],
        "z2",
    );
    assert_usage_error(
        &["holo-images", "--run", rs, "--mask", "40"],
        "does not fit",
    );
    // RGB pictures from a folder train as three channels
    let pics = dir.path().join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    for k in 0..12u8 {
        let pixels: Vec<u8> = (0..3 * 64).map(|p| (p as u8).wrapping_mul(k + 1)).collect();
        let set = nrg_images::ImageSet::new(pixels, [1, 3, 8, 8]).unwrap();
        let grid = nrg_images::grid::GridOptions { cols: 1, scale: 1 };
        nrg_images::grid::write_grid(&pics.join(format!("p{k:02}.png")), &set, &grid).unwrap();
    }
    let rgb = dir.path().join("rgb.toml");
    std::fs::write(
        &rgb,
        "name = \"rgb\"\n[data]\nkind = \"folder\"\npath = \"pics\"\nchannels = 3\nsize = 8\n\
         test_images = 4\n[flow]\ncouplings = 1\nhidden = [4]\n[train]\nsteps = 2\nbatch = 4\n\
         [samples]\ntemperatures = [1.0]\ncount = 2\n",
    )
    .unwrap();
    run_nrg_ok(&[
        "train",
        "--config",
        rgb.to_str().unwrap(),
        "--runs",
        r,
        "--quiet",
    ]);
    let rgb_summary = read_json(&runs.join("rgb/summary.json"));
    assert_eq!(rgb_summary["image_shape"], serde_json::json!([3, 8, 8]));
    assert_eq!(rgb_summary["train_images"], 8);
    assert_usage_error(&["holo", "--run", rs], "image run");
    assert_usage_error(&["sample", "--run", rs, "--method", "nis"], "image run");
}

/// `nrg rg mcrg` on a tiny lattice writes its summary, CSV and plot; a lattice that does not
/// block, and a bad coupling, are usage errors.
#[test]
fn rg_mcrg_writes_exponents_and_refuses_bad_lattices() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mcrg");
    let o = out.to_str().unwrap();
    let text = run_nrg_ok(&[
        "rg",
        "mcrg",
        "--L",
        "8",
        "--steps",
        "1",
        "--configs",
        "400",
        "--blocks",
        "10",
        "--coupling-configs",
        "40",
        "--out",
        o,
    ]);
    assert!(text.contains("y_t"), "{text}");
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["y_t"].as_array().unwrap().len(), 1);
    let yh = s["y_h"][0]["value"].as_f64().unwrap();
    assert!((1.5..2.2).contains(&yh), "{yh}");
    assert_eq!(s["mcrg"]["sides"], serde_json::json!([8, 4]));
    assert!(out.join("eigenvalues.csv").is_file());
    assert!(out.join("exponents.png").is_file());
    assert_usage_error(
        &["rg", "mcrg", "--L", "12", "--steps", "3", "--out", o],
        "divide",
    );
    assert_usage_error(
        &["rg", "mcrg", "--L", "8", "--beta", "-1", "--out", o],
        "beta",
    );
    // block spins from a chain, then from the file it wrote
    let blk = dir.path().join("blk");
    let b = blk.to_str().unwrap();
    run_nrg_ok(&[
        "rg",
        "block",
        "--L",
        "8",
        "--configs",
        "100",
        "--steps",
        "1",
        "--out",
        b,
    ]);
    let s = read_json(&blk.join("summary.json"));
    assert_eq!(s["levels"].as_array().unwrap().len(), 2);
    assert_eq!(s["levels"][1]["side"], 4);
    let level1 = blk.join("level1.npy");
    let (values, shape) = nrg_flow::data::read_configurations(&level1).unwrap();
    assert_eq!(shape, [100, 1, 4, 4]);
    assert!(values.iter().all(|v| v.abs() == 1.0));
    let again = dir.path().join("again");
    run_nrg_ok(&[
        "rg",
        "block",
        "--data",
        level1.to_str().unwrap(),
        "--steps",
        "1",
        "--out",
        again.to_str().unwrap(),
    ]);
    nrg_flow::data::write_npy_f32(&blk.join("bad.npy"), &vec![0.5f32; 20 * 16], &[20, 4, 4])
        .unwrap();
    assert_usage_error(
        &[
            "rg",
            "block",
            "--data",
            blk.join("bad.npy").to_str().unwrap(),
            "--out",
            b,
        ],
        "±1",
    );
    assert_usage_error(&["rg", "block", "--out", b], "--data");
}

/// `nrg rbm flow` on a tiny lattice writes its flows, plot and receptive fields; the
/// control refuses a range without temperatures, and bad grids are usage errors.
#[test]
fn rbm_flow_writes_the_flow_and_its_control() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rbm");
    let o = out.to_str().unwrap();
    let text = run_nrg_ok(&[
        "rbm",
        "flow",
        "--L",
        "4",
        "--temperatures",
        "4",
        "--configs",
        "40",
        "--hidden",
        "8",
        "--epochs",
        "2",
        "--steps",
        "3",
        "--out",
        o,
    ]);
    assert!(text.contains("T_c"), "{text}");
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["flows"].as_array().unwrap().len(), 4);
    assert_eq!(s["flows"][0]["flow"].as_array().unwrap().len(), 4);
    for f in ["flow.csv", "rbm_flow.png", "receptive.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert_usage_error(
        &[
            "rbm", "flow", "--t-min", "3", "--t-max", "4", "--train", "below", "--out", o,
        ],
        "no grid temperature",
    );
    assert_usage_error(
        &["rbm", "flow", "--t-min", "2", "--t-max", "1", "--out", o],
        "t-min",
    );
}

/// `nrg rbm train`: an RBM and a two-layer deep belief net on a Wolff chain write their
/// machines, per-epoch metrics (exact log-likelihood where the machine is enumerable) and
/// receptive fields; bad options are usage errors.
#[test]
fn rbm_train_writes_machines_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rbm");
    let o = out.to_str().unwrap();
    let common = [
        "rbm",
        "train",
        "--L",
        "4",
        "--configs",
        "200",
        "--epochs",
        "3",
        "--out",
        o,
    ];
    let text = run_nrg_ok(&[&common[..], &["--hidden", "8"]].concat());
    assert!(text.contains("exact log-likelihood"), "{text}");
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["epochs"].as_array().unwrap().len(), 3);
    let ll = s["epochs"][2]["log_likelihood_test"].as_f64().unwrap();
    // 16 spins: the log-likelihood lies between −16 ln 2 and 0
    assert!(ll < 0.0 && ll > -16.0 * 2f64.ln(), "{ll}");
    for f in ["rbm.json", "training.csv", "training.png", "receptive.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    run_nrg_ok(&[&common[..], &["--hidden", "8,4"]].concat());
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["epochs"].as_array().unwrap().len(), 6);
    assert_eq!(s["receptive_radius"].as_array().unwrap().len(), 4);
    assert!(out.join("dbn.json").is_file());
    assert_usage_error(&[&common[..], &["--hidden", "8,0"]].concat(), "--hidden");
    assert_usage_error(
        &["rbm", "train", "--L", "4", "--beta", "-1", "--out", o],
        "--beta",
    );
    assert_usage_error(&["rbm", "train", "--out", o], "--data");
}

const TINY_ISING: &str = r#"
name = "ising8"
[action]
model = "ising"
L = 8
beta = 0.44068679350977147
[flow]
kind = "hierarchical"
couplings = 2
hidden = [4]
z2 = true
[train]
steps = 10
batch = 32
lr = 1e-2
"#;

/// `nrg rg compare` on a briefly trained L = 8 Ising flow: three schemes side by side, the
/// majority blocks' exact geometry (radius 1/√2, four spins), every file; a level the flow
/// does not have, a bad ridge and a run of another model are refused.
#[test]
fn rg_compare_sets_flow_rbm_and_block_spins_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ising8.toml");
    std::fs::write(&config, TINY_ISING).unwrap();
    let runs = dir.path().join("runs");
    let (c, r) = (config.to_str().unwrap(), runs.to_str().unwrap());
    run_nrg_ok(&["train", "--config", c, "--runs", r, "--quiet"]);
    let run = runs.join("ising8");
    let run_s = run.to_str().unwrap();
    let out = dir.path().join("cmp");
    let o = out.to_str().unwrap();
    let common = [
        "rg",
        "compare",
        "--run",
        run_s,
        "--configs",
        "200",
        "--train-configs",
        "200",
        "--epochs",
        "2",
        "--receptive-configs",
        "20",
        "--blocks",
        "5",
        "--out",
        o,
    ];
    let text = run_nrg_ok(&common);
    assert!(text.contains("majority") && text.contains("flow"), "{text}");
    let s = read_json(&out.join("summary.json"));
    let schemes = s["schemes"].as_array().unwrap();
    let names: Vec<&str> = schemes
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["majority", "rbm", "flow"]);
    let majority = &schemes[0]["receptive"];
    let radius = majority["radius"]["value"].as_f64().unwrap();
    assert!((radius - 0.5f64.sqrt()).abs() < 0.05, "{radius}");
    let p = majority["mean_participation"]["value"].as_f64().unwrap();
    assert!((3.5..=4.0).contains(&p), "{p}");
    for x in schemes {
        assert_eq!(x["coarse"].as_u64().unwrap(), 16);
    }
    // majority and flow sit on a 4×4 lattice: the lattice-operator couplings too
    assert!(schemes[0]["couplings"]["lattice"].is_array());
    assert!(schemes[2]["couplings"]["lattice"].is_array());
    assert!(schemes[1]["couplings"]["lattice"].is_null());
    for f in [
        "couplings.csv",
        "rbm.json",
        "receptive.png",
        "couplings.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert_usage_error(&[&common[..], &["--levels", "4"]].concat(), "levels");
    assert_usage_error(&[&common[..], &["--ridge", "-1"]].concat(), "--ridge");
    let ff = dir.path().join("ff.toml");
    std::fs::write(&ff, TINY_RUN.replace("steps = 30", "steps = 2")).unwrap();
    run_nrg_ok(&[
        "train",
        "--config",
        ff.to_str().unwrap(),
        "--runs",
        r,
        "--quiet",
    ]);
    let ff_run = runs.join("ff");
    assert_usage_error(
        &[
            "rg",
            "compare",
            "--run",
            ff_run.to_str().unwrap(),
            "--out",
            o,
        ],
        "Ising",
    );
}

/// Run-time switching (issue 21): the same run on the CPU and on wgpu. A checkpoint trained on
/// one device samples on the other, `ln q` of the same configurations agrees to f32 rounding,
/// and the statistical estimates agree within error. Needs a wgpu adapter: `cargo test -p nrg
/// --features wgpu --test cli wgpu` or `cargo xtask test-wgpu --cli` (not in `cargo xtask ci`,
/// decisions 65 and 67). On Mesa's software Vulkan (Debian 12, Mesa 22.3) use `wgpu` without
/// `vulkan`: lavapipe crashes compiling CubeCL's SPIR-V matmul; with WGSL this test takes
/// 2–5 minutes there, most of it compiling and autotuning kernels.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_gives_the_same_physics_as_the_cpu() {
    let info = run_nrg_ok(&["--device", "wgpu", "info"]);
    assert!(info.contains("adapter:") && info.contains("ok"), "{info}");
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let r = runs.to_str().unwrap();
    // The demo's flow, smaller: hierarchical, Z₂, circulant layer, Ising L = 4 at β_c.
    let ising = dir.path().join("ising.toml");
    std::fs::write(
        &ising,
        r#"
name = "ising"
[action]
model = "ising"
L = 4
beta = 0.44068679350977147
[flow]
kind = "hierarchical"
couplings = 2
hidden = [8]
z2 = true
circulant = true
[train]
steps = 40
batch = 128
lr = 1e-2
[log]
every = 10
checkpoint_every = 20
"#,
    )
    .unwrap();
    run_nrg_ok(&[
        "train",
        "--config",
        ising.to_str().unwrap(),
        "--runs",
        r,
        "--quiet",
    ]);
    let wolff = dir.path().join("wolff");
    run_nrg_ok(&[
        "mc",
        "ising",
        "--L",
        "4",
        "--beta",
        "0.44068679350977147",
        "--algo",
        "wolff",
        "--sweeps",
        "2000",
        "--seed",
        "3",
        "--relaxed",
        "--out",
        wolff.to_str().unwrap(),
    ]);
    let data = wolff.join("relaxed.npy");
    let run = runs.join("ising");
    let mut bar = Vec::new();
    for device in ["cpu", "wgpu"] {
        let out = dir.path().join(format!("bar-{device}"));
        run_nrg_ok(&[
            "--device",
            device,
            "sample",
            "--run",
            run.to_str().unwrap(),
            "--method",
            "bar",
            "--samples",
            "2048",
            "--target-data",
            data.to_str().unwrap(),
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        bar.push(read_json(&out.join("summary.json")));
    }
    // The reverse end is a mean over the same 2000 configurations of ln q (no randomness):
    // f32 rounding in ~10 layers of sums of order 10 gives ~1e-5 relative; ln Z ≈ 37.
    let reverse = |v: &serde_json::Value| {
        v["result"]["bar"]["reverse_only"]["value"]
            .as_f64()
            .unwrap()
    };
    assert!(
        (reverse(&bar[0]) - reverse(&bar[1])).abs() < 2e-3,
        "ln q differs between the devices: {} vs {}",
        reverse(&bar[0]),
        reverse(&bar[1])
    );
    // BAR from independent flow samples on each device: within 4 combined σ.
    let lnz = |v: &serde_json::Value| {
        let e = &v["result"]["bar"]["ln_z"];
        (e["value"].as_f64().unwrap(), e["error"].as_f64().unwrap())
    };
    let ((a, sa), (b, sb)) = (lnz(&bar[0]), lnz(&bar[1]));
    assert!(
        (a - b).abs() < 4.0 * sa.hypot(sb),
        "BAR: {a} ± {sa} vs {b} ± {sb}"
    );

    // The φ⁴ tutorial's flat flow (checkerboard couplings, periodic CNN), smaller, trained
    // on wgpu, then NIS on both devices.
    let phi4 = dir.path().join("phi4.toml");
    std::fs::write(
        &phi4,
        r#"
name = "phi4"
[action]
model = "phi4"
L = 4
m2 = -4.0
lambda = 8.0
[flow]
kind = "flat"
couplings = 4
hidden = [8]
kernel = 3
[train]
steps = 5
batch = 64
lr = 1e-2
[log]
every = 5
checkpoint_every = 5
"#,
    )
    .unwrap();
    let p = phi4.to_str().unwrap();
    run_nrg_ok(&[
        "--device", "wgpu", "train", "--config", p, "--runs", r, "--quiet",
    ]);
    let run = runs.join("phi4");
    assert_eq!(checkpoint_step(&run), 5);
    let mut nis = Vec::new();
    for device in ["cpu", "wgpu"] {
        let out = dir.path().join(format!("nis-{device}"));
        run_nrg_ok(&[
            "--device",
            device,
            "sample",
            "--run",
            run.to_str().unwrap(),
            "--method",
            "nis",
            "--samples",
            "8192",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        let v = read_json(&out.join("summary.json"));
        let e = &v["result"]["ln_z"];
        nis.push((e["value"].as_f64().unwrap(), e["error"].as_f64().unwrap()));
    }
    let ((a, sa), (b, sb)) = (nis[0], nis[1]);
    assert!(
        (a - b).abs() < 4.0 * sa.hypot(sb),
        "NIS: {a} ± {sa} vs {b} ± {sb}"
    );
}
