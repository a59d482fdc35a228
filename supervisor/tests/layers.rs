//! The supervisor's behaviour end to end on real executors: routing, retries, timeouts,
//! limits, reload, custom backends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use executor_core::{Executor, ExecutorExt, ShutdownMode, TaskError, TaskHandle, TaskMeta};
use supervisor::{PolicyConfig, Registry, Supervisor};

const WAIT: Duration = Duration::from_secs(20);

/// Waits for a handle, failing the test instead of hanging.
#[track_caller]
fn wait<T: Send + 'static>(h: TaskHandle<T>) -> Result<T, TaskError> {
    h.wait_timeout(WAIT)
        .unwrap_or_else(|_| panic!("a task handle did not resolve in time"))
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_owned()
}

const ROUTING: &str = r#"
[executors.io]
backend = "threads"
workers = 2

[executors.cpu]
backend = "rayon"
threads = 2

[executors.net]
backend = "tokio"
worker_threads = 1

[defaults]
executor = "io"

[[route]]
match = { tags = ["cpu"] }
executor = "cpu"

[[route]]
match = { name = "scrape.*" }
executor = "net"
"#;

#[test]
fn tasks_run_on_the_executor_their_route_names() {
    let sup = Supervisor::from_toml(ROUTING).unwrap();
    let cases = [
        (TaskMeta::new("sum").with_tag("cpu"), "cpu"),
        (TaskMeta::new("scrape.fetch"), "net"),
        // Tags are checked first: route 1 wins over route 2.
        (TaskMeta::new("scrape.parse").with_tag("cpu"), "cpu"),
        (TaskMeta::new("download"), "io"),
    ];
    for (meta, executor) in cases {
        assert_eq!(sup.explain(&meta).executor(), executor);
        let h = sup.run(meta.clone(), |_| Ok::<_, TaskError>(thread_name()));
        let ran_on = wait(h).unwrap();
        assert!(
            ran_on.starts_with(&format!("{executor}-")),
            "{} ran on thread {ran_on}, expected executor {executor}",
            meta.name()
        );
    }
    let why = sup.explain(&TaskMeta::new("scrape.fetch")).to_string();
    assert!(why.contains("route 2"), "{why}");
    assert!(why.contains("route 1: no tag \"cpu\""), "{why}");
    let report = sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.counts.completed, 4);
}

#[test]
fn async_tasks_retry_on_the_tokio_route() {
    let sup = Supervisor::from_toml(&format!(
        "{ROUTING}retries = {{ max = 2, backoff = \"5ms\" }}\n"
    ))
    .unwrap();
    let h = sup.run_async(TaskMeta::new("scrape.fetch"), |ctx| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if ctx.attempt() < 3 {
            Err(format!("attempt {} refused", ctx.attempt()))
        } else {
            Ok((ctx.attempt(), thread_name()))
        }
    });
    let (attempt, thread) = wait(h).unwrap();
    assert_eq!(attempt, 3);
    assert!(thread.starts_with("net-"), "{thread}");
    sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
}

const RETRY: &str = r#"
[executors.io]
backend = "threads"
workers = 2

[defaults]
executor = "io"
retries = { max = 3, backoff = "5ms", max_backoff = "20ms", jitter = true }
"#;

#[test]
fn retries_rerun_with_counting_attempts_then_succeed() {
    let sup = Supervisor::from_toml(RETRY).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let h = sup.run(TaskMeta::new("flaky"), move |ctx| {
        s.lock().unwrap().push(ctx.attempt());
        if ctx.attempt() < 3 {
            Err(format!("attempt {} failed", ctx.attempt()))
        } else {
            Ok(ctx.attempt())
        }
    });
    assert_eq!(wait(h).unwrap(), 3);
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);
    let report = sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
    assert_eq!((report.counts.completed, report.counts.failed), (1, 0));
}

