//! The pieces for backend authors: what an [`Executor`](crate::Executor) implementation
//! uses to admit, count, run and drop jobs with the same semantics as the built-in
//! backends. Code that only submits work never needs this module.

pub use crate::admission::{Admission, Entry};
pub use crate::handle::EndObserver;
pub use crate::help::{HelpGuard, help_while_waiting};
pub use crate::job::{AttemptHook, FailureHandler, FailureHook, JobFuture, RunHook};
pub use crate::meta::MetaRef;
pub use crate::ranked::{AGING, Ranked};
pub use crate::stats::{StatsRecorder, StatusCounters};
pub use crate::unstarted::Unstarted;

/// Locks `m`, recovering the guard if a thread panicked while holding it: for state whose
/// critical sections never leave it half changed, where poisoning would only turn one
/// panic into a second one in every thread that touches the lock afterwards.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
