//! Matching tasks to routes: name globs and required tags, first match wins.

use std::fmt;

use globset::{Glob, GlobMatcher};

/// What a `[[route]]` requires of a task: a name glob and/or a set of tags.
///
/// An absent name matches every name; every listed tag must be present on the task.
/// `match = {}` therefore matches every task.
#[derive(Debug, Clone)]
pub struct Matcher {
    name: Option<NamePattern>,
    tags: Vec<String>,
}

#[derive(Debug, Clone)]
struct NamePattern {
    source: String,
    kind: PatternKind,
}

#[derive(Debug, Clone)]
enum PatternKind {
    /// No glob metacharacters (string equality), or `prefix*` (a prefix test).
    One(Simple),
    /// One `{a,b,..}` group whose expansions are each exact or `prefix*`: any of them.
    AnyOf(Vec<Simple>),
    /// Anything else goes through globset.
    Glob(GlobMatcher),
}

/// A glob that needs no glob engine: a name, or a name prefix (`prefix*`).
#[derive(Debug, Clone)]
enum Simple {
    Exact(String),
    Prefix(String),
}

impl Simple {
    /// `glob` as a simple pattern, when it is one.
    fn parse(glob: &str) -> Option<Simple> {
        if !glob.contains(GLOB_META) {
            Some(Simple::Exact(glob.to_owned()))
        } else {
            glob.strip_suffix('*')
                .filter(|p| !p.contains(GLOB_META))
                .map(|p| Simple::Prefix(p.to_owned()))
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Simple::Exact(s) => name == s,
            Simple::Prefix(p) => name.starts_with(p.as_str()),
        }
    }

    /// `before{a,b,..}after` as the simple patterns of its expansions, when the glob has
    /// exactly one brace group with no nesting and every expansion is simple.
    fn expand(glob: &str) -> Option<Vec<Simple>> {
        let (before, rest) = glob.split_once('{')?;
        let (group, after) = rest.split_once('}')?;
        // An empty alternative (`{,b}`) is left to globset, which reads it its own way.
        if before.contains(GLOB_META)
            || group.contains(GLOB_META)
            || group.split(',').any(str::is_empty)
        {
            return None;
        }
        group
            .split(',')
            .map(|alt| Simple::parse(&format!("{before}{alt}{after}")))
            .collect()
    }
}

/// Why a single route did or did not match a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The route matched.
    Matched,
    /// The task's name does not match the route's name glob.
    NameMismatch {
        /// The route's glob.
        glob: String,
    },
    /// The task lacks a tag the route requires.
    MissingTag {
        /// The first missing tag.
        tag: String,
    },
}

const GLOB_META: &[char] = &['*', '?', '[', ']', '{', '}', '\\', '!'];

impl Matcher {
    /// Builds a matcher; errors with globset's message on a bad glob.
    pub(crate) fn new(name: Option<&str>, tags: Vec<String>) -> Result<Self, globset::Error> {
        let name = match name {
            None => None,
            Some(glob) => {
                let kind = match Simple::parse(glob) {
                    Some(simple) => PatternKind::One(simple),
                    None => match Simple::expand(glob) {
                        Some(alts) => PatternKind::AnyOf(alts),
                        None => PatternKind::Glob(Glob::new(glob)?.compile_matcher()),
                    },
                };
                // Always let globset check the glob, so a typo is an error even when the
                // fast path would accept it.
                Glob::new(glob)?;
                Some(NamePattern {
                    source: glob.to_owned(),
                    kind,
                })
            }
        };
        Ok(Matcher { name, tags })
    }

    /// The name glob, if any.
    pub fn name_glob(&self) -> Option<&str> {
        self.name.as_ref().map(|n| n.source.as_str())
    }

    /// The tags a task must carry.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// Whether a task with this name matches; `has_tag` says whether it carries a tag.
    #[inline]
    pub fn matches(&self, name: &str, has_tag: impl Fn(&str) -> bool) -> bool {
        self.tags.iter().all(|t| has_tag(t)) && self.name_matches(name)
    }

