//! Loom models of the hand-made synchronisation: every interleaving (and every weak
//! memory outcome loom knows) of the submit/shutdown gate and of a handle's
//! resolve/cancel/observe/requeue handshake. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p executor-core --lib loom --release`
//! (`cargo xtask ci` does).

use crate::admission::Admission;
use crate::cancel::{CancelSource, CancelToken};
use crate::handle::{Observer, Shared};
use crate::runners::Counted;
use crate::sync::{AtomicUsize, Mutex, Ordering};
use crate::{Status, TaskHandle, TaskId};
use loom::thread;
use std::sync::Arc;

/// A submission that saw the gate open is in the queue by the time the shutdown sees
/// nobody in flight, so the shutdown drains (or the workers run) every accepted job.
#[test]
fn loom_gate_never_loses_an_accepted_submission() {
    loom::model(|| {
        let gate = Arc::new(Admission::new());
        // One submitter: the property holds per submission, and a second one takes the
        // model from a fraction of a second to half a minute.
        // The queue; relaxed, so only the gate's own ordering can make the push visible.
        let queued = Arc::new(AtomicUsize::new(0));
        let submitters: Vec<_> = (0..1)
            .map(|_| {
                let (gate, queued) = (gate.clone(), queued.clone());
                thread::spawn(move || {
                    let entry = gate.enter();
                    let accepted = entry.is_open();
                    if accepted {
                        queued.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(entry);
                    accepted
                })
            })
            .collect();
        gate.close();
        assert!(gate.wait_in_flight(None));
        let drained = queued.load(Ordering::Relaxed);
        let accepted: usize = submitters
            .into_iter()
            .map(|s| usize::from(s.join().unwrap()))
            .sum();
        assert_eq!(
            drained, accepted,
            "an accepted submission was not yet queued when the shutdown drained"
        );
        // After the shutdown, the gate refuses.
        assert!(!gate.enter().is_open());
    });
}

/// Races a worker that starts and resolves the task (with 7) against a canceller.
fn run_and_cancel(shared: &Arc<Shared<u32>>) -> (thread::JoinHandle<()>, thread::JoinHandle<()>) {
    let worker = {
        let shared = shared.clone();
        thread::spawn(move || {
            if shared.try_start() {
                shared.resolve(Ok(7));
            }
        })
    };
    let token = CancelToken::from_source(shared.clone() as Arc<dyn CancelSource>);
    let canceller = thread::spawn(move || {
        token.cancel();
    });
    (worker, canceller)
}

/// Adds a closure observer to `shared`; what it hears, in order.
fn heard_by_closure(shared: &Arc<Shared<u32>>) -> Arc<Mutex<Vec<Status>>> {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    shared.observe(Observer::Call(Box::new(move |status| {
        sink.lock().unwrap().push(status)
    })));
    heard
}

/// The status a task raced by [`run_and_cancel`] ended with, from its handle's result.
fn ended_as(result: &Result<u32, crate::TaskError>) -> Status {
    match result {
        Ok(7) => Status::Completed,
        Err(e) if e.is_cancelled() => Status::Cancelled,
        other => panic!("unexpected result {other:?}"),
    }
}

/// A worker finishing, a cancel and an observer arriving at once: the handle resolves
/// exactly once, the waiter wakes, and every observer hears the status the waiter gets —
/// one set beforehand (a ledger) already when the waiter wakes.
#[test]
fn loom_handle_resolves_once_and_observers_agree() {
    loom::model(|| {
        let shared = Shared::<u32>::new();
        let handle = TaskHandle::new(TaskId::next(), shared.clone());
        let ledger = heard_by_closure(&shared);
        let (worker, canceller) = run_and_cancel(&shared);
        let heard = heard_by_closure(&shared);
        let result = handle.wait();
        let in_ledger = ledger.lock().unwrap().clone();
        worker.join().unwrap();
        canceller.join().unwrap();
        let heard = heard.lock().unwrap().clone();
        let expected = ended_as(&result);
        assert_eq!(
            heard,
            [expected],
            "the observer must hear the one resolution"
        );
        assert_eq!(
            in_ledger,
            [expected],
            "the ledger was not current when the waiter woke"
        );
    });
}

/// The same race with a ledger as the task's first observer (a shared one, told under the
/// slot's lock): it hears the one resolution, before the waiter wakes, and a closure
/// added meanwhile hears the same.
#[test]
fn loom_a_first_shared_observer_is_current_when_the_waiter_wakes() {
    use crate::backend::{EndObserver, MetaRef};
    use crate::handle::Sink;
    struct Ledger(std::sync::Mutex<Vec<Status>>);
    impl EndObserver for Ledger {
        fn ended(&self, status: Status, _: TaskId, _: &MetaRef) {
            self.0.lock().unwrap().push(status);
        }
    }
    loom::model(|| {
        let shared = Shared::<u32>::new();
        let handle = TaskHandle::new(TaskId::next(), shared.clone());
        let ledger = Arc::new(Ledger(std::sync::Mutex::new(Vec::new())));
        shared.observe_sink(Sink {
            observer: ledger.clone(),
            id: handle.id(),
            meta: MetaRef::Static(&crate::meta::ANONYMOUS),
        });
        let (worker, canceller) = run_and_cancel(&shared);
        let heard = heard_by_closure(&shared);
        let result = handle.wait();
        let in_ledger = ledger.0.lock().unwrap().clone();
        worker.join().unwrap();
        canceller.join().unwrap();
        let expected = ended_as(&result);
        assert_eq!(
            in_ledger,
            [expected],
            "the ledger was not current when the waiter woke"
        );
        assert_eq!(*heard.lock().unwrap(), [expected]);
    });
}

/// A cancel racing a failed attempt being put back for a retry: the task ends as
/// cancelled at once (not after its backoff) and its next attempt never starts.
#[test]
fn loom_cancel_between_attempts_is_never_lost() {
    loom::model(|| {
        let shared = Shared::<u32>::new();
        assert!(shared.try_start(), "the first attempt starts");
        let worker = {
            let shared = shared.clone();
            // The attempt failed; the retry layer puts the task back in the queue.
            thread::spawn(move || shared.requeue())
        };
        CancelToken::from_source(shared.clone() as Arc<dyn CancelSource>).cancel();
        worker.join().unwrap();
        assert!(shared.is_resolved(), "a cancel between attempts was lost");
        assert_eq!(shared.status(), Status::Cancelled);
        assert!(
            !shared.try_start(),
            "a cancelled task's next attempt started"
        );
    });
}

/// A task's single allocation (`Job` and `TaskHandle` share it): the job runs the body and
/// drops it on one thread while, on another, a token times the task out and the handle is
/// cancelled and waited for. Loom's cell checks that the job's part of the allocation (the
/// body, its value) is never reached from two threads at once, and the handle gets one
/// answer.
#[test]
fn loom_job_cell_is_never_shared() {
    loom::model(|| {
        let seen = Arc::new(Mutex::new(0u32));
        let captured = seen.clone();
        let (job, handle) = crate::Job::once(crate::TaskMeta::new("cell"), move |_ctx| {
            *captured.lock().unwrap() += 1;
            Ok::<u32, crate::TaskError>(7)
        });
        let token = job.weak_cancel_token();
        let worker = thread::spawn(move || {
            job.run();
        });
        if let Some(token) = token.upgrade() {
            token.expire();
        }
        handle.cancel();
        let result = handle.wait();
        worker.join().unwrap();
        let runs = *seen.lock().unwrap();
        match result {
            Ok(7) => assert_eq!(runs, 1),
            Err(e) => assert!(e.is_timeout() || e.is_cancelled(), "{e}"),
            Ok(other) => panic!("unexpected value {other}"),
        }
        assert!(runs <= 1);
        // The job dropped its body, and with it the body's clone of `seen`.
        assert_eq!(Arc::strong_count(&seen), 1);
    });
}

/// A future registering its waker on a task's token while the token fires (the wakers
/// are kept under the task's slot lock): it either sees the token fired or is woken,
/// never neither, and the task resolves as cancelled.
#[test]
fn loom_a_waker_registered_as_the_token_fires_is_never_lost() {
    use std::task::{Wake, Waker};
    /// Counts its wake-ups.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    loom::model(|| {
        let shared = Shared::<u32>::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waiter = {
            let shared = shared.clone();
            let waker = Waker::from(count.clone());
            thread::spawn(move || crate::cancel::register(&*shared, &waker))
        };
        CancelToken::from_source(shared.clone() as Arc<dyn CancelSource>).cancel();
        let saw_fired = waiter.join().unwrap();
        let woken = count.0.load(Ordering::SeqCst);
        assert!(
            saw_fired || woken == 1,
            "a waker was registered after the wake-up and never woken"
        );
        assert!(woken <= 1);
        assert_eq!(shared.status(), Status::Cancelled);
    });
}

