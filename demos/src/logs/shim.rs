//! TEMPORARY stand-in for executor-core until it lands (runs tasks inline).
#![allow(missing_docs, unreachable_pub, dead_code)]
pub mod executor_core {
    use std::collections::VecDeque;
    pub trait Executor: Send + Sync {
        fn shutdown(&self, _m: ShutdownMode) {}
    }
    pub enum ShutdownMode { Graceful(std::time::Duration) }
    pub struct TaskMeta;
    impl TaskMeta { pub fn new(_: &str) -> Self { TaskMeta } pub fn with_tag(self, _: &str) -> Self { self } }
    pub struct TaskHandle<T>(T);
    pub struct TaskSet<T>(VecDeque<T>);
    impl<T> TaskSet<T> {
        pub fn new() -> Self { TaskSet(VecDeque::new()) }
        pub fn push(&mut self, h: TaskHandle<T>) { self.0.push_back(h.0) }
        pub fn join_next(&mut self) -> Option<Result<T, String>> { self.0.pop_front().map(Ok) }
    }
    pub trait ExecutorExt {
        fn run_once<T, E: std::fmt::Debug, F: FnOnce(&()) -> Result<T, E>>(&self, _m: TaskMeta, f: F) -> TaskHandle<T> { TaskHandle(f(&()).unwrap()) }
    }
    impl<X: ?Sized> ExecutorExt for X {}
}
pub mod supervisor {
    pub struct Supervisor;
    impl super::executor_core::Executor for Supervisor {}
    impl Supervisor { pub fn from_file(_: &std::path::Path) -> anyhow::Result<std::sync::Arc<Supervisor>> { Ok(std::sync::Arc::new(Supervisor)) } }
}
