//! The map-reduce. The calling thread cuts the input into chunks and hands them out; each
//! chunk's task reads it (plain files; streams are read by the calling thread), maps it to
//! partial metrics and merges them into the shared whole as it completes. Tasks run as
//! tasks on an executor, or on hand-written scoped threads for comparison; the reference
//! does everything on the calling thread, line by line.
//!
//! A plain file's chunk is the named task [`MAP`] (`logs.map`: path, offsets → partial
//! metrics), so a policy can send it to worker processes; the merge runs where the call
//! ran ([`Task::call_then`]): on the pool thread in-process, on the parent's dispatcher
//! thread for a process pool, never queued on the calling thread. A stream's chunk, whose
//! bytes are already in memory, is a closure (`logs.map.stream`).
//!
//! At most `inflight` chunks exist at once. A stream chunk's buffer and partial metrics
//! come back with the finished task and are reused for a later chunk; a file chunk reads
//! into its thread's buffer and maps into its thread's partial metrics, which come back
//! to that thread once merged. So memory does not grow with the input.

use super::chunk::{ChunkBuf, Chunker, PIECE};
use super::metrics::{Accumulator, Metrics};
use anyhow::{Context, Result, anyhow};
use executor_core::{Executor, ExecutorExt, TaskHandle, TaskMeta, TaskSet};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use named_tasks::Task;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::error::Error as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How a run cuts and schedules its input.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bytes per chunk before the cut at a line end.
    pub chunk_size: usize,
    /// Chunks in flight at most (buffers in use).
    pub inflight: usize,
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

/// One chunk of a plain file, as the map task's arguments: which lines of which file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MapArgs {
    /// The file (a worker process opens it by this path too).
    pub(crate) path: PathBuf,
    /// The file's length when the run began: nothing past it is read.
    pub(crate) file_len: u64,
    /// The chunk owns the lines that start in `[offset, offset + length)`.
    pub(crate) offset: u64,
    /// See `offset`.
    pub(crate) length: u64,
}

/// A map task's result: the chunk's partial metrics and the bytes of its lines.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Partial {
    /// Input bytes of the lines the chunk owns.
    pub(crate) bytes: u64,
    /// The process that mapped the chunk.
    pub(crate) pid: u32,
    /// Their metrics, finished.
    pub(crate) metrics: Metrics,
}

/// The map step of a plain file's chunk as a named task, tagged `cpu`: a policy can route
/// it to worker processes (the `demos` binary's worker hook serves it). In-process it runs
/// directly on its arguments, with no encoding.
pub(crate) static MAP: Task<MapArgs, Partial> =
    Task::new("logs.map", |_ctx, args: MapArgs| Ok(map_range(&args)?)).with_tags(&["cpu"]);

/// A thread's map scratch, reused from chunk to chunk.
#[derive(Default)]
struct Scratch {
    buf: Option<ChunkBuf>,
    /// Cleared partial metrics whose maps keep their keys and capacity.
    metrics: Option<Metrics>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Reads and maps one chunk of a plain file, in this thread's buffer and partial metrics.
fn map_range(args: &MapArgs) -> Result<Partial> {
    let file =
        File::open(&args.path).with_context(|| format!("opening {}", args.path.display()))?;
    let (buf, metrics) = SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        (s.buf.take(), s.metrics.take())
    });
    let mut buf = buf.unwrap_or_default();
    let mut m = metrics.unwrap_or_default();
    let read = buf.for_lines_in_range(&file, args.file_len, args.offset, args.length, PIECE, |l| {
        m.add_line(l)
    });
    SCRATCH.with(|s| s.borrow_mut().buf = Some(buf));
    let bytes = read?;
    m.finish();
    Ok(Partial {
        bytes,
        pid: std::process::id(),
        metrics: m,
    })
}

