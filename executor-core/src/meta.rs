//! What a task is: its id, its [`TaskMeta`] (name, tags, key), and how it ended ([`Status`], [`Outcome`]).

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A process-unique task id, in submission order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(u64);

impl TaskId {
    /// A fresh id.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TaskId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a task says about itself: a stable name, tags, and an optional key (such as a host).
///
/// Policies route on this; task code never names an executor.
///
/// ```
/// use executor_core::TaskMeta;
/// let meta = TaskMeta::new("scrape.fetch").with_tag("net").with_key("example.org");
/// assert_eq!(meta.name(), "scrape.fetch");
/// assert!(meta.has_tag("net"));
/// assert_eq!(meta.key(), Some("example.org"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TaskMeta {
    name: Cow<'static, str>,
    tags: Vec<Cow<'static, str>>,
    key: Option<String>,
    priority: Option<i8>,
    extension: Extension,
}

/// An opaque value a crate above core attaches to a task's meta (see
/// [`TaskMeta::with_extension`]). Not part of the task's identity: metas that differ only
/// in it compare equal and hash alike.
#[derive(Clone, Default)]
struct Extension(Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>);

impl PartialEq for Extension {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Extension {}

impl std::hash::Hash for Extension {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl fmt::Debug for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

impl TaskMeta {
    /// A task called `name` (dotted names such as `scrape.fetch` match globs like `scrape.*`).
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Self {
            name: name.into(),
            tags: Vec::new(),
            key: None,
            priority: None,
            extension: Extension(None),
        }
    }

    /// Sets the priority (default 0; higher is served first where tasks wait in a queue
    /// that honours it, such as the supervisor's limit and retry queues and the threads
    /// backend's queue, with aging so a low priority still gets its turn). A priority set
    /// here wins over a route's `priority` in the policy file.
    pub fn with_priority(mut self, priority: i8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// The task's priority (0 unless set).
    pub fn priority(&self) -> i8 {
        self.priority.unwrap_or(0)
    }

    /// The priority set with [`with_priority`](Self::with_priority), if any (a route's
    /// priority applies only to tasks without one).
    pub fn explicit_priority(&self) -> Option<i8> {
        self.priority
    }

    /// Adds a tag.
    pub fn with_tag(mut self, tag: impl Into<Cow<'static, str>>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets the key that per-key limits group by, e.g. a host name.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, when it was given as a `&'static str` (it then never changes or moves:
    /// its address identifies it, which lets a router remember where it sent it).
    pub fn static_name(&self) -> Option<&'static str> {
        match self.name {
            Cow::Borrowed(name) => Some(name),
            Cow::Owned(_) => None,
        }
    }

    /// The task's tags.
    pub fn tags(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.tags.iter().map(|t| &**t)
    }

    /// True when the task carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// The task's key, if it has one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Attaches a type-erased value for crates above core: the named-task crate puts the
    /// call (name, arguments, result slot) here, so a backend that runs tasks elsewhere
    /// (another process, a queue) can find it in an erased [`Job`](crate::Job). Core
    /// never looks at it, and it takes no part in equality, hashing or routing.
    ///
    /// ```
    /// use executor_core::TaskMeta;
    /// use std::sync::Arc;
    /// let meta = TaskMeta::new("img.resize").with_extension(Arc::new(7u32));
    /// let ext = meta.extension().and_then(|e| e.downcast_ref::<u32>());
    /// assert_eq!(ext, Some(&7));
    /// assert_eq!(meta, TaskMeta::new("img.resize"));
    /// ```
    pub fn with_extension(
        mut self,
        value: std::sync::Arc<dyn std::any::Any + Send + Sync>,
    ) -> Self {
        self.extension = Extension(Some(value));
        self
    }

    /// The value attached with [`with_extension`](Self::with_extension), if any.
    pub fn extension(&self) -> Option<&std::sync::Arc<dyn std::any::Any + Send + Sync>> {
        self.extension.0.as_ref()
    }
}

impl Default for TaskMeta {
    fn default() -> Self {
        Self::new("task")
    }
}

/// The meta of tasks submitted without one (`submit`, `submit_async`, `map`).
pub(crate) static ANONYMOUS: TaskMeta = TaskMeta {
    name: Cow::Borrowed("task"),
    tags: Vec::new(),
    key: None,
    priority: None,
    extension: Extension(None),
};

/// A shared [`TaskMeta`]: a static one for anonymous tasks (no reference counting on the
/// hot path) or an `Arc` otherwise. Dereferences to the meta.
#[derive(Clone, Debug)]
pub enum MetaRef {
    /// A meta that lives for the whole program.
    Static(&'static TaskMeta),
    /// A meta shared by reference counting.
    Shared(std::sync::Arc<TaskMeta>),
}

impl std::ops::Deref for MetaRef {
    type Target = TaskMeta;
    fn deref(&self) -> &TaskMeta {
        match self {
            MetaRef::Static(m) => m,
            MetaRef::Shared(m) => m,
        }
    }
}

impl From<TaskMeta> for MetaRef {
    fn from(meta: TaskMeta) -> Self {
        MetaRef::Shared(std::sync::Arc::new(meta))
    }
}

impl From<std::sync::Arc<TaskMeta>> for MetaRef {
    fn from(meta: std::sync::Arc<TaskMeta>) -> Self {
        MetaRef::Shared(meta)
    }
}

impl From<&'static TaskMeta> for MetaRef {
    fn from(meta: &'static TaskMeta) -> Self {
        MetaRef::Static(meta)
    }
}

/// How one task (or one attempt of it) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// It returned its value.
    Completed,
    /// It returned an error of its own.
    Failed,
    /// It panicked.
    Panicked,
    /// It was cancelled.
    Cancelled,
    /// It ran past its deadline.
    TimedOut,
    /// An executor refused it.
    Rejected,
    /// It never started: the executor shut down first.
    NotStarted,
}

impl Status {
    /// Every status, in ledger order.
    pub const ALL: [Status; 7] = [
        Status::Completed,
        Status::Failed,
        Status::Panicked,
        Status::Cancelled,
        Status::TimedOut,
        Status::Rejected,
        Status::NotStarted,
    ];

