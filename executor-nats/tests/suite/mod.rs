//! The shared durable conformance suite (`durable-testing`) on NATS, a module of the
//! `nats` test binary: one `nats-server -js` per test's store directory, restarted on the same store when every backend of
//! that directory was dropped (a "restarted submitter" then also restarts the server).

use durable_testing::{DeadLetter, DurableBackend, Enqueue, Record, Setup, State, WorkerControl};
use executor_core::{BoxError, Executor, Job};
use executor_nats::{Ended, NatsExecutor, Stop, Worker};
use named_tasks::Tasks;
use named_tasks::wire::Reply;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

struct ServerProc {
    child: Child,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Per store dir: its port and the running server, if any backend holds it.
type Servers = HashMap<PathBuf, (u16, Weak<ServerProc>)>;
static SERVERS: Mutex<Option<Servers>> = Mutex::new(None);

fn server(dir: &PathBuf) -> (u16, Arc<ServerProc>) {
    let mut map = SERVERS.lock().unwrap();
    let map = map.get_or_insert_with(HashMap::new);
    if let Some((port, w)) = map.get(dir)
        && let Some(s) = w.upgrade()
    {
        return (*port, s);
    }
    let port = match map.get(dir) {
        Some((port, _)) => *port,
        None => std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    };
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Arc::new(ServerProc { child });
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    map.insert(dir.clone(), (port, Arc::downgrade(&s)));
    (port, s)
}

struct Adapter {
    exec: Arc<NatsExecutor>,
    setup: Setup,
    url: String,
    // Dropped last: the executor disconnects before the server stops.
    _server: Arc<ServerProc>,
}

fn open(setup: &Setup) -> Box<dyn DurableBackend> {
    let (port, server) = server(&setup.dir);
    let url = format!("nats://127.0.0.1:{port}");
    let mut b = NatsExecutor::builder("nats")
        .url(&url)
        .prefix("suite")
        .in_flight(64);
    for r in &setup.routes {
        b = b.route(r.name.clone(), r.attempts, r.backoff);
    }
    Box::new(Adapter {
        exec: Arc::new(b.build().unwrap()),
        setup: setup.clone(),
        url,
        _server: server,
    })
}

impl DurableBackend for Adapter {
    fn executor(&self) -> Arc<dyn Executor> {
        self.exec.clone()
    }

    fn enqueue_job(&self, job: Job, opts: Enqueue) -> Result<String, BoxError> {
        Ok(self.exec.enqueue(job, opts.idempotency_key.as_deref())?)
    }

    fn result(&self, id: &str) -> Result<Option<Record>, BoxError> {
        // The bucket holds ended tasks only: any other id reads as pending.
        Ok(Some(match self.exec.result(id)? {
            None => Record {
                state: State::Pending,
                result: None,
                last_error: None,
                attempts: 0,
            },
            Some(s) => {
                let (result, last_error) = match s.reply {
                    Reply::Ok { payload, .. } => (Some(payload), None),
                    Reply::Err { message, .. } => (None, Some(message)),
                };
                Record {
                    state: match s.ended {
                        Ended::Succeeded => State::Succeeded,
                        Ended::Dead => State::Dead,
                        Ended::Cancelled => State::Cancelled,
                    },
                    result,
                    last_error,
                    attempts: s.attempts,
                }
            }
        }))
    }

    fn cancel(&self, id: &str) -> Result<bool, BoxError> {
        Ok(self.exec.cancel(id)?)
    }

    fn dead_letters(&self) -> Result<Vec<DeadLetter>, BoxError> {
        Ok(self
            .exec
            .dead_letters()?
            .into_iter()
            .map(|d| DeadLetter {
                id: d.id,
                name: d.name,
                attempts: d.attempts,
                last_error: d.error,
            })
            .collect())
    }

    fn run_worker(&self, tasks: Tasks, control: WorkerControl) -> Result<(), BoxError> {
        let mut b = Worker::builder(tasks)
            .url(&self.url)
            .prefix("suite")
            .parallel(self.setup.slots)
            .ack_wait(self.setup.lease);
        for r in &self.setup.routes {
            if let Some(n) = r.concurrency {
                b = b.limit(r.name.clone(), n as usize);
            }
            if let Some(n) = r.key_concurrency {
                b = b.key_limit(r.name.clone(), n as usize);
            }
        }
        b.build().run_with(async move {
            loop {
                if control.is_killed() {
                    return Stop::Kill;
                }
                if control.is_stopping() {
                    return Stop::Drain;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })?;
        Ok(())
    }
}

macro_rules! suite {
    ($($name:ident,)*) => {$(
        #[test]
        fn $name() {
            if crate::installed() {
                durable_testing::suite::$name(&open);
            }
        }
    )*};
}

// Not `durable_tests!`: each check first looks for nats-server (and skips, with one
// printed line, without it).
suite!(
    results_reach_handle_and_id,
    results_readable_after_submitter_restart,
    retries_with_backoff_then_succeeds,
    dead_letter_keeps_last_error,
    idempotency_key_gives_one_job,
    cancel_by_id,
    killed_worker_task_comes_back_after_lease,
    long_task_extends_its_lease,
    route_limit_holds_across_workers,
    key_limit_holds_across_workers,
    drain_finishes_running_and_claims_nothing,
);
