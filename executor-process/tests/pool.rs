//! The process pool against real worker processes: crashes of every kind, recycling,
//! timeouts and cancellation, bad input, shutdowns and a killed parent, with the process
//! table checked each time. A `harness = false` test: this binary is also the workers'.
#![allow(unsafe_code)] // One `libc::raise` below, to segfault a worker on purpose.

use executor_core::{Executor, ExecutorExt, ShutdownMode, TaskError, TaskHandle};
use executor_process::ProcessExecutor;
use named_tasks::{CallError, Codec, NamedExt, Task, Tasks};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest any test waits for one event before it fails instead of hanging.
const BOUND: Duration = Duration::from_secs(30);

static ECHO: Task<u64, u64> = Task::new("t.echo", |_ctx, x: u64| Ok(x));
static ASYNC_DOUBLE: Task<u64, u64> = Task::new_async("t.async_double", |_ctx, x: u64| {
    Box::pin(async move { Ok(x * 2) })
});
static PID: Task<(), u32> = Task::new("t.pid", |_ctx, ()| Ok(std::process::id()));
static SLEEP: Task<u64, u32> = Task::new("t.sleep", |_ctx, ms: u64| {
    std::thread::sleep(Duration::from_millis(ms));
    Ok(std::process::id())
});
static SPIN: Task<(), ()> = Task::new("t.spin", |_ctx, ()| {
    loop {
        std::hint::spin_loop();
    }
});
static PANIC: Task<(), ()> = Task::new("t.panic", |_ctx, ()| panic!("kaboom"));
static FAIL: Task<u32, ()> = Task::new("t.fail", |_ctx, x: u32| {
    Err(format!("bad number {x}").into())
});
static ABORT: Task<(), ()> = Task::new("t.abort", |_ctx, ()| std::process::abort());
static SEGV: Task<(), ()> = Task::new("t.segv", |_ctx, ()| {
    // SAFETY: raise has no preconditions; the signal ends this worker, which is the test.
    // Twice: std's SIGSEGV handler (it looks for stack overflows) treats the first as a
    // fault to re-execute, restores the default action and returns; a real fault would
    // fault again, a raised one must be raised again.
    unsafe {
        libc::raise(libc::SIGSEGV);
        libc::raise(libc::SIGSEGV);
    }
    Ok(())
});
static EXIT: Task<i32, ()> = Task::new("t.exit", |_ctx, code: i32| std::process::exit(code));
static HOG: Task<usize, usize> = Task::new("t.hog", |_ctx, mib: usize| {
    let v = vec![7u8; mib << 20];
    Ok(v.iter().map(|b| usize::from(*b)).sum())
});
/// JSON cannot encode maps with tuple keys: a result that does not serialise.
static BAD_RESULT: Task<u8, BTreeMap<(u8, u8), u8>> = Task::new("t.bad_result", |_ctx, x: u8| {
    Ok(BTreeMap::from([((x, x), x)]))
});
/// Fails the first time it sees `path` (leaving the file behind), succeeds after: a task
/// that needs a retry, across processes (each attempt may run in another worker).
static FLAKY: Task<String, u32> = Task::new("t.flaky", |_ctx, path: String| {
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .is_ok()
    {
        return Err("first attempt fails".into());
    }
    Ok(std::process::id())
});
/// Declared here but not registered in the workers.
static UNKNOWN: Task<(), ()> = Task::new("t.unknown", |_ctx, ()| Ok(()));
/// The caller sends a string; the worker's task of this name takes a number.
static MISMATCH_CALLER: Task<String, u64> = Task::new("t.mismatch", |_ctx, _s: String| Ok(0));
static MISMATCH_WORKER: Task<u64, u64> = Task::new("t.mismatch", |_ctx, x: u64| Ok(x));