#[test]
fn retries_give_up_after_max_and_cover_panics() {
    let sup = Supervisor::from_toml(RETRY).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let failing = sup.run(TaskMeta::new("always.fails"), move |ctx| {
        c.fetch_add(1, Ordering::SeqCst);
        Err::<(), _>(format!("no luck on attempt {}", ctx.attempt()))
    });
    let err = wait(failing).unwrap_err();
    assert!(err.is_failed(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 4, "1 attempt + max 3 retries");

    let panics = Arc::new(AtomicU32::new(0));
    let p = panics.clone();
    let panicky = sup.run(TaskMeta::new("panics"), move |ctx| {
        p.fetch_add(1, Ordering::SeqCst);
        if ctx.attempt() <= 4 {
            panic!("boom {}", ctx.attempt());
        }
        Ok::<_, TaskError>(())
    });
    let err = wait(panicky).unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.panic_message(), Some("boom 4"));
    assert_eq!(panics.load(Ordering::SeqCst), 4);

    // A run-once task moves its inputs: it is never retried.
    let once = Arc::new(AtomicU32::new(0));
    let o = once.clone();
    let h = sup.run_once(TaskMeta::new("once"), move |_| {
        o.fetch_add(1, Ordering::SeqCst);
        Err::<(), _>("once only")
    });
    assert!(wait(h).unwrap_err().is_failed());
    assert_eq!(once.load(Ordering::SeqCst), 1);

    let report = sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
    assert!(report.is_balanced(), "{report}");
    assert_eq!((report.counts.failed, report.counts.panicked), (2, 1));
}

#[test]
fn a_timeout_resolves_the_handle_at_the_deadline() {
    let sup = Supervisor::from_toml(
        r#"
[executors.io]
backend = "threads"
workers = 2
[defaults]
executor = "io"
timeout = "100ms"
"#,
    )
    .unwrap();
    let started = Instant::now();
    let h = sup.run(TaskMeta::new("slow"), |ctx| {
        while !ctx.is_cancelled() {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok::<_, TaskError>(())
    });
    let err = wait(h).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100),
        "resolved early: {took:?}"
    );
    // A task that ignores its deadline still resolves for the caller at the deadline:
    // its body is held until the handle has resolved, so a handle that waited for the
    // body would never resolve (and `wait` would fail at its bound).
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (ended_tx, ended) = std::sync::mpsc::channel::<()>();
    let h = sup.submit(move || {
        let _ = held.recv();
        let _ = ended_tx.send(());
    });
    assert!(wait(h).unwrap_err().is_timeout());
    assert!(
        ended.try_recv().is_err(),
        "the handle resolved only after the body ended"
    );
    release.send(()).unwrap();
    ended
        .recv_timeout(WAIT)
        .expect("the held body ends once released");
    // A quick task is not affected.
    assert_eq!(wait(sup.submit(|| 7)).unwrap(), 7);
    let report = sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.counts.timed_out, 2);
}

/// Every task of a timeout route shares one deadline queue: tasks that overrun all time
/// out (each at its own deadline, in order), and a task that ended early leaves nothing
/// of its state behind for the timer to hold until its deadline.
#[test]
fn many_deadlines_fire_in_order_and_an_early_end_frees_the_task_at_once() {
    let sup = Supervisor::from_toml(
        r#"
[executors.io]
backend = "threads"
workers = 2
[defaults]
executor = "io"
timeout = "150ms"
[[route]]
match = { name = "long" }
executor = "io"
timeout = "1h"
"#,
    )
    .unwrap();
    let (release, held) = crossbeam_channel::unbounded::<()>();
    let overrun: Vec<_> = (0..6)
        .map(|_| {
            let held = held.clone();
            sup.submit(move || {
                let _ = held.recv();
            })
        })
        .collect();
    for h in overrun {
        assert!(wait(h).unwrap_err().is_timeout());
    }
    for _ in 0..6 {
        release.send(()).unwrap();
    }
    // A task on the one-hour route ends at once; its handle is dropped unread, so only
    // the task's state (held weakly by the deadline queue) keeps the result alive.
    let marker = Arc::new(());
    let inside = marker.clone();
    let done = sup.run(TaskMeta::new("long"), move |_| {
        Ok::<_, TaskError>(inside.clone())
    });
    drop(done);
    let bound = Instant::now() + WAIT;
    while Arc::strong_count(&marker) > 1 {
        assert!(
            Instant::now() < bound,
            "the result of an ended task stayed alive until its deadline"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let report = sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.counts.timed_out, 6, "{report}");
    assert_eq!(report.counts.completed, 1, "{report}");
}

#[test]
fn per_key_concurrency_is_never_exceeded() {
    let sup = Supervisor::from_toml(
        r#"
[executors.io]
backend = "threads"
workers = 8
[defaults]
executor = "io"
limit = { per = "key", concurrency = 2 }
"#,
    )
    .unwrap();
    let keys = ["a", "b", "c"];
    let gauges: Arc<HashMap<&str, (AtomicUsize, AtomicUsize)>> = Arc::new(
        keys.iter()
            .map(|k| (*k, (AtomicUsize::new(0), AtomicUsize::new(0))))
            .collect(),
    );
    // Every task is held at a gate until all 36 are submitted: if waiting for a slot
    // blocked the caller of execute, the submissions could never finish.
    let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let submitter = {
        let sup = sup.clone();
        let gate = gate.clone();
        let gauges = gauges.clone();
        std::thread::spawn(move || {
            (0..36)
                .map(|i| {
                    let key = keys[i % 3];
                    let g = gauges.clone();
                    let gate = gate.clone();
                    sup.run(TaskMeta::new("fetch").with_key(key), move |ctx| {
                        let (open, cv) = &*gate;
                        let mut open = open.lock().unwrap();
                        while !*open {
                            open = cv.wait(open).unwrap();
                        }
                        drop(open);
                        let (now, high) = &g[ctx.meta().key().unwrap()];
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        high.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(10));
                        now.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, TaskError>(())
                    })
                })
                .collect::<Vec<_>>()
        })
    };
    let t = Instant::now();
    while !submitter.is_finished() {
        assert!(t.elapsed() < WAIT, "submitting blocked on the limit");
        std::thread::sleep(Duration::from_millis(5));
    }
    let handles = submitter.join().unwrap();
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    for h in handles {
        wait(h).unwrap();
    }
    for k in keys {
        let high = gauges[k].1.load(Ordering::SeqCst);
        assert!(high <= 2, "key {k} ran {high} at once");
        assert!(high >= 1);
    }
    let report = sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
    assert_eq!(report.counts.completed, 36);
}

