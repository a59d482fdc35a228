//! `demos scrape bench`: crawl throughput against the bound the per-host limits allow.

use clap::Args;

/// Benchmark settings.
#[derive(Args, Debug)]
pub struct BenchArgs {}

/// Runs the benchmark.
pub fn run(_args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
