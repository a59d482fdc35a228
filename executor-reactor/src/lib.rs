//! switchyard's reactor: the tokio runtime context in which thread-based backends
//! (`executor-threads`, `executor-rayon`) drive async tasks, so that a future routed to
//! any backend can use tokio timers and tokio I/O as it would on a tokio runtime.
//!
//! A [`Reactor`] is a handle to a *multi-thread* tokio runtime whose own worker threads
//! run its I/O and timer drivers. A backend's worker thread [`enter`](Reactor::enter)s its
//! context for the thread's whole life and keeps polling futures itself (core's
//! `block_on`, parking between wake-ups); tokio's timers and sockets register with the
//! reactor's drivers, and their wakers unpark the worker. No task moves to the reactor's
//! threads: a future stays on the worker its policy chose.
//!
//! [`Reactor::shared`] is one process-wide runtime with a single worker thread named
//! `switchyard-reactor`, started on first use; [`Reactor::from_handle`] uses an
//! application's own runtime instead.
//!
//! ```
//! use executor_reactor::Reactor;
//! use std::time::Duration;
//!
//! let reactor = Reactor::shared().expect("the reactor thread starts");
//! std::thread::spawn(move || {
//!     let _context = reactor.enter();
//!     // A plain thread, yet tokio timers work: the reactor drives them.
//!     executor_core::block_on(tokio::time::sleep(Duration::from_millis(1)));
//! })
//! .join()
//! .unwrap();
//! ```
#![forbid(unsafe_code)]

use std::sync::OnceLock;
use tokio::runtime::{EnterGuard, Handle, Runtime, RuntimeFlavor};

/// The name of the shared runtime's worker thread.
pub const THREAD_NAME: &str = "switchyard-reactor";

/// A tokio runtime whose context backends run async tasks in. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Reactor {
    handle: Handle,
}

static SHARED: OnceLock<Runtime> = OnceLock::new();

impl Reactor {
    /// The process-wide reactor: a multi-thread runtime with one worker thread
    /// ([`THREAD_NAME`]) and its timer and I/O drivers, started on the first call and
    /// never shut down. Fails only when the OS refuses the thread or the driver.
    pub fn shared() -> std::io::Result<Reactor> {
        if let Some(rt) = SHARED.get() {
            return Ok(Reactor::from_handle(rt.handle().clone()));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()?;
        // Two first callers may race: one runtime wins, the other is shut down unused.
        if let Err(extra) = SHARED.set(rt) {
            extra.shutdown_background();
        }
        let rt = SHARED.get().expect("set above");
        Ok(Reactor::from_handle(rt.handle().clone()))
    }

    /// A reactor over an application's own runtime. It must keep running while the
    /// backends do, and its drivers must be driven without help from the backend's
    /// threads: a multi-thread runtime (as `#[tokio::main]` builds) always is; a
    /// current-thread runtime only while some thread sits in its `block_on`.
    pub fn from_handle(handle: Handle) -> Reactor {
        Reactor { handle }
    }

    /// The runtime's handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Enters the runtime's context on this thread until the guard drops: tokio timers,
    /// sockets, `Handle::current()` and `tokio::spawn` work here. Guards must be dropped
    /// in the reverse order they were taken on a thread.
    pub fn enter(&self) -> EnterGuard<'_> {
        self.handle.enter()
    }

    /// Runs `f`, which may block for as long as a task takes, on the calling thread with
    /// the reactor's context (for a task run by its submitter, as a full queue's
    /// "caller runs" does). When the caller is a worker of a multi-thread tokio runtime
    /// (a task submitting from an async context), its runtime is told the worker blocks
    /// (`block_in_place`), so the runtime's other tasks and its drivers, possibly the
    /// reactor's own, keep running meanwhile.
    pub fn run_blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        let run = || {
            let _context = self.enter();
            f()
        };
        match Handle::try_current() {
            // Outside a runtime worker, `block_in_place` just calls `run`; on a
            // current-thread runtime it would panic, so that caller blocks as before.
            Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_shared_reactor_is_one_runtime() {
        let a = Reactor::shared().unwrap();
        let b = Reactor::shared().unwrap();
        let worker = |r: &Reactor| {
            r.handle()
                .block_on(async {
                    tokio::spawn(async { std::thread::current().name().map(str::to_owned) }).await
                })
                .unwrap()
        };
        assert_eq!(worker(&a).as_deref(), Some(THREAD_NAME));
        assert_eq!(worker(&b).as_deref(), Some(THREAD_NAME));
    }

    #[test]
    fn a_caller_inside_a_multi_thread_runtime_may_block_on_a_timer() {
        // The caller is the only worker of its runtime; blocking it outright would stall
        // that runtime. `run_blocking` hands its work off and the timer still fires.
        let app = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let reactor = Reactor::from_handle(app.handle().clone());
        let (tx, rx) = std::sync::mpsc::channel();
        // On its own thread, so that a regression fails the test instead of hanging it.
        std::thread::spawn(move || {
            let got = app.block_on(async move {
                tokio::spawn(async move {
                    reactor.run_blocking(|| {
                        executor_core::block_on(tokio::time::sleep(Duration::from_millis(1)));
                        7
                    })
                })
                .await
            });
            let _ = tx.send(got);
        });
        let got = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the blocked runtime worker stalled its own timer");
        assert_eq!(got.unwrap(), 7);
    }
}
