//! The checks [`durable_tests!`](crate::durable_tests) runs, one function each; call them
//! yourself to run one alone. Every wait is bounded: a check fails instead of hanging.

use crate::{DurableBackend, DurableExt, Enqueue, RouteConfig, Setup, State, WorkerControl};
use executor_core::{TaskError, TaskHandle};
use named_tasks::{Task, Tasks};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest any check waits for something before it fails.
pub const BOUND: Duration = Duration::from_secs(30);

/// What the suite's factory is: builds a backend on the test's [`Setup`].
pub type Factory = dyn Fn(&Setup) -> Box<dyn DurableBackend>;

fn setup(dir: &tempfile::TempDir, routes: Vec<RouteConfig>) -> Setup {
    Setup {
        dir: dir.path().to_path_buf(),
        lease: Duration::from_secs(5),
        slots: 4,
        routes,
    }
}

fn open(factory: &Factory, setup: &Setup) -> Arc<dyn DurableBackend> {
    Arc::from(factory(setup))
}

/// A worker on its own thread, and how to stop it.
struct Worker {
    control: WorkerControl,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(backend: &Arc<dyn DurableBackend>, tasks: Tasks) -> Worker {
        let control = WorkerControl::new();
        let b = backend.clone();
        let c = control.clone();
        let thread = std::thread::spawn(move || {
            b.run_worker(tasks, c).expect("the worker ran");
        });
        Worker {
            control,
            thread: Some(thread),
        }
    }

