//! The crawler: a frontier, robots.txt per host, and fetch tasks submitted to an
//! `Arc<dyn Executor>` (in the demo, the supervisor) with the host as the task's key.
//!
//! The crawl loop runs on the caller's thread. It never names a backend and never sleeps
//! inside a task: per-host concurrency, rate limits, retries and timeouts are applied by
//! whatever executor it is given (the supervisor reads them from the policy file). The
//! loop only keeps a bounded window of tasks outstanding per host, so one large host does
//! not fill the executor's queues, and spaces requests to a host that asks for a
//! `Crawl-delay`.

use super::fetch::{FetchConfig, FetchError, Fetcher, Response, any_type, is_html};
use super::frontier::{Admit, Entry, Frontier, Scope, host_key};
use super::links;
use super::robots::Rules;
use executor_core::{Executor, ExecutorExt, TaskError, TaskHandle, TaskMeta};
use futures::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use url::Url;

/// Task name of page fetches (what a policy's `[[route]]` matches on).
pub const FETCH_TASK: &str = "scrape.fetch";
/// Task name of robots.txt fetches.
pub const ROBOTS_TASK: &str = "scrape.robots";

/// How to crawl.
#[derive(Debug, Clone)]
pub struct CrawlConfig {
    /// Where the crawl starts.
    pub seeds: Vec<String>,
    /// Extra `host:port` keys the crawl may visit besides the seeds' hosts; `None` = any host.
    pub extra_hosts: Option<Vec<String>>,
    /// At most this many distinct URLs are admitted to the frontier.
    pub max_urls: usize,
    /// Redirect hops followed from one URL before giving up on it.
    pub max_redirects: u32,
    /// Client settings (timeout, body cap, user agent).
    pub fetch: FetchConfig,
    /// Tasks kept outstanding at the executor per host.
    pub window_per_host: usize,
    /// Tasks kept outstanding at the executor in total.
    pub window: usize,
    /// Draw a progress bar on stderr (only when stderr is a terminal).
    pub progress: bool,
    /// When this flag is raised (Ctrl-C), the crawl stops taking new URLs, lets the tasks
    /// already submitted finish, and reports.
    pub stop: Option<Arc<AtomicBool>>,
}

/// A URL the crawl gave up on, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    /// The URL (as written, for malformed seeds).
    pub url: String,
    /// What went wrong.
    pub cause: String,
}

/// What a crawl did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CrawlReport {
    /// HTML pages fetched and parsed.
    pub pages_fetched: u64,
    /// URLs given up on (after retries where retrying made sense).
    pub pages_failed: u64,
    /// Answers that were not HTML (counted, not parsed).
    pub pages_skipped: u64,
    /// Redirects followed (each hop is a fetch of its own).
    pub redirects: u64,
    /// Task attempts beyond the first (robots.txt included).
    pub retries: u64,
    /// robots.txt files fetched.
    pub robots_fetched: u64,
    /// URLs not fetched because robots.txt disallows them.
    pub robots_disallowed_skipped: u64,
    /// `href`s that are not URLs.
    pub links_malformed: u64,
    /// Links with a scheme the crawler does not follow (mailto:, javascript:, ...).
    pub links_unsupported: u64,
    /// Links to hosts outside the crawl's scope.
    pub links_out_of_scope: u64,
    /// Links to URLs already known (in any spelling).
    pub links_duplicate: u64,
    /// New links dropped because the URL budget (`max_urls`) was spent.
    pub links_over_budget: u64,
    /// HTTP requests sent (every attempt, robots.txt included).
    pub requests: u64,
    /// Wall time of the crawl.
    pub elapsed_s: f64,
    /// Whether the crawl was stopped early (Ctrl-C).
    pub interrupted: bool,
    /// URLs still queued when the crawl ended (non-zero only when interrupted).
    pub not_fetched: u64,
    /// Every failure with its cause.
    pub failures: Vec<Failure>,
    /// Every URL fetched as an HTML page, in completion order.
    pub fetched: Vec<String>,
}

/// The result of one fetch task that the crawler acts on. Transient trouble (5xx, 429,
/// timeouts, connection errors) is returned as an `Err` instead, so the executor's retry
/// policy re-runs the task.
#[derive(Debug)]
pub enum Page {
    /// A 2xx HTML page and the links found in it.
    Html(links::Links),
    /// A 3xx with its target (resolved against the request URL).
    Redirect(Result<Url, String>),
    /// A 2xx answer that is not HTML.
    NotHtml(String),
    /// A permanent failure (4xx, too large, bad URL for the client).
    Failed(String),
}