#[test]
fn rate_limits_space_starts_per_key() {
    let sup = Supervisor::from_toml(
        r#"
[executors.io]
backend = "threads"
workers = 4
[defaults]
executor = "io"
limit = { rate = "20/s" }
"#,
    )
    .unwrap();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let submitted = Instant::now();
    let handles: Vec<_> = (0..6)
        .flat_map(|_| ["x", "y"])
        .map(|key| {
            let s = starts.clone();
            sup.run(TaskMeta::new("tick").with_key(key), move |ctx| {
                s.lock()
                    .unwrap()
                    .push((ctx.meta().key().unwrap().to_owned(), Instant::now()));
                Ok::<_, TaskError>(())
            })
        })
        .collect();
    for h in handles {
        wait(h).unwrap();
    }
    let starts = starts.lock().unwrap();
    for key in ["x", "y"] {
        let times: Vec<Instant> = starts
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(times.len(), 6);
        // 20/s is one start per 50 ms: the sixth start cannot come before 250 ms.
        let last = *times.iter().max().unwrap();
        assert!(
            last - submitted >= Duration::from_millis(249),
            "key {key}: six starts within {:?}",
            last - submitted
        );
        // Gaps are loosely even (a start may run a little late on a busy machine).
        for pair in times.windows(2) {
            let gap = pair[1].saturating_duration_since(pair[0]);
            assert!(gap >= Duration::from_millis(20), "key {key}: gap {gap:?}");
        }
    }
    // The two keys run side by side, not one after the other.
    let first = starts.iter().map(|(_, t)| *t).min().unwrap();
    let last = starts.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        last - first < Duration::from_millis(500),
        "{:?}",
        last - first
    );
    sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
}

#[test]
fn a_task_waiting_for_its_limit_does_not_hold_a_worker() {
    let sup = Supervisor::from_toml(
        r#"
[executors.io]
backend = "threads"
workers = 1
[defaults]
executor = "io"
[[route]]
match = { name = "slow.*" }
limit = { per = "route", rate = "2/s" }
"#,
    )
    .unwrap();
    let first = sup.run(TaskMeta::new("slow.a"), |_| Ok::<_, TaskError>(()));
    let second = sup.run(TaskMeta::new("slow.b"), |_| {
        Ok::<_, TaskError>(Instant::now())
    });
    wait(first).unwrap();
    // The only worker is free while slow.b waits out its rate.
    let t = Instant::now();
    let quick = sup.submit(Instant::now);
    let ran_at = wait(quick).unwrap();
    let second_at = wait(second).unwrap();
    assert!(
        ran_at < second_at,
        "the quick task waited behind the rate-limited one"
    );
    assert!(ran_at - t < Duration::from_millis(300));
    sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
}

