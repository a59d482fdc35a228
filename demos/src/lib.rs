//! The switchyard demos as a library, so that integration tests can drive them.
//!
//! [`Cli`] is the whole command line of the `demos` binary: one clap command whose
//! subcommands are the demos, each composed from its module's own arguments type. Each
//! module also keeps a `main(args)` entry point (`args[0]` is the demo name) that parses
//! only its own arguments, for tests that drive one demo in-process.

pub mod framework;
pub mod jobs;
pub mod logs;
pub mod physics;
pub mod scrape;

use clap::{Parser, Subcommand};

/// The named tasks the demos may send to worker processes: the `demos` binary's worker
/// hook (`executor_process::worker_hook`) serves these.
pub fn worker_tasks() -> named_tasks::Tasks {
    let mut tasks = jobs::kinds::tasks();
    tasks.add(&framework::SQUARES);
    tasks.add(&logs::MAP);
    tasks
}

/// The backends a demo's policy may name: the supervisor's built-ins, `process`, and the
/// durable `sqlite` and `nats`.
pub fn registry() -> supervisor::Registry {
    let mut registry = supervisor::Registry::with_builtins();
    executor_process::register(&mut registry);
    executor_sqlite::register(&mut registry);
    executor_nats::register(&mut registry);
    registry
}

/// The `demos` command line.
#[derive(Parser, Debug)]
#[command(
    name = "demos",
    version,
    about = "The switchyard demos: one binary, a subcommand per demo",
    long_about = "The switchyard demos: one binary, a subcommand per demo.\n\n\
                  Logs go to standard error; RUST_LOG (e.g. RUST_LOG=info) overrides each \
                  demo's default level.",
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// The demo to run, with its arguments.
    #[command(subcommand)]
    pub demo: Demo,
}

/// One demo and its parsed arguments.
#[derive(Subcommand, Debug)]
pub enum Demo {
    /// The mini framework: a task queue routed to I/O and CPU executors by policy.
    Framework(framework::Cli),
    /// A polite concurrent crawler against a local multi-host site (or real URLs).
    Scrape(scrape::Cli),
    /// A Lennard-Jones particle simulation split into load-balanced regions.
    Physics(physics::Cli),
    /// Map-reduce over large access logs with flat memory.
    Logs(logs::Cli),
    /// Durable background jobs that survive a kill.
    Jobs(jobs::Cli),
}

impl Demo {
    /// The `tracing` filter this demo logs with when `RUST_LOG` is not set.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Demo::Framework(_) => framework::LOG_FILTER,
            Demo::Scrape(_) => scrape::LOG_FILTER,
            Demo::Physics(_) => physics::LOG_FILTER,
            Demo::Logs(_) => logs::LOG_FILTER,
            Demo::Jobs(c) => c.log_filter(),
        }
    }

    /// Runs the demo.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Demo::Framework(c) => c.run(),
            Demo::Scrape(c) => c.run(),
            Demo::Physics(c) => c.run(),
            Demo::Logs(c) => c.run(),
            Demo::Jobs(c) => c.run(),
        }
    }
}

/// Installs the process's one `tracing` subscriber: `RUST_LOG` if set, else `default`;
/// lines go to standard error, coloured only when it is a terminal and `NO_COLOR` is
/// unset or empty. A second call changes nothing.
pub fn init_tracing(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}