/// The runners of the `map` models: a value is ten times its item's index.
type CountedRunners =
    crate::runners::Runners<crate::runners::Collected<Counted>, usize, fn(Counted) -> usize>;

/// Runners over `n` counted items writing to `out` (which must have room for them), and
/// the drop count.
#[allow(unsafe_code)] // The runners' output buffer, as `map_runners` sets it up.
fn counted_runners(
    n: usize,
    width: usize,
    out: &mut Vec<usize>,
) -> (Arc<CountedRunners>, Arc<std::sync::atomic::AtomicUsize>) {
    let drops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let items = crate::runners::Collected::new((0..n).map(|i| Counted(i, drops.clone())));
    // SAFETY: the models close the runners before they read or free `out`.
    let runners = unsafe { CountedRunners::new(items, width, |item: Counted| item.0 * 10, out) };
    (Arc::new(runners), drops)
}

/// The values of the written blocks, after `close`: each is its item's.
#[allow(unsafe_code)] // Reads the output buffer as `map_runners` does.
fn check_written(out: *const usize, written: &[std::ops::Range<usize>]) -> usize {
    for block in written {
        for i in block.clone() {
            // SAFETY: a written block's value, read after `close`.
            assert_eq!(unsafe { out.add(i).read() }, i * 10);
        }
    }
    written.iter().map(ExactSizeIterator::len).sum()
}

