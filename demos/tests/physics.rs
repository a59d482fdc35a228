//! Tests of the `physics` demo: determinism across decompositions, conservation laws, load
//! balancing, region crossings, option errors, and the JSON report with its pictures.

use demos::physics::exec::ExecutorRunner;
use demos::physics::sim::{DEFAULT_SKIN, Decomposition, Rebuild, Setup, equal_borders};
use demos::physics::{Config, ENERGY_DRIFT_BOUND, Report, simulate};
use executor_core::Executor;
use std::process::Command;
use std::sync::Arc;

/// A CPU executor with exactly `threads` threads, built directly (no policy file).
fn executor(threads: usize) -> Arc<dyn Executor> {
    Arc::new(
        executor_rayon::RayonExecutor::builder(format!("cpu-{threads}"))
            .threads(threads)
            .build()
            .expect("executor starts"),
    )
}

fn config(particles: usize, steps: usize, density: f64, clustered: bool) -> Config {
    Config {
        setup: Setup {
            dim: 2,
            particles,
            density,
            temperature: 1.0,
            seed: 7,
            clustered,
        },
        steps,
        dt: 0.005,
        dec: Decomposition {
            regions: 1,
            balance: false,
            rebalance_every: 3,
            border_once: false,
        },
        skin: DEFAULT_SKIN,
        rebuild: Rebuild::OnDisplacement,
    }
}

fn run(cfg: &Config, exec: &Arc<dyn Executor>) -> Report {
    let runner = ExecutorRunner::new(exec.clone());
    simulate(cfg, &runner, "test", false)
        .expect("run succeeds")
        .0
}

fn hashes_over_decompositions(base: &Config, regions: &[usize]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for threads in [1, 2] {
        let exec = executor(threads);
        for &r in regions {
            for balance in [false, true] {
                // Border pairs once (two phases a step) or on both sides: each region count
                // and each balancing meet both, across the two thread counts.
                let once = balance != (threads == 2);
                let mut cfg = base.clone();
                cfg.dec.regions = r;
                cfg.dec.balance = balance;
                cfg.dec.border_once = once;
                let rep = run(&cfg, &exec);
                out.push((
                    format!("{threads} threads, {r} regions, balance {balance}, once {once}"),
                    rep.state_hash,
                ));
            }
        }
    }
    out
}

#[test]
fn state_hash_is_the_same_for_any_thread_and_region_count() {
    // Uniform: 300 particles at density 0.7 give 7 cell columns (of side >= cutoff + skin).
    let uniform = config(300, 30, 0.7, false);
    let h = hashes_over_decompositions(&uniform, &[1, 2, 3, 7]);
    for (what, hash) in &h {
        assert_eq!(hash, &h[0].1, "uniform: {what} differs from {}", h[0].0);
    }
    // Clustered: borders move every 3 steps when balancing, and the state must not notice.
    let clustered = config(400, 30, 0.2, true);
    let h = hashes_over_decompositions(&clustered, &[1, 2, 5]);
    for (what, hash) in &h {
        assert_eq!(hash, &h[0].1, "clustered: {what} differs from {}", h[0].0);
    }
}

#[test]
fn the_hash_sees_the_state() {
    let exec = executor(2);
    let a = config(300, 10, 0.7, false);
    let mut b = a.clone();
    b.setup.seed += 1;
    let mut c = a.clone();
    c.steps += 1;
    let (ha, hb, hc) = (
        run(&a, &exec).state_hash,
        run(&b, &exec).state_hash,
        run(&c, &exec).state_hash,
    );
    assert_eq!(ha.len(), 16);
    assert_ne!(ha, hb, "another seed must give another state");
    assert_ne!(ha, hc, "one more step must give another state");
}

#[test]
fn momentum_is_conserved_and_energy_drift_stays_bounded() {
    let exec = executor(2);
    let mut cfg = config(400, 400, 0.7, false);
    cfg.dec.regions = 3;
    let rep = run(&cfg, &exec);
    assert!(
        rep.momentum_drift < 1e-14,
        "momentum drift per particle {:e}",
        rep.momentum_drift
    );
    assert!(
        rep.energy_drift.abs() < ENERGY_DRIFT_BOUND,
        "energy drift {:e} is above the stated bound {:e}",
        rep.energy_drift,
        ENERGY_DRIFT_BOUND
    );
    // The particles did move: kinetic and potential energy exchanged.
    assert!(rep.energy_initial.is_finite() && rep.energy_initial < 0.0);

    // A clustered start conserves momentum just the same.
    let mut cfg = config(400, 100, 0.2, true);
    cfg.dec.regions = 2;
    cfg.dec.balance = true;
    let rep = run(&cfg, &exec);
    assert!(rep.momentum_drift < 1e-14, "{:e}", rep.momentum_drift);
}

