//! Micro benchmark of the per-task cost on one thread (inline executor).
use executor_core::{ExecutorExt, InlineExecutor};
use std::time::Instant;
fn main() {
    let exec = InlineExecutor::new("inline");
    for _ in 0..3 {
        let n: usize = std::env::args()
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or(1_000_000);
        let t = Instant::now();
        for i in 0..n {
            let h = exec.submit(move || i);
            std::hint::black_box(h.wait().unwrap());
        }
        println!(
            "inline submit+wait: {:.0} ns/task",
            t.elapsed().as_nanos() as f64 / n as f64
        );
        let t = Instant::now();
        for i in 0..n {
            let b: Box<dyn FnOnce() -> usize + Send> = Box::new(move || i);
            std::hint::black_box(b());
        }
        println!(
            "boxed closure baseline: {:.0} ns/task",
            t.elapsed().as_nanos() as f64 / n as f64
        );
    }
}
