//! switchyard supervisor: routes tasks to executors by a TOML policy file.

pub mod config;
mod ledger;
mod limit;
mod queue;
mod registry;
pub mod routing;
mod supervisor;
mod timers;
mod watch;

pub use config::{BackendOptions, ConfigError, PolicyConfig};
pub use ledger::{LedgerCounts, ShutdownLedger};
pub use queue::{Finished, Producer, QueueReport, TaskQueue};
pub use registry::{BackendFactory, ExecutorPlan, Registry};
pub use supervisor::Supervisor;
