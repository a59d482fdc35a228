//! Where the region tasks run: a switchyard executor, or a bare rayon pool for the baseline.

use super::sim::{RegionJob, RegionOut, RegionRunner};
use anyhow::{Context, Result};
use executor_core::{Executor, ExecutorExt, TaskMeta};
use std::path::Path;
use std::sync::Arc;

/// The hand-written baseline: the same region jobs, run by `par_iter` on a rayon pool of its
/// own, with no switchyard in between. Only the benchmark uses it.
pub struct PoolRunner {
    pool: rayon::ThreadPool,
}

impl PoolRunner {
    /// A baseline runner with a pool of `threads` threads.
    pub fn new(threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("physics-baseline-{i}"))
            .build()
            .context("building the baseline rayon pool")?;
        Ok(Self { pool })
    }
}

impl RegionRunner for PoolRunner {
    fn name(&self) -> String {
        format!(
            "plain rayon pool ({} threads)",
            self.pool.current_num_threads()
        )
    }

    fn run_round(&self, jobs: Vec<RegionJob>) -> Result<Vec<RegionOut>> {
        use rayon::prelude::*;
        self.pool
            .install(|| jobs.into_par_iter().map(RegionJob::run).collect())
    }
}

/// Runs each round's region jobs as `physics.region` tasks (tag `cpu`) on a switchyard
/// executor, and waits for all of them. This is the only way the demo itself runs tasks.
pub struct ExecutorRunner {
    exec: Arc<dyn Executor>,
    meta: TaskMeta,
}

impl ExecutorRunner {
    /// A runner submitting to `exec` (typically the supervisor loaded from the policy).
    pub fn new(exec: Arc<dyn Executor>) -> Self {
        Self {
            exec,
            meta: TaskMeta::new("physics.region").with_tag("cpu"),
        }
    }

    /// The executor the tasks go to.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.exec
    }
}

impl RegionRunner for ExecutorRunner {
    fn name(&self) -> String {
        self.exec.name().to_string()
    }

    fn run_round(&self, jobs: Vec<RegionJob>) -> Result<Vec<RegionOut>> {
        self.exec
            .map_with(self.meta.clone(), jobs, RegionJob::run)
            .context("a region task did not complete")?
            .into_iter()
            .collect()
    }
}

/// The executor the demo submits its region tasks to, from the policy file at `policy`.
// Interim: until the supervisor lands on main, a rayon executor with one thread per core
// (what `policies/physics.toml` asks for) stands in; only this function changes when it does.
pub fn cpu_executor(_policy: &Path) -> Result<Arc<dyn Executor>> {
    rayon_executor(0)
}

/// Our executor with exactly `threads` threads, for the benchmark's 1- and 2-thread figures.
// Interim, like `cpu_executor`.
pub fn bench_executor(threads: usize) -> Result<Arc<dyn Executor>> {
    rayon_executor(threads)
}

fn rayon_executor(threads: usize) -> Result<Arc<dyn Executor>> {
    Ok(Arc::new(
        executor_rayon::RayonExecutor::builder("cpu")
            .threads(threads)
            .build()
            .context("starting the CPU executor")?,
    ))
}
