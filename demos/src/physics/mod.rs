//! Demo `physics`: a 2D or 3D Lennard-Jones system split into load-balanced regions.
//!
#![doc = include_str!("README.md")]

mod bench;
pub mod exec;
pub mod kernel;
mod lammps;
pub mod plot;
pub mod sim;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use executor_core::ShutdownMode;
use serde::Serialize;
use sim::{Decomposition, Geometry, Rebuild, RegionRunner, RunResult, Setup};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Bound on `|E(end) - E(0)| / |E(0)|` for the default time step over a default-length run;
/// the tests check it.
pub const ENERGY_DRIFT_BOUND: f64 = 1e-3;

/// Default mean density in 2D and 3D (LAMMPS's `bench/in.lj`), and the one `--clustered` uses
/// when none is given (its cluster is four times denser than the mean).
const DEFAULT_DENSITY: f64 = 0.7;
const DEFAULT_DENSITY_3D: f64 = 0.8442;
const DEFAULT_CLUSTERED_DENSITY: f64 = 0.2;

/// What the demo logs when `RUST_LOG` is not set: warnings, and from the supervisor
/// only errors.
pub const LOG_FILTER: &str = "warn,supervisor=error";

/// Command line of `demos physics`.
#[derive(Debug, Parser)]
#[command(
    name = "demos physics",
    bin_name = "demos physics",
    about = "A 2D or 3D Lennard-Jones system split into load-balanced regions",
    allow_negative_numbers = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Particle-steps/s at 1 and 2 threads, uniform and clustered, ours vs plain rayon.
    Bench(bench::BenchArgs),
}

/// Options of one simulation run, as typed.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Number of particles.
    #[arg(long, default_value_t = 10_000)]
    pub particles: usize,
    /// Dimensions: 2 (square lattice start) or 3 (fcc lattice start, as LAMMPS's bench/in.lj).
    #[arg(long, default_value_t = 2)]
    pub dim: usize,
    /// Number of velocity-Verlet steps.
    #[arg(long, default_value_t = 400)]
    pub steps: usize,
    /// Number of regions (tasks per step).
    #[arg(long, default_value_t = 4)]
    pub regions: usize,
    /// Time step (Lennard-Jones time units).
    #[arg(long, default_value_t = 0.005)]
    pub dt: f64,
    /// Mean number density [default: 0.7 in 2D, 0.8442 in 3D, 0.2 with --clustered].
    #[arg(long)]
    pub density: Option<f64>,
    /// Initial temperature.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Seed for the initial velocities.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Put 80% of the particles into 20% of the box.
    #[arg(long)]
    pub clustered: bool,
    /// Keep equal-width regions (no load balancing).
    #[arg(long)]
    pub no_balance: bool,
    /// Move the region borders by measured load after the first step, then every this many steps.
    #[arg(long, default_value_t = 10)]
    pub rebalance_every: usize,
    /// Neighbour-list skin: lists hold pairs within the cutoff plus this.
    #[arg(long, default_value_t = sim::DEFAULT_SKIN)]
    pub skin: f64,
    /// Rebuild the neighbour lists every this many steps, unchecked; 0 = when any particle
    /// has moved more than half the skin.
    #[arg(long, default_value_t = 0)]
    pub rebuild_every: usize,
    /// Compute each pair across a region border once, by the region on its left, in two
    /// phases per step (forces, then the border forces exchanged and the integration),
    /// instead of on both sides in one phase.
    #[arg(long)]
    pub border_once: bool,
    /// Policy file naming the executor for `physics.region` tasks.
    #[arg(long, default_value_os_t = default_policy())]
    pub policy: PathBuf,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Directory for the pictures [default: .switchyard-cache/physics at the workspace root].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not write the pictures.
    #[arg(long)]
    pub no_png: bool,
}

/// The policy shipped with the demo.
pub fn default_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/physics.toml")
}

fn default_out() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.switchyard-cache/physics")
}

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The initial system.
    pub setup: Setup,
    /// Number of steps.
    pub steps: usize,
    /// Time step.
    pub dt: f64,
    /// Regions and balancing.
    pub dec: Decomposition,
    /// Neighbour-list skin.
    pub skin: f64,
    /// When the neighbour lists are rebuilt.
    pub rebuild: Rebuild,
}

