//! SIGTERM during work: running jobs either finish within the grace period or are
//! released back to the queue; nothing is left running under a dead lease.

use demos::jobs::scenario::{self, Layout};
use demos::jobs::store::{NewJob, Store, StoreOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn enqueue_sleepers(dir: &Path, n: usize, sleep_ms: u64) {
    let mut store = Store::open(&Layout::new(dir).db(), &StoreOptions::default()).unwrap();
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob {
            kind: "noop".into(),
            payload: format!("{{\"sleep_ms\":{sleep_ms}}}"),
            idem_key: format!("sleeper-{i}"),
            max_attempts: 3,
        })
        .collect();
    store.enqueue_many(&jobs).unwrap();
}

fn worker(dir: &Path, grace: &str, log: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_demos"))
        .args(["jobs", "run", "--dir"])
        .arg(dir)
        .args(["--inflight", "4", "--grace", grace, "--lease", "30s"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .spawn()
        .unwrap()
}

/// Waits (bounded) until the worker has jobs running.
fn wait_running(dir: &Path) -> u64 {
    let store = Store::open(&Layout::new(dir).db(), &StoreOptions::default()).unwrap();
    let t = Instant::now();
    loop {
        let c = store.counts().unwrap();
        if c.running > 0 {
            return c.running;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "worker never started a job"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_lets_running_jobs_finish_within_the_grace_period() {
    let dir = fresh_dir("jobs-term-finish");
    std::fs::create_dir_all(&dir).unwrap();
    enqueue_sleepers(&dir, 100, 300);
    let mut child = worker(&dir, "20s", "worker.log");
    let running = wait_running(&dir);
    scenario::signal(&child, libc::SIGTERM).unwrap();
    let status = scenario::wait_child(&mut child, Duration::from_secs(30)).unwrap();
    assert!(status.success(), "worker exit: {status}");

    let store = Store::open(&Layout::new(&dir).db(), &StoreOptions::default()).unwrap();
    let c = store.counts().unwrap();
    assert_eq!(c.running, 0, "{c:?}");
    assert_eq!(c.dead + c.failed, 0, "{c:?}");
    assert!(
        c.succeeded >= running,
        "the {running} running jobs finished: {c:?}"
    );
    assert!(c.queued > 0, "it stopped claiming new work: {c:?}");
    assert_eq!(c.total(), 100);
    let log = std::fs::read_to_string(dir.join("worker.log")).unwrap();
    assert!(log.contains("stop requested"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_releases_jobs_that_outlast_the_grace_period() {
    let dir = fresh_dir("jobs-term-release");
    std::fs::create_dir_all(&dir).unwrap();
    enqueue_sleepers(&dir, 10, 5_000);
    let mut child = worker(&dir, "200ms", "worker.log");
    let running = wait_running(&dir);
    scenario::signal(&child, libc::SIGTERM).unwrap();
    let status = scenario::wait_child(&mut child, Duration::from_secs(30)).unwrap();
    assert!(status.success(), "worker exit: {status}");

    let store = Store::open(&Layout::new(&dir).db(), &StoreOptions::default()).unwrap();
    let c = store.counts().unwrap();
    assert_eq!(c.running, 0, "released, not left under a lease: {c:?}");
    assert_eq!(c.queued, 10, "{c:?}");
    // A released attempt does not count against the job.
    assert!(store.all_jobs().unwrap().iter().all(|j| j.attempts == 0));
    let log = std::fs::read_to_string(dir.join("worker.log")).unwrap();
    assert!(log.contains("released"), "{log}");
    assert!(running > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_stops_the_worker_the_same_way() {
    let dir = fresh_dir("jobs-int");
    std::fs::create_dir_all(&dir).unwrap();
    enqueue_sleepers(&dir, 20, 300);
    let mut child = worker(&dir, "20s", "worker.log");
    wait_running(&dir);
    scenario::signal(&child, libc::SIGINT).unwrap();
    let status = scenario::wait_child(&mut child, Duration::from_secs(30)).unwrap();
    assert!(status.success(), "worker exit: {status}");
    let store = Store::open(&Layout::new(&dir).db(), &StoreOptions::default()).unwrap();
    let c = store.counts().unwrap();
    assert_eq!(c.running, 0, "{c:?}");
    assert_eq!(c.succeeded + c.queued, 20, "{c:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
