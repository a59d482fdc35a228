//! `executor = "auto"`: mis-tagged task names converge to the right pool, a CPU-bound name
//! stays off the I/O pool once placed, blocking detection tells a task that holds a tokio
//! worker from one that yields, and the policy file checks the new keys.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use executor_core::{Executor, ExecutorExt, ShutdownMode, TaskHandle, TaskMeta};
use supervisor::{Class, ConfigError, PolicyConfig, Supervisor};

const POLICY: &str = r#"
[executors.io]
backend = "threads"
workers = 8

[executors.cpu]
backend = "rayon"
threads = 2

[executors.net]
backend = "tokio"
worker_threads = 2

[defaults]
executor = "io"

[auto]
min_samples = 4

[[route]]
match = { name = "job.*" }
executor = "auto"
auto = { io = "io", cpu = "cpu" }

[[route]]
match = { name = "async.*" }
executor = "auto"
auto = { io = "net", cpu = "cpu" }
"#;

/// A generous bound: only there so a broken build fails instead of hanging.
const BOUND: Duration = Duration::from_secs(60);

/// Computes for about `ms` of wall time. On a busy machine part of that is spent waiting
/// for a CPU, which the learner does not count as blocked: the task still reads CPU-bound.
fn spin(ms: u64) -> String {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < Duration::from_millis(ms) {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }
    std::hint::black_box(x);
    thread_name()
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_owned()
}

fn wait<T: Send + 'static>(h: TaskHandle<T>) -> T {
    match h.wait_timeout(BOUND) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("task failed: {e}"),
        Err(_) => panic!("task did not end within {BOUND:?}"),
    }
}

/// `job.report` is tagged io but computes; `job.fetch` is tagged cpu but sleeps.
fn report() -> TaskMeta {
    TaskMeta::new("job.report").with_tag("io")
}
fn fetch() -> TaskMeta {
    TaskMeta::new("job.fetch").with_tag("cpu")
}

#[test]
fn mis_tagged_names_converge_and_a_cpu_name_then_stays_off_the_io_pool() {
    let sup = Supervisor::from_toml(POLICY).unwrap();
    let mut runs = 0;
    // Both names run side by side, two of each at a time, so the machine is busy while
    // they are measured. They must be placed by the time they have min_samples runs.
    while runs < 4 {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                (
                    sup.run(report(), |_| Ok::<_, String>(spin(30))),
                    sup.run(fetch(), |_| {
                        std::thread::sleep(Duration::from_millis(30));
                        Ok::<_, String>(thread_name())
                    }),
                )
            })
            .collect();
        for (a, b) in hs {
            wait(a);
            wait(b);
        }
        runs += 2;
    }
    let learned = sup.learned();
    let get = |n: &str| learned.iter().find(|l| l.name == n).cloned().unwrap();
    assert_eq!(get("job.report").class, Some(Class::Cpu), "{learned:?}");
    assert_eq!(get("job.fetch").class, Some(Class::Io), "{learned:?}");
    assert_eq!(sup.route(&report()).executor(), "cpu");
    assert_eq!(sup.route(&fetch()).executor(), "io");
    let why = sup.explain(&report()).to_string();
    assert!(why.contains("auto: job.report measured CPU/wall"), "{why}");
    assert!(why.contains("→ cpu"), "{why}");
    assert!(why.contains("executor \"cpu\""), "{why}");

    // Once placed, a CPU-bound name never lands on the I/O pool, even with sleeps mixed
    // in and short spins.
    let hs: Vec<_> = (0..24)
        .map(|i| {
            if i % 3 == 0 {
                sup.run(fetch(), |_| {
                    std::thread::sleep(Duration::from_millis(5));
                    Ok::<_, String>(thread_name())
                })
            } else {
                sup.run(report(), |_| Ok::<_, String>(spin(3)))
            }
        })
        .collect();
    for (i, h) in hs.into_iter().enumerate() {
        let ran_on = wait(h);
        if i % 3 == 0 {
            assert!(ran_on.starts_with("io-"), "fetch ran on {ran_on}");
        } else {
            assert!(ran_on.starts_with("cpu-"), "report ran on {ran_on}");
        }
    }
    assert_eq!(sup.route(&report()).executor(), "cpu");
    sup.shutdown(ShutdownMode::Graceful(BOUND));
}

