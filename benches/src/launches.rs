//! The kernel launches of a piece of GPU work (a training step), counted and timed per
//! kernel.
//!
//! Through wgpu every kernel launch costs the host a few microseconds to encode and submit,
//! whatever its arithmetic, so a step of `n` launches cannot run faster than about
//! `n × t_launch` (`t_launch` ≈ 5–20 µs); at the lattice sizes of the φ⁴ tutorial and
//! NeuralRG's Ising flow the arithmetic per launch is small and this floor is most of the
//! step. The launch count is therefore a hardware-independent measure of how well a step is
//! fused — it is the same on software Vulkan as on a GPU — and the device time of each
//! kernel (timestamp queries, on a GPU that has them) says where a GPU spends the rest.
//!
//! ```text
//! launches/step   = launches in the window / steps
//! device time     = Σ over a kernel's launches of (end − start), device timestamps
//! busy            = length of the union of all launch windows     (device working)
//! span            = last end − first start                        (busy + idle)
//! idle share      = 1 − busy / span   (the device waiting for the host: launch-bound)
//! ```
//!
//! [`LaunchProfile`] is the arithmetic on recorded [`Launch`]es (backend-free, tested here);
//! `observe` (cargo feature `wgpu`) records them through CubeCL's launch observer, process-wide,
//! for the launches issued while a closure runs. With burn's fusion, operations are queued
//! and launched at the next synchronisation, so a window of several steps, each ending in a
//! read of its loss, counts whole steps up to the last one's optimiser update.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One kernel launch: the kernel's (short) name and, when it was timed on the device, its
/// device time and (with timestamps on one clock) its start and end.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// The kernel, as CubeCL names it (shortened: module path and generics dropped).
    pub kernel: String,
    /// The launch's device time (µs), when timed.
    pub device_us: Option<f64>,
    /// `(start, end)` in µs from a common origin, when timed with timestamps.
    pub window: Option<(f64, f64)>,
}

impl Launch {
    /// A launch timed by device timestamps `start … end` (µs from a common origin).
    pub fn timed(kernel: impl Into<String>, start: f64, end: f64) -> Self {
        Self {
            kernel: kernel.into(),
            device_us: Some(end - start),
            window: Some((start, end)),
        }
    }

    /// A launch counted, not timed.
    pub fn counted(kernel: impl Into<String>) -> Self {
        Self {
            kernel: kernel.into(),
            device_us: None,
            window: None,
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

/// Launches per step, per kernel, and (when timed) where the device spent the window.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LaunchProfile {
    /// Steps in the window.
    pub steps: usize,
    /// All launches per step.
    pub launches_per_step: f64,
    /// How many launches carried a device timing (0: counts only).
    pub timed_launches: usize,
    /// Σ of the timed launches' device times, per step (µs).
    pub device_us_per_step: Option<f64>,
    /// The union of the timed windows, per step (µs): the device at work (`None` unless
    /// every timed launch has its window).
    pub busy_us_per_step: Option<f64>,
    /// First start to last end of the timed windows, per step (µs; as `busy`).
    pub span_us_per_step: Option<f64>,
    /// The kernels, by device time and then by launches, most first.
    pub kernels: Vec<KernelRow>,
}

/// The length of the union of the intervals `(start, end)` (µs).
fn union_length(mut windows: Vec<(f64, f64)>) -> f64 {
    windows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (s, e) in windows {
        match current {
            Some((cs, ce)) if s <= ce => current = Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                current = Some((s, e));
            }
            None => current = Some((s, e)),
        }
    }
    total + current.map_or(0.0, |(s, e)| e - s)
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
        let mut windows = Vec::new();
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
            windows.extend(l.window);
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
        let (busy, span) = if timed == 0 || windows.len() < timed {
            (None, None)
        } else {
            let first = windows.iter().map(|w| w.0).fold(f64::INFINITY, f64::min);
            let last = windows
                .iter()
                .map(|w| w.1)
                .fold(f64::NEG_INFINITY, f64::max);
            (Some(per(union_length(windows))), Some(per(last - first)))
        };
        Self {
            steps,
            launches_per_step: per(launches.len() as f64),
            timed_launches: timed,
            device_us_per_step: (timed > 0).then(|| per(device)),
            busy_us_per_step: busy,
            span_us_per_step: span,
            kernels,
        }
    }

    /// The device's idle share of the timed span, `1 − busy/span`.
    pub fn idle_share(&self) -> Option<f64> {
        match (self.busy_us_per_step, self.span_us_per_step) {
            (Some(b), Some(s)) if s > 0.0 => Some(1.0 - b / s),
            _ => None,
        }
    }

