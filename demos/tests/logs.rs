//! Correctness of the `logs` demo: every engine, chunk size and thread count gives the
//! report of the single-threaded reference, on generated logs and on awkward hand-made ones.

use demos::logs::{Engine, Options, Report, Summary, analyze, cpu_executor, generate_log};
use executor_core::{Executor, ShutdownMode};
use proptest::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const VALID: &str = r#"203.0.113.9 - - [02/Mar/2026:10:00:01 +0000] "GET /a?x=1 HTTP/1.1" 200 512 "-" "curl/8" 0.021"#;

fn opts(chunk_size: usize, inflight: usize) -> Options {
    Options {
        chunk_size,
        inflight,
        progress: false,
    }
}

/// A policy file routing tag `cpu` to a rayon pool of `threads` threads.
fn policy(dir: &Path, threads: usize) -> PathBuf {
    let path = dir.join(format!("logs-{threads}.toml"));
    std::fs::write(
        &path,
        format!(
            "[executors.cpu]\nbackend = \"rayon\"\nthreads = {threads}\n\n\
             [executors.io]\nbackend = \"threads\"\nworkers = 1\n\n\
             [defaults]\nexecutor = \"io\"\n\n\
             [[route]]\nmatch = {{ tags = [\"cpu\"] }}\nexecutor = \"cpu\"\n"
        ),
    )
    .unwrap();
    path
}

fn reference(files: &[PathBuf]) -> Summary {
    analyze(files, &opts(1, 1), Engine::Reference, None, 1, 10)
        .unwrap()
        .summary
}

fn with_executor(threads: usize, f: impl FnOnce(&Arc<dyn Executor>)) {
    let dir = tempfile::tempdir().unwrap();
    let exec = cpu_executor(&policy(dir.path(), threads)).unwrap();
    f(&exec);
    exec.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
}

/// A file with the awkward cases: CRLF, empty lines, a line far longer than the chunks,
/// malformed lines at known places and no newline at the end.
fn awkward(dir: &Path) -> PathBuf {
    let long_ua = "x".repeat(300_000);
    let mut s = String::new();
    for i in 0..2000 {
        match i % 97 {
            5 => s.push_str("this line is not a log line\n"),
            11 => s.push('\n'),
            13 => s.push_str(&format!("{VALID}\r\n")),
            50 if i < 100 => s.push_str(&format!(
                "198.51.100.1 - - [02/Mar/2026:10:01:00 +0000] \"POST /long HTTP/1.1\" 500 9 \"-\" \"{long_ua}\" 1.5\n"
            )),
            _ => s.push_str(&format!(
                "192.0.2.{} - - [02/Mar/2026:1{}:{:02}:00 +0000] \"GET /p/{} HTTP/1.1\" {} {} \"-\" \"ua\" 0.{:03}\n",
                i % 7,
                i % 3,
                i % 60,
                i % 13,
                [200, 404, 304, 500][i % 4],
                i * 3,
                i % 1000
            )),
        }
    }
    s.push_str(VALID); // no final newline
    let path = dir.join("awkward.log");
    std::fs::write(&path, s).unwrap();
    path
}

#[test]
fn every_chunk_size_and_thread_count_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("gen.log");
    generate_log(&generated, 2_000_000, 7).unwrap();
    let files = vec![generated, awkward(dir.path())];
    let want = reference(&files);
    assert!(want.lines > 10_000, "{} lines", want.lines);
    assert!(want.malformed > 0);

    for chunk in [1000, 4096, 65_536, 1 << 20, 16 << 20] {
        for threads in [1, 2, 3] {
            let got = analyze(&files, &opts(chunk, 4), Engine::Scoped, None, threads, 10)
                .unwrap()
                .summary;
            assert_eq!(got, want, "scoped, chunk {chunk}, {threads} threads");
        }
    }
    for threads in [1, 2, 3] {
        with_executor(threads, |exec| {
            for (chunk, inflight) in [(777, 1), (4096, 3), (65_536, 8), (1 << 20, 4)] {
                let got = analyze(
                    &files,
                    &opts(chunk, inflight),
                    Engine::Executor,
                    Some(exec),
                    threads,
                    10,
                )
                .unwrap()
                .summary;
                assert_eq!(got, want, "executor, chunk {chunk}, {threads} threads");
            }
        });
    }
}

