//! [`LocalServer`]: a `nats-server -js` of the caller's own on a free loopback port, for
//! tests, benchmarks and demos that must not depend on a shared server.

use crate::NatsError;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to print when `nats-server` is missing.
pub const INSTALL_HINT: &str = "nats-server is not installed (Debian: apt-get install nats-server)";

/// A `nats-server -js` child process on `127.0.0.1` and a free port, storing its streams
/// in a directory the caller owns. Killed (and waited for) on drop.
///
/// ```no_run
/// let dir = std::env::temp_dir().join("my-nats-store");
/// let server = executor_nats::LocalServer::start(&dir)?;
/// let exec = executor_nats::NatsExecutor::builder("jobs").url(server.url()).build()?;
/// # Ok::<(), executor_nats::NatsError>(())
/// ```
#[derive(Debug)]
pub struct LocalServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

impl LocalServer {
    /// True when `nats-server` can be run.
    pub fn installed() -> bool {
        Command::new("nats-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// Starts a server with JetStream storing in `store` and waits (up to 20 s) until
    /// it accepts connections.
    pub fn start(store: impl AsRef<Path>) -> Result<LocalServer, NatsError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| NatsError::new("finding a free port", e))?
            .port();
        let mut s = LocalServer {
            child: None,
            port,
            store: store.as_ref().to_owned(),
        };
        s.restart()?;
        Ok(s)
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as `kill -9` would); [`restart`](Self::restart) brings it back
    /// on the same port and store.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again (killing a running one first) and waits until it
    /// accepts connections.
    pub fn restart(&mut self) -> Result<(), NatsError> {
        self.kill();
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| NatsError::new(INSTALL_HINT, e))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() >= deadline {
                self.kill();
                return Err(NatsError::new(
                    "starting nats-server",
                    "it did not accept connections within 20 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
    }
}
