//! The Lennard-Jones system: set-up, the region task and the step loop.
//!
//! Units are reduced Lennard-Jones units (sigma = epsilon = mass = 1); the potential is cut at
//! [`CUTOFF`] and shifted in r² so that energy and force both vanish there. The box is a periodic
//! square of side `L = sqrt(particles / density)`, cut into `nc x nc` cells of side
//! `L / nc >= rc`, so every neighbour within the cutoff sits in one of the 9 cells around a
//! particle. A region is a contiguous range of cell columns.
//!
//! # Determinism
//!
//! The state after a step is a list of region buffers; each holds its particles sorted by the
//! cell they now occupy, in a *canonical* order per cell: by the global index of the cell they
//! came from (column-major), then by their canonical order in that cell. A region task
//! processes its cells in column-major order and regions are ordered by column, so this order
//! never depends on the number of regions or threads. Forces on a particle are summed over the
//! 9 neighbour cells in a fixed order and, within a cell, in canonical order; each particle's
//! force, velocity and position therefore come out bit for bit the same for any decomposition.

use anyhow::{Context, Result, bail, ensure};
use std::sync::Arc;
use std::time::Instant;

/// The Lennard-Jones cutoff radius (reduced units).
pub const CUTOFF: f64 = 2.5;

/// The closest lattice spacing at which the set-up still places particles.
pub const MIN_SPACING: f64 = 0.95;

/// Share of the particles that `--clustered` puts into the cluster.
pub const CLUSTER_SHARE: f64 = 0.8;

/// Share of the box area the cluster covers.
pub const CLUSTER_AREA: f64 = 0.2;

/// What the load model charges for one particle, in units of one pair-distance evaluation
/// (gathering it into the region's view, integrating it, binning it).
pub const PARTICLE_COST: u64 = 12;

/// What the load model charges for one cell a region owns, in the same units (walking it,
/// gathering it, binning into it), whether or not it holds particles.
pub const CELL_COST: u64 = 3;

/// The physical set-up of a run.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Number of particles.
    pub particles: usize,
    /// Number density (particles per unit area).
    pub density: f64,
    /// Initial temperature (kinetic energy per particle, k_B = 1, 2D).
    pub temperature: f64,
    /// Seed for the initial velocities.
    pub seed: u64,
    /// Put 80% of the particles into 20% of the box (a square in one corner).
    pub clustered: bool,
}

/// The box geometry derived from a [`Setup`].
#[derive(Debug, Clone)]
pub struct Geometry {
    /// Side of the periodic square box.
    pub l: f64,
    half_l: f64,
    /// Cells per side.
    pub nc: usize,
    /// Side of a cell (`>= CUTOFF`).
    pub cs: f64,
    rc2: f64,
    /// Potential at the cutoff, subtracted so the energy is continuous there.
    ushift: f64,
    /// `2 du/d(r^2)` at the cutoff: subtracted from the pair force so it too is continuous.
    fshift: f64,
}

impl Geometry {
    /// The geometry for `particles` at `density`; errors if the box is too small for the cutoff.
    pub fn new(particles: usize, density: f64) -> Result<Self> {
        let l = (particles as f64 / density).sqrt();
        let nc = (l / CUTOFF).floor() as usize;
        ensure!(
            nc >= 3,
            "the box is too small for the cutoff: {particles} particles at density {density} give a \
             box of side {l:.2}, but it must be at least {:.1} (3 x the cutoff {CUTOFF}); use more \
             particles or a lower density",
            3.0 * CUTOFF
        );
        let rc2 = CUTOFF * CUTOFF;
        let inv6 = CUTOFF.powi(-6);
        Ok(Self {
            l,
            half_l: l / 2.0,
            nc,
            cs: l / nc as f64,
            rc2,
            ushift: 4.0 * inv6 * (inv6 - 1.0),
            fshift: 24.0 / rc2 * inv6 * (2.0 * inv6 - 1.0),
        })
    }

    /// Column (or row) of the cell holding coordinate `x` in `[0, l)`.
    fn cell_of(&self, x: f64) -> usize {
        ((x / self.cs) as usize).min(self.nc - 1)
    }
}

/// Particles and their velocities, indexed by particle id.
#[derive(Debug, Clone, Default)]
pub struct Particles {
    /// x positions.
    pub x: Vec<f64>,
    /// y positions.
    pub y: Vec<f64>,
    /// x velocities.
    pub vx: Vec<f64>,
    /// y velocities.
    pub vy: Vec<f64>,
}