#[test]
fn reload_swaps_routes_and_a_bad_file_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, ROUTING).unwrap();
    let sup = Supervisor::from_file(&path).unwrap();
    let meta = TaskMeta::new("scrape.fetch");
    assert_eq!(sup.explain(&meta).executor(), "net");
    let io_before = sup.executor("io").unwrap();

    // A task in flight keeps its route across the reload.
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let g = gate.clone();
    let in_flight = sup.run(meta.clone(), move |_| {
        let (m, c) = &*g;
        let mut open = m.lock().unwrap();
        while !*open {
            open = c.wait_timeout(open, Duration::from_millis(50)).unwrap().0;
        }
        Ok::<_, TaskError>(thread_name())
    });

    std::fs::write(
        &path,
        ROUTING.replace("executor = \"net\"", "executor = \"cpu\""),
    )
    .unwrap();
    sup.reload(&path).unwrap();
    assert_eq!(sup.explain(&meta).executor(), "cpu");
    let after = wait(sup.run(meta.clone(), |_| Ok::<_, TaskError>(thread_name()))).unwrap();
    assert!(after.starts_with("cpu-"), "{after}");
    // Unchanged executors keep running: the same instance serves the new policy.
    assert!(Arc::ptr_eq(&io_before, &sup.executor("io").unwrap()));

    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    assert!(wait(in_flight).unwrap().starts_with("net-"));

    // A bad file is rejected with its position; the old policy stays.
    std::fs::write(
        &path,
        ROUTING.replace(
            "executor = \"cpu\"\n\n[[route]]",
            "executor = \"gpu\"\n\n[[route]]",
        ),
    )
    .unwrap();
    let err = sup.reload(&path).unwrap_err();
    assert!(err.is_unknown_executor(), "{err}");
    assert_eq!(err.line(), Some(19));
    assert_eq!(
        sup.explain(&TaskMeta::new("x").with_tag("cpu")).executor(),
        "cpu"
    );
    assert_eq!(sup.explain(&meta).executor(), "cpu");
    let err = sup
        .reload_str(
            "[executors.io]\nbackend = \"threads\"\nworkers = 0\n[defaults]\nexecutor = \"io\"\n",
            "bad.toml",
        )
        .unwrap_err();
    assert_eq!((err.line(), err.column()), (Some(3), Some(11)), "{err}");
    assert_eq!(sup.explain(&meta).executor(), "cpu");

    let report = sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.counts.completed, 2);
}

/// The supervisor remembers where a thread last routed a task name; that memory must
/// never send a task where its own policy would not: not across supervisors, not for a
/// tagged task, not for an owned name.
#[test]
fn a_remembered_route_belongs_to_its_policy_and_name() {
    let scrape_on_io = ROUTING.replace("executor = \"net\"", "executor = \"io\"");
    let a = Supervisor::from_toml(ROUTING).unwrap();
    let b = Supervisor::from_toml(&scrape_on_io).unwrap();
    let ran_on = |sup: &Supervisor, meta: TaskMeta| {
        wait(sup.run(meta, |_| Ok::<_, TaskError>(thread_name()))).unwrap()
    };
    for _ in 0..3 {
        assert!(ran_on(&a, TaskMeta::new("scrape.fetch")).starts_with("net-"));
        assert!(ran_on(&b, TaskMeta::new("scrape.fetch")).starts_with("io-"));
        // Same name, now with a tag that the first rule takes.
        let tagged = TaskMeta::new("scrape.fetch").with_tag("cpu");
        assert!(ran_on(&a, tagged).starts_with("cpu-"));
        // An owned name equal to a remembered one routes by the rules too.
        let owned = TaskMeta::new(String::from("scrape.fetch"));
        assert!(ran_on(&a, owned).starts_with("net-"));
        assert!(ran_on(&a, TaskMeta::new("sum")).starts_with("io-"));
    }
    for sup in [a, b] {
        let report = sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
        assert!(report.is_balanced(), "{report}");
    }
}

