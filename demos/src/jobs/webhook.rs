//! Webhook signing and a loopback receiver that verifies, de-duplicates and records calls.
//!
//! A call is an HTTP POST whose body is JSON, with two headers: `X-Idempotency-Key` and
//! `X-Signature: sha256=<hex>`, the HMAC-SHA256 under a shared secret of
//! `key + "\n" + body` (so a key cannot be moved onto another body). The receiver
//! (tiny_http, a few threads) answers:
//!
//! - `401` for a missing or wrong signature, `400` for a missing key or a body that is not
//!   JSON — permanent errors for the sender;
//! - `503` for a share of calls it is told to fail (before recording anything);
//! - `200 {"status":"accepted"}` after appending the call to `received.jsonl` and
//!   fsyncing it, or `200 {"status":"duplicate"}` when the key was already recorded.
//!
//! The set of recorded keys is rebuilt from `received.jsonl` at start, so duplicates are
//! caught across restarts of the receiver and of the workers.

use super::dedup::{Keys, Reserve};
use anyhow::{Context, Result, anyhow};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The header carrying the idempotency key.
pub const KEY_HEADER: &str = "X-Idempotency-Key";
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Signature";
/// The secret the demo signs with when none is given.
pub const DEMO_SECRET: &str = "switchyard-demo-secret";
const MAX_BODY: u64 = 1024 * 1024;
const THREADS: usize = 4;

