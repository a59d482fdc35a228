//! The named-task conformance suite on an in-process backend (executor-threads, two
//! workers): the function runs directly, with no encoding. `executor-process` runs the
//! same suite across the process boundary.

use executor_threads::ThreadsExecutor;

named_tasks::conformance_tests!(|| Arc::new(
    ThreadsExecutor::builder("named-conformance")
        .workers(2)
        .build()
        .unwrap()
));