impl RunArgs {
    /// Checks every option and returns the configuration, or a clear error.
    pub fn config(&self) -> Result<Config> {
        ensure!(
            self.particles >= 1,
            "--particles must be at least 1 (got 0)"
        );
        ensure!(
            self.particles <= u32::MAX as usize,
            "--particles must be at most {}",
            u32::MAX
        );
        ensure!(self.steps >= 1, "--steps must be at least 1 (got 0)");
        ensure!(self.regions >= 1, "--regions must be at least 1 (got 0)");
        ensure!(
            self.dim == 2 || self.dim == 3,
            "--dim must be 2 or 3 (got {})",
            self.dim
        );
        ensure!(
            self.skin.is_finite() && self.skin >= 0.0,
            "--skin must be zero or positive (got {})",
            self.skin
        );
        ensure!(
            self.skin <= sim::CUTOFF,
            "--skin {} is larger than the cutoff {}; use at most {} (default {})",
            self.skin,
            sim::CUTOFF,
            sim::CUTOFF,
            sim::DEFAULT_SKIN
        );
        ensure!(
            self.dt.is_finite() && self.dt > 0.0,
            "--dt must be a positive time step (got {})",
            self.dt
        );
        ensure!(
            self.dt <= 0.05,
            "--dt {} is too large for a stable Lennard-Jones run; use at most 0.05 (default 0.005)",
            self.dt
        );
        let density = self.density.unwrap_or(if self.clustered {
            DEFAULT_CLUSTERED_DENSITY
        } else if self.dim == 3 {
            DEFAULT_DENSITY_3D
        } else {
            DEFAULT_DENSITY
        });
        ensure!(
            density.is_finite() && density > 0.0,
            "--density must be a positive number (got {density})"
        );
        ensure!(
            self.temperature.is_finite() && self.temperature >= 0.0,
            "--temperature must be zero or positive (got {})",
            self.temperature
        );
        ensure!(
            self.rebalance_every >= 1,
            "--rebalance-every must be at least 1 (got 0)"
        );
        Ok(Config {
            setup: Setup {
                dim: self.dim,
                particles: self.particles,
                density,
                temperature: self.temperature,
                seed: self.seed,
                clustered: self.clustered,
            },
            steps: self.steps,
            dt: self.dt,
            dec: Decomposition {
                regions: self.regions,
                balance: !self.no_balance,
                rebalance_every: self.rebalance_every,
                border_once: self.border_once,
            },
            skin: self.skin,
            rebuild: match self.rebuild_every {
                0 => Rebuild::OnDisplacement,
                n => Rebuild::Every(n),
            },
        })
    }
}

/// The figures a run reports (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Dimensions.
    pub dim: usize,
    /// Number of particles.
    pub particles: usize,
    /// Number of steps.
    pub steps: usize,
    /// Number of regions.
    pub regions: usize,
    /// Time step.
    pub dt: f64,
    /// Mean density.
    pub density: f64,
    /// Initial temperature.
    pub temperature: f64,
    /// Seed.
    pub seed: u64,
    /// Whether the start was clustered.
    pub clustered: bool,
    /// Whether the borders moved by load.
    pub balance: bool,
    /// Neighbour-list skin.
    pub skin: f64,
    /// Neighbour-list builds over the run (the first included).
    pub rebuilds: usize,
    /// Mean pairs in the neighbour lists per particle (pairs across a region border count
    /// on both sides, unless `--border-once`).
    pub neighbours_per_particle: f64,
    /// Total energy at time 0.
    pub energy_initial: f64,
    /// Total energy at the end.
    pub energy_final: f64,
    /// `(E(end) - E(0)) / |E(0)|`.
    pub energy_drift: f64,
    /// Largest `|E(t) - E(0)| / |E(0)|` over the run, sampled every
    /// [`ENERGY_EVERY`](sim::ENERGY_EVERY) steps.
    pub energy_drift_max: f64,
    /// Largest `|P(t) - P(0)|` over the run, per particle (mass 1, so a velocity).
    pub momentum_drift: f64,
    /// Particles x steps / wall time of the step loop.
    pub particle_steps_per_s: f64,
    /// Wall time of the step loop (steps 1 to `steps`, like LAMMPS's "Loop time"), seconds.
    pub seconds: f64,
    /// Wall time of the set-up round before it (first list build, forces at time 0).
    pub setup_seconds: f64,
    /// Load imbalance (slowest / mean region load) of the decomposition used, after the
    /// first rebalance when balancing (the same as `imbalance_after`).
    pub imbalance: f64,
    /// Load imbalance equal-width regions would have had on the same run (before balancing).
    pub imbalance_before: f64,
    /// Load imbalance of the borders used, after the first rebalance when balancing.
    pub imbalance_after: f64,
    /// Same as `imbalance_after`, but from measured task wall times (noisy).
    pub imbalance_time: f64,
    /// Hash of the final positions and velocities (bit-exact, in particle order).
    pub state_hash: String,
    /// The executor the region tasks ran on.
    pub executor: String,
    /// Region tasks the run submitted: `regions x (steps + 1)`, twice that with
    /// `--border-once`, plus `regions` before each list build after the first when lists
    /// are rebuilt on displacement.
    pub tasks: u64,
    /// Tasks the executor reports completed (filled in by the demo from its stats).
    pub tasks_completed: Option<u64>,
    /// The picture of the final state, if written.
    pub state_png: Option<PathBuf>,
    /// The load chart, if written.
    pub work_png: Option<PathBuf>,
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 1.0 } else { s / n as f64 }
}

