//! A policy written in code routes every task, and its `observe` hears once of every task
//! that ends, with the status, the attempts and the CPU time the attempts used.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use executor_core::{
    ExecutorExt, InlineExecutor, Outcome, Policy, Route, ShutdownMode, Status, TaskMeta,
};
use executor_threads::ThreadsExecutor;
use executor_tokio::TokioExecutor;
use supervisor::{RetryPolicy, Supervisor};

/// Routes by tag; records every outcome by task name.
struct Recorder {
    work: Route,
    flaky: Route,
    nowhere: Route,
    net: Route,
    seen: Mutex<Vec<(String, Outcome)>>,
}

impl Recorder {
    fn new() -> Arc<Self> {
        Arc::new(Recorder {
            work: Route::new("work", "plain"),
            flaky: Route::new("work", "flaky"),
            nowhere: Route::new("gpu", "plain"),
            net: Route::new("net", "plain"),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn outcome(&self, name: &str) -> Outcome {
        let seen = self.seen.lock().unwrap();
        let all: Vec<_> = seen.iter().filter(|(n, _)| n == name).collect();
        assert_eq!(all.len(), 1, "observe must hear once of {name}: {seen:?}");
        all[0].1
    }
}

impl Policy for Recorder {
    fn route(&self, meta: &TaskMeta) -> &Route {
        if meta.has_tag("flaky") {
            &self.flaky
        } else if meta.has_tag("gpu") {
            &self.nowhere
        } else if meta.has_tag("net") {
            &self.net
        } else {
            &self.work
        }
    }

    fn observe(&self, meta: &TaskMeta, outcome: &Outcome) {
        self.seen
            .lock()
            .unwrap()
            .push((meta.name().to_owned(), *outcome));
    }

    fn wants_cpu_time(&self) -> bool {
        true
    }
}

fn spin(rounds: u64) -> u64 {
    (0..rounds).fold(1u64, |x, i| {
        std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i))
    })
}

#[test]
fn a_code_policy_routes_and_observes_every_task() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let policy = Recorder::new();
    let sup = Supervisor::builder()
        .executor(
            "work",
            Arc::new(ThreadsExecutor::builder("work").workers(2).build().unwrap()),
        )
        .executor(
            "net",
            Arc::new(TokioExecutor::from_handle("net", runtime.handle().clone())),
        )
        .shared_policy(policy.clone())
        .route_layer(
            "flaky",
            RetryPolicy::new(3, Duration::from_millis(1), Duration::from_millis(2), false),
        )
        .build()
        .unwrap();

    let spun = sup.run_once(TaskMeta::new("spin"), |_| {
        Ok::<_, std::io::Error>(spin(20_000_000))
    });
    let slept = sup.run_once(TaskMeta::new("sleep"), |_| {
        std::thread::sleep(Duration::from_millis(30));
        Ok::<_, std::io::Error>(0)
    });
    let flaky = sup.run(TaskMeta::new("flaky").with_tag("flaky"), |ctx| {
        if ctx.attempt() < 3 {
            Err("not yet")
        } else {
            Ok(ctx.attempt())
        }
    });
    let bad = sup.run_once(TaskMeta::new("bad"), |_| Err::<u32, _>("no"));
    let lost = sup.run_once(TaskMeta::new("lost").with_tag("gpu"), |_| {
        Ok::<_, std::io::Error>(1)
    });
    let polled = sup.run_async(TaskMeta::new("polled").with_tag("net"), |_| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, std::io::Error>(spin(1_000))
    });

    spun.wait().unwrap();
    slept.wait().unwrap();
    assert_eq!(flaky.wait().unwrap(), 3);
    assert!(bad.wait().unwrap_err().is_failed());
    let err = lost.wait().unwrap_err();
    assert!(err.is_rejected(), "a route to an unknown executor: {err}");
    polled.wait().unwrap();

    // Observers run before a handle's result is visible, so every outcome is in.
    let spin_o = policy.outcome("spin");
    let sleep_o = policy.outcome("sleep");
    assert_eq!((spin_o.status(), spin_o.attempts()), (Status::Completed, 1));
    let (spin_cpu, sleep_cpu) = (spin_o.cpu_time().unwrap(), sleep_o.cpu_time().unwrap());
    assert!(
        spin_cpu > sleep_cpu * 10,
        "spinning used {spin_cpu:?} of CPU, sleeping {sleep_cpu:?}"
    );
    let flaky_o = policy.outcome("flaky");
    assert_eq!(
        (flaky_o.status(), flaky_o.attempts()),
        (Status::Completed, 3)
    );
    assert_eq!(policy.outcome("bad").status(), Status::Failed);
    let lost_o = policy.outcome("lost");
    assert_eq!((lost_o.status(), lost_o.attempts()), (Status::Rejected, 0));
    let polled_o = policy.outcome("polled");
    assert_eq!(polled_o.status(), Status::Completed);
    assert!(
        polled_o.cpu_time().is_some(),
        "async bodies are measured over their polls"
    );

    let ledger = sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_secs(10)));
    assert!(ledger.is_balanced(), "{ledger}");
    assert_eq!(policy.seen.lock().unwrap().len(), 6);
    // The borrowed runtime outlives the supervisor.
    assert_eq!(runtime.block_on(async { 1 + 1 }), 2);
}

#[test]
fn the_policy_file_can_route_under_a_code_policy_and_keep_its_layers() {
    // A code policy that sends everything through the file's `route[1]` rule: the file's
    // retries apply, on an executor given in code.
    struct Through(Route);
    impl Policy for Through {
        fn route(&self, _: &TaskMeta) -> &Route {
            &self.0
        }
    }
    let config = supervisor::PolicyConfig::parse(
        r#"
        [executors.io]
        backend = "threads"
        workers = 1
        [defaults]
        executor = "io"
        [[route]]
        match = { name = "x" }
        retries = { max = 2, backoff = "1ms", jitter = false }
        "#,
        "mixed.toml",
    )
    .unwrap();
    let sup = Supervisor::builder()
        .config(config)
        .executor("here", Arc::new(InlineExecutor::new("here")))
        .policy(Through(Route::new("here", "route[1]")))
        .build()
        .unwrap();
    let h = sup.run(TaskMeta::new("anything"), |ctx| {
        if ctx.attempt() < 3 {
            Err("again")
        } else {
            Ok(ctx.attempt())
        }
    });
    assert_eq!(h.wait().unwrap(), 3);
    assert!(
        sup.explain(&TaskMeta::new("y"))
            .to_string()
            .contains("policy in code")
    );
    sup.shutdown_ledger(ShutdownMode::Now);
}
