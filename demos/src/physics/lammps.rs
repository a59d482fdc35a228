//! `demos physics bench --vs-lammps`: our step loop against LAMMPS on the same two systems
//! (2D and 3D Lennard-Jones), 1 thread vs 1 MPI rank and 2 threads vs 2 ranks, runs
//! interleaved, medians compared.

use super::exec::{ExecutorRunner, bench_executor};
use super::sim::{Decomposition, Rebuild, Setup};
use super::{Config, simulate};
use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use std::path::Path;
use std::process::Command;

/// One benchmark system, described once for both programs.
struct System {
    name: &'static str,
    dim: usize,
    particles: usize,
    density: f64,
    temperature: f64,
    steps: usize,
    /// The LAMMPS input for the same system.
    input: &'static str,
}

/// 2D: 20 000 atoms at density 0.8 (a 100 x 100 `sq2` lattice), T 1.0, 500 steps.
const LJ2D: &str = "units lj
dimension 2
atom_style atomic
lattice sq2 0.8
region box block 0 100 0 100 -0.5 0.5
create_box 1 box
create_atoms 1 box
mass 1 1.0
velocity all create 1.0 87287 loop geom
pair_style lj/cut 2.5
pair_coeff 1 1 1.0 1.0 2.5
neighbor 0.3 bin
neigh_modify delay 0 every 20 check no
fix 1 all nve
fix 2 all enforce2d
thermo 100
run 500
";

/// 3D: 32 000 atoms on a 20 x 20 x 20 fcc lattice at density 0.8442, T 1.44, 100 steps (the
/// classic LAMMPS Lennard-Jones benchmark).
const LJ3D: &str = "units lj
atom_style atomic
lattice fcc 0.8442
region box block 0 20 0 20 0 20
create_box 1 box
create_atoms 1 box
mass 1 1.0
velocity all create 1.44 87287 loop geom
pair_style lj/cut 2.5
pair_coeff 1 1 1.0 1.0 2.5
neighbor 0.3 bin
neigh_modify delay 0 every 20 check no
fix 1 all nve
run 100
";

const SYSTEMS: [System; 2] = [
    System {
        name: "2D lj",
        dim: 2,
        particles: 20_000,
        density: 0.8,
        temperature: 1.0,
        steps: 500,
        input: LJ2D,
    },
    System {
        name: "3D lj",
        dim: 3,
        particles: 32_000,
        density: 0.8442,
        temperature: 1.44,
        steps: 100,
        input: LJ3D,
    },
];

const INSTALL_HINT: &str = "LAMMPS is not installed, so only our side runs. To compare, install \
     LAMMPS and Open MPI, e.g. on Debian/Ubuntu: `apt-get update && apt-get install -y lammps \
     openmpi-bin` (this puts `lmp` and `mpirun` on PATH), then run `cargo xtask bench physics \
     --vs-lammps` again";

/// What one LAMMPS run printed.
#[derive(Debug, Clone, Serialize)]
struct LammpsRun {
    loop_seconds: f64,
    energy_drift: f64,
    neighbour_builds: Option<u64>,
}