#[test]
fn backend_errors_have_positions() {
    let text = "[executors.io]\nbackend = \"threads\"\non_full = \"drop\"\n[defaults]\nexecutor = \"io\"\n";
    let err = Supervisor::new(PolicyConfig::parse(text, "p.toml").unwrap()).unwrap_err();
    assert!(err.is_invalid_value());
    assert_eq!(
        err.to_string(),
        "p.toml:3:11: invalid value \"drop\" for on_full; expected one of: block, reject, caller-runs"
    );
    let text = "[executors.io]\nbackend = \"threads\"\nworker = 3\n[defaults]\nexecutor = \"io\"\n";
    let err = Supervisor::new(PolicyConfig::parse(text, "p.toml").unwrap()).unwrap_err();
    assert!(err.is_unknown_key());
    assert_eq!(
        err.to_string(),
        "p.toml:3:1: unknown key \"worker\" in [executors.io] for backend \"threads\"; expected one of: backend, on_full, queue, workers"
    );
    let text = "[executors.io]\nbackend = \"fibers\"\n[defaults]\nexecutor = \"io\"\n";
    let err = Supervisor::new(PolicyConfig::parse(text, "p.toml").unwrap()).unwrap_err();
    assert!(err.is_unknown_backend());
    assert_eq!((err.line(), err.column()), (Some(2), Some(11)));
    assert!(
        err.to_string()
            .contains("expected one of: rayon, threads, tokio"),
        "{err}"
    );
}

#[test]
fn a_third_party_backend_plugs_in_through_the_registry() {
    let mut registry = Registry::new();
    registry.register("inline", |opts: &supervisor::BackendOptions| {
        let label = opts.string("label")?.unwrap_or("inline").to_owned();
        let plan: supervisor::ExecutorPlan = Box::new(move || {
            Ok(Arc::new(executor_core::InlineExecutor::new(label)) as Arc<dyn Executor>)
        });
        Ok(plan)
    });
    let text = "[executors.here]\nbackend = \"inline\"\nlabel = \"here\"\n[defaults]\nexecutor = \"here\"\n";
    let sup = Supervisor::with_registry(
        PolicyConfig::parse(text, "p.toml").unwrap(),
        registry.clone(),
    )
    .unwrap();
    let caller = thread_name();
    assert_eq!(wait(sup.submit(thread_name)).unwrap(), caller);
    sup.shutdown_ledger(ShutdownMode::Now);

    let text =
        "[executors.here]\nbackend = \"inline\"\nlabell = \"x\"\n[defaults]\nexecutor = \"here\"\n";
    let err = Supervisor::with_registry(PolicyConfig::parse(text, "p.toml").unwrap(), registry)
        .unwrap_err();
    assert!(err.is_unknown_key());
    assert_eq!((err.line(), err.column()), (Some(3), Some(1)));
    assert!(
        err.to_string().ends_with("expected one of: backend, label"),
        "{err}"
    );
}

#[test]
fn a_watched_file_reloads_itself_and_a_bad_edit_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, ROUTING).unwrap();
    let sup = Supervisor::from_file(&path).unwrap();
    sup.watch(&path).unwrap();
    let meta = TaskMeta::new("scrape.fetch");
    assert_eq!(sup.explain(&meta).executor(), "net");

    let until = |want: &str| {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if sup.explain(&meta).executor() == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    std::fs::write(
        &path,
        ROUTING.replace("executor = \"net\"", "executor = \"io\""),
    )
    .unwrap();
    assert!(until("io"), "the watch did not pick up the edit");

    // A bad edit is logged and ignored.
    std::fs::write(&path, "this is not toml [").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sup.explain(&meta).executor(), "io");
    // The next good edit is picked up again.
    std::fs::write(&path, ROUTING).unwrap();
    assert!(until("net"), "the watch stopped after a bad edit");
    sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
}

