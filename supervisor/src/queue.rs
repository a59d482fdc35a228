//! [`TaskQueue`]: the queue mode of the mini framework. Producers push tasks; a supervisor
//! thread routes each one, records how it ended (failures included) and drains on close.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use executor_core::{BoxError, Job, TaskContext, TaskError, TaskHandle, TaskId, TaskMeta, TaskSet};

use crate::Supervisor;

/// How often the queue thread looks for finished tasks while it waits for new ones.
const POLL: Duration = Duration::from_millis(5);

enum Message<T> {
    Task(Job, TaskHandle<T>),
    Close,
}

/// A task that ended, as the queue recorded it.
#[derive(Debug)]
pub struct Finished<T> {
    /// The task's id.
    pub id: TaskId,
    /// The task's name.
    pub name: String,
    /// The executor the policy routed it to (its name in the policy).
    pub executor: String,
    /// Its value, or why there is none.
    pub result: Result<T, TaskError>,
}

/// What the queue saw, returned by [`TaskQueue::close`]: every task, in the order they
/// ended.
#[derive(Debug)]
pub struct QueueReport<T> {
    /// Every task pushed before the close, in the order they ended.
    pub finished: Vec<Finished<T>>,
}

impl<T> QueueReport<T> {
    /// The tasks that did not produce a value.
    pub fn failures(&self) -> impl Iterator<Item = &Finished<T>> + '_ {
        self.finished.iter().filter(|f| f.result.is_err())
    }

    /// Per executor: (tasks that produced a value, tasks that did not).
    pub fn by_executor(&self) -> BTreeMap<&str, (usize, usize)> {
        let mut m: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for f in &self.finished {
            let e = m.entry(f.executor.as_str()).or_default();
            if f.result.is_ok() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        m
    }
}

/// Pushes tasks into a [`TaskQueue`]; clone one per producer thread.
pub struct Producer<T> {
    tx: Sender<Message<T>>,
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        Producer {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static> Producer<T> {
    /// Queues a retryable task (like [`ExecutorExt::run`](executor_core::ExecutorExt::run)).
    pub fn push<E, F>(&self, meta: TaskMeta, f: F) -> TaskId
    where
        E: Into<BoxError>,
        F: Fn(&TaskContext) -> Result<T, E> + Send + Sync + 'static,
    {
        let (job, handle) = Job::repeatable(meta, move |ctx| f(ctx).map_err(TaskError::failed));
        self.send(job, handle)
    }

    /// Queues a task that runs at most once (it may move its inputs).
    pub fn push_once<E, F>(&self, meta: TaskMeta, f: F) -> TaskId
    where
        E: Into<BoxError>,
        F: FnOnce(&TaskContext) -> Result<T, E> + Send + 'static,
    {
        let (job, handle) = Job::once(meta, move |ctx| f(ctx).map_err(TaskError::failed));
        self.send(job, handle)
    }

    /// Queues a retryable async task; `f` makes a fresh future per attempt.
    pub fn push_async<E, F, Fut>(&self, meta: TaskMeta, f: F) -> TaskId
    where
        E: Into<BoxError>,
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let (job, handle) = Job::future_repeatable(meta, move |ctx| {
            let fut = f(ctx);
            async move { fut.await.map_err(TaskError::failed) }
        });
        self.send(job, handle)
    }

    fn send(&self, job: Job, handle: TaskHandle<T>) -> TaskId {
        let id = job.id();
        // After the queue closed the message comes back; dropping it resolves the
        // task's handle as not started.
        let _ = self.tx.send(Message::Task(job, handle));
        id
    }
}

/// The queue mode: producers push tasks, a supervisor thread routes each one through the
/// [`Supervisor`], records how every task ended, and on [`close`](Self::close) finishes
/// everything pushed before it.
///
/// ```
/// use executor_core::{ShutdownMode, TaskMeta};
/// use supervisor::{Supervisor, TaskQueue};
/// # use std::time::Duration;
/// let sup = Supervisor::from_toml(r#"
///     [executors.io]
///     backend = "threads"
///     [defaults]
///     executor = "io"
/// "#).unwrap();
/// let queue = TaskQueue::new(sup.clone());
/// let producer = queue.producer();
/// producer.push(TaskMeta::new("ok"), |_| Ok::<_, String>(1));
/// producer.push(TaskMeta::new("bad"), |_| Err::<u32, _>("no".to_owned()));
/// let report = queue.close();
/// assert_eq!(report.finished.len(), 2);
/// assert_eq!(report.failures().count(), 1);
/// assert_eq!(report.by_executor()["io"], (1, 1));
/// sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_secs(5)));
/// ```
pub struct TaskQueue<T> {
    producer: Producer<T>,
    thread: Option<JoinHandle<QueueReport<T>>>,
}

/// Called by the queue thread for each task as it ends.
type OnDone<T> = Box<dyn FnMut(&Finished<T>) + Send>;

impl<T: Send + 'static> TaskQueue<T> {
    /// A queue feeding `supervisor`; failures are logged with `tracing` as they happen.
    pub fn new(supervisor: Arc<Supervisor>) -> Self {
        Self::with_observer(supervisor, |_| {})
    }