/// Runs `lmp` on `input` with `ranks` MPI ranks (1 = no mpirun) in a temporary directory.
fn run_lammps(input: &str, ranks: usize) -> Result<LammpsRun> {
    // LAMMPS may write files next to its input; give it a directory of its own.
    let dir = std::env::temp_dir().join(format!("switchyard-lammps-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating {} for LAMMPS", dir.display()))?;
    let file = dir.join("in.lj");
    std::fs::write(&file, input).context("writing the LAMMPS input")?;
    let mut cmd = if ranks == 1 {
        Command::new("lmp")
    } else {
        let mut c = Command::new("mpirun");
        c.args(["--allow-run-as-root", "-np", &ranks.to_string(), "lmp"]);
        c
    };
    cmd.arg("-in")
        .arg(&file)
        .args(["-log", "none"])
        .current_dir(&dir)
        .env("OMP_NUM_THREADS", "1");
    let out = cmd
        .output()
        .with_context(|| format!("starting LAMMPS ({cmd:?})"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "LAMMPS failed ({}): {}{}",
        out.status,
        stdout.lines().rev().take(5).collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_lammps(&stdout)
}

/// Reads the loop time, the first and last `TotEng` of the thermo table and the number of
/// neighbour-list builds from LAMMPS's screen output.
fn parse_lammps(out: &str) -> Result<LammpsRun> {
    let mut loop_seconds = None;
    let mut energies = Vec::new();
    let mut col = None;
    let mut builds = None;
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"Step") {
            col = words.iter().position(|w| *w == "TotEng");
            continue;
        }
        if line.starts_with("Loop time of ") {
            loop_seconds = words.get(3).and_then(|w| w.parse::<f64>().ok());
            col = None;
            continue;
        }
        if line.starts_with("Neighbor list builds") {
            builds = words.last().and_then(|w| w.parse().ok());
        }
        if let Some(c) = col
            && let Some(e) = words.get(c).and_then(|w| w.parse::<f64>().ok())
            && words[0].parse::<u64>().is_ok()
        {
            energies.push(e);
        }
    }
    let Some(loop_seconds) = loop_seconds else {
        bail!("no \"Loop time\" line in the LAMMPS output");
    };
    let (Some(e0), Some(e1)) = (energies.first(), energies.last()) else {
        bail!("no TotEng column in the LAMMPS thermo output");
    };
    Ok(LammpsRun {
        loop_seconds,
        energy_drift: (e1 - e0) / e0.abs(),
        neighbour_builds: builds,
    })
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(program).is_file()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One line of the comparison: a system at one worker count.
#[derive(Debug, Serialize)]
struct Line {
    system: &'static str,
    atoms: usize,
    steps: usize,
    workers: usize,
    /// Median of our step-loop times, seconds.
    ours_seconds: f64,
    /// Median of LAMMPS's "Loop time", seconds (absent without LAMMPS).
    lammps_seconds: Option<f64>,
    ours_atom_steps_per_s: f64,
    lammps_atom_steps_per_s: Option<f64>,
    /// LAMMPS time / our time: above 1, we are faster.
    speed_ratio: Option<f64>,
    /// `(E(end) - E(0)) / |E(0)|`, median over the runs.
    ours_energy_drift: f64,
    lammps_energy_drift: Option<f64>,
    ours_list_builds: usize,
    lammps_list_builds: Option<u64>,
    ours_times: Vec<f64>,
    lammps_times: Vec<f64>,
}

/// Runs the comparison; `reps` runs of each program per line, interleaved.
pub(super) fn run(
    reps: usize,
    rebuild_every: usize,
    border_once: Option<bool>,
    json: bool,
) -> Result<()> {
    ensure!(reps >= 1, "--reps must be at least 1 (got 0)");
    let have_lmp = on_path("lmp");
    let have_mpirun = on_path("mpirun");
    if !have_lmp {
        eprintln!("{INSTALL_HINT}");
    } else if !have_mpirun {
        eprintln!(
            "mpirun is not on PATH, so LAMMPS runs on 1 rank only; install Open MPI (e.g. \
             `apt-get install -y openmpi-bin`) for the 2-rank figures"
        );
    }
    let rebuild = match rebuild_every {
        0 => Rebuild::OnDisplacement,
        n => Rebuild::Every(n),
    };
    let mut lines = Vec::new();
    for sys in &SYSTEMS {
        for workers in [1, 2] {
            let exec = bench_executor(workers)?;
            let runner = ExecutorRunner::new(exec);
            let cfg = Config {
                setup: Setup {
                    dim: sys.dim,
                    particles: sys.particles,
                    density: sys.density,
                    temperature: sys.temperature,
                    seed: 87287,
                    clustered: false,
                },
                steps: sys.steps,
                dt: 0.005,
                dec: Decomposition {
                    regions: workers,
                    balance: true,
                    rebalance_every: 10,
                    border_once: border_once.unwrap_or(true),
                },
                skin: super::sim::DEFAULT_SKIN,
                rebuild,
            };
            let lammps_here = have_lmp && (workers == 1 || have_mpirun);
            let (mut ours, mut drift, mut builds) = (Vec::new(), Vec::new(), 0);
            let (mut theirs, mut their_drift, mut their_builds) = (Vec::new(), Vec::new(), None);
            for rep in 0..reps {
                if lammps_here {
                    let r = run_lammps(sys.input, workers).with_context(|| {
                        format!("LAMMPS on {} with {workers} rank(s)", sys.name)
                    })?;
                    if !json {
                        eprintln!(
                            "  run {}/{reps}  {}  LAMMPS {workers} rank(s):  loop {:.3} s",
                            rep + 1,
                            sys.name,
                            r.loop_seconds
                        );
                    }
                    theirs.push(r.loop_seconds);
                    their_drift.push(r.energy_drift);
                    their_builds = r.neighbour_builds;
                }
                let (report, _, _) = simulate(&cfg, &runner, "ours", false)?;
                if !json {
                    eprintln!(
                        "  run {}/{reps}  {}  ours {workers} thread(s): loop {:.3} s",
                        rep + 1,
                        sys.name,
                        report.seconds
                    );
                }
                ours.push(report.seconds);
                drift.push(report.energy_drift);
                builds = report.rebuilds;
            }
            let work = (sys.particles * sys.steps) as f64;
            let ours_s = median(ours.clone());
            let lammps_s = lammps_here.then(|| median(theirs.clone()));
            lines.push(Line {
                system: sys.name,
                atoms: sys.particles,
                steps: sys.steps,
                workers,
                ours_seconds: ours_s,
                lammps_seconds: lammps_s,
                ours_atom_steps_per_s: work / ours_s,
                lammps_atom_steps_per_s: lammps_s.map(|s| work / s),
                speed_ratio: lammps_s.map(|s| s / ours_s),
                ours_energy_drift: median(drift),
                lammps_energy_drift: lammps_here.then(|| median(their_drift)),
                ours_list_builds: builds,
                lammps_list_builds: their_builds,
                ours_times: ours,
                lammps_times: theirs,
            });
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(());
    }
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_string(), f);
    println!(
        "\nphysics vs LAMMPS (medians of {reps} interleaved runs; LAMMPS \"Loop time\" vs our step loop)"
    );
    println!(
        "{:<7} {:>7} {:>9} {:>9} {:>12} {:>12} {:>9} {:>11} {:>11} {:>9}",
        "system",
        "workers",
        "LAMMPS s",
        "ours s",
        "LAMMPS a-s/s",
        "ours a-s/s",
        "ours/LMP",
        "drift LMP",
        "drift ours",
        "builds"
    );
    for l in &lines {
        println!(
            "{:<7} {:>7} {:>9} {:>9.3} {:>12} {:>12.3e} {:>9} {:>11} {:>11.2e} {:>9}",
            l.system,
            l.workers,
            opt(l.lammps_seconds, &|s| format!("{s:.3}")),
            l.ours_seconds,
            opt(l.lammps_atom_steps_per_s, &|s| format!("{s:.3e}")),
            l.ours_atom_steps_per_s,
            opt(l.speed_ratio, &|s| format!("{s:.2}x")),
            opt(l.lammps_energy_drift, &|s| format!("{s:.2e}")),
            l.ours_energy_drift,
            format!(
                "{}/{}",
                l.lammps_list_builds.map_or("-".into(), |b| b.to_string()),
                l.ours_list_builds
            ),
        );
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    for l in &lines {
        if !l.lammps_times.is_empty() {
            println!(
                "{} at {} worker(s), best runs (least disturbed by a busy machine): LAMMPS \
                 {:.3} s, ours {:.3} s, ours/LMP {:.2}x",
                l.system,
                l.workers,
                best(&l.lammps_times),
                best(&l.ours_times),
                best(&l.lammps_times) / best(&l.ours_times)
            );
        }
    }
    for sys in &SYSTEMS {
        let at = |w: usize| {
            lines
                .iter()
                .find(|l| l.system == sys.name && l.workers == w)
        };
        if let (Some(a), Some(b)) = (at(1), at(2)) {
            let lammps = if a.lammps_times.is_empty() || b.lammps_times.is_empty() {
                "-".to_string()
            } else {
                format!(
                    "{:.2} (best runs {:.2})",
                    a.lammps_seconds.unwrap_or(f64::NAN) / b.lammps_seconds.unwrap_or(f64::NAN),
                    best(&a.lammps_times) / best(&b.lammps_times)
                )
            };
            println!(
                "{}: 2-worker speedup ours {:.2} (best runs {:.2}), LAMMPS {lammps}",
                sys.name,
                a.ours_seconds / b.ours_seconds,
                best(&a.ours_times) / best(&b.ours_times),
            );
        }
    }
    println!(
        "targets: ours/LMP >= 1.0 (aim 1.3) on both systems at 1 and 2 workers; our 2-thread \
         speedup >= 1.8; our 2D energy drift no worse than LAMMPS's. 'builds' = neighbour-list \
         builds, LAMMPS/ours (the LAMMPS inputs rebuild every 20 steps unchecked, and so do we \
         unless --rebuild-every 0: then when a particle has moved half the skin)."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_lammps;

    #[test]
    fn reads_loop_time_drift_and_builds() {
        let out = "Step Temp E_pair E_mol TotEng Press \n\
                   0 1.44 -6.7733681 0 -4.6134356 -5.0197073 \n\
                   100 0.7574531 -5.7585055 0 -4.6223613 0.20726105 \n\
                   Loop time of 1.75 on 1 procs for 100 steps with 32000 atoms\n\
                   \n\
                   Neighbor list builds = 5\n";
        let r = parse_lammps(out).unwrap();
        assert_eq!(r.loop_seconds, 1.75);
        assert_eq!(r.neighbour_builds, Some(5));
        let want = (-4.6223613 - -4.6134356) / 4.6134356;
        assert!((r.energy_drift - want).abs() < 1e-15);
        assert!(parse_lammps("nothing").is_err());
    }
}
