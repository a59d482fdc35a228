//! The queue serves higher priority first, FIFO among equals, with aging: a low priority
//! (and a plain job of priority 0) waits a bounded number of turns under a stream of
//! higher ones; a refused ranked job is not left behind in the queue.

use executor_core::backend::AGING;
use executor_core::testing::{BOUND, Gate, settled, wait_bounded};
use executor_core::{Executor, ExecutorExt, OnFull, ShutdownMode, TaskError, TaskMeta};
use executor_threads::ThreadsExecutor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

fn one_worker(name: &str) -> Arc<ThreadsExecutor> {
    Arc::new(ThreadsExecutor::builder(name).workers(1).build().unwrap())
}

/// Holds the only worker until the gate opens; returns once it runs.
fn hold(exec: &ThreadsExecutor, gate: &Gate) -> executor_core::TaskHandle<()> {
    let (started, running) = mpsc::channel();
    let g = gate.clone();
    let h = exec.submit(move || {
        started.send(()).unwrap();
        g.wait();
    });
    running.recv_timeout(BOUND).expect("the holder never ran");
    h
}

#[test]
fn higher_priority_first_and_fifo_among_equals() {
    let exec = one_worker("prio");
    let gate = Gate::new();
    let holder = hold(&exec, &gate);
    let order = Arc::new(Mutex::new(Vec::new()));
    let task = |name: &'static str, priority: Option<i8>| {
        let order = order.clone();
        let meta = TaskMeta::new(name);
        let meta = match priority {
            Some(p) => meta.with_priority(p),
            None => meta,
        };
        exec.run(meta, move |_| {
            order.lock().unwrap().push(name);
            Ok::<_, TaskError>(())
        })
    };
    let handles = [
        task("plain-1", None),
        task("low", Some(-5)),
        task("high-1", Some(5)),
        task("plain-2", Some(0)),
        task("high-2", Some(5)),
        task("higher", Some(9)),
    ];
    gate.open();
    wait_bounded(holder, "holder").unwrap();
    for h in handles {
        wait_bounded(h, "task").unwrap();
    }
    assert_eq!(
        *order.lock().unwrap(),
        ["higher", "high-1", "high-2", "plain-1", "plain-2", "low"]
    );
    let stats = settled(&*exec);
    assert_eq!(stats.completed, 7);
    exec.shutdown(ShutdownMode::Graceful(BOUND));
}

/// A stream of high-priority jobs, each submitting the next from the worker, against one
/// job waiting at `priority`: it runs within a bounded number of turns.
fn waits_a_bounded_number_of_turns(priority: i8) {
    let exec = one_worker("aging");
    let gate = Gate::new();
    let holder = hold(&exec, &gate);
    let (log, ran) = mpsc::channel::<&'static str>();
    let done = Arc::new(AtomicBool::new(false));
    fn high(exec: Arc<ThreadsExecutor>, log: mpsc::Sender<&'static str>, done: Arc<AtomicBool>) {
        let again = exec.clone();
        exec.execute(
            executor_core::Job::once(TaskMeta::new("high").with_priority(100), move |_| {
                let _ = log.send("high");
                if !done.load(Ordering::SeqCst) {
                    high(again, log, done);
                }
                Ok::<_, TaskError>(())
            })
            .0,
        )
        .unwrap();
    }
    let low = {
        let (log, done) = (log.clone(), done.clone());
        exec.run(TaskMeta::new("low").with_priority(priority), move |_| {
            done.store(true, Ordering::SeqCst);
            let _ = log.send("low");
            Ok::<_, TaskError>(())
        })
    };
    high(exec.clone(), log.clone(), done.clone());
    high(exec.clone(), log.clone(), done.clone());
    gate.open();
    let bound = 3 + (100 - i64::from(priority)) as usize * AGING as usize;
    let mut order = Vec::new();
    while order.last() != Some(&"low") {
        order.push(ran.recv_timeout(BOUND).expect("the low job never ran"));
        assert!(
            order.len() <= bound,
            "the low job starved: {} turns",
            order.len()
        );
    }
    assert_eq!(&order[..2], ["high", "high"], "the high ones go first");
    wait_bounded(holder, "holder").unwrap();
    wait_bounded(low, "low").unwrap();
    exec.shutdown(ShutdownMode::Graceful(BOUND));
}

#[test]
fn aging_bounds_the_wait_of_a_low_priority() {
    waits_a_bounded_number_of_turns(-20);
}

#[test]
fn aging_bounds_the_wait_of_a_plain_job() {
    waits_a_bounded_number_of_turns(0);
}

#[test]
fn a_refused_ranked_job_is_not_left_in_the_queue() {
    let exec = Arc::new(
        ThreadsExecutor::builder("full")
            .workers(1)
            .queue(Some(1))
            .on_full(OnFull::Reject)
            .build()
            .unwrap(),
    );
    let gate = Gate::new();
    let holder = hold(&exec, &gate);
    let queued = exec.run(TaskMeta::new("fills").with_priority(3), |_| {
        Ok::<_, TaskError>(1)
    });
    let refused = exec.run(TaskMeta::new("refused").with_priority(3), |_| {
        Ok::<_, TaskError>(2)
    });
    let err = wait_bounded(refused, "refused").unwrap_err();
    assert!(err.is_rejected(), "{err}");
    gate.open();
    wait_bounded(holder, "holder").unwrap();
    assert_eq!(wait_bounded(queued, "queued").unwrap(), 1);
    let report = exec.shutdown(ShutdownMode::Graceful(BOUND));
    assert!(report.not_started.is_empty());
    assert_eq!((report.stats.completed, report.stats.rejected), (2, 1));
}
