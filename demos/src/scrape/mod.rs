//! Demo `scrape`: a polite concurrent crawler, routed by policy, proven against a local
//! multi-host site it serves itself.
//!
//! `demos scrape` starts the test site ([`site`]), crawls it from host 0's root with the
//! crawler ([`crawl`]) on the executor the policy file describes, and prints a summary
//! next to what the site's referee counted. `--https` serves the site over https with a
//! certificate made at start ([`tls`]), which the crawler trusts. `--seeds URL...` or
//! `--urls FILE` crawl those instead, through the same code (`--ca-cert FILE` trusts more
//! roots). `demos scrape bench` measures throughput against the
//! bound set by the per-host limits ([`bench`](mod@bench)).

pub mod bench;
pub mod crawl;
pub mod fetch;
pub mod frontier;
pub mod links;
pub mod robots;
pub mod site;
pub mod tls;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use executor_core::Executor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The shipped policy files, embedded so the demo runs from any directory.
pub const POLICY_THREADS: (&str, &str) = (
    "scrape-threads.toml",
    include_str!("../../policies/scrape-threads.toml"),
);
/// See [`POLICY_THREADS`].
pub const POLICY_TOKIO: (&str, &str) = (
    "scrape-tokio.toml",
    include_str!("../../policies/scrape-tokio.toml"),
);
/// See [`POLICY_THREADS`].
pub const POLICY_RAYON: (&str, &str) = (
    "scrape-rayon.toml",
    include_str!("../../policies/scrape-rayon.toml"),
);

/// What the demo logs when `RUST_LOG` is not set: the crawler's own warnings (each URL
/// given up on, hosts skipped); the supervisor, which repeats each final failure at warn,
/// only for errors.
pub const LOG_FILTER: &str = "warn,supervisor=error";

/// Command line of `demos scrape`.
#[derive(Parser, Debug)]
#[command(
    name = "demos scrape",
    bin_name = "demos scrape",
    about = "A polite concurrent crawler against a local multi-host site (or real URLs)"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Throughput against the bound set by per-host limits, for each shipped policy.
    Bench(bench::BenchArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Policy file (default: the embedded scrape-tokio.toml).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Crawl these URLs instead of the local test site.
    #[arg(long, num_args = 1..)]
    seeds: Vec<String>,
    /// Crawl the URLs in this file (one a line, `#` comments) instead of the local site.
    #[arg(long)]
    urls: Option<PathBuf>,
    /// Follow links to any host (default: only the seeds' hosts).
    #[arg(long)]
    any_host: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Timeout of one HTTP request.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// At most this many distinct URLs.
    #[arg(long, default_value_t = 10_000)]
    max_urls: usize,
    /// Redirect hops followed from one URL.
    #[arg(long, default_value_t = 5)]
    max_redirects: u32,
    /// Bodies larger than this many bytes are refused.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    max_body: usize,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Serve the local site over https, with a self-signed certificate made at start
    /// that the crawler trusts.
    #[arg(long)]
    https: bool,
    /// Trust this PEM certificate (or bundle) as a root for https, besides the system's.
    #[arg(long, value_name = "FILE")]
    ca_cert: Vec<PathBuf>,
    #[command(flatten)]
    site: SiteArgs,
}

/// Shape of the local test site.
#[derive(Args, Debug, Clone)]
pub struct SiteArgs {
    /// Hosts of the local site.
    #[arg(long, default_value_t = 4)]
    pub hosts: usize,
    /// Pages per host.
    #[arg(long, default_value_t = 150)]
    pub pages: usize,
    /// Latency of every answer.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Share of pages answering 503 before they recover.
    #[arg(long, default_value_t = 0.05)]
    pub error_share: f64,
    /// Share of pages whose first request stalls past the client timeout.
    #[arg(long, default_value_t = 0.02)]
    pub stall_share: f64,
    /// Share of pages answering 500 every time.
    #[arg(long, default_value_t = 0.02)]
    pub broken_share: f64,
}

/// An executor built from a policy file, and what the crawl reports about it.
pub struct Loaded {
    /// Where fetch tasks go.
    pub exec: Arc<dyn Executor>,
    /// The per-host concurrency limit the policy sets for fetch tasks, if any.
    pub per_host_limit: Option<u32>,
    /// The per-host rate limit (requests per second), if any.
    pub per_host_rate: Option<f64>,
    /// The executor the policy routes fetch tasks to.
    pub executor_name: String,
}

/// Loads a policy from its text; `origin` names it in errors.
pub fn load_policy(origin: &str, text: &str) -> Result<Loaded> {
    policy::load(origin, text)
}

