//! HTML link extraction with a real HTML parser (`scraper`, built on html5ever).

use scraper::{Html, Selector};
use std::sync::LazyLock;
use url::Url;

static ANCHORS: LazyLock<Selector> =
    LazyLock::new(|| Selector::parse("a[href], area[href]").expect("a valid selector"));
static BASE: LazyLock<Selector> =
    LazyLock::new(|| Selector::parse("base[href]").expect("a valid selector"));

/// The links found in one page.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Links {
    /// Every `href` resolved to an absolute URL (not yet normalised or filtered by scheme).
    pub urls: Vec<Url>,
    /// `href`s that do not parse as a URL, with the parser's reason.
    pub malformed: Vec<(String, String)>,
}

/// Extracts the `href` of every `<a>` and `<area>` in `html`, resolved against the page's
/// `<base href>` if it has one, else against `page`.
pub fn extract(page: &Url, html: &str) -> Links {
    let doc = Html::parse_document(html);
    let base = doc
        .select(&BASE)
        .next()
        .and_then(|b| b.value().attr("href"))
        .and_then(|h| page.join(h).ok())
        .unwrap_or_else(|| page.clone());
    let mut out = Links::default();
    for a in doc.select(&ANCHORS) {
        let Some(href) = a.value().attr("href") else {
            continue;
        };
        match base.join(href) {
            Ok(u) => out.urls.push(u),
            Err(e) => out.malformed.push((href.to_string(), e.to_string())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_links_and_reports_malformed_ones() {
        let page = Url::parse("http://h.test/p/1").unwrap();
        let html = r#"<html><body>
            <a href="2">next</a> <a href="/p/3#x">abs</a> <a href='../q'>up</a>
            <a href="http://[::1">bad</a> <a href="http://exa mple.com/">space</a>
            <a>no href</a> <map><area href="/area"></map>
            <a href="mailto:x@y.test">mail</a>
            </body></html>"#;
        let l = extract(&page, html);
        let got: Vec<String> = l.urls.iter().map(Url::to_string).collect();
        assert_eq!(
            got,
            [
                "http://h.test/p/2",
                "http://h.test/p/3#x",
                "http://h.test/q",
                "http://h.test/area",
                "mailto:x@y.test"
            ]
        );
        assert_eq!(l.malformed.len(), 2);
    }

    #[test]
    fn honours_base_href() {
        let page = Url::parse("http://h.test/a/b").unwrap();
        let l = extract(
            &page,
            r#"<head><base href="http://o.test/dir/"></head><a href="x">x</a>"#,
        );
        assert_eq!(l.urls[0].as_str(), "http://o.test/dir/x");
    }
}
