//! [`ProcessExecutor`]: dispatcher threads, each owning one worker process.

use crate::sys;
use crate::worker::WORKER_ENV;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use executor_core::backend::{Admission, StatsRecorder, Unstarted, lock};
use executor_core::{
    CancelToken, Executor, ExecutorStats, Job, ShutdownMode, ShutdownReport, SubmitError,
    TaskContext, TaskError,
};
use named_tasks::wire::{self, Message, Reply, Request};
use named_tasks::{Call, CallError, Codec, Remote};
use std::collections::VecDeque;

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

/// How often an idle dispatcher looks whether it should stop.
const IDLE_CHECK: Duration = Duration::from_millis(50);
/// How long a retiring worker gets to exit after its pipe closes, before SIGKILL.
const RETIRE_GRACE: Duration = Duration::from_secs(2);
/// How many of a worker's last stderr lines are kept to explain a crash.
const TAIL_LINES: usize = 8;

/// Why a [`ProcessExecutor`] could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build process executor '{name}': {kind}")]
pub struct BuildError {
    name: String,
    kind: BuildErrorKind,
}

#[derive(Debug, thiserror::Error)]
enum BuildErrorKind {
    #[error("workers must be at least 1")]
    NoWorkers,
    #[error("max_tasks_per_child must be at least 1")]
    NoTasksPerChild,
    #[error(
        "this process is itself a pool worker: its main must call \
         executor_process::worker_hook before anything else"
    )]
    InWorker,
    #[error("could not find the program to run as a worker: {0}")]
    Program(std::io::Error),
    #[error("could not start a dispatcher thread: {0}")]
    Thread(std::io::Error),
    #[error("a worker did not start: {0}")]
    Worker(String),
}

impl BuildError {
    /// True when the settings were invalid (as opposed to a worker failing to start).
    pub fn is_config(&self) -> bool {
        matches!(
            self.kind,
            BuildErrorKind::NoWorkers | BuildErrorKind::NoTasksPerChild
        )
    }

    /// True when a worker process did not start or did not say hello in time (a missing
    /// [`worker_hook`](crate::worker_hook) looks like this).
    pub fn is_worker_start(&self) -> bool {
        matches!(self.kind, BuildErrorKind::Worker(_))
    }
}

/// Settings for a [`ProcessExecutor`].
#[derive(Clone, Debug)]
pub struct Builder {
    name: String,
    workers: usize,
    max_tasks_per_child: Option<u64>,
    memory_limit: Option<u64>,
    start_timeout: Duration,
    codec: Codec,
    program: Option<PathBuf>,
}

impl Builder {
    /// The number of worker processes (default: 2).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Replace a worker after it has run `n` tasks (default: never).
    pub fn max_tasks_per_child(mut self, n: Option<u64>) -> Self {
        self.max_tasks_per_child = n;
        self
    }

    /// Each worker's address-space limit in bytes (`RLIMIT_AS`; default: none). A task
    /// that allocates past it ends its worker, and its handle names the cause.
    pub fn memory_limit(mut self, bytes: Option<u64>) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// How long a new worker has to say hello (default: 10 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How arguments and results are encoded (default: JSON).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The binary workers run (default: this process's own executable). It must call
    /// [`worker_hook`](crate::worker_hook) at the top of `main`.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Starts the workers and waits until each has said hello.
    pub fn build(self) -> Result<ProcessExecutor, BuildError> {
        let err = |kind| BuildError {
            name: self.name.clone(),
            kind,
        };
        if self.workers == 0 {
            return Err(err(BuildErrorKind::NoWorkers));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(err(BuildErrorKind::NoTasksPerChild));
        }
        if crate::is_worker() {
            return Err(err(BuildErrorKind::InWorker));
        }
        let program = match &self.program {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|e| err(BuildErrorKind::Program(e)))?,
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let inner = Arc::new(Inner {
            name: self.name.clone(),
            settings: Settings {
                program,
                max_tasks_per_child: self.max_tasks_per_child,
                memory_limit: self.memory_limit,
                start_timeout: self.start_timeout,
                codec: self.codec,
            },
            tx,
            rx,
            workers: self.workers,
            stats: StatsRecorder::new(),
            gate: Admission::new(),
            abandon: AtomicBool::new(false),
            live: Mutex::new(0),
            all_done: Condvar::new(),
            not_started: Unstarted::new(),
            running: (0..self.workers).map(|_| Mutex::new(None)).collect(),
            pids: (0..self.workers).map(|_| Mutex::new(None)).collect(),
        });
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(self.workers);
        for i in 0..self.workers {
            let d = inner.clone();
            let ready = ready_tx.clone();
            *inner.live.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{i}", self.name))
                .spawn(move || d.dispatch(i, ready));
            if let Err(e) = spawned {
                *inner.live.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                inner.close();
                return Err(err(BuildErrorKind::Thread(e)));
            }
        }
        drop(ready_tx);
        let mut first_error = None;
        for started in ready_rx.iter() {
            if let Err(e) = started {
                first_error.get_or_insert(e);
            }
        }
        let exec = ProcessExecutor { inner };
        if let Some(e) = first_error {
            exec.shutdown(ShutdownMode::Now);
            return Err(err(BuildErrorKind::Worker(e)));
        }
        Ok(exec)
    }
}

