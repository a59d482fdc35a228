//! The clocks the supervisor reads through the kernel: a cheap clock for deadlines (the
//! coarse monotonic clock, read in a few nanoseconds where `Instant::now` takes about
//! twenty, turned into `Instant`s that are never early), and the calling thread's CPU
//! clock (for `Outcome`).

use std::time::{Duration, Instant};

/// Gives `Instant`s from the coarse clock. A reading lags the true time by less than the
/// clock's resolution (a kernel tick, 1 to 4 ms), and the base pair below adds at most as
/// much again the other way; adding one resolution makes every reading at or after the
/// true time, and at most two resolutions (plus the moment between the base readings)
/// late. Where there is no coarse clock it reads `Instant::now`.
#[derive(Debug)]
pub(crate) struct CoarseClock {
    /// `Instant::now` read just after `base_coarse`.
    base: Instant,
    base_coarse: u64,
    /// The coarse clock's resolution: added to every reading so none is early.
    slack: Duration,
    /// False where the coarse clock cannot be read.
    usable: bool,
}

impl CoarseClock {
    pub(crate) fn new() -> Self {
        let coarse = sys::coarse_ns();
        let base = Instant::now();
        let slack = sys::coarse_resolution();
        CoarseClock {
            base,
            base_coarse: coarse.unwrap_or(0),
            slack: slack.unwrap_or_default(),
            // A clock with a resolution over 10 ms is too coarse for timeouts.
            usable: coarse.is_some() && slack.is_some_and(|s| s <= Duration::from_millis(10)),
        }
    }

    /// Now, or a little later (see the type's docs).
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        if self.usable
            && let Some(ns) = sys::coarse_ns()
        {
            let since = Duration::from_nanos(ns.saturating_sub(self.base_coarse));
            return self.base + since + self.slack;
        }
        Instant::now()
    }
}

/// The CPU time the calling thread has used, in nanoseconds (0 where there is no thread
/// CPU clock).
pub(crate) fn thread_cpu_ns() -> u64 {
    sys::thread_cpu_ns()
}

#[cfg(unix)]
#[allow(unsafe_code)] // Two FFI calls; see the SAFETY comments.
mod sys {
    use std::time::Duration;

    fn timespec() -> libc::timespec {
        libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }
    }

    fn timespec_ns(ts: &libc::timespec) -> u64 {
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64)
    }

    /// Clock `clock` in nanoseconds; `None` for a clock the kernel lacks.
    #[inline]
    fn read(clock: libc::clockid_t) -> Option<u64> {
        let mut ts = timespec();
        // SAFETY: `clock_gettime` writes one `timespec` through the pointer, which points
        // to a live, writable, properly aligned local; it returns -1 (and we give `None`)
        // for a clock the kernel lacks.
        let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
        (rc == 0).then(|| timespec_ns(&ts))
    }

    /// The resolution of clock `clock`.
    #[cfg(target_os = "linux")]
    fn resolution(clock: libc::clockid_t) -> Option<Duration> {
        let mut ts = timespec();
        // SAFETY: as in `read`, with `clock_getres`.
        let rc = unsafe { libc::clock_getres(clock, &mut ts) };
        (rc == 0).then(|| Duration::from_nanos(timespec_ns(&ts)))
    }

    pub(super) fn thread_cpu_ns() -> u64 {
        read(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or(0)
    }

    /// CLOCK_MONOTONIC_COARSE in nanoseconds.
    #[cfg(target_os = "linux")]
    #[inline]
    pub(super) fn coarse_ns() -> Option<u64> {
        read(libc::CLOCK_MONOTONIC_COARSE)
    }

    /// The resolution of CLOCK_MONOTONIC_COARSE.
    #[cfg(target_os = "linux")]
    pub(super) fn coarse_resolution() -> Option<Duration> {
        resolution(libc::CLOCK_MONOTONIC_COARSE)
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn coarse_ns() -> Option<u64> {
        None
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn coarse_resolution() -> Option<Duration> {
        None
    }
}

#[cfg(not(unix))]
mod sys {
    use std::time::Duration;

    pub(super) fn thread_cpu_ns() -> u64 {
        0
    }

    pub(super) fn coarse_ns() -> Option<u64> {
        None
    }

    pub(super) fn coarse_resolution() -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reading is never before the true time, and not far after it.
    #[test]
    fn readings_are_never_early_and_close() {
        let clock = CoarseClock::new();
        for _ in 0..2000 {
            let before = Instant::now();
            let read = clock.now();
            let after = Instant::now();
            assert!(read >= before, "{:?} early", before - read);
            // Two ticks of at most 10 ms, plus scheduling noise on a busy machine.
            assert!(
                read - after < Duration::from_millis(100),
                "{:?} late",
                read - after
            );
        }
    }
}
