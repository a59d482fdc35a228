//! switchyard supervisor: routes tasks to executors by a TOML policy file.

pub mod config;
mod limit;
pub mod routing;

pub use config::{ConfigError, PolicyConfig};
