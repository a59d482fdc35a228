//! [`Tasks`]: the named tasks a worker can run, by name, and how it answers a request.

use crate::task::{Args, Body, Output, Task};
use crate::wire::{ErrorKind, Reply, Request};
use executor_core::{TaskContext, panic_message};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// A task's worker side, type-erased.
trait Handler: Send + Sync {
    fn handle(&self, request: &Request) -> Reply;
}

impl<A: Args, R: Output> Handler for Task<A, R> {
    fn handle(&self, req: &Request) -> Reply {
        let err = |kind, message| Reply::Err {
            id: req.id,
            kind,
            message,
        };
        let args: A = match req.codec.decode(&req.payload) {
            Ok(a) => a,
            Err(e) => {
                return err(
                    ErrorKind::BadArgs,
                    format!("did not decode in the worker ({e})"),
                );
            }
        };
        let ctx = TaskContext::detached(self.meta());
        let body = self.body;
        let out = catch_unwind(AssertUnwindSafe(|| match body {
            Body::Sync(f) => f(&ctx, args),
            Body::Async(f) => executor_core::block_on(f(ctx.clone(), args)),
        }));
        let value = match out {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return err(ErrorKind::Failed, e.to_string()),
            Err(payload) => return err(ErrorKind::Panicked, panic_message(&*payload)),
        };
        match req.codec.encode(&value) {
            Ok(payload) => Reply::Ok {
                id: req.id,
                payload,
            },
            Err(e) => err(
                ErrorKind::BadResult,
                format!("did not encode in the worker ({e})"),
            ),
        }
    }
}

/// The named tasks a worker runs, by name. A worker answers every request with
/// [`handle`](Self::handle); a name it does not know gets [`ErrorKind::UnknownTask`].
///
/// ```
/// use named_tasks::{Codec, Task, Tasks, wire::{Reply, Request}};
///
/// static DOUBLE: Task<u64, u64> = Task::new("math.double", |_ctx, x| Ok(x * 2));
/// let tasks = Tasks::new().with(&DOUBLE);
/// let request = Request {
///     id: 1, attempt: 1, name: "math.double".into(),
///     codec: Codec::Json, payload: b"21".to_vec(),
/// };
/// assert_eq!(tasks.handle(&request), Reply::Ok { id: 1, payload: b"42".to_vec() });
/// ```
#[derive(Clone, Default)]
pub struct Tasks {
    handlers: BTreeMap<&'static str, Arc<dyn Handler>>,
}

impl Tasks {
    /// No tasks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `task` (a task of the same name is replaced).
    pub fn add<A: Args, R: Output>(&mut self, task: &Task<A, R>) -> &mut Self {
        self.handlers.insert(task.name(), Arc::new(*task));
        self
    }

    /// [`add`](Self::add), by value.
    pub fn with<A: Args, R: Output>(mut self, task: &Task<A, R>) -> Self {
        self.add(task);
        self
    }

    /// True when a task called `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.handlers.keys().copied()
    }

    /// Runs the request's task here (catching its panics) and returns the answer.
    pub fn handle(&self, request: &Request) -> Reply {
        match self.handlers.get(request.name.as_str()) {
            Some(h) => h.handle(request),
            None => Reply::Err {
                id: request.id,
                kind: ErrorKind::UnknownTask,
                message: format!(
                    "the worker knows {}",
                    if self.handlers.is_empty() {
                        "no tasks".to_owned()
                    } else {
                        self.names().collect::<Vec<_>>().join(", ")
                    }
                ),
            },
        }
    }
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
