//! The kill -9 scenario on the durable backends: a worker is killed with SIGKILL at a
//! random point (and on NATS the server is stopped and restarted too); every job must
//! end succeeded or dead-lettered, and every effect must be present exactly once.

use demos::jobs::scenario::{self, ScenarioOptions};
use std::path::PathBuf;
use std::time::Duration;

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn options(name: &str, policy: &str, jobs: usize, workers: usize) -> ScenarioOptions {
    ScenarioOptions {
        dir: fresh_dir(name),
        jobs,
        workers,
        // Anywhere from "hardly started" to "mostly done".
        kill_at: rand::random_range(0.02..0.7),
        restart_at: 0.75,
        exe: PathBuf::from(env!("CARGO_BIN_EXE_demos")),
        policy: demos::jobs::policy_file(policy),
        smtp_fail_rate: 0.05,
        webhook_fail_rate: 0.15,
        timeout: Duration::from_secs(60),
    }
}

fn check(o: &ScenarioOptions, a: &scenario::Accounting) {
    eprintln!("{a:#?}");
    assert_eq!(a.lost, 0, "lost jobs; logs in {}", o.dir.display());
    assert_eq!(a.duplicate_effects, 0, "duplicate effects");
    assert_eq!(a.succeeded + a.dead_lettered, a.enqueued);
    assert_eq!(a.enqueued, o.jobs as u64);
    assert_eq!(a.workers_killed, 1, "the kill happened");
    // The bad jobs (refused recipients, a URL nothing listens on, missing directories)
    // end as dead letters; the rest succeed despite the injected failures.
    assert!(
        a.dead_lettered >= 1 && a.succeeded > a.enqueued / 2,
        "{a:?}"
    );
    assert!(a.mails_stored + a.webhooks_recorded > 0);
}

#[test]
fn sigkill_on_sqlite_loses_no_job_and_doubles_no_effect() {
    let o = options("jobs-kill-sqlite", "jobs.toml", 300, 2);
    let a = scenario::run(&o).unwrap();
    check(&o, &a);
    assert_eq!(a.backends, ["sqlite"]);
    let _ = std::fs::remove_dir_all(&o.dir);
}

#[test]
fn sigkill_and_a_server_restart_on_nats_lose_nothing() {
    if !executor_nats::LocalServer::installed() {
        println!(
            "skipping the jobs scenario on NATS: nats-server is not installed \
             (Debian: apt-get install nats-server)"
        );
        return;
    }
    let o = options("jobs-kill-nats", "jobs-nats.toml", 200, 3);
    let a = scenario::run(&o).unwrap();
    check(&o, &a);
    assert_eq!(a.backends, ["nats"]);
    if std::env::var_os(executor_nats::URL_ENV).is_none() {
        assert_eq!(a.server_restarts, 1, "the demo restarted its own server");
    }
    let _ = std::fs::remove_dir_all(&o.dir);
}