/// Two runners of one `map`, each cancelled at some point, share its items through the
/// claim cursor: every item is taken by one runner at most and its value written once
/// (loom's cells flag an item or a value reached from two threads at once), the written
/// blocks hold their items' values, and the items neither claimed drop with the runners.
#[test]
fn loom_map_runners_take_each_item_once() {
    // Two runners, each with a cancel check, a claim count and a compare-and-swap loop per
    // block, outgrow an unbounded search; four preemptions cover two claims racing.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(4);
    model.check(|| {
        let mut out = Vec::new();
        let (runners, drops) = counted_runners(3, 2, &mut out);
        let spawn = |runners: &Arc<CountedRunners>| {
            let runners = runners.clone();
            let ctx = crate::TaskContext::detached(crate::TaskMeta::new("runner"));
            let token = ctx.cancel_token().clone();
            let thread = thread::spawn(move || runners.run(&ctx));
            (thread, token)
        };
        let (first, first_token) = spawn(&runners);
        let (second, second_token) = spawn(&runners);
        first_token.cancel();
        second_token.cancel();
        first.join().unwrap();
        second.join().unwrap();
        let taken = check_written(out.as_ptr(), &runners.close());
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), taken);
        drop(runners);
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 3);
    });
}

/// `map` closes its runners while one is still running: after `close` returns, no runner
/// claims or writes a value (loom's cells flag a write that overlaps the map's reads), and
/// what it claimed before is written and listed.
#[test]
fn loom_map_close_waits_for_a_runner_inside_a_block() {
    loom::model(|| {
        let mut out = Vec::new();
        let (runners, drops) = counted_runners(2, 1, &mut out);
        let runner = runners.clone();
        let thread = thread::spawn(move || {
            runner.run(&crate::TaskContext::detached(crate::TaskMeta::new(
                "runner",
            )));
        });
        let taken = check_written(out.as_ptr(), &runners.close());
        thread.join().unwrap();
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), taken);
        drop(runners);
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 2);
    });
}