#[derive(Debug)]
struct Settings {
    program: PathBuf,
    max_tasks_per_child: Option<u64>,
    memory_limit: Option<u64>,
    start_timeout: Duration,
    codec: Codec,
}

enum Msg {
    Run(Job),
    /// Wakes an idle dispatcher so it notices a shutdown at once.
    Wake,
}

struct Inner {
    name: String,
    settings: Settings,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    workers: usize,
    stats: StatsRecorder,
    gate: Admission,
    /// Past the deadline: queued jobs are dropped, not run.
    abandon: AtomicBool,
    live: Mutex<usize>,
    all_done: Condvar,
    not_started: Unstarted,
    /// Per dispatcher: the cancel token of the job it runs now (a shutdown past its
    /// deadline cancels it, which ends the worker process).
    running: Box<[Mutex<Option<CancelToken>>]>,
    /// Per dispatcher: its worker's pid, for [`ProcessExecutor::worker_pids`].
    pids: Box<[Mutex<Option<u32>>]>,
}

/// One live worker process and its pipes.
struct Worker {
    child: Child,
    pid: u32,
    input: BufWriter<ChildStdin>,
    output: BufReader<ChildStdout>,
    /// The last lines the worker wrote to stderr; the forwarding thread's end is signalled
    /// on `stderr_done`.
    tail: Arc<Mutex<VecDeque<String>>>,
    stderr_done: Receiver<()>,
    tasks: u64,
    scratch: Vec<u8>,
    buf: Vec<u8>,
}

/// Ends a worker process when the task it runs is cancelled or times out. The pid is
/// taken (under the lock) before the process is reaped, so a kill never hits a reused pid.
struct Killer {
    pid: Mutex<Option<u32>>,
}

impl Wake for Killer {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let pid = self.pid.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pid) = *pid {
            sys::kill(pid);
        }
    }
}

