//! The NATS backend against a real `nats-server -js` per test (on a free loopback port,
//! with a temporary store): round trips, retries, dead letters, idempotency, results
//! after a restart, cancel by id, leases, limits across workers, drain, server restart;
//! and, as module `suite`, the shared durable conformance suite.

use executor_core::{Executor, ShutdownMode, TaskError};
use executor_nats::{LocalServer, NatsExecutor, Worker, WorkerReport};
use named_tasks::{Task, Tasks};
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[path = "suite/mod.rs"]
mod suite;

/// True when nats-server is installed. Without it, every NATS test of this binary (this
/// file and the shared suite) passes without running, and this says once how to
/// install it, on stderr past the harness's capture (so a plain `cargo test` shows it).
fn installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let ok = LocalServer::installed();
        if !ok {
            let _ = writeln!(
                std::io::stderr(),
                "skipping the NATS tests: {}",
                executor_nats::INSTALL_HINT
            );
        }
        ok
    })
}

/// A `nats-server -js` of our own on a temporary store; killed on drop.
struct Server {
    inner: LocalServer,
    // Dropped after the server stops.
    _store: tempfile::TempDir,
}

impl Server {
    /// None when nats-server is not installed.
    fn start() -> Option<Server> {
        if !installed() {
            return None;
        }
        let store = tempfile::tempdir().unwrap();
        Some(Server {
            inner: LocalServer::start(store.path()).unwrap(),
            _store: store,
        })
    }

    fn url(&self) -> String {
        self.inner.url()
    }

    /// Kills the server (its store stays).
    fn stop(&mut self) {
        self.inner.stop();
    }

    /// Starts it again on the same port and store.
    fn spawn(&mut self) {
        self.inner.restart().unwrap();
    }
}

/// A worker on a thread, stopped (drained) by `stop`.
struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<WorkerReport>>,
}

impl Running {
    fn start(b: executor_nats::WorkerBuilder) -> Running {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            b.build()
                .run(async move {
                    let _ = rx.await;
                })
                .unwrap()
        });
        Running {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> WorkerReport {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn worker(server: &Server, tasks: Tasks) -> executor_nats::WorkerBuilder {
    Worker::builder(tasks).url(server.url()).prefix("t")
}

fn exec(server: &Server) -> NatsExecutor {
    NatsExecutor::builder("nats")
        .url(server.url())
        .prefix("t")
        .backoff(Duration::from_millis(20))
        .in_flight(16)
        .build()
        .unwrap()
}

const BOUND: Duration = Duration::from_secs(30);

fn wait<T: Send + 'static>(h: executor_core::TaskHandle<T>) -> Result<T, TaskError> {
    match h.wait_timeout(BOUND) {
        Ok(r) => r,
        Err(_) => panic!("a task did not finish within {BOUND:?}"),
    }
}

static DOUBLE: Task<u64, u64> = Task::new("math.double", |_ctx, x| Ok(x * 2));
static FAIL: Task<u64, u64> = Task::new("math.fail", |_ctx, _| Err("no such luck".into()));
static BOOM: Task<u64, u64> = Task::new("math.boom", |_ctx, _| panic!("boom"));

/// Processes that start together on a fresh deployment all find (or make) its streams
/// and buckets: the one that loses the race to create one uses the winner's.
#[test]
fn executors_that_start_together_share_the_streams() {
    let Some(server) = Server::start() else {
        return;
    };
    // 60 rounds: without the fall-back to the existing stream, a loss showed up in
    // every run of this test (nats-server 2.9).
    for round in 0..60 {
        let prefix = format!("race{round}");
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            let starters: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        NatsExecutor::builder("nats")
                            .url(server.url())
                            .prefix(&prefix)
                            .build()
                    })
                })
                .collect();
            for started in starters {
                let e = started.join().unwrap().unwrap();
                e.shutdown(ShutdownMode::Now);
            }
        });
    }
}

