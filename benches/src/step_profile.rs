//! The launch profile ([`crate::launches`]) of the training steps of the `train_step`
//! benches on a cubecl device: for each flow, `warmup` steps (shader compilation,
//! autotune; the first one timed), the wall time of `steps` unobserved steps, then `steps`
//! observed ones. Run by the `step-profile` program, and by the `flows` bench binary when
//! `NRG_STEP_PROFILE=DIR` is set (so that the GPU kit carries no third binary).

use crate::launches::LaunchProfile;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
#[cfg(feature = "wgpu")]
use {
    crate::launches::observe,
    crate::{ising_l16_flow, phi4_tutorial_flow},
    burn::tensor::Device,
    nrg_core::Action,
    nrg_flow::FlowModel,
    nrg_flow::train::{TrainSettings, Trainer},
    std::time::Instant,
};

/// The flows of the `train_step` benches (`phi4` and `ising` on the command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TrainFlow {
    /// The φ⁴ tutorial flow (L = 8), batch 256.
    #[value(name = "phi4")]
    Phi4Tutorial,
    /// NeuralRG's hierarchical Ising L = 16 flow, batch 512.
    #[value(name = "ising")]
    IsingL16,
}

impl TrainFlow {
    /// The name on the command line (`phi4`, `ising`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Phi4Tutorial => "phi4",
            Self::IsingL16 => "ising",
        }
    }

    /// The bench's name.
    pub fn bench(self) -> &'static str {
        match self {
            Self::Phi4Tutorial => "train_step/phi4_tutorial",
            Self::IsingL16 => "train_step/ising_l16",
        }
    }

    /// The bench's batch.
    pub fn batch(self) -> usize {
        match self {
            Self::Phi4Tutorial => 256,
            Self::IsingL16 => 512,
        }
    }
}

/// What to profile.
#[derive(Clone, Debug)]
pub struct StepProfileSettings {
    /// Steps observed (and, before them, steps timed unobserved); at least 1.
    pub steps: usize,
    /// Steps run first and not counted.
    pub warmup: usize,
    /// Time every launch on the device.
    pub timed: bool,
    /// The flows.
    pub flows: Vec<TrainFlow>,
    /// The batch of every flow; `None`: each bench's own ([`TrainFlow::batch`]). At a
    /// small batch the device's work shrinks and what is left of the step's time is its
    /// cost per launch (host, driver).
    pub batch: Option<usize>,
}

impl Default for StepProfileSettings {
    fn default() -> Self {
        Self {
            steps: 5,
            warmup: 3,
            timed: true,
            flows: vec![TrainFlow::Phi4Tutorial, TrainFlow::IsingL16],
            batch: None,
        }
    }
}

/// One flow's profile.
#[derive(Clone, Debug, Serialize)]
pub struct StepCase {
    /// The flow's name on the command line ([`TrainFlow::name`]).
    pub flow: &'static str,
    /// The bench.
    pub bench: &'static str,
    /// Its batch.
    pub batch: usize,
    /// Wall time of the first step until the device has finished it (ms, host clock;
    /// `None` without warm-up steps): the device's pipelines compiled (those not in the
    /// driver's shader cache) and burn's autotune, on top of a step: about what a user of
    /// `nrg train --device wgpu` waits before the steps come at their pace.
    pub first_step_ms: Option<f64>,
    /// Wall time per unobserved step (ms, host clock, from a synchronised device to a
    /// synchronised device; within the run each step waits on one read-back, `ln q + S`,
    /// from which the host computes the loss, and with it on the previous step's update).
    pub wall_ms_per_step: f64,
    /// The launches of the observed steps.
    pub profile: LaunchProfile,
    /// Every observed launch's kernel, in order (all the observed steps): which phase of
    /// a step (sampling, the flow's forward pass, the action and loss, the backward pass,
    /// the optimiser) issues which launches. Written as `sequence-<flow>.txt`, not in the
    /// JSON.
    #[serde(skip)]
    pub sequence: Vec<String>,
}

/// The profiles of every flow on one device.
#[derive(Clone, Debug, Serialize)]
pub struct StepProfileReport {
    /// The device's description.
    pub adapter: String,
    /// Whether launches were timed on the device.
    pub timed: bool,
    /// One per flow.
    pub cases: Vec<StepCase>,
}

impl StepProfileReport {
    /// Markdown: a section per flow, its `top` kernels listed.
    pub fn markdown(&self, top: usize) -> String {
        let mut md = format!(
            "# Kernel launches per training step on {}\n\n",
            self.adapter
        );
        for case in &self.cases {
            let share = case.profile.device_us_per_step.map_or(String::new(), |d| {
                let pct = 0.1 * d / case.wall_ms_per_step;
                format!(" (the timed kernels' device time is {pct:.0} % of it)")
            });
            let first = case.first_step_ms.map_or(String::new(), |ms| {
                format!(
                    "The first step took {:.1} s (pipeline compilation, autotune).\n\n",
                    ms / 1e3
                )
            });
            let _ = write!(
                md,
                "## {} (batch {})\n\n{first}{:.2} ms/step wall, unobserved{share}; {}\n",
                case.bench,
                case.batch,
                case.wall_ms_per_step,
                case.profile.markdown(top)
            );
        }
        md
    }

