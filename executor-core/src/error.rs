//! Errors: [`TaskError`] for a task's outcome, [`SubmitError`] for an executor refusing a job.

use crate::job::Job;
use std::any::Any;
use std::fmt;
use std::sync::Mutex;

/// A panic's payload as `catch_unwind` returned it.
type Payload = Box<dyn Any + Send + 'static>;

/// A boxed error, the glue type for a task's own error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a task did not produce its value.
///
/// Opaque on purpose: ask it with the predicates (`is_panic`, `is_failed`, ...), so that new
/// kinds can be added without breaking callers.
pub struct TaskError {
    kind: Kind,
}

/// Every kind's data is behind one thin pointer: every task's state keeps room for a
/// `Result<T, TaskError>`, so the error's size is paid by every task, including the ones
/// that succeed (see `job::sizes`); a failure's own error is boxed once more for that.
enum Kind {
    Failed(Box<BoxError>),
    Panicked(Box<Panic>),
    Cancelled,
    TimedOut,
    // A thin pointer, where a `String` would be three words in every task's state.
    #[allow(clippy::box_collection)]
    Rejected(Box<String>),
    Shutdown,
}

/// A caught panic: the message, read once, and the payload itself behind a mutex, which
/// makes the error `Sync` (a payload is only `Send`); it is locked only to take the
/// payload out.
struct Panic {
    message: String,
    payload: Mutex<Payload>,
}

impl Kind {
    fn panicked(message: String, payload: Payload) -> Self {
        Kind::Panicked(Box::new(Panic {
            message,
            payload: Mutex::new(payload),
        }))
    }
}

impl TaskError {
    /// The task returned this error.
    pub fn failed(error: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::Failed(Box::new(error.into())),
        }
    }

    /// The task panicked with this message (the payload is the message as a `String`).
    pub fn panicked(message: impl Into<String>) -> Self {
        let message = message.into();
        let payload: Payload = Box::new(message.clone());
        Self {
            kind: Kind::panicked(message, payload),
        }
    }

    /// The task was cancelled, before it started or while it ran.
    pub fn cancelled() -> Self {
        Self {
            kind: Kind::Cancelled,
        }
    }

    /// The task did not finish before its deadline.
    pub fn timed_out() -> Self {
        Self {
            kind: Kind::TimedOut,
        }
    }

    /// The executor refused the task (a full queue, a limit); `reason` says which.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self {
            kind: Kind::Rejected(Box::new(reason.into())),
        }
    }

    /// The executor shut down before the task started.
    pub fn shutdown() -> Self {
        Self {
            kind: Kind::Shutdown,
        }
    }

    /// Builds the error from a panic payload as `catch_unwind` returns it; the payload is
    /// kept for [`into_panic`](Self::into_panic).
    pub fn from_panic(payload: Box<dyn Any + Send>) -> Self {
        Self {
            kind: Kind::panicked(panic_message(&*payload), payload),
        }
    }

    /// True when the task returned an error of its own (see [`std::error::Error::source`]).
    pub fn is_failed(&self) -> bool {
        matches!(self.kind, Kind::Failed(_))
    }

    /// True when the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.kind, Kind::Panicked(..))
    }

    /// The panic message, when the task panicked.
    pub fn panic_message(&self) -> Option<&str> {
        match &self.kind {
            Kind::Panicked(p) => Some(&p.message),
            _ => None,
        }
    }

    /// The panic's payload, to carry the panic on with [`std::panic::resume_unwind`].
    ///
    /// # Panics
    /// When the task did not panic; see [`try_into_panic`](Self::try_into_panic).
    ///
    /// ```
    /// use executor_core::{ExecutorExt, InlineExecutor};
    /// let exec = InlineExecutor::new("inline");
    /// let err = exec.submit(|| -> u32 { panic!("bad input") }).wait().unwrap_err();
    /// let payload = err.into_panic();
    /// let resume = std::panic::AssertUnwindSafe(|| std::panic::resume_unwind(payload));
    /// let caught = std::panic::catch_unwind(resume);
    /// assert_eq!(caught.unwrap_err().downcast_ref::<&str>(), Some(&"bad input"));
    /// ```
    #[track_caller]
    pub fn into_panic(self) -> Box<dyn Any + Send> {
        self.try_into_panic()
            .unwrap_or_else(|e| panic!("`into_panic` on a task error that is no panic: {e}"))
    }

    /// The panic's payload when the task panicked; the error itself otherwise.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send>, TaskError> {
        match self.kind {
            Kind::Panicked(p) => Ok(p.payload.into_inner().unwrap_or_else(|e| e.into_inner())),
            kind => Err(TaskError { kind }),
        }
    }

    /// True when the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.kind, Kind::Cancelled)
    }

    /// True when the task ran past its deadline.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::TimedOut)
    }

    /// True when an executor refused the task.
    pub fn is_rejected(&self) -> bool {
        matches!(self.kind, Kind::Rejected(_))
    }

    /// True when the executor shut down before the task started.
    pub fn is_shutdown(&self) -> bool {
        matches!(self.kind, Kind::Shutdown)
    }

    /// The task's own error, when it failed.
    pub fn into_failure(self) -> Option<BoxError> {
        match self.kind {
            Kind::Failed(e) => Some(*e),
            _ => None,
        }
    }

    /// The status this error stands for in stats and ledgers.
    pub fn status(&self) -> crate::Status {
        use crate::Status;
        match self.kind {
            Kind::Failed(_) => Status::Failed,
            Kind::Panicked(..) => Status::Panicked,
            Kind::Cancelled => Status::Cancelled,
            Kind::TimedOut => Status::TimedOut,
            Kind::Rejected(_) => Status::Rejected,
            Kind::Shutdown => Status::NotStarted,
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Failed(e) => write!(f, "task failed: {e}"),
            Kind::Panicked(p) => write!(f, "task panicked: {}", p.message),
            Kind::Cancelled => f.write_str("task was cancelled"),
            Kind::TimedOut => f.write_str("task timed out"),
            Kind::Rejected(r) => write!(f, "task was rejected: {r}"),
            Kind::Shutdown => f.write_str("executor shut down before the task started"),
        }
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
            Kind::Panicked(p) => f.debug_tuple("Panicked").field(&p.message).finish(),
            Kind::Cancelled => f.write_str("Cancelled"),
            Kind::TimedOut => f.write_str("TimedOut"),
            Kind::Rejected(r) => f.debug_tuple("Rejected").field(r).finish(),
            Kind::Shutdown => f.write_str("Shutdown"),
        }
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Failed(e) => Some(&***e),
            _ => None,
        }
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// The error a task returns from [`TaskContext::checkpoint`](crate::TaskContext::checkpoint)
/// once it has been asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task was asked to stop")
    }
}