    #[inline]
    fn name_matches(&self, name: &str) -> bool {
        match &self.name {
            None => true,
            Some(pattern) => match &pattern.kind {
                PatternKind::One(simple) => simple.matches(name),
                PatternKind::AnyOf(alts) => alts.iter().any(|a| a.matches(name)),
                PatternKind::Glob(g) => g.is_match(name),
            },
        }
    }

    /// Whether a task with this name and these tags matches, and if not, why not.
    pub fn check<S: AsRef<str>>(&self, name: &str, tags: &[S]) -> Verdict {
        for tag in &self.tags {
            if !tags.iter().any(|t| t.as_ref() == tag) {
                return Verdict::MissingTag { tag: tag.clone() };
            }
        }
        match &self.name {
            Some(pattern) if !self.name_matches(name) => Verdict::NameMismatch {
                glob: pattern.source.clone(),
            },
            _ => Verdict::Matched,
        }
    }

    fn describe_match(&self, name: &str) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.name {
            parts.push(format!("name \"{name}\" matches \"{}\"", p.source));
        }
        if !self.tags.is_empty() {
            parts.push(format!("has tags [{}]", self.tags.join(", ")));
        }
        if parts.is_empty() {
            "the route matches every task".to_owned()
        } else {
            parts.join(" and ")
        }
    }
}

/// The answer to "where does this task go, and why": see `Supervisor::explain` and
/// `PolicyConfig::explain`.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub(crate) task: String,
    pub(crate) tags: Vec<String>,
    /// 1-based number of the matching route; `None` when `[defaults]` applied.
    pub(crate) route: Option<usize>,
    pub(crate) executor: String,
    pub(crate) reason: String,
    /// (route number, verdict) for the routes tried before the match.
    pub(crate) rejected: Vec<(usize, Verdict)>,
    pub(crate) unreached: usize,
    /// The rule a policy written in code chose (no policy-file rules were tried).
    pub(crate) code_rule: Option<String>,
    /// For an `executor = "auto"` route: what was learned of the task's name.
    pub(crate) learned: Option<String>,
}

impl Explanation {
    /// 1-based number of the `[[route]]` that matched; `None` when `[defaults]` applied.
    pub fn route(&self) -> Option<usize> {
        self.route
    }

    /// The executor the task goes to.
    pub fn executor(&self) -> &str {
        &self.executor
    }

    /// The routes tried before the match (or all of them, when none matched), with why
    /// each did not match.
    pub fn rejected(&self) -> &[(usize, Verdict)] {
        &self.rejected
    }

    /// For an `executor = "auto"` route: the learned decision and why, e.g.
    /// `auto: report.build measured CPU/wall 0.93 over 412 runs → cpu`.
    pub fn learned(&self) -> Option<&str> {
        self.learned.as_deref()
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task \"{}\"", self.task)?;
        if !self.tags.is_empty() {
            write!(f, " [{}]", self.tags.join(", "))?;
        }
        if let Some(rule) = &self.code_rule {
            return writeln!(
                f,
                " -> executor \"{}\" by the policy in code (rule \"{rule}\")",
                self.executor
            );
        }
        match self.route {
            Some(n) => writeln!(
                f,
                " -> executor \"{}\" by route {n}: {}",
                self.executor, self.reason
            )?,
            None => writeln!(
                f,
                " -> executor \"{}\" by [defaults]: no route matched",
                self.executor
            )?,
        }
        if let Some(learned) = &self.learned {
            writeln!(f, "  {learned}")?;
        }
        for (n, verdict) in &self.rejected {
            match verdict {
                Verdict::Matched => writeln!(f, "  route {n}: matched")?,
                Verdict::NameMismatch { glob } => {
                    writeln!(f, "  route {n}: name does not match \"{glob}\"")?
                }
                Verdict::MissingTag { tag } => writeln!(f, "  route {n}: no tag \"{tag}\"")?,
            }
        }
        if self.unreached > 0 {
            writeln!(f, "  ({} later route(s) not tried)", self.unreached)?;
        }
        Ok(())
    }
}

/// The explanation for a route a policy written in code chose.
pub(crate) fn explain_code(
    meta: &executor_core::TaskMeta,
    route: &executor_core::Route,
) -> Explanation {
    Explanation {
        task: meta.name().to_owned(),
        tags: meta.tags().map(str::to_owned).collect(),
        route: None,
        executor: route.executor().to_owned(),
        reason: String::new(),
        rejected: Vec::new(),
        unreached: 0,
        code_rule: Some(route.rule().to_owned()),
        learned: None,
    }
}

