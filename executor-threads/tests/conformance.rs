//! The shared conformance suite, run on the threads backend (two workers).

use executor_threads::ThreadsExecutor;

executor_core::conformance_tests!(|| Arc::new(
    ThreadsExecutor::builder("conformance")
        .workers(2)
        .build()
        .expect("two workers start")
));
