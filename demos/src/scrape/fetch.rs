//! One HTTP GET with one client: async `reqwest`, on every executor the policy names.
//!
//! The fetch is an ordinary async function that uses tokio I/O and timers. It runs
//! unchanged on the threads, rayon and tokio backends, because every backend polls async
//! tasks inside a tokio runtime context (core's portable async). https goes through rustls
//! on the ring provider ([`tls`](super::tls)). Redirects are never followed by the client;
//! the crawler sees each 3xx and feeds its `Location` back through the frontier, so
//! redirect targets are de-duplicated like any link.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use url::Url;

/// Client settings.
#[derive(Debug, Clone, Default)]
pub struct FetchConfig {
    /// Deadline for one request, from connect to the last body byte.
    pub timeout: Duration,
    /// Bodies longer than this are refused.
    pub max_body: usize,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// PEM certificates trusted as roots for https, besides the system's.
    pub extra_roots: Vec<String>,
}

/// A response as the crawler needs it.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// `Location`, if any.
    pub location: Option<String>,
    /// The body, read only for 2xx answers whose content type the caller wanted.
    pub body: Option<Vec<u8>>,
}

impl Response {
    /// Status and the headers the crawler reads, without a body.
    fn head(status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap) -> Response {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Response {
            status: status.as_u16(),
            content_type: header("content-type"),
            location: header("location"),
            body: None,
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    /// Whether trying again later may succeed (network trouble, timeouts).
    pub transient: bool,
    /// What happened, for the log and the report.
    pub cause: String,
    /// Whether the request was abandoned at its timeout.
    pub timed_out: bool,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cause)
    }
}

impl std::error::Error for FetchError {}

impl FetchError {
    /// A failure a retry may fix.
    pub fn transient(cause: impl Into<String>) -> Self {
        Self {
            transient: true,
            cause: cause.into(),
            timed_out: false,
        }
    }
    /// A failure no retry will fix.
    pub fn permanent(cause: impl Into<String>) -> Self {
        Self {
            transient: false,
            cause: cause.into(),
            timed_out: false,
        }
    }
    fn timeout(after: Duration) -> Self {
        Self {
            timed_out: true,
            ..Self::transient(format!("timed out after {after:?}"))
        }
    }
}

/// How long a task keeps its slot after abandoning a request at its timeout.
const ABANDON_PAUSE: Duration = Duration::from_millis(20);

/// The client, built once and shared by every task.
pub struct Fetcher {
    config: FetchConfig,
    client: reqwest::Client,
    calls: AtomicU64,
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Renders an error with its chain of sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The innermost error of a chain (the OS error behind a failed connect, say).
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The TLS failure in an error chain, if any: a certificate or handshake problem that no
/// retry will fix. (rustls errors reach us inside `io::Error`s, whose `source` skips them.)
fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        // An `io::Error` wrapping another error (perhaps another `io::Error`) reports the
        // wrapped error's source, not the wrapped error: step into it instead.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

impl Fetcher {
    /// Builds the client: rustls on ring for https, trusting the system's roots and
    /// `config.extra_roots`.
    pub fn new(config: FetchConfig) -> anyhow::Result<Self> {
        super::tls::install_ring_provider();
        let mut roots = Vec::new();
        for pem in &config.extra_roots {
            roots.extend(
                reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                    .map_err(|e| anyhow::anyhow!("reading a PEM certificate: {e}"))?,
            );
        }
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(config.user_agent.as_str())
            .pool_max_idle_per_host(128);
        if !roots.is_empty() {
            builder = builder.tls_certs_merge(roots);
        }
        let client = builder.build()?;
        Ok(Self {
            config,
            client,
            calls: AtomicU64::new(0),
        })
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// GETs `url`; reads the body of a 2xx answer when `want_body(content_type)` says so.
    pub async fn get(
        &self,
        url: &Url,
        want_body: fn(Option<&str>) -> bool,
    ) -> Result<Response, FetchError> {
        match url.scheme() {
            "http" | "https" => {}
            s => return Err(FetchError::permanent(format!("unsupported scheme '{s}'"))),
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let r = self.get_inner(url, want_body).await;
        if matches!(&r, Err(e) if e.timed_out) {
            // The abandoned connection is closing; let the server see it go before this
            // task's slot (and so the host's concurrency) goes to the next request.
            tokio::time::sleep(ABANDON_PAUSE).await;
        }
        r
    }

    fn too_big(&self, n: u64) -> FetchError {
        FetchError::permanent(format!(
            "body of {n} bytes or more is larger than the {} byte cap",
            self.config.max_body
        ))
    }

    async fn get_inner(
        &self,
        url: &Url,
        want_body: fn(Option<&str>) -> bool,
    ) -> Result<Response, FetchError> {
        let classify = |e: reqwest::Error| {
            if let Some(tls) = tls_failure(&e) {
                FetchError::permanent(format!("TLS: {tls}"))
            } else if e.is_timeout() {
                FetchError::timeout(self.config.timeout)
            } else if e.is_connect() {
                FetchError::transient(format!("connect failed: {}", root_cause(&e)))
            } else if e.is_builder() {
                FetchError::permanent(format!("bad request: {}", chain(&e)))
            } else {
                FetchError::transient(chain(&e))
            }
        };
        let mut resp = self
            .client
            .get(url.as_str())
            .send()
            .await
            .map_err(classify)?;
        let mut out = Response::head(resp.status(), resp.headers());
        if resp.status().is_success() && want_body(out.content_type.as_deref()) {
            let cap = self.config.max_body as u64;
            if let Some(n) = resp.content_length().filter(|&n| n > cap) {
                return Err(self.too_big(n));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(classify)? {
                if body.len() + chunk.len() > self.config.max_body {
                    return Err(self.too_big((body.len() + chunk.len()) as u64));
                }
                body.extend_from_slice(&chunk);
            }
            out.body = Some(body);
        }
        Ok(out)
    }
}

/// Whether a `Content-Type` names HTML (or is missing, which the crawler treats as HTML).
pub fn is_html(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|ct| {
        let mime = ct.split(';').next().unwrap_or("").trim();
        mime.eq_ignore_ascii_case("text/html") || mime.eq_ignore_ascii_case("application/xhtml+xml")
    })
}

/// Any content type (robots.txt is read whatever its label).
pub fn any_type(_: Option<&str>) -> bool {
    true
}