fn worker_tasks() -> Tasks {
    Tasks::new()
        .with(&ECHO)
        .with(&PID)
        .with(&SLEEP)
        .with(&SPIN)
        .with(&PANIC)
        .with(&FAIL)
        .with(&ABORT)
        .with(&SEGV)
        .with(&EXIT)
        .with(&HOG)
        .with(&BAD_RESULT)
        .with(&MISMATCH_WORKER)
        .with(&FLAKY)
        .with(&ASYNC_DOUBLE)
}

fn wait<T: Send + 'static>(h: TaskHandle<T>) -> Result<T, TaskError> {
    h.wait_timeout(BOUND)
        .unwrap_or_else(|_| panic!("the task did not end in time"))
}

fn call_error(e: TaskError) -> CallError {
    match e.into_failure() {
        Some(f) => *f.downcast::<CallError>().expect("a CallError"),
        None => panic!("not a failure"),
    }
}

/// True while `pid` is a live process (a zombie counts as dead).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

fn assert_all_gone(pids: &[u32]) {
    let t0 = Instant::now();
    while pids.iter().any(|p| alive(*p)) {
        assert!(t0.elapsed() < BOUND, "workers still alive: {pids:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pool(workers: usize) -> executor_process::Builder {
    ProcessExecutor::builder("proc")
        .workers(workers)
        .start_timeout(BOUND)
}

fn crashes_resolve_with_their_cause_and_the_pool_goes_on() {
    let exec = pool(2).memory_limit(Some(512 << 20)).build().unwrap();
    let me = std::process::id();
    type Case<'a> = (
        &'a str,
        Box<dyn Fn() -> Result<(), TaskError> + 'a>,
        Option<&'a str>,
    );
    let cases: [Case<'_>; 4] = [
        (
            "abort",
            Box::new(|| wait(exec.call(&ABORT, ()))),
            Some("SIGABRT"),
        ),
        (
            "segv",
            Box::new(|| wait(exec.call(&SEGV, ()))),
            Some("SIGSEGV"),
        ),
        ("exit", Box::new(|| wait(exec.call(&EXIT, 7))), None),
        (
            "memory",
            Box::new(|| wait(exec.call(&HOG, 2048)).map(|_| ())),
            Some("SIGABRT"),
        ),
    ];
    for (what, run, signal) in cases {
        let before = exec.worker_pids();
        let err = call_error(run().unwrap_err());
        assert!(err.is_crash(), "{what}: {err}");
        assert_eq!(err.signal(), signal, "{what}: {err}");
        assert!(err.to_string().contains("'t."), "names the task: {err}");
        if what == "exit" {
            assert_eq!(err.exit_code(), Some(7), "{err}");
        }
        if what == "memory" {
            assert!(err.to_string().contains("memory limit exceeded"), "{err}");
        }
        // The pool goes on, on a fresh worker.
        for i in 0..4 {
            assert_eq!(wait(exec.call(&ECHO, i)).unwrap(), i, "after {what}");
        }
        // The replacement starts right after the crashed task's handle resolves.
        let t0 = Instant::now();
        let mut after = exec.worker_pids();
        while after.len() < 2 || after == before {
            assert!(t0.elapsed() < BOUND, "{what}: a worker was not replaced");
            std::thread::sleep(Duration::from_millis(5));
            after = exec.worker_pids();
        }
        assert_eq!(after.iter().filter(|p| before.contains(p)).count(), 1);
        assert!(!after.contains(&me));
        println!("  {what}: {err}");
    }
    let err = wait(exec.call(&PANIC, ())).unwrap_err();
    assert_eq!(err.panic_message(), Some("kaboom"));
    let err = call_error(wait(exec.call(&FAIL, 3)).unwrap_err());
    assert!(err.is_failed() && err.message() == "bad number 3", "{err}");
    let pids = exec.worker_pids();
    let report = exec.shutdown(ShutdownMode::Graceful(BOUND));
    assert!(report.stats.is_balanced(), "{:?}", report.stats);
    assert_eq!(report.stats.completed, 16);
    assert_eq!(report.stats.failed, 5);
    assert_eq!(report.stats.panicked, 1);
    assert_all_gone(&pids);
}

fn a_worker_killed_from_outside_fails_its_task_only() {
    let exec = pool(2).build().unwrap();
    let pids = exec.worker_pids();
    let handles: Vec<_> = (0..2).map(|_| exec.call(&SLEEP, 60_000)).collect();
    let t0 = Instant::now();
    while exec.stats().running < 2 {
        assert!(t0.elapsed() < BOUND);
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut handles = handles.into_iter();
    let (first, second) = (handles.next().unwrap(), handles.next().unwrap());
    // Which handle ran on the killed worker is up to the dispatchers: find it.
    let (victim, other) = loop {
        if first.is_finished() {
            break (first, second);
        }
        if second.is_finished() {
            break (second, first);
        }
        assert!(t0.elapsed() < BOUND);
        std::thread::sleep(Duration::from_millis(5));
    };
    let err = call_error(wait(victim).unwrap_err());
    assert!(err.is_crash() && err.signal() == Some("SIGKILL"), "{err}");
    assert!(err.to_string().contains("t.sleep"), "{err}");
    assert!(!other.is_finished(), "the other task goes on");
    assert_eq!(wait(exec.call(&ECHO, 3)).unwrap(), 3);
    other.cancel();
    assert!(wait(other).unwrap_err().is_cancelled());
    let pids = exec.worker_pids();
    exec.shutdown(ShutdownMode::Now);
    assert_all_gone(&pids);
}

fn bad_input_gets_a_clear_error_and_is_counted() {
    for codec in Codec::ALL {
        let exec = pool(1).codec(codec).build().unwrap();
        let err = call_error(wait(exec.call(&UNKNOWN, ())).unwrap_err());
        assert!(err.is_unknown_task(), "{err}");
        assert!(err.to_string().contains("t.unknown"), "{err}");
        let err = call_error(wait(exec.call(&MISMATCH_CALLER, "x".into())).unwrap_err());
        assert!(err.is_bad_args(), "{err}");
        assert!(
            err.to_string().contains("did not decode in the worker"),
            "{err}"
        );
        match codec {
            Codec::Json => {
                let err = call_error(wait(exec.call(&BAD_RESULT, 1)).unwrap_err());
                assert!(err.is_bad_result(), "{err}");
                assert!(
                    err.to_string().contains("did not encode in the worker"),
                    "{err}"
                );
            }
            _ => assert_eq!(wait(exec.call(&BAD_RESULT, 1)).unwrap().len(), 1),
        }
        // A closure cannot travel: refused, and the message says why.
        let err = wait(exec.run(executor_core::TaskMeta::new("a.closure"), |_| {
            Ok::<_, std::io::Error>(1)
        }))
        .unwrap_err();
        assert!(err.is_rejected(), "{err}");
        assert!(err.to_string().contains("closure"), "{err}");
        assert_eq!(
            wait(exec.call(&ECHO, 5)).unwrap(),
            5,
            "the worker still serves"
        );
        let doubled = wait(exec.call(&ASYNC_DOUBLE, 21)).unwrap();
        assert_eq!(doubled, 42, "async tasks travel");
        let report = exec.shutdown(ShutdownMode::Graceful(BOUND));
        let s = report.stats;
        assert!(s.is_balanced(), "{s:?}");
        assert_eq!(s.rejected, 1, "{s:?}");
        let bad = if codec == Codec::Json { 3 } else { 2 };
        assert_eq!((s.failed, s.completed), (bad, 5 - bad), "{codec}: {s:?}");
    }
}

fn a_binary_without_the_hook_fails_to_start_with_a_hint() {
    // Exits at once: no hello.
    let err = ProcessExecutor::builder("proc")
        .program("true")
        .build()
        .unwrap_err();
    assert!(err.is_worker_start(), "{err}");
    assert!(err.to_string().contains("worker_hook"), "{err}");
    // Waits for input forever: killed at the start timeout.
    let err = ProcessExecutor::builder("proc")
        .program("cat")
        .start_timeout(Duration::from_millis(200))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("SIGKILL"), "{err}");
    println!("  {err}");
}

fn max_tasks_per_child_recycles_workers() {
    let exec = pool(1).max_tasks_per_child(Some(2)).build().unwrap();
    let pids: Vec<u32> = (0..6).map(|_| wait(exec.call(&PID, ())).unwrap()).collect();
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[2], pids[3]);
    assert_eq!(pids[4], pids[5]);
    let distinct: BTreeSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "{pids:?}");
    exec.shutdown(ShutdownMode::Now);
    assert_all_gone(&pids);
}

