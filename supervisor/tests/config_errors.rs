//! Policy file errors: every kind is reported with file, line, column and what was expected.

use std::time::Duration;

use supervisor::{ConfigError, PolicyConfig};

const BASE: &str = r#"[executors.io]
backend = "threads"
workers = 4

[executors.cpu]
backend = "rayon"

[executors.net]
backend = "tokio"

[defaults]
executor = "io"
"#;

/// Parses `BASE + extra` as "policy.toml" and expects an error at `line:column` whose
/// Display contains `fragment` and whose kind satisfies `kind`.
#[track_caller]
fn check(extra: &str, kind: fn(&ConfigError) -> bool, line: usize, column: usize, fragment: &str) {
    let text = format!("{BASE}{extra}");
    let err = PolicyConfig::parse(&text, "policy.toml").expect_err("the policy must be rejected");
    let shown = err.to_string();
    assert!(kind(&err), "wrong kind: {err:?}");
    assert_eq!(err.path(), std::path::Path::new("policy.toml"), "{shown}");
    assert_eq!(
        (err.line(), err.column()),
        (Some(line), Some(column)),
        "{shown}"
    );
    assert!(
        shown.starts_with(&format!("policy.toml:{line}:{column}: ")),
        "{shown}"
    );
    assert!(shown.contains(fragment), "{shown:?} lacks {fragment:?}");
}

#[test]
fn the_base_policy_is_valid() {
    let p = PolicyConfig::parse(BASE, "policy.toml").unwrap();
    assert_eq!(p.executors().len(), 3);
    assert_eq!(p.defaults().executor(), "io");
    assert!(p.routes().is_empty());
}

#[test]
fn syntax_error() {
    check("timeout = = \"1s\"\n", ConfigError::is_syntax, 13, 11, "");
}

#[test]
fn unknown_top_level_and_nested_keys() {
    check(
        "bogus = 1\n",
        ConfigError::is_unknown_key,
        13,
        1,
        "unknown key \"bogus\"; expected one of: executor, priority, timeout, retries, limit",
    );
    check(
        "[[route]]\nmatch = { nam = \"x\" }\n",
        ConfigError::is_unknown_key,
        14,
        11,
        "expected one of: name, tags",
    );
    check(
        "[[route]]\nmatch = {}\nretries = { max = 1, backof = \"1s\" }\n",
        ConfigError::is_unknown_key,
        15,
        22,
        "\"backof\"",
    );
    check(
        "[[route]]\nmatch = {}\nlimit = { concurrency = 1, per_key = true }\n",
        ConfigError::is_unknown_key,
        15,
        28,
        "per_key",
    );
    check(
        "[[routes]]\nmatch = {}\n",
        ConfigError::is_unknown_key,
        13,
        3,
        "\"routes\"",
    );
}

#[test]
fn missing_required_keys() {
    check(
        "[[route]]\nexecutor = \"io\"\n",
        ConfigError::is_missing_key,
        13,
        1,
        "missing key \"match\"",
    );
    check(
        "[[route]]\nmatch = {}\nretries = { backoff = \"1s\" }\n",
        ConfigError::is_missing_key,
        15,
        11,
        "missing key \"max\"",
    );
    check(
        "[[route]]\nmatch = {}\nlimit = { per = \"key\" }\n",
        ConfigError::is_missing_key,
        15,
        9,
        "\"concurrency\" or \"rate\"",
    );
    check(
        "[executors.gpu]\nworkers = 1\n",
        ConfigError::is_missing_key,
        13,
        12,
        "missing key \"backend\" in [executors.gpu]",
    );
    let err = PolicyConfig::parse("[executors.io]\nbackend = \"threads\"\n", "p.toml").unwrap_err();
    assert!(
        err.is_missing_key() && err.to_string().contains("\"defaults\""),
        "{err}"
    );
    assert_eq!((err.line(), err.column()), (Some(1), Some(1)));
}

#[test]
fn unknown_executor_in_route_and_defaults() {
    check(
        "\n[[route]]\nmatch = { tags = [\"cpu\"] }\nexecutor = \"cpu\"\n\n[[route]]\nmatch = {}\nexecutor = \"gpu\"\n",
        ConfigError::is_unknown_executor,
        20,
        12,
        "unknown executor \"gpu\" in route 2; expected one of: cpu, io, net",
    );
    let text = BASE.replace("executor = \"io\"", "executor = \"disk\"");
    let err = PolicyConfig::parse(&text, "policy.toml").unwrap_err();
    assert!(err.is_unknown_executor());
    assert_eq!(
        err.to_string(),
        "policy.toml:12:12: unknown executor \"disk\" in [defaults]; expected one of: cpu, io, net"
    );
}