#[test]
fn blocking_detection_counts_a_task_that_holds_a_tokio_worker_and_not_one_that_yields() {
    let sup = Supervisor::from_toml(POLICY).unwrap();
    let start = Instant::now();
    for _ in 0..3 {
        let hold = sup.run_async(TaskMeta::new("async.hold"), |_| async {
            // Blocks the runtime's worker thread for 30 ms without yielding.
            std::thread::sleep(Duration::from_millis(30));
            Ok::<_, String>(thread_name())
        });
        let polite = sup.run_async(TaskMeta::new("async.yield"), |_| async {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<_, String>(thread_name())
        });
        assert!(wait(hold).starts_with("net"), "ran off tokio");
        assert!(wait(polite).starts_with("net"), "ran off tokio");
    }
    assert!(start.elapsed() < BOUND);
    let learned = sup.learned();
    let get = |n: &str| learned.iter().find(|l| l.name == n).cloned().unwrap();
    assert_eq!(get("async.hold").blocking, 3, "{learned:?}");
    assert_eq!(get("async.yield").blocking, 0, "{learned:?}");
    let why = sup.explain(&TaskMeta::new("async.hold")).to_string();
    assert!(why.contains("3 blocked a worker"), "{why}");
    // The supervisor's stats carry the total, as its ledger carries the ends.
    assert_eq!(sup.stats().blocked, 3, "{:?}", sup.stats());
    sup.shutdown(ShutdownMode::Graceful(BOUND));
}

/// Blocks its thread until `n` tasks wait here at once, or for at most 5 s; true when
/// all `n` met.
fn meet(place: &Arc<(Mutex<usize>, Condvar)>, n: usize) -> bool {
    let (count, cv) = &**place;
    let mut c = count.lock().unwrap();
    *c += 1;
    cv.notify_all();
    let (c, _) = cv
        .wait_timeout_while(c, Duration::from_secs(5), |c| *c < n)
        .unwrap();
    *c >= n
}

#[test]
fn a_name_that_blocks_a_tokio_worker_moves_to_a_thread_and_one_that_yields_stays() {
    let sup = Supervisor::from_toml(POLICY).unwrap();
    let hold = |place: Arc<(Mutex<usize>, Condvar)>, n: usize| {
        sup.run_async(TaskMeta::new("async.hold"), move |_| {
            let place = place.clone();
            async move {
                // Holds the runtime's worker thread for 15 ms without yielding.
                std::thread::sleep(Duration::from_millis(15));
                Ok::<_, String>(meet(&place, n))
            }
        })
    };
    let polite = || {
        sup.run_async(TaskMeta::new("async.yield"), |_| async {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<_, String>(thread_name())
        })
    };
    // min_samples = 4: four runs as tasks of the runtime, each blocking its worker.
    for _ in 0..4 {
        let alone = Arc::new((Mutex::new(0), Condvar::new()));
        assert!(wait(hold(alone, 1)));
        assert!(wait(polite()).starts_with("net"));
    }
    let learned = sup.learned();
    let get = |n: &str| learned.iter().find(|l| l.name == n).cloned().unwrap();
    assert!(get("async.hold").blocks, "{learned:?}");
    assert_eq!(get("async.hold").blocking, 4, "{learned:?}");
    assert!(!get("async.yield").blocks, "{learned:?}");
    let why = sup.explain(&TaskMeta::new("async.hold")).to_string();
    assert!(why.contains("→ blocking (run on a thread)"), "{why}");

    // Now on threads (tokio's blocking pool): three polls that block until all three
    // run at once, which the runtime's two workers alone could not do.
    let together = Arc::new((Mutex::new(0), Condvar::new()));
    let hs: Vec<_> = (0..3).map(|_| hold(together.clone(), 3)).collect();
    for h in hs {
        assert!(wait(h), "the blocking polls did not run side by side");
    }
    assert!(wait(polite()).starts_with("net"));
    let learned = sup.learned();
    let get = |n: &str| learned.iter().find(|l| l.name == n).cloned().unwrap();
    assert!(get("async.hold").blocks, "{learned:?}");
    assert_eq!(
        get("async.hold").blocking,
        4,
        "runs on a thread hold no worker: {learned:?}"
    );
    assert!(!get("async.yield").blocks, "{learned:?}");
    sup.shutdown(ShutdownMode::Graceful(BOUND));
}

