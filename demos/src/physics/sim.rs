//! The Lennard-Jones system: set-up, the step loop, and the split of the box into regions.
//!
//! Units are reduced Lennard-Jones units (sigma = epsilon = mass = 1); the potential is cut at
//! [`CUTOFF`] and shifted in r² so that energy and force both vanish there. The box is a periodic
//! square (2D) or cube (3D) of side `L = (particles / density)^(1/dim)`, cut into cells of side
//! at least `CUTOFF + skin` and each cell into 2 (4, 8) bins of half its side; a column is one
//! bin wide along x, so every particle within the list radius of another sits within two
//! columns (bins) of it. A region is a contiguous range of columns (slabs along x); it owns the
//! particles whose column is in its range at the last list build. Half-cell columns let the
//! borders split the load finely: the 3D benchmark's box has 11 cells per side, which two
//! regions of whole cells could only cut 6 : 5.
//!
//! # The step loop
//!
//! Every step runs one task per region (see [`RegionJob`]). Between list builds each region
//! keeps its particles; the tasks read every region's positions at `t` from a shared, read-only
//! snapshot and each writes its own positions at `t + dt` into a buffer of its own. When any
//! particle has moved more than half the skin since the last build (or every
//! `rebuild_every` steps), a round of tasks computes the bin of every particle, the loop
//! sorts them by bin (a stable counting sort, so the order is canonical) and names the
//! regions at the current borders, and each of the next tasks takes its particles and its
//! halo (the particles in the columns next to it) from the sorted order and builds its list.
//! Region borders move (load balancing) only at such a rebuild. With
//! [`Decomposition::border_once`] a step takes two rounds: forces, then the border forces
//! exchanged and the integration.
//!
//! # Determinism
//!
//! Forces are summed in fixed point (see the `kernel` module), so the force on a particle is
//! bit for bit the same for any decomposition, and positions are never rewritten (no
//! wrapping), so neither the build schedule nor the borders touch the trajectory.

use super::kernel::{Axes, HaloForces, Moved, Phase, RegionJob, RegionOut, RegionState, Snapshot};
use anyhow::{Context, Result, bail, ensure};
use std::sync::Arc;
use std::time::Instant;

/// The Lennard-Jones cutoff radius (reduced units).
pub const CUTOFF: f64 = 2.5;

/// The default neighbour-list skin (as in LAMMPS's `bench/in.lj`).
pub const DEFAULT_SKIN: f64 = 0.3;

/// The potential energy is computed every this many steps (and at the last), like LAMMPS's
/// `thermo`: forces alone are cheaper.
pub const ENERGY_EVERY: usize = 10;

/// The closest lattice spacing at which the set-up still places particles.
pub const MIN_SPACING: f64 = 0.95;

/// Share of the particles that `--clustered` puts into the cluster.
pub const CLUSTER_SHARE: f64 = 0.8;

/// Share of the box area (volume) the cluster covers.
pub const CLUSTER_AREA: f64 = 0.2;

/// What the load model charges for one particle, in units of one neighbour pair
/// (gathering it, integrating it, sorting it).
pub const PARTICLE_COST: u64 = 12;

/// What the load model charges for one cell a region owns, in the same units.
pub const CELL_COST: u64 = 3;

/// The physical set-up of a run.
#[derive(Debug, Clone)]
pub struct Setup {
    /// 2 or 3.
    pub dim: usize,
    /// Number of particles.
    pub particles: usize,
    /// Number density (particles per unit area or volume).
    pub density: f64,
    /// Initial temperature (k_B = 1).
    pub temperature: f64,
    /// Seed for the initial velocities.
    pub seed: u64,
    /// Put 80% of the particles into 20% of the box (a square or cube in one corner).
    pub clustered: bool,
}