/// The signature header value for `key` and `body`.
pub fn sign(secret: &[u8], key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(key.as_bytes());
    mac.update(b"\n");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header value in constant time.
pub fn verify(secret: &[u8], key: &str, body: &[u8], header: &str) -> bool {
    let Some(sig) = header
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(key.as_bytes());
    mac.update(b"\n");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

struct Shared {
    secret: Vec<u8>,
    log: Mutex<File>,
    keys: Keys,
    fail_ppm: AtomicU32,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    injected: AtomicU64,
    stop: AtomicBool,
}

/// A running webhook receiver; stops when dropped.
pub struct WebhookReceiver {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// What a receiver counted since it started.
#[derive(Clone, Copy, Debug, Default)]
pub struct WebhookCounters {
    /// Calls recorded.
    pub accepted: u64,
    /// Calls whose key was already recorded.
    pub duplicates: u64,
    /// Calls refused for a bad signature, key or body.
    pub rejected: u64,
    /// Calls failed on purpose (`503`).
    pub injected_failures: u64,
}

impl WebhookReceiver {
    /// Starts a receiver on `127.0.0.1:port` (0 = any free port), recording into `dir`.
    pub fn start(dir: &Path, port: u16, secret: &[u8], fail_rate: f64) -> Result<WebhookReceiver> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create webhook directory {}", dir.display()))?;
        let path = log_path(dir);
        let seen: HashSet<String> = read_log(&path)?.into_keys().collect();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // A line torn by a crash of an earlier receiver is closed off, so the next record
        // starts on a line of its own.
        if ends_torn(&mut file)? {
            file.write_all(b"\n")?;
            file.sync_data()?;
        }
        let server = tiny_http::Server::http(("127.0.0.1", port))
            .map_err(|e| anyhow!("cannot listen for webhooks on 127.0.0.1:{port}: {e}"))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| anyhow!("webhook receiver has no IP address"))?;
        let server = Arc::new(server);
        let shared = Arc::new(Shared {
            secret: secret.to_vec(),
            log: Mutex::new(file),
            keys: Keys::new(seen),
            fail_ppm: AtomicU32::new(to_ppm(fail_rate)),
            accepted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        for i in 0..THREADS {
            let server = server.clone();
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("webhook-{i}"))
                    .spawn(move || {
                        while !shared.stop.load(Ordering::SeqCst) {
                            match server.recv_timeout(Duration::from_millis(200)) {
                                Ok(Some(req)) => handle(&shared, req),
                                Ok(None) => {}
                                Err(_) => break,
                            }
                        }
                    })?,
            );
        }
        Ok(WebhookReceiver {
            addr,
            server,
            shared,
            threads,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to post to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Changes the share of calls answered with `503`.
    pub fn set_fail_rate(&self, rate: f64) {
        self.shared.fail_ppm.store(to_ppm(rate), Ordering::SeqCst);
    }

    /// Counters since start.
    pub fn counters(&self) -> WebhookCounters {
        let s = &self.shared;
        WebhookCounters {
            accepted: s.accepted.load(Ordering::SeqCst),
            duplicates: s.duplicates.load(Ordering::SeqCst),
            rejected: s.rejected.load(Ordering::SeqCst),
            injected_failures: s.injected.load(Ordering::SeqCst),
        }
    }

    /// Stops serving.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn to_ppm(rate: f64) -> u32 {
    (rate.clamp(0.0, 1.0) * 1_000_000.0) as u32
}

fn ends_torn(file: &mut File) -> std::io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// The receiver's record file in `dir`.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("received.jsonl")
}

/// How many times each key was recorded in a receiver's file (a complete line each; a
/// torn last line from a crash is skipped).
pub fn read_log(path: &Path) -> Result<HashMap<String, u64>> {
    let mut counts = HashMap::new();
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(counts),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    for line in BufReader::new(f).lines() {
        let line = line?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(k) = v.get("key").and_then(|k| k.as_str()) {
            *counts.entry(k.to_string()).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

fn respond(req: tiny_http::Request, code: u16, body: &str) {
    let resp = tiny_http::Response::from_string(body)
        .with_status_code(code)
        .with_header(
            tiny_http::Header::from_bytes("Content-Type", "application/json")
                .expect("static header is valid"),
        );
    let _ = req.respond(resp);
}

fn handle(shared: &Shared, mut req: tiny_http::Request) {
    if *req.method() != tiny_http::Method::Post {
        return respond(req, 405, r#"{"error":"POST only"}"#);
    }
    let header = |name: &'static str| {
        req.headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_string())
    };
    let key = header(KEY_HEADER);
    let sig = header(SIGNATURE_HEADER);
    let mut body = Vec::new();
    if req
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .is_err()
        || body.len() as u64 > MAX_BODY
    {
        shared.rejected.fetch_add(1, Ordering::SeqCst);
        return respond(req, 413, r#"{"error":"body unreadable or too large"}"#);
    }
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        shared.rejected.fetch_add(1, Ordering::SeqCst);
        return respond(req, 400, r#"{"error":"missing X-Idempotency-Key"}"#);
    };
    if !sig.is_some_and(|s| verify(&shared.secret, &key, &body, &s)) {
        shared.rejected.fetch_add(1, Ordering::SeqCst);
        return respond(req, 401, r#"{"error":"bad or missing signature"}"#);
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        shared.rejected.fetch_add(1, Ordering::SeqCst);
        return respond(req, 400, r#"{"error":"body is not JSON"}"#);
    };
    let ppm = shared.fail_ppm.load(Ordering::SeqCst);
    if ppm > 0 && rand::random_range(0..1_000_000) < ppm {
        shared.injected.fetch_add(1, Ordering::SeqCst);
        return respond(req, 503, r#"{"error":"temporary failure (injected)"}"#);
    }
    match shared.keys.reserve(&key) {
        Reserve::Fresh => {}
        Reserve::Stored => {
            shared.duplicates.fetch_add(1, Ordering::SeqCst);
            return respond(req, 200, r#"{"status":"duplicate"}"#);
        }
        Reserve::Busy => return respond(req, 503, r#"{"error":"same key in progress"}"#),
    }
    let mut line = serde_json::json!({ "key": key, "body": json }).to_string();
    line.push('\n');
    // One write of a whole line under the lock; the fsync outside it, so concurrent
    // calls share the disk's flushes.
    let written = {
        let mut file = shared.log.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(line.as_bytes())
            .and_then(|_| file.try_clone())
    }
    .and_then(|f| f.sync_data());
    shared.keys.finish(&key, written.is_ok());
    if let Err(e) = written {
        tracing::error!("webhook receiver cannot record a call: {e}");
        return respond(req, 500, r#"{"error":"cannot record"}"#);
    }
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    respond(req, 200, r#"{"status":"accepted"}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_does_not_swallow_the_next_record() {
        let dir = std::env::temp_dir().join(format!("jobs-torn-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            log_path(&dir),
            "{\"key\":\"a\",\"body\":{}}\n{\"key\":\"b\",\"bo",
        )
        .unwrap();
        let r = WebhookReceiver::start(&dir, 0, b"s", 0.0).unwrap();
        let body = br#"{"n":1}"#;
        let resp = ureq::post(&r.url())
            .header(KEY_HEADER, "c")
            .header(SIGNATURE_HEADER, &sign(b"s", "c", body))
            .send(&body[..])
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        drop(r);
        let keys = read_log(&log_path(&dir)).unwrap();
        assert_eq!(keys.get("a"), Some(&1));
        assert_eq!(
            keys.get("b"),
            None,
            "the torn record was never acknowledged"
        );
        assert_eq!(keys.get("c"), Some(&1));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn signatures_verify_and_bind_the_key() {
        let s = sign(b"k", "key-1", b"{}");
        assert!(verify(b"k", "key-1", b"{}", &s));
        assert!(!verify(b"k", "key-2", b"{}", &s));
        assert!(!verify(b"other", "key-1", b"{}", &s));
        assert!(!verify(b"k", "key-1", b"{ }", &s));
        assert!(!verify(b"k", "key-1", b"{}", "sha256=zz"));
    }
}
