//! The worker is killed with SIGKILL at a random point and restarted: every job must end
//! succeeded or dead-lettered, and every effect must be present exactly once.

use demos::jobs::scenario::{self, Layout, ScenarioOptions};
use demos::jobs::store::{Store, StoreOptions};
use std::path::PathBuf;
use std::time::Duration;

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn sigkill_at_a_random_point_loses_no_job_and_doubles_no_effect() {
    let dir = fresh_dir("jobs-kill");
    // Anywhere from "hardly started" to "mostly done".
    let kill_at = rand::random_range(0.02..0.85);
    let o = ScenarioOptions {
        dir: dir.clone(),
        jobs: 300,
        kill_at,
        max_attempts: 4,
        exe: PathBuf::from(env!("CARGO_BIN_EXE_demos")),
        policy: demos::jobs::default_policy(),
        lease: Duration::from_millis(800),
        smtp_fail_rate: 0.05,
        webhook_fail_rate: 0.15,
        timeout: Duration::from_secs(50),
    };
    let a = scenario::run(&o)
        .unwrap_or_else(|e| panic!("scenario failed (kill_at {kill_at:.2}): {e:#}"));
    eprintln!("kill_at {kill_at:.2}: {a:?}");

    assert_eq!(a.enqueued, 300);
    assert_eq!(a.lost, 0, "{a:?}");
    assert_eq!(a.duplicate_effects, 0, "{a:?}");
    assert_eq!(a.succeeded + a.dead_lettered, 300, "{a:?}");

    // Check against the queue directly: the receivers hold one effect per succeeded job.
    let layout = Layout::new(&dir);
    let store = Store::open(&layout.db(), &StoreOptions::default()).unwrap();
    assert_eq!(store.counts().unwrap().pending(), 0);
    let jobs = store.all_jobs().unwrap();
    let ok = |kind: &str| {
        jobs.iter()
            .filter(|j| j.kind == kind && j.state == "succeeded")
            .count() as u64
    };
    assert_eq!(
        a.mails_stored,
        ok("email"),
        "one stored mail per sent email job"
    );
    assert_eq!(
        a.webhooks_recorded,
        ok("webhook"),
        "one record per webhook job"
    );
    // The bad jobs built into the mix are dead-lettered with their error kept.
    for j in jobs.iter().filter(|j| j.state == "dead") {
        let e = j.last_error.as_deref().unwrap_or("");
        assert!(!e.is_empty(), "dead job {} without an error", j.id);
    }
    let bounced = jobs
        .iter()
        .find(|j| j.payload.contains("bounce.invalid"))
        .expect("the mix has refused recipients");
    assert_eq!(bounced.state, "dead");
    assert!(
        bounced.last_error.as_deref().unwrap().contains("550"),
        "{bounced:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
