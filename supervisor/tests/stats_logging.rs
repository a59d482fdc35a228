//! Per-executor stats do not depend on logging: the same run with a tracing subscriber
//! and without one gives identical counts, and a failed task counts as failed (once, a
//! wrapper job around layered tasks returned `Ok(())` and was used only when a span was
//! enabled or a limit applied, so failures turned into completions).

use std::time::Duration;

use executor_core::{ExecutorExt, ShutdownMode, TaskHandle, TaskMeta};
use supervisor::Supervisor;

const POLICY: &str = r#"
[executors.io]
backend = "threads"
workers = 2

[executors.cpu]
backend = "rayon"
threads = 2

[defaults]
executor = "io"
timeout = "30s"

[[route]]
match = { name = "limited.*" }
executor = "cpu"
limit = { per = "key", concurrency = 1 }
"#;

/// (submitted, completed, failed, panicked) per executor after a run of 5 good and 1 bad
/// task on the layered default route, and 3 good, 1 bad, 1 panicking on the limited one.
fn run() -> Vec<(String, [u64; 4])> {
    let sup = Supervisor::from_toml(POLICY).unwrap();
    let mut handles: Vec<TaskHandle<u32>> = Vec::new();
    for i in 0..6u32 {
        handles.push(sup.run_once(TaskMeta::new("io.task"), move |_| {
            if i == 3 { Err("bad input") } else { Ok(i) }
        }));
    }
    for i in 0..5u32 {
        let meta = TaskMeta::new("limited.task").with_key("k");
        handles.push(sup.run_once(meta, move |_| match i {
            1 => Err("bad input"),
            2 => panic!("planned panic"),
            _ => Ok(i),
        }));
    }
    let failed = handles
        .into_iter()
        .map(|h| h.wait())
        .filter(Result::is_err)
        .count();
    assert_eq!(failed, 3);
    let ledger = sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_secs(10)));
    assert!(ledger.is_balanced(), "{ledger}");
    sup.executor_stats()
        .into_iter()
        .map(|(name, s)| (name, [s.submitted, s.completed, s.failed, s.panicked]))
        .collect()
}

#[test]
fn stats_are_the_same_with_and_without_a_subscriber() {
    let plain = run();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let logged = tracing::subscriber::with_default(subscriber, run);
    assert_eq!(plain, logged, "stats changed with a subscriber installed");
    let want = vec![
        ("cpu".to_owned(), [5, 3, 1, 1]),
        ("io".to_owned(), [6, 5, 1, 0]),
    ];
    assert_eq!(plain, want, "failures must count as failed");
}