#[test]
fn a_retry_waiting_out_its_backoff_does_not_hold_a_worker() {
    let sup = Supervisor::from_toml(
        r#"
[executors.io]
backend = "threads"
workers = 1
[defaults]
executor = "io"
[[route]]
match = { name = "flaky" }
retries = { max = 1, backoff = "300ms", jitter = false }
"#,
    )
    .unwrap();
    let flaky = sup.run(TaskMeta::new("flaky"), |ctx| {
        if ctx.attempt() == 1 {
            Err("first attempt fails".to_owned())
        } else {
            Ok(Instant::now())
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    // The first attempt has failed; the only worker is free during the backoff.
    let quick = wait(sup.submit(Instant::now)).unwrap();
    let retried = wait(flaky).unwrap();
    assert!(quick < retried, "the quick task waited behind the backoff");
    sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
}

#[test]
fn shutdown_ends_a_pending_retry_with_its_last_error() {
    let sup = Supervisor::from_toml(
        r#"
[executors.io]
backend = "threads"
workers = 1
[defaults]
executor = "io"
retries = { max = 5, backoff = "10s", jitter = false }
"#,
    )
    .unwrap();
    let h = sup.run(TaskMeta::new("doomed"), |_| {
        Err::<(), _>("still broken".to_owned())
    });
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let ledger = sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_millis(100)));
    assert!(t.elapsed() < Duration::from_secs(5));
    let err = wait(h).unwrap_err();
    assert!(err.is_failed(), "{err}");
    assert!(ledger.is_balanced(), "{ledger}");
    assert_eq!(ledger.counts.failed, 1);
    assert!(ledger.deadline_passed);
}

#[test]
fn limits_hold_for_async_tasks_on_tokio() {
    let sup = Supervisor::from_toml(
        r#"
[executors.net]
backend = "tokio"
worker_threads = 2
[defaults]
executor = "net"
retries = { max = 1, backoff = "1ms" }
limit = { per = "key", concurrency = 3, rate = "1000/s" }
"#,
    )
    .unwrap();
    let now = Arc::new(AtomicUsize::new(0));
    let high = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..30)
        .map(|i| {
            let (now, high) = (now.clone(), high.clone());
            sup.run_async(TaskMeta::new("fetch").with_key("one-host"), move |ctx| {
                let (now, high) = (now.clone(), high.clone());
                async move {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    high.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    // Every fifth task fails once and is retried under the same limit.
                    if i % 5 == 0 && ctx.attempt() == 1 {
                        Err("transient")
                    } else {
                        Ok(i)
                    }
                }
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(wait(h).unwrap(), i);
    }
    let high = high.load(Ordering::SeqCst);
    assert!((1..=3).contains(&high), "ran {high} at once");
    let report = sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.counts.completed, 30);
}

#[test]
fn a_reload_keeps_the_budget_of_an_unchanged_limit_and_rebuilds_changed_executors() {
    let policy = r#"
[executors.io]
backend = "threads"
workers = 4
[defaults]
executor = "io"
limit = { per = "route", concurrency = 1 }
"#;
    let sup = Supervisor::from_toml(policy).unwrap();
    let io_before = sup.executor("io").unwrap();
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let g = gate.clone();
    let holder = sup.run(TaskMeta::new("holder"), move |_| {
        let (m, c) = &*g;
        let mut open = m.lock().unwrap();
        while !*open {
            open = c.wait_timeout(open, Duration::from_millis(20)).unwrap().0;
        }
        Ok::<_, TaskError>(())
    });
    std::thread::sleep(Duration::from_millis(50));
    // Same limit, one more worker: the executor is rebuilt, the budget carries over.
    sup.reload_str(&policy.replace("workers = 4", "workers = 5"), "v2.toml")
        .unwrap();
    assert!(!Arc::ptr_eq(&io_before, &sup.executor("io").unwrap()));
    let second = sup.submit(Instant::now);
    let second = second
        .wait_timeout(Duration::from_millis(150))
        .expect_err("the second task started while the first held the only slot");
    let opened = Instant::now();
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    wait(holder).unwrap();
    assert!(wait(second).unwrap() >= opened);
    let report = sup.shutdown_ledger(ShutdownMode::Graceful(WAIT));
    assert!(report.is_balanced(), "{report}");
    // The retired executor was shut down with the rest.
    assert_eq!(report.executors.len(), 2);
}

#[test]
fn a_route_priority_orders_the_limit_queue_and_a_task_priority_wins_over_it() {
    let sup = Supervisor::from_toml(
        r#"
[executors.io]
backend = "threads"
workers = 2
[defaults]
executor = "io"
priority = 5
limit = { per = "route", concurrency = 1 }
"#,
    )
    .unwrap();
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let order = Arc::new(Mutex::new(Vec::new()));
    let g = gate.clone();
    let first = sup.run(TaskMeta::new("hold"), move |_| {
        let (open, cv) = &*g;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        Ok::<_, TaskError>(())
    });
    // Queued behind the held slot: "own" says priority 0 itself, which wins over the
    // route's 5; "route" has none and takes 5, so it goes first.
    let task = |name: &'static str, meta: TaskMeta| {
        let order = order.clone();
        sup.run(meta, move |_| {
            order.lock().unwrap().push(name);
            Ok::<_, TaskError>(())
        })
    };
    let own = task("own", TaskMeta::new("own").with_priority(0));
    let route = task("route", TaskMeta::new("route"));
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    for h in [first, own, route] {
        wait(h).unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["route", "own"]);
    sup.shutdown(ShutdownMode::Graceful(WAIT));
}