#[test]
fn balancing_evens_out_a_clustered_box() {
    let exec = executor(2);
    let mut cfg = config(600, 30, 0.2, true);
    cfg.dec.regions = 2;
    cfg.dec.balance = true;
    cfg.dec.rebalance_every = 5;
    let rep = run(&cfg, &exec);
    assert!(
        rep.imbalance_before > 1.3,
        "a clustered box split in equal halves should be imbalanced, got {}",
        rep.imbalance_before
    );
    assert!(
        rep.imbalance_after < 1.1,
        "balanced borders should even out the load, got {}",
        rep.imbalance_after
    );
    assert_eq!(rep.imbalance, rep.imbalance_after);

    cfg.dec.balance = false;
    let rep = run(&cfg, &exec);
    assert!(rep.imbalance > 1.3, "without balancing: {}", rep.imbalance);
}

#[test]
fn particles_move_between_regions_and_none_is_lost() {
    let exec = executor(2);
    let mut cfg = config(300, 200, 0.7, false);
    cfg.setup.temperature = 2.0;
    cfg.dec.regions = 4;
    let runner = ExecutorRunner::new(exec);
    let (_, res, geom) = simulate(&cfg, &runner, "test", false).unwrap();
    let init = demos::physics::sim::initial_state(&cfg.setup, &geom).unwrap();
    let borders = equal_borders(geom.nc, cfg.dec.regions);
    let region_of = |x: f64| {
        let col = ((x / geom.cs) as usize).min(geom.nc - 1);
        borders
            .windows(2)
            .position(|w| w[0] <= col && col < w[1])
            .unwrap()
    };
    let moved = (0..init.len())
        .filter(|&i| region_of(init.x[i]) != res.final_region[i])
        .count();
    assert!(moved > 0, "no particle changed region in 200 steps");
    // Every particle sits in the region owning its column (run() also checks none is lost
    // or doubled).
    for i in 0..init.len() {
        assert_eq!(res.final_region[i], region_of(res.final_state.x[i]));
    }
}

fn demo_err(args: &[&str]) -> String {
    let argv: Vec<String> = std::iter::once("physics")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    match demos::physics::main(argv.clone()) {
        Ok(()) => panic!("{argv:?} should fail"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn bad_options_give_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["--particles", "0"], "--particles must be at least 1"),
        (&["--dt", "-0.1"], "--dt must be a positive time step"),
        (&["--dt", "0"], "--dt must be a positive time step"),
        (&["--dt", "1"], "too large"),
        (&["--steps", "0"], "--steps must be at least 1"),
        (&["--regions", "0"], "--regions must be at least 1"),
        (&["--density", "-1"], "--density must be a positive number"),
        (
            &["--temperature", "-2"],
            "--temperature must be zero or positive",
        ),
        (
            &["--particles", "300", "--density", "3", "--no-png"],
            "too high to place the particles",
        ),
        (
            &[
                "--particles",
                "300",
                "--clustered",
                "--density",
                "0.5",
                "--no-png",
            ],
            "too high to place the particles with --clustered",
        ),
        (
            &["--particles", "300", "--regions", "50", "--no-png"],
            "more than the 7 cell columns",
        ),
        (
            &["--particles", "20", "--no-png"],
            "box is too small for the cutoff",
        ),
        (
            &[
                "--particles",
                "300",
                "--temperature",
                "10000",
                "--dt",
                "0.05",
                "--no-png",
            ],
            "use a smaller --dt",
        ),
        (&["--bogus"], "unexpected argument '--bogus'"),
        (
            &["--policy", "/nonexistent/physics.toml"],
            "the policy file /nonexistent/physics.toml was rejected",
        ),
        (&["--particles", "many"], "invalid value 'many'"),
    ];
    for (args, want) in cases {
        let err = demo_err(args);
        assert!(err.contains(want), "{args:?}: got {err:?}, want {want:?}");
    }
}

