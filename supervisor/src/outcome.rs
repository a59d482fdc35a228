//! What the supervisor measures for [`Policy::observe`](executor_core::Policy::observe):
//! the attempts a task ran and the CPU time they used on their threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use executor_core::backend::RunHook;
use executor_core::{Outcome, Status};

/// One task's measures, shared by its run hook and its end observer.
#[derive(Debug)]
pub(crate) struct Track {
    submitted: Instant,
    /// The highest attempt whose body ran.
    attempts: AtomicU32,
    /// Thread CPU time over every run, in nanoseconds.
    cpu_ns: AtomicU64,
    cpu: bool,
}

impl Track {
    pub(crate) fn new(cpu: bool) -> Arc<Self> {
        Arc::new(Track {
            submitted: Instant::now(),
            attempts: AtomicU32::new(0),
            cpu_ns: AtomicU64::new(0),
            cpu,
        })
    }

    /// The hook that measures every run of every attempt.
    pub(crate) fn hook(self: &Arc<Self>) -> Box<dyn RunHook> {
        Box::new(Measure(self.clone()))
    }

    /// The outcome of a task that ended with `status`.
    pub(crate) fn outcome(&self, status: Status) -> Outcome {
        let outcome = Outcome::new(
            status,
            self.attempts.load(Relaxed),
            self.submitted.elapsed(),
        );
        if self.cpu {
            outcome.with_cpu_time(Duration::from_nanos(self.cpu_ns.load(Relaxed)))
        } else {
            outcome
        }
    }
}

struct Measure(Arc<Track>);

impl RunHook for Measure {
    fn around(&mut self, attempt: u32, run: &mut dyn FnMut()) {
        self.0.attempts.fetch_max(attempt, Relaxed);
        if !self.0.cpu {
            return run();
        }
        let start = thread_cpu_ns();
        run();
        let used = thread_cpu_ns().saturating_sub(start);
        self.0.cpu_ns.fetch_add(used, Relaxed);
    }
}

/// The CPU time the calling thread has used, in nanoseconds (0 where there is no thread
/// CPU clock).
#[cfg(unix)]
#[allow(unsafe_code)] // One FFI call; see the SAFETY comment.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through the pointer, which points to
    // a live, writable, properly aligned local; CLOCK_THREAD_CPUTIME_ID is a clock every
    // supported unix provides, and on failure (-1) `ts` stays zero, which we read as 0.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(not(unix))]
fn thread_cpu_ns() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_clock_counts_work_and_not_sleep() {
        let t0 = thread_cpu_ns();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_ns() - t0;
        let t1 = thread_cpu_ns();
        let mut x = 0u64;
        while thread_cpu_ns() - t1 < 20_000_000 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(slept < 20_000_000, "sleeping used {slept} ns of CPU");
        assert!(x > 0);
    }
}