fn timeout_and_cancel_end_the_worker_running_the_task() {
    let mut registry = supervisor::Registry::with_builtins();
    executor_process::register(&mut registry);
    let policy = supervisor::PolicyConfig::parse(
        r#"
        [executors.proc]
        backend = "process"
        workers = 1
        start_timeout = "30s"
        codec = "msgpack"

        [defaults]
        executor = "proc"

        [[route]]
        match = { name = "t.spin" }
        timeout = "300ms"

        [[route]]
        match = { name = "t.{flaky,fail}" }
        retries = { max = 2, backoff = "1ms", jitter = false }
        "#,
        "test-policy.toml",
    )
    .unwrap();
    let sup = supervisor::Supervisor::with_registry(policy, registry).unwrap();
    let busy = wait(sup.call(&PID, ())).unwrap();
    let err = wait(sup.call(&SPIN, ())).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_all_gone(&[busy]);
    let fresh = wait(sup.call(&PID, ())).unwrap();
    assert_ne!(fresh, busy);

    // Cancelling a running task ends its worker too.
    let h = sup.call(&SLEEP, 60_000);
    // Let it reach the worker (the test holds either way: a task cancelled while queued
    // never starts, and the worker stays; hence the check below that it was killed).
    std::thread::sleep(Duration::from_millis(200));
    h.cancel();
    assert!(wait(h).unwrap_err().is_cancelled());
    assert_all_gone(&[fresh]);
    assert_eq!(wait(sup.call(&ECHO, 9)).unwrap(), 9);

    // The route's retries apply to named tasks as to closures: each attempt goes back
    // to a worker.
    let marker = std::env::temp_dir().join(format!("switchyard-flaky-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let pid = wait(sup.call(&FLAKY, marker.display().to_string())).unwrap();
    assert_ne!(pid, std::process::id());
    std::fs::remove_file(&marker).unwrap();
    let err = call_error(wait(sup.call(&FAIL, 1)).unwrap_err());
    assert!(err.is_failed(), "{err}");
    let ledger = sup.shutdown_ledger(ShutdownMode::Graceful(BOUND));
    assert!(ledger.is_balanced(), "{ledger:?}");
    assert_eq!(ledger.counts.timed_out, 1, "{ledger:?}");
    assert_eq!(ledger.counts.cancelled, 1, "{ledger:?}");
    assert_eq!(ledger.counts.failed, 1, "{ledger:?}");
    let proc = &ledger
        .executors
        .iter()
        .find(|e| e.executor == "proc")
        .unwrap()
        .stats;
    // Attempts: flaky 2 (1 failed), fail 3 (all failed).
    assert_eq!(proc.failed, 4, "{proc:?}");
}

fn no_worker_outlives_a_shutdown() {
    for mode in [
        ShutdownMode::Now,
        ShutdownMode::Graceful(Duration::from_millis(300)),
    ] {
        let exec = pool(2).build().unwrap();
        let pids = exec.worker_pids();
        assert_eq!(pids.len(), 2);
        // Both busy for a minute, and more queued behind them.
        let handles: Vec<_> = (0..5).map(|_| exec.call(&SLEEP, 60_000)).collect();
        let t0 = Instant::now();
        while exec.stats().running < 2 {
            assert!(t0.elapsed() < BOUND);
            std::thread::sleep(Duration::from_millis(5));
        }
        let report = exec.shutdown(mode);
        assert_all_gone(&pids);
        assert_eq!(report.not_started.len(), 3, "{mode:?}");
        assert_eq!(report.still_running, 0);
        assert!(report.stats.is_balanced(), "{:?}", report.stats);
        assert_eq!(report.stats.cancelled, 2, "{:?}", report.stats);
        for h in handles {
            let e = wait(h).unwrap_err();
            assert!(e.is_cancelled() || e.is_shutdown(), "{e}");
        }
    }
    // Within its deadline a graceful shutdown runs what is queued, then ends the workers.
    let exec = pool(1).build().unwrap();
    let pids = exec.worker_pids();
    let handles: Vec<_> = (0..3).map(|_| exec.call(&SLEEP, 50)).collect();
    let report = exec.shutdown(ShutdownMode::Graceful(BOUND));
    assert!(report.not_started.is_empty() && !report.deadline_passed);
    assert_eq!(report.stats.completed, 3, "{:?}", report.stats);
    for h in handles {
        assert_eq!(wait(h).unwrap(), pids[0]);
    }
    assert_all_gone(&pids);
}

fn no_worker_outlives_a_killed_parent() {
    let me = std::env::current_exe().unwrap();
    let mut parent = Command::new(me)
        .env("POOL_TEST_PARENT", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{line:?}");
    assert!(pids.iter().all(|p| alive(*p)));
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert_all_gone(&pids);
}

/// The parent of `no_worker_outlives_a_killed_parent`: a pool with busy workers, then
/// sleep until killed.
fn parent_mode() {
    let exec = pool(2).build().unwrap();
    let handles: Vec<_> = (0..2).map(|_| exec.call(&SLEEP, 600_000)).collect();
    let pids = exec.worker_pids();
    println!(
        "{}",
        pids.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    std::thread::sleep(BOUND * 2);
    drop(handles);
}

fn main() {
    executor_process::worker_hook(worker_tasks);
    if std::env::var_os("POOL_TEST_PARENT").is_some() {
        return parent_mode();
    }
    let tests: &[(&str, fn())] = &[
        (
            "crashes_resolve_with_their_cause_and_the_pool_goes_on",
            crashes_resolve_with_their_cause_and_the_pool_goes_on,
        ),
        (
            "a_worker_killed_from_outside_fails_its_task_only",
            a_worker_killed_from_outside_fails_its_task_only,
        ),
        (
            "bad_input_gets_a_clear_error_and_is_counted",
            bad_input_gets_a_clear_error_and_is_counted,
        ),
        (
            "a_binary_without_the_hook_fails_to_start_with_a_hint",
            a_binary_without_the_hook_fails_to_start_with_a_hint,
        ),
        (
            "max_tasks_per_child_recycles_workers",
            max_tasks_per_child_recycles_workers,
        ),
        (
            "timeout_and_cancel_end_the_worker_running_the_task",
            timeout_and_cancel_end_the_worker_running_the_task,
        ),
        (
            "no_worker_outlives_a_shutdown",
            no_worker_outlives_a_shutdown,
        ),
        (
            "no_worker_outlives_a_killed_parent",
            no_worker_outlives_a_killed_parent,
        ),
    ];
    // libtest's command line, as far as it matters here: name filters, `--list`, and
    // flags (some with a value, e.g. `--test-threads 2`) that do not apply.
    let mut filter = Vec::new();
    let mut list = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => list = true,
            "--test-threads" | "--skip" | "--format" | "--color" | "--logfile" | "-Z" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            _ => filter.push(arg),
        }
    }
    if list {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    let mut failed = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let t0 = Instant::now();
        let ok = catch_unwind(AssertUnwindSafe(test)).is_ok();
        println!(
            "test {name} ... {} ({:.1?})",
            if ok { "ok" } else { "FAILED" },
            t0.elapsed()
        );
        failed += usize::from(!ok);
    }
    if failed > 0 {
        println!("{failed} failed");
        std::process::exit(1);
    }
}
