//! switchyard named tasks: work that can leave the process.
//!
//! A closure cannot travel; a named task can. Declare one once — a stable name, a serde
//! argument type, a serde result type, a sync or async function — and call it through
//! any [`Executor`](executor_core::Executor): `RESIZE.call(&exec, args)` or
//! `exec.call(&RESIZE, args)` ([`NamedExt`]). The call returns a typed
//! [`TaskHandle`](executor_core::TaskHandle) like every other task, and its
//! [`TaskMeta`](executor_core::TaskMeta) carries the task's name and tags, so the policy
//! routes, retries, times out and limits it exactly like a closure. Task code never
//! names a backend.
//!
//! - **In-process** (threads, rayon, tokio): the function runs directly on the
//!   arguments, no encoding. [`check_payloads`] (or `SWITCHYARD_CHECK_PAYLOADS=1`) makes
//!   each call round-trip its arguments and result through the codec, so a type that
//!   would not travel fails in tests.
//! - **Across a boundary** (the `executor-process` worker pool; the durable and cluster
//!   backends next): the backend finds the [`Call`] in the job's meta, installs a
//!   [`Remote`], and runs the job as usual; the job encodes the arguments ([`Codec`]:
//!   JSON by default, MessagePack for compact), the backend carries the [`wire`]
//!   request to a worker, whose [`Tasks`] registry runs the same function and answers.
//!
//! ```
//! use executor_core::{InlineExecutor, TaskError};
//! use named_tasks::{CallError, NamedExt, Task};
//!
//! static PARSE: Task<String, u32> = Task::new("text.parse", |_ctx, s| Ok(s.trim().parse()?));
//!
//! let exec = InlineExecutor::new("here");
//! assert_eq!(exec.call(&PARSE, " 42 ".into()).wait().unwrap(), 42);
//! let err: TaskError = exec.call(&PARSE, "x".into()).wait().unwrap_err();
//! assert!(err.is_failed());
//! # let _ = std::any::type_name::<CallError>();
//! ```
//!
//! What differs once a task has crossed a boundary: the task's own error comes back as a
//! [`CallError`] carrying its message (the error's type stays behind); a panic comes back
//! as a panic with its message; a crashed worker is a [`CallError`] naming the signal or
//! exit code. In a worker, the task's context has a fresh id and attempt 1, and
//! cancellation ends the worker process rather than setting the token.
#![forbid(unsafe_code)]

mod codec;
mod error;
mod registry;
mod task;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;

pub use codec::{Codec, CodecError};
pub use error::CallError;
pub use registry::Tasks;
pub use task::{
    Args, AsyncFn, Call, NamedExt, Output, Remote, RemoteFn, SyncFn, Task, check_payloads,
};
