//! Demo `scrape`: a polite concurrent crawler, routed by policy, against a local multi-host site.

pub mod fetch;
pub mod frontier;
pub mod links;
pub mod robots;
pub mod site;

use anyhow::Result;

/// Runs the demo with `args` (`args[0]` is the demo name).
pub fn main(_args: Vec<String>) -> Result<()> {
    anyhow::bail!("demo 'scrape' is not built yet")
}