#[test]
fn results_errors_and_panics_come_back() {
    let Some(server) = Server::start() else {
        return;
    };
    let w = Running::start(worker(
        &server,
        Tasks::new().with(&DOUBLE).with(&FAIL).with(&BOOM),
    ));
    let e = NatsExecutor::builder("nats")
        .url(server.url())
        .prefix("t")
        .attempts(1)
        .build()
        .unwrap();
    assert_eq!(wait(DOUBLE.call(&e, 21)).unwrap(), 42);
    let err = wait(FAIL.call(&e, 1)).unwrap_err();
    assert!(
        err.is_failed() && err.to_string().contains("no such luck"),
        "{err}"
    );
    let err = wait(BOOM.call(&e, 1)).unwrap_err();
    assert!(err.is_panic() && err.to_string().contains("boom"), "{err}");
    let closure = executor_core::ExecutorExt::submit(&e, || 1);
    assert!(wait(closure).unwrap_err().is_rejected());
    e.shutdown(ShutdownMode::Graceful(BOUND));
    let report = w.stop();
    assert_eq!(report.completed, 1);
    assert_eq!(report.dead, 2);
}

static FLAKY_RUNS: AtomicU32 = AtomicU32::new(0);
static FLAKY: Task<u64, u64> = Task::new("flaky", |_ctx, x| {
    if FLAKY_RUNS.fetch_add(1, Ordering::SeqCst) < 2 {
        Err("not yet".into())
    } else {
        Ok(x)
    }
});

#[test]
fn failed_attempts_are_retried_with_backoff() {
    let Some(server) = Server::start() else {
        return;
    };
    let w = Running::start(worker(&server, Tasks::new().with(&FLAKY)));
    let e = exec(&server); // 3 attempts
    assert_eq!(wait(FLAKY.call(&e, 7)).unwrap(), 7);
    assert_eq!(FLAKY_RUNS.load(Ordering::SeqCst), 3);
    let report = w.stop();
    assert_eq!((report.retried, report.completed), (2, 1));
}

static ALWAYS: Task<u64, u64> = Task::new("always.fails", |_ctx, x| Err(format!("bad {x}").into()));

#[test]
fn the_last_failure_is_dead_lettered_with_its_error() {
    let Some(server) = Server::start() else {
        return;
    };
    let w = Running::start(worker(&server, Tasks::new().with(&ALWAYS)));
    let e = exec(&server);
    let (id, h) = e.enqueue_call(&ALWAYS, 5, None).unwrap();
    let err = wait(h).unwrap_err();
    assert!(err.to_string().contains("bad 5"), "{err}");
    let report = w.stop();
    assert_eq!((report.retried, report.dead), (2, 1));
    // The dead letter holds the request and the last error.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let msg = js
            .get_stream("t_dead")
            .await
            .unwrap()
            .get_last_raw_message_by_subject("t.dead.always.fails")
            .await
            .unwrap();
        let error = msg
            .headers
            .get("Switchyard-Error")
            .unwrap()
            .as_str()
            .to_owned();
        assert!(error.contains("bad 5"), "{error}");
    });
    // And the result, read by id, is the error.
    let stored = e.result(&id).unwrap().unwrap();
    assert_eq!(
        (stored.ended, stored.attempts),
        (executor_nats::Ended::Dead, 3)
    );
}

static ONCE_RUNS: AtomicU32 = AtomicU32::new(0);
static ONCE: Task<u64, u64> = Task::new("once", |_ctx, x| {
    ONCE_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(x + 1)
});

