//! Random mixes of tasks (ok, error, panic, sleep, cancelled; plain, retried, limited, timed)
//! with a shutdown at a random point: the ledger adds up, matches what the handles say,
//! and every handle resolves within a bounded wait.

use std::time::{Duration, Instant};

use executor_core::{ExecutorExt, ShutdownMode, TaskError, TaskHandle, TaskMeta};
use proptest::prelude::*;
use supervisor::Supervisor;

const POLICY: &str = r#"
[executors.io]
backend = "threads"
workers = 3

[executors.cpu]
backend = "rayon"
threads = 2

[defaults]
executor = "io"

[[route]]
match = { name = "retry.*" }
retries = { max = 2, backoff = "2ms", max_backoff = "10ms" }

[[route]]
match = { name = "limited.*" }
executor = "cpu"
limit = { per = "key", concurrency = 1, rate = "200/s" }

[[route]]
match = { name = "timed.*" }
timeout = "15ms"
"#;

#[derive(Debug, Clone, Copy)]
enum Body {
    Ok,
    Err,
    Panic,
    Sleep(u64),
    Cancel,
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        3 => Just(Body::Ok),
        2 => Just(Body::Err),
        1 => Just(Body::Panic),
        2 => (0u64..25).prop_map(Body::Sleep),
        1 => Just(Body::Cancel),
    ]
}

fn route() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec!["plain", "retry.x", "limited.x", "timed.x"])
}

#[derive(Default, Debug, PartialEq, Eq)]
struct Tally {
    completed: u64,
    failed: u64,
    panicked: u64,
    cancelled: u64,
    timed_out: u64,
    rejected: u64,
    not_started: u64,
}

/// Counts a handle's result; `late` marks a task submitted after the shutdown, which must
/// be refused (a backend counts a refusal as rejected, whatever its reason).
fn tally(t: &mut Tally, r: &Result<(), TaskError>, late: bool) {
    if late {
        assert!(
            matches!(r, Err(e) if e.is_shutdown()),
            "a late task was not refused"
        );
        t.rejected += 1;
        return;
    }
    match r {
        Ok(()) => t.completed += 1,
        Err(e) if e.is_failed() => t.failed += 1,
        Err(e) if e.is_panic() => t.panicked += 1,
        Err(e) if e.is_cancelled() => t.cancelled += 1,
        Err(e) if e.is_timeout() => t.timed_out += 1,
        Err(e) if e.is_rejected() => t.rejected += 1,
        Err(e) if e.is_shutdown() => t.not_started += 1,
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_ledger_balances_and_every_handle_resolves(
        tasks in proptest::collection::vec((body(), route(), 0u8..3), 1..40),
        cut in 0usize..40,
        graceful in proptest::option::of(0u64..40),
    ) {
        let sup = Supervisor::from_toml(POLICY).unwrap();
        let cut = cut.min(tasks.len());
        let mut handles: Vec<TaskHandle<()>> = Vec::new();
        let mut ledger = None;
        for (i, (b, name, key)) in tasks.iter().copied().enumerate() {
            if i == cut {
                let mode = graceful.map_or(ShutdownMode::Now, |ms| ShutdownMode::Graceful(Duration::from_millis(ms)));
                ledger = Some(sup.shutdown_ledger(mode));
            }
            let meta = TaskMeta::new(name).with_key(format!("k{key}"));
            let h = sup.run(meta, move |ctx| {
                match b {
                    Body::Ok | Body::Cancel => Ok(()),
                    Body::Err => Err(format!("task error on attempt {}", ctx.attempt())),
                    Body::Panic => panic!("task panic"),
                    Body::Sleep(ms) => {
                        let end = Instant::now() + Duration::from_millis(ms);
                        while Instant::now() < end {
                            ctx.checkpoint().map_err(|_| "stopped".to_owned())?;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Ok(())
                    }
                }
            });
            if matches!(b, Body::Cancel) {
                h.cancel();
            }
            handles.push(h);
        }
        let ledger = match ledger {
            Some(l) => l,
            None => sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_millis(500))),
        };
        // Every handle resolves within a bounded wait.
        let mut seen = Tally::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        for (i, h) in handles.into_iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = h.wait_timeout(left);
            prop_assert!(r.is_ok(), "a handle did not resolve");
            let Ok(r) = r else { unreachable!() };
            tally(&mut seen, &r, i >= cut);
        }
        // The report taken at shutdown balances...
        prop_assert!(ledger.is_balanced(), "{}", ledger);
        prop_assert_eq!(ledger.never_ran.len() as u64, ledger.counts.not_started);
        // ...and, once the stragglers have resolved, the ledger matches the handles one for one.
        let settle = Instant::now() + Duration::from_secs(5);
        while sup.ledger().submitted != sup.ledger().ended() && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(2));
        }
        let c = sup.ledger();
        prop_assert_eq!(c.submitted, tasks.len() as u64);
        let from_ledger = Tally {
            completed: c.completed,
            failed: c.failed,
            panicked: c.panicked,
            cancelled: c.cancelled,
            timed_out: c.timed_out,
            rejected: c.rejected,
            not_started: c.not_started,
        };
        prop_assert_eq!(from_ledger, seen);
    }
}
