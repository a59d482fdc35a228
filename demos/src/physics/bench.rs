//! `demos physics bench`: particle-steps/s at 1 and 2 threads, uniform and clustered (with
//! and without balancing), our executor against a hand-written rayon version of the step.

use super::exec::{ExecutorRunner, PoolRunner, bench_executor};
use super::sim::{DEFAULT_SKIN, Decomposition, Rebuild, RegionRunner, Setup};
use super::{Config, Report, simulate};
use anyhow::{Result, ensure};
use serde::Serialize;
use std::collections::BTreeMap;

/// Options of the benchmark.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct BenchArgs {
    /// Number of particles.
    #[arg(long, default_value_t = 20_000)]
    particles: usize,
    /// Steps per run.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Runs per figure (the median is reported) [default: 3, or 5 with --vs-lammps].
    #[arg(long)]
    reps: Option<usize>,
    /// Regions (tasks per step); 2 = one per thread at 2 threads.
    #[arg(long, default_value_t = 2)]
    regions: usize,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Compare with LAMMPS (`lmp` on PATH) on its 2D and 3D Lennard-Jones benchmarks instead:
    /// 1 thread vs 1 rank and 2 threads vs 2 ranks, runs interleaved.
    #[arg(long)]
    vs_lammps: bool,
    /// With --vs-lammps: rebuild our lists every this many steps, unchecked, as the LAMMPS
    /// inputs do (`neigh_modify every 20 check no`); 0 = when a particle has moved half the
    /// skin (our default elsewhere, safer and slower).
    #[arg(long, default_value_t = 20)]
    rebuild_every: usize,
    /// With --vs-lammps: compute each border pair once (true: two phases a step) or on both
    /// sides (false) [default: true].
    #[arg(long)]
    border_once: Option<bool>,
}

struct Scenario {
    name: &'static str,
    clustered: bool,
    density: f64,
    balance: bool,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "uniform",
        clustered: false,
        density: 0.7,
        balance: true,
    },
    Scenario {
        name: "clustered, balanced",
        clustered: true,
        density: 0.2,
        balance: true,
    },
    Scenario {
        name: "clustered, not balanced",
        clustered: true,
        density: 0.2,
        balance: false,
    },
];

