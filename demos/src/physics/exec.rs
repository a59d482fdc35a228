//! Where the region tasks run: a switchyard executor, or a bare rayon pool for the baseline.

use super::sim::{RegionJob, RegionOut, RegionRunner};
use anyhow::{Context, Result};

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

/// The runner for the demo: the CPU executor the policy at `policy` names.
// Until the supervisor lands this is a plain pool; swapped for the policy's executor later.
pub fn cpu_runner(_policy: &std::path::Path) -> Result<Box<dyn RegionRunner>> {
    Ok(Box::new(PoolRunner::new(0)?))
}
