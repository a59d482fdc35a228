//! The command line on good and bad input: clear errors, and a bad job never stops the
//! workers.

use demos::jobs::scenario::Layout;
use demos::jobs::store::{NewJob, Store, StoreOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn jobs(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_demos"))
        .args(["jobs", "--dir"])
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure, got success; stderr: {err}"
    );
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn enqueue_rejects_bad_kinds_and_payloads() {
    let dir = fresh_dir("jobs-cli-bad");
    fails_with(
        &jobs(&dir, &["enqueue", "fax", "{}"]),
        "unknown job kind 'fax'",
    );
    fails_with(
        &jobs(&dir, &["enqueue", "email", "{nope"]),
        "not valid JSON",
    );
    fails_with(
        &jobs(&dir, &["enqueue", "email", r#"{"to":"x","subject":"s"}"#]),
        "bad email recipient",
    );
    fails_with(
        &jobs(
            &dir,
            &["enqueue", "cleanup", r#"{"dir":"/tmp/x","ttl":"later"}"#],
        ),
        "bad cleanup ttl",
    );
    // Nothing bad got in.
    assert!(stdout(&jobs(&dir, &["status"])).contains("queued                 0"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn enqueue_is_idempotent_and_status_counts() {
    let dir = fresh_dir("jobs-cli-enqueue");
    let p = r#"{"to":"a@example.test","subject":"hi","body":"hello"}"#;
    let first = stdout(&jobs(&dir, &["enqueue", "email", p, "--key", "k-1"]));
    assert!(first.contains("enqueued job 1"), "{first}");
    let again = stdout(&jobs(&dir, &["enqueue", "email", p, "--key", "k-1"]));
    assert!(again.contains("already enqueued as job 1"), "{again}");
    let s = stdout(&jobs(&dir, &["status", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v["queued"], 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_database_gives_a_clear_error() {
    let dir = fresh_dir("jobs-cli-corrupt");
    std::fs::write(Layout::new(&dir).db(), vec![0x5au8; 8192]).unwrap();
    fails_with(&jobs(&dir, &["status"]), "is not a usable job database");
    fails_with(
        &jobs(&dir, &["enqueue", "noop"]),
        "is not a usable job database",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn locked_database_gives_a_clear_error() {
    let dir = fresh_dir("jobs-cli-locked");
    drop(Store::open(&Layout::new(&dir).db(), &StoreOptions::default()).unwrap());
    let lock = rusqlite::Connection::open(Layout::new(&dir).db()).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    fails_with(
        &jobs(&dir, &["enqueue", "noop", "--busy-timeout", "200ms"]),
        "database locked",
    );
    lock.execute_batch("ROLLBACK").unwrap();
    assert!(stdout(&jobs(&dir, &["enqueue", "noop"])).contains("enqueued job 1"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_jobs_are_dead_lettered_and_the_worker_goes_on() {
    let dir = fresh_dir("jobs-cli-badjobs");
    let mut store = Store::open(&Layout::new(&dir).db(), &StoreOptions::default()).unwrap();
    let job = |kind: &str, payload: &str, key: &str| NewJob {
        kind: kind.into(),
        payload: payload.into(),
        idem_key: key.into(),
        max_attempts: 2,
    };
    // Jobs that bypassed validation (an older client, a hand edit) and unreachable targets.
    store
        .enqueue_many(&[
            job("fax", "{}", "bad-kind"),
            job("email", r#"{"subject": 7}"#, "bad-payload"),
            job(
                "webhook",
                r#"{"event":"e","url":"http://127.0.0.1:1/hook"}"#,
                "no-listener",
            ),
            job(
                "email",
                r#"{"to":"a@example.test","subject":"s"}"#,
                "no-smtp",
            ),
            job("noop", "{}", "good-1"),
            job("noop", "{}", "good-2"),
        ])
        .unwrap();
    drop(store);
    let out = jobs(
        &dir,
        &[
            "run",
            "--until-idle",
            "--smtp",
            "127.0.0.1:1",
            "--backoff",
            "10ms",
            "--effect-timeout",
            "2s",
        ],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("job dead-lettered"),
        "failures are logged: {log}"
    );

    let s = stdout(&jobs(&dir, &["status", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v["succeeded"], 2, "{v}");
    assert_eq!(v["dead_lettered"], 4, "{v}");
    let errors: Vec<(String, String)> = v["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["key"].as_str().unwrap().to_string(),
                d["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let err_of = |k: &str| errors.iter().find(|(key, _)| key == k).unwrap().1.clone();
    assert!(err_of("bad-kind").contains("unknown job kind 'fax'"));
    assert!(err_of("bad-payload").contains("bad email payload"));
    assert!(err_of("no-listener").contains("cannot reach webhook http://127.0.0.1:1/hook"));
    assert!(err_of("no-smtp").contains("cannot deliver via SMTP server 127.0.0.1:1"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_demo_receivers_store_mail_and_list_it() {
    let dir = fresh_dir("jobs-cli-mail");
    let p = r#"{"to":"ops@example.test","subject":"disk report","body":".leading dot\nline 2"}"#;
    stdout(&jobs(&dir, &["enqueue", "email", p, "--key", "mail-1"]));
    stdout(&jobs(
        &dir,
        &[
            "enqueue",
            "webhook",
            r#"{"event":"ping","data":{"n":1}}"#,
            "--key",
            "hook-1",
        ],
    ));
    let out = jobs(&dir, &["run", "--until-idle"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = stdout(&jobs(&dir, &["mail"]));
    assert!(listing.contains("1 message(s)"), "{listing}");
    assert!(
        listing.contains("key=mail-1") && listing.contains("disk report"),
        "{listing}"
    );
    let msgs = demos::jobs::smtp::list(&Layout::new(&dir).mail()).unwrap();
    let text = std::fs::read_to_string(&msgs[0].file).unwrap();
    assert!(
        text.contains("\r\n.leading dot\r\n"),
        "dot-unstuffed body: {text:?}"
    );
    let hooks = demos::jobs::webhook::read_log(&demos::jobs::webhook::log_path(
        &Layout::new(&dir).webhook(),
    ))
    .unwrap();
    assert_eq!(hooks.get("hook-1"), Some(&1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn webhook_receiver_refuses_a_bad_signature_and_the_job_is_dead_lettered() {
    use demos::jobs::webhook::{self, WebhookReceiver};
    let dir = fresh_dir("jobs-cli-badsig");
    let hooks = WebhookReceiver::start(&dir.join("hooks"), 0, b"the-right-secret", 0.0).unwrap();
    stdout(&jobs(
        &dir,
        &[
            "enqueue",
            "webhook",
            r#"{"event":"e"}"#,
            "--key",
            "signed-wrong",
        ],
    ));
    let out = jobs(
        &dir,
        &[
            "run",
            "--until-idle",
            "--webhook-url",
            &hooks.url(),
            "--secret",
            "a-wrong-secret",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&jobs(&dir, &["status", "--json"]))).unwrap();
    assert_eq!(v["dead_lettered"], 1, "{v}");
    let err = v["dead_letters"][0]["error"].as_str().unwrap();
    assert!(err.contains("answered 401"), "{err}");
    assert_eq!(v["dead_letters"][0]["attempts"], 1, "a 401 is not retried");
    let c = hooks.counters();
    assert_eq!((c.accepted, c.rejected), (0, 1), "{c:?}");
    assert!(
        webhook::read_log(&webhook::log_path(&dir.join("hooks")))
            .unwrap()
            .is_empty()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
