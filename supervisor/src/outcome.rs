//! What the supervisor measures for [`Policy::observe`](executor_core::Policy::observe):
//! the attempts a task ran, the CPU time they used on their threads, the time they spent
//! blocked (off the CPU by their own doing), and the longest poll of a future.

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
    /// Time the runs spent blocked (not running and not waiting for a CPU), in nanoseconds.
    blocked_ns: AtomicU64,
    /// The longest single run, in nanoseconds, less its wait for a CPU (for a future: its
    /// longest poll).
    longest_ns: AtomicU64,
    /// For a future: when its last poll ended (nanoseconds after `submitted`) and in which
    /// attempt, so the wait until its next poll counts as blocked (awaiting I/O or a timer).
    last_end_ns: AtomicU64,
    last_attempt: AtomicU32,
    cpu: bool,
    is_async: bool,
}

impl Track {
    pub(crate) fn new(cpu: bool, is_async: bool) -> Arc<Self> {
        Arc::new(Track {
            submitted: Instant::now(),
            attempts: AtomicU32::new(0),
            cpu_ns: AtomicU64::new(0),
            blocked_ns: AtomicU64::new(0),
            longest_ns: AtomicU64::new(0),
            last_end_ns: AtomicU64::new(0),
            last_attempt: AtomicU32::new(0),
            cpu,
            is_async,
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
        if !self.cpu {
            return outcome;
        }
        let outcome = outcome
            .with_cpu_time(Duration::from_nanos(self.cpu_ns.load(Relaxed)))
            .with_blocked_time(Duration::from_nanos(self.blocked_ns.load(Relaxed)));
        if self.is_async {
            outcome.with_longest_poll(Duration::from_nanos(self.longest_ns.load(Relaxed)))
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
        let start = Instant::now();
        if self.0.is_async {
            // Between two polls of one attempt a future awaits (I/O, a timer): blocked
            // time, as a blocking task's sleep is. It includes the wait for a runtime
            // worker once woken, which a busy runtime makes longer.
            let at = nanos(start.saturating_duration_since(self.0.submitted));
            if self.0.last_attempt.swap(attempt, Relaxed) == attempt {
                let gap = at.saturating_sub(self.0.last_end_ns.load(Relaxed));
                self.0.blocked_ns.fetch_add(gap, Relaxed);
            }
        }
        let before = sched::now();
        run();
        let after = sched::now();
        let wall = nanos(start.elapsed());
        if self.0.is_async {
            let end = nanos(self.0.submitted.elapsed());
            self.0.last_end_ns.store(end, Relaxed);
        }
        let used = after.cpu_ns.saturating_sub(before.cpu_ns);
        let waited = after.wait_ns.saturating_sub(before.wait_ns);
        self.0.cpu_ns.fetch_add(used, Relaxed);
        self.0
            .blocked_ns
            .fetch_add(wall.saturating_sub(used + waited), Relaxed);
        // How long the run held its thread by its own doing: computing or blocked, not
        // waiting for a CPU (a busy machine is not the task's fault).
        self.0
            .longest_ns
            .fetch_max(wall.saturating_sub(waited), Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The scheduler's account of the calling thread: CPU time used (the thread clock, exact),
/// and time spent runnable but waiting for a CPU (Linux keeps it in
/// `/proc/thread-self/schedstat`, read through a file each thread keeps open; it changes
/// only when the thread is switched in, so it is exact while the thread runs). Elsewhere
/// the wait is unknown and reads 0.
mod sched {
    /// One reading.
    #[derive(Clone, Copy, Default)]
    pub(super) struct Reading {
        pub(super) cpu_ns: u64,
        pub(super) wait_ns: u64,
    }

    pub(super) fn now() -> Reading {
        Reading {
            cpu_ns: crate::clock::thread_cpu_ns(),
            wait_ns: wait_ns(),
        }
    }

    #[cfg(target_os = "linux")]
    fn wait_ns() -> u64 {
        use std::cell::RefCell;
        use std::os::unix::fs::FileExt;
        thread_local! {
            static FILE: RefCell<Option<std::fs::File>> =
                RefCell::new(std::fs::File::open("/proc/thread-self/schedstat").ok());
        }
        FILE.with(|f| {
            let f = f.borrow();
            let mut buf = [0u8; 96];
            let n = f.as_ref()?.read_at(&mut buf, 0).ok()?;
            let text = std::str::from_utf8(&buf[..n]).ok()?;
            text.split_ascii_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
    }

    #[cfg(not(target_os = "linux"))]
    fn wait_ns() -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::thread_cpu_ns;

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

    #[test]
    fn a_sleep_is_blocked_time_and_a_spin_is_cpu_time() {
        let sleep = Track::new(true, false);
        let mut hook = sleep.hook();
        hook.around(1, &mut || std::thread::sleep(Duration::from_millis(40)));
        let spin = Track::new(true, false);
        let mut hook = spin.hook();
        // Spins for 20 ms of this thread's CPU, however long a busy machine makes it take.
        hook.around(1, &mut || {
            let t = thread_cpu_ns();
            while thread_cpu_ns() - t < 20_000_000 {
                std::hint::black_box(());
            }
        });
        let (s, p) = (
            sleep.outcome(Status::Completed),
            spin.outcome(Status::Completed),
        );
        let ms = |d: Option<Duration>| d.unwrap().as_secs_f64() * 1e3;
        assert!(ms(s.blocked_time()) > 30.0, "{s:?}");
        assert!(ms(s.cpu_time()) < 10.0, "{s:?}");
        // The spin may wait for a CPU on a busy machine, but it never blocks.
        assert!(ms(p.blocked_time()) < 10.0, "{p:?}");
        assert!(ms(p.cpu_time()) >= 20.0, "{p:?}");
        assert_eq!(s.longest_poll(), None);
    }
}
