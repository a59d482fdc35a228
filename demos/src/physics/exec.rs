//! Where the region tasks run: a switchyard executor, or a bare rayon pool for the baseline.

use super::kernel::{RegionJob, RegionOut};
use super::sim::RegionRunner;
use anyhow::{Context, Result};
use executor_core::{Executor, Job, TaskHandle, TaskMeta};
use std::path::Path;
use std::sync::Arc;
use supervisor::Supervisor;

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
    meta: Arc<TaskMeta>,
}

impl ExecutorRunner {
    /// A runner submitting to `exec` (typically the supervisor loaded from the policy).
    pub fn new(exec: Arc<dyn Executor>) -> Self {
        Self {
            exec,
            meta: Arc::new(region_meta()),
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

    /// A task per region (the demo counts and times region tasks), submitted as one batch:
    /// not `map_with`, which on a plain route runs the regions on a few runner tasks.
    fn run_round(&self, jobs: Vec<RegionJob>) -> Result<Vec<RegionOut>> {
        let (jobs, handles): (Vec<Job>, Vec<TaskHandle<Result<RegionOut>>>) = jobs
            .into_iter()
            .map(|region| Job::once(self.meta.clone(), move |_| Ok(region.run())))
            .unzip();
        self.exec.execute_batch(jobs);
        handles
            .into_iter()
            .map(|h| h.wait().context("a region task did not complete")?)
            .collect()
    }
}

/// The meta every region task carries: the policy routes on it.
pub fn region_meta() -> TaskMeta {
    TaskMeta::new("physics.region").with_tag("cpu")
}

/// The supervisor for the policy file at `policy`, and the name of the executor it routes
/// region tasks to.
pub fn cpu_executor(policy: &Path) -> Result<(Arc<dyn Executor>, String)> {
    let sup = Supervisor::from_file(policy)
        .with_context(|| format!("the policy file {} was rejected", policy.display()))?;
    let routed = sup.explain(&region_meta()).executor().to_string();
    Ok((sup, routed))
}

/// Our executor with exactly `threads` threads, for the benchmark's 1- and 2-thread figures:
/// the supervisor over the demo's policy with the rayon pool's size set.
pub fn bench_executor(threads: usize) -> Result<Arc<dyn Executor>> {
    let policy = format!(
        "[executors.cpu]\nbackend = \"rayon\"\nthreads = {threads}\n\n[defaults]\nexecutor = \"cpu\"\n\n\
         [[route]]\nmatch = {{ tags = [\"cpu\"] }}\nexecutor = \"cpu\"\n"
    );
    Ok(Supervisor::from_toml(&policy).context("building the benchmark's supervisor")?)
}