/// One line of results: a scenario on one runner.
#[derive(Debug, Serialize)]
struct Line {
    scenario: &'static str,
    runner: &'static str,
    /// Median particle-steps/s at 1 thread.
    rate_1: f64,
    /// Median particle-steps/s at 2 threads.
    rate_2: f64,
    speedup: f64,
    /// Speedup from the best run at each thread count (less hurt by a busy machine).
    speedup_best: f64,
    /// Mean load imbalance (slowest/mean region) of the decomposition used, at 2 threads.
    imbalance: f64,
    /// The same with equal-width regions.
    imbalance_equal_width: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    particles: usize,
    steps: usize,
    regions: usize,
    reps: usize,
    lines: Vec<Line>,
    /// Our time / plain rayon's time at 2 threads, per scenario.
    ours_over_rayon_2: BTreeMap<&'static str, f64>,
    /// Our time / plain rayon's time at 1 thread, per scenario.
    ours_over_rayon_1: BTreeMap<&'static str, f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(super) fn run(args: &BenchArgs) -> Result<()> {
    if args.vs_lammps {
        return super::lammps::run(
            args.reps.unwrap_or(5),
            args.rebuild_every,
            args.border_once,
            args.json,
        );
    }
    let reps = args.reps.unwrap_or(3);
    ensure!(reps >= 1, "--reps must be at least 1 (got 0)");
    let runners: Vec<(&'static str, usize, Box<dyn RegionRunner>)> = vec![
        ("ours", 1, Box::new(ExecutorRunner::new(bench_executor(1)?))),
        ("ours", 2, Box::new(ExecutorRunner::new(bench_executor(2)?))),
        ("rayon", 1, Box::new(PoolRunner::new(1)?)),
        ("rayon", 2, Box::new(PoolRunner::new(2)?)),
    ];
    if !args.json {
        eprintln!(
            "physics bench: {} particles, {} steps, {} regions, median of {} runs each",
            args.particles, args.steps, args.regions, reps
        );
    }
    // rates[(scenario, runner, threads)] = particle-steps/s of each run.
    let mut rates: BTreeMap<(usize, &str, usize), Vec<f64>> = BTreeMap::new();
    let mut last: BTreeMap<(usize, &str, usize), Report> = BTreeMap::new();
    for rep in 0..reps {
        for (si, sc) in SCENARIOS.iter().enumerate() {
            let cfg = Config {
                setup: Setup {
                    dim: 2,
                    particles: args.particles,
                    density: sc.density,
                    temperature: 1.0,
                    seed: 1,
                    clustered: sc.clustered,
                },
                steps: args.steps,
                dt: 0.005,
                dec: Decomposition {
                    regions: args.regions,
                    balance: sc.balance,
                    rebalance_every: 10,
                    border_once: false,
                },
                skin: DEFAULT_SKIN,
                rebuild: Rebuild::OnDisplacement,
            };
            let mut hash = None;
            for (rn, threads, runner) in &runners {
                let (report, _, _) = simulate(&cfg, runner.as_ref(), rn, false)?;
                // Every runner and thread count must reach the same state.
                let h = hash.get_or_insert_with(|| report.state_hash.clone());
                ensure!(
                    *h == report.state_hash,
                    "{}: {rn} at {threads} threads reached another state ({} vs {h})",
                    sc.name,
                    report.state_hash
                );
                if !args.json {
                    eprintln!(
                        "  run {}/{}  {:<24} {:<5} {} thread(s): {:.3e} particle-steps/s",
                        rep + 1,
                        reps,
                        sc.name,
                        rn,
                        threads,
                        report.particle_steps_per_s
                    );
                }
                rates
                    .entry((si, rn, *threads))
                    .or_default()
                    .push(report.particle_steps_per_s);
                last.insert((si, rn, *threads), report);
            }
        }
    }
    let med = |si: usize, rn: &str, t: usize| median(rates[&(si, rn, t)].clone());
    let best =
        |si: usize, rn: &str, t: usize| rates[&(si, rn, t)].iter().copied().fold(0.0, f64::max);
    let mut lines = Vec::new();
    let mut ours_over_rayon_1 = BTreeMap::new();
    let mut ours_over_rayon_2 = BTreeMap::new();
    for (si, sc) in SCENARIOS.iter().enumerate() {
        for rn in ["ours", "rayon"] {
            let (r1, r2) = (med(si, rn, 1), med(si, rn, 2));
            let rep = &last[&(si, rn, 2)];
            lines.push(Line {
                scenario: sc.name,
                runner: rn,
                rate_1: r1,
                rate_2: r2,
                speedup: r2 / r1,
                speedup_best: best(si, rn, 2) / best(si, rn, 1),
                imbalance: rep.imbalance,
                imbalance_equal_width: rep.imbalance_before,
            });
        }
        // Time is the inverse of the rate.
        ours_over_rayon_1.insert(sc.name, med(si, "rayon", 1) / med(si, "ours", 1));
        ours_over_rayon_2.insert(sc.name, med(si, "rayon", 2) / med(si, "ours", 2));
    }
    let summary = Summary {
        particles: args.particles,
        steps: args.steps,
        regions: args.regions,
        reps,
        lines,
        ours_over_rayon_1,
        ours_over_rayon_2,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "\nphysics bench ({} particles x {} steps, {} regions; medians of {})",
        summary.particles, summary.steps, summary.regions, summary.reps
    );
    println!(
        "{:<24} {:<6} {:>14} {:>14} {:>8} {:>8} {:>10} {:>12}",
        "scenario",
        "runner",
        "1 thread /s",
        "2 threads /s",
        "speedup",
        "(best)",
        "imbalance",
        "equal-width"
    );
    for l in &summary.lines {
        println!(
            "{:<24} {:<6} {:>14.3e} {:>14.3e} {:>8.2} {:>8.2} {:>10.3} {:>12.3}",
            l.scenario,
            l.runner,
            l.rate_1,
            l.rate_2,
            l.speedup,
            l.speedup_best,
            l.imbalance,
            l.imbalance_equal_width
        );
    }
    println!("\nours / plain rayon, time per step (1.00 = same; target <= 1.05):");
    for sc in &SCENARIOS {
        println!(
            "  {:<24} 1 thread {:.3}x   2 threads {:.3}x",
            sc.name, summary.ours_over_rayon_1[sc.name], summary.ours_over_rayon_2[sc.name]
        );
    }
    println!(
        "targets: speedup >= 1.8 uniform, >= 1.7 clustered with balancing. Rates are medians; \
         '(best)' compares the best runs, which a busy machine disturbs least."
    );
    Ok(())
}
