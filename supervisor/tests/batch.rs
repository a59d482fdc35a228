//! A batch (`execute_batch`, what `map` calls) is routed job by job: a batch whose jobs
//! all take one plain route goes on whole, a mixed one is split by route, and either way
//! every job runs where its route says and the ledger counts each once.

use std::collections::BTreeMap;
use std::time::Duration;

use executor_core::backend::MetaRef;
use executor_core::{Executor, Job, ShutdownMode, TaskError, TaskHandle, TaskMeta};
use supervisor::Supervisor;

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
match = { name = "cpu.*" }
executor = "cpu"

[[route]]
match = { name = "timed.*" }
timeout = "10s"
"#;

/// Jobs for `metas`, each returning its place, and their handles.
fn jobs(metas: impl IntoIterator<Item = MetaRef>) -> (Vec<Job>, Vec<TaskHandle<usize>>) {
    metas
        .into_iter()
        .enumerate()
        .map(|(i, meta)| Job::once(meta, move |_| Ok::<_, TaskError>(i)))
        .unzip()
}

/// Tasks each executor was handed so far, by name.
fn submitted(sup: &Supervisor) -> BTreeMap<String, u64> {
    sup.executor_stats()
        .into_iter()
        .map(|(name, s)| (name, s.submitted))
        .collect()
}

fn wait_all(handles: Vec<TaskHandle<usize>>) {
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.wait().unwrap(), i);
    }
}

#[test]
fn a_batch_of_one_plain_route_goes_whole_to_its_executor() {
    let sup = Supervisor::from_toml(POLICY).unwrap();
    // A static meta: routed by its address from the second task on.
    let cpu: &'static TaskMeta = Box::leak(Box::new(TaskMeta::new("cpu.static")));
    for _ in 0..2 {
        let (batch, handles) = jobs((0..20).map(|_| MetaRef::from(cpu)));
        sup.execute_batch(batch);
        wait_all(handles);
    }
    let by_executor = submitted(&sup);
    assert_eq!(by_executor["cpu"], 40);
    assert_eq!(by_executor["io"], 0);
    let ledger = sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_secs(5)));
    assert!(ledger.is_balanced(), "{ledger}");
    assert_eq!((ledger.counts.submitted, ledger.counts.completed), (40, 40));
}

#[test]
fn a_mixed_batch_goes_job_by_job_to_each_route() {
    let sup = Supervisor::from_toml(POLICY).unwrap();
    let cpu: &'static TaskMeta = Box::leak(Box::new(TaskMeta::new("cpu.static")));
    let metas = (0..32).map(|i| match i % 4 {
        0 => MetaRef::from(cpu),
        1 => TaskMeta::new("cpu.shared").into(),
        // Through the timeout layer.
        2 => TaskMeta::new("timed.x").into(),
        _ => TaskMeta::new("plain").into(),
    });
    let (batch, handles) = jobs(metas);
    sup.execute_batch(batch);
    wait_all(handles);
    let by_executor = submitted(&sup);
    assert_eq!(by_executor["cpu"], 16);
    assert_eq!(by_executor["io"], 16);
    let ledger = sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_secs(5)));
    assert!(ledger.is_balanced(), "{ledger}");
    assert_eq!((ledger.counts.submitted, ledger.counts.completed), (32, 32));
}

#[test]
fn a_reload_routes_static_metas_by_the_new_rules() {
    let sup = Supervisor::from_toml(POLICY).unwrap();
    let cpu: &'static TaskMeta = Box::leak(Box::new(TaskMeta::new("cpu.static")));
    let (batch, handles) = jobs((0..4).map(|_| MetaRef::from(cpu)));
    sup.execute_batch(batch);
    wait_all(handles);
    // The same meta, remembered by the old table, goes where the new rules say.
    let moved = POLICY.replace("executor = \"cpu\"\n", "executor = \"io\"\n");
    sup.reload_str(&moved, "<moved>").unwrap();
    let (batch, handles) = jobs((0..4).map(|_| MetaRef::from(cpu)));
    sup.execute_batch(batch);
    wait_all(handles);
    let (job, handle) = Job::once(cpu, |_| Ok::<_, TaskError>(0));
    sup.execute(job).unwrap();
    wait_all(vec![handle]);
    let by_executor = submitted(&sup);
    assert_eq!((by_executor["cpu"], by_executor["io"]), (4, 5));
    let ledger = sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_secs(5)));
    assert!(ledger.is_balanced(), "{ledger}");
    assert_eq!(ledger.counts.completed, 9);
}