    /// A short lower-case name, for tables and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Panicked => "panicked",
            Status::Cancelled => "cancelled",
            Status::TimedOut => "timed out",
            Status::Rejected => "rejected",
            Status::NotStarted => "not started",
        }
    }

    /// True only for [`Status::Completed`].
    pub fn is_success(self) -> bool {
        self == Status::Completed
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The final word on a task, handed to [`Policy::observe`](crate::Policy::observe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    status: Status,
    attempts: u32,
    elapsed: Duration,
    cpu_time: Option<Duration>,
    blocked_time: Option<Duration>,
    longest_poll: Option<Duration>,
}

impl Outcome {
    /// A task that ended with `status` after `attempts` attempts and `elapsed` since submission.
    pub fn new(status: Status, attempts: u32, elapsed: Duration) -> Self {
        Self {
            status,
            attempts,
            elapsed,
            cpu_time: None,
            blocked_time: None,
            longest_poll: None,
        }
    }

    /// With the time its runs spent off the CPU by their own doing: asleep, or blocked on
    /// I/O or a lock (not time spent runnable, waiting for a CPU).
    pub fn with_blocked_time(mut self, blocked: Duration) -> Self {
        self.blocked_time = Some(blocked);
        self
    }

    /// With the longest single poll of its future (for an async task).
    pub fn with_longest_poll(mut self, poll: Duration) -> Self {
        self.longest_poll = Some(poll);
        self
    }

    /// The time the task's runs spent blocked (asleep, waiting for I/O or a lock) on the
    /// threads that ran them, not counting time they waited for a CPU; `None` when it was
    /// not measured. Unlike `elapsed`, it does not grow when the machine is busy, so
    /// `cpu_time / (cpu_time + blocked_time)` tells CPU-bound work from I/O-bound work
    /// even on an oversubscribed pool.
    pub fn blocked_time(&self) -> Option<Duration> {
        self.blocked_time
    }

    /// The longest single poll of an async task's future (how long it held a worker
    /// without yielding, computing or blocked, not counting time its thread waited for a
    /// CPU); `None` for a blocking task or when not measured.
    pub fn longest_poll(&self) -> Option<Duration> {
        self.longest_poll
    }

    /// With the CPU time its attempts used on their threads.
    pub fn with_cpu_time(mut self, cpu_time: Duration) -> Self {
        self.cpu_time = Some(cpu_time);
        self
    }

    /// How it ended.
    pub fn status(&self) -> Status {
        self.status
    }

    /// How many attempts ran (0 when it never started).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time from submission to the end.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The CPU time the task's attempts used on the threads that ran them (the thread CPU
    /// clock, summed over every run of a blocking body and every poll of a future);
    /// `None` when it was not measured (see
    /// [`Policy::wants_cpu_time`](crate::Policy::wants_cpu_time)). Time spent blocked or
    /// waiting for I/O is not CPU time, so `cpu_time / elapsed` tells CPU-bound work from
    /// I/O-bound work.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.cpu_time
    }
}
