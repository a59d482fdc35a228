//! Named tasks through real executors: in-process, through a loopback "remote" that
//! encodes like a boundary-crossing backend, and with the payload check on.

use executor_core::{Executor, ShutdownMode, TaskError};
use executor_threads::ThreadsExecutor;
use named_tasks::wire::{Message, Reply};
use named_tasks::{Call, CallError, Codec, NamedExt, Remote, Task, Tasks, check_payloads};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Stats {
    name: String,
    values: Vec<u64>,
}

static SUM: Task<Stats, (String, u64)> = Task::new("math.sum", |_ctx, s: Stats| {
    Ok((s.name, s.values.iter().sum()))
})
.with_tags(&["cpu"]);

static ASYNC_LEN: Task<String, usize> = Task::new_async("text.len", |_ctx, s: String| {
    Box::pin(async move { Ok(s.len()) })
});

static FAILS: Task<u32, u32> = Task::new("math.fails", |_ctx, x: u32| {
    Err(format!("no good: {x}").into())
});

static PANICS: Task<u32, u32> = Task::new("math.panics", |_ctx, _x: u32| panic!("kaboom"));

/// JSON cannot write maps with tuple keys: a result that does not travel.
static BAD_RESULT: Task<u8, BTreeMap<(u8, u8), u8>> =
    Task::new("map.tuple", |_ctx, x: u8| Ok(BTreeMap::from([((x, x), x)])));

/// An executor that sends every named task through the wire form to a `Tasks` registry
/// on its own thread, as a worker-process backend would, minus the process.
struct Loopback {
    inner: ThreadsExecutor,
    codec: Codec,
    tasks: Arc<Tasks>,
}

impl Executor for Loopback {
    fn name(&self) -> &str {
        "loopback"
    }
    fn execute(&self, job: executor_core::Job) -> Result<(), executor_core::SubmitError> {
        let call = Call::of(job.meta()).expect("only named tasks here");
        let tasks = self.tasks.clone();
        call.install(Remote::new(self.codec, move |_ctx, request| {
            let name = request.name.clone();
            let bytes = Message::Request(request).encode();
            let Message::Request(request) = Message::decode(&bytes).unwrap() else {
                unreachable!()
            };
            let reply = Message::Reply(tasks.handle(&request)).encode();
            match Message::decode(&reply).unwrap() {
                Message::Reply(Reply::Ok { payload, .. }) => Ok(payload),
                Message::Reply(Reply::Err { kind, message, .. }) => {
                    Err(CallError::worker(name, kind, message))
                }
                other => panic!("unexpected {other:?}"),
            }
        }));
        self.inner.execute(job)
    }
    fn stats(&self) -> executor_core::ExecutorStats {
        self.inner.stats()
    }
    fn shutdown(&self, mode: ShutdownMode) -> executor_core::ShutdownReport {
        self.inner.shutdown(mode)
    }
}

fn call_error(e: TaskError) -> CallError {
    *e.into_failure()
        .expect("a failure")
        .downcast::<CallError>()
        .expect("a CallError")
}

#[test]
fn named_tasks_run_in_process_with_their_meta() {
    let exec = ThreadsExecutor::builder("io").workers(2).build().unwrap();
    let stats = Stats {
        name: "a".into(),
        values: vec![1, 2, 3],
    };
    assert_eq!(SUM.meta().name(), "math.sum");
    assert!(SUM.meta().has_tag("cpu"));
    assert!(Call::of(&SUM.meta()).is_none(), "only calls carry a Call");
    assert_eq!(exec.call(&SUM, stats).wait().unwrap(), ("a".into(), 6));
    assert_eq!(ASYNC_LEN.call(&exec, "four".into()).wait().unwrap(), 4);
    let err = FAILS.call(&exec, 3).wait().unwrap_err();
    assert_eq!(err.into_failure().unwrap().to_string(), "no good: 3");
    let err = PANICS.call(&exec, 3).wait().unwrap_err();
    assert_eq!(err.panic_message(), Some("kaboom"));
    let report = exec.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
    assert_eq!(report.stats.completed, 2);
    assert!(report.stats.is_balanced());
}

