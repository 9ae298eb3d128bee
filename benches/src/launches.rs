//! The kernel launches of a piece of GPU work (a training step), counted and timed per
//! kernel.
//!
//! Through wgpu every kernel launch costs the host a few microseconds to encode and submit,
//! whatever its arithmetic, so a step of `n` launches cannot run faster than about
//! `n × t_launch` (`t_launch` ≈ 5–20 µs); at the lattice sizes of the φ⁴ tutorial and
//! NeuralRG's Ising flow the arithmetic per launch is small and this floor is most of the
//! step. The launch count measures how well a step is fused whatever the hardware (up to the
//! copies that a device's buffer-offset alignment forces on some slices), and the device
//! time of each kernel (timestamp queries, on a GPU that has them) says where a GPU spends
//! the rest.
//!
//! ```text
//! launches/step   = launches in the window / steps
//! device time     = Σ over a kernel's timed launches of (end − start), device timestamps
//! ```
//!
//! Timing a launch makes CubeCL submit it on its own (the profile window flushes the queue
//! around it), so timed steps run slower than unobserved ones: compare the device time with
//! the wall time of unobserved steps. [`LaunchProfile`] is the arithmetic on recorded
//! [`Launch`]es (backend-free, tested here); `observe` (cargo feature `wgpu`) records them
//! through CubeCL's launch observer, process-wide, for the launches issued while a closure
//! runs. With burn's fusion, operations are queued and launched at the next synchronisation,
//! so a window of several steps, each ending in a read of its loss, counts whole steps up to
//! the last one's optimiser update.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One kernel launch: the kernel's (short) name and, when it was timed on the device, its
/// device time.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// The kernel, as CubeCL names it (shortened: module path and generics dropped).
    pub kernel: String,
    /// The launch's device time (µs), when timed.
    pub device_us: Option<f64>,
}

impl Launch {
    /// A launch that took `us` µs on the device.
    pub fn timed(kernel: impl Into<String>, us: f64) -> Self {
        Self {
            kernel: kernel.into(),
            device_us: Some(us),
        }
    }

    /// A launch counted, not timed.
    pub fn counted(kernel: impl Into<String>) -> Self {
        Self {
            kernel: kernel.into(),
            device_us: None,
        }
    }
}

/// One kernel's share of a profiled window, per step.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KernelRow {
    /// The kernel.
    pub kernel: String,
    /// Launches per step.
    pub launches_per_step: f64,
    /// Device time per step (µs), summed over the launches that were timed; `None` when
    /// none was.
    pub device_us_per_step: Option<f64>,
}

/// Launches per step, per kernel, and (when timed) the device time they took.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LaunchProfile {
    /// Steps in the window.
    pub steps: usize,
    /// All launches per step.
    pub launches_per_step: f64,
    /// How many launches (of all in the window) carried a device timing (0: counts only).
    pub timed_launches: usize,
    /// Σ of the timed launches' device times, per step (µs); a lower bound when not every
    /// launch was timed.
    pub device_us_per_step: Option<f64>,
    /// The kernels, by device time and then by launches, most first.
    pub kernels: Vec<KernelRow>,
}

impl LaunchProfile {
    /// The profile of `launches` recorded over `steps` steps.
    ///
    /// # Panics
    /// If `steps` is 0.
    pub fn new(steps: usize, launches: &[Launch]) -> Self {
        assert!(steps > 0, "a launch profile needs at least one step");
        let per = |x: f64| x / steps as f64;
        let mut by_kernel: BTreeMap<&str, (usize, Option<f64>)> = BTreeMap::new();
        let mut timed = 0;
        let mut device = 0.0;
        for l in launches {
            let entry = by_kernel.entry(&l.kernel).or_default();
            entry.0 += 1;
            if let Some(t) = l.device_us {
                *entry.1.get_or_insert(0.0) += t;
                timed += 1;
                device += t;
            }
        }
        let mut kernels: Vec<KernelRow> = by_kernel
            .into_iter()
            .map(|(kernel, (n, t))| KernelRow {
                kernel: kernel.to_string(),
                launches_per_step: per(n as f64),
                device_us_per_step: t.map(per),
            })
            .collect();
        kernels.sort_by(|a, b| {
            let t = |r: &KernelRow| r.device_us_per_step.unwrap_or(0.0);
            t(b).total_cmp(&t(a))
                .then(b.launches_per_step.total_cmp(&a.launches_per_step))
                .then(a.kernel.cmp(&b.kernel))
        });
        Self {
            steps,
            launches_per_step: per(launches.len() as f64),
            timed_launches: timed,
            device_us_per_step: (timed > 0).then(|| per(device)),
            kernels,
        }
    }

