//! Demo `scrape` (placeholder until implemented).

use anyhow::Result;

/// Runs the demo with `args` (`args[0]` is the demo name).
pub fn main(_args: Vec<String>) -> Result<()> {
    anyhow::bail!("demo 'scrape' is not built yet")
}