impl std::error::Error for Cancelled {}

/// An executor refused a job; the job comes back with the error.
pub struct SubmitError {
    kind: SubmitKind,
    job: Option<Job>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SubmitKind {
    Full,
    Shutdown,
}

impl SubmitError {
    /// The queue was full and the executor is set to reject.
    pub fn full(job: Job) -> Self {
        Self {
            kind: SubmitKind::Full,
            job: Some(job),
        }
    }

    /// The executor is shutting down or shut down.
    pub fn shutdown(job: Job) -> Self {
        Self {
            kind: SubmitKind::Shutdown,
            job: Some(job),
        }
    }

    /// True when the queue was full.
    pub fn is_full(&self) -> bool {
        self.kind == SubmitKind::Full
    }

    /// True when the executor no longer takes work.
    pub fn is_shutdown(&self) -> bool {
        self.kind == SubmitKind::Shutdown
    }

    /// Takes the refused job back, to retry elsewhere or to resolve it.
    pub fn into_job(mut self) -> Option<Job> {
        self.job.take()
    }

    /// The [`TaskError`] a task refused this way resolves with.
    pub fn task_error(&self) -> TaskError {
        match self.kind {
            SubmitKind::Full => TaskError::rejected("the executor's queue is full"),
            SubmitKind::Shutdown => TaskError::shutdown(),
        }
    }
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SubmitKind::Full => f.write_str("the executor's queue is full"),
            SubmitKind::Shutdown => f.write_str("the executor is shut down"),
        }
    }
}

impl fmt::Debug for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubmitError({self})")
    }
}

impl std::error::Error for SubmitError {}

impl Drop for SubmitError {
    /// A refused job nobody took back resolves its handle, so no caller waits forever.
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            job.resolve(self.task_error());
        }
    }
}
