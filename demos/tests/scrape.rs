//! Integration tests of demo `scrape`: crawl a small local site under each shipped policy
//! and check the crawl against the site's own referee.

use demos::scrape::crawl::{self, CrawlConfig, CrawlReport};
use demos::scrape::fetch::FetchConfig;
use demos::scrape::site::{Site, SiteConfig};
use demos::scrape::{Loaded, POLICY_THREADS, POLICY_TOKIO, load_policy, window_for};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// Longest a single crawl may take before the test fails instead of hanging.
const BOUND: Duration = Duration::from_secs(50);

fn small_site() -> SiteConfig {
    SiteConfig {
        hosts: 3,
        pages_per_host: 16,
        latency: Duration::from_millis(2),
        transient_share: 0.15,
        transient_failures: 1,
        stall_share: 0.08,
        stall: Duration::from_secs(5),
        broken_share: 0.08,
        links_per_page: 4,
        cross_links_per_page: 1,
        crawl_delay: Some(0.005),
        index_links_all: false,
        traps: true,
        seed: 11,
    }
}

fn config(seeds: Vec<String>, extra_hosts: Option<Vec<String>>, loaded: &Loaded) -> CrawlConfig {
    CrawlConfig {
        seeds,
        extra_hosts,
        max_urls: 5_000,
        max_redirects: 5,
        fetch: FetchConfig {
            timeout: Duration::from_secs(1),
            max_body: 1024 * 1024,
            user_agent: "switchyard-scrape-test".into(),
        },
        window_per_host: window_for(loaded.per_host_limit),
        window: 1024,
        progress: false,
        stop: None,
    }
}

/// Runs a crawl on another thread and fails the test if it does not end within `BOUND`.
fn crawl_bounded(loaded: &Loaded, cfg: CrawlConfig) -> CrawlReport {
    let exec = loaded.exec.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(crawl::crawl(exec, cfg));
    });
    rx.recv_timeout(BOUND)
        .expect("the crawl ended within the bound")
        .expect("the crawl ran")
}

fn failure_cause<'a>(r: &'a CrawlReport, url: &str) -> &'a str {
    r.failures
        .iter()
        .find(|f| f.url == url)
        .map(|f| f.cause.as_str())
        .unwrap_or_else(|| panic!("no failure reported for {url}: {:#?}", r.failures))
}

fn check_policy(policy: (&str, &str), want_async: bool) {
    let site = Site::start(small_site()).unwrap();
    let exp = site.expectation();
    assert!(
        !exp.flaky.is_empty() && !exp.stalled.is_empty() && !exp.broken.is_empty(),
        "the seed gives a site with every kind of trouble: {exp:?}"
    );
    let loaded = load_policy(policy.0, policy.1).unwrap();
    let limit = loaded
        .per_host_limit
        .expect("the policy sets a per-host limit") as usize;
    let mut extra = site.authorities().to_vec();
    extra.push(site.dead_authority().to_string());
    let r = crawl_bounded(
        &loaded,
        config(vec![site.roots()[0].clone()], Some(extra), &loaded),
    );
    let referee = site.referee();
    let roots = site.roots();
    let url = |h: usize, p: &str| format!("{}{}", roots[h], &p[1..]);

    // Every allowed reachable page fetched exactly once (as the server counts 2xx answers),
    // and nothing else fetched as a page but the malformed-links trap.
    for (h, p) in &exp.html_pages {
        assert_eq!(
            site.path_count(*h, p).ok,
            1,
            "{} answered 200 once",
            url(*h, p)
        );
    }
    let fetched: BTreeSet<&str> = r.fetched.iter().map(String::as_str).collect();
    assert_eq!(fetched.len(), r.fetched.len(), "no page fetched twice");
    let mut want: BTreeSet<String> = exp.html_pages.iter().map(|(h, p)| url(*h, p)).collect();
    want.insert(url(0, "/trap/malformed"));
    let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(fetched, want);
    for h in 0..site.authorities().len() {
        assert_eq!(
            site.path_count(h, "/robots.txt").requests,
            1,
            "robots.txt once"
        );
    }

    // No disallowed path fetched, though the site links to them.
    assert_eq!(referee.disallowed_hits(), 0, "{referee:?}");
    assert!(r.robots_disallowed_skipped > 0);

    // Per-host concurrency seen by the server never above the policy's limit.
    for h in &referee.hosts {
        assert!(h.max_concurrent <= limit, "{h:?} above limit {limit}");
    }

    // Transient 5xx and stalls retried and recovered.
    for (h, p) in exp.flaky.iter().chain(&exp.stalled) {
        let c = site.path_count(*h, p);
        assert!(
            c.requests >= 2 && c.ok == 1,
            "{} recovered: {c:?}",
            url(*h, p)
        );
    }
    assert!(r.retries >= (exp.flaky.len() + exp.stalled.len()) as u64);

    // Permanent failures reported with their cause.
    for (h, p) in &exp.broken {
        let cause = failure_cause(&r, &url(*h, p));
        assert!(
            cause.contains("500") && cause.contains("attempts"),
            "{cause}"
        );
        assert!(site.path_count(*h, p).requests >= 2, "a 500 is retried");
    }
    assert!(failure_cause(&r, &url(0, "/trap/missing")).contains("404"));
    assert!(failure_cause(&r, &url(0, "/trap/huge")).contains("cap"));
    assert!(failure_cause(&r, &url(0, "/trap/chain/5")).contains("redirect chain"));
    let dead = format!("http://{}/", site.dead_authority());
    assert!(failure_cause(&r, &dead).contains("robots.txt unavailable"));
    assert_eq!(r.pages_skipped, 1, "the binary trap is skipped, not parsed");
    assert!(r.links_malformed >= 3 && r.links_unsupported >= 3, "{r:?}");
    assert_eq!(
        r.pages_failed as usize,
        exp.broken.len() + 4,
        "{:#?}",
        r.failures
    );

    // Every backend now polls async tasks in a tokio context, so the async client serves
    // every policy (`want_async` keeps the policies' intent for the reader).
    let _ = want_async;
    assert!(r.requests_async > 0 && r.requests_blocking == 0, "{r:?}");
}

