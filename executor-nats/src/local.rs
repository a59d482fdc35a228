//! [`LocalServer`]: a `nats-server -js` child process on a free loopback port with a
//! store directory of its own, for demos and tests that must not depend on a shared
//! server. It can be stopped and started again on the same port and store (a server
//! restart with file storage).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to print when `nats-server` is missing: the tests that need it skip with this.
pub const INSTALL_HINT: &str = "nats-server is not installed (Debian: apt-get install nats-server)";

/// A `nats-server -js` of this process's own, on `127.0.0.1` and a free port, storing
/// JetStream in a directory the caller chooses. Killed (and reaped) on drop.
#[derive(Debug)]
pub struct LocalServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

/// Why a [`LocalServer`] did not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LocalServerError(String);

impl LocalServerError {
    /// True when the `nats-server` program is not installed (Debian: `nats-server`).
    pub fn is_not_installed(&self) -> bool {
        self.0.starts_with("nats-server is not installed")
    }
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

    /// Starts a server storing its streams under `store` and waits (up to 20 s) until it
    /// accepts connections.
    pub fn start(store: impl AsRef<Path>) -> Result<Self, LocalServerError> {
        if !Self::installed() {
            return Err(LocalServerError(INSTALL_HINT.into()));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| LocalServerError(format!("no free loopback port: {e}")))?
            .port();
        let mut s = LocalServer {
            child: None,
            port,
            store: store.as_ref().to_path_buf(),
        };
        s.restart()?;
        Ok(s)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The store directory.
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server (SIGKILL, then reaps it); what it stored stays in the store.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and store (stopping it first if it
    /// runs), and waits until it accepts connections.
    pub fn restart(&mut self) -> Result<(), LocalServerError> {
        self.stop();
        std::fs::create_dir_all(&self.store).map_err(|e| {
            LocalServerError(format!("cannot create {}: {e}", self.store.display()))
        })?;
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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| LocalServerError(format!("cannot run nats-server: {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(LocalServerError(format!(
                    "nats-server exited at start ({status}) on port {}",
                    self.port
                )));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(LocalServerError(format!(
                    "nats-server did not listen on port {} within 20 s",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop();
    }
}