#[test]
fn awkward_file_is_counted_right() {
    let dir = tempfile::tempdir().unwrap();
    let file = awkward(dir.path());
    let s = reference(std::slice::from_ref(&file));
    assert_eq!(s.lines, 2001);
    // Per 97 lines: one not-a-log line and one empty line (line numbers from 1).
    let bad = (0..2000).filter(|i| i % 97 == 5 || i % 97 == 11).count() as u64;
    assert_eq!(s.malformed, bad);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(s.malformed_examples.len(), 5);
    for e in &s.malformed_examples {
        assert_eq!(lines[e.line as usize - 1], e.text, "line {}", e.line);
    }
    assert_eq!(s.malformed_examples[0].line, 6);
    assert_eq!(s.malformed_examples[1].line, 12);
    assert!(s.request_time_ms.count == s.lines - s.malformed);
    // The histogram keeps two significant digits: within 1%.
    assert!(
        (s.request_time_ms.max - 1500.0).abs() <= 15.0,
        "{:?}",
        s.request_time_ms
    );
    assert_eq!(s.top_paths.len(), 10);
}

#[test]
fn generated_log_looks_real() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.log");
    generate_log(&file, 3_000_000, 11).unwrap();
    let s = reference(std::slice::from_ref(&file));
    let share = s.malformed as f64 / s.lines as f64;
    assert!((0.0003..0.003).contains(&share), "malformed share {share}");
    let ok = s.lines - s.malformed;
    assert!(s.status["200"] as f64 > 0.6 * ok as f64);
    assert!(s.status.contains_key("404") && s.status.contains_key("500"));
    assert!(s.methods["GET"] as f64 > 0.7 * ok as f64);
    // Skew: the top path and client take far more than an even share.
    assert!(s.top_paths[0].count as f64 > 20.0 * ok as f64 / s.unique_paths as f64);
    assert!(s.top_ips[0].count as f64 > 20.0 * ok as f64 / s.unique_ips as f64);
    assert!(s.requests_per_minute.minutes >= 3);
    let t = &s.request_time_ms;
    assert!(t.p50 > 5.0 && t.p50 < t.p90 && t.p90 < t.p99, "{t:?}");
    // Time moves forward: every line's minute is at or after the previous one.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut last = String::new();
    for line in text.lines().filter(|l| l.len() > 40) {
        if let Some(ts) = line.split('[').nth(1).and_then(|r| r.get(..26))
            && ts.ends_with("+0000")
            && ts.as_bytes()[2] == b'/'
        {
            let key = format!("{}{}", &ts[7..11], &ts[12..20]); // same day in this file
            assert!(key >= last, "{key} after {last}");
            last = key;
        }
    }
}

fn gzip(from: &Path, to: &Path) {
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(to).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&std::fs::read(from).unwrap()).unwrap();
    enc.finish().unwrap();
}

#[test]
fn gzip_input_gives_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("a.log");
    generate_log(&plain, 500_000, 3).unwrap();
    let gz = dir.path().join("a.log.gz");
    gzip(&plain, &gz);
    let mut want = reference(std::slice::from_ref(&plain));
    let mut got = analyze(
        std::slice::from_ref(&gz),
        &opts(10_000, 4),
        Engine::Scoped,
        None,
        2,
        10,
    )
    .unwrap()
    .summary;
    for s in [&mut want, &mut got] {
        s.files.clear();
        s.malformed_examples.iter_mut().for_each(|e| e.file.clear());
    }
    assert_eq!(got, want);
}

fn demos_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_demos"))
}

#[test]
fn cli_gen_is_deterministic_and_json_has_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    for out in [&a, &b] {
        let st = demos_bin()
            .args(["logs", "gen", "--size", "300KB", "--seed", "5", "--out"])
            .arg(out)
            .status()
            .unwrap();
        assert!(st.success());
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    let out = demos_bin()
        .args(["logs", "--json", "--chunk-size", "64KiB"])
        .arg(&a)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in [
        "lines",
        "malformed",
        "bytes_served",
        "status",
        "top_paths",
        "request_time_ms",
        "elapsed_s",
        "gb_per_s",
    ] {
        assert!(!v[field].is_null(), "missing {field}");
    }
    for p in ["p50", "p90", "p99"] {
        assert!(v["request_time_ms"][p].as_f64().unwrap() > 0.0);
    }
    assert!(v["status"]["200"].as_u64().unwrap() > 0);
    let want = reference(std::slice::from_ref(&a));
    assert_eq!(v["lines"].as_u64(), Some(want.lines));
}

/// Valid, malformed, empty and CRLF lines to build small files from.
fn line_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u8..4, 0u8..60, prop::sample::select(vec!["GET", "POST", "HEAD", "BREW"]), 0u16..3)
            .prop_map(|(ip, min, m, s)| format!(
                "10.0.0.{ip} - - [02/Mar/2026:10:{min:02}:00 +0000] \"{m} /x/{min} HTTP/1.1\" {} {min} \"-\" \"ua\" 0.0{min:02}",
                [200, 404, 503][s as usize]
            )),
        1 => "[a-z \\[\\]\"]{0,30}",
        1 => Just(String::new()),
        1 => Just(format!("{VALID}\r")),
    ]
}

