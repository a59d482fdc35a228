//! A bounded queue under pressure: a caller blocked on a full queue (`OnFull::Block`)
//! must not hold a shutdown past its deadline, and its task is accounted for.

use executor_core::testing::{BOUND, Gate, settled, wait_bounded};
use executor_core::{Executor, ExecutorExt, OnFull, ShutdownMode, TaskError, TaskMeta};
use executor_threads::ThreadsExecutor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < BOUND, "{what} never happened");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn shutdown_keeps_its_deadline_with_a_caller_blocked_on_a_full_queue() {
    let exec = Arc::new(
        ThreadsExecutor::builder("bounded")
            .workers(1)
            .queue(Some(1))
            .on_full(OnFull::Block)
            .build()
            .unwrap(),
    );
    let gate = Gate::new();
    let started = Arc::new(AtomicBool::new(false));
    let blocker = {
        let (gate, started) = (gate.clone(), started.clone());
        exec.submit(move || {
            started.store(true, Ordering::SeqCst);
            gate.wait();
        })
    };
    wait_until("the blocker's start", || started.load(Ordering::SeqCst));
    let ran = Arc::new(AtomicBool::new(false));
    let job = |name: &'static str| {
        let ran = ran.clone();
        move |_: &executor_core::TaskContext| {
            ran.store(true, Ordering::SeqCst);
            Ok::<_, TaskError>(name)
        }
    };
    // Fills the queue.
    let queued = exec.run_once(TaskMeta::new("queued"), job("queued"));
    // Blocks its caller: the queue is full and the only worker is busy.
    let (tx, rx) = std::sync::mpsc::channel();
    let caller = {
        let (exec, job) = (exec.clone(), job("blocked"));
        std::thread::spawn(move || {
            let h = exec.run_once(TaskMeta::new("blocked"), job);
            tx.send(()).unwrap();
            h
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(rx.try_recv().is_err(), "the caller should wait for room");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    {
        let exec = exec.clone();
        std::thread::spawn(move || {
            let _ = done_tx.send(exec.shutdown(ShutdownMode::Graceful(Duration::from_millis(100))));
        });
    }
    let report = match done_rx.recv_timeout(BOUND / 2) {
        Ok(report) => report,
        Err(_) => {
            gate.open();
            panic!(
                "shutdown with a deadline of 100 ms hung behind a caller blocked on a full queue"
            );
        }
    };
    let blocked = caller.join().unwrap();
    assert!(report.deadline_passed);
    let mut names: Vec<_> = report.not_started.iter().map(|r| r.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["blocked", "queued"], "{report:?}");
    for h in [queued, blocked] {
        let err = wait_bounded(h, "a task dropped at shutdown").unwrap_err();
        assert!(err.is_shutdown(), "{err}");
    }
    gate.open();
    wait_bounded(blocker, "blocker").unwrap();
    assert!(
        !ran.load(Ordering::SeqCst),
        "a task dropped at shutdown ran"
    );
    let stats = settled(&*exec);
    assert_eq!(
        (stats.submitted, stats.completed, stats.not_started),
        (3, 1, 2),
        "{stats:?}"
    );
}
