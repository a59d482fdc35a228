//! The URL frontier: normalisation, de-duplication, scope and a queue per host.
//!
//! Every URL the crawler learns of passes through [`Frontier::offer`] exactly once per
//! spelling; only the first spelling of a normalised URL is queued. Hosts are served
//! round-robin so one large host cannot starve the others.

use std::collections::{HashMap, HashSet, VecDeque};
use url::Url;

/// Returns the normalised form of `url`, or why it cannot be crawled.
///
/// Normalisation: the scheme and host are lowercased and the default port dropped (the
/// `url` crate does this when parsing), dot segments are resolved, the fragment is removed
/// and an empty query (`?` alone) is dropped.
pub fn normalize(url: &Url) -> Result<Url, String> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("unsupported scheme '{other}'")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    let mut u = url.clone();
    u.set_fragment(None);
    if u.query() == Some("") {
        u.set_query(None);
    }
    Ok(u)
}

/// `host:port` of a URL (the port made explicit): the key of per-host limits.
pub fn host_key(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// One URL waiting to be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The normalised URL.
    pub url: Url,
    /// Redirects followed to reach this URL.
    pub redirects: u32,
}

/// What happened to a URL offered to the frontier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// New: queued for its host.
    Queued,
    /// Already seen in some spelling.
    Duplicate,
    /// Its host is outside the crawl's scope.
    OutOfScope,
    /// Not crawlable (scheme, no host); the reason.
    Unsupported(String),
    /// The page budget is spent.
    Full,
}

/// Which hosts a crawl may visit.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Any host.
    Any,
    /// Only these `host:port` keys.
    Hosts(HashSet<String>),
}

/// The frontier: seen set and per-host queues.
#[derive(Debug)]
pub struct Frontier {
    seen: HashSet<String>,
    queues: HashMap<String, VecDeque<Entry>>,
    scope: Scope,
    max_urls: usize,
    queued_total: usize,
}

impl Frontier {
    /// An empty frontier that admits at most `max_urls` distinct URLs within `scope`.
    pub fn new(scope: Scope, max_urls: usize) -> Self {
        Self {
            seen: HashSet::new(),
            queues: HashMap::new(),
            scope,
            max_urls,
            queued_total: 0,
        }
    }

    /// Offers a URL; queues it if it is new, in scope and the budget allows.
    pub fn offer(&mut self, url: &Url, redirects: u32) -> Admit {
        let url = match normalize(url) {
            Ok(u) => u,
            Err(why) => return Admit::Unsupported(why),
        };
        let key = host_key(&url);
        if let Scope::Hosts(hosts) = &self.scope
            && !hosts.contains(&key)
        {
            return Admit::OutOfScope;
        }
        if self.seen.contains(url.as_str()) {
            return Admit::Duplicate;
        }
        if self.seen.len() >= self.max_urls {
            return Admit::Full;
        }
        self.seen.insert(url.as_str().to_string());
        self.queues
            .entry(key)
            .or_default()
            .push_back(Entry { url, redirects });
        self.queued_total += 1;
        Admit::Queued
    }

    /// Takes the next URL queued for `host`.
    pub fn pop(&mut self, host: &str) -> Option<Entry> {
        let e = self.queues.get_mut(host)?.pop_front()?;
        self.queued_total -= 1;
        Some(e)
    }

    /// Removes and returns every URL queued for `host` (when the host is given up on).
    pub fn drain(&mut self, host: &str) -> Vec<Entry> {
        let v: Vec<Entry> = self
            .queues
            .get_mut(host)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default();
        self.queued_total -= v.len();
        v
    }

    /// URLs queued for `host`.
    pub fn queued(&self, host: &str) -> usize {
        self.queues.get(host).map_or(0, VecDeque::len)
    }

    /// URLs queued over all hosts.
    pub fn queued_total(&self) -> usize {
        self.queued_total
    }

    /// Distinct URLs admitted so far.
    pub fn seen(&self) -> usize {
        self.seen.len()
    }

    /// Hosts that have had URLs queued, in no particular order.
    pub fn hosts(&self) -> impl Iterator<Item = &String> {
        self.queues.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize(&Url::parse(s).unwrap()).unwrap().to_string()
    }

    #[test]
    fn normalisation_folds_spellings_of_one_page() {
        let want = "http://127.0.0.1:8000/p/3";
        for s in [
            "http://127.0.0.1:8000/p/3",
            "HTTP://127.0.0.1:8000/p/3#frag",
            "http://127.0.0.1:8000/p/./3",
            "http://127.0.0.1:8000/x/../p/3",
            "http://127.0.0.1:8000/p/3?",
        ] {
            assert_eq!(n(s), want, "{s}");
        }
        assert_eq!(n("http://Example.COM:80/"), "http://example.com/");
        assert!(normalize(&Url::parse("mailto:a@b").unwrap()).is_err());
    }

    #[test]
    fn frontier_dedups_and_keeps_scope() {
        let scope = Scope::Hosts(["a.test:80".to_string()].into());
        let mut f = Frontier::new(scope, 3);
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(f.offer(&u("http://a.test/x"), 0), Admit::Queued);
        assert_eq!(f.offer(&u("http://A.test:80/x#y"), 0), Admit::Duplicate);
        assert_eq!(f.offer(&u("http://b.test/x"), 0), Admit::OutOfScope);
        assert_eq!(f.offer(&u("http://a.test/y"), 0), Admit::Queued);
        assert_eq!(f.offer(&u("http://a.test/z"), 0), Admit::Queued);
        assert_eq!(f.offer(&u("http://a.test/w"), 0), Admit::Full);
        assert_eq!(f.queued("a.test:80"), 3);
        assert_eq!(f.pop("a.test:80").unwrap().url.path(), "/x");
        assert_eq!(f.drain("a.test:80").len(), 2);
        assert_eq!(f.queued_total(), 0);
    }
}
