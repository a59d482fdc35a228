//! switchyard's core: the [`Executor`] and [`Policy`] traits, and the task vocabulary
//! every backend shares — [`TaskMeta`], [`TaskHandle`], [`TaskSet`], [`TaskError`],
//! [`TaskContext`], [`ExecutorStats`].
//!
//! This crate knows no backend, no serde and no TOML. Backends (`executor-threads`,
//! `executor-rayon`, `executor-tokio`) implement [`Executor`]; the `supervisor` crate
//! routes tasks to them by a policy file. Code that submits work names only the
//! [`Executor`] it was given, so where work runs can change without touching it.
//!
//! # Example
//!
//! ```
//! use executor_core::{Executor, ExecutorExt, InlineExecutor, TaskMeta, TaskSet};
//! use std::sync::Arc;
//!
//! // Any backend works here; the inline executor runs each task on the caller's thread.
//! let exec: Arc<dyn Executor> = Arc::new(InlineExecutor::new("inline"));
//!
//! // A plain closure, a future, and a fallible task described by its meta.
//! let sum = exec.submit(|| (1..=100u64).sum::<u64>());
//! let fut = exec.submit_async(async { "async works too" });
//! let parsed = exec.run(TaskMeta::new("parse").with_tag("cpu"), |ctx| {
//!     ctx.checkpoint()?; // stop early if cancelled
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>("7".parse::<u32>()?)
//! });
//! assert_eq!(sum.wait().unwrap(), 5050);
//! assert_eq!(fut.wait().unwrap(), "async works too");
//! assert_eq!(parsed.wait().unwrap(), 7);
//!
//! // A panicking task is reported through its handle; nothing else is hurt.
//! let boom = exec.submit(|| -> u32 { panic!("bad input") });
//! let err = boom.wait().unwrap_err();
//! assert!(err.is_panic());
//! assert_eq!(err.panic_message(), Some("bad input"));
//!
//! // Results as they complete.
//! let set: TaskSet<u32> = (0..4).map(|i| exec.submit(move || i)).collect();
//! assert_eq!(set.as_completed().count(), 4);
//!
//! let stats = exec.stats();
//! assert_eq!(stats.completed, 7);
//! assert_eq!(stats.panicked, 1);
//! ```
#![deny(unsafe_code)] // One exception: a task's single allocation (`job.rs`, `Joint`).

mod admission;
pub mod backend;
mod block_on;
mod cancel;
mod context;
mod error;
mod executor;
mod ext;
mod handle;
mod help;
mod inline;
mod job;
#[cfg(all(test, loom))]
mod loom_models;
mod meta;
mod policy;
mod ranked;
mod runners;
mod set;
mod stats;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
mod unstarted;

pub use block_on::block_on;
pub use cancel::{CancelReason, CancelToken, Cancellation, WeakCancelToken};
pub use context::TaskContext;
pub use error::{BoxError, Cancelled, SubmitError, TaskError, panic_message};
pub use executor::{
    Executor, OnFull, ShutdownMode, ShutdownReport, TaskRecord, shutdown_in_background,
};
pub use ext::{ExecutorExt, RangeItem};
pub use handle::TaskHandle;
pub use inline::InlineExecutor;
pub use job::{BoxFuture, Job};
pub use meta::{Outcome, Status, TaskId, TaskMeta};
pub use policy::{Policy, Route};
pub use set::TaskSet;
pub use stats::{ExecutorStats, Latency};
