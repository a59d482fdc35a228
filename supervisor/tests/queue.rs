//! The queue mode: producers push, the supervisor thread routes, failures are recorded,
//! and close drains everything pushed before it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use executor_core::{ShutdownMode, TaskMeta};
use supervisor::{Supervisor, TaskQueue};

const POLICY: &str = r#"
[executors.io]
backend = "threads"
workers = 5

[executors.cpu]
backend = "rayon"
threads = 2

[defaults]
executor = "io"

[[route]]
match = { tags = ["cpu"] }
executor = "cpu"
"#;

#[test]
fn producers_push_the_queue_routes_records_and_drains() {
    let sup = Supervisor::from_toml(POLICY).unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    let queue = TaskQueue::with_observer(sup.clone(), move |f| {
        l.lock()
            .unwrap()
            .push(format!("{} on {}", f.name, f.executor));
    });
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let producer = queue.producer();
            std::thread::spawn(move || {
                for i in 0..5u64 {
                    producer.push(TaskMeta::new(format!("download.{p}.{i}")), move |_| {
                        std::thread::sleep(Duration::from_millis(30));
                        Ok::<_, String>(i)
                    });
                }
                producer.push(TaskMeta::new("sum").with_tag("cpu"), |_| {
                    Ok::<_, String>((0..1_000u64).map(|i| i * i).sum())
                });
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let producer = queue.producer();
    producer.push(TaskMeta::new("broken"), |_| {
        Err::<u64, _>("disk on fire".to_owned())
    });
    let report = queue.close();

    // Close drained everything pushed before it, each routed by the policy.
    assert_eq!(report.finished.len(), 3 * 6 + 1);
    assert_eq!(lines.lock().unwrap().len(), 19);
    let by = report.by_executor();
    assert_eq!(by["io"], (15, 1));
    assert_eq!(by["cpu"], (3, 0));
    for f in &report.finished {
        if f.name == "sum" {
            assert_eq!(f.executor, "cpu");
            assert_eq!(*f.result.as_ref().unwrap(), 332_833_500);
        }
    }
    let failures: Vec<_> = report.failures().collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].name, "broken");
    assert!(
        failures[0]
            .result
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("disk on fire")
    );

    // After the close nothing more runs.
    let late = producer.push(TaskMeta::new("late"), |_| Ok::<_, String>(0));
    let ledger = sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_secs(10)));
    assert!(ledger.is_balanced(), "{ledger}");
    assert_eq!(ledger.counts.submitted, 19);
    assert!(ledger.never_ran.iter().all(|r| r.id != late));
}

/// Each task reports the executor it ran on (from its thread's name); the queue's record
/// must name the same one, even while reloads flip the route between two executors.
#[test]
fn the_queue_names_the_executor_a_task_ran_on_across_reloads() {
    let policy = |exec: &str| {
        format!(
            "[executors.alpha]\nbackend = \"threads\"\nworkers = 1\n\n\
             [executors.beta]\nbackend = \"threads\"\nworkers = 1\n\n\
             [defaults]\nexecutor = \"{exec}\"\n"
        )
    };
    let sup = Supervisor::from_toml(&policy("alpha")).unwrap();
    let queue = TaskQueue::new(sup.clone());
    let producer = queue.producer();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (sup, done) = (sup.clone(), done.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let exec = if i.is_multiple_of(2) { "beta" } else { "alpha" };
                sup.reload_str(&policy(exec), "flip.toml").unwrap();
                i += 1;
                std::thread::yield_now();
            }
        })
    };
    for _ in 0..3000 {
        producer.push(TaskMeta::new("where"), |_| {
            let name = std::thread::current().name().unwrap_or("?").to_owned();
            Ok::<_, String>(
                name.rsplit_once('-')
                    .map_or(name.clone(), |(e, _)| e.to_owned()),
            )
        });
    }
    let report = queue.close();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    flipper.join().unwrap();
    assert_eq!(report.finished.len(), 3000);
    let wrong: Vec<_> = report
        .finished
        .iter()
        .filter(|f| f.result.as_deref().ok() != Some(f.executor.as_str()))
        .map(|f| (f.executor.clone(), f.result.as_ref().ok().cloned()))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of 3000 records name the wrong executor, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_secs(10)));
}
