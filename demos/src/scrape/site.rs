//! The local test site: several hosts on loopback (one port each), generated pages with
//! links within and across hosts, a robots.txt per host, configurable latency, transient
//! 5xx answers, stalls, permanent failures and traps — and a referee that counts how
//! politely it was crawled.
//!
//! Everything about a page (its links, whether it is flaky, broken or stalls) is a pure
//! function of the configuration, so the site can also say what a perfect crawl of it
//! looks like ([`Site::expectation`]).

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// How the generated site looks and misbehaves.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// Number of hosts, each on its own loopback port.
    pub hosts: usize,
    /// Pages `/p/0` .. `/p/{n-1}` on every host.
    pub pages_per_host: usize,
    /// Delay before every answer.
    pub latency: Duration,
    /// Share of pages that answer 503 on their first `transient_failures` requests.
    pub transient_share: f64,
    /// How many 503 answers a flaky page gives before it recovers.
    pub transient_failures: u32,
    /// Share of pages whose first request stalls for `stall` (past the client timeout).
    pub stall_share: f64,
    /// How long a stalled request hangs before it gives up with a 503.
    pub stall: Duration,
    /// Share of pages that answer 500 on every request.
    pub broken_share: f64,
    /// Links from a page to pages on its own host.
    pub links_per_page: usize,
    /// Links from a page to pages on other hosts.
    pub cross_links_per_page: usize,
    /// `Crawl-delay` (seconds) announced by the last host's robots.txt, if any.
    pub crawl_delay: Option<f64>,
    /// Whether each host's root links to every page on that host (a site map).
    pub index_links_all: bool,
    /// Whether host 0 carries the trap pages (non-HTML, huge, redirect loops, malformed links,
    /// a missing page, a link to an unreachable host).
    pub traps: bool,
    /// Seed for every choice the generator makes.
    pub seed: u64,
}

impl Default for SiteConfig {
    fn default() -> Self {
        Self {
            hosts: 4,
            pages_per_host: 150,
            latency: Duration::from_millis(20),
            transient_share: 0.05,
            transient_failures: 1,
            stall_share: 0.02,
            stall: Duration::from_secs(4),
            broken_share: 0.02,
            links_per_page: 6,
            cross_links_per_page: 2,
            crawl_delay: Some(0.02),
            index_links_all: false,
            traps: true,
            seed: 7,
        }
    }
}

/// What kind of page a generated page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// Answers 200 every time.
    Normal,
    /// Answers 503 on its first requests, then 200.
    Flaky,
    /// Stalls on its first request, then answers 200.
    Stall,
    /// Answers 500 every time.
    Broken,
}

/// Counts for one path on one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathCount {
    /// Requests received.
    pub requests: u64,
    /// Requests answered with a 2xx status (stalled requests never count here).
    pub ok: u64,
    /// Requests answered with a 5xx status (including stalls that ran to their end).
    pub server_errors: u64,
}

/// What the referee saw on one host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostReport {
    /// `127.0.0.1:PORT`.
    pub authority: String,
    /// Requests received.
    pub requests: u64,
    /// The most requests this host was serving at one time.
    pub max_concurrent: usize,
    /// Requests to a path the host's robots.txt disallows.
    pub disallowed_hits: u64,
    /// Smallest gap between the starts of two page requests, in milliseconds
    /// (robots.txt excluded); `None` with fewer than two page requests.
    pub min_gap_ms: Option<f64>,
    /// Mean time from a request's arrival to its answer, in milliseconds (the configured
    /// latency plus the site's own delays, such as timer granularity); `None` before any.
    pub mean_service_ms: Option<f64>,
}

/// The referee's verdict over the whole site.
#[derive(Debug, Clone, PartialEq)]
pub struct RefereeReport {
    /// Per host, in host order.
    pub hosts: Vec<HostReport>,
}