impl Particles {
    fn with_len(n: usize) -> Self {
        Self {
            x: vec![0.0; n],
            y: vec![0.0; n],
            vx: vec![0.0; n],
            vy: vec![0.0; n],
        }
    }

    /// Number of particles.
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// Whether there are no particles.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    /// A hash of every position and velocity bit, in particle-id order (16 hex digits).
    pub fn state_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for i in 0..self.len() {
            for v in [self.x[i], self.y[i], self.vx[i], self.vy[i]] {
                h.update(v.to_bits().to_le_bytes());
            }
        }
        let d = h.finalize();
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Places `setup.particles` particles on lattices and draws their velocities.
pub fn initial_state(setup: &Setup, geom: &Geometry) -> Result<Particles> {
    use rand::{Rng, SeedableRng};
    let n = setup.particles;
    let mut p = Particles::with_len(n);
    let sites = if setup.clustered {
        clustered_sites(n, setup.density, geom.l)?
    } else {
        let side = (n as f64).sqrt().ceil() as usize;
        let a = geom.l / side as f64;
        ensure_spacing(a, setup.density)?;
        lattice(side, a, 0.0)
    };
    for (i, (x, y)) in sites.into_iter().take(n).enumerate() {
        p.x[i] = x;
        p.y[i] = y;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(setup.seed);
    for i in 0..n {
        p.vx[i] = rng.random_range(-1.0..1.0);
        p.vy[i] = rng.random_range(-1.0..1.0);
    }
    // No drift of the centre of mass, and kinetic energy = N * T (2 degrees of freedom).
    let (mx, my) = (mean(&p.vx), mean(&p.vy));
    p.vx.iter_mut().for_each(|v| *v -= mx);
    p.vy.iter_mut().for_each(|v| *v -= my);
    let ke: f64 = (0..n)
        .map(|i| 0.5 * (p.vx[i].powi(2) + p.vy[i].powi(2)))
        .sum();
    let scale = if ke > 0.0 {
        (n as f64 * setup.temperature / ke).sqrt()
    } else {
        0.0
    };
    p.vx.iter_mut().for_each(|v| *v *= scale);
    p.vy.iter_mut().for_each(|v| *v *= scale);
    Ok(p)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn ensure_spacing(a: f64, density: f64) -> Result<()> {
    if a < MIN_SPACING {
        bail!(
            "density {density} is too high to place the particles: their lattice spacing would \
             be {a:.3}, below the minimum {MIN_SPACING} (particles would overlap); use a lower \
             density"
        );
    }
    Ok(())
}

/// `side x side` sites with spacing `a`, starting at `origin + a/2`, row by row.
fn lattice(side: usize, a: f64, origin: f64) -> Vec<(f64, f64)> {
    let mut s = Vec::with_capacity(side * side);
    for j in 0..side {
        for i in 0..side {
            s.push((origin + (i as f64 + 0.5) * a, origin + (j as f64 + 0.5) * a));
        }
    }
    s
}

/// 80% of the particles on a square lattice filling a corner square of 20% of the area; the
/// rest on a coarser lattice over the remaining box, at least one unit away from the cluster.
fn clustered_sites(n: usize, density: f64, l: f64) -> Result<Vec<(f64, f64)>> {
    let nc = ((n as f64) * CLUSTER_SHARE).round() as usize;
    let ng = n - nc;
    let s = CLUSTER_AREA.sqrt() * l;
    let side = (nc as f64).sqrt().ceil() as usize;
    let a = s / side as f64;
    if a < MIN_SPACING {
        bail!(
            "density {density} is too high to place the particles with --clustered: the cluster \
             holds {:.0}% of them in {:.0}% of the box, so its lattice spacing would be {a:.3}, \
             below the minimum {MIN_SPACING}; use a density of at most {:.2}",
            CLUSTER_SHARE * 100.0,
            CLUSTER_AREA * 100.0,
            max_clustered_density()
        );
    }
    let mut sites = lattice(side, a, 0.0);
    sites.truncate(nc);
    if ng == 0 {
        return Ok(sites);
    }
    // Distance from a point to the cluster square [0, s]^2, with periodic images.
    let gap = |x: f64| {
        if x <= s { 0.0 } else { (x - s).min(l - x) }
    };
    let margin = 1.0;
    let free_area = l * l - (s + 2.0 * margin).powi(2);
    let mut ag = (free_area / ng as f64).sqrt();
    loop {
        let side = (l / ag).floor() as usize;
        let step = l / side as f64;
        let mut gas = Vec::with_capacity(ng);
        'fill: for j in 0..side {
            for i in 0..side {
                let (x, y) = ((i as f64 + 0.5) * step, (j as f64 + 0.5) * step);
                if gap(x).hypot(gap(y)) >= margin {
                    gas.push((x, y));
                    if gas.len() == ng {
                        break 'fill;
                    }
                }
            }
        }
        if gas.len() == ng {
            ensure_spacing(step, density)?;
            sites.extend(gas);
            return Ok(sites);
        }
        ag *= 0.97;
        ensure_spacing(ag, density)?;
    }
}

/// The highest mean density `--clustered` can place (for the error message).
pub fn max_clustered_density() -> f64 {
    CLUSTER_AREA / CLUSTER_SHARE / (MIN_SPACING * MIN_SPACING) * 0.97
}

/// The particles of one region after a round, sorted by the cell they now occupy.
///
/// The buffer covers a *window* of columns: the region's own columns plus one on each side
/// (all columns when that would wrap onto itself), since a particle moves less than a cell
/// per step.
#[derive(Debug, Clone)]
pub struct RegionBuf {
    win_start: usize,
    win_len: usize,
    /// `win_len * nc + 1` offsets: cell `(p, row)` of the window holds
    /// `cell_start[p * nc + row]..cell_start[p * nc + row + 1]`.
    cell_start: Vec<u32>,
    id: Vec<u32>,
    x: Vec<f64>,
    y: Vec<f64>,
    vx: Vec<f64>,
    vy: Vec<f64>,
}

impl RegionBuf {
    /// Position of global column `col` in this buffer's window, if it is in it.
    fn window_pos(&self, col: usize, nc: usize) -> Option<usize> {
        let p = (col + nc - self.win_start) % nc;
        (p < self.win_len).then_some(p)
    }

    fn cell(&self, p: usize, row: usize, nc: usize) -> std::ops::Range<usize> {
        let c = p * nc + row;
        self.cell_start[c] as usize..self.cell_start[c + 1] as usize
    }

    /// Number of particles in the buffer.
    pub fn len(&self) -> usize {
        self.id.len()
    }

    /// Whether the buffer holds no particles.
    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }
}

/// The window (first column, number of columns) of a region owning columns `[a, b)`.
fn window(a: usize, b: usize, nc: usize) -> (usize, usize) {
    let w = b - a;
    if w + 2 >= nc {
        (0, nc)
    } else {
        ((a + nc - 1) % nc, w + 2)
    }
}

/// Sorts particles (given in canonical order) into a buffer over the window `(start, len)`.
/// Errors if a particle left the window or is not finite.
fn bin(
    geom: &Geometry,
    (win_start, win_len): (usize, usize),
    id: &[u32],
    p: &Particles,
) -> Result<RegionBuf> {
    let nc = geom.nc;
    let n = id.len();
    let mut cell = Vec::with_capacity(n);
    let mut counts = vec![0u32; win_len * nc + 1];
    for (i, &pid) in id.iter().enumerate() {
        let (x, y) = (p.x[i], p.y[i]);
        if !(x.is_finite() && y.is_finite()) {
            bail!(
                "the simulation blew up (particle {pid} has a non-finite position); use a smaller --dt"
            );
        }
        let col = geom.cell_of(x);
        let pos = (col + nc - win_start) % nc;
        if pos >= win_len {
            bail!(
                "particle {pid} moved more than one cell in one step; the time step is too large \
                 for these velocities, use a smaller --dt"
            );
        }
        let c = pos * nc + geom.cell_of(y);
        cell.push(c as u32);
        counts[c + 1] += 1;
    }
    for c in 1..counts.len() {
        counts[c] += counts[c - 1];
    }
    let cell_start = counts.clone();
    let mut next = counts;
    let mut out = RegionBuf {
        win_start,
        win_len,
        cell_start,
        id: vec![0; n],
        x: vec![0.0; n],
        y: vec![0.0; n],
        vx: vec![0.0; n],
        vy: vec![0.0; n],
    };
    for i in 0..n {
        let c = cell[i] as usize;
        let k = next[c] as usize;
        next[c] += 1;
        out.id[k] = id[i];
        out.x[k] = p.x[i];
        out.y[k] = p.y[i];
        out.vx[k] = p.vx[i];
        out.vy[k] = p.vy[i];
    }
    Ok(out)
}

/// The state between rounds: one buffer per region of the previous round, in column order.
pub type Snapshot = Arc<Vec<RegionBuf>>;

/// Sorts the initial particles into a single buffer covering the whole box.
pub fn initial_snapshot(geom: &Geometry, p: &Particles) -> Result<Snapshot> {
    let id: Vec<u32> = (0..p.len() as u32).collect();
    Ok(Arc::new(vec![bin(geom, (0, geom.nc), &id, p)?]))
}

/// One region's work for one round: everything a task needs, owned or shared read-only.
#[derive(Debug, Clone)]
pub struct RegionJob {
    /// The state of the previous round, shared by every task of this round.
    pub prev: Snapshot,
    /// The box geometry.
    pub geom: Arc<Geometry>,
    /// First column the region owns.
    pub a: usize,
    /// One past the last column the region owns.
    pub b: usize,
    /// Time step.
    pub dt: f64,
    /// Complete the previous step's kick (`false` only in the first round, where the
    /// velocities are already those of time 0).
    pub finish_kick: bool,
    /// Kick and drift to the next step (`false` in the last round, which only finishes the
    /// last step's kick).
    pub advance: bool,
}

/// What a region task hands back: its new particles and what it measured.
#[derive(Debug)]
pub struct RegionOut {
    /// The region's particles after the round.
    pub buf: RegionBuf,
    /// Kinetic energy at the round's time.
    pub ke: f64,
    /// Potential energy at the round's time (half of every pair counted here).
    pub pe: f64,
    /// Momentum at the round's time.
    pub px: f64,
    /// Momentum at the round's time.
    pub py: f64,
    /// Load per own column: pair-distance evaluations + `PARTICLE_COST` per particle +
    /// `CELL_COST` per cell.
    pub col_work: Vec<u64>,
    /// Particles the region owned.
    pub particles: usize,
    /// Wall time the task took, in nanoseconds.
    pub nanos: u64,
}

impl RegionJob {
    /// Runs the region's part of a velocity-Verlet step.
    ///
    /// Reads the previous round's buffers (its own columns and one halo column on each side),
    /// computes forces on its own particles, finishes the previous kick (`v(t) = v(t-dt/2) +
    /// f dt/2`), records the energy at `t`, then kicks and drifts (`v(t+dt/2) = v(t) + f dt/2`,
    /// `x(t+dt) = x(t) + v(t+dt/2) dt`) and bins its particles by their new cell.
    pub fn run(self) -> Result<RegionOut> {
        let start = Instant::now();
        let geom = &*self.geom;
        let nc = geom.nc;
        let (a, b) = (self.a, self.b);
        // Gather the view: the window's cells, each in canonical order.
        let (vs, vl) = window(a, b, nc);
        let prev = &*self.prev;
        let guess = prev.iter().map(RegionBuf::len).sum::<usize>() * vl / nc + 16;
        let mut id = Vec::with_capacity(guess);
        let mut v = Particles {
            x: Vec::with_capacity(guess),
            y: Vec::with_capacity(guess),
            vx: Vec::with_capacity(guess),
            vy: Vec::with_capacity(guess),
        };
        let mut cs = Vec::with_capacity(vl * nc + 1);
        for p in 0..vl {
            let col = (vs + p) % nc;
            let sources: Vec<(&RegionBuf, usize)> = prev
                .iter()
                .filter_map(|s| s.window_pos(col, nc).map(|sp| (s, sp)))
                .collect();
            for row in 0..nc {
                cs.push(id.len() as u32);
                for &(s, sp) in &sources {
                    let r = s.cell(sp, row, nc);
                    if r.is_empty() {
                        continue;
                    }
                    id.extend_from_slice(&s.id[r.clone()]);
                    v.x.extend_from_slice(&s.x[r.clone()]);
                    v.y.extend_from_slice(&s.y[r.clone()]);
                    v.vx.extend_from_slice(&s.vx[r.clone()]);
                    v.vy.extend_from_slice(&s.vy[r]);
                }
            }
        }
        cs.push(id.len() as u32);
        let vpos = |col: usize| (col + nc - vs) % nc;
        let cell_range = |p: usize, row: usize| {
            let c = p * nc + row;
            cs[c] as usize..cs[c + 1] as usize
        };

        // Forces, energies and the integration for the own particles, in canonical order.
        let own_len: usize = (a..b)
            .map(|col| {
                let p = vpos(col);
                cs[(p + 1) * nc] as usize - cs[p * nc] as usize
            })
            .sum();
        let mut out_id = Vec::with_capacity(own_len);
        let mut out = Particles {
            x: Vec::with_capacity(own_len),
            y: Vec::with_capacity(own_len),
            vx: Vec::with_capacity(own_len),
            vy: Vec::with_capacity(own_len),
        };
        let (mut ke, mut pe, mut px, mut py) = (0.0, 0.0, 0.0, 0.0);
        let mut col_work = Vec::with_capacity(b - a);
        let half_dt = 0.5 * self.dt;
        for col in a..b {
            let p = vpos(col);
            let cols = [vpos((col + nc - 1) % nc), p, vpos((col + 1) % nc)];
            let mut work = 0u64;
            for row in 0..nc {
                work += CELL_COST;
                let own = cell_range(p, row);
                if own.is_empty() {
                    continue;
                }
                let rows = [(row + nc - 1) % nc, row, (row + 1) % nc];
                let mut nb = [0..0, 0..0, 0..0, 0..0, 0..0, 0..0, 0..0, 0..0, 0..0];
                for (k, &c) in cols.iter().enumerate() {
                    for (m, &r) in rows.iter().enumerate() {
                        nb[k * 3 + m] = cell_range(c, r);
                    }
                }
                for i in own {
                    let (xi, yi) = (v.x[i], v.y[i]);
                    let mut acc = Pair::default();
                    for (k, r) in nb.iter().enumerate() {
                        work += r.len() as u64;
                        if k == 4 {
                            // The particle's own cell: every particle but itself, in order.
                            acc.add(geom, xi, yi, &v.x[r.start..i], &v.y[r.start..i]);
                            acc.add(geom, xi, yi, &v.x[i + 1..r.end], &v.y[i + 1..r.end]);
                        } else {
                            acc.add(geom, xi, yi, &v.x[r.clone()], &v.y[r.clone()]);
                        }
                    }
                    let Pair { fx, fy, u: ui } = acc;
                    let (mut vx, mut vy) = (v.vx[i], v.vy[i]);
                    if self.finish_kick {
                        vx += fx * half_dt;
                        vy += fy * half_dt;
                    }
                    ke += 0.5 * (vx * vx + vy * vy);
                    pe += 0.5 * ui;
                    px += vx;
                    py += vy;
                    let (mut x, mut y) = (xi, yi);
                    if self.advance {
                        vx += fx * half_dt;
                        vy += fy * half_dt;
                        x = wrap(x + vx * self.dt, geom.l);
                        y = wrap(y + vy * self.dt, geom.l);
                    }
                    out_id.push(id[i]);
                    out.x.push(x);
                    out.y.push(y);
                    out.vx.push(vx);
                    out.vy.push(vy);
                    work += PARTICLE_COST;
                }
            }
            col_work.push(work);
        }
        let buf = bin(geom, window(a, b, nc), &out_id, &out)?;
        Ok(RegionOut {
            buf,
            ke,
            pe,
            px,
            py,
            col_work,
            particles: own_len,
            nanos: start.elapsed().as_nanos() as u64,
        })
    }
}

/// Force and potential energy on one particle, summed over its neighbours in order.
#[derive(Debug, Default)]
struct Pair {
    fx: f64,
    fy: f64,
    u: f64,
}

impl Pair {
    /// Adds the interactions of the particle at `(xi, yi)` with those at `xs, ys`, in order.
    #[inline(always)]
    fn add(&mut self, geom: &Geometry, xi: f64, yi: f64, xs: &[f64], ys: &[f64]) {
        let (l, half) = (geom.l, geom.half_l);
        for (&xj, &yj) in xs.iter().zip(ys) {
            // Minimum image, written so that the (j, i) pair gets exactly -(dx, dy).
            let mut dx = xi - xj;
            let mut dy = yi - yj;
            if dx > half {
                dx -= l;
            } else if dx < -half {
                dx += l;
            }
            if dy > half {
                dy -= l;
            } else if dy < -half {
                dy += l;
            }
            let r2 = dx * dx + dy * dy;
            if r2 < geom.rc2 {
                let inv2 = 1.0 / r2;
                let inv6 = inv2 * inv2 * inv2;
                let ff = 24.0 * inv2 * inv6 * (2.0 * inv6 - 1.0) - geom.fshift;
                self.fx += ff * dx;
                self.fy += ff * dy;
                self.u +=
                    4.0 * inv6 * (inv6 - 1.0) - geom.ushift + 0.5 * (r2 - geom.rc2) * geom.fshift;
            }
        }
    }
}

/// Maps `x` (at most one box length outside) back into `[0, l)`.
fn wrap(x: f64, l: f64) -> f64 {
    if x >= l {
        x - l
    } else if x < 0.0 {
        let w = x + l;
        if w >= l { 0.0 } else { w }
    } else {
        x
    }
}

/// Runs one round's region jobs somewhere and returns their results in region order.
///
/// The simulation only sees this trait; implementations submit the jobs to a switchyard
/// executor or (for the benchmark baseline) straight to a rayon pool.
pub trait RegionRunner {
    /// A short name for reports (e.g. the executor's name).
    fn name(&self) -> String;

