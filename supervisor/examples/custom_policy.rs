//! A policy written in code: it learns from each task's outcome whether a kind of task is
//! CPU-bound (it burns more than a millisecond of CPU time per task) and moves it to the
//! CPU pool, and sends network tasks to a tokio executor over the application's own
//! runtime.
//!
//! `cargo run -p supervisor --example custom_policy`

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use executor_core::{
    Executor, ExecutorExt, Outcome, Policy, Route, ShutdownMode, TaskHandle, TaskMeta,
};
use executor_rayon::RayonExecutor;
use executor_threads::ThreadsExecutor;
use executor_tokio::TokioExecutor;
use supervisor::{RetryPolicy, Supervisor};

/// What the policy has seen of one task name: CPU time and wall time, summed.
#[derive(Default, Clone, Copy)]
struct Seen {
    cpu: Duration,
    wall: Duration,
    tasks: u32,
}

/// Routes `net`-tagged tasks to "net"; other tasks to "io" until their kind proves
/// CPU-bound (over 1 ms of CPU time per task, over at least 3 tasks), then to "cpu".
/// (Wall time counts from submission, queueing included, so CPU time is the better clue.)
struct Learning {
    io: Route,
    cpu: Route,
    net: Route,
    seen: Mutex<HashMap<String, Seen>>,
}

impl Learning {
    fn new() -> Self {
        Learning {
            io: Route::new("io", "learning"),
            cpu: Route::new("cpu", "learning"),
            net: Route::new("net", "net"),
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn is_cpu_bound(&self, name: &str) -> bool {
        let seen = self.seen.lock().unwrap();
        seen.get(name)
            .is_some_and(|s| s.tasks >= 3 && s.cpu > Duration::from_millis(1) * s.tasks)
    }
}

impl Policy for Learning {
    fn route(&self, meta: &TaskMeta) -> &Route {
        if meta.has_tag("net") {
            &self.net
        } else if self.is_cpu_bound(meta.name()) {
            &self.cpu
        } else {
            &self.io
        }
    }

    fn observe(&self, meta: &TaskMeta, outcome: &Outcome) {
        let mut seen = self.seen.lock().unwrap();
        let s = seen.entry(meta.name().to_owned()).or_default();
        s.cpu += outcome.cpu_time().unwrap_or_default();
        s.wall += outcome.elapsed();
        s.tasks += 1;
    }

    fn wants_cpu_time(&self) -> bool {
        true
    }
}

/// About 5 ms of arithmetic.
fn crunch(seed: u64) -> u64 {
    (0..3_000_000u64).fold(seed, |x, i| {
        std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i))
    })
}

fn thread() -> String {
    std::thread::current().name().unwrap_or("?").to_owned()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The application's own runtime; the supervisor borrows it for "net".
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let policy = Arc::new(Learning::new());
    let sup = Supervisor::builder()
        .executor(
            "io",
            Arc::new(ThreadsExecutor::builder("io").workers(4).build()?),
        )
        .executor(
            "cpu",
            Arc::new(RayonExecutor::builder("cpu").threads(2).build()?),
        )
        .executor(
            "net",
            Arc::new(TokioExecutor::from_handle("net", runtime.handle().clone())),
        )
        .shared_policy(policy.clone())
        // Only the "net" routes retry.
        .route_layer(
            "net",
            RetryPolicy::new(
                2,
                Duration::from_millis(10),
                Duration::from_millis(50),
                true,
            ),
        )
        .build()?;

    for wave in 1..=3 {
        let crunches: Vec<TaskHandle<String>> = (0..4)
            .map(|i| {
                sup.run_once(TaskMeta::new("crunch"), move |_| {
                    std::hint::black_box(crunch(i));
                    Ok::<_, std::io::Error>(thread())
                })
            })
            .collect();
        let naps: Vec<TaskHandle<String>> = (0..4)
            .map(|_| {
                sup.run_once(TaskMeta::new("nap"), |_| {
                    std::thread::sleep(Duration::from_millis(5));
                    Ok::<_, std::io::Error>(thread())
                })
            })
            .collect();
        let ran_on = |hs: Vec<TaskHandle<String>>| -> Vec<String> {
            hs.into_iter().map(|h| h.wait().unwrap()).collect()
        };
        println!("wave {wave}: crunch ran on {:?}", ran_on(crunches));
        println!("wave {wave}: nap ran on    {:?}", ran_on(naps));
    }

    let fetch = sup.run_async(TaskMeta::new("fetch").with_tag("net"), |ctx| async move {
        if ctx.attempt() == 1 {
            return Err("first attempt fails, the route's retry layer runs it again");
        }
        Ok(format!("attempt {} on {}", ctx.attempt(), thread()))
    });
    println!("fetch: {}", fetch.wait()?);

    for (name, s) in policy.seen.lock().unwrap().iter() {
        println!(
            "learnt: {name:<6} {} tasks, CPU {:>5.1} ms of {:>6.1} ms wall",
            s.tasks,
            s.cpu.as_secs_f64() * 1e3,
            s.wall.as_secs_f64() * 1e3
        );
    }
    let ledger = sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_secs(5)));
    println!("{ledger}");
    assert!(ledger.is_balanced());
    // The application's runtime is still there.
    assert_eq!(runtime.block_on(async { 7 }), 7);
    let _: &dyn Executor = &*sup;
    Ok(())
}