fn status_text(status: u16) -> String {
    match axum::http::StatusCode::from_u16(status) {
        Ok(s) => format!("HTTP {status} {}", s.canonical_reason().unwrap_or("")),
        Err(_) => format!("HTTP {status}"),
    }
    .trim_end()
    .to_string()
}

/// Fetches one page and classifies the answer; returns `Err` only for what a retry may fix.
pub async fn fetch_page(fetcher: &Fetcher, url: &Url) -> Result<Page, FetchError> {
    let r = match fetcher.get(url, is_html).await {
        Ok(r) => r,
        Err(e) if e.transient => return Err(e),
        Err(e) => return Ok(Page::Failed(e.cause)),
    };
    Ok(match r.status {
        500.. | 429 => {
            return Err(FetchError::transient(status_text(r.status)));
        }
        300..=399 => match r.location {
            Some(loc) => Page::Redirect(
                url.join(&loc)
                    .map_err(|e| format!("bad Location '{loc}': {e}")),
            ),
            None => Page::Failed(format!("{} without a Location", status_text(r.status))),
        },
        200..=299 => match r.body {
            Some(body) => {
                let text = String::from_utf8_lossy(&body);
                Page::Html(links::extract(url, &text))
            }
            None => Page::NotHtml(format!(
                "not HTML ({})",
                r.content_type.as_deref().unwrap_or("no content type")
            )),
        },
        s => Page::Failed(status_text(s)),
    })
}

/// Fetches a robots.txt: `Ok(Err(cause))` for a permanent failure, `Err` only for what a
/// retry may fix (5xx, network trouble).
pub async fn fetch_robots(
    fetcher: &Fetcher,
    url: &Url,
) -> Result<Result<Response, String>, FetchError> {
    let r = match fetcher.get(url, any_type).await {
        Ok(r) => r,
        Err(e) if e.transient => return Err(e),
        Err(e) => return Ok(Err(e.cause)),
    };
    if r.status >= 500 || r.status == 429 {
        return Err(FetchError::transient(status_text(r.status)));
    }
    Ok(Ok(r))
}

/// A waker that unparks a thread waiting on a condition variable.
#[derive(Default)]
struct Signal {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        *self.woken.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_one();
    }
}

type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Task handles awaited in completion order from a plain thread, with a timeout.
struct Completions<T> {
    set: FuturesUnordered<Pending<T>>,
    signal: Arc<Signal>,
    waker: Waker,
}

impl<T> Completions<T> {
    fn new() -> Self {
        let signal = Arc::new(Signal::default());
        Self {
            set: FuturesUnordered::new(),
            waker: Waker::from(signal.clone()),
            signal,
        }
    }

    fn push(&mut self, f: impl Future<Output = T> + Send + 'static) {
        self.set.push(Box::pin(f));
    }

    fn len(&self) -> usize {
        self.set.len()
    }