#[test]
fn what_was_learned_survives_a_reload_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("learned.json");
    let sup = Supervisor::from_toml(POLICY).unwrap();
    for _ in 0..4 {
        wait(sup.run(report(), |_| Ok::<_, String>(spin(20))));
    }
    assert_eq!(sup.route(&report()).executor(), "cpu");
    sup.reload_str(POLICY, "again.toml").unwrap();
    assert_eq!(sup.route(&report()).executor(), "cpu", "a reload forgot");
    sup.learner().unwrap().save(&saved).unwrap();
    sup.shutdown(ShutdownMode::Graceful(BOUND));

    let next = Supervisor::from_toml(POLICY).unwrap();
    assert_eq!(
        next.route(&report()).executor(),
        "io",
        "a fresh start is blind"
    );
    next.learner().unwrap().load(&saved).unwrap();
    assert_eq!(next.route(&report()).executor(), "cpu");
    next.shutdown(ShutdownMode::Graceful(BOUND));
}

const BASE: &str = r#"[executors.io]
backend = "threads"

[executors.cpu]
backend = "rayon"

[defaults]
executor = "io"

"#;

#[track_caller]
fn check(extra: &str, kind: fn(&ConfigError) -> bool, line: usize, column: usize, fragment: &str) {
    let text = format!("{BASE}{extra}");
    let err = PolicyConfig::parse(&text, "policy.toml").expect_err("must be rejected");
    let shown = err.to_string();
    assert!(kind(&err), "wrong kind: {err:?}");
    assert!(
        shown.starts_with(&format!("policy.toml:{line}:{column}: ")),
        "{shown}"
    );
    assert!(shown.contains(fragment), "{shown:?} lacks {fragment:?}");
}

#[test]
fn the_policy_file_checks_auto_routes_and_settings() {
    let ok = "[[route]]\nmatch = {}\nexecutor = \"auto\"\nauto = { io = \"io\", cpu = \"cpu\" }\n";
    let p = PolicyConfig::parse(&format!("{BASE}{ok}"), "policy.toml").unwrap();
    assert!(p.has_auto());
    assert_eq!(p.routes()[0].route().executor(), "io");
    assert_eq!(p.routes()[0].auto_cpu().unwrap().executor(), "cpu");
    let blocking = p.routes()[0].auto_blocking().unwrap();
    assert_eq!((blocking.executor(), blocking.on_thread), ("io", true));
    let named = ok.replace("cpu = \"cpu\" }", "cpu = \"cpu\", blocking = \"cpu\" }");
    let p = PolicyConfig::parse(&format!("{BASE}{named}"), "policy.toml").unwrap();
    assert_eq!(p.routes()[0].auto_blocking().unwrap().executor(), "cpu");
    check(
        "[[route]]\nmatch = {}\nexecutor = \"auto\"\nauto = { io = \"io\", cpu = \"cpu\", blocking = \"pool\" }\n",
        ConfigError::is_unknown_executor,
        13,
        45,
        "unknown executor \"pool\" in route 1 auto.blocking",
    );

    check(
        "[[route]]\nmatch = {}\nexecutor = \"auto\"\n",
        ConfigError::is_missing_key,
        12,
        12,
        "needs a key \"auto\"",
    );
    check(
        "[[route]]\nmatch = {}\nexecutor = \"cpu\"\nauto = { io = \"io\", cpu = \"cpu\" }\n",
        ConfigError::is_invalid_value,
        13,
        8,
        "needs executor = \"auto\"",
    );
    check(
        "[[route]]\nmatch = {}\nexecutor = \"auto\"\nauto = { io = \"io\", cpu = \"gpu\" }\n",
        ConfigError::is_unknown_executor,
        13,
        27,
        "unknown executor \"gpu\" in route 1 auto.cpu",
    );
    check(
        "[[route]]\nmatch = {}\nexecutor = \"auto\"\nauto = { io = \"io\" }\n",
        ConfigError::is_missing_key,
        13,
        8,
        "missing key \"cpu\"",
    );
    check(
        "[auto]\nmin_samples = 0\n",
        ConfigError::is_invalid_value,
        11,
        15,
        "auto.min_samples must be at least 1",
    );
    check(
        "[auto]\ncpu_above = 0.3\nio_below = 0.5\n",
        ConfigError::is_invalid_value,
        12,
        12,
        "must not be above auto.cpu_above",
    );
    check(
        "[auto]\npoll_threshold = \"soon\"\n",
        ConfigError::is_invalid_value,
        11,
        18,
        "auto.poll_threshold",
    );
}
