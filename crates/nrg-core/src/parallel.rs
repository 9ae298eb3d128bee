//! Running a step of work on the CPU thread pool.
//!
//! The fused CPU kernels of `nrg-layers` and burn's `flex` backend split each tensor
//! operation over rayon's global thread pool. From a thread outside the pool, every such
//! operation hands its tasks to the pool's workers and puts the calling thread to sleep
//! until they are done: a training step of the φ⁴ tutorial's flow is a few hundred
//! operations, so a few hundred sleeps and wake-ups (measured: ~700 context switches per
//! step, 12 % of the CPU time in the kernel). From a worker of the pool, the caller takes
//! part in the work itself and only idle workers wait. [`on_pool`] runs a closure on a
//! worker, so that a whole step — or a whole command — pays the hand-over once.
//!
//! Inside a worker (a nested call) it is a plain call.

/// Runs `work` on a worker thread of rayon's global pool and returns its result (blocking
/// the calling thread until then). A panic in `work` is propagated to the caller.
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

#[cfg(test)]
mod tests {
    use super::on_pool;

    /// The work runs on a worker of the global pool, and nested calls stay on it.
    #[test]
    fn work_runs_on_a_pool_worker() {
        assert!(
            rayon::current_thread_index().is_none(),
            "the test thread is not a worker"
        );
        let (outer, inner) = on_pool(|| {
            let outer = rayon::current_thread_index();
            (outer, on_pool(rayon::current_thread_index))
        });
        assert!(outer.is_some());
        assert_eq!(outer, inner);
        assert_eq!(on_pool(|| 6 * 7), 42);
    }
}