/// Runs the configured simulation on `runner`; prints progress on stderr when `progress`.
pub fn simulate(
    cfg: &Config,
    runner: &dyn RegionRunner,
    executor: &str,
    progress: bool,
) -> Result<(Report, RunResult, Geometry)> {
    let geom = Geometry::new(
        cfg.setup.dim,
        cfg.setup.particles,
        cfg.setup.density,
        cfg.skin,
    )?;
    let init = sim::initial_state(&cfg.setup, &geom)?;
    let every = (cfg.steps / 10).max(1);
    let steps = cfg.steps;
    let res = sim::run(
        Arc::new(geom.clone()),
        &init,
        cfg.steps,
        cfg.dt,
        &cfg.dec,
        cfg.rebuild,
        runner,
        |round| {
            if progress && round > 0 && (round % every == 0 || round == steps) {
                eprintln!("  step {round}/{steps}");
            }
        },
    )?;
    let n = cfg.setup.particles as f64;
    let energy = |r: &sim::RoundRecord| r.ke + r.pe;
    let first = &res.rounds[0];
    let last = res.rounds.last().context("no rounds ran")?;
    let (e0, e1) = (energy(first), energy(last));
    let scale = e0.abs().max(f64::MIN_POSITIVE);
    let after: Vec<&sim::RoundRecord> = if res.rounds.iter().any(|r| r.balanced) {
        res.rounds.iter().filter(|r| r.balanced).collect()
    } else {
        res.rounds.iter().collect()
    };
    let imbalance_after = mean(after.iter().map(|r| sim::imbalance(&r.work)));
    let report = Report {
        dim: cfg.setup.dim,
        particles: cfg.setup.particles,
        steps: cfg.steps,
        regions: cfg.dec.regions,
        dt: cfg.dt,
        density: cfg.setup.density,
        temperature: cfg.setup.temperature,
        seed: cfg.setup.seed,
        clustered: cfg.setup.clustered,
        balance: cfg.dec.balance,
        skin: cfg.skin,
        rebuilds: res.rebuilds,
        neighbours_per_particle: mean(res.rounds.iter().map(|r| r.pairs as f64)) / n,
        energy_initial: e0,
        energy_final: e1,
        energy_drift: (e1 - e0) / scale,
        energy_drift_max: res
            .rounds
            .iter()
            .filter(|r| r.energy)
            .map(|r| (energy(r) - e0).abs() / scale)
            .fold(0.0, f64::max),
        momentum_drift: res
            .rounds
            .iter()
            .map(|r| {
                (0..3)
                    .map(|d| (r.p[d] - first.p[d]).powi(2))
                    .sum::<f64>()
                    .sqrt()
                    / n
            })
            .fold(0.0, f64::max),
        particle_steps_per_s: n * cfg.steps as f64 / res.seconds,
        seconds: res.seconds,
        setup_seconds: res.setup_seconds,
        imbalance: imbalance_after,
        imbalance_before: mean(res.rounds.iter().map(|r| sim::imbalance(&r.work_equal))),
        imbalance_after,
        imbalance_time: mean(after.iter().map(|r| sim::imbalance(&r.nanos))),
        state_hash: res.final_state.state_hash(),
        executor: executor.to_string(),
        tasks: res.tasks,
        tasks_completed: None,
        state_png: None,
        work_png: None,
    };
    Ok((report, res, geom))
}