/// Merges chunk `index`'s partial into the whole; returns its input bytes. In-process the
/// merge runs on the thread that mapped the chunk, which keeps the partial's maps for its
/// next chunk (a thread that does not map, such as a process pool's dispatcher, drops them).
fn merge(acc: &Mutex<Accumulator>, index: usize, partial: Partial) -> u64 {
    let Partial {
        bytes,
        pid,
        mut metrics,
    } = partial;
    {
        let mut acc = acc.lock().unwrap_or_else(|e| e.into_inner());
        acc.merge(index, bytes, &metrics);
        if pid != std::process::id() {
            acc.remote_chunks += 1;
        }
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.buf.is_some() && s.metrics.is_none() {
            metrics.clear();
            s.metrics = Some(metrics);
        }
    });
    bytes
}

/// Where a job's bytes come from.
#[derive(Debug, Default)]
enum Source {
    /// The buffer already holds the chunk (streams, filled by the reading thread).
    #[default]
    Filled,
    /// The task reads a range of a plain file itself.
    Range(MapArgs),
}

/// One chunk: for a stream, its buffer and partial metrics (the unit of work and of reuse).
#[derive(Debug, Default)]
pub(crate) struct Job {
    buf: ChunkBuf,
    metrics: Metrics,
    source: Source,
    /// Input bytes of the last chunk done, for the progress bar.
    done_bytes: u64,
}

impl Job {
    /// The map step, then the merge of its partial metrics into the shared whole.
    fn run(mut self, acc: &Mutex<Accumulator>) -> Result<Self> {
        self.done_bytes = match std::mem::take(&mut self.source) {
            Source::Range(args) => merge(acc, self.buf.index, map_range(&args)?),
            Source::Filled => {
                self.metrics.add_chunk(self.buf.bytes());
                let bytes = self.buf.bytes().len() as u64;
                acc.lock().unwrap_or_else(|e| e.into_inner()).merge(
                    self.buf.index,
                    bytes,
                    &self.metrics,
                );
                self.metrics.clear();
                bytes
            }
        };
        Ok(self)
    }
}

/// An opened input.
pub(crate) enum Input {
    /// A plain file of known length: chunks are read by positional reads.
    File(File, u64),
    /// Anything else (`.gz`, pipes): read in order.
    Stream(Box<dyn Read + Send>),
}

/// Opens `path`, decompressing `.gz` files; `-` is standard input, read as a stream.
pub(crate) fn open(path: &Path) -> Result<Input> {
    if path == Path::new("-") {
        return Ok(Input::Stream(Box::new(std::io::stdin())));
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        return Ok(Input::Stream(Box::new(flate2::read::MultiGzDecoder::new(
            file,
        ))));
    }
    match file.metadata() {
        Ok(m) if m.is_file() => Ok(Input::File(file, m.len())),
        _ => Ok(Input::Stream(Box::new(file))),
    }
}

fn progress_bar(files: &[PathBuf], show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let mut total = Some(0u64);
    for f in files {
        let gz = f.extension().is_some_and(|e| e == "gz");
        match (std::fs::metadata(f), gz) {
            (Ok(m), false) => total = total.map(|t| t + m.len()),
            _ => total = None,
        }
    }
    let pb = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{wide_bar}] {decimal_bytes}/{decimal_total_bytes} {msg}",
    )
    .expect("constant template is valid")
    .progress_chars("=> ");
    pb.set_style(style);
    pb
}

/// Where the map step of each chunk runs.
trait MapRunner {
    /// Starts `job`: its map step and the merge into `acc`.
    fn submit(&mut self, job: Job, acc: &Arc<Mutex<Accumulator>>) -> Result<()>;
    /// Waits for any started job to finish and returns it.
    fn next_done(&mut self) -> Result<Job>;
}

/// Hands out jobs: a free one, a new one while fewer than `inflight` exist, or the next
/// to finish.
struct Jobs<'a> {
    free: Vec<Job>,
    created: usize,
    in_flight: usize,
    limit: usize,
    pb: ProgressBar,
    started: Instant,
    runner: &'a mut dyn MapRunner,
}

