//! Every handle resolves under any interleaving of submit and a `Now` shutdown, on a route
//! with limits, retries and a timeout. Once, a task that passed the supervisor's "closed"
//! check while a `Now` shutdown ran could land in a limiter's queue after the shutdown
//! swept it, with its wake-up timer refused, and wait forever.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use executor_core::{ExecutorExt, Job, ShutdownMode, SubmitError, TaskHandle, TaskMeta};
use proptest::prelude::*;
use supervisor::{Layer, LayerContext, PolicyConfig, Service, Supervisor};

/// Long enough for any honest resolution on a loaded machine; a hang fails here.
const BOUND: Duration = Duration::from_secs(20);

const POLICY: &str = r#"
[executors.io]
backend = "threads"
workers = 2

[defaults]
executor = "io"
timeout = "10s"
retries = { max = 2, backoff = "1ms", max_backoff = "2ms" }
limit = { per = "key", concurrency = 1, rate = "2000/s" }
"#;

/// Waits for `h` within the bound, without blocking forever.
fn resolves<T: Send + 'static>(h: &TaskHandle<T>) -> bool {
    let t0 = Instant::now();
    while !h.is_finished() {
        if t0.elapsed() > BOUND {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// One round: `threads` submitters hammer the supervisor while the main thread shuts it
/// down `Now` after `delay_us`; returns how many handles did not resolve.
fn round(threads: usize, per_thread: usize, delay_us: u64) -> usize {
    let sup = Supervisor::from_toml(POLICY).unwrap();
    let submitters: Vec<_> = (0..threads)
        .map(|t| {
            let sup = sup.clone();
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|i| {
                        // A few keys, so tasks queue for the concurrency and the rate.
                        let meta = TaskMeta::new("race").with_key(format!("k{}", i % 3));
                        sup.run(meta, move |ctx| {
                            if (i + t) % 4 == 0 && ctx.attempt() == 1 {
                                Err("fails once")
                            } else {
                                Ok(i)
                            }
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_micros(delay_us));
    let ledger = sup.shutdown_ledger(ShutdownMode::Now);
    let handles: Vec<_> = submitters
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect();
    let stuck = handles.iter().filter(|h| !resolves(h)).count();
    assert!(ledger.counts.submitted <= (threads * per_thread) as u64);
    stuck
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_handle_resolves_when_submits_race_a_now_shutdown(
        threads in 1usize..4,
        per_thread in 1usize..200,
        delay_us in 0u64..3000,
    ) {
        prop_assert_eq!(round(threads, per_thread, delay_us), 0, "handles never resolved");
    }
}

/// A layer that holds each submission until `release` is set (bounded), so a task is
/// inside `execute` for the whole of a shutdown.
struct Stall {
    release: Arc<AtomicBool>,
    entered: Arc<AtomicBool>,
}

impl Layer for Stall {
    fn layer(&self, inner: Arc<dyn Service>, _cx: &LayerContext<'_>) -> Arc<dyn Service> {
        let release = self.release.clone();
        let entered = self.entered.clone();
        Arc::new(move |job: Job| -> Result<(), SubmitError> {
            entered.store(true, Ordering::SeqCst);
            let t0 = Instant::now();
            while !release.load(Ordering::SeqCst) && t0.elapsed() < BOUND {
                std::thread::sleep(Duration::from_millis(1));
            }
            inner.dispatch(job)
        })
    }
}

#[test]
fn a_task_that_reaches_its_limit_queue_after_a_now_shutdown_still_resolves() {
    let release = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(AtomicBool::new(false));
    let sup = Supervisor::builder()
        .config(PolicyConfig::parse(POLICY, "race.toml").unwrap())
        .layer(Stall {
            release: release.clone(),
            entered: entered.clone(),
        })
        .build()
        .unwrap();
    // One task holds the key's only slot, so the stalled one must queue.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    release.store(true, Ordering::SeqCst);
    let holder = sup.run_once(TaskMeta::new("holder").with_key("k"), move |_| {
        let _ = rx.lock().unwrap().recv_timeout(BOUND);
        Ok::<_, std::io::Error>(())
    });
    release.store(false, Ordering::SeqCst);
    entered.store(false, Ordering::SeqCst);
    let submitter = {
        let sup = sup.clone();
        std::thread::spawn(move || {
            sup.run_once(TaskMeta::new("late").with_key("k"), |_| {
                Ok::<_, std::io::Error>(1)
            })
        })
    };
    while !entered.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    // The shutdown gives up waiting for the stalled submission, sweeps the queues and
    // returns; only then does the stalled task reach its limit's queue.
    let _ = sup.shutdown_ledger(ShutdownMode::Now);
    release.store(true, Ordering::SeqCst);
    let late = submitter.join().unwrap();
    drop(tx);
    assert!(resolves(&late), "the late task's handle never resolved");
    assert!(late.wait().unwrap_err().is_shutdown());
    assert!(resolves(&holder));
}