    /// A Markdown summary: the totals, then the `top` kernels (the rest in one row).
    pub fn markdown(&self, top: usize) -> String {
        let mut md = String::new();
        let _ = write!(
            md,
            "{:.1} launches per step ({} kernels, {} steps)",
            self.launches_per_step,
            self.kernels.len(),
            self.steps
        );
        match (
            self.device_us_per_step,
            self.busy_us_per_step,
            self.idle_share(),
        ) {
            (Some(d), Some(b), Some(idle)) => {
                let _ = writeln!(
                    md,
                    "; device time {d:.0} µs/step, busy {b:.0} µs/step, idle {:.0} % of the \
                     span ({} launches timed)\n",
                    100.0 * idle,
                    self.timed_launches
                );
            }
            (Some(d), ..) => {
                let _ = writeln!(
                    md,
                    "; device time {d:.0} µs/step ({} launches timed)\n",
                    self.timed_launches
                );
            }
            _ => md.push_str("; not timed on the device\n\n"),
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
            row(&mut md, &format!("{} others", rest.len()), n, t);
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
    use std::time::Instant;

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
    /// `timed`, each is timed on the device (CubeCL's deferred timestamps: the kernels still
    /// run back to back, the measurements are read after `work`). A launch whose timing the
    /// device could not give (no timestamp queries, or their budget spent) is counted
    /// without a window; so is one timed on the host's clock.
    pub fn observe<T>(timed: bool, work: impl FnOnce() -> T) -> (T, Vec<Launch>) {
        let origin = Instant::now();
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
                Some(Timing::Read(d, TimingMethod::Device)) => Launch {
                    device_us: Some(us(d)),
                    ..Launch::counted(name(k))
                },
                Some(Timing::Deferred(profile))
                    if profile.timing_method() == TimingMethod::Device =>
                {
                    match cubecl::future::block_on(profile.resolve()) {
                        Some(t) => Launch::timed(
                            name(k),
                            us(t.start_duration_since(origin)),
                            us(t.end_duration_since(origin)),
                        ),
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

    fn launch(kernel: &str, window: Option<(f64, f64)>) -> Launch {
        match window {
            Some((s, e)) => Launch::timed(kernel, s, e),
            None => Launch::counted(kernel),
        }
    }

    #[test]
    fn union_length_merges_overlaps_and_keeps_gaps() {
        // [0,2] ∪ [1,3] ∪ [5,6] ∪ [5.5,5.7] = [0,3] ∪ [5,6]: 4
        let w = vec![(5.0, 6.0), (0.0, 2.0), (5.5, 5.7), (1.0, 3.0)];
        assert_eq!(union_length(w), 4.0);
        assert_eq!(union_length(vec![]), 0.0);
        // touching intervals merge
        assert_eq!(union_length(vec![(0.0, 1.0), (1.0, 2.0)]), 2.0);
    }

    #[test]
    fn counts_per_step_and_orders_by_device_time() {
        // two steps: `a` 4×, `b` 2× (timed, 10 µs each), `c` 1× with no timing
        let launches = [
            launch("a", Some((0.0, 1.0))),
            launch("b", Some((1.0, 11.0))),
            launch("a", Some((11.0, 12.0))),
            launch("c", None),
            launch("a", Some((20.0, 21.0))),
            launch("b", Some((21.0, 31.0))),
            launch("a", Some((31.0, 32.0))),
        ];
        let p = LaunchProfile::new(2, &launches);
        assert_eq!(p.launches_per_step, 3.5);
        assert_eq!(p.timed_launches, 6);
        assert_eq!(p.device_us_per_step, Some(12.0)); // (4·1 + 2·10) / 2
        assert_eq!(p.busy_us_per_step, Some(12.0)); // no overlap
        assert_eq!(p.span_us_per_step, Some(16.0)); // 0 … 32
        assert_eq!(p.idle_share(), Some(0.25));
        let names: Vec<&str> = p.kernels.iter().map(|r| r.kernel.as_str()).collect();
        assert_eq!(names, ["b", "a", "c"]);
        assert_eq!(p.kernels[0].device_us_per_step, Some(10.0));
        assert_eq!(p.kernels[1].launches_per_step, 2.0);
        assert_eq!(p.kernels[2].device_us_per_step, None);
        let md = p.markdown(2);
        assert!(
            md.starts_with("3.5 launches per step (3 kernels, 2 steps); device time 12 µs/step")
        );
        assert!(md.contains("| b | 1.0 | 10.0 |"), "{md}");
        assert!(md.contains("| 1 others | 0.5 | – |"), "{md}");
    }

    #[test]
    fn untimed_profile_says_so() {
        let p = LaunchProfile::new(4, &[launch("k", None), launch("k", None)]);
        assert_eq!(p.launches_per_step, 0.5);
        assert_eq!(p.device_us_per_step, None);
        assert_eq!(p.idle_share(), None);
        assert!(p.markdown(10).contains("not timed on the device"));
        let json = serde_json::to_value(&p).expect("serialises");
        assert_eq!(json["kernels"][0]["launches_per_step"], 0.5);
    }

    #[test]
    fn durations_without_windows_give_device_time_but_no_span() {
        let bare = Launch {
            device_us: Some(3.0),
            ..Launch::counted("k")
        };
        let p = LaunchProfile::new(1, &[bare, launch("k", Some((0.0, 1.0)))]);
        assert_eq!(p.device_us_per_step, Some(4.0));
        assert_eq!(p.busy_us_per_step, None);
        assert!(
            p.markdown(5)
                .contains("device time 4 µs/step (2 launches timed)")
        );
    }
}