impl Killer {
    fn disarm(&self) {
        self.pid.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// A worker's slot, shared between its dispatcher and the remote it installs in each job.
type Slot = Arc<Mutex<Option<Worker>>>;

impl Inner {
    fn dispatch(self: Arc<Self>, index: usize, ready: Sender<Result<(), String>>) {
        let slot: Slot = Arc::new(Mutex::new(None));
        let started = self.spawn_worker(index).map(|w| {
            *lock(&slot) = Some(w);
        });
        let ok = started.is_ok();
        let _ = ready.send(started);
        drop(ready);
        if ok {
            self.work(index, &slot);
        }
        if let Some(w) = lock(&slot).take() {
            self.retire(index, w);
        }
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        *live -= 1;
        if *live == 0 {
            self.all_done.notify_all();
        }
    }

    fn work(&self, index: usize, slot: &Slot) {
        loop {
            let next = match self.rx.try_recv() {
                Ok(msg) => Ok(msg),
                Err(_) => self.rx.recv_timeout(IDLE_CHECK),
            };
            match next {
                Ok(Msg::Run(job)) => self.handle(index, slot, job),
                Ok(Msg::Wake) | Err(RecvTimeoutError::Timeout) => {
                    if self.gate.is_closed() && self.gate.in_flight() == 0 && self.rx.is_empty() {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    fn handle(&self, index: usize, slot: &Slot, job: Job) {
        if self.abandon.load(Ordering::Acquire) {
            self.not_started.abandon(&self.stats, job);
            return;
        }
        let Some(call) = Call::of(job.meta()) else {
            // `execute` refuses closures; a job gets here only as a named task.
            return;
        };
        let name = call.name();
        let remote_slot = slot.clone();
        let settings_codec = self.settings.codec;
        let memory_limit = self.settings.memory_limit;
        call.install(Remote::new(settings_codec, move |ctx, request| {
            round_trip(&remote_slot, ctx, request, name, memory_limit)
        }));
        // Make sure a worker is there (the last one may have crashed or retired).
        if lock(slot).is_none() && !self.abandon.load(Ordering::Acquire) {
            match self.spawn_worker(index) {
                Ok(w) => *lock(slot) = Some(w),
                Err(e) => eprintln!("switchyard: executor '{}': {e}", self.name),
            }
        }
        *lock(&self.running[index]) = Some(job.cancel_token());
        if catch_unwind(AssertUnwindSafe(|| self.stats.run(job))).is_err() {
            eprintln!(
                "switchyard: a task hook panicked on executor '{}'",
                self.name
            );
        }
        *lock(&self.running[index]) = None;
        // Recycle a worker that has done its share; replace one that died with its task,
        // at once, so the next task does not wait for a start.
        let mut guard = lock(slot);
        let retire = guard.as_ref().is_some_and(|w| {
            self.settings
                .max_tasks_per_child
                .is_some_and(|max| w.tasks >= max)
        });
        if retire {
            let w = guard.take().expect("checked above");
            drop(guard);
            self.retire(index, w);
            guard = lock(slot);
        }
        if guard.is_none() {
            *lock(&self.pids[index]) = None;
            if !self.gate.is_closed() {
                match self.spawn_worker(index) {
                    Ok(w) => *guard = Some(w),
                    Err(e) => eprintln!("switchyard: executor '{}': {e}", self.name),
                }
            }
        }
    }

    /// Starts a worker and waits for its hello, killing it after `start_timeout`.
    fn spawn_worker(&self, index: usize) -> Result<Worker, String> {
        let s = &self.settings;
        let mut cmd = Command::new(&s.program);
        cmd.env(WORKER_ENV, &self.name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        sys::configure_worker(&mut cmd, s.memory_limit);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", s.program.display()))?;
        let pid = child.id();
        let input = BufWriter::new(child.stdin.take().expect("piped"));
        let mut output = BufReader::new(child.stdout.take().expect("piped"));
        let stderr = child.stderr.take().expect("piped");
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (done_tx, stderr_done) = crossbeam_channel::bounded(1);
        let forward_tail = tail.clone();
        let forwarded = std::thread::Builder::new()
            .name(format!("{}-stderr-{pid}", self.name))
            .spawn(move || forward_stderr(pid, stderr, &forward_tail, done_tx));
        if let Err(e) = forwarded {
            sys::kill(pid);
            let _ = child.wait();
            return Err(format!("cannot start a stderr thread: {e}"));
        }
        let mut buf = Vec::new();
        let hello = std::thread::scope(|scope| {
            let (said_hello, watchdog) = crossbeam_channel::bounded::<()>(0);
            let timeout = s.start_timeout;
            scope.spawn(move || {
                if let Err(RecvTimeoutError::Timeout) = watchdog.recv_timeout(timeout) {
                    // The child is not reaped before this scope ends, so the pid is its own.
                    sys::kill(pid);
                }
            });
            let hello = wire::read_frame(&mut output, &mut buf);
            drop(said_hello);
            hello
        });
        match hello {
            Ok(Some(Message::Hello { pid: said })) if said == pid => {}
            other => {
                sys::kill(pid);
                let status = child.wait().ok();
                let _ = stderr_done.recv_timeout(Duration::from_secs(1));
                let last = last_line(&tail);
                let what = match other {
                    Ok(None) => "it closed its output without saying hello".to_owned(),
                    Ok(Some(m)) => format!("it said {m:?} instead of hello"),
                    Err(e) => format!("its first message was unreadable: {e}"),
                };
                return Err(format!(
                    "worker {} ({pid}) of {}: {what} within {:?}{}{} — does its main call \
                     executor_process::worker_hook first?",
                    index,
                    s.program.display(),
                    s.start_timeout,
                    status
                        .map(|st| format!("; {}", describe_status(st)))
                        .unwrap_or_default(),
                    last.map(|l| format!("; it said: {l}")).unwrap_or_default(),
                ));
            }
        }
        *lock(&self.pids[index]) = Some(pid);
        Ok(Worker {
            child,
            pid,
            input,
            output,
            tail,
            stderr_done,
            tasks: 0,
            scratch: Vec::new(),
            buf,
        })
    }

    /// Ends a worker: closes its input (it exits on EOF), then kills it if it lingers.
    fn retire(&self, index: usize, w: Worker) {
        let Worker {
            mut child,
            input,
            output,
            stderr_done,
            ..
        } = w;
        drop(input);
        drop(output);
        let t0 = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if t0.elapsed() < RETIRE_GRACE => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        let _ = stderr_done.recv_timeout(Duration::from_secs(1));
        let mut pid = lock(&self.pids[index]);
        if *pid == Some(child.id()) {
            *pid = None;
        }
    }

    fn close(&self) {
        self.gate.close();
        for _ in 0..self.workers {
            let _ = self.tx.try_send(Msg::Wake);
        }
    }

    fn try_next_job(&self) -> Option<Job> {
        loop {
            match self.rx.try_recv() {
                Ok(Msg::Run(job)) => return Some(job),
                Ok(Msg::Wake) => continue,
                Err(_) => return None,
            }
        }
    }
}

/// Copies a worker's stderr to ours, line by line with its pid, keeping the last lines.
fn forward_stderr(
    pid: u32,
    stderr: std::process::ChildStderr,
    tail: &Mutex<VecDeque<String>>,
    done: Sender<()>,
) {
    let reader = BufReader::new(stderr);
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line).into_owned();
        eprintln!("[worker {pid}] {line}");
        if is_backtrace(&line) {
            // With RUST_BACKTRACE set, frames would push the cause out of the tail.
            continue;
        }
        let mut t = lock(tail);
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
    let _ = done.send(());
}

/// True for the lines of a printed backtrace (its header, frames and their locations).
fn is_backtrace(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("stack backtrace:")
        || t.starts_with("at ")
        || t.starts_with("note: Some details are omitted")
        || t.split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn last_line(tail: &Mutex<VecDeque<String>>) -> Option<String> {
    lock(tail)
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("note: "))
        .cloned()
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.signal(), status.code()) {
        (Some(sig), _) => format!("killed by signal {}", sys::signal_name(sig)),
        (None, Some(code)) => format!("exit code {code}"),
        (None, None) => "ended".to_owned(),
    }
}

/// One attempt across the pipe: send the request, wait for the reply. Runs inside the
/// job on its dispatcher's thread; cancellation (a timeout, a cancelled handle, a
/// shutdown past its deadline) kills the worker, which ends the wait.
fn round_trip(
    slot: &Slot,
    ctx: &TaskContext,
    request: Request,
    name: &'static str,
    memory_limit: Option<u64>,
) -> Result<Vec<u8>, CallError> {
    let mut guard = lock(slot);
    let Some(w) = guard.as_mut() else {
        return Err(CallError::lost(name, "no worker process is running"));
    };
    let killer = Arc::new(Killer {
        pid: Mutex::new(Some(w.pid)),
    });
    let waker = Waker::from(killer.clone());
    let mut cancelled = ctx.cancel_token().cancelled();
    if std::pin::Pin::new(&mut cancelled)
        .poll(&mut Context::from_waker(&waker))
        .is_ready()
    {
        killer.disarm();
        return Err(CallError::lost(name, "cancelled before it was sent"));
    }
    let id = request.id;
    let sent = wire::write_frame(&mut w.input, &Message::Request(request), &mut w.scratch)
        .and_then(|()| w.input.flush());
    let reply = match sent {
        Ok(()) => wire::read_frame(&mut w.output, &mut w.buf),
        Err(e) => Err(e),
    };
    killer.disarm();
    match reply {
        Ok(Some(Message::Reply(Reply::Ok { id: got, payload }))) if got == id => {
            w.tasks += 1;
            Ok(payload)
        }
        Ok(Some(Message::Reply(Reply::Err {
            id: got,
            kind,
            message,
        }))) if got == id => {
            w.tasks += 1;
            Err(CallError::worker(name, kind, message))
        }
        other => {
            // The worker died or broke the protocol: reap it and say why.
            let mut w = guard.take().expect("present above");
            drop(guard);
            if !matches!(other, Ok(None) | Err(_)) {
                sys::kill(w.pid);
            }
            let status = w.child.wait();
            let _ = w.stderr_done.recv_timeout(Duration::from_secs(1));
            let last = last_line(&w.tail);
            Err(crash_error(name, w.pid, status, other, last, memory_limit))
        }
    }
}

fn crash_error(
    name: &str,
    pid: u32,
    status: std::io::Result<ExitStatus>,
    reply: std::io::Result<Option<Message>>,
    last: Option<String>,
    memory_limit: Option<u64>,
) -> CallError {
    use std::os::unix::process::ExitStatusExt;
    let status = match status {
        Ok(s) => s,
        Err(e) => return CallError::lost(name, format!("worker {pid}: {e}")),
    };
    if let Ok(Some(m)) = reply {
        return CallError::lost(name, format!("worker {pid} sent {m:?} instead of a reply"));
    }
    let oom = last
        .as_deref()
        .is_some_and(|l| l.contains("memory allocation of"));
    let mut message = format!("worker pid {pid}");
    if oom {
        message.push_str(&format!(
            ", memory limit exceeded: memory_limit = {} bytes",
            memory_limit.unwrap_or(0)
        ));
    }
    if let Some(l) = last {
        message.push_str(&format!("; its last words: \"{l}\""));
    }
    let signal = status.signal().map(sys::signal_name);
    CallError::crashed(name, signal, status.code(), message)
}

/// A pool of worker processes that runs named tasks: crash and memory isolation, and
/// recycling. See the [crate docs](crate).
pub struct ProcessExecutor {
    inner: Arc<Inner>,
}

impl ProcessExecutor {
    /// Settings for an executor called `name`.
    pub fn builder(name: impl Into<String>) -> Builder {
        Builder {
            name: name.into(),
            workers: 2,
            max_tasks_per_child: None,
            memory_limit: None,
            start_timeout: Duration::from_secs(10),
            codec: Codec::Json,
            program: None,
        }
    }

    /// The number of worker processes.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// The pids of the worker processes alive now.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.inner.pids.iter().filter_map(|p| *lock(p)).collect()
    }
}

impl Executor for ProcessExecutor {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn execute(&self, job: Job) -> Result<(), SubmitError> {
        let inner = &*self.inner;
        if Call::of(job.meta()).is_none() {
            inner.stats.rejected();
            let reason = format!(
                "executor '{}' runs worker processes, and '{}' is a closure, which cannot \
                 leave this process; declare it as a named task (named_tasks::Task) or \
                 route it to an in-process executor",
                inner.name,
                job.meta().name()
            );
            job.resolve(TaskError::rejected(reason));
            return Ok(());
        }
        let entry = inner.gate.enter();
        let result = if !entry.is_open() {
            inner.stats.rejected();
            Err(SubmitError::shutdown(job))
        } else {
            inner.stats.accepted();
            inner.tx.send(Msg::Run(job)).map_err(|e| match e.0 {
                Msg::Run(job) => SubmitError::shutdown(job),
                Msg::Wake => unreachable!("only jobs are sent here"),
            })
        };
        drop(entry);
        result
    }

    fn stats(&self) -> ExecutorStats {
        self.inner.stats.snapshot()
    }

    /// Stops taking work. `Graceful(d)`: runs what is queued and running for up to `d`;
    /// past it (and at once for `Now`) drops what has not started and **kills the
    /// worker processes of running tasks** (they resolve as cancelled). Either way every
    /// worker process has ended when this returns.
    fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        let inner = &*self.inner;
        let mut report = ShutdownReport::new(&inner.name);
        if !inner.gate.begin_shutdown() {
            report.stats = inner.stats.snapshot();
            return report;
        }
        let deadline = Instant::now() + mode.deadline();
        inner.close();
        inner.gate.wait_in_flight(Some(deadline));
        let wait_live = |until: Instant| {
            let mut live = lock(&inner.live);
            while *live > 0 {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                live = inner
                    .all_done
                    .wait_timeout(live, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            *live == 0
        };
        let finished = wait_live(deadline) && inner.gate.in_flight() == 0;
        if !finished || !inner.rx.is_empty() {
            report.deadline_passed = !finished;
            inner.abandon.store(true, Ordering::Release);
            loop {
                inner
                    .not_started
                    .abandon_all(&inner.stats, || inner.try_next_job());
                if inner.gate.in_flight() == 0 {
                    break;
                }
                std::thread::yield_now();
            }
            // Running tasks end with their worker process.
            for running in inner.running.iter() {
                if let Some(token) = lock(running).as_ref() {
                    token.cancel();
                }
            }
            inner
                .not_started
                .drain(&inner.stats, || inner.try_next_job());
            // Each dispatcher now reaps its worker and exits.
            wait_live(Instant::now() + RETIRE_GRACE * 2);
        }
        report.not_started = inner.not_started.take();
        report.stats = inner.stats.snapshot();
        report.still_running = report.stats.running;
        report
    }
}

impl Drop for ProcessExecutor {
    /// Dropping the executor stops it taking work; queued tasks still run, then the
    /// dispatchers end their workers and exit. Call [`Executor::shutdown`] to wait.
    fn drop(&mut self) {
        self.inner.close();
    }
}

impl std::fmt::Debug for ProcessExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessExecutor")
            .field("name", &self.inner.name)
            .field("workers", &self.inner.workers)
            .field("program", &self.inner.settings.program)
            .finish()
    }
}