#[test]
fn json_report_and_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_demos"))
        .args([
            "physics",
            "--particles",
            "300",
            "--steps",
            "20",
            "--clustered",
            "--regions",
            "2",
            "--rebalance-every",
            "5",
            "--json",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .expect("demos runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    for field in [
        "particles",
        "steps",
        "regions",
        "energy_drift",
        "momentum_drift",
        "particle_steps_per_s",
        "imbalance",
        "imbalance_before",
        "imbalance_after",
        "state_hash",
    ] {
        assert!(v.get(field).is_some(), "missing {field} in {v}");
    }
    assert_eq!(v["particles"], 300);
    assert_eq!(v["steps"], 20);
    assert_eq!(v["regions"], 2);
    assert!(v["particle_steps_per_s"].as_f64().unwrap() > 0.0);
    // One task per region per step (plus the closing half-kick) and one per region before
    // each list build after the first, all through the executor.
    let builds = v["rebuilds"].as_u64().unwrap();
    assert_eq!(v["tasks"], 2 * (21 + builds - 1));
    assert_eq!(v["tasks_completed"], v["tasks"]);
    for key in ["state_png", "work_png"] {
        let path = v[key].as_str().expect("picture path");
        let bytes = std::fs::read(path).expect("picture written");
        assert!(bytes.starts_with(b"\x89PNG"), "{path} is not a PNG");
        assert!(bytes.len() > 2_000, "{path} is suspiciously small");
    }
}

#[test]
fn balanced_borders_minimise_the_heaviest_region() {
    use demos::physics::sim::{balanced_borders, imbalance, region_work};
    assert_eq!(balanced_borders(&[1, 1, 1, 10, 1, 1], 2), vec![0, 3, 6]);
    assert_eq!(balanced_borders(&[5, 5, 5, 5], 4), vec![0, 1, 2, 3, 4]);
    assert_eq!(balanced_borders(&[0, 0, 0], 1), vec![0, 3]);
    // A clustered load: most of it in the first quarter of the columns.
    let cols: Vec<u64> = (0..40).map(|c| if c < 10 { 100 } else { 5 }).collect();
    let even = equal_borders(40, 4);
    let bal = balanced_borders(&cols, 4);
    assert!(imbalance(&region_work(&cols, &even)) > 2.0);
    assert!(imbalance(&region_work(&cols, &bal)) < 1.15, "{bal:?}");
    assert!(
        bal.windows(2).all(|w| w[0] < w[1]),
        "empty region in {bal:?}"
    );
}

#[test]
fn the_policy_file_moves_the_tasks_without_changing_the_result() {
    use demos::physics::exec::cpu_executor;
    let mut cfg = config(300, 20, 0.7, false);
    cfg.dec.regions = 3;
    let tasks = std::cell::Cell::new(0);
    let on = |exec: Arc<dyn Executor>| {
        let runner = ExecutorRunner::new(exec);
        let report = simulate(&cfg, &runner, "test", false).unwrap().0;
        tasks.set(report.tasks);
        report.state_hash
    };
    // The shipped policy: region tasks go to the rayon executor "cpu".
    let (shipped, routed) = cpu_executor(&demos::physics::default_policy()).unwrap();
    assert_eq!(routed, "cpu");
    let reference = on(shipped);
    // The same tasks routed to OS threads by the policy shipped next to it.
    let path = demos::physics::default_policy().with_file_name("physics-threads.toml");
    let (threads, routed) = cpu_executor(&path).unwrap();
    assert_eq!(routed, "pool");
    assert_eq!(on(threads.clone()), reference);
    // Every task is accounted for once the supervisor has shut down.
    let report = threads.shutdown(executor_core::ShutdownMode::Graceful(
        std::time::Duration::from_secs(5),
    ));
    assert!(tasks.get() >= 3 * 21);
    assert_eq!(report.stats.completed, tasks.get());
    assert_eq!(report.stats.failed + report.stats.panicked, 0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

    /// Any decomposition of any small system reaches the state a single region reaches.
    #[test]
    fn any_decomposition_reaches_the_single_region_state(
        particles in 100usize..400,
        seed in 0u64..1000,
        clustered in proptest::bool::ANY,
        regions in 2usize..9,
        rebalance_every in 1usize..6,
    ) {
        let exec = executor(2);
        let density = if clustered { 0.2 } else { 0.7 };
        let mut cfg = config(particles, 12, density, clustered);
        cfg.setup.seed = seed;
        let reference = run(&cfg, &exec).state_hash;
        let geom = demos::physics::sim::Geometry::new(2, particles, density, DEFAULT_SKIN).unwrap();
        cfg.dec.regions = regions.min(geom.cells());
        cfg.dec.balance = true;
        cfg.dec.rebalance_every = rebalance_every;
        proptest::prop_assert_eq!(run(&cfg, &exec).state_hash, reference);
    }
}

fn config_3d(particles: usize, steps: usize) -> Config {
    let mut cfg = config(particles, steps, 0.8442, false);
    cfg.setup.dim = 3;
    cfg.setup.temperature = 1.44;
    cfg
}

#[test]
fn three_d_state_hash_is_the_same_for_any_thread_and_region_count() {
    // 864 particles = a 6 x 6 x 6 fcc box at density 0.8442: 3 cell columns.
    let cfg = config_3d(864, 15);
    let h = hashes_over_decompositions(&cfg, &[1, 2, 3]);
    for (what, hash) in &h {
        assert_eq!(hash, &h[0].1, "3D: {what} differs from {}", h[0].0);
    }
    // A clustered 3D start, where balancing moves the borders.
    let mut clustered = config(2000, 15, 0.2, true);
    clustered.setup.dim = 3;
    let h = hashes_over_decompositions(&clustered, &[1, 2, 3]);
    for (what, hash) in &h {
        assert_eq!(
            hash, &h[0].1,
            "3D clustered: {what} differs from {}",
            h[0].0
        );
    }
}

/// Forces from the neighbour lists (for several decompositions) equal brute force over all
/// pairs, bit for bit, on a state a short run has disordered.
fn check_lists_against_brute_force(cfg: &Config) {
    use demos::physics::kernel::reference_forces;
    use demos::physics::sim::{Geometry, list_forces};
    let exec = executor(1);
    let runner = ExecutorRunner::new(exec);
    let (_, res, geom) = simulate(cfg, &runner, "test", false).unwrap();
    let geom = Arc::new(geom);
    let state = &res.final_state;
    let want = reference_forces(&geom, &state.positions());
    assert!(want.iter().any(|f| f[0] != 0), "no forces at all");
    // The total force is exactly zero: every pair's two contributions cancel.
    for d in 0..geom.dim {
        assert_eq!(want.iter().map(|f| i128::from(f[d])).sum::<i128>(), 0);
    }
    for regions in 1..=geom.nc.min(4) {
        let borders = equal_borders(geom.nc, regions);
        for once in [false, true] {
            let got = list_forces(&geom, state, &borders, once).unwrap();
            assert_eq!(
                got, want,
                "{regions} regions, border pairs once {once}: list forces differ from brute force"
            );
        }
    }
    let _ = Geometry::new(geom.dim, state.len(), cfg.setup.density, geom.skin).unwrap();
}

#[test]
fn neighbour_lists_give_the_brute_force_forces() {
    check_lists_against_brute_force(&config(300, 20, 0.7, false));
    check_lists_against_brute_force(&config(400, 20, 0.2, true));
    check_lists_against_brute_force(&config_3d(864, 10));
}

#[test]
fn the_rebuild_schedule_does_not_change_the_trajectory() {
    // Lists rebuilt every step (never stale), every 4 steps, and when a particle has moved
    // half the skin reach the same state: stale lists still hold every pair within the cutoff.
    for base in [config(300, 40, 0.7, false), config_3d(864, 12)] {
        let exec = executor(2);
        let mut hashes = Vec::new();
        let mut rebuilds = Vec::new();
        for rule in [
            Rebuild::Every(1),
            Rebuild::Every(4),
            Rebuild::OnDisplacement,
        ] {
            let mut cfg = base.clone();
            cfg.rebuild = rule;
            cfg.dec.regions = 2;
            let rep = run(&cfg, &exec);
            hashes.push(rep.state_hash);
            rebuilds.push(rep.rebuilds);
        }
        assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
        assert_eq!(
            rebuilds[0],
            base.steps + 1,
            "every step, plus the first build"
        );
        assert!(
            rebuilds[2] < rebuilds[0] && rebuilds[2] >= 2,
            "rebuilds on displacement: {rebuilds:?}"
        );
    }
}

#[test]
fn three_d_conserves_energy_and_momentum() {
    let exec = executor(2);
    let mut cfg = config_3d(864, 60);
    cfg.dec.regions = 3;
    let rep = run(&cfg, &exec);
    assert!(rep.momentum_drift < 1e-14, "{:e}", rep.momentum_drift);
    assert!(
        rep.energy_drift.abs() < ENERGY_DRIFT_BOUND,
        "3D energy drift {:e} is above the bound {:e}",
        rep.energy_drift,
        ENERGY_DRIFT_BOUND
    );
    // The fcc start at density 0.8442 is bound: negative potential energy dominates.
    assert!(rep.energy_initial < 0.0, "{}", rep.energy_initial);
    // About 38 pairs per particle within cutoff + skin (LAMMPS reports 37.6 on bench/in.lj).
    assert!(
        (30.0..50.0).contains(&rep.neighbours_per_particle),
        "{}",
        rep.neighbours_per_particle
    );
}

#[test]
fn bad_dimension_and_skin_give_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["--dim", "4"], "--dim must be 2 or 3 (got 4)"),
        (&["--dim", "1"], "--dim must be 2 or 3 (got 1)"),
        (
            &["--skin", "-0.1"],
            "--skin must be zero or positive (got -0.1)",
        ),
        (&["--skin", "NaN"], "--skin must be zero or positive"),
        (&["--skin", "3"], "is larger than the cutoff"),
        (
            &["--dim", "3", "--particles", "300", "--no-png"],
            "box is too small for the cutoff",
        ),
    ];
    for (args, want) in cases {
        let err = demo_err(args);
        assert!(err.contains(want), "{args:?}: got {err:?}, want {want:?}");
    }
}
