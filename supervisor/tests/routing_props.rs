//! Routing is first-match and total, checked against an independent model over random
//! rule lists and task names.

use globset::Glob;
use proptest::prelude::*;
use supervisor::PolicyConfig;

const EXECUTORS: [&str; 3] = ["io", "cpu", "net"];
const TAGS: [&str; 3] = ["cpu", "net", "big"];

#[derive(Debug, Clone)]
struct Rule {
    name: Option<String>,
    tags: Vec<&'static str>,
    executor: &'static str,
}

fn glob() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        "[ab]{1,2}".prop_map(|s| s),
        "[ab]{1,2}".prop_map(|s| format!("{s}*")),
        "[ab]".prop_map(|s| format!("{s}.*")),
        "[ab]".prop_map(|s| format!("*.{s}")),
        "[ab]".prop_map(|s| format!("{s}?")),
        Just("{a,b}.a".to_owned()),
        Just("[ab].b*".to_owned()),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        proptest::option::of(glob()),
        proptest::sample::subsequence(TAGS.to_vec(), 0..=2),
        proptest::sample::select(EXECUTORS.to_vec()),
    )
        .prop_map(|(name, tags, executor)| Rule {
            name,
            tags,
            executor,
        })
}

fn policy_text(rules: &[Rule]) -> String {
    let mut t = String::new();
    t.push_str("[executors.io]\nbackend = \"threads\"\n[executors.cpu]\nbackend = \"rayon\"\n");
    t.push_str("[executors.net]\nbackend = \"tokio\"\n[defaults]\nexecutor = \"io\"\n");
    for r in rules {
        t.push_str("[[route]]\nmatch = { ");
        let mut parts = Vec::new();
        if let Some(n) = &r.name {
            parts.push(format!("name = \"{n}\""));
        }
        if !r.tags.is_empty() {
            let tags: Vec<String> = r.tags.iter().map(|t| format!("\"{t}\"")).collect();
            parts.push(format!("tags = [{}]", tags.join(", ")));
        }
        t.push_str(&parts.join(", "));
        t.push_str(&format!(" }}\nexecutor = \"{}\"\n", r.executor));
    }
    t
}

/// The model: a rule matches when globset matches the name and every tag is present.
fn model_matches(rule: &Rule, name: &str, tags: &[&str]) -> bool {
    let name_ok = rule
        .name
        .as_ref()
        .is_none_or(|g| Glob::new(g).unwrap().compile_matcher().is_match(name));
    name_ok && rule.tags.iter().all(|t| tags.contains(t))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn first_match_and_total(
        rules in proptest::collection::vec(rule(), 0..8),
        tasks in proptest::collection::vec(
            ("[ab.]{0,4}", proptest::sample::subsequence(TAGS.to_vec(), 0..=3)),
            1..20,
        ),
    ) {
        let policy = PolicyConfig::parse(&policy_text(&rules), "random.toml").unwrap();
        prop_assert_eq!(policy.routes().len(), rules.len());
        for (name, tags) in &tasks {
            let expected = rules.iter().position(|r| model_matches(r, name, tags));
            let got = policy.select_index(name, |t| tags.contains(&t));
            prop_assert_eq!(got, expected, "task {:?} {:?}", name, tags);
            // Total: every task lands on a defined executor.
            let executor = policy.select(name, tags).executor();
            let expected_executor = expected.map_or("io", |i| rules[i].executor);
            prop_assert_eq!(executor, expected_executor);
            // explain agrees, and lists every earlier rule as not matching.
            let why = policy.explain_parts(name, tags);
            prop_assert_eq!(why.route(), expected.map(|i| i + 1));
            prop_assert_eq!(why.executor(), expected_executor);
            prop_assert_eq!(why.rejected().len(), expected.unwrap_or(rules.len()));
        }
    }
}