    /// A Markdown summary: the totals, then the `top` kernels (the rest in one row).
    pub fn markdown(&self, top: usize) -> String {
        let mut md = String::new();
        let all = (self.launches_per_step * self.steps as f64).round();
        let _ = write!(
            md,
            "{:.1} launches per step ({} kernels, {} steps)",
            self.launches_per_step,
            self.kernels.len(),
            self.steps
        );
        match self.device_us_per_step {
            Some(d) => {
                let _ = writeln!(
                    md,
                    "; device time {d:.0} µs/step ({} of {all} launches timed)\n",
                    self.timed_launches
                );
            }
            None => md.push_str("; not timed on the device\n\n"),
        }
        md.push_str("| kernel | launches/step | device µs/step |\n|---|---:|---:|\n");
        let row = |md: &mut String, name: &str, n: f64, t: Option<f64>| {
            let t = t.map_or("–".to_string(), |t| format!("{t:.1}"));
            let _ = writeln!(md, "| {name} | {n:.1} | {t} |");
        };
        for r in self.kernels.iter().take(top) {
            row(
                &mut md,
                &r.kernel,
                r.launches_per_step,
                r.device_us_per_step,
            );
        }
        let rest = &self.kernels[top.min(self.kernels.len())..];
        if !rest.is_empty() {
            let n = rest.iter().map(|r| r.launches_per_step).sum();
            let t = rest
                .iter()
                .filter_map(|r| r.device_us_per_step)
                .reduce(|a, b| a + b);
            let others = match rest.len() {
                1 => "1 other".to_string(),
                k => format!("{k} others"),
            };
            row(&mut md, &others, n, t);
        }
        md
    }
}

#[cfg(feature = "wgpu")]
pub use observe::observe;

#[cfg(feature = "wgpu")]
mod observe {
    use super::Launch;
    use cubecl::config::{TypeNameFormatLevel, type_name_format};
    use cubecl_runtime::logging::{
        Duration, LaunchObservation, LaunchObserver, ProfileDuration, TimingMethod, TimingRequest,
    };
    use std::sync::{Arc, Mutex};

    /// A measurement as the observer got it: unread, or (when CubeCL's profiling logger
    /// read it first) a bare duration.
    enum Timing {
        Deferred(ProfileDuration),
        Read(Duration, TimingMethod),
    }

    /// The launches in order, each with its measurement once one arrives.
    struct Recorder {
        timed: bool,
        records: Mutex<Vec<(&'static str, Option<Timing>)>>,
    }

    impl Recorder {
        /// Attaches `timing` to the latest untimed launch of `kernel` (the measurement
        /// arrives right after its launch, on the same thread).
        fn attach(&self, kernel: &'static str, timing: Timing) {
            let mut records = self.records.lock().expect("not poisoned");
            if let Some(r) = records
                .iter_mut()
                .rev()
                .find(|(k, t)| *k == kernel && t.is_none())
            {
                r.1 = Some(timing);
            }
        }
    }

    impl LaunchObserver for Recorder {
        fn launched(&self, kernel: &'static str) {
            self.records
                .lock()
                .expect("not poisoned")
                .push((kernel, None));
        }
        fn timing(&self) -> TimingRequest {
            if self.timed {
                TimingRequest::Deferred
            } else {
                TimingRequest::None
            }
        }
        fn profiled(&self, kernel: &'static str, profile: ProfileDuration) {
            self.attach(kernel, Timing::Deferred(profile));
        }
        fn timed(&self, kernel: &'static str, duration: Duration, method: TimingMethod) {
            self.attach(kernel, Timing::Read(duration, method));
        }
    }

