//! Behaviour of runs as a library: training a run twice with the same seed repeats it to the
//! last bit, a resumed run continues it, a trained run loads and samples as the program
//! does, and a run that cannot be built leaves nothing behind.

use burn::tensor::Device;
use nrg_run::sample::{SampleMethod, SampleRequest, SampleResult, sample};
use nrg_run::train::{Silent, Start, train};
use nrg_run::{Overrides, RunConfig, RunDir};

const TINY: &str = r#"
name = "tiny"
[action]
model = "free-field"
L = 4
m2 = 1.0
[flow]
kind = "hierarchical"
couplings = 2
hidden = [4]
[train]
steps = 12
batch = 32
lr = 1e-2
[log]
every = 3
checkpoint_every = 5
"#;

fn new_run(runs: &std::path::Path, config: RunConfig) -> Start {
    Start::New {
        runs: runs.to_path_buf(),
        config: Box::new(config),
        replace: true,
    }
}

/// The metrics without the wall-clock column.
fn metrics_without_time(dir: &RunDir) -> Vec<String> {
    let rows: Vec<nrg_run::dir::MetricsRow> = dir.read_metrics(usize::MAX).unwrap();
    rows.iter()
        .map(|r| {
            let mut r = r.clone();
            r.elapsed_s = 0.0;
            format!("{r:?}")
        })
        .collect()
}

/// One test function: burn's device random numbers are global to the process, and a
/// bit-for-bit comparison needs nothing else drawing from them meanwhile.
#[test]
fn a_seeded_run_repeats_resumes_loads_and_samples() {
    let device = Device::flex().autodiff();
    let tmp = tempfile::tempdir().unwrap();
    let config = RunConfig::parse(TINY).unwrap();

    let (a, summary) = train(
        new_run(&tmp.path().join("a"), config.clone()),
        &device,
        "cpu",
        &mut Silent,
    )
    .unwrap();
    let (b, _) = train(
        new_run(&tmp.path().join("b"), config.clone()),
        &device,
        "cpu",
        &mut Silent,
    )
    .unwrap();
    assert_eq!(summary.steps, 12);
    let (ma, mb) = (metrics_without_time(&a), metrics_without_time(&b));
    assert_eq!(ma.len(), 5, "rows at 0, 3, 6, 9 and the last step");
    assert_eq!(ma, mb, "the same seed must give the same trajectory");
    let other = {
        let mut c = config.clone();
        c.apply(&Overrides {
            seed: Some(99),
            ..Overrides::default()
        })
        .unwrap();
        let (d, _) = train(
            new_run(&tmp.path().join("c"), c),
            &device,
            "cpu",
            &mut Silent,
        )
        .unwrap();
        metrics_without_time(&d)
    };
    assert_ne!(ma, other, "another seed, another trajectory");

    // Resume to 20 steps: the old rows are kept, the checkpoint moves on.
    let resume = Start::Resume {
        dir: a.path().to_path_buf(),
        overrides: Overrides {
            steps: Some(20),
            ..Overrides::default()
        },
    };
    let (a, summary) = train(resume, &device, "cpu", &mut Silent).unwrap();
    assert_eq!((summary.steps, summary.steps_this_session), (20, 8));
    assert_eq!(a.checkpoint_state().unwrap().step, 20);
    let rows = metrics_without_time(&a);
    assert_eq!(&rows[..4], &ma[..4]);
    assert_eq!(a.config().unwrap().train.steps, 20);

    // Load and sample it as `nrg sample` does.
    let plain = Device::flex();
    let run = RunDir::open(a.path()).unwrap();
    let (loaded, _) = run.load_model(&plain).unwrap();
    assert_eq!(loaded.train.steps, 20);
    let out = sample(
        &run,
        &SampleRequest::new(SampleMethod::Nis, 512),
        &plain,
        &mut |_| {},
    )
    .unwrap();
    let SampleResult::Nis(nis) = &out.report.result else {
        panic!("NIS gives an NIS result")
    };
    assert_eq!(nis.samples, 512);
    let phi2 = out.report.exact["phi2"];
    assert!(phi2.error > 0.0 && phi2.exact > 0.0, "{phi2:?}");
    let written = tmp.path().join("sample");
    out.write(&written).unwrap();
    let back: nrg_run::sample::SampleReport =
        nrg_run::dir::read_json(&written.join("summary.json")).unwrap();
    assert_eq!(back.exact["phi2"], phi2);

    a_run_that_cannot_be_built_leaves_nothing(&device);
}

/// (Called from the test above: burn's device random numbers are global to the process, so
/// a second test running beside it on another thread would interleave its draws.)
fn a_run_that_cannot_be_built_leaves_nothing(device: &Device) {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    // a hierarchical flow needs L a power of two
    let config = RunConfig::parse(&TINY.replace("L = 4", "L = 12")).unwrap();
    assert!(train(new_run(&runs, config), device, "cpu", &mut Silent).is_err());
    assert!(!runs.exists() || std::fs::read_dir(&runs).unwrap().next().is_none());
    // a missing data file, likewise
    let mut config = RunConfig::parse(TINY).unwrap();
    config.data = Some(tmp.path().join("missing.npy"));
    config.train.forward_weight = 0.5;
    let err = train(new_run(&runs, config), device, "cpu", &mut Silent).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!runs.join("tiny").exists());
    assert!(RunDir::open(runs.join("tiny")).is_err());
}