#[test]
fn bad_durations() {
    check(
        "timeout = \"30 parsecs\"\n",
        ConfigError::is_invalid_value,
        13,
        11,
        "invalid duration \"30 parsecs\"",
    );
    check(
        "timeout = \"30\"\n",
        ConfigError::is_invalid_value,
        13,
        11,
        "such as \"30s\"",
    );
    check(
        "timeout = \"0s\"\n",
        ConfigError::is_invalid_value,
        13,
        11,
        "above zero",
    );
    check(
        "timeout = 30\n",
        ConfigError::is_invalid_value,
        13,
        11,
        "expected a string",
    );
    check(
        "[[route]]\nmatch = {}\nretries = { max = 2, backoff = \"fast\" }\n",
        ConfigError::is_invalid_value,
        15,
        32,
        "retries.backoff",
    );
    check(
        "[[route]]\nmatch = {}\nretries = { max = 2, backoff = \"2s\", max_backoff = \"1s\" }\n",
        ConfigError::is_invalid_value,
        15,
        52,
        "max_backoff",
    );
}

#[test]
fn bad_rates() {
    let route = "[[route]]\nmatch = {}\nlimit = { rate = ";
    check(
        &format!("{route}\"0/s\" }}\n"),
        ConfigError::is_invalid_value,
        15,
        18,
        "rate \"0/s\" is zero",
    );
    check(
        &format!("{route}\"20\" }}\n"),
        ConfigError::is_invalid_value,
        15,
        18,
        "expected a count per unit",
    );
    check(
        &format!("{route}\"20/fortnight\" }}\n"),
        ConfigError::is_invalid_value,
        15,
        18,
        "unknown unit \"fortnight\"",
    );
    check(
        &format!("{route}\"many/s\" }}\n"),
        ConfigError::is_invalid_value,
        15,
        18,
        "whole number",
    );
    check(
        "[[route]]\nmatch = {}\nlimit = { concurrency = 2, burst = 3 }\n",
        ConfigError::is_unknown_key,
        15,
        28,
        "unknown key \"burst\"; expected one of: per, concurrency, rate",
    );
}

#[test]
fn bad_counts() {
    check(
        "[[route]]\nmatch = {}\nlimit = { concurrency = 0 }\n",
        ConfigError::is_invalid_value,
        15,
        25,
        "at least 1, found 0",
    );
    check(
        "[[route]]\nmatch = {}\nlimit = { concurrency = -3 }\n",
        ConfigError::is_invalid_value,
        15,
        25,
        "found -3",
    );
    check(
        "[[route]]\nmatch = {}\nlimit = { concurrency = \"4\" }\n",
        ConfigError::is_invalid_value,
        15,
        25,
        "expected a whole number",
    );
    check(
        "[[route]]\nmatch = {}\nretries = { max = -1 }\n",
        ConfigError::is_invalid_value,
        15,
        19,
        "retries.max",
    );
    check(
        "[[route]]\nmatch = {}\nlimit = { per = \"host\", concurrency = 1 }\n",
        ConfigError::is_invalid_value,
        15,
        17,
        "expected one of: key, route",
    );
}

#[test]
fn bad_priorities() {
    check(
        "[[route]]\nmatch = {}\npriority = 300\n",
        ConfigError::is_invalid_value,
        15,
        12,
        "priority must be between -128 and 127, found 300",
    );
    check(
        "priority = -129\n",
        ConfigError::is_invalid_value,
        13,
        12,
        "found -129",
    );
    check(
        "[[route]]\nmatch = {}\npriority = \"high\"\n",
        ConfigError::is_invalid_value,
        15,
        12,
        "expected a whole number",
    );
}

#[test]
fn a_route_takes_its_own_priority_or_the_defaults() {
    let text = format!(
        "{}{}",
        BASE.replace("executor = \"io\"\n", "executor = \"io\"\npriority = -2\n"),
        "[[route]]\nmatch = { tags = [\"cpu\"] }\nexecutor = \"cpu\"\npriority = 7\n\
         [[route]]\nmatch = { name = \"scrape.*\" }\n"
    );
    let p = PolicyConfig::parse(&text, "policy.toml").unwrap();
    assert_eq!(p.defaults().priority, Some(-2));
    assert_eq!(p.routes()[0].route().priority, Some(7));
    assert_eq!(p.routes()[1].route().priority, Some(-2));
    assert!(p.routes()[1].route().has_layers());
    let plain = PolicyConfig::parse(BASE, "policy.toml").unwrap();
    assert_eq!(plain.defaults().priority, None);
}

