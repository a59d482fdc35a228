//! `demos physics bench`: particle-steps/s at 1 and 2 threads, ours vs plain rayon.

use anyhow::Result;

/// Options of the benchmark.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct BenchArgs {
    /// Number of particles.
    #[arg(long, default_value_t = 20_000)]
    particles: usize,
}

pub(super) fn run(_args: &BenchArgs) -> Result<()> {
    anyhow::bail!("not yet")
}