impl Jobs<'_> {
    fn done(&mut self, job: &Job) {
        self.pb.inc(job.done_bytes);
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        self.pb.set_message(format!(
            "{:.2} GB/s",
            self.pb.position() as f64 / secs / 1e9
        ));
    }

    fn take(&mut self) -> Result<Job> {
        if let Some(job) = self.free.pop() {
            return Ok(job);
        }
        if self.created < self.limit {
            self.created += 1;
            return Ok(Job::default());
        }
        self.wait_one()
    }

    /// Waits for one started job; it counts as finished even when it failed.
    fn wait_one(&mut self) -> Result<Job> {
        let done = self.runner.next_done();
        self.in_flight -= 1;
        let job = done?;
        self.done(&job);
        Ok(job)
    }

    fn submit(&mut self, job: Job, acc: &Arc<Mutex<Accumulator>>) -> Result<()> {
        self.runner.submit(job, acc)?;
        self.in_flight += 1;
        Ok(())
    }

    /// Waits for every started job, also after a failure; returns the first error.
    fn drain(&mut self) -> Result<()> {
        let mut first_error = None;
        while self.in_flight > 0 {
            match self.wait_one() {
                Ok(job) => self.free.push(job),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn next_chunk(acc: &Mutex<Accumulator>) -> usize {
    acc.lock().unwrap_or_else(|e| e.into_inner()).next_chunk()
}

/// Cuts every file into chunks and has `runner` map and merge them, with at most
/// `opts.inflight` chunks in flight. Plain files are read by the tasks themselves
/// (positional reads); streams are read here.
fn drive(files: &[PathBuf], opts: &Options, runner: &mut dyn MapRunner) -> Result<Accumulator> {
    let acc = Arc::new(Mutex::new(Accumulator::new()));
    let mut jobs = Jobs {
        free: Vec::new(),
        created: 0,
        in_flight: 0,
        limit: opts.inflight.max(1),
        pb: progress_bar(files, opts.progress),
        started: Instant::now(),
        runner,
    };
    let result = (|| -> Result<()> {
        for path in files {
            acc.lock()
                .unwrap_or_else(|e| e.into_inner())
                .begin_file(path.display().to_string());
            match open(path)? {
                Input::File(_, len) => {
                    let size = opts.chunk_size.max(1) as u64;
                    let mut start = 0;
                    while start < len {
                        let mut job = jobs.take()?;
                        job.buf.index = next_chunk(&acc);
                        job.source = Source::Range(MapArgs {
                            path: path.clone(),
                            file_len: len,
                            offset: start,
                            length: size,
                        });
                        jobs.submit(job, &acc)?;
                        start += size;
                    }
                }
                Input::Stream(reader) => {
                    let mut chunker = Chunker::new(reader, opts.chunk_size);
                    loop {
                        let mut job = jobs.take()?;
                        let more = chunker
                            .fill(&mut job.buf)
                            .with_context(|| format!("reading {}", path.display()))?;
                        if !more {
                            jobs.free.push(job);
                            break;
                        }
                        job.buf.index = next_chunk(&acc);
                        job.source = Source::Filled;
                        jobs.submit(job, &acc)?;
                    }
                }
            }
        }
        Ok(())
    })();
    // Every started job is waited for, also after an error, so none outlives the run.
    let drained = jobs.drain();
    result?;
    drained?;
    jobs.pb.finish_and_clear();
    drop(jobs);
    // Every job has finished and merged; take the whole out of the shared cell.
    let mut whole = acc.lock().unwrap_or_else(|e| e.into_inner());
    Ok(std::mem::replace(&mut *whole, Accumulator::new()))
}

/// Runs the map step as tasks on `exec`, tagged `cpu` so a policy can route them: a
/// file's chunks as the named task [`MAP`], a stream's as closures.
struct ExecutorRunner<'a> {
    exec: &'a Arc<dyn Executor>,
    running: TaskSet<Job>,
}

impl MapRunner for ExecutorRunner<'_> {
    fn submit(&mut self, mut job: Job, acc: &Arc<Mutex<Accumulator>>) -> Result<()> {
        let acc = acc.clone();
        let handle: TaskHandle<Job> = match std::mem::take(&mut job.source) {
            Source::Range(args) => {
                let index = job.buf.index;
                MAP.call_then(&**self.exec, args, move |partial| {
                    job.done_bytes = merge(&acc, index, partial);
                    job
                })
            }
            Source::Filled => {
                let meta = TaskMeta::new("logs.map.stream").with_tag("cpu");
                self.exec.run_once(meta, move |_ctx| job.run(&acc))
            }
        };
        self.running.push(handle);
        Ok(())
    }

    fn next_done(&mut self) -> Result<Job> {
        match self.running.join_next() {
            Some((_, r)) => r.map_err(|e| match e.source() {
                Some(cause) => anyhow!("a map task failed: {cause}"),
                None => anyhow!("a map task failed: {e}"),
            }),
            None => Err(anyhow!("no map task is running")),
        }
    }
}

/// The map-reduce with the map step on `exec`.
pub(crate) fn run_executor(
    files: &[PathBuf],
    opts: &Options,
    exec: &Arc<dyn Executor>,
) -> Result<Accumulator> {
    let mut runner = ExecutorRunner {
        exec,
        running: TaskSet::new(),
    };
    drive(files, opts, &mut runner)
}

type ScopedJob = (Job, Arc<Mutex<Accumulator>>);

/// Runs the map step on hand-written scoped threads fed by channels.
struct ScopedRunner {
    jobs: Option<crossbeam_channel::Sender<ScopedJob>>,
    done: crossbeam_channel::Receiver<Result<Job>>,
}

impl MapRunner for ScopedRunner {
    fn submit(&mut self, job: Job, acc: &Arc<Mutex<Accumulator>>) -> Result<()> {
        let jobs = self.jobs.as_ref().expect("workers are running");
        jobs.send((job, acc.clone()))
            .map_err(|_| anyhow!("the map workers stopped"))
    }

    fn next_done(&mut self) -> Result<Job> {
        self.done
            .recv()
            .map_err(|_| anyhow!("the map workers stopped"))?
    }
}

/// The same map-reduce with the map step on `threads` plain scoped threads: the yardstick
/// the executor version is measured against.
pub(crate) fn run_scoped(files: &[PathBuf], opts: &Options, threads: usize) -> Result<Accumulator> {
    let (job_tx, job_rx) = crossbeam_channel::bounded::<ScopedJob>(opts.inflight.max(1));
    let (done_tx, done_rx) = crossbeam_channel::bounded::<Result<Job>>(opts.inflight.max(1));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            s.spawn(move || {
                for (job, acc) in job_rx {
                    let done = job.run(&acc);
                    drop(acc);
                    if done_tx.send(done).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut runner = ScopedRunner {
            jobs: Some(job_tx),
            done: done_rx,
        };
        let result = drive(files, opts, &mut runner);
        runner.jobs = None; // close the queue so the workers end
        result
    })
}

/// The single-threaded reference: plain buffered line reading, no chunks, no tasks.
pub(crate) fn run_reference(files: &[PathBuf]) -> Result<Accumulator> {
    let mut acc = Accumulator::new();
    let mut m = Metrics::default();
    let mut line = Vec::new();
    for path in files {
        acc.begin_file(path.display().to_string());
        let chunk = acc.next_chunk();
        let reader: Box<dyn Read + Send> = match open(path)? {
            Input::File(f, _) => Box::new(f),
            Input::Stream(r) => r,
        };
        let mut reader = BufReader::with_capacity(1 << 16, reader);
        let mut bytes = 0u64;
        m.clear();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            m.add_line(line.strip_suffix(b"\n").unwrap_or(&line));
        }
        m.finish();
        acc.merge(chunk, bytes, &m);
    }
    Ok(acc)
}