    /// Writes `launches.md`, `launches.json` and each flow's launch sequence
    /// (`sequence-phi4.txt`, `sequence-ising.txt`: one kernel per line, in order) into
    /// `dir` (created if missing).
    ///
    /// # Errors
    /// When `dir` cannot be created or written.
    pub fn write(&self, dir: &Path, top: usize) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("launches.md"), self.markdown(top))?;
        let json = serde_json::to_string_pretty(self).expect("plain data");
        std::fs::write(dir.join("launches.json"), json)?;
        for case in &self.cases {
            let mut lines = case.sequence.join("\n");
            lines.push('\n');
            std::fs::write(dir.join(format!("sequence-{}.txt", case.flow)), lines)?;
        }
        Ok(())
    }
}

#[cfg(feature = "wgpu")]
fn profile_case(
    flow: TrainFlow,
    (action, model): (impl Action + 'static, FlowModel),
    settings: &StepProfileSettings,
    dev: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<StepCase, String> {
    let bench = flow.bench();
    let batch = settings.batch.unwrap_or(flow.batch());
    let train = TrainSettings {
        batch,
        ..TrainSettings::default()
    };
    let mut trainer =
        Trainer::new(model, &action, None, train, dev).map_err(|e| format!("{bench}: {e}"))?;
    let mut run = |n: usize| -> Result<(), String> {
        for _ in 0..n {
            trainer.step().map_err(|e| format!("{bench}: {e}"))?;
        }
        Ok(())
    };
    // A step returns once the host has its loss: its backward pass and update are still
    // queued (and their pipelines compiling) when the next step starts. Waiting for the
    // device puts all of a step's work inside its clock.
    let sync = || {
        dev.sync()
            .map_err(|e| format!("{bench}: the device failed: {e:?}"))
    };
    progress(&format!("{bench}: {} warm-up steps", settings.warmup));
    let first = Instant::now();
    run(settings.warmup.min(1))?;
    sync()?;
    let first_step_ms = (settings.warmup > 0).then(|| first.elapsed().as_secs_f64() * 1e3);
    run(settings.warmup.saturating_sub(1))?;
    sync()?;
    progress(&format!("{bench}: {} steps timed", settings.steps));
    let start = Instant::now();
    run(settings.steps)?;
    sync()?;
    let wall_ms_per_step = start.elapsed().as_secs_f64() * 1e3 / settings.steps as f64;
    progress(&format!("{bench}: {} steps observed", settings.steps));
    let (done, launches) = observe(settings.timed, || run(settings.steps));
    done?;
    Ok(StepCase {
        flow: flow.name(),
        bench,
        batch,
        first_step_ms,
        wall_ms_per_step,
        profile: LaunchProfile::new(settings.steps, &launches),
        sequence: launches.into_iter().map(|l| l.kernel).collect(),
    })
}

/// Profiles the training steps of `settings.flows` on `dev` (an autodiff cubecl device,
/// described by `adapter`), reporting each phase to `progress` and the report so far to
/// `partial` after each flow (so that a run cut short keeps the flows it finished).
///
/// # Errors
/// When `settings.steps` is 0, or a step fails (a flow that diverges).
#[cfg(feature = "wgpu")]
pub fn profile_train_steps(
    settings: &StepProfileSettings,
    dev: &Device,
    adapter: String,
    progress: &mut dyn FnMut(&str),
    partial: &mut dyn FnMut(&StepProfileReport),
) -> Result<StepProfileReport, String> {
    if settings.steps == 0 {
        return Err("at least one observed step is needed".into());
    }
    let mut report = StepProfileReport {
        adapter,
        timed: settings.timed,
        cases: Vec::new(),
    };
    for &flow in &settings.flows {
        let case = match flow {
            TrainFlow::Phi4Tutorial => {
                profile_case(flow, phi4_tutorial_flow(dev), settings, dev, progress)
            }
            TrainFlow::IsingL16 => profile_case(flow, ising_l16_flow(dev), settings, dev, progress),
        }?;
        report.cases.push(case);
        partial(&report);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launches::Launch;

    fn report(first_step_ms: Option<f64>) -> StepProfileReport {
        let launches = [Launch::timed("k", 2.0), Launch::timed("k", 2.0)];
        StepProfileReport {
            adapter: "test adapter".into(),
            timed: true,
            cases: vec![StepCase {
                flow: "phi4",
                bench: "train_step/phi4_tutorial",
                batch: 256,
                first_step_ms,
                wall_ms_per_step: 0.02,
                profile: LaunchProfile::new(1, &launches),
                sequence: vec!["k".into(); 2],
            }],
        }
    }

    #[test]
    fn markdown_reports_the_first_step_apart() {
        let md = report(Some(84_321.0)).markdown(5);
        assert!(
            md.contains(
                "The first step took 84.3 s (pipeline compilation, autotune).\n\n0.02 ms/step \
                 wall, unobserved (the timed kernels' device time is 20 % of it)"
            ),
            "{md}"
        );
        let md = report(None).markdown(5);
        assert!(!md.contains("first step"), "{md}");
        let json = serde_json::to_value(report(None)).expect("serialises");
        assert!(json["cases"][0]["first_step_ms"].is_null());
    }
}