/// Walks `rules` in order and explains the first match (or the fall-through to defaults).
pub(crate) fn explain<'a, S: AsRef<str>>(
    rules: impl ExactSizeIterator<Item = (&'a Matcher, &'a str)>,
    default_executor: &str,
    name: &str,
    tags: &[S],
) -> Explanation {
    let total = rules.len();
    let mut rejected = Vec::new();
    for (i, (matcher, executor)) in rules.enumerate() {
        match matcher.check(name, tags) {
            Verdict::Matched => {
                return Explanation {
                    task: name.to_owned(),
                    tags: tags.iter().map(|t| t.as_ref().to_owned()).collect(),
                    route: Some(i + 1),
                    executor: executor.to_owned(),
                    reason: matcher.describe_match(name),
                    rejected,
                    unreached: total - i - 1,
                    code_rule: None,
                    learned: None,
                };
            }
            other => rejected.push((i + 1, other)),
        }
    }
    Explanation {
        task: name.to_owned(),
        tags: tags.iter().map(|t| t.as_ref().to_owned()).collect(),
        route: None,
        executor: default_executor.to_owned(),
        reason: String::new(),
        rejected,
        unreached: 0,
        code_rule: None,
        learned: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: Option<&str>, tags: &[&str]) -> Matcher {
        Matcher::new(name, tags.iter().map(|t| t.to_string()).collect()).unwrap()
    }

    #[test]
    fn name_kinds() {
        let none = |_: &str| false;
        assert!(m(Some("a.b"), &[]).matches("a.b", none));
        assert!(!m(Some("a.b"), &[]).matches("a.bc", none));
        assert!(m(Some("scrape.*"), &[]).matches("scrape.fetch", none));
        assert!(m(Some("scrape.*"), &[]).matches("scrape.", none));
        assert!(!m(Some("scrape.*"), &[]).matches("scrap", none));
        assert!(m(Some("*.fetch"), &[]).matches("scrape.fetch", none));
        assert!(m(Some("job.{mail,hook}"), &[]).matches("job.hook", none));
        assert!(!m(Some("job.{mail,hook}"), &[]).matches("job.clean", none));
        assert!(m(None, &[]).matches("anything", none));
        assert!(Matcher::new(Some("a.[b"), vec![]).is_err());
    }

    /// The patterns matched without globset agree with globset on every name tried.
    #[test]
    fn fast_paths_agree_with_globset() {
        let globs = [
            "a.b",
            "scrape.*",
            "job.{mail,hook}",
            "job.{mail,hook}.x",
            "{a,b}.*",
            "x.{a*,b}",
            "x.{,b}",
            "x.{a}",
            "*.fetch",
            "x.{a,b}.{c,d}",
        ];
        let names = [
            "",
            "a",
            "a.b",
            "a.bc",
            "scrape.",
            "scrape.fetch",
            "job.mail",
            "job.hook",
            "job.hook.x",
            "job.mail.x",
            "job.clean",
            "a.x",
            "b.",
            "c.x",
            "x.a",
            "x.ab",
            "x.b",
            "x.",
            "x.bb",
            "x.a.c",
            "x.b.d",
            "x.a.e",
        ];
        for glob in globs {
            let ours = m(Some(glob), &[]);
            let theirs = Glob::new(glob).unwrap().compile_matcher();
            for name in names {
                assert_eq!(
                    ours.matches(name, |_| false),
                    theirs.is_match(name),
                    "glob {glob:?} on {name:?}"
                );
            }
        }
        assert!(matches!(
            m(Some("job.{mail,hook}"), &[]).name.unwrap().kind,
            PatternKind::AnyOf(_)
        ));
    }

    #[test]
    fn tags_must_all_be_present() {
        let r = m(None, &["cpu", "big"]);
        assert!(r.matches("x", |t| ["big", "cpu", "other"].contains(&t)));
        assert_eq!(
            r.check("x", &["cpu"]),
            Verdict::MissingTag { tag: "big".into() }
        );
    }
}
