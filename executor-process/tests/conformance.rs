//! The named-task conformance suite on the process pool (two worker processes): ok,
//! error, panic, cancel, timeout and shutdown resolve every handle and keep the ledger
//! exact across the process boundary. A `harness = false` test: this binary is also the
//! workers', so its `main` starts with the worker hook.

use executor_process::ProcessExecutor;
use named_tasks::testing;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    executor_process::worker_hook(testing::tasks);
    testing::main(&|| {
        Arc::new(
            ProcessExecutor::builder("conformance")
                .workers(testing::CAPACITY)
                .start_timeout(testing::BOUND)
                .build()
                .expect("the pool starts"),
        )
    })
}