#[test]
fn bad_globs() {
    check(
        "[[route]]\nmatch = { name = \"scrape.[\" }\n",
        ConfigError::is_invalid_value,
        14,
        18,
        "invalid name glob \"scrape.[\" in route 1",
    );
    check(
        "[[route]]\nmatch = { name = \"{a,b\" }\n",
        ConfigError::is_invalid_value,
        14,
        18,
        "in route 1",
    );
    check(
        "[[route]]\nmatch = { tags = \"cpu\" }\n",
        ConfigError::is_invalid_value,
        14,
        18,
        "expected a sequence",
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    // The "é" in the comment is two bytes; the column must still count it as one.
    check(
        "[[route]]\nmatch = {} # é\nlimit = { concurrency = 0 }\n",
        ConfigError::is_invalid_value,
        15,
        25,
        "",
    );
    check(
        "[[route]]\nmatch = { name = \"é[\" }\n",
        ConfigError::is_invalid_value,
        14,
        18,
        "\"é[\"",
    );
}

#[test]
fn a_missing_file_is_an_io_error_naming_the_path() {
    let err = PolicyConfig::from_file("/nonexistent/policy.toml").unwrap_err();
    assert!(err.is_io());
    assert_eq!(err.path(), std::path::Path::new("/nonexistent/policy.toml"));
    assert_eq!(err.line(), None);
    assert!(
        err.to_string()
            .starts_with("/nonexistent/policy.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn routes_inherit_unset_keys_from_defaults() {
    let text = format!(
        "{}{}",
        BASE.replace(
            "executor = \"io\"\n",
            "executor = \"io\"\ntimeout = \"30s\"\nretries = { max = 2 }\n"
        ),
        "[[route]]\nmatch = { tags = [\"cpu\"] }\nexecutor = \"cpu\"\ntimeout = \"none\"\n\
         [[route]]\nmatch = { name = \"scrape.*\" }\nexecutor = \"net\"\n\
         retries = { max = 3, backoff = \"100ms\", max_backoff = \"5s\", jitter = true }\n\
         limit = { per = \"key\", concurrency = 4, rate = \"20/s\" }\n"
    );
    let p = PolicyConfig::parse(&text, "policy.toml").unwrap();
    let cpu = p.routes()[0].route();
    assert_eq!(cpu.timeout, None);
    assert_eq!(cpu.retry.unwrap().max, 2);
    assert_eq!(cpu.route.rule(), "route[1]");
    let net = p.routes()[1].route();
    assert_eq!(net.timeout, Some(Duration::from_secs(30)));
    let r = net.retry.unwrap();
    assert_eq!(
        (r.max, r.backoff, r.max_backoff, r.jitter),
        (3, Duration::from_millis(100), Duration::from_secs(5), true)
    );
    let l = net.limit.unwrap();
    assert_eq!(l.concurrency.unwrap().get(), 4);
    assert_eq!(l.rate.unwrap().interval(), Duration::from_millis(50));
    assert_eq!(p.select("scrape.fetch", &["cpu"]).executor(), "cpu");
    assert_eq!(p.select("scrape.fetch", &[] as &[&str]).executor(), "net");
    assert_eq!(p.select("other", &[] as &[&str]).executor(), "io");
    assert_eq!(p.defaults().route.rule(), "defaults");
    let why = p.explain_parts("scrape.fetch", &["net"]);
    assert_eq!(why.route(), Some(2));
    let shown = why.to_string();
    assert!(shown.contains("route 1: no tag \"cpu\""), "{shown}");
    assert!(shown.contains("matches \"scrape.*\""), "{shown}");
}

#[test]
fn a_value_where_a_table_belongs_says_what_the_table_looks_like() {
    check(
        "[[route]]\nmatch = {}\nretries = 1\n",
        ConfigError::is_invalid_value,
        15,
        11,
        "expected a table such as { max = 3, backoff = \"100ms\" }",
    );
    check(
        "[[route]]\nmatch = {}\nlimit = 4\n",
        ConfigError::is_invalid_value,
        15,
        9,
        "expected a table such as { concurrency = 4 }",
    );
    check(
        "[[route]]\nmatch = \"scrape.*\"\nexecutor = \"io\"\n",
        ConfigError::is_invalid_value,
        14,
        9,
        "expected a table such as { name = \"scrape.*\" } or { tags = [\"cpu\"] }",
    );
}
