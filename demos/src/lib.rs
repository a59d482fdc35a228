//! The switchyard demos as a library, so that integration tests can drive them.
//!
//! Each demo is a module with a `main(args)` entry point; the `demos` binary picks one by name.

pub mod framework;
pub mod jobs;
pub mod logs;
pub mod physics;
pub mod scrape;

/// The named tasks the demos may send to worker processes: the `demos` binary's worker
/// hook (`executor_process::worker_hook`) serves these.
pub fn worker_tasks() -> named_tasks::Tasks {
    named_tasks::Tasks::new().with(&framework::SQUARES)
}

/// The backends a demo's policy may name: the supervisor's built-ins and `process`.
pub fn registry() -> supervisor::Registry {
    let mut registry = supervisor::Registry::with_builtins();
    executor_process::register(&mut registry);
    registry
}

/// A demo's entry point: `args[0]` is the demo name, the rest its arguments.
pub type Entry = fn(Vec<String>) -> anyhow::Result<()>;

/// Every demo: its name, a one-line summary and its entry point.
pub const DEMOS: &[(&str, &str, Entry)] = &[
    (
        "framework",
        "the mini framework: a task queue routed to I/O and CPU executors by policy",
        framework::main,
    ),
    (
        "scrape",
        "a polite concurrent crawler against a local multi-host site",
        scrape::main,
    ),
    (
        "physics",
        "a Lennard-Jones particle simulation split into load-balanced regions",
        physics::main,
    ),
    (
        "logs",
        "map-reduce over large access logs with flat memory",
        logs::main,
    ),
    (
        "jobs",
        "durable background jobs that survive a kill",
        jobs::main,
    ),
];