#[test]
fn a_loopback_remote_encodes_and_answers_in_both_codecs() {
    let tasks = Arc::new(
        Tasks::new()
            .with(&SUM)
            .with(&ASYNC_LEN)
            .with(&FAILS)
            .with(&PANICS),
    );
    for codec in Codec::ALL {
        let exec = Loopback {
            inner: ThreadsExecutor::builder("io").workers(2).build().unwrap(),
            codec,
            tasks: tasks.clone(),
        };
        let stats = Stats {
            name: "b".into(),
            values: vec![10, 20],
        };
        assert_eq!(exec.call(&SUM, stats).wait().unwrap(), ("b".into(), 30));
        assert_eq!(exec.call(&ASYNC_LEN, "12345".into()).wait().unwrap(), 5);
        let err = call_error(exec.call(&FAILS, 9).wait().unwrap_err());
        assert!(err.is_failed(), "{err}");
        assert_eq!(err.message(), "no good: 9");
        let err = exec.call(&PANICS, 1).wait().unwrap_err();
        assert_eq!(err.panic_message(), Some("kaboom"), "{codec}");
        let err = call_error(exec.call(&BAD_RESULT, 1).wait().unwrap_err());
        assert!(err.is_unknown_task(), "{err}");
        assert!(err.to_string().contains("map.tuple"), "{err}");
        // Counts are final once the executor has shut down (a worker records an end just
        // after the handle resolves).
        let stats = exec
            .shutdown(ShutdownMode::Graceful(Duration::from_secs(5)))
            .stats;
        assert_eq!(
            (stats.completed, stats.failed, stats.panicked),
            (2, 2, 1),
            "{stats:?}"
        );
    }
}

#[test]
fn the_payload_check_fails_types_that_would_not_travel() {
    // The only test that turns the check on (it is process-wide).
    check_payloads(true);
    let exec = ThreadsExecutor::builder("io").workers(1).build().unwrap();
    let err = call_error(BAD_RESULT.call(&exec, 2).wait().unwrap_err());
    assert!(err.is_bad_result(), "{err}");
    assert!(err.to_string().contains("payload check"), "{err}");
    assert_eq!(ASYNC_LEN.call(&exec, "ok".into()).wait().unwrap(), 2);
    check_payloads(false);
    assert_eq!(BAD_RESULT.call(&exec, 2).wait().unwrap().len(), 1);
}

#[test]
fn call_then_runs_once_where_the_call_ran_and_never_for_a_failure() {
    let bound = Duration::from_secs(20);
    let where_ran = |exec: &dyn Executor, prefix: &str| {
        let stats = Stats {
            name: "b".into(),
            values: vec![4, 5],
        };
        let h = SUM.call_then(exec, stats, |(name, sum)| {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            (format!("{name}={sum}"), thread)
        });
        let (value, thread) = h.wait_timeout(bound).ok().unwrap().unwrap();
        assert_eq!(value, "b=9");
        assert!(thread.starts_with(prefix), "ran on {thread:?}");
    };
    let exec = ThreadsExecutor::builder("merge")
        .workers(2)
        .build()
        .unwrap();
    where_ran(&exec, "merge-");
    // Across the loopback "boundary" too: the result is decoded, then `then` runs.
    for codec in Codec::ALL {
        let remote = Loopback {
            inner: ThreadsExecutor::builder("far").workers(1).build().unwrap(),
            codec,
            tasks: Arc::new(Tasks::new().with(&SUM)),
        };
        where_ran(&remote, "far-");
        remote.shutdown(ShutdownMode::Now);
    }
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    let err = exec
        .call_then(&FAILS, 1, move |x| {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            x
        })
        .wait()
        .unwrap_err();
    assert!(err.is_failed(), "{err}");
    let err = exec.call_then(&PANICS, 1, |x| x).wait().unwrap_err();
    assert!(err.is_panic(), "{err}");
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    exec.shutdown(ShutdownMode::Graceful(bound));
}

/// A backend that sends the request before it runs the job (`Call::request`) sends the
/// same bytes the job's body would encode, and the job then runs on the answer alone.
#[test]
fn a_call_builds_its_request_before_the_job_runs() {
    let tasks = Tasks::new().with(&SUM);
    let stats = Stats {
        name: "b".into(),
        values: vec![4, 5],
    };
    for codec in Codec::ALL {
        // The job as a backend receives it, not run yet.
        let (job, handle) = SUM.job(stats.clone());
        let call = Call::of(job.meta()).expect("a named task");
        let request = call
            .request(codec, job.id().as_u64(), job.attempt())
            .unwrap();
        assert_eq!(request.name, "math.sum");
        assert_eq!(request.attempt, job.attempt());
        let answer = match tasks.handle(&request) {
            Reply::Ok { payload, .. } => payload,
            other => panic!("unexpected {other:?}"),
        };
        let sent = request.payload.clone();
        call.install(Remote::new(codec, move |_ctx, again| {
            assert_eq!(again.payload, sent, "the body encodes the same request");
            Ok(answer)
        }));
        job.run();
        assert_eq!(handle.wait().unwrap(), ("b".into(), 9));
    }
}