#[test]
fn threads_policy_crawls_politely_and_completely() {
    check_policy(POLICY_THREADS, false);
}

#[test]
fn tokio_policy_crawls_politely_and_completely() {
    check_policy(POLICY_TOKIO, true);
}

#[test]
fn bad_seeds_are_reported_not_fatal() {
    let loaded = load_policy(POLICY_THREADS.0, POLICY_THREADS.1).unwrap();
    // A port where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let seeds = vec![
        "not a url".to_string(),
        "http://[::1".to_string(),
        "ftp://127.0.0.1/file".to_string(),
        format!("http://{dead}/"),
    ];
    let r = crawl_bounded(&loaded, config(seeds, None, &loaded));
    assert_eq!(r.pages_fetched, 0);
    assert_eq!(r.pages_failed, 4, "{:#?}", r.failures);
    assert!(failure_cause(&r, "not a url").contains("malformed"));
    assert!(failure_cause(&r, "http://[::1").contains("malformed"));
    assert!(failure_cause(&r, "ftp://127.0.0.1/file").contains("scheme"));
    assert!(failure_cause(&r, &format!("http://{dead}/")).contains("robots.txt unavailable"));
}

#[test]
fn json_summary_has_the_promised_fields() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_demos"))
        .args([
            "scrape",
            "--json",
            "--hosts",
            "2",
            "--pages",
            "12",
            "--latency",
            "1ms",
            "--timeout",
            "300ms",
            "--policy",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies/scrape-threads.toml"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "pages_fetched",
        "pages_failed",
        "retries",
        "robots_disallowed_fetched",
        "max_concurrency_per_host_observed",
        "per_host_limit",
        "elapsed_s",
        "requests_per_s",
    ] {
        assert!(v.get(k).is_some_and(|x| !x.is_null()), "{k} in {v}");
    }
    assert!(v["pages_fetched"].as_u64().unwrap() > 12);
    assert_eq!(v["robots_disallowed_fetched"].as_u64(), Some(0));
    assert!(
        v["max_concurrency_per_host_observed"].as_u64() <= v["per_host_limit"].as_u64(),
        "{v}"
    );
}

#[test]
fn a_bad_policy_file_stops_the_demo_with_its_position() {
    let path = std::env::temp_dir().join(format!("scrape-bad-policy-{}.toml", std::process::id()));
    let text = POLICY_THREADS
        .1
        .replace("rate = \"100/s\"", "rate = \"0/s\"");
    assert_ne!(
        text, POLICY_THREADS.1,
        "the shipped policy has a rate to break"
    );
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_demos"))
        .args(["scrape", "--policy"])
        .arg(&path)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = POLICY_THREADS
        .1
        .lines()
        .position(|l| l.contains("rate ="))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("{}:{line}:", path.display())) && err.contains("rate"),
        "{err}"
    );
}

#[test]
fn a_raised_stop_flag_winds_the_crawl_down_gracefully() {
    let site = Site::start(SiteConfig {
        latency: Duration::from_millis(30),
        transient_share: 0.0,
        stall_share: 0.0,
        broken_share: 0.0,
        traps: false,
        ..small_site()
    })
    .unwrap();
    let loaded = load_policy(POLICY_TOKIO.0, POLICY_TOKIO.1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut cfg = config(
        vec![site.roots()[0].clone()],
        Some(site.authorities().to_vec()),
        &loaded,
    );
    cfg.stop = Some(stop.clone());
    let raiser = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            stop.store(true, Ordering::SeqCst);
        })
    };
    let r = crawl_bounded(&loaded, cfg);
    raiser.join().unwrap();
    assert!(r.interrupted);
    assert!(r.not_fetched > 0, "{r:?}");
    assert!((r.pages_fetched as usize) < site.expectation().html_pages.len());
    // Requests in flight were finished, not abandoned: nothing is left on the server, and
    // every request the server answered is accounted for by the crawler.
    for h in 0..site.authorities().len() {
        assert_eq!(site.in_flight(h), 0);
    }
    assert_eq!(site.referee().requests(), r.requests);
}