#[test]
fn the_same_key_is_one_task_and_its_result_outlives_the_submitter() {
    let Some(server) = Server::start() else {
        return;
    };
    let e = exec(&server);
    // Enqueued twice before any worker runs: one message.
    let (id, a) = e.enqueue_call(&ONCE, 1, Some("order-9")).unwrap();
    let (id_b, b) = e.enqueue_call(&ONCE, 1, Some("order-9")).unwrap();
    assert_eq!(
        (id.as_str(), id_b.as_str()),
        (&*NatsExecutor::id_for_key("order-9"), &*id)
    );
    let w = Running::start(worker(&server, Tasks::new().with(&ONCE)));
    assert_eq!(wait(a).unwrap(), 2);
    assert_eq!(wait(b).unwrap(), 2);
    // Later, again: the stored result, no run.
    let (_, again) = e.enqueue_call(&ONCE, 1, Some("order-9")).unwrap();
    assert_eq!(wait(again).unwrap(), 2);
    assert_eq!(ONCE_RUNS.load(Ordering::SeqCst), 1);
    e.shutdown(ShutdownMode::Graceful(BOUND));
    drop(e);
    // A new submitter (a restarted process) reads it by id.
    let e2 = exec(&server);
    match e2.result(&NatsExecutor::id_for_key("order-9")).unwrap() {
        Some(executor_nats::Stored {
            reply: named_tasks::wire::Reply::Ok { payload, .. },
            attempts: 1,
            ..
        }) => assert_eq!(payload, b"2"),
        other => panic!("{other:?}"),
    }
    assert_eq!(e2.result("k-never").unwrap(), None);
    w.stop();
}

static NEVER_RUNS: AtomicU32 = AtomicU32::new(0);
static NEVER: Task<u64, u64> = Task::new("never", |_ctx, x| {
    NEVER_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(x)
});

#[test]
fn a_task_cancelled_by_id_does_not_run() {
    let Some(server) = Server::start() else {
        return;
    };
    let e = exec(&server);
    let (id, h) = e.enqueue_call(&NEVER, 1, None).unwrap();
    assert!(e.cancel(&id).unwrap());
    assert!(!e.cancel(&id).unwrap(), "once");
    let w = Running::start(worker(&server, Tasks::new().with(&NEVER)));
    let err = wait(h).unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    // The handle resolved after c1 was published; c2, behind it on the same consumer,
    // runs only after the worker has passed over c1.
    assert_eq!(wait(NEVER.call(&e, 2)).unwrap(), 2);
    assert_eq!(NEVER_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(w.stop().skipped, 1);
    // The worker that skipped it dropped the mark: workers need not remember it.
    eventually("the cancel mark dropped", || {
        (!cancel_marked(&server, &id)).then_some(())
    });
    // Cancelling a task that already ended changes nothing and leaves no mark.
    let (done, h) = e.enqueue_call(&NEVER, 3, None).unwrap();
    let w = Running::start(worker(&server, Tasks::new().with(&NEVER)));
    assert_eq!(wait(h).unwrap(), 3);
    assert!(!e.cancel(&done).unwrap());
    assert!(!cancel_marked(&server, &done));
    assert_eq!(
        e.result(&done).unwrap().map(|s| s.ended),
        Some(executor_nats::Ended::Succeeded)
    );
    w.stop();
}

/// True when task `id` has a live cancel mark in the test deployment's cancels bucket.
fn cancel_marked(server: &Server, id: &str) -> bool {
    let url = server.url();
    let id = id.to_owned();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
            let marks = js.get_key_value("t_cancels").await.unwrap();
            marks.get(id).await.unwrap().is_some()
        })
}

static SLOW_RUNS: AtomicU32 = AtomicU32::new(0);
static SLOW: Task<u64, u64> = Task::new("slow", |_ctx, x| {
    SLOW_RUNS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2500));
    Ok(x)
});