/// Loads a policy file (or the embedded default).
fn load_policy_arg(path: Option<&Path>) -> Result<(String, Loaded)> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading policy file {}", p.display()))?;
            let origin = p.display().to_string();
            Ok((origin.clone(), load_policy(&origin, &text)?))
        }
        None => Ok((
            format!("{} (embedded)", POLICY_TOKIO.0),
            load_policy(POLICY_TOKIO.0, POLICY_TOKIO.1)?,
        )),
    }
}

mod policy;

/// Parses `args` (`args[0]` is the demo name) and runs the demo; a usage error is
/// returned as the error.
pub fn main(args: Vec<String>) -> Result<()> {
    Cli::try_parse_from(args)?.run()
}

impl Cli {
    /// Runs the demo (or its benchmark).
    pub fn run(self) -> Result<()> {
        match self.cmd {
            Some(Cmd::Bench(b)) => bench::run(&b),
            None => run(self.run),
        }
    }
}

fn read_url_file(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

fn run(args: RunArgs) -> Result<()> {
    let (origin, loaded) = load_policy_arg(args.policy.as_deref())?;
    let mut seeds = args.seeds.clone();
    if let Some(f) = &args.urls {
        seeds.extend(read_url_file(f)?);
    }
    let own_site = seeds.is_empty() && args.urls.is_none();
    anyhow::ensure!(
        own_site || !args.https,
        "--https serves the local site; real URLs say their own scheme"
    );
    let mut extra_roots = Vec::new();
    for f in &args.ca_cert {
        extra_roots.push(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading certificate {}", f.display()))?,
        );
    }
    anyhow::ensure!(
        own_site || !seeds.is_empty(),
        "no URLs to crawl in {}",
        args.urls.as_deref().unwrap_or(Path::new("")).display()
    );
    let site = if own_site {
        let cfg = site::SiteConfig {
            hosts: args.site.hosts,
            pages_per_host: args.site.pages,
            latency: args.site.latency,
            transient_share: args.site.error_share,
            stall_share: args.site.stall_share,
            broken_share: args.site.broken_share,
            stall: args.timeout * 3,
            ..site::SiteConfig::default()
        };
        let s = if args.https {
            let cert = tls::self_signed(&["127.0.0.1", "localhost"])?;
            extra_roots.push(cert.cert_pem);
            site::Site::start_tls(cfg, cert.server)
        } else {
            site::Site::start(cfg)
        }
        .context("starting the local test site")?;
        seeds = vec![s.roots()[0].clone()];
        Some(s)
    } else {
        None
    };
    let extra_hosts = if args.any_host {
        None
    } else {
        Some(site.as_ref().map_or_else(Vec::new, |s| {
            let mut v = s.authorities().to_vec();
            v.push(s.dead_authority().to_string());
            v
        }))
    };
    let window_per_host = window_for(loaded.per_host_limit);
    let config = crawl::CrawlConfig {
        seeds,
        extra_hosts,
        max_urls: args.max_urls,
        max_redirects: args.max_redirects,
        fetch: fetch::FetchConfig {
            timeout: args.timeout,
            max_body: args.max_body,
            user_agent: format!("{}/0.1", robots::USER_AGENT),
            extra_roots,
        },
        window_per_host,
        window: 4096,
        progress: !args.no_progress && !args.json,
        stop: Some(ctrl_c_flag()),
    };
    let report = crawl::crawl(loaded.exec.clone(), config)?;
    let referee = site.as_ref().map(site::Site::referee);
    let summary = Summary::new(&origin, &loaded, &report, referee.as_ref());
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary.render(&report, referee.as_ref()));
    }
    policy::shutdown(&loaded);
    Ok(())
}

/// A flag raised by the first Ctrl-C (the crawl then winds down gracefully); a second
/// Ctrl-C ends the process at once.
fn ctrl_c_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let raised = flag.clone();
    let spawned = std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("\nCtrl-C: finishing requests in flight (Ctrl-C again to quit now)");
                    raised.store(true, Ordering::SeqCst);
                    if tokio::signal::ctrl_c().await.is_ok() {
                        std::process::exit(130);
                    }
                }
            });
        });
    if let Err(e) = spawned {
        tracing::warn!("no Ctrl-C handling: {e}");
    }
    flag
}

/// Tasks the crawler keeps outstanding per host: twice the policy's limit, so the limit
/// (not the crawler) is what binds, while a large host cannot flood the executor.
pub fn window_for(per_host_limit: Option<u32>) -> usize {
    per_host_limit.map_or(32, |c| 2 * c as usize)
}

