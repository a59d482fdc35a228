//! `backend = "sqlite"` in a policy file: a supervisor routes a named task to the queue,
//! a worker started from the same policy runs it, and the route table's limits load.

use executor_core::{Executor, ShutdownMode};
use executor_sqlite::WorkerControl;
use named_tasks::{NamedExt, Task, Tasks};
use std::time::Duration;

static TRIPLE: Task<u32, u32> = Task::new("math.triple", |_, x| Ok(x * 3));

#[test]
fn a_policy_routes_named_tasks_to_the_queue_and_its_workers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.sqlite3");
    let text = format!(
        r#"
        [executors.queue]
        backend = "sqlite"
        path = "{}"
        lease = "2s"
        slots = 2
        attempts = 2
        routes."math.triple" = {{ attempts = 4, backoff = "20ms", concurrency = 2 }}
        [defaults]
        executor = "queue"
        "#,
        db.display()
    );
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, &text).unwrap();
    let mut registry = supervisor::Registry::with_builtins();
    executor_sqlite::register(&mut registry);
    let policy = supervisor::PolicyConfig::parse(&text, "policy.toml").unwrap();
    let sup = supervisor::Supervisor::with_registry(policy, registry).unwrap();
    let handles: Vec<_> = (0..5).map(|i| sup.call(&TRIPLE, i)).collect();
    let control = WorkerControl::new();
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            executor_sqlite::run_policy_worker(
                &policy_path,
                None,
                Tasks::new().with(&TRIPLE),
                &control,
            )
        });
        for (i, h) in handles.into_iter().enumerate() {
            let got = match h.wait_timeout(Duration::from_secs(30)) {
                Ok(r) => r.unwrap(),
                Err(_) => panic!("task {i} did not finish"),
            };
            assert_eq!(got, i as u32 * 3);
        }
        control.drain();
        worker.join().unwrap().unwrap();
    });
    sup.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
}

#[test]
fn a_bad_route_table_is_a_config_error() {
    let text = r#"
        [executors.queue]
        backend = "sqlite"
        routes."x" = { attempts = 0 }
        [defaults]
        executor = "queue"
    "#;
    let mut registry = supervisor::Registry::with_builtins();
    executor_sqlite::register(&mut registry);
    let policy = supervisor::PolicyConfig::parse(text, "policy.toml").unwrap();
    let err = supervisor::Supervisor::with_registry(policy, registry).unwrap_err();
    assert!(
        err.to_string().contains("attempts must be at least 1"),
        "{err}"
    );
}