    /// Asks `stop` and waits (bounded) for the worker to return.
    fn stop_with(mut self, stop: impl FnOnce(&WorkerControl)) {
        stop(&self.control);
        let t = self.thread.take().expect("not stopped yet");
        let deadline = Instant::now() + BOUND;
        while !t.is_finished() {
            assert!(Instant::now() < deadline, "the worker did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
        t.join().expect("the worker thread did not panic");
    }

    fn drain(self) {
        self.stop_with(WorkerControl::drain);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A failing check still stops its workers; their threads end on their own.
        self.control.kill();
    }
}

fn wait<R: Send + 'static>(h: TaskHandle<R>) -> Result<R, TaskError> {
    match h.wait_timeout(BOUND) {
        Ok(r) => r,
        Err(_) => panic!("a handle did not resolve within {BOUND:?}"),
    }
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn state(b: &dyn DurableBackend, id: &str) -> State {
    b.result(id).expect("result reads").expect("id known").state
}

fn value<T: serde::de::DeserializeOwned>(b: &dyn DurableBackend, id: &str) -> T {
    let r = b.result(id).expect("result reads").expect("id known");
    assert_eq!(r.state, State::Succeeded, "{r:?}");
    serde_json::from_slice(&r.result.expect("a succeeded task has a result")).expect("JSON")
}

static DOUBLE: Task<u64, u64> = Task::new("durable.double", |_, x| Ok(x * 2));

/// Results reach the submitter's handle, and the store by id.
pub fn results_reach_handle_and_id(factory: &Factory) {
    let dir = tempfile::tempdir().unwrap();
    let b = open(factory, &setup(&dir, vec![]));
    let w = Worker::start(&b, Tasks::new().with(&DOUBLE));
    let calls: Vec<_> = (0..20u64)
        .map(|i| (i, b.enqueue(&DOUBLE, i, Enqueue::default()).unwrap()))
        .collect();
    // A plain call through the executor is durable too.
    let exec = b.executor();
    let plain = DOUBLE.call(&*exec, 50);
    for (i, (id, h)) in calls {
        assert_eq!(wait(h).unwrap(), i * 2);
        assert_eq!(value::<u64>(&*b, &id), i * 2);
    }
    assert_eq!(wait(plain).unwrap(), 100);
    w.drain();
}

/// A task enqueued by a submitter that went away is run, and its result is readable by
/// id from a new instance (the submitter restarted).
pub fn results_readable_after_submitter_restart(factory: &Factory) {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&dir, vec![]);
    let first = open(factory, &s);
    let (id, handle) = first.enqueue(&DOUBLE, 21, Enqueue::default()).unwrap();
    drop(handle);
    drop(first);
    let worker_side = open(factory, &s);
    let w = Worker::start(&worker_side, Tasks::new().with(&DOUBLE));
    let again = open(factory, &s);
    eventually("the task succeeds", || {
        state(&*again, &id) == State::Succeeded
    });
    assert_eq!(value::<u64>(&*again, &id), 42);
    w.drain();
}

static FLAKY_RUNS: AtomicU32 = AtomicU32::new(0);
static FLAKY: Task<(), u32> = Task::new("durable.flaky", |_, ()| {
    let n = FLAKY_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    if n < 3 {
        Err(format!("flaky {n}").into())
    } else {
        Ok(n)
    }
});

/// A failed attempt is retried after the route's backoff; the third attempt succeeds.
pub fn retries_with_backoff_then_succeeds(factory: &Factory) {
    let dir = tempfile::tempdir().unwrap();
    let mut route = RouteConfig::new(FLAKY.name());
    route.attempts = 5;
    route.backoff = Duration::from_millis(50);
    let b = open(factory, &setup(&dir, vec![route]));
    let w = Worker::start(&b, Tasks::new().with(&FLAKY));
    let t0 = Instant::now();
    let (id, h) = b.enqueue(&FLAKY, (), Enqueue::default()).unwrap();
    assert_eq!(wait(h).unwrap(), 3);
    // Two backoffs passed: at least half of 50 ms and half of 100 ms (jitter allowed).
    assert!(t0.elapsed() >= Duration::from_millis(75), "no backoff");
    let r = b.result(&id).unwrap().unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(FLAKY_RUNS.load(Ordering::SeqCst), 3);
    w.drain();
}

static DOOMED_RUNS: AtomicU32 = AtomicU32::new(0);
static DOOMED: Task<(), ()> = Task::new("durable.doomed", |_, ()| {
    let n = DOOMED_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    Err(format!("boom {n}").into())
});

/// After the route's attempts the task is dead-lettered with its last error, and the
/// handle fails with it.
pub fn dead_letter_keeps_last_error(factory: &Factory) {
    let dir = tempfile::tempdir().unwrap();
    let mut route = RouteConfig::new(DOOMED.name());
    route.attempts = 3;
    let b = open(factory, &setup(&dir, vec![route]));
    let w = Worker::start(&b, Tasks::new().with(&DOOMED));
    let (id, h) = b.enqueue(&DOOMED, (), Enqueue::default()).unwrap();
    let err = wait(h).unwrap_err();
    assert!(err.is_failed(), "{err:?}");
    assert!(err.to_string().contains("boom 3"), "{err}");
    let r = b.result(&id).unwrap().unwrap();
    assert_eq!(r.state, State::Dead);
    assert_eq!(r.attempts, 3);
    let dead = b.dead_letters().unwrap();
    let d = dead.iter().find(|d| d.id == id).expect("dead-lettered");
    assert_eq!(d.name, DOOMED.name());
    assert_eq!(d.attempts, 3);
    assert!(d.last_error.contains("boom 3"), "{d:?}");
    assert_eq!(DOOMED_RUNS.load(Ordering::SeqCst), 3);
    w.drain();
}

static ONCE_RUNS: AtomicU32 = AtomicU32::new(0);
static ONCE: Task<u32, u32> = Task::new("durable.once", |_, x| {
    ONCE_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(x)
});

/// Enqueueing twice with one idempotency key gives one job, run once; both handles get
/// its result.
pub fn idempotency_key_gives_one_job(factory: &Factory) {
    let dir = tempfile::tempdir().unwrap();
    let b = open(factory, &setup(&dir, vec![]));
    let (a, ha) = b.enqueue(&ONCE, 7, Enqueue::key("order-1")).unwrap();
    let (c, hc) = b.enqueue(&ONCE, 8, Enqueue::key("order-1")).unwrap();
    assert_eq!(a, c, "one key, one id");
    let w = Worker::start(&b, Tasks::new().with(&ONCE));
    assert_eq!(wait(ha).unwrap(), 7);
    assert_eq!(
        wait(hc).unwrap(),
        7,
        "the second handle follows the first task"
    );
    w.drain();
    assert_eq!(ONCE_RUNS.load(Ordering::SeqCst), 1);
}

static NEVER_RUNS: AtomicU32 = AtomicU32::new(0);
static NEVER: Task<(), ()> = Task::new("durable.never", |_, ()| {
    NEVER_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(())
});

/// A task cancelled by id before a worker claims it never runs; its handle fails.
pub fn cancel_by_id(factory: &Factory) {
    let dir = tempfile::tempdir().unwrap();
    let b = open(factory, &setup(&dir, vec![]));
    let (id, h) = b.enqueue(&NEVER, (), Enqueue::default()).unwrap();
    let (other, h2) = b.enqueue(&NEVER, (), Enqueue::default()).unwrap();
    assert!(b.cancel(&id).unwrap());
    assert_eq!(state(&*b, &id), State::Cancelled);
    let w = Worker::start(&b, Tasks::new().with(&NEVER));
    wait(h2).unwrap();
    assert!(wait(h).is_err(), "a cancelled task's handle fails");
    assert!(
        !b.cancel(&other).unwrap(),
        "a finished task is not cancelled"
    );
    w.drain();
    assert_eq!(NEVER_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(state(&*b, &id), State::Cancelled);
}

static STUCK_RUNS: AtomicU32 = AtomicU32::new(0);
static STUCK_RELEASE: AtomicBool = AtomicBool::new(false);
static STUCK: Task<(), u32> = Task::new("durable.stuck", |_, ()| {
    let n = STUCK_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    if n == 1 {
        // The first run hangs until the check lets it go (its worker is "killed").
        let deadline = Instant::now() + BOUND;
        while !STUCK_RELEASE.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(n)
});

/// A worker killed while running a task: the task comes back after the lease, another
/// worker completes it, and the late end of the first run changes nothing.
pub fn killed_worker_task_comes_back_after_lease(factory: &Factory) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(&dir, vec![]);
    s.lease = Duration::from_millis(300);
    let b = open(factory, &s);
    let first = Worker::start(&b, Tasks::new().with(&STUCK));
    let (id, h) = b.enqueue(&STUCK, (), Enqueue::default()).unwrap();
    eventually("the first worker runs the task", || {
        STUCK_RUNS.load(Ordering::SeqCst) == 1
    });
    first.stop_with(WorkerControl::kill);
    let second = Worker::start(&open(factory, &s), Tasks::new().with(&STUCK));
    assert_eq!(wait(h).unwrap(), 2, "the second run completed it");
    STUCK_RELEASE.store(true, Ordering::SeqCst);
    second.drain();
    assert_eq!(value::<u32>(&*b, &id), 2);
    assert_eq!(b.result(&id).unwrap().unwrap().attempts, 1);
}

static LONG_RUNS: AtomicU32 = AtomicU32::new(0);
static LONG: Task<(), ()> = Task::new("durable.long", |_, ()| {
    LONG_RUNS.fetch_add(1, Ordering::SeqCst);
    // Several leases long: only renewals keep the task from coming back.
    std::thread::sleep(Duration::from_millis(1200));
    Ok(())
});

/// A task that runs longer than its lease is kept by renewals: a second worker that
/// polls all along never gets it.
pub fn long_task_extends_its_lease(factory: &Factory) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(&dir, vec![]);
    s.lease = Duration::from_millis(300);
    let b = open(factory, &s);
    let w1 = Worker::start(&b, Tasks::new().with(&LONG));
    let (_id, h) = b.enqueue(&LONG, (), Enqueue::default()).unwrap();
    eventually("a worker runs the task", || {
        LONG_RUNS.load(Ordering::SeqCst) == 1
    });
    let w2 = Worker::start(&open(factory, &s), Tasks::new().with(&LONG));
    wait(h).unwrap();
    w1.drain();
    w2.drain();
    assert_eq!(LONG_RUNS.load(Ordering::SeqCst), 1, "ran once");
}

/// Counts how many run at once and remembers the most.
struct Gauge {
    now: AtomicU32,
    max: AtomicU32,
}

impl Gauge {
    const fn new() -> Self {
        Self {
            now: AtomicU32::new(0),
            max: AtomicU32::new(0),
        }
    }
    fn hold(&self, d: Duration) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        std::thread::sleep(d);
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

static ROUTE_GAUGE: Gauge = Gauge::new();
static LIMITED: Task<(), ()> = Task::new("durable.limited", |_, ()| {
    ROUTE_GAUGE.hold(Duration::from_millis(40));
    Ok(())
});

/// A route limit of 2 holds across two workers of 4 slots each.
pub fn route_limit_holds_across_workers(factory: &Factory) {
    let dir = tempfile::tempdir().unwrap();
    let mut route = RouteConfig::new(LIMITED.name());
    route.concurrency = Some(2);
    let s = setup(&dir, vec![route]);
    let b = open(factory, &s);
    let handles: Vec<_> = (0..12)
        .map(|_| b.enqueue(&LIMITED, (), Enqueue::default()).unwrap().1)
        .collect();
    let w1 = Worker::start(&b, Tasks::new().with(&LIMITED));
    let w2 = Worker::start(&open(factory, &s), Tasks::new().with(&LIMITED));
    for h in handles {
        wait(h).unwrap();
    }
    w1.drain();
    w2.drain();
    let max = ROUTE_GAUGE.max.load(Ordering::SeqCst);
    assert!(max <= 2, "{max} ran at once under a limit of 2");
    assert!(max >= 1);
}

static KEY_A: Gauge = Gauge::new();
static KEY_B: Gauge = Gauge::new();
static KEYED: Task<char, ()> = Task::new("durable.keyed", |_, k| {
    let g = if k == 'a' { &KEY_A } else { &KEY_B };
    g.hold(Duration::from_millis(30));
    Ok(())
});

/// A per-key limit of 1 holds across two workers, while different keys run together.
pub fn key_limit_holds_across_workers(factory: &Factory) {
    let dir = tempfile::tempdir().unwrap();
    let mut route = RouteConfig::new(KEYED.name());
    route.key_concurrency = Some(1);
    let s = setup(&dir, vec![route]);
    let b = open(factory, &s);
    let exec = b.executor();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let k = if i % 2 == 0 { 'a' } else { 'b' };
            KEYED.call_keyed(&*exec, k.to_string(), k)
        })
        .collect();
    let w1 = Worker::start(&b, Tasks::new().with(&KEYED));
    let w2 = Worker::start(&open(factory, &s), Tasks::new().with(&KEYED));
    for h in handles {
        wait(h).unwrap();
    }
    w1.drain();
    w2.drain();
    for (k, g) in [('a', &KEY_A), ('b', &KEY_B)] {
        let max = g.max.load(Ordering::SeqCst);
        assert_eq!(
            max, 1,
            "key {k}: {max} ran at once under a per-key limit of 1"
        );
    }
}

