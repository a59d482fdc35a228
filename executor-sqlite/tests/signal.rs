//! SIGTERM drains a worker: it finishes and records the task it runs, then returns. A
//! test binary of its own, since the signal is raised in this process.

use durable_testing::{DurableBackend, DurableExt, Enqueue, State};
use executor_sqlite::SqliteExecutor;
use named_tasks::{Task, Tasks};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static STARTED: AtomicU32 = AtomicU32::new(0);
static SLOW: Task<u32, u32> = Task::new("signal.slow", |_, x| {
    STARTED.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    Ok(x + 1)
});

#[test]
fn sigterm_drains_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let queue = SqliteExecutor::builder("q")
        .path(dir.path().join("q.sqlite3"))
        .slots(1)
        .build()
        .unwrap();
    let (id, handle) = queue.enqueue(&SLOW, 1, Enqueue::default()).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let out = queue.run_worker_until_signal(Tasks::new().with(&SLOW));
            done_tx.send(out.map_err(|e| e.to_string())).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while STARTED.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the task never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
        let out = done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the worker returns after SIGTERM");
        out.unwrap();
    });
    // Drained, not killed: the running task finished and its result is stored.
    assert_eq!(
        handle
            .wait_timeout(Duration::from_secs(30))
            .unwrap()
            .unwrap(),
        2
    );
    let record = queue.result(&id).unwrap().unwrap();
    assert_eq!(record.state, State::Succeeded);
}
