//! robots.txt rules per host, parsed with `texting_robots`, and what to do when a host's
//! robots.txt is missing, broken or unreachable (RFC 9309).

use std::time::Duration;
use texting_robots::Robot;
use url::Url;

/// The crawler's user agent, as it introduces itself to robots.txt and servers.
pub const USER_AGENT: &str = "switchyard-scrape";

/// The rules the crawler follows on one host.
#[derive(Debug)]
pub enum Rules {
    /// Everything allowed (no robots.txt, a 4xx, or an unparsable file).
    AllowAll,
    /// Nothing allowed (robots.txt unreachable or answering 5xx: the host is off limits).
    DisallowAll(String),
    /// The host's parsed rules.
    Parsed(Box<Robot>),
}

impl Rules {
    /// Rules from a robots.txt body, or `AllowAll` and the reason when it does not parse.
    pub fn parse(body: &[u8]) -> (Rules, Option<String>) {
        match Robot::new(USER_AGENT, body) {
            Ok(r) => (Rules::Parsed(Box::new(r)), None),
            Err(e) => (Rules::AllowAll, Some(format!("unparsable robots.txt: {e}"))),
        }
    }

    /// Whether the crawler may fetch `url`.
    pub fn allowed(&self, url: &Url) -> bool {
        match self {
            Rules::AllowAll => true,
            Rules::DisallowAll(_) => false,
            Rules::Parsed(r) => url.path() == "/robots.txt" || r.allowed(url.as_str()),
        }
    }

    /// The host's `Crawl-delay`, if it sets a usable one (capped at 60 s).
    pub fn crawl_delay(&self) -> Option<Duration> {
        match self {
            Rules::Parsed(r) => r
                .delay
                .filter(|d| d.is_finite() && *d > 0.0)
                .map(|d| Duration::from_secs_f64(f64::from(d).min(60.0))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disallow_and_crawl_delay_are_honoured() {
        let txt = b"User-agent: *\nDisallow: /private/\nDisallow: /admin\nCrawl-delay: 0.05\n\n\
                    User-agent: other\nDisallow: /\n";
        let (r, why) = Rules::parse(txt);
        assert!(why.is_none());
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(r.allowed(&u("http://h.test/p/1")));
        assert!(!r.allowed(&u("http://h.test/private/3")));
        assert!(!r.allowed(&u("http://h.test/admin/panel?x=1")));
        assert_eq!(
            r.crawl_delay(),
            Some(Duration::from_secs_f64(0.05f32 as f64))
        );
    }

    #[test]
    fn garbage_robots_txt_never_panics() {
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        let (r, _) = Rules::parse(&garbage);
        let _ = r.allowed(&Url::parse("http://h.test/").unwrap());
        let (r, _) = Rules::parse(b"Disallow /nothing-here\nCrawl-delay: soon\n");
        assert!(r.allowed(&Url::parse("http://h.test/x").unwrap()));
        assert_eq!(r.crawl_delay(), None);
    }
}
