//! How a supervisor stops: close the gate, let the work finish within the deadline, end
//! what the layers hold, shut the executors down, and account for every task.

use std::time::{Duration, Instant};

use executor_core::{ShutdownMode, ShutdownReport};

use super::Supervisor;
use crate::ledger::ShutdownLedger;
use crate::scheduler::lock;

/// How long a `Now` shutdown waits for a submission still inside `execute` (one blocked
/// on a full queue, say) before it shuts the executors down, which lets it out.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(200);

impl Supervisor {
    /// Stops taking tasks and ends everything, then reports every task.
    ///
    /// `Graceful(d)`: waits up to `d` for submitted tasks (queued, waiting for a limit or
    /// a retry) to end; past it, tasks that have not started are dropped (listed in
    /// [`ShutdownLedger::never_ran`]) and pending retries end with their last error.
    /// Running tasks are not interrupted: they are counted in `still_running`, and their
    /// handles resolve when they end or at their timeout. `Now` skips the wait.
    /// Calling it again returns the first report.
    ///
    /// [`Executor::shutdown`](executor_core::Executor::shutdown) does the same and returns the ledger in executor-core's
    /// shape (the counts in `stats`, the tasks that never ran in `not_started`).
    pub fn shutdown_ledger(&self, mode: ShutdownMode) -> ShutdownLedger {
        let mut report = lock(&self.report);
        if let Some(r) = &*report {
            return r.clone();
        }
        let start = Instant::now();
        let deadline = start + mode.deadline();
        // Later submissions are refused; the ones inside `execute` now finish handing
        // their job to its route before anything below sweeps the routes.
        self.gate.close();
        self.gate
            .wait_in_flight(Some(deadline.max(start + IN_FLIGHT_GRACE)));
        // A reload in progress finishes before the executors are collected below, and
        // later ones see the gate closed.
        drop(lock(&self.reload_lock));
        drop(lock(&self.watcher).take());
        let ledger = &self.ledger;
        if matches!(mode, ShutdownMode::Graceful(_)) {
            while ledger.unresolved() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let deadline_passed = ledger.unresolved() > 0;

        // No more retries or scheduling; end what the layers hold: a pending retry ends
        // with its last error, a job waiting for a limit is dropped (not started).
        self.core.close();
        if let Some(h) = lock(&self.scheduler).take() {
            let _ = h.join();
        }
        drop(self.core.sweep_limiters());

        // Shut the executors down, in parallel, within what is left of the deadline.
        let mode = match mode {
            ShutdownMode::Now => ShutdownMode::Now,
            ShutdownMode::Graceful(_) => {
                ShutdownMode::Graceful(deadline.saturating_duration_since(Instant::now()))
            }
        };
        let executors = lock(&self.all_executors).clone();
        let code: Vec<_> = self.code.executors.values().cloned().collect();
        let reports: Vec<ShutdownReport> = std::thread::scope(|s| {
            let joins: Vec<_> = executors
                .iter()
                .chain(&code)
                .map(|e| s.spawn(move || e.shutdown(mode)))
                .collect();
            joins.into_iter().filter_map(|j| j.join().ok()).collect()
        });
        // A submission that was blocked on a full queue is out now; what it left in a
        // limiter's queue ends here.
        self.gate
            .wait_in_flight(Some(Instant::now() + IN_FLIGHT_GRACE));
        drop(self.core.sweep_limiters());
        // Handles resolve as their executors drop or finish them; give the observers a
        // moment to run on the threads that resolve them.
        let settle = Instant::now() + Duration::from_millis(200);
        while ledger.unresolved() > 0 && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(1));
        }
        let counts = ledger.snapshot();
        let r = ShutdownLedger {
            counts,
            still_running: counts.submitted.saturating_sub(counts.ended()),
            never_ran: ledger.never_ran(),
            deadline_passed: deadline_passed || reports.iter().any(|r| r.deadline_passed),
            executors: reports,
        };
        tracing::info!(ledger = %r, "supervisor shut down");
        *report = Some(r.clone());
        r
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Dropped without a shutdown: stop the scheduler thread and end what the layers
        // hold, so no handle waits forever. (Executors stop as their last reference drops.)
        if lock(&self.report).is_none() {
            self.gate.close();
            self.core.close();
            if let Some(h) = lock(&self.scheduler).take() {
                let _ = h.join();
            }
            drop(self.core.sweep_limiters());
        }
    }
}
