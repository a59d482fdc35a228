//! A layer of your own, added without editing the supervisor: a circuit breaker. After
//! `threshold` failed tasks in a row on a route, it refuses that route's tasks at once
//! (they resolve as rejected) until `cool_down` has passed; then one task goes through as
//! a probe, and a success closes the circuit again.
//!
//! `cargo run -p supervisor --example circuit_breaker`; its tests run with
//! `cargo test -p supervisor`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use executor_core::{ExecutorExt, Job, ShutdownMode, Status, SubmitError, TaskError, TaskMeta};
use supervisor::{Layer, LayerContext, PolicyConfig, Service, Supervisor};

/// The layer: one breaker per route it is put on.
struct CircuitBreaker {
    threshold: u32,
    cool_down: Duration,
}

#[derive(Default)]
struct State {
    failures_in_a_row: u32,
    open_until: Option<Instant>,
    /// While the circuit is half open: a probe is out, hold the rest back.
    probing: bool,
}

struct Breaker {
    inner: Arc<dyn Service>,
    rule: String,
    threshold: u32,
    cool_down: Duration,
    state: Arc<Mutex<State>>,
}

impl Layer for CircuitBreaker {
    fn layer(&self, inner: Arc<dyn Service>, cx: &LayerContext<'_>) -> Arc<dyn Service> {
        Arc::new(Breaker {
            inner,
            rule: cx.route().rule().to_owned(),
            threshold: self.threshold,
            cool_down: self.cool_down,
            state: Arc::default(),
        })
    }
}

impl Service for Breaker {
    fn dispatch(&self, job: Job) -> Result<(), SubmitError> {
        {
            let mut s = self.state.lock().unwrap();
            if let Some(until) = s.open_until {
                if Instant::now() < until || s.probing {
                    drop(s);
                    job.resolve(TaskError::rejected(format!(
                        "circuit open on route {}",
                        self.rule
                    )));
                    return Ok(());
                }
                s.probing = true;
            }
        }
        // Hear how the task ends. Layers added in code sit outside the policy file's, so
        // this is after the file's retries; a layer that wants every attempt installs
        // `Job::on_attempt_end` instead. Other layers' hooks still run either way.
        let (state, threshold, cool_down) = (self.state.clone(), self.threshold, self.cool_down);
        job.observe(move |status| {
            let mut s = state.lock().unwrap();
            s.probing = false;
            match status {
                Status::Completed => *s = State::default(),
                Status::Failed | Status::Panicked | Status::TimedOut => {
                    s.failures_in_a_row += 1;
                    if s.failures_in_a_row >= threshold {
                        s.open_until = Some(Instant::now() + cool_down);
                    }
                }
                _ => {}
            }
        });
        self.inner.dispatch(job)
    }
}

const POLICY: &str = r#"
[executors.io]
backend = "threads"
workers = 2

[defaults]
executor = "io"

[[route]]
match = { name = "flaky.*" }
retries = { max = 1, backoff = "1ms", jitter = false }
"#;

fn supervisor(cool_down: Duration) -> Arc<Supervisor> {
    Supervisor::builder()
        .config(PolicyConfig::parse(POLICY, "breaker.toml").unwrap())
        // Only on the flaky route; `.layer(..)` would put it on every route.
        .route_layer(
            "route[1]",
            CircuitBreaker {
                threshold: 3,
                cool_down,
            },
        )
        .build()
        .unwrap()
}

fn main() {
    let sup = supervisor(Duration::from_millis(50));
    for i in 0..6 {
        let h = sup.run(TaskMeta::new("flaky.call"), |_| Err::<(), _>("down"));
        println!("flaky call {i}: {}", h.wait().unwrap_err());
    }
    let fine = sup.submit(|| "other routes are not affected");
    println!("{}", fine.wait().unwrap());
    std::thread::sleep(Duration::from_millis(60));
    let probe = sup.run(TaskMeta::new("flaky.call"), |_| {
        Ok::<_, std::io::Error>("back up")
    });
    println!("after the cool-down, a probe: {}", probe.wait().unwrap());
    let after = sup.run(TaskMeta::new("flaky.call"), |_| {
        Ok::<_, std::io::Error>("closed")
    });
    println!("and the circuit is {}", after.wait().unwrap());
    println!(
        "{}",
        sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_secs(5)))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_failures_in_a_row_and_spares_other_routes() {
        // A cool-down no test outlives: the circuit stays open.
        let sup = supervisor(Duration::from_secs(3600));
        // Three tasks fail (each after its retry): the circuit opens.
        for name in ["flaky.a", "flaky.b", "flaky.c"] {
            let h = sup.run(TaskMeta::new(name), |_| Err::<(), _>("down"));
            assert!(h.wait().unwrap_err().is_failed());
        }
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let fourth = sup.run(TaskMeta::new("flaky.d"), move |_| {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        });
        assert!(fourth.wait().unwrap_err().is_rejected());
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "an open circuit runs nothing"
        );
        // Another route is not behind the breaker.
        assert_eq!(sup.submit(|| 5).wait().unwrap(), 5);
        let ledger = sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_secs(10)));
        assert!(ledger.is_balanced(), "{ledger}");
        assert_eq!(
            (ledger.counts.failed, ledger.counts.rejected),
            (3, 1),
            "{ledger}"
        );
    }

    #[test]
    fn a_successful_probe_closes_the_circuit() {
        let sup = supervisor(Duration::ZERO);
        for _ in 0..3 {
            let h = sup.run(TaskMeta::new("flaky.x"), |_| Err::<(), _>("down"));
            let _ = h.wait();
        }
        // With no cool-down the next task is the probe; it succeeds and closes it.
        let probe = sup.run(TaskMeta::new("flaky.x"), |_| Ok::<_, std::io::Error>(1));
        assert_eq!(probe.wait().unwrap(), 1);
        let next = sup.run(TaskMeta::new("flaky.x"), |_| Ok::<_, std::io::Error>(2));
        assert_eq!(next.wait().unwrap(), 2);
        sup.shutdown_ledger(ShutdownMode::Now);
    }
}
