//! [`CallError`]: why a named task produced no result: a worker's answer, a crash, a payload.

use crate::wire::ErrorKind;
use std::fmt;

/// Why a named task produced no result, beyond its own error: a worker's answer, a
/// crashed worker process, a payload that would not encode or decode.
///
/// It is the source of the handle's [`TaskError`](executor_core::TaskError) (a panic in a
/// worker is reported as a panic instead, with its message): get it with
/// `err.into_failure()` and `downcast::<CallError>()`, then ask the predicates.
#[derive(Debug, Clone)]
pub struct CallError {
    task: String,
    kind: Kind,
    message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A protocol error kind: the worker's answer, or a payload check on this side.
    Worker(ErrorKind),
    /// The process running the task died: a signal or an exit code.
    Crashed {
        signal: Option<&'static str>,
        code: Option<i32>,
    },
    /// The worker could not be reached or broke the protocol.
    Lost,
}

impl CallError {
    /// An error of protocol kind `kind` for the task called `task`: a worker's answer, or
    /// a payload that would not encode or decode on this side (`BadArgs`, `BadResult`).
    pub fn worker(task: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            task: task.into(),
            kind: Kind::Worker(kind),
            message: message.into(),
        }
    }

    /// The process running `task` died by `signal` (a name such as `"SIGSEGV"`) or with
    /// exit `code`; `message` says what is known (e.g. the worker's last words).
    pub fn crashed(
        task: impl Into<String>,
        signal: Option<&'static str>,
        code: Option<i32>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            task: task.into(),
            kind: Kind::Crashed { signal, code },
            message: message.into(),
        }
    }

    /// The worker could not be reached, or broke the protocol.
    pub fn lost(task: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            task: task.into(),
            kind: Kind::Lost,
            message: message.into(),
        }
    }

    /// The task's name.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The message: the task's own error, the panic message, the codec's complaint, or
    /// what is known about a crash.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The protocol error kind (not for crashes and lost workers).
    pub fn kind(&self) -> Option<ErrorKind> {
        match self.kind {
            Kind::Worker(k) => Some(k),
            _ => None,
        }
    }

    /// True when no task of that name is registered in the worker.
    pub fn is_unknown_task(&self) -> bool {
        self.kind() == Some(ErrorKind::UnknownTask)
    }

    /// True when the arguments did not encode here or decode in the worker.
    pub fn is_bad_args(&self) -> bool {
        self.kind() == Some(ErrorKind::BadArgs)
    }

    /// True when the result did not encode in the worker or decode here.
    pub fn is_bad_result(&self) -> bool {
        self.kind() == Some(ErrorKind::BadResult)
    }

    /// True when the task itself returned an error.
    pub fn is_failed(&self) -> bool {
        self.kind() == Some(ErrorKind::Failed)
    }

    /// True when the task panicked in the worker.
    pub fn is_panic(&self) -> bool {
        self.kind() == Some(ErrorKind::Panicked)
    }

    /// True when the process running the task died.
    pub fn is_crash(&self) -> bool {
        matches!(self.kind, Kind::Crashed { .. })
    }

    /// True when the worker could not be reached or broke the protocol.
    pub fn is_lost(&self) -> bool {
        self.kind == Kind::Lost
    }

    /// The signal that ended the worker, e.g. `"SIGSEGV"`.
    pub fn signal(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Crashed { signal, .. } => signal,
            _ => None,
        }
    }

    /// The worker's exit code, when it exited rather than being signalled.
    pub fn exit_code(&self) -> Option<i32> {
        match self.kind {
            Kind::Crashed { code, .. } => code,
            _ => None,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.task;
        let m = &self.message;
        match &self.kind {
            Kind::Worker(ErrorKind::UnknownTask) => {
                write!(f, "task '{t}' is not registered in the worker: {m}")
            }
            Kind::Worker(ErrorKind::BadArgs) => write!(f, "task '{t}': bad arguments: {m}"),
            Kind::Worker(ErrorKind::BadResult) => write!(f, "task '{t}': bad result: {m}"),
            Kind::Worker(ErrorKind::BadCodec) => write!(f, "task '{t}': {m}"),
            Kind::Worker(ErrorKind::Panicked) => write!(f, "task '{t}' panicked: {m}"),
            Kind::Worker(_) => write!(f, "task '{t}' failed: {m}"),
            Kind::Crashed {
                signal: Some(s), ..
            } => {
                write!(f, "task '{t}' ended its worker process by signal {s}")?;
                if !m.is_empty() {
                    write!(f, " ({m})")?;
                }
                Ok(())
            }
            Kind::Crashed { code, .. } => {
                match code {
                    Some(c) => write!(f, "task '{t}' ended its worker process with exit code {c}")?,
                    None => write!(f, "task '{t}' ended its worker process")?,
                }
                if !m.is_empty() {
                    write!(f, " ({m})")?;
                }
                Ok(())
            }
            Kind::Lost => write!(f, "task '{t}': worker lost: {m}"),
        }
    }
}

impl std::error::Error for CallError {}
