//! Throughput of the NATS backend against a raw async-nats JetStream loop, in one run on
//! a `nats-server -js` of its own: durable no-op jobs per second end to end (enqueue,
//! run, result) and p50/p99 enqueue-to-start. `cargo run --release -p executor-nats
//! --example bench -- [JOBS]`.

use executor_core::{Executor, ShutdownMode};
use executor_nats::{NatsExecutor, Worker};
use futures::StreamExt;
use named_tasks::{Task, Tasks};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();
static STARTS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static NOOP: Task<u64, ()> = Task::new("bench.noop", |_ctx, sent| {
    let now = EPOCH.get().unwrap().elapsed().as_nanos() as u64;
    STARTS.lock().unwrap().push(now.saturating_sub(sent));
    Ok(())
});

fn main() {
    let jobs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    EPOCH.get_or_init(Instant::now);
    let store = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server (Debian: apt-get install nats-server)");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("nats://127.0.0.1:{port}");

    // Raw: publish all (acks awaited in a window), pull and ack all.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let raw = rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        let stream = js
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: "raw".into(),
                subjects: vec!["raw.>".into()],
                retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .unwrap();
        let consumer = stream
            .get_or_create_consumer(
                "raw",
                async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some("raw".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let t0 = Instant::now();
        let mut acks = futures::stream::FuturesUnordered::new();
        for i in 0..jobs {
            acks.push(
                js.publish("raw.job", format!("{i}").into())
                    .await
                    .unwrap()
                    .into_future(),
            );
            if acks.len() >= 256 {
                acks.next().await.unwrap().unwrap();
            }
        }
        while let Some(a) = acks.next().await {
            a.unwrap();
        }
        let mut msgs = consumer.messages().await.unwrap();
        for _ in 0..jobs {
            msgs.next().await.unwrap().unwrap().ack().await.unwrap();
        }
        jobs as f64 / t0.elapsed().as_secs_f64()
    });

    // End to end through the backend: one worker (4 tasks at once), 256 calls in flight.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let wurl = url.clone();
    let worker = std::thread::spawn(move || {
        Worker::builder(Tasks::new().with(&NOOP))
            .url(wurl)
            .parallel(16)
            .build()
            .run(async move {
                let _ = rx.await;
            })
            .unwrap()
    });
    let exec = NatsExecutor::builder("nats")
        .url(&url)
        .in_flight(256)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..jobs)
        .map(|_| NOOP.call(&exec, EPOCH.get().unwrap().elapsed().as_nanos() as u64))
        .collect();
    for h in handles {
        h.wait().unwrap();
    }
    let e2e = jobs as f64 / t0.elapsed().as_secs_f64();
    exec.shutdown(ShutdownMode::Graceful(Duration::from_secs(10)));
    let _ = tx.send(());
    worker.join().unwrap();
    let mut starts = STARTS.lock().unwrap().clone();
    starts.sort_unstable();
    let pct = |p: f64| starts[((starts.len() - 1) as f64 * p) as usize] as f64 / 1e6;
    println!("jobs: {jobs}");
    println!("raw JetStream publish/pull/ack: {raw:.0} jobs/s");
    println!(
        "nats backend end to end:       {e2e:.0} jobs/s ({:.2} of raw)",
        e2e / raw
    );
    println!(
        "enqueue-to-start: p50 {:.2} ms, p99 {:.2} ms",
        pct(0.5),
        pct(0.99)
    );
    let _ = server.kill();
    let _ = server.wait();
}