    /// The next finished item, waiting at most until `deadline`.
    fn next_until(&mut self, deadline: Instant) -> Option<T> {
        let mut cx = Context::from_waker(&self.waker);
        loop {
            *self.signal.woken.lock().unwrap_or_else(|e| e.into_inner()) = false;
            match self.set.poll_next_unpin(&mut cx) {
                Poll::Ready(item) => return item,
                Poll::Pending => {}
            }
            let mut woken = self.signal.woken.lock().unwrap_or_else(|e| e.into_inner());
            while !*woken {
                let now = Instant::now();
                if now >= deadline {
                    return None;
                }
                woken = self
                    .signal
                    .cv
                    .wait_timeout(woken, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }

    /// A finished item if one is ready now.
    fn try_next(&mut self) -> Option<T> {
        self.next_until(Instant::now())
    }
}

enum RobotsState {
    Unknown,
    Pending,
    Ready(Rules),
}

struct Host {
    /// Scheme, host and port, for the robots.txt URL.
    origin: Url,
    robots: RobotsState,
    outstanding: usize,
    /// Set when the host asks for a crawl delay: no request before this instant.
    next_at: Option<Instant>,
}

enum Done {
    Robots(String, Result<Result<Response, String>, TaskError>),
    /// The host, the entry, attempts made, and the outcome.
    Page(String, Entry, Arc<AtomicU32>, Result<Page, TaskError>),
}

/// Renders a task error for the report: the fetch's own cause when it has one.
fn task_cause(e: &TaskError) -> String {
    if e.is_failed()
        && let Some(src) = std::error::Error::source(e)
    {
        if let Some(f) = src.downcast_ref::<FetchError>() {
            return f.cause.clone();
        }
        return src.to_string();
    }
    e.to_string()
}

/// The crawl loop's state.
struct Crawler {
    exec: Arc<dyn Executor>,
    fetcher: Arc<Fetcher>,
    config: CrawlConfig,
    frontier: Frontier,
    hosts: HashMap<String, Host>,
    order: Vec<String>,
    rr: usize,
    tasks: Completions<Done>,
    attempts_beyond_first: Arc<AtomicU64>,
    report: CrawlReport,
    progress: ProgressBar,
}

/// Crawls from `config.seeds`, submitting every fetch to `exec`, and reports what happened.
pub fn crawl(exec: Arc<dyn Executor>, config: CrawlConfig) -> anyhow::Result<CrawlReport> {
    let start = Instant::now();
    let fetcher = Arc::new(Fetcher::new(config.fetch.clone())?);
    let mut report = CrawlReport::default();
    let mut seeds = Vec::new();
    for s in &config.seeds {
        match Url::parse(s.trim()) {
            Ok(u) => seeds.push(u),
            Err(e) => {
                tracing::warn!(url = %s, "malformed seed: {e}");
                report.pages_failed += 1;
                report.failures.push(Failure {
                    url: s.clone(),
                    cause: format!("malformed URL: {e}"),
                });
            }
        }
    }
    let scope = match &config.extra_hosts {
        None => Scope::Any,
        Some(extra) => Scope::Hosts(
            seeds
                .iter()
                .map(host_key)
                .chain(extra.iter().cloned())
                .collect::<HashSet<_>>(),
        ),
    };
    let progress = if config.progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} URLs  {msg}",
        )
        .expect("a valid template"),
    );
    let mut c = Crawler {
        exec,
        fetcher: fetcher.clone(),
        frontier: Frontier::new(scope, config.max_urls),
        config,
        hosts: HashMap::new(),
        order: Vec::new(),
        rr: 0,
        tasks: Completions::new(),
        attempts_beyond_first: Arc::new(AtomicU64::new(0)),
        report,
        progress,
    };
    for s in seeds {
        match c.frontier.offer(&s, 0) {
            Admit::Queued => c.note_host(&s),
            Admit::Unsupported(why) => c.fail(s.to_string(), why),
            _ => {}
        }
    }
    c.run();
    c.progress.finish_and_clear();
    let not_fetched = c.frontier.queued_total() as u64;
    let mut r = c.report;
    r.not_fetched = not_fetched;
    r.retries = c.attempts_beyond_first.load(Ordering::SeqCst);
    r.requests = fetcher.requests();
    r.elapsed_s = start.elapsed().as_secs_f64();
    Ok(r)
}

impl Crawler {
    fn note_host(&mut self, url: &Url) {
        let key = host_key(url);
        if !self.hosts.contains_key(&key) {
            self.hosts.insert(
                key.clone(),
                Host {
                    origin: url.clone(),
                    robots: RobotsState::Unknown,
                    outstanding: 0,
                    next_at: None,
                },
            );
            self.order.push(key);
        }
        self.progress.set_length(self.frontier.seen() as u64);
    }

    fn fail(&mut self, url: String, cause: String) {
        tracing::warn!(%url, "failed: {cause}");
        self.report.pages_failed += 1;
        self.report.failures.push(Failure { url, cause });
    }

    fn offer(&mut self, url: &Url, redirects: u32) -> Admit {
        let a = self.frontier.offer(url, redirects);
        match &a {
            Admit::Queued => self.note_host(url),
            Admit::Duplicate => self.report.links_duplicate += 1,
            Admit::OutOfScope => self.report.links_out_of_scope += 1,
            Admit::Unsupported(_) => self.report.links_unsupported += 1,
            Admit::Full => self.report.links_over_budget += 1,
        }
        a
    }

