//! `cargo xtask`: runs the demos, the benchmarks and the CI checks of the workspace.

mod msrv;
mod tidy;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  demo [NAME] [-- ARGS]   run one demo (or every demo, one after another, on defaults)
  bench NAME [-- ARGS]    run a benchmark (release build); names: overhead, auto, scrape, logs, physics, jobs, process
  ci                      fmt check, clippy -D warnings, tests, docs with warnings denied
";

/// Demos run by `cargo xtask demo` with no name, in this order.
const DEMOS: &[&str] = &["framework", "scrape", "physics", "logs", "jobs"];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((cmd, rest)) => (cmd.as_str(), rest),
        None => {
            eprint!("{USAGE}");
            std::process::exit(2);
        }
    };
    match cmd {
        "demo" => demo(rest),
        "bench" => bench(rest),
        "ci" => ci(),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("unknown command '{other}'\n\n{USAGE}");
            std::process::exit(2);
        }
    }
}

/// The workspace root, found from this crate's manifest directory.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(mut cmd: Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Splits `[NAME] [-- ARGS]` into the optional name and the pass-through arguments.
fn name_and_args(rest: &[String]) -> (Option<&str>, &[String]) {
    match rest.split_first() {
        Some((first, tail)) if first != "--" => {
            let tail = tail.strip_prefix(&["--".to_string()]).unwrap_or(tail);
            (Some(first.as_str()), tail)
        }
        Some((_, tail)) => (None, tail),
        None => (None, rest),
    }
}

fn demo(rest: &[String]) -> Result<()> {
    let (name, args) = name_and_args(rest);
    let names: Vec<&str> = match name {
        Some(n) => vec![n],
        None => DEMOS.to_vec(),
    };
    for name in names {
        eprintln!("\n=== demo {name} ===");
        let mut cmd = cargo();
        cmd.args([
            "run",
            "--release",
            "--quiet",
            "--package",
            "demos",
            "--",
            name,
        ]);
        cmd.args(args);
        run(cmd).with_context(|| format!("demo {name}"))?;
    }
    Ok(())
}

fn bench(rest: &[String]) -> Result<()> {
    let (name, args) = name_and_args(rest);
    let Some(name) = name else {
        bail!("bench needs a name: overhead, auto, scrape, logs, physics, jobs, process");
    };
    let mut cmd = cargo();
    if name == "process" {
        // The worker-process pool: its own binary, which is also its workers'.
        cmd.args([
            "run",
            "--release",
            "--quiet",
            "--package",
            "executor-process",
            "--example",
            "bench",
            "--",
        ]);
        cmd.args(args);
        return run(cmd).context("bench process");
    }
    cmd.args(["run", "--release", "--quiet", "--package", "demos", "--bin"]);
    cmd.arg(match name {
        "overhead" => "bench-overhead",
        "auto" => "bench-auto",
        "jobs" => "bench-jobs",
        _ => "demos",
    });
    cmd.arg("--");
    if !matches!(name, "overhead" | "auto" | "jobs") {
        cmd.args([name, "bench"]);
    }
    cmd.args(args);
    run(cmd).with_context(|| format!("bench {name}"))
}

fn ci() -> Result<()> {
    msrv::check(&root())?;
    // executor-nats's tests skip without a server; CI must run them.
    if Command::new("nats-server")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!(
            "nats-server is missing: CI runs the NATS tests (Debian: apt-get install nats-server)"
        );
    }

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    features()?;

    let mut test = cargo();
    test.args(["test", "--workspace"]);
    run(test)?;

    // executor-core's loom models, in a target folder of their own: `--cfg loom` changes
    // every crate's flags and would otherwise invalidate the main build.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let mut loom = cargo();
    loom.args(["test", "-p", "executor-core", "--lib", "--release", "loom"]);
    loom.env("RUSTFLAGS", "--cfg loom");
    loom.env("CARGO_TARGET_DIR", target.join("loom"));
    run(loom)?;

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    run(doc)?;
    eprintln!("ci: all checks passed");
    Ok(())
}

/// The supervisor builds, lint-clean, with no backend and with each backend alone, so a
/// user who turns default features off gets a crate that compiles.
fn features() -> Result<()> {
    for features in ["", "threads", "rayon", "tokio"] {
        let mut clippy = cargo();
        clippy.args(["clippy", "--package", "supervisor", "--no-default-features"]);
        if !features.is_empty() {
            clippy.args(["--features", features]);
        }
        clippy.args(["--", "-D", "warnings"]);
        run(clippy)?;
    }
    Ok(())
}
