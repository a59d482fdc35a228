//! `map` through the supervisor: on a plain route (no layers) it runs as the routed
//! executor's few runner tasks, and the ledger counts those; on a route with layers
//! (timeout, retries, limits, priority) every item stays a task of its own, so each gets
//! the layers' treatment and the ledger counts every item.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use executor_core::{Executor, ExecutorExt, ShutdownMode, TaskMeta};
use supervisor::{Layer, LayerContext, PolicyConfig, Service, Supervisor};

const POLICY: &str = r#"
[executors.io]
backend = "threads"
workers = 2

[executors.cpu]
backend = "rayon"
threads = 2

[defaults]
executor = "io"

[[route]]
match = { name = "plain.cpu" }
executor = "cpu"

[[route]]
match = { name = "timed" }
executor = "io"
timeout = "60s"

[[route]]
match = { name = "rated" }
executor = "cpu"
limit = { per = "route", rate = "1000000/s" }

[[route]]
match = { name = "ranked" }
executor = "io"
priority = 3
"#;

const N: u64 = 1_000;

/// Maps `N` items as tasks of `name` on a fresh supervisor; returns the width it gave for
/// them and the tasks its ledger counted.
fn map_on(name: &'static str) -> (Option<NonZeroUsize>, u64) {
    let sup = Supervisor::from_toml(POLICY).unwrap();
    let meta = TaskMeta::new(name);
    let width = sup.map_width(&meta);
    let out = sup.map_with(meta, 0..N, |x| x * 2).unwrap();
    assert_eq!(out, (0..N).map(|x| x * 2).collect::<Vec<_>>(), "{name}");
    let report = sup.shutdown(ShutdownMode::Graceful(Duration::from_secs(20)));
    assert!(report.stats.is_balanced(), "{name}: {:?}", report.stats);
    let ledger = sup.ledger();
    assert_eq!(ledger.completed, ledger.submitted, "{name}: {ledger:?}");
    (width, ledger.submitted)
}

#[test]
fn a_plain_route_maps_on_the_executors_runner_tasks() {
    for name in ["plain.io", "plain.cpu"] {
        let (width, tasks) = map_on(name);
        assert_eq!(width.map(NonZeroUsize::get), Some(2), "{name}");
        assert!(tasks <= 2, "{name}: {tasks} tasks for a map of {N}");
    }
}

#[test]
fn a_route_with_layers_keeps_a_task_per_item() {
    for name in ["timed", "rated", "ranked"] {
        let (width, tasks) = map_on(name);
        assert_eq!(width, None, "{name}");
        assert_eq!(tasks, N, "{name}");
    }
}

/// A layer of the user's that passes every task on unchanged.
struct PassOn;

impl Layer for PassOn {
    fn layer(&self, inner: Arc<dyn Service>, _cx: &LayerContext<'_>) -> Arc<dyn Service> {
        inner
    }
}

#[test]
fn a_layer_of_ones_own_keeps_a_task_per_item() {
    let config = PolicyConfig::parse(POLICY, "<test>").unwrap();
    let sup = Supervisor::builder()
        .config(config)
        .route_layer("route[1]", PassOn)
        .build()
        .unwrap();
    // The layer is on the first rule's route only: the defaults stay plain.
    assert_eq!(sup.map_width(&TaskMeta::new("plain.cpu")), None);
    assert!(sup.map_width(&TaskMeta::new("plain.io")).is_some());
    let out = sup
        .map_with(TaskMeta::new("plain.cpu"), 0..N, |x| x + 1)
        .unwrap();
    assert_eq!(out.len(), N as usize);
    sup.shutdown(ShutdownMode::Graceful(Duration::from_secs(20)));
    assert_eq!(sup.ledger().submitted, N);
}
