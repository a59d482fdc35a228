//! The map-reduce: the calling thread reads chunks and merges partial results; the map
//! step (one chunk to partial metrics) runs elsewhere — as tasks on an executor, or on
//! hand-written scoped threads for comparison — or, for the reference, nowhere but here.
//!
//! At most `inflight` chunks exist at once: a chunk's buffer and its partial metrics come
//! back with the finished task and are reused for a later chunk, so memory does not grow
//! with the input.

use super::chunk::{ChunkBuf, Chunker};
use super::metrics::{Accumulator, Metrics};
use anyhow::{Context, Result, anyhow};
use executor_core::{Executor, ExecutorExt, TaskHandle, TaskMeta, TaskSet};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::convert::Infallible;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// One chunk's buffer and its partial metrics: the unit of work and of reuse.
#[derive(Debug, Default)]
pub(crate) struct Job {
    buf: ChunkBuf,
    metrics: Metrics,
}

impl Job {
    /// The map step.
    fn map(mut self) -> Self {
        self.metrics.add_chunk(self.buf.bytes());
        self
    }
}

/// Opens `path`, decompressing `.gz` files. Returns the reader and, for plain files, the size.
pub(crate) fn open(path: &Path) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok((Box::new(flate2::read::MultiGzDecoder::new(file)), None))
    } else {
        let len = file.metadata().map(|m| m.len()).ok();
        Ok((Box::new(file), len))
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
        "{spinner} {elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {msg}",
    )
    .expect("constant template is valid")
    .progress_chars("=> ");
    pb.set_style(style);
    pb
}

/// Where the map step of each chunk runs.
trait MapRunner {
    /// Starts the map step of `job`.
    fn submit(&mut self, job: Job) -> Result<()>;
    /// Waits for any started job to finish and returns it.
    fn next_done(&mut self) -> Result<Job>;
}

struct Drive<'a> {
    acc: Accumulator,
    pb: ProgressBar,
    started: Instant,
    opts: &'a Options,
}

impl Drive<'_> {
    fn merge(&mut self, mut job: Job) -> Job {
        let len = job.buf.bytes().len() as u64;
        self.acc.merge(job.buf.index, len, &job.metrics);
        job.metrics.clear();
        self.pb.inc(len);
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        self.pb.set_message(format!(
            "{:.2} GB/s",
            self.pb.position() as f64 / secs / 1e9
        ));
        job
    }
}

/// Reads every file in chunks, has `runner` map them, merges results as they complete.
fn drive(files: &[PathBuf], opts: &Options, runner: &mut dyn MapRunner) -> Result<Accumulator> {
    let mut d = Drive {
        acc: Accumulator::new(),
        pb: progress_bar(files, opts.progress),
        started: Instant::now(),
        opts,
    };
    let mut free: Vec<Job> = Vec::new();
    let mut created = 0;
    let mut in_flight = 0;
    for path in files {
        d.acc.begin_file(path.display().to_string());
        let (reader, _) = open(path)?;
        let mut chunker = Chunker::new(reader, d.opts.chunk_size);
        loop {
            let mut job = match free.pop() {
                Some(job) => job,
                None if created < d.opts.inflight.max(1) => {
                    created += 1;
                    Job::default()
                }
                None => {
                    let done = runner.next_done()?;
                    in_flight -= 1;
                    d.merge(done)
                }
            };
            if !chunker
                .fill(&mut job.buf)
                .with_context(|| format!("reading {}", path.display()))?
            {
                free.push(job);
                break;
            }
            job.buf.index = d.acc.next_chunk();
            runner.submit(job)?;
            in_flight += 1;
        }
    }
    while in_flight > 0 {
        let done = runner.next_done()?;
        in_flight -= 1;
        d.merge(done);
    }
    d.pb.finish_and_clear();
    Ok(d.acc)
}

/// Runs the map step as tasks on `exec`, tagged `cpu` so a policy can route them.
struct ExecutorRunner<'a> {
    exec: &'a Arc<dyn Executor>,
    running: TaskSet<Job>,
}

impl MapRunner for ExecutorRunner<'_> {
    fn submit(&mut self, job: Job) -> Result<()> {
        let meta = TaskMeta::new("logs.map").with_tag("cpu");
        let handle: TaskHandle<Job> = self
            .exec
            .run_once(meta, move |_ctx| Ok::<_, Infallible>(job.map()));
        self.running.push(handle);
        Ok(())
    }

    fn next_done(&mut self) -> Result<Job> {
        match self.running.join_next() {
            Some((_, r)) => r.map_err(|e| anyhow!("a map task failed: {e}")),
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

/// Runs the map step on hand-written scoped threads fed by channels.
struct ScopedRunner {
    jobs: Option<crossbeam_channel::Sender<Job>>,
    done: crossbeam_channel::Receiver<Job>,
}

impl MapRunner for ScopedRunner {
    fn submit(&mut self, job: Job) -> Result<()> {
        let jobs = self.jobs.as_ref().expect("workers are running");
        jobs.send(job)
            .map_err(|_| anyhow!("the map workers stopped"))
    }

    fn next_done(&mut self) -> Result<Job> {
        self.done
            .recv()
            .map_err(|_| anyhow!("the map workers stopped"))
    }
}

/// The same map-reduce with the map step on `threads` plain scoped threads: the yardstick
/// the executor version is measured against.
pub(crate) fn run_scoped(files: &[PathBuf], opts: &Options, threads: usize) -> Result<Accumulator> {
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(opts.inflight.max(1));
    let (done_tx, done_rx) = crossbeam_channel::bounded::<Job>(opts.inflight.max(1));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            s.spawn(move || {
                for job in job_rx {
                    if done_tx.send(job.map()).is_err() {
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
        let (reader, _) = open(path)?;
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