#[test]
fn a_long_task_keeps_its_lease_and_a_lost_one_comes_back() {
    let Some(server) = Server::start() else {
        return;
    };
    let e = exec(&server);
    // A "killed worker": claims the task on the shared consumer and never answers.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let first = SLOW.call(&e, 3);
    rt.block_on(async {
        use futures::StreamExt;
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("t_tasks").await.unwrap();
        let consumer = stream
            .get_or_create_consumer(
                "t_slow",
                async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some("t_slow".into()),
                    filter_subject: "t.task.slow".into(),
                    ack_wait: Duration::from_secs(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(BOUND)
            .messages()
            .await
            .unwrap();
        let taken = batch.next().await.unwrap().unwrap();
        drop(taken); // never acknowledged
    });
    // A real worker gets it after the lease (1s); the run takes 2.5s, longer than the
    // lease, and in-progress acks keep it from a second delivery.
    let w = Running::start(
        worker(&server, Tasks::new().with(&SLOW))
            .ack_wait(Duration::from_secs(1))
            .parallel(2),
    );
    assert_eq!(wait(first).unwrap(), 3);
    let report = w.stop();
    assert_eq!(SLOW_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!((report.completed, report.skipped), (1, 0));
}

static NOW: AtomicU32 = AtomicU32::new(0);
static MAX: AtomicU32 = AtomicU32::new(0);
static LIMITED: Task<u64, u64> = Task::new("limited", |_ctx, x| {
    let n = NOW.fetch_add(1, Ordering::SeqCst) + 1;
    MAX.fetch_max(n, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    NOW.fetch_sub(1, Ordering::SeqCst);
    Ok(x)
});

#[test]
fn a_limit_holds_across_workers() {
    let Some(server) = Server::start() else {
        return;
    };
    let tasks = || Tasks::new().with(&LIMITED);
    let w1 = Running::start(worker(&server, tasks()).limit("limited", 1).parallel(4));
    let w2 = Running::start(worker(&server, tasks()).limit("limited", 1).parallel(4));
    let e = exec(&server);
    let handles: Vec<_> = (0..12).map(|i| LIMITED.call(&e, i)).collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(wait(h).unwrap(), i as u64);
    }
    assert_eq!(MAX.load(Ordering::SeqCst), 1);
    let (a, b) = (w1.stop(), w2.stop());
    assert_eq!(a.completed + b.completed, 12);
}

static DRAIN_STARTED: Mutex<Option<std::sync::mpsc::Sender<()>>> = Mutex::new(None);
static DRAINED: Task<u64, u64> = Task::new("drained", |_ctx, x| {
    if let Some(tx) = DRAIN_STARTED.lock().unwrap().take() {
        let _ = tx.send(());
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok(x)
});

#[test]
fn a_stopping_worker_finishes_what_runs() {
    let Some(server) = Server::start() else {
        return;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    *DRAIN_STARTED.lock().unwrap() = Some(tx);
    let w = Running::start(worker(&server, Tasks::new().with(&DRAINED)));
    let e = exec(&server);
    let h = DRAINED.call(&e, 4);
    rx.recv_timeout(BOUND).expect("the task started");
    let report = w.stop(); // while the task runs
    assert_eq!(report.completed, 1);
    assert_eq!(wait(h).unwrap(), 4);
}

#[test]
fn nothing_is_lost_when_the_server_restarts() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let e = exec(&server);
    let first: Vec<_> = (0..20).map(|i| DOUBLE.call(&e, i)).collect();
    // Give the publishes time to land, then restart the server (file storage).
    let deadline = Instant::now() + BOUND;
    while e.stats().running < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    server.stop();
    server.spawn();
    let w = Running::start(worker(&server, Tasks::new().with(&DOUBLE)));
    for (i, h) in first.into_iter().enumerate() {
        assert_eq!(wait(h).unwrap(), 2 * i as u64);
    }
    w.stop();
}

#[test]
fn a_policy_line_moves_a_named_task_to_nats() {
    let Some(server) = Server::start() else {
        return;
    };
    let w = Running::start(worker(&server, Tasks::new().with(&DOUBLE)));
    let policy = format!(
        r#"
        [executors.cluster]
        backend = "nats"
        url = "{}"
        prefix = "t"
        attempts = 2
        backoff = "10ms"
        [defaults]
        executor = "cluster"
        "#,
        server.url()
    );
    let mut registry = supervisor::Registry::with_builtins();
    executor_nats::register(&mut registry);
    let sup = supervisor::Supervisor::with_registry(
        supervisor::PolicyConfig::parse(&policy, "policy.toml").unwrap(),
        registry,
    )
    .unwrap();
    assert_eq!(wait(DOUBLE.call(&sup, 8)).unwrap(), 16);
    sup.shutdown(ShutdownMode::Graceful(BOUND));
    assert_eq!(w.stop().completed, 1);
}

static DROPPED_RUNS: AtomicU32 = AtomicU32::new(0);
static DROPPED: Task<u64, u64> = Task::new("dropped", |_ctx, x| {
    DROPPED_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(x)
});

/// Polls `check` until it gives `Some`, for up to [`BOUND`].
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let give_up = Instant::now() + BOUND;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < give_up, "{what}: not within {BOUND:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_cancelled_handle_ends_its_call_and_its_task_never_runs() {
    let Some(server) = Server::start() else {
        return;
    };
    let e = exec(&server);
    // Sent (the server has it) and waiting: no worker runs yet.
    let (id, h) = e.enqueue_call(&DROPPED, 1, None).unwrap();
    assert!(h.cancel());
    let err = wait(h).unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    // The executor marked the task cancelled, and its outcome says so.
    let stored = eventually("the cancelled outcome", || e.result(&id).unwrap());
    assert_eq!(stored.ended, executor_nats::Ended::Cancelled);
    let w = Running::start(worker(&server, Tasks::new().with(&DROPPED)));
    // Behind the cancelled one on the same consumer: it runs once the worker passed it.
    assert_eq!(wait(DROPPED.call(&e, 2)).unwrap(), 2);
    assert_eq!(
        DROPPED_RUNS.load(Ordering::SeqCst),
        1,
        "only the second ran"
    );
    assert_eq!(w.stop().skipped, 1);
    let report = e.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
    assert_eq!(report.stats.submitted, 2);
}

static QUEUED_RUNS: AtomicU32 = AtomicU32::new(0);
static QUEUED: Task<u64, u64> = Task::new("queued", |_ctx, x| {
    QUEUED_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(x * 10)
});

#[test]
fn a_shutdown_ends_waiting_calls_and_their_tasks_stay_queued() {
    let Some(server) = Server::start() else {
        return;
    };
    let e = exec(&server);
    let (id, h) = e.enqueue_call(&QUEUED, 4, None).unwrap();
    let report = e.shutdown(ShutdownMode::Graceful(Duration::from_millis(100)));
    assert!(report.deadline_passed, "{report:?}");
    let err = wait(h).unwrap_err();
    assert!(err.to_string().contains("stays queued"), "{err}");
    let refused = QUEUED.call(&e, 5).wait().unwrap_err();
    assert!(refused.to_string().contains("shut down"), "{refused}");
    // The task is durable: a worker runs it, and a new submitter reads its result.
    let w = Running::start(worker(&server, Tasks::new().with(&QUEUED)));
    let again = exec(&server);
    let stored = eventually("the queued task's result", || again.result(&id).unwrap());
    assert_eq!(stored.ended, executor_nats::Ended::Succeeded);
    assert_eq!(QUEUED_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(w.stop().completed, 1);
}

/// A message no stream takes (here the deployment's task stream was deleted under a
/// running executor) fails its own call with the server's reason; nothing waits for an
/// outcome that cannot come.
#[test]
fn a_call_whose_message_no_stream_takes_fails_with_the_reason() {
    let Some(server) = Server::start() else {
        return;
    };
    let e = exec(&server);
    let url = server.url();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
            js.delete_stream("t_tasks").await.unwrap();
        });
    let err = wait(DOUBLE.call(&e, 1)).unwrap_err();
    assert!(err.to_string().contains("no stream takes"), "{err}");
    e.shutdown(ShutdownMode::Graceful(BOUND));
}
