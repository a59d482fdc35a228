//! `demos scrape bench`: crawl throughput against the bound the per-host limits allow.
//!
//! A site of H hosts answers every request after a fixed latency L. With a per-host
//! concurrency limit c no crawler can beat H*c/L requests per second; with a per-host rate
//! limit r, none can beat H*r. For each shipped policy (its `limit` line set to the
//! benchmark's values) the benchmark crawls the site and prints the achieved rate, its
//! ratio to the bound, and what the site's referee saw (per-host concurrency, disallowed
//! fetches), taking the median of a few runs.

use super::crawl::{self, CrawlConfig};
use super::fetch::FetchConfig;
use super::site::{Site, SiteConfig};
use super::{POLICY_RAYON, POLICY_THREADS, POLICY_TOKIO, load_policy, policy, window_for};
use anyhow::{Context, Result};
use clap::Args;
use std::time::Duration;

/// Benchmark settings.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Hosts (H).
    #[arg(long, default_value_t = 4)]
    pub hosts: usize,
    /// Per-host concurrency limit (c).
    #[arg(long, default_value_t = 8)]
    pub limit: u32,
    /// Per-host rate limit for the second measurement, requests per second (r).
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// Latency of every answer (L).
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Pages per host for the concurrency-bound runs.
    #[arg(long, default_value_t = 1500)]
    pub pages: usize,
    /// Pages per host for the rate-bound runs.
    #[arg(long, default_value_t = 100)]
    pub rate_pages: usize,
    /// Runs per measurement; the median is printed.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// One measurement.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Requests per second achieved.
    pub rate: f64,
    /// Highest per-host concurrency the site saw.
    pub max_concurrent: usize,
    /// Requests to disallowed paths.
    pub disallowed: u64,
    /// Pages fetched.
    pub pages: u64,
    /// Pages failed.
    pub failed: u64,
    /// Mean time the site took per answer, in milliseconds.
    pub service_ms: f64,
}

/// Replaces the `limit = ...` line of a shipped policy with the benchmark's limit.
pub fn with_limit(policy: &str, limit: &str) -> String {
    policy
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("limit =") {
                format!("limit = {limit}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn site(args: &BenchArgs, pages: usize) -> Result<Site> {
    Site::start(SiteConfig {
        hosts: args.hosts,
        pages_per_host: pages,
        latency: args.latency,
        transient_share: 0.0,
        stall_share: 0.0,
        broken_share: 0.0,
        crawl_delay: None,
        index_links_all: true,
        traps: false,
        ..SiteConfig::default()
    })
}

/// Crawls `site` once under `policy_text` and measures.
pub fn measure(site: &Site, origin: &str, policy_text: &str) -> Result<Measurement> {
    site.reset_referee();
    let loaded = load_policy(origin, policy_text)?;
    let cfg = CrawlConfig {
        seeds: site.roots(),
        extra_hosts: Some(Vec::new()),
        max_urls: 1_000_000,
        max_redirects: 5,
        fetch: FetchConfig {
            timeout: Duration::from_secs(5),
            max_body: 4 * 1024 * 1024,
            user_agent: "switchyard-scrape-bench".into(),
            extra_roots: Vec::new(),
        },
        window_per_host: window_for(loaded.per_host_limit),
        window: 1 << 16,
        progress: false,
        stop: None,
    };
    let r = crawl::crawl(loaded.exec.clone(), cfg)?;
    policy::shutdown(&loaded);
    let referee = site.referee();
    Ok(Measurement {
        rate: r.requests as f64 / r.elapsed_s,
        max_concurrent: referee.max_concurrent(),
        disallowed: referee.disallowed_hits(),
        pages: r.pages_fetched,
        failed: r.pages_failed,
        service_ms: referee.mean_service_ms().unwrap_or(f64::NAN),
    })
}

fn median(mut v: Vec<Measurement>) -> Measurement {
    v.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let worst_conc = v.iter().map(|m| m.max_concurrent).max().unwrap_or(0);
    let disallowed = v.iter().map(|m| m.disallowed).sum();
    let mut m = v[v.len() / 2].clone();
    m.max_concurrent = worst_conc;
    m.disallowed = disallowed;
    m
}

/// Runs the benchmark and prints a table.
pub fn run(args: &BenchArgs) -> Result<()> {
    anyhow::ensure!(args.hosts >= 1 && args.limit >= 1 && args.rate >= 1 && args.runs >= 1);
    let h = args.hosts as f64;
    let conc_bound = h * f64::from(args.limit) / args.latency.as_secs_f64();
    let rate_bound = h * f64::from(args.rate);
    println!(
        "scrape bench: H={} hosts, latency {:?}, {} runs per row (median; max concurrency is the worst run)",
        args.hosts, args.latency, args.runs
    );
    println!(
        "{:<9} {:<14} {:>6} {:>8} {:>8} {:>6} {:>8} {:>10} {:>6} {:>10} {:>8}",
        "policy",
        "limit",
        "pages",
        "req/s",
        "bound",
        "ratio",
        "max conc",
        "disallowed",
        "failed",
        "site ms/req",
        "ratio*"
    );
    let big = site(args, args.pages).context("starting the benchmark site")?;
    let small = site(args, args.rate_pages).context("starting the benchmark site")?;
    let mut violations = 0;
    for (name, (origin, text)) in [
        ("threads", POLICY_THREADS),
        ("rayon", POLICY_RAYON),
        ("tokio", POLICY_TOKIO),
    ] {
        let rows = [
            (
                &big,
                format!("{{ per = \"key\", concurrency = {} }}", args.limit),
                format!("c={}", args.limit),
                conc_bound,
                false,
            ),
            (
                &small,
                format!(
                    "{{ per = \"key\", concurrency = {}, rate = \"{}/s\" }}",
                    args.limit, args.rate
                ),
                format!("c={} r={}/s", args.limit, args.rate),
                rate_bound,
                true,
            ),
        ];
        for (site, limit, label, bound, rate_bound) in rows {
            let policy_text = with_limit(text, &limit);
            let runs = (0..args.runs)
                .map(|_| measure(site, origin, &policy_text))
                .collect::<Result<Vec<_>>>()?;
            let m = median(runs);
            if m.max_concurrent > args.limit as usize || m.disallowed > 0 {
                violations += 1;
            }
            // The bound again with the latency the site really delivered (timer granularity
            // and a busy machine make it longer than configured): what the crawler itself
            // leaves on the table.
            let real_bound = if rate_bound {
                bound
            } else {
                h * f64::from(args.limit) / (m.service_ms / 1000.0)
            };
            println!(
                "{:<9} {:<14} {:>6} {:>8.1} {:>8.1} {:>6.3} {:>8} {:>10} {:>6} {:>10.2} {:>8.3}",
                name,
                label,
                m.pages,
                m.rate,
                bound,
                m.rate / bound,
                m.max_concurrent,
                m.disallowed,
                m.failed,
                m.service_ms,
                m.rate / real_bound
            );
        }
    }
    println!("limit violations seen by the server: {violations} (target: 0; ratio target >= 0.9)");
    Ok(())
}