/// The summary the demo prints (`--json` prints exactly this).
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    /// HTML pages fetched.
    pub pages_fetched: u64,
    /// URLs given up on.
    pub pages_failed: u64,
    /// Task attempts beyond the first.
    pub retries: u64,
    /// Requests to disallowed paths, as counted by the local site (`null` for real URLs).
    pub robots_disallowed_fetched: Option<u64>,
    /// Highest concurrency any host saw, as counted by the local site (`null` for real URLs).
    pub max_concurrency_per_host_observed: Option<usize>,
    /// The policy's per-host concurrency limit for fetch tasks.
    pub per_host_limit: Option<u32>,
    /// The policy's per-host rate limit for fetch tasks, requests per second.
    pub per_host_rate: Option<f64>,
    /// Wall time of the crawl.
    pub elapsed_s: f64,
    /// HTTP requests per second (every attempt, robots.txt included).
    pub requests_per_s: f64,
    /// Answers that were not HTML.
    pub pages_skipped: u64,
    /// Redirects followed.
    pub redirects: u64,
    /// URLs left alone because robots.txt disallows them.
    pub robots_disallowed_skipped: u64,
    /// HTTP requests sent.
    pub requests: u64,
    /// The policy file.
    pub policy: String,
    /// The executor fetch tasks were routed to.
    pub executor: String,
    /// Whether Ctrl-C stopped the crawl early.
    pub interrupted: bool,
    /// URLs still queued when the crawl ended.
    pub not_fetched: u64,
    /// Every failure with its cause.
    pub failures: Vec<crawl::Failure>,
}

impl Summary {
    /// The summary of one crawl.
    pub fn new(
        policy: &str,
        loaded: &Loaded,
        r: &crawl::CrawlReport,
        referee: Option<&site::RefereeReport>,
    ) -> Self {
        Summary {
            pages_fetched: r.pages_fetched,
            pages_failed: r.pages_failed,
            retries: r.retries,
            robots_disallowed_fetched: referee.map(site::RefereeReport::disallowed_hits),
            max_concurrency_per_host_observed: referee.map(site::RefereeReport::max_concurrent),
            per_host_limit: loaded.per_host_limit,
            per_host_rate: loaded.per_host_rate,
            elapsed_s: r.elapsed_s,
            requests_per_s: r.requests as f64 / r.elapsed_s.max(1e-9),
            pages_skipped: r.pages_skipped,
            redirects: r.redirects,
            robots_disallowed_skipped: r.robots_disallowed_skipped,
            requests: r.requests,
            policy: policy.to_string(),
            executor: loaded.executor_name.clone(),
            interrupted: r.interrupted,
            not_fetched: r.not_fetched,
            failures: r.failures.clone(),
        }
    }

    fn render(&self, r: &crawl::CrawlReport, referee: Option<&site::RefereeReport>) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let opt = |v: Option<u32>| v.map_or("none".to_string(), |v| v.to_string());
        let _ = writeln!(
            s,
            "scrape: {} pages in {:.2} s, policy {} (executor '{}')",
            self.pages_fetched, self.elapsed_s, self.policy, self.executor
        );
        let rows: Vec<(&str, String)> = vec![
            ("pages fetched", self.pages_fetched.to_string()),
            ("pages failed", self.pages_failed.to_string()),
            ("pages skipped (not HTML)", self.pages_skipped.to_string()),
            ("redirects followed", self.redirects.to_string()),
            ("retries", self.retries.to_string()),
            ("robots.txt fetched", r.robots_fetched.to_string()),
            (
                "URLs disallowed by robots",
                self.robots_disallowed_skipped.to_string(),
            ),
            (
                "links malformed/unsupported",
                format!("{}/{}", r.links_malformed, r.links_unsupported),
            ),
            (
                "links off-scope/dup/over budget",
                format!(
                    "{}/{}/{}",
                    r.links_out_of_scope, r.links_duplicate, r.links_over_budget
                ),
            ),
            ("requests", self.requests.to_string()),
            ("requests per second", format!("{:.1}", self.requests_per_s)),
            ("per-host limit (policy)", opt(self.per_host_limit)),
            (
                "per-host rate (policy)",
                self.per_host_rate
                    .map_or("none".to_string(), |r| format!("{r:.1}/s")),
            ),
        ];
        if self.interrupted {
            let _ = writeln!(
                s,
                "  interrupted by Ctrl-C: {} queued URLs not fetched",
                self.not_fetched
            );
        }
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<32} {v}");
        }
        if let Some(rf) = referee {
            let _ = writeln!(
                s,
                "referee (the site's own counts):\n  {:<24} {:>8} {:>14} {:>15} {:>12}",
                "host", "requests", "max concurrent", "disallowed hits", "min gap ms"
            );
            for h in &rf.hosts {
                let gap = h.min_gap_ms.map_or("-".to_string(), |g| format!("{g:.1}"));
                let _ = writeln!(
                    s,
                    "  {:<24} {:>8} {:>14} {:>15} {:>12}",
                    h.authority, h.requests, h.max_concurrent, h.disallowed_hits, gap
                );
            }
        }
        if !self.failures.is_empty() {
            let _ = writeln!(s, "failures ({}):", self.failures.len());
            for f in &self.failures {
                let _ = writeln!(s, "  {}  {}", f.url, f.cause);
            }
        }
        s
    }
}
