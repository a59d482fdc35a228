//! `demos <name>`: one binary for every switchyard demo, a module per demo.

use demos::DEMOS;

fn usage() -> String {
    let mut s = String::from("usage: demos <name> [args...]\n\ndemos:\n");
    for (name, summary, _) in DEMOS {
        s.push_str(&format!("  {name:<10} {summary}\n"));
    }
    s
}

fn main() -> anyhow::Result<()> {
    // In a worker process of a `backend = "process"` pool: serve named tasks, never return.
    executor_process::worker_hook(demos::worker_tasks);
    // Logs go to stderr. Demos log their own failures; the supervisor repeats each final
    // failure at warn, so by default it only speaks up for errors. RUST_LOG=info (or
    // debug) shows routing, retries and every failure.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,supervisor=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        eprint!("{}", usage());
        std::process::exit(2);
    };
    match DEMOS.iter().find(|(n, _, _)| *n == name) {
        Some((_, _, run)) => {
            if let Err(e) = run(std::iter::once(name).chain(args).collect()) {
                // The error and its causes, without a backtrace: bad input is not a bug.
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        None => {
            eprint!("unknown demo '{name}'\n\n{}", usage());
            std::process::exit(2);
        }
    }
}