    /// The kernel launches `work` issues on any cubecl device, process-wide, in order; with
    /// `timed`, each is timed on the device (CubeCL's deferred timestamps, read after
    /// `work`; each timed launch is submitted on its own, so `work` runs slower). A launch
    /// whose timing the device could not give (no timestamp queries, or their budget spent)
    /// is counted untimed; so is one timed on the host's clock.
    pub fn observe<T>(timed: bool, work: impl FnOnce() -> T) -> (T, Vec<Launch>) {
        let recorder = Arc::new(Recorder {
            timed,
            records: Mutex::new(Vec::new()),
        });
        let guard = LaunchObservation::new(recorder.clone());
        let out = work();
        drop(guard);
        let records = std::mem::take(&mut *recorder.records.lock().expect("not poisoned"));
        let name = |k: &str| type_name_format(k, TypeNameFormatLevel::Short);
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let launches = records
            .into_iter()
            .map(|(k, timing)| match timing {
                Some(Timing::Read(d, TimingMethod::Device)) => Launch::timed(name(k), us(d)),
                Some(Timing::Deferred(profile))
                    if profile.timing_method() == TimingMethod::Device =>
                {
                    match cubecl::future::block_on(profile.resolve()) {
                        Some(t) => Launch::timed(name(k), us(t.duration())),
                        None => Launch::counted(name(k)),
                    }
                }
                _ => Launch::counted(name(k)),
            })
            .collect();
        (out, launches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(kernel: &str, us: Option<f64>) -> Launch {
        match us {
            Some(t) => Launch::timed(kernel, t),
            None => Launch::counted(kernel),
        }
    }

    #[test]
    fn counts_per_step_and_orders_by_device_time() {
        // two steps: `a` 4× (1 µs), `b` 2× (10 µs), `c` 1× with no timing
        let launches = [
            launch("a", Some(1.0)),
            launch("b", Some(10.0)),
            launch("a", Some(1.0)),
            launch("c", None),
            launch("a", Some(1.0)),
            launch("b", Some(10.0)),
            launch("a", Some(1.0)),
        ];
        let p = LaunchProfile::new(2, &launches);
        assert_eq!(p.launches_per_step, 3.5);
        assert_eq!(p.timed_launches, 6);
        assert_eq!(p.device_us_per_step, Some(12.0)); // (4·1 + 2·10) / 2
        let names: Vec<&str> = p.kernels.iter().map(|r| r.kernel.as_str()).collect();
        assert_eq!(names, ["b", "a", "c"]);
        assert_eq!(p.kernels[0].device_us_per_step, Some(10.0));
        assert_eq!(p.kernels[1].launches_per_step, 2.0);
        assert_eq!(p.kernels[2].device_us_per_step, None);
        let md = p.markdown(2);
        assert!(
            md.starts_with(
                "3.5 launches per step (3 kernels, 2 steps); device time 12 µs/step (6 of 7 \
                 launches timed)"
            ),
            "{md}"
        );
        assert!(md.contains("| b | 1.0 | 10.0 |"), "{md}");
        assert!(md.contains("| 1 other | 0.5 | – |"), "{md}");
        assert!(p.markdown(1).contains("| 2 others | 2.5 | 2.0 |"));
    }

    #[test]
    fn untimed_profile_says_so() {
        let p = LaunchProfile::new(4, &[launch("k", None), launch("k", None)]);
        assert_eq!(p.launches_per_step, 0.5);
        assert_eq!(p.device_us_per_step, None);
        assert!(p.markdown(10).contains("not timed on the device"));
        let json = serde_json::to_value(&p).expect("serialises");
        assert_eq!(json["kernels"][0]["launches_per_step"], 0.5);
    }
}
