//! The shared conformance suite, run on the tokio backend (two worker threads), plus
//! tokio's own promise: futures run on the runtime and may use its timers and sockets.

use executor_core::{Executor, ExecutorExt, ShutdownMode, TaskMeta};
use executor_tokio::TokioExecutor;
use std::time::Duration;

executor_core::conformance_tests!(|| Arc::new(
    TokioExecutor::builder("conformance")
        .worker_threads(2)
        .build()
        .expect("a runtime starts")
));

#[test]
fn futures_use_tokio_timers_and_sockets() {
    let net = TokioExecutor::builder("net")
        .worker_threads(2)
        .build()
        .unwrap();
    let h = net.run_async(TaskMeta::new("echo"), |_ctx| async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await?;
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await?;
            s.write_all(&buf).await?;
            Ok::<_, std::io::Error>(())
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut c = tokio::net::TcpStream::connect(addr).await?;
        c.write_all(b"hello").await?;
        let mut back = [0u8; 5];
        c.read_exact(&mut back).await?;
        server.await.map_err(std::io::Error::other)??;
        Ok::<_, std::io::Error>(back)
    });
    assert_eq!(
        &executor_core::testing::wait_bounded(h, "echo").unwrap(),
        b"hello"
    );
    net.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
}

#[test]
fn wraps_a_runtime_it_does_not_own() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let exec = TokioExecutor::from_handle("borrowed", rt.handle().clone());
    let h = exec.submit_async(async { 5 });
    assert_eq!(
        executor_core::testing::wait_bounded(h, "borrowed").unwrap(),
        5
    );
    let report = exec.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
    assert!(report.not_started.is_empty());
    // The runtime itself still runs.
    assert_eq!(rt.block_on(async { 7 }), 7);
}
