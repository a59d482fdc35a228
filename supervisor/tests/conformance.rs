//! executor-core's conformance suite, run on the supervisor: once routing straight to a
//! backend, once through every layer (retries, timeout, limits) set loose enough not to
//! change the outcome. Same semantics as any backend either way.

use supervisor::Supervisor;

mod plain {
    use super::*;
    executor_core::conformance_tests!(|| Supervisor::from_toml(
        "[executors.io]\nbackend = \"threads\"\nworkers = 2\n[defaults]\nexecutor = \"io\"\n"
    )
    .expect("the policy is valid"));
}

mod layered {
    use super::*;
    executor_core::conformance_tests!(|| Supervisor::from_toml(
        r#"
[executors.io]
backend = "threads"
workers = 2
[defaults]
executor = "io"
timeout = "60s"
retries = { max = 0 }
limit = { per = "route", concurrency = 64, rate = "1000000/s" }
"#
    )
    .expect("the policy is valid"));
}
