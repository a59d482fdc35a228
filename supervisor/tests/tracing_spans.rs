//! With a tracing subscriber on, each attempt runs inside a `task` span naming the task,
//! its id, executor, rule and attempt, and retries are logged with their attempt numbers.
//! (Its own test binary: the subscriber is process-wide.)

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use executor_core::{ExecutorExt, ShutdownMode, TaskMeta};
use supervisor::Supervisor;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn attempts_run_in_spans_and_retries_are_logged() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    let sup = Supervisor::from_toml(
        r#"
[executors.io]
backend = "threads"
workers = 2
[defaults]
executor = "io"
retries = { max = 2, backoff = "1ms" }
"#,
    )
    .unwrap();
    let h = sup.run(TaskMeta::new("flaky.fetch"), |ctx| {
        tracing::info!("working");
        if ctx.attempt() < 2 {
            Err("try again")
        } else {
            Ok(())
        }
    });
    h.wait().unwrap();
    sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_secs(10)));

    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let working: Vec<&str> = log.lines().filter(|l| l.contains("working")).collect();
    assert_eq!(working.len(), 2, "{log}");
    for (line, attempt) in working.iter().zip([1, 2]) {
        assert!(line.contains("name=\"flaky.fetch\""), "{line}");
        assert!(line.contains("executor=\"io\""), "{line}");
        assert!(line.contains(&format!("attempt={attempt}")), "{line}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("retrying") && l.contains("next_attempt=2")),
        "{log}"
    );
}