/// The box geometry and the potential's constants.
#[derive(Debug, Clone)]
pub struct Geometry {
    /// 2 or 3.
    pub dim: usize,
    /// Side of the periodic box.
    pub l: f64,
    /// Columns per side: twice the cells per side, so a column is half a cell wide (at
    /// least half of `CUTOFF + skin`). Region borders, halos (two columns on either side) and
    /// the list build's bins all use this grid.
    pub nc: usize,
    /// Side of a column (and of a bin).
    pub cs: f64,
    /// The cutoff.
    pub rc: f64,
    /// The neighbour-list skin.
    pub skin: f64,
    pub(crate) rc2: f64,
    /// Potential at the cutoff, subtracted so the energy is continuous there.
    pub(crate) ushift: f64,
    /// Force over distance at the cutoff, subtracted so the force is continuous there.
    pub(crate) fshift: f64,
}

impl Geometry {
    /// The geometry for `particles` at `density` in `dim` dimensions with neighbour-list skin
    /// `skin`; errors if the box is too small for the cutoff.
    pub fn new(dim: usize, particles: usize, density: f64, skin: f64) -> Result<Self> {
        ensure!(dim == 2 || dim == 3, "--dim must be 2 or 3 (got {dim})");
        let l = (particles as f64 / density).powf(1.0 / dim as f64);
        let reach = CUTOFF + skin;
        let cells = (l / reach).floor() as usize;
        ensure!(
            cells >= 3,
            "the box is too small for the cutoff: {particles} particles at density {density} give a \
             box of side {l:.2}, but it must be at least {:.1} (3 x the cutoff {CUTOFF} plus the \
             skin {skin}); use more particles, a lower density or a smaller --skin",
            3.0 * reach
        );
        let rc2 = CUTOFF * CUTOFF;
        let inv6 = CUTOFF.powi(-6);
        Ok(Self {
            dim,
            l,
            nc: 2 * cells,
            cs: l / (2 * cells) as f64,
            rc: CUTOFF,
            skin,
            rc2,
            ushift: 4.0 * inv6 * (inv6 - 1.0),
            fshift: 24.0 / rc2 * inv6 * (2.0 * inv6 - 1.0),
        })
    }

    /// Bins per column (`nc^(dim-1)`).
    pub fn cells_per_column(&self) -> usize {
        self.nc.pow(self.dim as u32 - 1)
    }

    /// Cells (of side at least `CUTOFF + skin`) per side: at most this many regions.
    pub fn cells(&self) -> usize {
        self.nc / 2
    }

    /// `x` mapped into `[0, l)`.
    pub fn wrap(&self, x: f64) -> f64 {
        if (0.0..self.l).contains(&x) {
            return x;
        }
        let w = x - self.l * (x / self.l).floor();
        if w >= self.l || w < 0.0 { 0.0 } else { w }
    }

    /// Bins per side: the list build sorts particles into bins of half a cell (one column
    /// wide), so its stencil (5 bins per axis) covers less volume than 3 whole cells.
    pub(crate) fn bins(&self) -> usize {
        self.nc
    }

    /// The bin (per axis) holding an unwrapped position; its `x` is the column.
    pub(crate) fn bin_coords(&self, p: &[f64; 3]) -> [usize; 3] {
        let (nb, h) = (self.bins(), self.cs);
        let mut c = [0; 3];
        for d in 0..self.dim {
            c[d] = ((self.wrap(p[d]) / h) as usize).min(nb - 1);
        }
        c
    }

    /// The bin holding an unwrapped position, numbered column-major over the box (so a
    /// column's bins, and a region's, are one contiguous range).
    pub(crate) fn bin_index(&self, p: &[f64; 3]) -> usize {
        let (nb, c) = (self.bins(), self.bin_coords(p));
        c[..self.dim].iter().fold(0, |idx, &cd| idx * nb + cd)
    }

    /// The column (and bin, per axis) holding an unwrapped position.
    pub(crate) fn cell_coords(&self, p: &[f64; 3]) -> [usize; 3] {
        let mut c = [0; 3];
        for d in 0..self.dim {
            c[d] = ((self.wrap(p[d]) / self.cs) as usize).min(self.nc - 1);
        }
        c
    }
}

/// Particles and their velocities, indexed by particle id (`z` and `vz` empty in 2D).
#[derive(Debug, Clone, Default)]
pub struct Particles {
    /// x positions.
    pub x: Vec<f64>,
    /// y positions.
    pub y: Vec<f64>,
    /// z positions (empty in 2D).
    pub z: Vec<f64>,
    /// x velocities.
    pub vx: Vec<f64>,
    /// y velocities.
    pub vy: Vec<f64>,
    /// z velocities (empty in 2D).
    pub vz: Vec<f64>,
}