fn executor() -> &'static Arc<dyn Executor> {
    static EXEC: OnceLock<(tempfile::TempDir, Arc<dyn Executor>)> = OnceLock::new();
    &EXEC
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let exec = cpu_executor(&policy(dir.path(), 2)).unwrap();
            (dir, exec)
        })
        .1
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Cutting a small file at every possible chunk size gives the reference report.
    #[test]
    fn every_chunk_boundary(lines in prop::collection::vec(line_strategy(), 0..8), final_newline: bool) {
        let mut text = lines.join("\n");
        if final_newline && !text.is_empty() {
            text.push('\n');
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.log");
        std::fs::write(&file, &text).unwrap();
        let gz = dir.path().join("p.log.gz");
        gzip(&file, &gz);
        let files = vec![file];
        let want = reference(&files);
        let mut want_gz = want.clone();
        want_gz.files = vec![gz.display().to_string()];
        want_gz.malformed_examples.iter_mut().for_each(|e| e.file = gz.display().to_string());
        for chunk in 1..=text.len() + 1 {
            // Plain files: tasks read their own byte ranges.
            let got: Report = analyze(&files, &opts(chunk, 3), Engine::Executor, Some(executor()), 2, 10).unwrap();
            prop_assert_eq!(&got.summary, &want, "chunk size {}", chunk);
            // Streams: the calling thread cuts chunks at line ends.
            let got = analyze(std::slice::from_ref(&gz), &opts(chunk, 3), Engine::Executor, Some(executor()), 2, 10).unwrap();
            prop_assert_eq!(&got.summary, &want_gz, "gz, chunk size {}", chunk);
        }
    }
}

#[test]
fn unreadable_input_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("ok.log");
    generate_log(&good, 200_000, 1).unwrap();
    // A directory opens but cannot be read; a missing file does not open.
    for bad in [dir.path().to_path_buf(), dir.path().join("missing.log")] {
        let files = vec![good.clone(), bad];
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let scoped = analyze(&files, &opts(4096, 2), Engine::Scoped, None, 2, 10).is_err();
            let mut exec_err = false;
            with_executor(2, |exec| {
                exec_err =
                    analyze(&files, &opts(4096, 2), Engine::Executor, Some(exec), 2, 10).is_err();
            });
            let _ = tx.send((scoped, exec_err));
        });
        let got = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the run hung");
        assert_eq!(got, (true, true));
    }
}

/// The JSON report without what may differ between two runs of the same input.
fn findings(mut v: serde_json::Value) -> serde_json::Value {
    let o = v.as_object_mut().unwrap();
    for timing in ["elapsed_s", "gb_per_s", "peak_rss_mb", "remote_chunks"] {
        o.remove(timing);
    }
    v
}

#[test]
fn the_process_policy_maps_in_worker_processes_with_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("gen.log");
    generate_log(&generated, 1_000_000, 11).unwrap();
    // Keys that are not UTF-8 travel as bytes.
    let odd = dir.path().join("odd.log");
    let mut bytes = Vec::new();
    for i in 0..50 {
        bytes.extend_from_slice(b"203.0.113.");
        bytes.extend_from_slice(i.to_string().as_bytes());
        bytes.extend_from_slice(b" - - [02/Mar/2026:10:00:01 +0000] \"GET /caf\xe9/\xff");
        bytes.extend_from_slice(
            format!("{} HTTP/1.1\" 200 {i} \"-\" \"ua\" 0.0{i}\n", i % 3).as_bytes(),
        );
    }
    bytes.extend_from_slice(b"\xfe\xff not a log line\n");
    std::fs::write(&odd, bytes).unwrap();
    let files = [generated, awkward(dir.path()), odd];
    let run = |policy: &str| -> serde_json::Value {
        let out = demos_bin()
            .args([
                "logs",
                "--json",
                "--no-progress",
                "--chunk-size",
                "64KiB",
                "--policy",
            ])
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("policies")
                    .join(policy),
            )
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{policy}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let here = run("logs.toml");
    let there = run("logs-process.toml");
    assert_eq!(here["remote_chunks"].as_u64(), Some(0));
    // Every chunk of these plain files went to a worker process.
    let chunks = there["remote_chunks"].as_u64().unwrap();
    assert!(chunks >= 15, "{chunks} chunks mapped in workers");
    assert_eq!(here["lines"].as_u64(), Some(reference(&files).lines));
    assert_eq!(findings(there), findings(here));
}
