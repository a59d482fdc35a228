//! The framework demo: exact sums, the executor each task ran on under two policies, and
//! the failure counted in the ledger.

use demos::framework::{DEFAULT_POLICY, run};
use std::time::Duration;
use supervisor::Supervisor;

const SUM_5M: &str = "41666654166667500000";
const SUM_6M: &str = "71999982000001000000";

#[test]
fn default_policy_routes_io_to_threads_and_cpu_to_rayon() {
    let sup = Supervisor::from_toml(DEFAULT_POLICY).expect("the built-in policy loads");
    let report = run(sup, Duration::from_millis(20), false).unwrap();
    assert_eq!(report.lines.len(), 8);
    for i in 1..=5 {
        let line = report.line(&format!("download.item{i}")).unwrap();
        assert_eq!(line.executor, "io", "{line:?}");
        let expected = format!("https://api.example.com/item/{i} -> 200 OK");
        assert_eq!(line.outcome.as_deref(), Ok(expected.as_str()));
    }
    let five = report.line("compute.squares5000000").unwrap();
    assert_eq!(
        (five.executor.as_str(), five.outcome.as_deref()),
        ("cpu", Ok(SUM_5M))
    );
    let six = report.line("compute.squares6000000").unwrap();
    assert_eq!(
        (six.executor.as_str(), six.outcome.as_deref()),
        ("cpu", Ok(SUM_6M))
    );
    let failed = report.line("validate.report").unwrap();
    assert!(
        failed
            .outcome
            .as_ref()
            .unwrap_err()
            .contains("checksum mismatch"),
        "{failed:?}"
    );
    let counts = &report.ledger.counts;
    assert_eq!(
        (counts.submitted, counts.completed, counts.failed),
        (8, 7, 1)
    );
    assert!(report.ledger.is_balanced());
}

#[test]
fn another_policy_moves_every_task_with_no_code_change() {
    let text = include_str!("../policies/framework-all-cpu.toml");
    let sup = Supervisor::from_toml(text).expect("the alternative policy loads");
    let report = run(sup, Duration::from_millis(5), false).unwrap();
    for line in report.lines.iter().filter(|l| l.outcome.is_ok()) {
        assert_eq!(line.executor, "cpu", "{line:?}");
    }
    assert_eq!(
        report
            .line("compute.squares6000000")
            .unwrap()
            .outcome
            .as_deref(),
        Ok(SUM_6M)
    );
    assert_eq!(report.ledger.counts.failed, 1);
}

#[test]
fn the_process_policy_runs_the_sums_in_worker_processes() {
    // The demos binary itself: its main starts with the worker hook, which a test
    // binary's main cannot.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_demos"))
        .args(["framework", "--download-ms", "5", "--policy"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/policies/framework-process.toml"
        ))
        .output()
        .expect("the demos binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, sum) in [
        ("compute.squares5000000", SUM_5M),
        ("compute.squares6000000", SUM_6M),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(name) && l.contains("ok:"))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{stdout}"));
        assert!(line.contains("[proc ]"), "{line}");
        assert!(line.contains(&format!("ok: {sum}")), "{line}");
        // "(worker pid W, parent P)" with W != P.
        let pids: Vec<u32> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .rev()
            .take(2)
            .collect();
        assert_eq!(pids.len(), 2, "{line}");
        assert_ne!(pids[0], pids[1], "{line}");
    }
    assert!(
        stdout.contains("submitted 8 = completed 7 + failed 1"),
        "{stdout}"
    );
}
