//! Worker mode: the loop a re-executed binary runs when the pool started it.

use named_tasks::Tasks;
use named_tasks::wire::{self, Message};
use std::io::{BufReader, BufWriter, Write};

/// The environment variable that puts a process started by the pool in worker mode.
pub(crate) const WORKER_ENV: &str = "SWITCHYARD_PROCESS_WORKER";

/// True when this process was started by a pool as a worker.
pub fn is_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}

/// In a worker, the name of the pool (its executor name in the policy) that started it.
pub fn worker_pool_name() -> Option<String> {
    std::env::var(WORKER_ENV).ok()
}

/// The worker hook: call it first thing in `main`.
///
/// In a process the pool started, it runs the worker loop with the tasks `tasks` returns
/// and exits the process when the pool closes the pipe (it never returns). Anywhere
/// else it returns at once without calling `tasks`.
///
/// ```no_run
/// # static RESIZE: named_tasks::Task<u32, u32> = named_tasks::Task::new("r", |_, x| Ok(x));
/// fn main() {
///     executor_process::worker_hook(|| named_tasks::Tasks::new().with(&RESIZE));
///     // ... the program as usual ...
/// }
/// ```
pub fn worker_hook(tasks: impl FnOnce() -> Tasks) {
    if !is_worker() {
        return;
    }
    let code = match serve(&tasks()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("switchyard worker {}: {e}", std::process::id());
            3
        }
    };
    std::process::exit(code);
}

/// Answers requests from stdin until it closes.
fn serve(tasks: &Tasks) -> std::io::Result<()> {
    let out = crate::sys::take_stdout_for_frames()?;
    let mut out = BufWriter::new(out);
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut scratch = Vec::new();
    let mut buf = Vec::new();
    let hello = Message::Hello {
        pid: std::process::id(),
    };
    wire::write_frame(&mut out, &hello, &mut scratch)?;
    out.flush()?;
    while let Some(message) = wire::read_frame(&mut input, &mut buf)? {
        let Message::Request(request) = message else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "expected a request",
            ));
        };
        let reply = tasks.handle(&request);
        wire::write_frame(&mut out, &Message::Reply(reply), &mut scratch)?;
        out.flush()?;
    }
    Ok(())
}