impl RefereeReport {
    /// Requests to disallowed paths over all hosts.
    pub fn disallowed_hits(&self) -> u64 {
        self.hosts.iter().map(|h| h.disallowed_hits).sum()
    }
    /// Mean service time over all hosts, in milliseconds.
    pub fn mean_service_ms(&self) -> Option<f64> {
        let v: Vec<f64> = self
            .hosts
            .iter()
            .filter_map(|h| h.mean_service_ms)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
    /// The highest per-host concurrency seen on any host.
    pub fn max_concurrent(&self) -> usize {
        self.hosts
            .iter()
            .map(|h| h.max_concurrent)
            .max()
            .unwrap_or(0)
    }
    /// Requests over all hosts.
    pub fn requests(&self) -> u64 {
        self.hosts.iter().map(|h| h.requests).sum()
    }
}

/// What a perfect crawl of the site starting at host 0's root would do.
#[derive(Debug, Clone, Default)]
pub struct Expectation {
    /// `(host, path)` of every page reachable over allowed links that eventually answers 200
    /// with HTML (roots and `/p/N`, flaky and stalling pages included; traps excluded).
    pub html_pages: BTreeSet<(usize, String)>,
    /// Reachable pages that answer 503 before they recover.
    pub flaky: BTreeSet<(usize, String)>,
    /// Reachable pages whose first request stalls.
    pub stalled: BTreeSet<(usize, String)>,
    /// Reachable pages that answer 500 every time.
    pub broken: BTreeSet<(usize, String)>,
}

/// One running host's state, shared by its handlers.
struct HostState {
    index: usize,
    site: Arc<SiteModel>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Answered requests and their summed service time in microseconds.
    answered: AtomicU64,
    service_us: AtomicU64,
    requests: AtomicU64,
    disallowed: AtomicU64,
    paths: Mutex<HashMap<String, PathCount>>,
    gaps: Mutex<GapTracker>,
}

#[derive(Default)]
struct GapTracker {
    last: Option<Instant>,
    min: Option<Duration>,
}

/// The immutable description of the site, shared by every host.
struct SiteModel {
    config: SiteConfig,
    /// `http`, or `https` when the site serves TLS.
    scheme: &'static str,
    /// `127.0.0.1:PORT` of every host, in host order.
    authorities: Vec<String>,
    /// `127.0.0.1:PORT` where nothing listens.
    dead: String,
    huge: Bytes,
    binary: Bytes,
}

/// A link as the site writes it, and where it leads when the site itself is the target.
struct Link {
    href: String,
    /// `(host, path)` for links to generated pages (roots and `/p/N`).
    page: Option<(usize, String)>,
}

/// A running test site. Dropping it stops the servers.
pub struct Site {
    model: Arc<SiteModel>,
    hosts: Vec<Arc<HostState>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Bytes in the huge trap page (bigger than the crawler's body cap).
pub const HUGE_PAGE_BYTES: usize = 6 * 1024 * 1024;

/// splitmix64: a tiny deterministic mixer for the generator's choices.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl SiteModel {
    fn hash(&self, host: usize, page: usize, salt: u64) -> u64 {
        mix(self.config.seed ^ mix((host as u64) << 32 ^ page as u64 ^ mix(salt)))
    }

    fn unit(&self, host: usize, page: usize, salt: u64) -> f64 {
        (self.hash(host, page, salt) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn kind(&self, host: usize, page: usize) -> PageKind {
        let c = &self.config;
        let u = self.unit(host, page, 1);
        // Page 0 of host 0 is always normal so the chain from the seed never starts broken.
        if host == 0 && page == 0 {
            PageKind::Normal
        } else if u < c.broken_share {
            PageKind::Broken
        } else if u < c.broken_share + c.transient_share {
            PageKind::Flaky
        } else if u < c.broken_share + c.transient_share + c.stall_share {
            PageKind::Stall
        } else {
            PageKind::Normal
        }
    }

    fn crawl_delay_host(&self) -> Option<usize> {
        self.config
            .crawl_delay
            .filter(|_| self.config.hosts > 1)
            .map(|_| self.config.hosts - 1)
    }

    fn robots_txt(&self, host: usize) -> String {
        let mut s = String::from(
            "# switchyard test site\nUser-agent: *\nDisallow: /private/\nDisallow: /admin\nAllow: /\n",
        );
        if Some(host) == self.crawl_delay_host() {
            let d = self.config.crawl_delay.unwrap_or_default();
            s.push_str(&format!("Crawl-delay: {d}\n"));
        }
        s.push_str("\nUser-agent: grumpy-bot\nDisallow: /\n");
        s
    }

    fn disallowed(path: &str) -> bool {
        path.starts_with("/private/") || path.starts_with("/admin")
    }

    fn links(&self, host: usize, page: Option<usize>) -> Vec<Link> {
        let c = &self.config;
        let n = c.pages_per_host;
        let h = c.hosts;
        let mut out = Vec::new();
        let plain = |p: usize| Link {
            href: format!("/p/{p}"),
            page: Some((host, format!("/p/{p}"))),
        };
        match page {
            None => {
                let k = if c.index_links_all {
                    n
                } else {
                    c.links_per_page.min(n)
                };
                out.extend((0..k).map(plain));
                if h > 1 {
                    let next = (host + 1) % h;
                    out.push(Link {
                        href: format!("{}://{}/", self.scheme, self.authorities[next]),
                        page: Some((next, "/".into())),
                    });
                }
                out.push(Link {
                    href: "/private/".into(),
                    page: None,
                });
                if c.traps && host == 0 {
                    for t in [
                        "/trap/binary",
                        "/trap/huge",
                        "/trap/loop-a",
                        "/trap/chain/0",
                        "/trap/malformed",
                        "/trap/missing",
                        "/trap/moved",
                    ] {
                        out.push(Link {
                            href: t.into(),
                            page: None,
                        });
                    }
                    out.push(Link {
                        href: format!("{}://{}/", self.scheme, self.dead),
                        page: None,
                    });
                }
            }
            Some(i) => {
                if i + 1 < n {
                    // Relative to /p/i: resolves to /p/{i+1}.
                    out.push(Link {
                        href: format!("{}", i + 1),
                        page: Some((host, format!("/p/{}", i + 1))),
                    });
                }
                for k in 1..c.links_per_page {
                    let r = self.hash(host, i, 100 + k as u64);
                    let j = (r % n as u64) as usize;
                    let path = format!("/p/{j}");
                    // The same page written in ways a normaliser must fold together.
                    let href = match (r >> 32) % 5 {
                        0 => format!("/p/{j}#section-{k}"),
                        1 => format!("/p/./{j}"),
                        2 => format!("../p/{j}"),
                        3 => format!("{}://{}/p/{j}", self.scheme, self.authorities[host]),
                        _ => path.clone(),
                    };
                    out.push(Link {
                        href,
                        page: Some((host, path)),
                    });
                }
                if h > 1 {
                    for k in 0..c.cross_links_per_page {
                        let r = self.hash(host, i, 200 + k as u64);
                        let other = (host + 1 + (r % (h as u64 - 1)) as usize) % h;
                        let j = ((r >> 20) % n as u64) as usize;
                        // Some schemes upper-cased, which a normaliser must fold.
                        let scheme = if (r >> 50).is_multiple_of(4) {
                            self.scheme.to_ascii_uppercase()
                        } else {
                            self.scheme.to_string()
                        };
                        out.push(Link {
                            href: format!("{scheme}://{}/p/{j}", self.authorities[other]),
                            page: Some((other, format!("/p/{j}"))),
                        });
                    }
                }
                if i % 7 == 3 {
                    out.push(Link {
                        href: format!("/private/{i}"),
                        page: None,
                    });
                }
                if i % 11 == 5 {
                    out.push(Link {
                        href: format!("/admin/panel?page={i}"),
                        page: None,
                    });
                }
            }
        }
        out
    }

    fn html(&self, title: &str, links: &[String]) -> String {
        let mut s = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\n\
             <body><h1>{t}</h1>\n<p>Generated by the switchyard test site. \
             Nothing to see here but links.</p>\n<ul>\n",
            t = escape(title)
        );
        for l in links {
            s.push_str(&format!(
                "<li><a href=\"{}\">{}</a></li>\n",
                escape(l),
                escape(l)
            ));
        }
        s.push_str("</ul></body></html>\n");
        s
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn redirect(to: &str) -> Response {
    (
        StatusCode::FOUND,
        [(header::LOCATION, to.to_string())],
        "moved\n",
    )
        .into_response()
}

/// Decrements a host's in-flight count when a request ends, even if the connection is
/// dropped mid-request and the handler future with it.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(State(st): State<Arc<HostState>>, uri: Uri) -> Response {
    let arrived = Instant::now();
    let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(&st.in_flight);
    st.max_in_flight.fetch_max(now, Ordering::SeqCst);
    st.requests.fetch_add(1, Ordering::Relaxed);
    let path = uri.path().to_string();
    let model = &st.site;
    if SiteModel::disallowed(&path) {
        st.disallowed.fetch_add(1, Ordering::SeqCst);
    }
    if path != "/robots.txt" {
        let t = Instant::now();
        let mut g = st.gaps.lock();
        if let Some(last) = g.last {
            let gap = t - last;
            g.min = Some(g.min.map_or(gap, |m| m.min(gap)));
        }
        g.last = Some(t);
    }
    let nth = {
        let mut paths = st.paths.lock();
        let c = paths.entry(path.clone()).or_default();
        c.requests += 1;
        c.requests
    };
    latency(model.config.latency).await;
    let resp = route(&st, &path, nth).await;
    let status = resp.status();
    let mut paths = st.paths.lock();
    let c = paths.entry(path).or_default();
    if status.is_success() {
        c.ok += 1;
    } else if status.is_server_error() {
        c.server_errors += 1;
    }
    drop(paths);
    st.answered.fetch_add(1, Ordering::Relaxed);
    st.service_us
        .fetch_add(arrived.elapsed().as_micros() as u64, Ordering::Relaxed);
    resp
}

/// Waits `d` precisely. Tokio's timer works in whole milliseconds and rounds up, which
/// would add about a millisecond to every answer (5% of a 20 ms latency); a blocking-pool
/// thread's sleep is accurate to tens of microseconds. If the client leaves, the handler
/// future (and with it the in-flight count) is dropped at once; the thread just finishes
/// its nap.
async fn latency(d: Duration) {
    if d.is_zero() {
        return;
    }
    if tokio::task::spawn_blocking(move || std::thread::sleep(d))
        .await
        .is_err()
    {
        tokio::time::sleep(d).await;
    }
}

async fn route(st: &HostState, path: &str, nth: u64) -> Response {
    let model = &st.site;
    let host = st.index;
    let c = &model.config;
    let page_links = |page: Option<usize>| -> Vec<String> {
        model
            .links(host, page)
            .into_iter()
            .map(|l| l.href)
            .collect()
    };
    if path == "/robots.txt" {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            model.robots_txt(host),
        )
            .into_response();
    }
    if path == "/" {
        let title = format!("host {host}");
        return html_response(StatusCode::OK, model.html(&title, &page_links(None)));
    }
    if SiteModel::disallowed(path) {
        return html_response(StatusCode::OK, model.html("private", &[]));
    }
    if let Some(i) = path
        .strip_prefix("/p/")
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&i| i < c.pages_per_host)
    {
        match model.kind(host, i) {
            PageKind::Broken => {
                return html_response(StatusCode::INTERNAL_SERVER_ERROR, model.html("broken", &[]));
            }
            PageKind::Flaky if nth <= c.transient_failures as u64 => {
                return html_response(StatusCode::SERVICE_UNAVAILABLE, model.html("busy", &[]));
            }
            PageKind::Stall if nth == 1 => {
                tokio::time::sleep(c.stall).await;
                return html_response(StatusCode::SERVICE_UNAVAILABLE, model.html("slow", &[]));
            }
            _ => {}
        }
        let title = format!("host {host} page {i}");
        return html_response(StatusCode::OK, model.html(&title, &page_links(Some(i))));
    }
    if c.traps && host == 0 {
        match path {
            "/trap/binary" => {
                return (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    model.binary.clone(),
                )
                    .into_response();
            }
            "/trap/huge" => {
                return (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/html")],
                    Body::from(model.huge.clone()),
                )
                    .into_response();
            }
            "/trap/loop-a" => return redirect("/trap/loop-b"),
            "/trap/loop-b" => return redirect("/trap/loop-a"),
            "/trap/moved" => return redirect("/p/0"),
            "/trap/malformed" => {
                let links = [
                    "http://[::1",
                    "http://exa mple.com/",
                    "http://127.0.0.1:99999/",
                    "javascript:void(0)",
                    "mailto:someone@example.com",
                    "ftp://127.0.0.1/file",
                    "",
                    "#top",
                    "/p/1",
                ]
                .map(String::from);
                return html_response(StatusCode::OK, model.html("malformed", &links));
            }
            _ => {}
        }
        if let Some(n) = path
            .strip_prefix("/trap/chain/")
            .and_then(|s| s.parse::<u64>().ok())
        {
            return redirect(&format!("/trap/chain/{}", n + 1));
        }
    }
    html_response(StatusCode::NOT_FOUND, model.html("not found", &[]))
}

/// A listener that hands axum TLS streams: a task accepts TCP connections and runs each
/// handshake on its own task, so a slow or failed handshake holds up no other client.
struct TlsListener {
    incoming: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsListener {
    /// Starts accepting on `tcp` (call on the site's runtime).
    fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (tx, incoming) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: wait, then try again.
                        tracing::debug!("test site accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { incoming, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(c) => c,
            // The accepting task is gone (the runtime is shutting down): no more clients.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl Site {
    /// Starts every host on its own loopback port, served over plain HTTP by a small
    /// runtime the site owns.
    pub fn start(config: SiteConfig) -> Result<Site> {
        Self::start_with(config, None)
    }

    /// Like [`start`](Self::start), but every host serves https with `tls` (whose
    /// certificate must name `127.0.0.1`), and the site's links say `https://`.
    pub fn start_tls(config: SiteConfig, tls: Arc<rustls::ServerConfig>) -> Result<Site> {
        Self::start_with(config, Some(tls))
    }

    fn start_with(config: SiteConfig, tls: Option<Arc<rustls::ServerConfig>>) -> Result<Site> {
        anyhow::ensure!(config.hosts >= 1, "the site needs at least one host");
        anyhow::ensure!(
            config.pages_per_host >= 1,
            "the site needs at least one page per host"
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-site")
            .enable_all()
            .build()
            .context("starting the test site's runtime")?;
        let listeners = runtime.block_on(async {
            let mut v = Vec::new();
            for _ in 0..config.hosts {
                v.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
            }
            Ok::<_, std::io::Error>(v)
        })?;
        let authorities = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        // A port where nothing listens: bind one, note it, let it go.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .to_string();
        let mut huge = Vec::with_capacity(HUGE_PAGE_BYTES);
        huge.extend_from_slice(b"<!doctype html><html><body>");
        while huge.len() < HUGE_PAGE_BYTES {
            huge.extend_from_slice(b"<p>all work and no play makes a huge page</p>\n");
        }
        let binary: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (mix(i as u64) & 0xff) as u8)
            .collect();
        let model = Arc::new(SiteModel {
            config,
            scheme: if tls.is_some() { "https" } else { "http" },
            authorities,
            dead,
            huge: Bytes::from(huge),
            binary: Bytes::from(binary),
        });
        let mut hosts = Vec::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            let st = Arc::new(HostState {
                index,
                site: model.clone(),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                answered: AtomicU64::new(0),
                service_us: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                disallowed: AtomicU64::new(0),
                paths: Mutex::new(HashMap::new()),
                gaps: Mutex::new(GapTracker::default()),
            });
            let app = axum::Router::new().fallback(handle).with_state(st.clone());
            match &tls {
                None => {
                    runtime.spawn(async move {
                        if let Err(e) = axum::serve(listener, app).await {
                            tracing::error!("test site host {index} stopped: {e}");
                        }
                    });
                }
                Some(config) => {
                    let listener = {
                        let _entered = runtime.enter();
                        TlsListener::new(listener, config.clone())?
                    };
                    runtime.spawn(async move {
                        if let Err(e) = axum::serve(listener, app).await {
                            tracing::error!("test site host {index} stopped: {e}");
                        }
                    });
                }
            }
            hosts.push(st);
        }
        Ok(Site {
            model,
            hosts,
            runtime: Some(runtime),
        })
    }

    /// `http://127.0.0.1:PORT/` (or `https://`) of every host, in host order.
    pub fn roots(&self) -> Vec<String> {
        self.model
            .authorities
            .iter()
            .map(|a| format!("{}://{a}/", self.model.scheme))
            .collect()
    }

    /// `127.0.0.1:PORT` of every host, in host order.
    pub fn authorities(&self) -> &[String] {
        &self.model.authorities
    }

    /// `127.0.0.1:PORT` of the unreachable host some pages link to.
    pub fn dead_authority(&self) -> &str {
        &self.model.dead
    }

    /// The configuration the site was started with.
    pub fn config(&self) -> &SiteConfig {
        &self.model.config
    }

    /// What kind of page `/p/{page}` on `host` is.
    pub fn kind(&self, host: usize, page: usize) -> PageKind {
        self.model.kind(host, page)
    }

    /// Counts for `path` on `host` so far.
    pub fn path_count(&self, host: usize, path: &str) -> PathCount {
        self.hosts[host]
            .paths
            .lock()
            .get(path)
            .copied()
            .unwrap_or_default()
    }

    /// Every path requested on `host` with its counts.
    pub fn path_counts(&self, host: usize) -> HashMap<String, PathCount> {
        self.hosts[host].paths.lock().clone()
    }

    /// Requests `host` is serving right now.
    pub fn in_flight(&self, host: usize) -> usize {
        self.hosts[host].in_flight.load(Ordering::SeqCst)
    }

    /// The referee's counts so far.
    pub fn referee(&self) -> RefereeReport {
        RefereeReport {
            hosts: self
                .hosts
                .iter()
                .map(|h| HostReport {
                    authority: self.model.authorities[h.index].clone(),
                    requests: h.requests.load(Ordering::SeqCst),
                    max_concurrent: h.max_in_flight.load(Ordering::SeqCst),
                    disallowed_hits: h.disallowed.load(Ordering::SeqCst),
                    min_gap_ms: h.gaps.lock().min.map(|d| d.as_secs_f64() * 1000.0),
                    mean_service_ms: match h.answered.load(Ordering::Relaxed) {
                        0 => None,
                        n => Some(h.service_us.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0),
                    },
                })
                .collect(),
        }
    }

    /// Resets the referee's counters (between benchmark runs on one site).
    pub fn reset_referee(&self) {
        for h in &self.hosts {
            h.max_in_flight
                .store(h.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
            h.requests.store(0, Ordering::SeqCst);
            h.answered.store(0, Ordering::SeqCst);
            h.service_us.store(0, Ordering::SeqCst);
            h.disallowed.store(0, Ordering::SeqCst);
            h.paths.lock().clear();
            *h.gaps.lock() = GapTracker::default();
        }
    }

    /// The outcome of a perfect crawl that starts at host 0's root: a breadth-first walk of
    /// the generated link graph that skips disallowed links and does not expand broken pages.
    pub fn expectation(&self) -> Expectation {
        let m = &self.model;
        let mut e = Expectation::default();
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::new();
        seen.insert((0usize, "/".to_string()));
        queue.push_back((0usize, "/".to_string()));
        while let Some((host, path)) = queue.pop_front() {
            let page = path
                .strip_prefix("/p/")
                .map(|s| s.parse::<usize>().unwrap());
            if let Some(i) = page {
                match m.kind(host, i) {
                    PageKind::Broken => {
                        e.broken.insert((host, path));
                        continue;
                    }
                    PageKind::Flaky => {
                        e.flaky.insert((host, path.clone()));
                    }
                    PageKind::Stall => {
                        e.stalled.insert((host, path.clone()));
                    }
                    PageKind::Normal => {}
                }
            }
            e.html_pages.insert((host, path));
            for l in m.links(host, page) {
                if let Some(t) = l.page
                    && seen.insert(t.clone())
                {
                    queue.push_back(t);
                }
            }
        }
        e
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
