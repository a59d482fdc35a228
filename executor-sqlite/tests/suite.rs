//! The shared durable conformance suite on the SQLite backend.

use durable_testing::{DurableBackend, Setup};
use executor_sqlite::SqliteExecutor;

fn open(setup: &Setup) -> Box<dyn DurableBackend> {
    let mut b = SqliteExecutor::builder("durable")
        .path(setup.dir.join("queue.sqlite3"))
        .lease(setup.lease)
        .slots(setup.slots);
    for r in &setup.routes {
        b = b.route(r.clone());
    }
    Box::new(b.build().expect("the queue opens"))
}

durable_testing::durable_tests!(open);