static DRAIN_STARTED: AtomicU32 = AtomicU32::new(0);
static DRAINED: Task<u32, u32> = Task::new("durable.drained", |_, x| {
    DRAIN_STARTED.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    Ok(x)
});

/// A drained worker finishes and records what it runs, and claims nothing more.
pub fn drain_finishes_running_and_claims_nothing(factory: &Factory) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(&dir, vec![]);
    s.slots = 1;
    let b = open(factory, &s);
    let w = Worker::start(&b, Tasks::new().with(&DRAINED));
    let (first, h) = b.enqueue(&DRAINED, 1, Enqueue::default()).unwrap();
    eventually("the first task runs", || {
        DRAIN_STARTED.load(Ordering::SeqCst) == 1
    });
    let rest: Vec<_> = (2..5)
        .map(|i| b.enqueue(&DRAINED, i, Enqueue::default()).unwrap().0)
        .collect();
    w.drain();
    assert_eq!(value::<u32>(&*b, &first), 1, "the running task finished");
    assert_eq!(wait(h).unwrap(), 1);
    assert_eq!(
        DRAIN_STARTED.load(Ordering::SeqCst),
        1,
        "nothing more claimed"
    );
    for id in rest {
        assert_eq!(state(&*b, &id), State::Pending);
    }
}
