//! One HTTP GET, two clients behind one interface: `reqwest` (async) when the task runs on
//! a tokio runtime, `ureq` (blocking) everywhere else.
//!
//! The choice is made per call from where the task is running, not from any setting:
//! the policy file routes `scrape.*` tasks to an executor, and the fetch adapts to it.
//! Redirects are never followed by the clients; the crawler sees each 3xx and feeds its
//! `Location` back through the frontier, so redirect targets are de-duplicated like any link.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use url::Url;

/// Client settings shared by both clients.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Deadline for one request, from connect to the last body byte.
    pub timeout: Duration,
    /// Bodies longer than this are refused.
    pub max_body: usize,
    /// The `User-Agent` header.
    pub user_agent: String,
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
    /// Status and the headers the crawler reads, without a body. Both clients (reqwest
    /// and ureq) expose the same `http` types, so one function serves them.
    fn head(status: ureq::http::StatusCode, headers: &ureq::http::HeaderMap) -> Response {
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

/// Both clients, built once and shared by every task.
pub struct Fetcher {
    config: FetchConfig,
    blocking: ureq::Agent,
    async_client: reqwest::Client,
    blocking_calls: AtomicU64,
    async_calls: AtomicU64,
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

impl Fetcher {
    /// Builds both clients.
    pub fn new(config: FetchConfig) -> anyhow::Result<Self> {
        let blocking: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent(config.user_agent.as_str())
            .max_idle_connections(512)
            .max_idle_connections_per_host(128)
            .build()
            .into();
        let async_client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(config.user_agent.as_str())
            .pool_max_idle_per_host(128)
            .build()?;
        Ok(Self {
            config,
            blocking,
            async_client,
            blocking_calls: AtomicU64::new(0),
            async_calls: AtomicU64::new(0),
        })
    }

    /// Requests made with the blocking client so far.
    pub fn blocking_calls(&self) -> u64 {
        self.blocking_calls.load(Ordering::Relaxed)
    }

    /// Requests made with the async client so far.
    pub fn async_calls(&self) -> u64 {
        self.async_calls.load(Ordering::Relaxed)
    }

    /// GETs `url`; reads the body of a 2xx answer when `want_body(content_type)` says so.
    ///
    /// Uses the async client when called on a tokio runtime, the blocking client otherwise
    /// (threads and rayon workers drive futures to completion on the worker thread, where
    /// blocking is what the worker is for).
    pub async fn get(
        &self,
        url: &Url,
        want_body: fn(Option<&str>) -> bool,
    ) -> Result<Response, FetchError> {
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(FetchError::permanent(
                    "https is not supported: this build of the demo has no TLS",
                ));
            }
            s => return Err(FetchError::permanent(format!("unsupported scheme '{s}'"))),
        }
        let r = if tokio::runtime::Handle::try_current().is_ok() {
            self.async_calls.fetch_add(1, Ordering::Relaxed);
            self.get_async(url, want_body).await
        } else {
            self.blocking_calls.fetch_add(1, Ordering::Relaxed);
            self.get_blocking(url, want_body)
        };
        if matches!(&r, Err(e) if e.timed_out) {
            // The abandoned connection is closing; let the server see it go before this
            // task's slot (and so the host's concurrency) goes to the next request.
            pause(ABANDON_PAUSE).await;
        }
        r
    }

    fn too_big(&self, n: u64) -> FetchError {
        FetchError::permanent(format!(
            "body of {n} bytes or more is larger than the {} byte cap",
            self.config.max_body
        ))
    }

    async fn get_async(
        &self,
        url: &Url,
        want_body: fn(Option<&str>) -> bool,
    ) -> Result<Response, FetchError> {
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
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
            .async_client
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

    fn get_blocking(
        &self,
        url: &Url,
        want_body: fn(Option<&str>) -> bool,
    ) -> Result<Response, FetchError> {
        let classify = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => FetchError::timeout(self.config.timeout),
            ureq::Error::BodyExceedsLimit(n) => self.too_big(n),
            ureq::Error::Io(io) => FetchError::transient(format!("I/O error: {io}")),
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                FetchError::transient(format!("connect failed: {e}"))
            }
            ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
                FetchError::permanent(format!("bad request: {}", chain(&e)))
            }
            other => FetchError::transient(chain(&other)),
        };
        let mut resp = self.blocking.get(url.as_str()).call().map_err(classify)?;
        let mut out = Response::head(resp.status(), resp.headers());
        if resp.status().is_success() && want_body(out.content_type.as_deref()) {
            let cap = self.config.max_body as u64;
            if let Some(n) = resp.body().content_length().filter(|&n| n > cap) {
                return Err(self.too_big(n));
            }
            let body = resp
                .body_mut()
                .with_config()
                .limit(cap)
                .read_to_vec()
                .map_err(classify)?;
            out.body = Some(body);
        }
        Ok(out)
    }
}

/// Waits `d`: on a tokio runtime without blocking it, elsewhere by sleeping the thread
/// (a threads or rayon worker driving this task's future).
pub async fn pause(d: Duration) {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::time::sleep(d).await;
    } else {
        std::thread::sleep(d);
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