impl Particles {
    fn with_len(n: usize, dim: usize) -> Self {
        let z = if dim == 3 { n } else { 0 };
        Self {
            x: vec![0.0; n],
            y: vec![0.0; n],
            z: vec![0.0; z],
            vx: vec![0.0; n],
            vy: vec![0.0; n],
            vz: vec![0.0; z],
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

    /// Number of dimensions (2 or 3).
    pub fn dim(&self) -> usize {
        if self.z.len() == self.x.len() && !self.x.is_empty() {
            3
        } else {
            2
        }
    }

    /// The positions, one vector per axis (`z` empty in 2D).
    pub fn positions(&self) -> Axes {
        [self.x.clone(), self.y.clone(), self.z.clone()]
    }

    /// A hash of every position and velocity bit, in particle-id order (16 hex digits).
    pub fn state_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for i in 0..self.len() {
            let mut put = |v: f64| h.update(v.to_bits().to_le_bytes());
            put(self.x[i]);
            put(self.y[i]);
            if let Some(&z) = self.z.get(i) {
                put(z);
            }
            put(self.vx[i]);
            put(self.vy[i]);
            if let Some(&vz) = self.vz.get(i) {
                put(vz);
            }
        }
        let d = h.finalize();
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Places `setup.particles` particles on lattices and draws their velocities.
///
/// Uniform starts use a square lattice in 2D and an fcc lattice in 3D (LAMMPS's `bench/in.lj`:
/// 32 000 particles at density 0.8442 fill a 20 x 20 x 20 fcc box exactly).
pub fn initial_state(setup: &Setup, geom: &Geometry) -> Result<Particles> {
    use rand::{Rng, SeedableRng};
    let (n, dim) = (setup.particles, setup.dim);
    let mut p = Particles::with_len(n, dim);
    let sites = if setup.clustered {
        clustered_sites(n, dim, setup.density, geom.l)?
    } else if dim == 2 {
        let side = root_ceil(n, 2);
        let a = geom.l / side as f64;
        ensure_spacing(a, setup.density)?;
        lattice(side, a, 2)
    } else {
        fcc(n, geom.l, setup.density)?
    };
    for (i, s) in sites.into_iter().take(n).enumerate() {
        p.x[i] = s[0];
        p.y[i] = s[1];
        if dim == 3 {
            p.z[i] = s[2];
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(setup.seed);
    for i in 0..n {
        p.vx[i] = rng.random_range(-1.0..1.0);
        p.vy[i] = rng.random_range(-1.0..1.0);
        if dim == 3 {
            p.vz[i] = rng.random_range(-1.0..1.0);
        }
    }
    // No drift of the centre of mass, and kinetic energy = N * T * dim / 2.
    let mut ke = 0.0;
    for v in [&mut p.vx, &mut p.vy, &mut p.vz] {
        if v.is_empty() {
            continue;
        }
        let m = mean(v);
        v.iter_mut().for_each(|x| *x -= m);
        ke += v.iter().map(|x| 0.5 * x * x).sum::<f64>();
    }
    let scale = if ke > 0.0 {
        (n as f64 * setup.temperature * dim as f64 / 2.0 / ke).sqrt()
    } else {
        0.0
    };
    for v in [&mut p.vx, &mut p.vy, &mut p.vz] {
        v.iter_mut().for_each(|x| *x *= scale);
    }
    Ok(p)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The smallest `s` with `s^dim >= n`.
fn root_ceil(n: usize, dim: usize) -> usize {
    let mut s = (n as f64).powf(1.0 / dim as f64).round().max(1.0) as usize;
    while s.pow(dim as u32) < n {
        s += 1;
    }
    while s > 1 && (s - 1).pow(dim as u32) >= n {
        s -= 1;
    }
    s
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

/// `side^dim` sites with spacing `a`, starting at `a/2`, x fastest.
fn lattice(side: usize, a: f64, dim: usize) -> Vec<[f64; 3]> {
    let count = side.pow(dim as u32);
    (0..count)
        .map(|k| {
            let mut s = [0.0; 3];
            let mut k = k;
            for c in s.iter_mut().take(dim) {
                *c = ((k % side) as f64 + 0.5) * a;
                k /= side;
            }
            s
        })
        .collect()
}

/// An fcc lattice of `m^3` cubic cells (4 sites each) filling the box, `4 m^3 >= n`.
fn fcc(n: usize, l: f64, density: f64) -> Result<Vec<[f64; 3]>> {
    let m = root_ceil(n.div_ceil(4), 3);
    let a = l / m as f64;
    ensure_spacing(a / 2f64.sqrt(), density)?;
    let basis = [
        [0.0, 0.0, 0.0],
        [0.5, 0.5, 0.0],
        [0.5, 0.0, 0.5],
        [0.0, 0.5, 0.5],
    ];
    let mut s = Vec::with_capacity(4 * m * m * m);
    for k in 0..m {
        for j in 0..m {
            for i in 0..m {
                for b in &basis {
                    let c = [i as f64, j as f64, k as f64];
                    s.push(std::array::from_fn(|d| (c[d] + b[d] + 0.25) * a));
                }
            }
        }
    }
    Ok(s)
}

/// 80% of the particles on a simple lattice filling a corner square (cube) of 20% of the box;
/// the rest on a coarser lattice over the remaining box, at least one unit from the cluster.
fn clustered_sites(n: usize, dim: usize, density: f64, l: f64) -> Result<Vec<[f64; 3]>> {
    let nc = ((n as f64) * CLUSTER_SHARE).round() as usize;
    let ng = n - nc;
    let s = CLUSTER_AREA.powf(1.0 / dim as f64) * l;
    let side = root_ceil(nc.max(1), dim);
    let a = s / side as f64;
    if a < MIN_SPACING {
        bail!(
            "density {density} is too high to place the particles with --clustered: the cluster \
             holds {:.0}% of them in {:.0}% of the box, so its lattice spacing would be {a:.3}, \
             below the minimum {MIN_SPACING}; use a density of at most {:.2}",
            CLUSTER_SHARE * 100.0,
            CLUSTER_AREA * 100.0,
            max_clustered_density(dim)
        );
    }
    let mut sites = lattice(side, a, dim);
    sites.truncate(nc);
    if ng == 0 {
        return Ok(sites);
    }
    // Distance from a point to the cluster [0, s]^dim, with periodic images.
    let gap = |x: f64| {
        if x <= s { 0.0 } else { (x - s).min(l - x) }
    };
    let margin = 1.0;
    let free = l.powi(dim as i32) - (s + 2.0 * margin).powi(dim as i32);
    let mut ag = (free / ng as f64).powf(1.0 / dim as f64);
    loop {
        let side = (l / ag).floor() as usize;
        let step = l / side as f64;
        let gas: Vec<[f64; 3]> = lattice(side, step, dim)
            .into_iter()
            .filter(|p| p.iter().take(dim).map(|&x| gap(x).powi(2)).sum::<f64>() >= margin * margin)
            .take(ng)
            .collect();
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
pub fn max_clustered_density(dim: usize) -> f64 {
    CLUSTER_AREA / CLUSTER_SHARE / MIN_SPACING.powi(dim as i32) * 0.97
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
    /// Rebalance every this many steps (the borders move at the next list build).
    pub rebalance_every: usize,
    /// Compute each pair across a region border once, by the region on its left, in two
    /// phases per step (forces, then the exchange of border forces and the integration);
    /// otherwise both regions compute it, in one phase.
    pub border_once: bool,
}

/// When the neighbour lists are rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuild {
    /// When any particle has moved more than half the skin since the last build.
    OnDisplacement,
    /// Every this many steps, unchecked (LAMMPS's `neigh_modify every N check no`).
    Every(usize),
}

/// What one round measured.
#[derive(Debug, Clone)]
pub struct RoundRecord {
    /// Total kinetic energy.
    pub ke: f64,
    /// Total potential energy.
    pub pe: f64,
    /// Total momentum (`z` zero in 2D).
    pub p: [f64; 3],
    /// Load per region with the borders actually used.
    pub work: Vec<u64>,
    /// Load per region had the borders stayed at equal widths.
    pub work_equal: Vec<u64>,
    /// Task wall time per region, nanoseconds.
    pub nanos: Vec<u64>,
    /// Whether the borders had been moved by load before this round.
    pub balanced: bool,
    /// Whether the neighbour lists were built in this round.
    pub rebuilt: bool,
    /// Whether this round computed the potential energy (`pe` is zero otherwise).
    pub energy: bool,
    /// Pairs in all neighbour lists.
    pub pairs: usize,
}

/// Everything a finished run knows.
#[derive(Debug)]
pub struct RunResult {
    /// One record per round (`steps + 1`: times 0..=steps).
    pub rounds: Vec<RoundRecord>,
    /// Final positions (wrapped into the box) and velocities, by particle id.
    pub final_state: Particles,
    /// The region whose columns hold each particle at the end, by particle id.
    pub final_region: Vec<usize>,
    /// Borders used in the last round.
    pub final_borders: Vec<usize>,
    /// Number of neighbour-list builds (the first included).
    pub rebuilds: usize,
    /// Region tasks submitted: one per region per round, a second per region per step with
    /// border pairs once, and one more per region before every rebuild after the first
    /// unless the schedule is fixed ([`Rebuild::Every`]: the tasks before find the bins).
    pub tasks: u64,
    /// Wall time of the step loop, seconds: steps 1 to `steps`, like LAMMPS's "Loop time".
    pub seconds: f64,
    /// Wall time of the set-up round (sorting, the first list build and the forces at time
    /// 0), which LAMMPS does before its loop, seconds.
    pub setup_seconds: f64,
}

/// All particles in one set of vectors (in region order, or id order at the start).
#[derive(Debug, Default)]
struct Flat {
    id: Vec<u32>,
    x: Axes,
    v: Axes,
}

/// Every particle of the regions, in region order, with positions from `snap`.
fn gather(regions: &mut [RegionState], snap: &Snapshot, dim: usize) -> Flat {
    let n: usize = regions.iter().map(RegionState::len).sum();
    let mut f = Flat::default();
    f.id.reserve(n);
    for (r, st) in regions.iter_mut().enumerate() {
        f.id.append(&mut st.id);
        for d in 0..dim {
            f.x[d].extend_from_slice(&snap[r][d]);
            f.v[d].append(&mut st.v[d]);
        }
    }
    f
}

/// Sorts the particles by bin (a stable counting sort over the previous regions in order,
/// from each particle's bin) and names the new regions at `borders`: the next round's tasks
/// take their particles from the result. `from` holds each previous region's ids and
/// velocities, `bins` the bins of its particles.
fn sort(
    geom: &Geometry,
    borders: &[usize],
    once: bool,
    bins: &[Vec<u32>],
    from: Vec<(Vec<u32>, Axes)>,
) -> Moved {
    let nc = geom.nc;
    let per_col = geom.cells_per_column();
    let mut start = vec![0u32; nc * per_col + 1];
    for b in bins.iter().flatten() {
        start[*b as usize + 1] += 1;
    }
    for c in 0..nc * per_col {
        start[c + 1] += start[c];
    }
    let n = start[nc * per_col] as usize;
    let col_start = (0..=nc).map(|c| start[c * per_col]).collect();
    let mut order = vec![(0u32, 0u32); n];
    for (q, bq) in bins.iter().enumerate() {
        for (k, &b) in bq.iter().enumerate() {
            let slot = &mut start[b as usize];
            order[*slot as usize] = (q as u32, k as u32);
            *slot += 1;
        }
    }
    let mut region_of_col = vec![0u32; nc];
    for r in 0..borders.len() - 1 {
        region_of_col[borders[r]..borders[r + 1]].fill(r as u32);
    }
    Moved {
        order,
        col_start,
        borders: borders.to_vec(),
        region_of_col,
        from,
        once,
    }
}

/// [`sort`] for particles by id (the start of a run, and the tests), computing the bins here.
fn sort_particles(
    geom: &Geometry,
    borders: &[usize],
    once: bool,
    p: &Particles,
) -> (Moved, Snapshot) {
    let x = p.positions();
    let bins: Vec<u32> = (0..p.len())
        .map(|i| {
            let q = std::array::from_fn(|d| if d < geom.dim { x[d][i] } else { 0.0 });
            geom.bin_index(&q) as u32
        })
        .collect();
    let from = vec![(
        (0..p.len() as u32).collect(),
        [p.vx.clone(), p.vy.clone(), p.vz.clone()],
    )];
    (sort(geom, borders, once, &[bins], from), Arc::new(vec![x]))
}

/// Forces on every particle of `p` (by id) from neighbour lists built over the regions at
/// `borders`, in the tasks' fixed point: for tests against
/// [`reference_forces`](super::kernel::reference_forces).
pub fn list_forces(
    geom: &Arc<Geometry>,
    p: &Particles,
    borders: &[usize],
    border_once: bool,
) -> Result<Vec<[i64; 3]>> {
    let once = border_once && borders.len() > 2;
    let (moved, snap) = sort_particles(geom, borders, once, p);
    super::kernel::list_forces(geom, moved, &snap)
}

/// Runs `steps` velocity-Verlet steps from `init`, one task per region per step on `runner`.
///
/// `progress` is called after every round with the round index.
#[allow(clippy::too_many_arguments)] // the run's knobs, each named at the one call site
pub fn run(
    geom: Arc<Geometry>,
    init: &Particles,
    steps: usize,
    dt: f64,
    dec: &Decomposition,
    rebuild_rule: Rebuild,
    runner: &dyn RegionRunner,
    mut progress: impl FnMut(usize),
) -> Result<RunResult> {
    let (nc, dim) = (geom.nc, geom.dim);
    ensure!(dec.regions >= 1, "--regions must be at least 1");
    // At most one region per cell column (two columns): balancing may still give a region
    // a single column, its halo is two columns wide either way.
    let cells = geom.cells();
    ensure!(
        dec.regions <= cells,
        "--regions {} is more than the {cells} cell columns of this box; use at most {cells}",
        dec.regions
    );
    let equal = equal_borders(nc, dec.regions);
    let mut borders = equal.clone();
    let mut pending: Option<Vec<usize>> = None;
    let mut balanced = false;
    let half_skin2 = (geom.skin / 2.0).powi(2);
    let mut rounds = Vec::with_capacity(steps + 1);
    let started = Instant::now();
    let mut setup_seconds = 0.0;
    // One region has no border: nothing to exchange.
    let once = dec.border_once && dec.regions > 1;
    // The first round's tasks take their particles from the sorted initial state.
    let (first, mut snap) = sort_particles(&geom, &borders, once, init);
    let mut moved = Some(Arc::new(first));
    let mut regions: Vec<RegionState> = (0..dec.regions).map(|_| RegionState::default()).collect();
    // Ids and velocities of the layout before the last rebuild, reused at the next.
    let mut moved_spare: Vec<(Vec<u32>, Axes)> = Vec::new();
    let mut bins_spare: Vec<Vec<u32>> = Vec::new();
    let mut halo_spare: Vec<Vec<[i64; 3]>> = Vec::new();
    let mut rebuild = true;
    let mut rebuilds = 0;
    let mut tasks = 0u64;
    let mut since_build = 0;
    let mut spare: Vec<Axes> = Vec::new();
    for round in 0..=steps {
        // With a fixed schedule the tasks know when the next round rebuilds, and find the
        // bins of their new positions as they integrate.
        let bins_after = round < steps
            && match rebuild_rule {
                Rebuild::OnDisplacement => false,
                Rebuild::Every(n) => (if rebuild { 1 } else { since_build + 1 }) >= n.max(1),
            };
        let mut job = |r: usize, state: RegionState, phase: Phase, halo_buf| RegionJob {
            moved: if matches!(phase, Phase::Finish(_)) {
                None
            } else {
                moved.clone()
            },
            bins_after: bins_after && !matches!(phase, Phase::Forces),
            bins: if bins_after && !matches!(phase, Phase::Forces) {
                bins_spare.pop().unwrap_or_default()
            } else {
                Vec::new()
            },
            prev: snap.clone(),
            region: r,
            state,
            out: Axes::default(),
            geom: geom.clone(),
            dt,
            rebuild,
            finish_kick: round > 0,
            advance: round < steps,
            energy: round % ENERGY_EVERY == 0 || round == steps,
            phase,
            halo_buf,
        };
        let outs = if once {
            let jobs = regions
                .into_iter()
                .enumerate()
                .map(|(r, state)| {
                    job(
                        r,
                        state,
                        Phase::Forces,
                        halo_spare.pop().unwrap_or_default(),
                    )
                })
                .collect();
            let firsts = runner
                .run_round(jobs)
                .with_context(|| format!("step {round} of {steps} failed"))?;
            ensure!(
                firsts.len() == dec.regions,
                "the runner returned {} results for {} regions",
                firsts.len(),
                dec.regions
            );
            let mut halos = Vec::with_capacity(firsts.len());
            let mut jobs = Vec::with_capacity(firsts.len());
            let mut first_nanos = Vec::with_capacity(firsts.len());
            for o in firsts {
                halos.push(HaloForces {
                    halo: o.state.halo.clone(),
                    force: o.halo_force,
                });
                first_nanos.push(o.nanos);
                jobs.push(o.state);
            }
            let halos = Arc::new(halos);
            let jobs = jobs
                .into_iter()
                .enumerate()
                .map(|(r, state)| {
                    let mut j = job(r, state, Phase::Finish(halos.clone()), Vec::new());
                    j.out = spare.pop().unwrap_or_default();
                    j
                })
                .collect();
            let mut outs = runner
                .run_round(jobs)
                .with_context(|| format!("step {round} of {steps} failed"))?;
            // Every task has dropped its share by now: the buffers go round again.
            if let Ok(halos) = Arc::try_unwrap(halos) {
                halo_spare.extend(halos.into_iter().map(|h| h.force));
            }
            for (o, n) in outs.iter_mut().zip(first_nanos) {
                o.nanos += n;
            }
            outs
        } else {
            let jobs = regions
                .into_iter()
                .enumerate()
                .map(|(r, state)| {
                    let mut j = job(r, state, Phase::Whole, Vec::new());
                    j.out = spare.pop().unwrap_or_default();
                    j
                })
                .collect();
            runner
                .run_round(jobs)
                .with_context(|| format!("step {round} of {steps} failed"))?
        };
        ensure!(
            outs.len() == dec.regions,
            "the runner returned {} results for {} regions",
            outs.len(),
            dec.regions
        );
        let col_work: Vec<u64> = outs
            .iter()
            .flat_map(|o| o.col_work.iter().copied())
            .collect();
        let mut p = [0.0; 3];
        for o in &outs {
            for (pd, od) in p.iter_mut().zip(o.p) {
                *pd += od;
            }
        }
        rounds.push(RoundRecord {
            ke: outs.iter().map(|o| o.ke).sum(),
            pe: outs.iter().map(|o| o.pe).sum(),
            p,
            work: region_work(&col_work, &borders),
            work_equal: region_work(&col_work, &equal),
            nanos: outs.iter().map(|o| o.nanos).collect(),
            balanced,
            rebuilt: rebuild,
            energy: round % ENERGY_EVERY == 0 || round == steps,
            pairs: outs.iter().map(|o| o.pairs).sum(),
        });
        rebuilds += usize::from(rebuild);
        tasks += (dec.regions * if once { 2 } else { 1 }) as u64;
        let max_disp2 = outs.iter().map(|o| o.max_disp2).fold(0.0, f64::max);
        let mut xs = Vec::with_capacity(outs.len());
        let mut ready_bins = Vec::with_capacity(outs.len());
        regions = Vec::with_capacity(outs.len());
        for o in outs {
            xs.push(o.x);
            regions.push(o.state);
            if bins_after {
                ready_bins.push(o.bins);
            }
        }
        let old = std::mem::replace(&mut snap, Arc::new(xs));
        spare = Arc::try_unwrap(old).unwrap_or_default();
        if let Some(m) = moved.take().and_then(|m| Arc::try_unwrap(m).ok()) {
            moved_spare = m.from;
        }
        progress(round);
        if round == 0 {
            setup_seconds = started.elapsed().as_secs_f64();
        }
        if round == steps {
            break;
        }
        since_build = if rebuild { 1 } else { since_build + 1 };
        // Rebalance as soon as the first step has measured the load, then every few steps;
        // the borders move at the next build.
        let due = round == 0 || (round + 1) % dec.rebalance_every.max(1) == 0;
        if dec.balance && dec.regions > 1 && due {
            pending = Some(balanced_borders(&col_work, dec.regions));
        }
        rebuild = match rebuild_rule {
            Rebuild::OnDisplacement => max_disp2 > half_skin2,
            Rebuild::Every(n) => since_build >= n.max(1),
        };
        if rebuild {
            if let Some(b) = pending.take() {
                borders = b;
                balanced = true;
            }
            // Each region finds the bins of its particles (in parallel: as it integrated,
            // when the schedule said so, else in a round of its own); the counting sort over
            // them is all the step loop does itself, and the next round's tasks take their
            // new particles from its result.
            let (states, bins) = if bins_after {
                (std::mem::take(&mut regions), ready_bins)
            } else {
                let jobs = regions
                    .into_iter()
                    .enumerate()
                    .map(|(r, state)| RegionJob {
                        prev: snap.clone(),
                        region: r,
                        state,
                        out: Axes::default(),
                        geom: geom.clone(),
                        dt,
                        rebuild: false,
                        finish_kick: false,
                        advance: false,
                        energy: false,
                        phase: Phase::Bins,
                        halo_buf: Vec::new(),
                        bins: bins_spare.pop().unwrap_or_default(),
                        moved: None,
                        bins_after: false,
                    })
                    .collect();
                let outs = runner
                    .run_round(jobs)
                    .with_context(|| format!("sorting after step {round} of {steps} failed"))?;
                tasks += dec.regions as u64;
                ensure!(
                    outs.len() == dec.regions,
                    "the runner returned {} results for {} regions",
                    outs.len(),
                    dec.regions
                );
                outs.into_iter().map(|o| (o.state, o.bins)).unzip()
            };
            let mut from = Vec::with_capacity(states.len());
            regions = Vec::with_capacity(states.len());
            for mut st in states {
                let (mut id, mut v) = moved_spare.pop().unwrap_or_default();
                std::mem::swap(&mut st.id, &mut id);
                std::mem::swap(&mut st.v, &mut v);
                from.push((id, v));
                regions.push(st);
            }
            moved = Some(Arc::new(sort(&geom, &borders, once, &bins, from)));
            bins_spare = bins;
        }
    }
    let seconds = started.elapsed().as_secs_f64() - setup_seconds;
    let flat = gather(&mut regions, &snap, dim);
    let n = init.len();
    let mut final_state = Particles::with_len(n, dim);
    let mut final_region = vec![usize::MAX; n];
    let mut region_of_col = vec![0; nc];
    for r in 0..dec.regions {
        region_of_col[borders[r]..borders[r + 1]].fill(r);
    }
    for (k, &id) in flat.id.iter().enumerate() {
        let i = id as usize;
        ensure!(
            final_region[i] == usize::MAX,
            "particle {i} was found in two regions"
        );
        let x = [
            geom.wrap(flat.x[0][k]),
            geom.wrap(flat.x[1][k]),
            if dim == 3 {
                geom.wrap(flat.x[2][k])
            } else {
                0.0
            },
        ];
        final_state.x[i] = x[0];
        final_state.y[i] = x[1];
        final_state.vx[i] = flat.v[0][k];
        final_state.vy[i] = flat.v[1][k];
        if dim == 3 {
            final_state.z[i] = x[2];
            final_state.vz[i] = flat.v[2][k];
        }
        final_region[i] = region_of_col[geom.cell_coords(&x)[0]];
    }
    if let Some(lost) = final_region.iter().position(|&r| r == usize::MAX) {
        bail!("particle {lost} was lost between regions");
    }
    Ok(RunResult {
        rounds,
        final_state,
        final_region,
        final_borders: borders,
        rebuilds,
        tasks,
        seconds,
        setup_seconds,
    })
}
