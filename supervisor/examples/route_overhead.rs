//! What routing through the supervisor adds per task, with the executor's own cost taken
//! out: both sides run on an inline executor, so the difference is the supervisor's
//! routing (first-match over the rules) and its ledger bookkeeping — and, on a route with
//! a timeout and retries, its layers (a deadline timer per task, a retry hook).
//!
//! `cargo run --release -p supervisor --example route_overhead [TASKS] [CASE]`
//!
//! With a CASE (`direct`, `routed`, `direct_meta`, `routed_meta`, `direct_layered`,
//! `routed_layered`) it runs only that case, once: for counting instructions under
//! `valgrind --tool=callgrind` at two task counts, whose difference is the cost per task.

use std::sync::Arc;
use std::time::Instant;

use executor_core::{Executor, ExecutorExt, InlineExecutor, ShutdownMode, TaskMeta};
use supervisor::{BackendOptions, ExecutorPlan, PolicyConfig, Registry, Supervisor};

const POLICY: &str = r#"
[executors.here]
backend = "inline"

[executors.there]
backend = "inline"

[defaults]
executor = "here"

[[route]]
match = { tags = ["cpu"] }
executor = "there"

[[route]]
match = { name = "scrape.*" }
executor = "there"

[[route]]
match = { name = "job.{mail,hook}" }
executor = "there"

[[route]]
match = { name = "exact.name", tags = ["x"] }
executor = "there"

[[route]]
match = { name = "layered.*" }
executor = "there"
timeout = "30s"
retries = { max = 2, backoff = "1ms" }
"#;

/// The case to run alone, if one was named.
fn only() -> Option<String> {
    std::env::args().nth(2)
}

fn per_task(n: usize, f: impl Fn(usize)) -> f64 {
    let mut best = f64::MAX;
    let runs = if only().is_some() { 1 } else { 5 };
    for _ in 0..runs {
        let t = Instant::now();
        for i in 0..n {
            f(i);
        }
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

/// Runs case `name` unless another was named alone (then it reports 0).
fn run_case(name: &str, n: usize, f: impl Fn(usize)) -> f64 {
    match only() {
        Some(case) if case != name => 0.0,
        _ => per_task(n, f),
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    let mut registry = Registry::new();
    registry.register("inline", |o: &BackendOptions| {
        let name = o.executor().to_owned();
        let plan: ExecutorPlan =
            Box::new(move || Ok(Arc::new(InlineExecutor::new(name)) as Arc<dyn Executor>));
        Ok(plan)
    });
    let sup =
        Supervisor::with_registry(PolicyConfig::parse(POLICY, "bench.toml").unwrap(), registry)
            .unwrap();
    let inline = InlineExecutor::new("inline");

    let direct = run_case("direct", n, |i| {
        std::hint::black_box(inline.submit(move || i).wait().unwrap());
    });
    let routed = run_case("routed", n, |i| {
        std::hint::black_box(sup.submit(move || i).wait().unwrap());
    });
    let meta = TaskMeta::new("plain.task").with_key("k");
    let direct_meta = run_case("direct_meta", n, |i| {
        let h = inline.run(meta.clone(), move |_| Ok::<_, std::io::Error>(i));
        std::hint::black_box(h.wait().unwrap());
    });
    let routed_meta = run_case("routed_meta", n, |i| {
        let h = sup.run(meta.clone(), move |_| Ok::<_, std::io::Error>(i));
        std::hint::black_box(h.wait().unwrap());
    });
    let layered_meta = TaskMeta::new("layered.task");
    let direct_layered = run_case("direct_layered", n, |i| {
        let h = inline.run(layered_meta.clone(), move |_| Ok::<_, std::io::Error>(i));
        std::hint::black_box(h.wait().unwrap());
    });
    let routed_layered = run_case("routed_layered", n, |i| {
        let h = sup.run(layered_meta.clone(), move |_| Ok::<_, std::io::Error>(i));
        std::hint::black_box(h.wait().unwrap());
    });
    println!("tasks per run: {n} (best of 5, ns per task, submit + wait on one thread)");
    println!(
        "submit, no meta:   direct {direct:7.1}   supervisor {routed:7.1}   added {:6.1}",
        routed - direct
    );
    println!(
        "run, meta past 5 rules: direct {direct_meta:7.1}   supervisor {routed_meta:7.1}   added {:6.1}",
        routed_meta - direct_meta
    );
    println!(
        "run, layered route (timeout + retries): direct {direct_layered:7.1}   supervisor {routed_layered:7.1}   added {:6.1}",
        routed_layered - direct_layered
    );
    let ledger = sup.shutdown_ledger(ShutdownMode::Now);
    assert!(ledger.is_balanced());
}
