//! `demos <name>`: one binary for every switchyard demo, a subcommand per demo.
//!
//! One error path: a usage error exits 2 with clap's message (`--help` and `--version`
//! exit 0); a failed run prints one `error: ` line with the cause chain and exits 1.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // In a worker process of a `backend = "process"` pool: serve named tasks, never return.
    executor_process::worker_hook(demos::worker_tasks);
    let cli = demos::Cli::parse();
    // The one subscriber of the process, with the chosen demo's default level.
    demos::init_tracing(cli.demo.default_log_filter());
    match cli.demo.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The error and its causes on one line, without a backtrace: bad input is
            // not a bug.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