    /// Runs every job (possibly in parallel) and returns the outputs in the jobs' order.
    fn run_round(&self, jobs: Vec<RegionJob>) -> Result<Vec<RegionOut>>;
}

/// Equal-width borders: region `k` owns columns `[k*nc/r, (k+1)*nc/r)`.
pub fn equal_borders(nc: usize, regions: usize) -> Vec<usize> {
    (0..=regions).map(|k| k * nc / regions).collect()
}

/// Borders that split the columns into `regions` non-empty contiguous ranges so that the
/// heaviest range is as light as possible (exact, by dynamic programming over the columns).
pub fn balanced_borders(col_work: &[u64], regions: usize) -> Vec<usize> {
    let nc = col_work.len();
    assert!((1..=nc).contains(&regions), "1 <= regions <= columns");
    let mut prefix = vec![0u64; nc + 1];
    for (c, w) in col_work.iter().enumerate() {
        prefix[c + 1] = prefix[c] + w;
    }
    // best[k][j]: the lightest possible heaviest range when columns 0..j form k ranges;
    // cut[k][j]: where the last of those ranges starts.
    let mut best = vec![vec![u64::MAX; nc + 1]; regions + 1];
    let mut cut = vec![vec![0usize; nc + 1]; regions + 1];
    best[0][0] = 0;
    for k in 1..=regions {
        for j in k..=nc - (regions - k) {
            for i in (k - 1)..j {
                if best[k - 1][i] == u64::MAX {
                    continue;
                }
                let m = best[k - 1][i].max(prefix[j] - prefix[i]);
                if m < best[k][j] {
                    best[k][j] = m;
                    cut[k][j] = i;
                }
            }
        }
    }
    let mut borders = vec![nc];
    let mut j = nc;
    for k in (1..=regions).rev() {
        j = cut[k][j];
        borders.push(j);
    }
    borders.reverse();
    borders
}

/// Per-region load for `borders`, from per-column load.
pub fn region_work(col_work: &[u64], borders: &[usize]) -> Vec<u64> {
    borders
        .windows(2)
        .map(|w| col_work[w[0]..w[1]].iter().sum())
        .collect()
}

/// Slowest / mean of a set of per-region figures (1 = perfectly balanced).
pub fn imbalance(v: &[u64]) -> f64 {
    let max = v.iter().copied().max().unwrap_or(0) as f64;
    let mean = v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    if mean > 0.0 { max / mean } else { 1.0 }
}

/// How a run splits and rebalances the box.
#[derive(Debug, Clone)]
pub struct Decomposition {
    /// Number of regions (tasks per step).
    pub regions: usize,
    /// Move the borders by measured load.
    pub balance: bool,
    /// Rebalance every this many steps.
    pub rebalance_every: usize,
}

/// What one round measured.
#[derive(Debug, Clone)]
pub struct RoundRecord {
    /// Total kinetic energy.
    pub ke: f64,
    /// Total potential energy.
    pub pe: f64,
    /// Total momentum.
    pub p: (f64, f64),
    /// Load per region with the borders actually used.
    pub work: Vec<u64>,
    /// Load per region had the borders stayed at equal widths.
    pub work_equal: Vec<u64>,
    /// Task wall time per region, nanoseconds.
    pub nanos: Vec<u64>,
    /// Whether the borders had been moved by load before this round.
    pub balanced: bool,
}

/// Everything a finished run knows.
#[derive(Debug)]
pub struct RunResult {
    /// One record per round (`steps + 1`: times 0..=steps).
    pub rounds: Vec<RoundRecord>,
    /// Final positions and velocities, by particle id.
    pub final_state: Particles,
    /// The region owning each particle in the last round, by particle id.
    pub final_region: Vec<usize>,
    /// Borders used in the last round.
    pub final_borders: Vec<usize>,
    /// Wall time of the whole step loop, seconds.
    pub seconds: f64,
}

/// Runs `steps` velocity-Verlet steps from `init`, one task per region per step on `runner`.
///
/// `progress` is called after every round with the round index.
pub fn run(
    geom: Arc<Geometry>,
    init: &Particles,
    steps: usize,
    dt: f64,
    dec: &Decomposition,
    runner: &dyn RegionRunner,
    mut progress: impl FnMut(usize),
) -> Result<RunResult> {
    let nc = geom.nc;
    ensure!(dec.regions >= 1, "--regions must be at least 1");
    ensure!(
        dec.regions <= nc,
        "--regions {} is more than the {nc} cell columns of this box; use at most {nc}",
        dec.regions
    );
    let equal = equal_borders(nc, dec.regions);
    let mut borders = equal.clone();
    let mut balanced = false;
    let mut state = initial_snapshot(&geom, init)?;
    let mut rounds = Vec::with_capacity(steps + 1);
    let started = Instant::now();
    for round in 0..=steps {
        let jobs = borders
            .windows(2)
            .map(|w| RegionJob {
                prev: state.clone(),
                geom: geom.clone(),
                a: w[0],
                b: w[1],
                dt,
                finish_kick: round > 0,
                advance: round < steps,
            })
            .collect();
        let outs = runner
            .run_round(jobs)
            .with_context(|| format!("step {round} of {steps} failed"))?;
        ensure!(
            outs.len() == dec.regions,
            "the runner returned {} results for {} regions",
            outs.len(),
            dec.regions
        );
        let col_work: Vec<u64> = outs.iter().flat_map(|o| o.col_work.clone()).collect();
        let rec = RoundRecord {
            ke: outs.iter().map(|o| o.ke).sum(),
            pe: outs.iter().map(|o| o.pe).sum(),
            p: (
                outs.iter().map(|o| o.px).sum(),
                outs.iter().map(|o| o.py).sum(),
            ),
            work: region_work(&col_work, &borders),
            work_equal: region_work(&col_work, &equal),
            nanos: outs.iter().map(|o| o.nanos).collect(),
            balanced,
        };
        rounds.push(rec);
        // Compose: the new state is the region buffers, in column order.
        state = Arc::new(outs.into_iter().map(|o| o.buf).collect());
        progress(round);
        // Rebalance as soon as the first step has measured the load, then every few steps.
        let due = round == 0 || (round + 1) % dec.rebalance_every.max(1) == 0;
        if dec.balance && dec.regions > 1 && round < steps && due {
            borders = balanced_borders(&col_work, dec.regions);
            balanced = true;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let n = init.len();
    let mut final_state = Particles::with_len(n);
    let mut final_region = vec![usize::MAX; n];
    // The last round did not advance, so each buffer holds exactly its region's particles.
    for (r, buf) in state.iter().enumerate() {
        for k in 0..buf.len() {
            let i = buf.id[k] as usize;
            ensure!(
                final_region[i] == usize::MAX,
                "particle {i} was found in two regions"
            );
            final_state.x[i] = buf.x[k];
            final_state.y[i] = buf.y[k];
            final_state.vx[i] = buf.vx[k];
            final_state.vy[i] = buf.vy[k];
            final_region[i] = r;
        }
    }
    if let Some(lost) = final_region.iter().position(|&r| r == usize::MAX) {
        bail!("particle {lost} was lost between regions");
    }
    Ok(RunResult {
        rounds,
        final_state,
        final_region,
        final_borders: borders,
        seconds,
    })
}