    fn stopping(&self) -> bool {
        self.config
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst))
    }

    fn run(&mut self) {
        loop {
            let stopping = self.stopping();
            if stopping && !self.report.interrupted {
                self.report.interrupted = true;
                tracing::warn!(
                    in_flight = self.tasks.len(),
                    "interrupted: finishing the requests in flight, taking no new ones"
                );
            }
            let wake_at = if stopping { None } else { self.dispatch() };
            if self.tasks.len() == 0 {
                match wake_at {
                    // Only crawl-delayed work is left: wait for it.
                    Some(t) => std::thread::sleep(t.saturating_duration_since(Instant::now())),
                    None => break,
                }
                continue;
            }
            // Wait for a completion, or until a delayed host may be served again.
            // With a stop flag, look at it a few times a second.
            let horizon = if self.config.stop.is_some() {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(3600)
            };
            let deadline = wake_at
                .unwrap_or_else(|| Instant::now() + horizon)
                .min(Instant::now() + horizon);
            if let Some(done) = self.tasks.next_until(deadline) {
                self.complete(done);
                while let Some(done) = self.tasks.try_next() {
                    self.complete(done);
                }
            }
            self.progress.set_message(format!(
                "fetched {}  failed {}  in flight {}",
                self.report.pages_fetched,
                self.report.pages_failed,
                self.tasks.len()
            ));
        }
    }

    /// Submits what the windows and crawl delays allow, round-robin over hosts. Returns the
    /// earliest instant a crawl-delayed host with queued URLs may be served again.
    fn dispatch(&mut self) -> Option<Instant> {
        let mut wake_at: Option<Instant> = None;
        loop {
            let mut progressed = false;
            let n = self.order.len();
            for k in 0..n {
                if self.tasks.len() >= self.config.window {
                    return wake_at;
                }
                let key = self.order[(self.rr + k) % n].clone();
                if self.frontier.queued(&key) == 0 {
                    continue;
                }
                let now = Instant::now();
                let host = self.hosts.get_mut(&key).expect("known host");
                match &host.robots {
                    RobotsState::Unknown => {
                        host.robots = RobotsState::Pending;
                        host.outstanding += 1;
                        self.submit_robots(&key);
                        progressed = true;
                        continue;
                    }
                    RobotsState::Pending => continue,
                    RobotsState::Ready(_) => {}
                }
                let delay = match &host.robots {
                    RobotsState::Ready(r) => r.crawl_delay(),
                    _ => None,
                };
                let window = if delay.is_some() {
                    1
                } else {
                    self.config.window_per_host
                };
                if host.outstanding >= window {
                    continue;
                }
                if let Some(t) = host.next_at.filter(|t| *t > now) {
                    wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
                    continue;
                }
                let Some(entry) = self.frontier.pop(&key) else {
                    continue;
                };
                let host = self.hosts.get_mut(&key).expect("known host");
                let RobotsState::Ready(rules) = &host.robots else {
                    unreachable!("checked above")
                };
                if let Rules::DisallowAll(why) = rules {
                    let why = why.clone();
                    self.fail(entry.url.to_string(), why);
                    self.progress.inc(1);
                    progressed = true;
                    continue;
                }
                if !rules.allowed(&entry.url) {
                    tracing::debug!(url = %entry.url, "disallowed by robots.txt");
                    self.report.robots_disallowed_skipped += 1;
                    self.progress.inc(1);
                    progressed = true;
                    continue;
                }
                host.outstanding += 1;
                if let Some(d) = delay {
                    host.next_at = Some(now + d);
                }
                self.submit_page(key, entry, delay);
                progressed = true;
            }
            self.rr = self.rr.wrapping_add(1);
            if !progressed {
                return wake_at;
            }
        }
    }

    fn submit_robots(&mut self, key: &str) {
        let origin = &self.hosts.get(key).expect("known host").origin;
        let url = origin
            .join("/robots.txt")
            .expect("an http(s) URL takes a path");
        let fetcher = self.fetcher.clone();
        let retries = self.attempts_beyond_first.clone();
        let meta = TaskMeta::new(ROBOTS_TASK).with_key(key);
        let handle: TaskHandle<Result<Response, String>> = self.exec.run_async(meta, move |ctx| {
            let fetcher = fetcher.clone();
            let url = url.clone();
            let retries = retries.clone();
            async move {
                if ctx.attempt() > 1 {
                    retries.fetch_add(1, Ordering::SeqCst);
                }
                fetch_robots(&fetcher, &url).await
            }
        });
        let key = key.to_string();
        self.tasks
            .push(async move { Done::Robots(key, handle.await) });
    }

    /// Submits a page fetch. `crawl_delay` is the host's delay: a retry waits that long
    /// before it asks again, so retries keep the host's spacing too.
    fn submit_page(&mut self, key: String, entry: Entry, crawl_delay: Option<Duration>) {
        let fetcher = self.fetcher.clone();
        let retries = self.attempts_beyond_first.clone();
        let url = entry.url.clone();
        let attempts = Arc::new(AtomicU32::new(0));
        let seen_attempts = attempts.clone();
        let meta = TaskMeta::new(FETCH_TASK).with_key(key.as_str());
        let handle: TaskHandle<Page> = self.exec.run_async(meta, move |ctx| {
            let fetcher = fetcher.clone();
            let url = url.clone();
            let retries = retries.clone();
            seen_attempts.fetch_max(ctx.attempt(), Ordering::SeqCst);
            async move {
                if ctx.attempt() > 1 {
                    retries.fetch_add(1, Ordering::SeqCst);
                    if let Some(d) = crawl_delay {
                        tokio::time::sleep(d).await;
                    }
                }
                fetch_page(&fetcher, &url).await
            }
        });
        self.tasks
            .push(async move { Done::Page(key, entry, attempts, handle.await) });
    }

    fn complete(&mut self, done: Done) {
        match done {
            Done::Robots(key, result) => {
                let rules = match result.map_err(|e| task_cause(&e)).and_then(|r| r) {
                    Ok(r) if (200..300).contains(&r.status) => {
                        self.report.robots_fetched += 1;
                        let (rules, why) = Rules::parse(r.body.as_deref().unwrap_or_default());
                        if let Some(why) = why {
                            tracing::warn!(host = %key, "{why}; allowing everything");
                        }
                        rules
                    }
                    Ok(r) => {
                        tracing::info!(host = %key, "robots.txt answered {}; allowing everything", status_text(r.status));
                        Rules::AllowAll
                    }
                    Err(e) => {
                        let cause = format!("host skipped: robots.txt unavailable: {e}");
                        tracing::warn!(host = %key, "{cause}");
                        Rules::DisallowAll(cause)
                    }
                };
                if let Some(d) = rules.crawl_delay() {
                    tracing::info!(host = %key, "crawl delay {d:?}");
                }
                let host = self.hosts.get_mut(&key).expect("known host");
                host.outstanding -= 1;
                host.robots = RobotsState::Ready(rules);
            }
            Done::Page(key, entry, attempts, result) => {
                self.hosts.get_mut(&key).expect("known host").outstanding -= 1;
                self.progress.inc(1);
                match result {
                    Ok(Page::Html(l)) => {
                        self.report.pages_fetched += 1;
                        self.report.fetched.push(entry.url.to_string());
                        for (href, why) in &l.malformed {
                            tracing::debug!(page = %entry.url, %href, "malformed link: {why}");
                        }
                        self.report.links_malformed += l.malformed.len() as u64;
                        for u in &l.urls {
                            self.offer(u, 0);
                        }
                    }
                    Ok(Page::Redirect(Ok(target))) => {
                        self.report.redirects += 1;
                        if entry.redirects + 1 > self.config.max_redirects {
                            self.fail(
                                entry.url.to_string(),
                                format!(
                                    "redirect chain longer than {} hops",
                                    self.config.max_redirects
                                ),
                            );
                        } else if self.offer(&target, entry.redirects + 1) == Admit::Duplicate {
                            tracing::debug!(from = %entry.url, to = %target, "redirect to a URL already seen (a loop, or a known page)");
                        }
                    }
                    Ok(Page::Redirect(Err(why))) => {
                        self.fail(entry.url.to_string(), why);
                    }
                    Ok(Page::NotHtml(why)) => {
                        tracing::info!(url = %entry.url, "skipped: {why}");
                        self.report.pages_skipped += 1;
                    }
                    Ok(Page::Failed(cause)) => {
                        self.fail(entry.url.to_string(), cause);
                    }
                    Err(e) => {
                        let n = attempts.load(Ordering::SeqCst);
                        let cause = match n {
                            0 => format!("{} (never started)", task_cause(&e)),
                            1 => task_cause(&e),
                            n => format!("{} (after {n} attempts)", task_cause(&e)),
                        };
                        self.fail(entry.url.to_string(), cause);
                    }
                }
            }
        }
    }
}