    /// A queue that also calls `on_done` (on the queue thread) for each task as it ends,
    /// e.g. to print a line per task.
    pub fn with_observer(
        supervisor: Arc<Supervisor>,
        on_done: impl FnMut(&Finished<T>) + Send + 'static,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        let on_done: OnDone<T> = Box::new(on_done);
        let thread = std::thread::Builder::new()
            .name("supervisor-queue".into())
            .spawn(move || run_queue(supervisor, rx, on_done))
            .expect("cannot start the task queue thread");
        TaskQueue {
            producer: Producer { tx },
            thread: Some(thread),
        }
    }

    /// A handle for pushing tasks; clone it for each producer.
    pub fn producer(&self) -> Producer<T> {
        self.producer.clone()
    }

    /// Stops taking tasks, waits for every task pushed before the close to end, and
    /// returns what happened to each. Tasks pushed after the close never run (their
    /// handles resolve as not started, and the report lists them).
    pub fn close(mut self) -> QueueReport<T> {
        let _ = self.producer.tx.send(Message::Close);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(report)) => report,
            _ => QueueReport {
                finished: Vec::new(),
            },
        }
    }
}

impl<T> Drop for TaskQueue<T> {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.producer.tx.send(Message::Close);
            let _ = t.join();
        }
    }
}

impl<T> fmt::Debug for TaskQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskQueue").finish_non_exhaustive()
    }
}

struct Record {
    name: String,
    executor: String,
}

fn run_queue<T: Send + 'static>(
    sup: Arc<Supervisor>,
    rx: Receiver<Message<T>>,
    mut on_done: OnDone<T>,
) -> QueueReport<T> {
    let mut set: TaskSet<T> = TaskSet::new();
    let mut records: HashMap<TaskId, Record> = HashMap::new();
    let mut finished = Vec::new();
    let mut finish = |id: TaskId,
                      result: Result<T, TaskError>,
                      records: &mut HashMap<TaskId, Record>| {
        let rec = records.remove(&id).unwrap_or(Record {
            name: String::new(),
            executor: String::new(),
        });
        if let Err(e) = &result {
            tracing::warn!(task = %id, name = %rec.name, executor = %rec.executor, error = %e, "task failed");
        }
        let f = Finished {
            id,
            name: rec.name,
            executor: rec.executor,
            result,
        };
        on_done(&f);
        finished.push(f);
    };
    let mut closing = false;
    loop {
        match rx.recv_timeout(POLL) {
            Ok(Message::Task(job, handle)) if !closing => {
                let (id, name) = (job.id(), job.meta().name().to_owned());
                // The executor the supervisor handed the task to, read from the same
                // routing decision (a reload between asking and submitting cannot make
                // the record lie). A refusal resolves the handle, which the set reports.
                let (executor, _) = sup.execute_on(job);
                records.insert(id, Record { name, executor });
                set.push(handle);
            }
            Ok(Message::Task(job, handle)) => {
                records.insert(
                    job.id(),
                    Record {
                        name: job.meta().name().to_owned(),
                        executor: String::new(),
                    },
                );
                drop(job);
                set.push(handle);
            }
            Ok(Message::Close) => closing = true,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => closing = true,
        }
        while let Some((id, result)) = set.join_next_timeout(Duration::ZERO) {
            finish(id, result, &mut records);
        }
        if closing && rx.is_empty() {
            break;
        }
    }
    while let Some((id, result)) = set.join_next() {
        finish(id, result, &mut records);
    }
    QueueReport { finished }
}
