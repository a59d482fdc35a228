//! The `demos` binary's command line, run as a user runs it: help and version, usage
//! errors (exit 2), runtime errors (exit 1, one `error:` line), log colours when standard
//! error is not a terminal, each demo's default log level, and `demos logs -`.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest one run of the binary may take before the test fails instead of hanging.
const BOUND: Duration = Duration::from_secs(120);

fn demos() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_demos"));
    // The outcome must not depend on the caller's environment.
    c.env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null());
    c
}

/// Runs `cmd` to the end, feeding `stdin` through a pipe, killing it past `BOUND`.
fn run_with(mut cmd: Command, stdin: Option<Vec<u8>>) -> Output {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demos binary starts");
    let feeder = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("a piped stdin");
        std::thread::spawn(move || {
            // A broken pipe means the binary stopped reading; its exit status tells why.
            let _ = pipe.write_all(&bytes);
        })
    });
    // Read both pipes on other threads so the child never blocks on a full pipe.
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out_pipe, &mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err_pipe, &mut v);
        v
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for the binary") {
            break s;
        }
        if started.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not end within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(f) = feeder {
        f.join().expect("the stdin feeder");
    }
    Output {
        status,
        stdout: out.join().expect("the stdout reader"),
        stderr: err.join().expect("the stderr reader"),
    }
}

fn run(args: &[&str]) -> Output {
    let mut c = demos();
    c.args(args);
    run_with(c, None)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_every_demo_and_exits_0() {
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        let s = text(&out.stdout);
        assert!(s.contains("Usage: demos <COMMAND>"), "{args:?}: {s}");
        for demo in ["framework", "scrape", "physics", "logs", "jobs"] {
            assert!(s.contains(demo), "{args:?}: {demo} missing from\n{s}");
        }
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn version_prints_the_package_version() {
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        format!("demos {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_of_one_demo_shows_its_own_arguments() {
    for args in [&["help", "logs"][..], &["logs", "--help"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        let s = text(&out.stdout);
        assert!(s.contains("Usage: demos logs"), "{args:?}: {s}");
        assert!(s.contains("--chunk-size"), "{args:?}: {s}");
        assert!(s.contains("gen"), "{args:?}: {s}");
    }
    let out = run(&["help", "jobs", "worker"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains("Usage: demos jobs worker"));
}

#[test]
fn usage_errors_exit_2_with_clap_s_message() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "Usage: demos <COMMAND>"),
        (&["bogus"], "error: unrecognized subcommand 'bogus'"),
        (&["logs", "--bogus"], "error: unexpected argument '--bogus'"),
        (
            &["logs", "--chunk-size", "3 parsecs"],
            "error: invalid value '3 parsecs' for '--chunk-size",
        ),
        (&["physics", "--particles", "many"], "error: invalid value"),
        (&["jobs", "enqueue"], "error: the following required"),
    ];
    for (args, want) in cases {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{args:?}: want {want:?} in\n{err}");
        assert!(!err.contains("error: error"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    }
}

#[test]
fn runtime_errors_print_one_error_line_with_the_causes_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.log");
    let bad_policy = dir.path().join("bad.toml");
    std::fs::write(&bad_policy, "[executors.io]\nbackend = \"warp-drive\"\n").unwrap();
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            vec!["logs".into(), missing.display().to_string()],
            vec![
                format!("opening {}", missing.display()),
                "No such file".into(),
            ],
        ),
        (
            vec![
                "framework".into(),
                "--policy".into(),
                bad_policy.display().to_string(),
            ],
            vec![
                "the policy file was rejected".into(),
                format!("{}:1:1", bad_policy.display()),
            ],
        ),
        (
            vec![
                "scrape".into(),
                "--urls".into(),
                missing.display().to_string(),
            ],
            vec![format!("reading {}", missing.display())],
        ),
    ];
    for (args, wants) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = text(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, got\n{err}");
        assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
        assert_eq!(err.matches("error:").count(), 1, "{args:?}: {err}");
        for want in &wants {
            assert!(
                err.contains(want.as_str()),
                "{args:?}: want {want:?} in {err}"
            );
        }
    }
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let mut c = demos();
    c.args(["framework", "--download-ms", "1"])
        .env("RUST_LOG", "info");
    let out = run_with(c, None);
    assert!(out.status.success(), "{out:?}");
    let err = text(&out.stderr);
    // The run logged (so the check below has something to look at) ...
    assert!(err.contains(" INFO "), "no info lines in\n{err}");
    // ... and not one escape sequence, on either stream.
    assert!(!err.contains('\x1b'), "ANSI codes in\n{err:?}");
    assert!(!text(&out.stdout).contains('\x1b'));
}

#[test]
fn each_demo_logs_at_its_own_default_level() {
    let dir = tempfile::tempdir().unwrap();
    // A jobs worker logs its progress at info by default (it used not to: a subscriber
    // installed earlier won over the demo's own). It runs until SIGTERM, then drains.
    let log = dir.path().join("worker.log");
    let mut c = demos();
    c.args(["jobs", "worker"])
        .env("SWITCHYARD_SQLITE_PATH", dir.path().join("q.sqlite3"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = c.spawn().expect("the demos binary starts");
    let t = Instant::now();
    let err = loop {
        let err = std::fs::read_to_string(&log).unwrap();
        if err.contains("worker started") || t.elapsed() > BOUND {
            break err;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    demos::jobs::scenario::signal(&child, libc::SIGTERM).unwrap();
    let status = demos::jobs::scenario::wait_child(&mut child, BOUND).unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(
        err.contains(" INFO ") && err.contains("worker started"),
        "{err}"
    );
    // A framework run logs only warnings by default, and has none.
    let out = run(&["framework", "--download-ms", "1"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !text(&out.stderr).contains(" INFO "),
        "{}",
        text(&out.stderr)
    );
}

/// The report of `demos logs --json`, without what differs between runs (timings, memory)
/// or between a file and a pipe (the input's name).
fn comparable(stdout: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(stdout).expect("a JSON report");
    let o = v.as_object_mut().expect("a JSON object");
    for k in ["elapsed_s", "gb_per_s", "peak_rss_mb", "files"] {
        assert!(o.remove(k).is_some(), "the report has {k}");
    }
    if let Some(serde_json::Value::Array(ex)) = o.get_mut("malformed_examples") {
        for e in ex {
            e.as_object_mut().expect("an example").remove("file");
        }
    }
    v
}

#[test]
fn logs_dash_reads_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("small.log");
    let out = run(&[
        "logs",
        "gen",
        "--size",
        "400KB",
        "--seed",
        "9",
        "--out",
        &log.display().to_string(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let common = ["logs", "--json", "--no-progress", "--chunk-size", "16KiB"];

    let from_file = run(&[&common[..], &[log.to_str().unwrap()]].concat());
    assert!(from_file.status.success(), "{from_file:?}");
    let mut c = demos();
    c.args(common).arg("-");
    let from_pipe = run_with(c, Some(std::fs::read(&log).unwrap()));
    assert!(from_pipe.status.success(), "{from_pipe:?}");

    let (want, got) = (comparable(&from_file.stdout), comparable(&from_pipe.stdout));
    assert!(want["lines"].as_u64().unwrap() > 1000, "{want}");
    assert_eq!(got, want);
}