/// Parses `args` (`args[0]` is the demo name) and runs the demo; a usage error is
/// returned as the error.
pub fn main(args: Vec<String>) -> Result<()> {
    Cli::try_parse_from(args)?.run()
}

impl Cli {
    /// Runs the demo (or its benchmark).
    pub fn run(self) -> Result<()> {
        match self.cmd {
            Some(Cmd::Bench(b)) => bench::run(&b),
            None => run_demo(&self.run),
        }
    }
}

fn run_demo(args: &RunArgs) -> Result<()> {
    let cfg = args.config()?;
    let (executor, routed) = exec::cpu_executor(&args.policy)?;
    let runner = exec::ExecutorRunner::new(executor);
    if !args.json {
        eprintln!(
            "physics: {}D, {} particles, {} steps of dt {}, density {}, T {}, seed {}{}, skin {} \
             (lists rebuilt {}), {} regions ({}), tasks on executor '{routed}' (policy {})",
            cfg.setup.dim,
            cfg.setup.particles,
            cfg.steps,
            cfg.dt,
            cfg.setup.density,
            cfg.setup.temperature,
            cfg.setup.seed,
            if cfg.setup.clustered {
                ", clustered"
            } else {
                ""
            },
            cfg.skin,
            match cfg.rebuild {
                Rebuild::OnDisplacement => "when a particle moved half the skin".to_string(),
                Rebuild::Every(n) => format!("every {n} steps"),
            },
            cfg.dec.regions,
            if cfg.dec.balance {
                format!("borders balanced every {} steps", cfg.dec.rebalance_every)
            } else {
                "equal widths".into()
            },
            args.policy.display()
        );
    }
    let (mut report, res, geom) = simulate(&cfg, &runner, &routed, !args.json)?;
    if !args.no_png {
        let dir = args.out.clone().unwrap_or_else(default_out);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the output directory {}", dir.display()))?;
        let state = dir.join("physics-state.png");
        let work = dir.join("physics-work.png");
        plot::state_png(
            &state,
            &res.final_state,
            &res.final_region,
            &res.final_borders,
            geom.l,
            geom.cs,
            &format!(
                "{} particles after {} steps, coloured by region ({} regions)",
                cfg.setup.particles, cfg.steps, cfg.dec.regions
            ),
        )?;
        plot::work_png(
            &work,
            &res.rounds,
            cfg.dec.balance && cfg.dec.regions > 1,
            (report.imbalance_before, report.imbalance_after),
        )?;
        report.state_png = Some(clean(&state));
        report.work_png = Some(clean(&work));
    }
    let exec = runner.executor();
    let report_shutdown = exec.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
    let stats = report_shutdown.stats;
    report.tasks_completed = Some(stats.completed);
    if !args.json {
        eprintln!(
            "executor '{}' routed {} region tasks to '{routed}': {} completed, {} failed, {} \
             panicked",
            exec.name(),
            stats.submitted,
            stats.completed,
            stats.failed,
            stats.panicked
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn clean(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn print_report(r: &Report) {
    println!("physics report");
    println!(
        "  energy      E(0) = {:.6}, E(end) = {:.6}, drift {:+.2e} (max {:.2e}, bound {:.0e})",
        r.energy_initial, r.energy_final, r.energy_drift, r.energy_drift_max, ENERGY_DRIFT_BOUND
    );
    println!(
        "  momentum    max |P(t) - P(0)| / N = {:.2e}",
        r.momentum_drift
    );
    println!(
        "  throughput  {:.3e} particle-steps/s ({:.2} s for the step loop, {:.3} s set-up)",
        r.particle_steps_per_s, r.seconds, r.setup_seconds
    );
    println!(
        "  imbalance   slowest/mean region load: equal widths {:.3}, {} {:.3} (task time {:.3})",
        r.imbalance_before,
        if r.balance && r.regions > 1 {
            "balanced"
        } else {
            "used"
        },
        r.imbalance_after,
        r.imbalance_time
    );
    println!(
        "  neighbours  {:.1} list pairs per particle, skin {}, {} list builds",
        r.neighbours_per_particle, r.skin, r.rebuilds
    );
    println!("  state_hash  {}", r.state_hash);
    if let (Some(s), Some(w)) = (&r.state_png, &r.work_png) {
        println!("  pictures    {}", s.display());
        println!("              {}", w.display());
    }
}
