//! Tests of the scrape demo's local test site: the referee must count what really happened,
//! since the crawler's tests trust it.

use demos::scrape::site::{PageKind, Site, SiteConfig};
use std::sync::{Arc, Barrier};
use std::time::Duration;

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

fn get(agent: &ureq::Agent, url: &str) -> Result<(u16, String), ureq::Error> {
    let mut r = agent.get(url).call()?;
    let status = r.status().as_u16();
    Ok((status, r.body_mut().read_to_string().unwrap_or_default()))
}

fn config() -> SiteConfig {
    SiteConfig {
        hosts: 2,
        pages_per_host: 40,
        latency: Duration::from_millis(300),
        transient_share: 0.2,
        stall_share: 0.2,
        broken_share: 0.1,
        stall: Duration::from_secs(20),
        ..SiteConfig::default()
    }
}

fn find(site: &Site, kind: PageKind) -> (usize, usize) {
    (0..2)
        .flat_map(|h| (0..40).map(move |p| (h, p)))
        .find(|&(h, p)| site.kind(h, p) == kind)
        .expect("the site has a page of every kind")
}

#[test]
fn referee_counts_concurrency_and_disallowed_hits() {
    let site = Site::start(config()).unwrap();
    let root = site.roots()[1].clone();
    let n = 6;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let url = format!("{root}private/{i}");
            let b = barrier.clone();
            std::thread::spawn(move || {
                let a = agent(Duration::from_secs(10));
                b.wait();
                get(&a, &url).unwrap().0
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let r = site.referee();
    // Six requests that each take 300 ms and start together overlap on the server.
    assert!(r.hosts[1].max_concurrent >= 2, "{r:?}");
    assert!(r.hosts[1].max_concurrent <= n, "{r:?}");
    assert_eq!(r.hosts[1].disallowed_hits, n as u64);
    assert_eq!(r.hosts[0].requests, 0);
    let robots = get(&agent(Duration::from_secs(5)), &format!("{root}robots.txt")).unwrap();
    assert!(robots.1.contains("Disallow: /private/"), "{robots:?}");
    assert!(
        robots.1.contains("Crawl-delay"),
        "the last host asks for a delay"
    );
}

#[test]
fn pages_misbehave_as_configured() {
    let site = Site::start(config()).unwrap();
    let a = agent(Duration::from_secs(5));
    let url = |(h, p): (usize, usize)| format!("{}p/{p}", site.roots()[h]);

    let flaky = find(&site, PageKind::Flaky);
    assert_eq!(get(&a, &url(flaky)).unwrap().0, 503);
    assert_eq!(get(&a, &url(flaky)).unwrap().0, 200);

    let broken = find(&site, PageKind::Broken);
    assert_eq!(get(&a, &url(broken)).unwrap().0, 500);
    assert_eq!(get(&a, &url(broken)).unwrap().0, 500);

    // A stalled request hangs past the client's timeout; when the client gives up, the
    // server lets the request go, so it does not count as in flight any more.
    let stall = find(&site, PageKind::Stall);
    let short = agent(Duration::from_millis(700));
    assert!(
        get(&short, &url(stall)).is_err(),
        "the first request stalls"
    );
    let h = stall.0;
    let t = std::time::Instant::now();
    while site.in_flight(h) > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the server let go of the abandoned request"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, body) = get(&a, &url(stall)).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("<a href="));
    let c = site.path_count(h, &format!("/p/{}", stall.1));
    assert_eq!((c.requests, c.ok), (2, 1));
    assert_eq!(
        site.referee().hosts[h].max_concurrent,
        1,
        "the stalled request ended when its client left"
    );
}
