//! The region task: Verlet neighbour lists, half-pair Lennard-Jones forces summed in fixed
//! point, and the velocity-Verlet update of the region's own particles.
//!
//! # Why fixed point
//!
//! Each pair is computed once (Newton's third law): the pair's force is added to one particle
//! and subtracted from the other. In floating point the total on a particle would then depend
//! on the order its contributions arrive in, which depends on how the box is cut into regions.
//! Every pair contribution is therefore rounded to an integer multiple of `2^-30` (after being
//! computed in `f64`) and summed in `i64`: integer addition is associative, so the force on a
//! particle is bit for bit the same whichever region computes a pair, in whatever order, and
//! whether a pair crossing a region border is computed on one side or on both. The rounding is
//! symmetric (`fix(-v) = -fix(v)`), so pair contributions cancel exactly and the total force
//! is exactly zero.
//!
//! # Periodic images without wrapping
//!
//! Positions are never wrapped during a run. A pair's displacement is `(x_i - x_j) + s` where
//! `s` is a whole number of box lengths fixed when the list is built (zero for most pairs,
//! which go to a separate, plain list). That expression is exactly antisymmetric, and since
//! no position is ever rewritten, rebuilding the lists (or moving region borders) at any step
//! changes nothing in the trajectory: the result depends only on which pairs are within the
//! cutoff, and every list holds all of them.

use super::sim::{CELL_COST, Geometry, PARTICLE_COST};
use anyhow::{Result, bail};
use std::sync::Arc;
use std::time::Instant;

/// Scale of the fixed-point force accumulators: contributions are rounded to `2^-30`.
const FIX_SCALE: f64 = (1u64 << 30) as f64;
const FIX_INV: f64 = 1.0 / FIX_SCALE;
/// `1.5 * 2^52`: adding it to `|v| < 2^51` leaves `round(v)` in the low mantissa bits.
const MAGIC: f64 = 6_755_399_441_055_744.0;
const MAGIC_BITS: i64 = 0x4338_0000_0000_0000;

/// Pairs closer than this (squared) mean the run blew up; it also keeps every scaled pair
/// contribution far below the `2^51` the rounding trick allows.
const MIN_R2: f64 = 0.25;

/// `v` rounded to the nearest integer (ties to even), for `|v| < 2^51`; exactly odd.
#[inline(always)]
fn fix(v: f64) -> i64 {
    // Wrapping: out of range (a blown-up run, refused right after) must not panic; the sum
    // stays associative either way.
    ((v + MAGIC).to_bits() as i64).wrapping_sub(MAGIC_BITS)
}

/// Positions (or velocities) of a set of particles, one vector per axis (`z` empty in 2D).
pub type Axes = [Vec<f64>; 3];

/// Every region's positions at one time, in region order; read-only, shared by the round's
/// tasks.
pub type Snapshot = Arc<Vec<Axes>>;

/// A half neighbour list over a region's own particles, in compressed rows.
///
/// Own-own pairs appear once (at the particle that comes first), own-halo pairs once at the
/// own particle. Pairs that need a periodic image go to the shifted list with their shift.
#[derive(Debug, Clone, Default)]
pub(crate) struct NeighbourList {
    start: Vec<u32>,
    j: Vec<u32>,
    sstart: Vec<u32>,
    sj: Vec<u32>,
    shift: Vec<[f64; 3]>,
}

impl NeighbourList {
    fn pairs(&self) -> usize {
        self.j.len() + self.sj.len()
    }
}

/// What a region keeps between rounds (moved into its task and back).
#[derive(Debug, Default)]
pub struct RegionState {
    /// First column the region owns.
    pub(crate) a: usize,
    /// One past the last column it owns.
    pub(crate) b: usize,
    /// Particle ids of the own particles, in cell order as of the last build.
    pub(crate) id: Vec<u32>,
    /// Own velocities.
    pub(crate) v: Axes,
    /// Own positions at the last build (for the displacement check).
    pub(crate) x0: Axes,
    /// Column of each own particle at the last build (for the load per column).
    pub(crate) col: Vec<u32>,
    /// Where each halo particle lives in the snapshot: (region, index). Shared with the
    /// other regions' finishing tasks, which add the forces found on it to their particles.
    pub(crate) halo: Arc<Vec<(u32, u32)>>,
    /// Whether each border pair is listed by one region only (the one on its left; the
    /// halo then holds only the columns to the right, unless the window is the whole box),
    /// so a step takes two phases: [`Phase::Forces`] then [`Phase::Finish`].
    pub(crate) once: bool,
    pub(crate) list: NeighbourList,
    /// Load per own column, from the last build.
    pub(crate) col_work: Vec<u64>,
    // Scratch reused from round to round.
    pub(crate) pos: Vec<[f64; 3]>,
    pub(crate) force: Vec<[i64; 3]>,
    pub(crate) weight: Vec<f64>,
    /// The potential energy and the load of the last [`Phase::Forces`], for its
    /// [`Phase::Finish`] to report.
    pending_pe: f64,
    disp: Vec<f64>,
    /// The list build's scratch (reused: fresh buffers cost page faults at every build).
    scratch: BuildScratch,
}

/// Buffers the list build reuses from build to build.
#[derive(Debug, Default)]
pub(crate) struct BuildScratch {
    /// Wrapped coordinates in bin order.
    wx: [Vec<f64>; 3],
    /// Candidate slots of the current particle.
    cand: Vec<u32>,
}

impl RegionState {
    /// Number of own particles.
    pub fn len(&self) -> usize {
        self.id.len()
    }

    /// Whether the region owns no particle.
    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }
}

/// Which part of a step a region task runs.
#[derive(Debug, Clone, Default)]
pub enum Phase {
    /// The whole step in one task: a pair across a region border is computed by both
    /// regions, each keeping its own side.
    #[default]
    Whole,
    /// The forces only: each border pair is computed once, by one region, which hands the
    /// forces it found on its halo particles back in [`RegionOut::halo_force`].
    Forces,
    /// Adds the forces the other regions found on this region's particles (every region's
    /// halo forces from the [`Phase::Forces`] round, by region), then integrates.
    Finish(Arc<Vec<HaloForces>>),
    /// Before a rebuild: only the bin of each own particle (column-major over the box), in
    /// [`RegionOut::bins`], for the step loop's counting sort.
    Bins,
}

/// Every particle in bin order after a rebuild's counting sort, and where it was before:
/// each task of the round after a rebuild takes its own particles and its halo from here,
/// so the cut into regions runs in parallel.
#[derive(Debug, Default)]
pub struct Moved {
    /// (region, index) in the previous layout of each particle, in bin order (column-major,
    /// so each column, and each region, is one contiguous range).
    pub(crate) order: Vec<(u32, u32)>,
    /// Where each column starts in `order` (columns + 1 entries).
    pub(crate) col_start: Vec<u32>,
    /// The new borders.
    pub(crate) borders: Vec<usize>,
    /// The new region of each column.
    pub(crate) region_of_col: Vec<u32>,
    /// Each previous region's particle ids and velocities.
    pub(crate) from: Vec<(Vec<u32>, Axes)>,
    /// Whether border pairs are listed once (no left halo then, see [`RegionState`]).
    pub(crate) once: bool,
}

/// The forces one region's [`Phase::Forces`] task found on its halo particles.
#[derive(Debug, Default)]
pub struct HaloForces {
    /// Where each halo particle lives: (region, index), as in the region's state.
    pub(crate) halo: Arc<Vec<(u32, u32)>>,
    /// The force on each halo particle, in fixed point.
    pub(crate) force: Vec<[i64; 3]>,
}

/// One region's work for one round: everything a task needs, owned or shared read-only.
#[derive(Debug)]
pub struct RegionJob {
    /// Every region's positions at the round's time.
    pub prev: Snapshot,
    /// This region's index in the snapshot.
    pub region: usize,
    /// The region's own state.
    pub state: RegionState,
    /// A buffer to write the region's next positions into (its contents are overwritten).
    pub out: Axes,
    /// The box geometry.
    pub geom: Arc<Geometry>,
    /// Time step.
    pub dt: f64,
    /// Build the neighbour list before computing forces.
    pub rebuild: bool,
    /// Complete the previous step's kick (`false` only in the first round).
    pub finish_kick: bool,
    /// Kick and drift to the next step (`false` in the last round).
    pub advance: bool,
    /// Compute the potential energy (forces alone are cheaper).
    pub energy: bool,
    /// Which part of the step to run.
    pub phase: Phase,
    /// A buffer for the halo forces of a [`Phase::Forces`] task (its contents are
    /// overwritten).
    pub halo_buf: Vec<[i64; 3]>,
    /// A buffer for the bins of a [`Phase::Bins`] task (its contents are overwritten).
    pub bins: Vec<u32>,
    /// Right after a rebuild's sort: where the region's new particles are; `prev` then holds
    /// the positions in the previous layout.
    pub moved: Option<Arc<Moved>>,
    /// The next round rebuilds (known ahead with `Rebuild::Every`): also return the bins of
    /// the new positions, as [`Phase::Bins`] would, saving that round.
    pub bins_after: bool,
}

/// What a region task hands back.
#[derive(Debug)]
pub struct RegionOut {
    /// The region's state, for the next round.
    pub state: RegionState,
    /// Own positions after the round (at `t + dt`, or `t` in the last round).
    pub x: Axes,
    /// Kinetic energy at the round's time.
    pub ke: f64,
    /// Potential energy at the round's time (own-own pairs in full, own-halo pairs half);
    /// zero unless the job asked for it.
    pub pe: f64,
    /// Momentum at the round's time.
    pub p: [f64; 3],
    /// Load per own column: neighbour pairs + `PARTICLE_COST` per particle + `CELL_COST` per
    /// cell.
    pub col_work: Vec<u64>,
    /// Particles the region owned.
    pub particles: usize,
    /// Largest squared distance an own particle has moved since the last build.
    pub max_disp2: f64,
    /// Pairs in the region's neighbour list.
    pub pairs: usize,
    /// Wall time the task took, in nanoseconds.
    pub nanos: u64,
    /// After [`Phase::Forces`]: the forces found on the halo particles, in halo order.
    pub halo_force: Vec<[i64; 3]>,
    /// After [`Phase::Bins`]: the bin of each own particle.
    pub bins: Vec<u32>,
}

impl RegionOut {
    /// The output of a round that stops before the integration (the bins round, or the
    /// forces phase of border pairs once): no energies, no movement.
    fn midway(
        state: RegionState,
        particles: usize,
        x: Axes,
        start: Instant,
        halo_force: Vec<[i64; 3]>,
        bins: Vec<u32>,
    ) -> Self {
        RegionOut {
            col_work: state.col_work.clone(),
            particles,
            pairs: state.list.pairs(),
            state,
            x,
            ke: 0.0,
            pe: 0.0,
            p: [0.0; 3],
            max_disp2: 0.0,
            nanos: start.elapsed().as_nanos() as u64,
            halo_force,
            bins,
        }
    }
}

impl RegionJob {
    /// Runs the region's part of a velocity-Verlet step.
    ///
    /// Copies its own and its halo's positions at `t` out of the snapshot, (re)builds the
    /// list if asked, computes forces on its own particles, finishes the previous kick
    /// (`v(t) = v(t-dt/2) + f dt/2`), records energy and momentum at `t`, then kicks and
    /// drifts (`v(t+dt/2) = v(t) + f dt/2`, `x(t+dt) = x(t) + v(t+dt/2) dt`).
    pub fn run(self) -> Result<RegionOut> {
        match self.geom.dim {
            2 => self.run_dim::<2>(),
            _ => self.run_dim::<3>(),
        }
    }

    fn run_dim<const D: usize>(self) -> Result<RegionOut> {
        let start = Instant::now();
        let RegionJob {
            prev,
            region,
            mut state,
            mut out,
            geom,
            dt,
            rebuild,
            finish_kick,
            advance,
            energy,
            phase,
            mut halo_buf,
            mut bins,
            moved,
            bins_after,
        } = self;
        if let Phase::Bins = phase {
            let own = &prev[region];
            bins.clear();
            bins.extend((0..state.id.len()).map(|i| {
                let mut p = [0.0; 3];
                for d in 0..D {
                    p[d] = own[d][i];
                }
                geom.bin_index(&p) as u32
            }));
            let particles = state.id.len();
            return Ok(RegionOut::midway(
                state, particles, out, start, halo_buf, bins,
            ));
        }
        if let Some(m) = &moved {
            state.take_from::<D>(m, &prev, region, geom.nc);
        }
        let n = state.id.len();
        let pe = if let Phase::Finish(halos) = &phase {
            // The forces the other regions found on this region's particles; integer sums,
            // so the order they are added in does not matter.
            let force = &mut state.force[..n];
            for (q, h) in halos.iter().enumerate() {
                if q == region {
                    continue;
                }
                for (&(src, k), f) in h.halo.iter().zip(&h.force) {
                    if src as usize == region {
                        let fi = &mut force[k as usize];
                        for d in 0..D {
                            fi[d] = fi[d].wrapping_add(f[d]);
                        }
                    }
                }
            }
            state.pending_pe
        } else {
            let copy = moved.is_none();
            state.forces::<D>(&prev[..], region, &geom, copy, rebuild, energy)?
        };
        if let Phase::Forces = phase {
            state.pending_pe = pe;
            halo_buf.clear();
            halo_buf.extend_from_slice(&state.force[n..]);
            return Ok(RegionOut::midway(state, n, out, start, halo_buf, bins));
        }

        // Integrate the own particles, one axis at a time (plain loops over contiguous
        // arrays; the squared displacements add up across axes in `disp`).
        let half_dt = 0.5 * dt;
        let (mut ke, mut p) = (0.0, [0.0; 3]);
        state.disp.clear();
        state.disp.resize(n, 0.0);
        for (d, o) in out.iter_mut().enumerate() {
            o.clear();
            if d >= D {
                continue;
            }
            o.resize(n, 0.0);
            let (v, x0) = (&mut state.v[d][..n], &state.x0[d][..n]);
            let (force, pos, disp) = (&state.force[..n], &state.pos[..n], &mut state.disp[..n]);
            let (mut ke_d, mut p_d) = (0.0, 0.0);
            for i in 0..n {
                let f = force[i][d] as f64 * FIX_INV;
                let mut vi = v[i];
                if finish_kick {
                    vi += f * half_dt;
                }
                ke_d += 0.5 * vi * vi;
                p_d += vi;
                let mut xi = pos[i][d];
                if advance {
                    vi += f * half_dt;
                    xi += vi * dt;
                }
                v[i] = vi;
                o[i] = xi;
                let s = xi - x0[i];
                disp[i] += s * s;
            }
            ke += ke_d;
            p[d] = p_d;
        }
        let max_disp2 = state.disp.iter().copied().fold(0.0, f64::max);
        if let Some(i) = state.disp.iter().position(|d| !d.is_finite()) {
            bail!(
                "the simulation blew up (particle {} has a non-finite position); use a smaller --dt",
                state.id[i]
            );
        }
        bins.clear();
        if bins_after {
            bins.extend((0..n).map(|i| {
                let mut p = [0.0; 3];
                for d in 0..D {
                    p[d] = out[d][i];
                }
                geom.bin_index(&p) as u32
            }));
        }
        Ok(RegionOut {
            col_work: state.col_work.clone(),
            particles: n,
            pairs: state.list.pairs(),
            state,
            x: out,
            ke,
            pe,
            p,
            max_disp2,
            nanos: start.elapsed().as_nanos() as u64,
            halo_force: halo_buf,
            bins,
        })
    }
}

impl RegionState {
    /// Takes the region's particles (ids, velocities, positions, columns) and its halo from
    /// a rebuild's sort; `prev` holds the positions in the previous layout.
    fn take_from<const D: usize>(&mut self, m: &Moved, prev: &[Axes], region: usize, nc: usize) {
        let (a, b) = (m.borders[region], m.borders[region + 1]);
        let cs = |c: usize| m.col_start[c] as usize;
        let own = &m.order[cs(a)..cs(b)];
        let at = |&(q, k): &(u32, u32)| {
            let (q, k) = (q as usize, k as usize);
            let mut p = [0.0; 3];
            for d in 0..D {
                p[d] = prev[q][d][k];
            }
            p
        };
        self.a = a;
        self.b = b;
        self.id.clear();
        self.id
            .extend(own.iter().map(|&(q, k)| m.from[q as usize].0[k as usize]));
        for (d, (v, x0)) in self.v.iter_mut().zip(&mut self.x0).enumerate().take(D) {
            v.clear();
            v.extend(
                own.iter()
                    .map(|&(q, k)| m.from[q as usize].1[d][k as usize]),
            );
            x0.clear();
            x0.extend(own.iter().map(|&(q, k)| prev[q as usize][d][k as usize]));
        }
        self.col.clear();
        for col in a..b {
            self.col
                .extend(std::iter::repeat_n(col as u32, cs(col + 1) - cs(col)));
        }
        self.pos.clear();
        self.pos.extend(own.iter().map(at));
        let mut halo = Arc::try_unwrap(std::mem::take(&mut self.halo)).unwrap_or_default();
        halo.clear();
        let (ws, wl) = window(a, b, nc);
        // With border pairs listed once (by the region on the left), a window short of the
        // whole box needs no halo on the left.
        let first = if m.once && wl < nc { 2 } else { 0 };
        for p in first..wl {
            let col = (ws + p) % nc;
            if (a..b).contains(&col) {
                continue;
            }
            let src = m.region_of_col[col] as usize;
            let base = cs(m.borders[src]);
            for g in cs(col)..cs(col + 1) {
                halo.push((src as u32, (g - base) as u32));
                self.pos.push(at(&m.order[g]));
            }
        }
        self.halo = Arc::new(halo);
        self.once = m.once;
    }

    /// Copies the own and the halo positions out of the snapshot `prev`, rebuilds the list
    /// if asked, and computes the forces on the own and the halo particles into `force`;
    /// returns the potential energy (when `energy`, else 0).
    #[allow(clippy::too_many_arguments)] // the round's flags, each named at the call
    fn forces<const D: usize>(
        &mut self,
        prev: &[Axes],
        region: usize,
        geom: &Geometry,
        copy: bool,
        rebuild: bool,
        energy: bool,
    ) -> Result<f64> {
        let state = self;
        let n = state.id.len();
        let total = n + state.halo.len();
        // The kernel's copy of the positions: own particles first, then the halo; one
        // [f64; 3] per particle, since each neighbour visit reads all its coordinates.
        // (Right after a rebuild's sort, `take_from` has made it.)
        if copy {
            let own = &prev[region];
            state.pos.clear();
            state.pos.extend((0..n).map(|i| {
                let mut p = [0.0; 3];
                for d in 0..D {
                    p[d] = own[d][i];
                }
                p
            }));
            state.pos.extend(state.halo.iter().map(|&(r, k)| {
                let (src, k) = (&prev[r as usize], k as usize);
                let mut p = [0.0; 3];
                for d in 0..D {
                    p[d] = src[d][k];
                }
                p
            }));
        }
        if rebuild {
            // A border pair computed by both regions counts half on each side.
            state.weight.clear();
            state.weight.resize(n, 1.0);
            state
                .weight
                .resize(total, if state.once { 1.0 } else { 0.5 });
            // The old list's buffers are reused: fresh ones cost page faults at every build.
            let mut list = std::mem::take(&mut state.list);
            let mut scratch = std::mem::take(&mut state.scratch);
            state.col_work = build::<D>(geom, state, n, &mut list, &mut scratch)?;
            state.list = list;
            state.scratch = scratch;
        }
        state.force.clear();
        state.force.resize(total, [0; 3]);
        let (pe, bad) = if energy {
            forces::<D, true>(
                geom,
                &state.list,
                n,
                &state.pos,
                &state.weight,
                &mut state.force,
            )
        } else {
            forces::<D, false>(
                geom,
                &state.list,
                n,
                &state.pos,
                &state.weight,
                &mut state.force,
            )
        };
        if bad {
            bail!(
                "the simulation blew up (two particles came closer than {}); use a smaller --dt",
                MIN_R2.sqrt()
            );
        }
        Ok(pe)
    }
}

/// One pair from the list: adds its force (fixed point; zero beyond the cutoff) to `fi` and
/// subtracts it from `fj`; returns the pair's potential energy when `E`.
#[inline(always)]
fn pair<const D: usize, const E: bool>(
    geom: &Geometry,
    dx: &[f64; 3],
    r2: f64,
    fi: &mut [i64; 3],
    fj: &mut [i64; 3],
) -> f64 {
    let inv2 = 1.0 / r2;
    let inv6 = inv2 * inv2 * inv2;
    let ff = (24.0 * inv2 * inv6 * (2.0 * inv6 - 1.0) - geom.fshift) * FIX_SCALE;
    let inside = r2 < geom.rc2;
    let ff = if inside { ff } else { 0.0 };
    for d in 0..D {
        let c = fix(ff * dx[d]);
        fi[d] = fi[d].wrapping_add(c);
        fj[d] = fj[d].wrapping_sub(c);
    }
    if E && inside {
        4.0 * inv6 * (inv6 - 1.0) - geom.ushift + 0.5 * (r2 - geom.rc2) * geom.fshift
    } else {
        0.0
    }
}

/// Neighbours handled together by [`block`]: the compiler keeps each lane array in vector
/// registers (2 lanes per SSE2 instruction).
const LANES: usize = 8;

/// The pairs of particle `i` (at `xi`) with `LANES` neighbours `js` (displaced by `shifts`
/// when `S`): each step runs over all lanes in a plain loop, so the division, the powers and
/// the fixed-point rounding become vector instructions; only the loads of the neighbours'
/// coordinates and the subtraction of their forces stay scalar. Every lane does exactly what
/// [`pair`] does, in the same order, so the bits are the same. Adds the lanes' forces to `fi`,
/// subtracts them from the neighbours, adds their weighted energy to `ui` (when `E`, in lane
/// order, as the pairs would one by one) and returns whether any pair was closer than the
/// blow-up bound.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the kernel's operands, each used in the hot loop
fn block<const D: usize, const E: bool, const S: bool>(
    geom: &Geometry,
    xi: &[f64; 3],
    js: &[u32; LANES],
    shifts: &[[f64; 3]],
    pos: &[[f64; 3]],
    weight: &[f64],
    force: &mut [[i64; 3]],
    fi: &mut [i64; 3],
    ui: &mut f64,
) -> bool {
    let mut dx = [[0.0; LANES]; 3];
    for k in 0..LANES {
        let xj = pos[js[k] as usize];
        for d in 0..D {
            dx[d][k] = xi[d] - xj[d];
        }
    }
    if S {
        let shifts = &shifts[..LANES];
        for k in 0..LANES {
            for d in 0..D {
                dx[d][k] += shifts[k][d];
            }
        }
    }
    let mut r2 = [0.0; LANES];
    for dxd in dx.iter().take(D) {
        for k in 0..LANES {
            r2[k] += dxd[k] * dxd[k];
        }
    }
    let mut c = [[0i64; LANES]; 3];
    let mut u = [0.0; LANES];
    let mut bad = false;
    for k in 0..LANES {
        let inv2 = 1.0 / r2[k];
        let inv6 = inv2 * inv2 * inv2;
        let ff = (24.0 * inv2 * inv6 * (2.0 * inv6 - 1.0) - geom.fshift) * FIX_SCALE;
        let inside = r2[k] < geom.rc2;
        let ff = if inside { ff } else { 0.0 };
        for d in 0..D {
            c[d][k] = fix(ff * dx[d][k]);
        }
        bad |= r2[k] < MIN_R2;
        if E {
            let e =
                4.0 * inv6 * (inv6 - 1.0) - geom.ushift + 0.5 * (r2[k] - geom.rc2) * geom.fshift;
            u[k] = if inside { e } else { 0.0 };
        }
    }
    for d in 0..D {
        let sum = c[d].iter().fold(0i64, |s, &v| s.wrapping_add(v));
        fi[d] = fi[d].wrapping_add(sum);
    }
    for k in 0..LANES {
        let j = js[k] as usize;
        let fj = &mut force[j];
        for d in 0..D {
            fj[d] = fj[d].wrapping_sub(c[d][k]);
        }
        if E {
            *ui += u[k] * weight[j];
        }
    }
    bad
}

/// Adds the pair forces of the list to `force` (fixed point) and returns the potential energy
/// (when `E`, else 0) and whether any pair was closer than the blow-up bound.
///
/// Pairs beyond the cutoff (about a fifth in 2D and 30% in 3D, the skin's share) are computed
/// and masked to zero rather than skipped by a branch as LAMMPS's kernel does: the branch
/// mispredicts so often that it cost 40% more time in 3D (measured: 1.63 s against 1.15 s on
/// the 3D benchmark at 1 thread; the same in 2D within noise). A particle's neighbours go
/// through [`block`] `LANES` at a time and the rest one by one through [`pair`] (padding the
/// last block with a far particle instead was measured slower: 2D lists are only about 10
/// pairs long).
///
/// On an x86-64 CPU with AVX2 the same code runs compiled for AVX2 (4 lanes per
/// instruction). Rust never fuses a multiply and an add on its own, and every operation the
/// kernel uses is correctly rounded, so both builds give the same bits (a test checks).
fn forces<const D: usize, const E: bool>(
    geom: &Geometry,
    nl: &NeighbourList,
    n_own: usize,
    pos: &[[f64; 3]],
    weight: &[f64],
    force: &mut [[i64; 3]],
) -> (f64, bool) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return forces_avx2::<D, E>(geom, nl, n_own, pos, weight, force);
    }
    forces_generic::<D, E>(geom, nl, n_own, pos, weight, force)
}

/// [`forces_generic`] compiled for AVX2; only call it where the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)] // one call of a `target_feature` function, right after checking the feature
fn forces_avx2<const D: usize, const E: bool>(
    geom: &Geometry,
    nl: &NeighbourList,
    n_own: usize,
    pos: &[[f64; 3]],
    weight: &[f64],
    force: &mut [[i64; 3]],
) -> (f64, bool) {
    #[target_feature(enable = "avx2")]
    #[inline(never)] // keeps its own symbol in profiles
    fn kernel<const D: usize, const E: bool>(
        geom: &Geometry,
        nl: &NeighbourList,
        n_own: usize,
        pos: &[[f64; 3]],
        weight: &[f64],
        force: &mut [[i64; 3]],
    ) -> (f64, bool) {
        forces_generic::<D, E>(geom, nl, n_own, pos, weight, force)
    }
    assert!(std::arch::is_x86_feature_detected!("avx2"));
    // SAFETY: the CPU has AVX2 (asserted just above), the only requirement of `kernel`.
    unsafe { kernel::<D, E>(geom, nl, n_own, pos, weight, force) }
}

/// The kernel itself, for whatever instruction set its caller was compiled for.
#[inline(always)]
fn forces_generic<const D: usize, const E: bool>(
    geom: &Geometry,
    nl: &NeighbourList,
    n_own: usize,
    pos: &[[f64; 3]],
    weight: &[f64],
    force: &mut [[i64; 3]],
) -> (f64, bool) {
    let len = pos.len();
    let (weight, force) = (&weight[..len], &mut force[..len]);
    let mut pe = 0.0;
    let mut bad = false;
    for i in 0..n_own {
        let xi = pos[i];
        let mut fi = [0i64; 3];
        let mut ui = 0.0;
        let plain = &nl.j[nl.start[i] as usize..nl.start[i + 1] as usize];
        let mut blocks = plain.chunks_exact(LANES);
        for js in &mut blocks {
            let js: &[u32; LANES] = js.try_into().expect("a chunk of LANES");
            bad |= block::<D, E, false>(geom, &xi, js, &[], pos, weight, force, &mut fi, &mut ui);
        }
        for &j in blocks.remainder() {
            let j = j as usize;
            let xj = pos[j];
            let mut dx = [0.0; 3];
            let mut r2 = 0.0;
            for d in 0..D {
                dx[d] = xi[d] - xj[d];
                r2 += dx[d] * dx[d];
            }
            bad |= r2 < MIN_R2;
            let u = pair::<D, E>(geom, &dx, r2, &mut fi, &mut force[j]);
            if E {
                ui += u * weight[j];
            }
        }
        let (s0, s1) = (nl.sstart[i] as usize, nl.sstart[i + 1] as usize);
        let (sj, shift) = (&nl.sj[s0..s1], &nl.shift[s0..s1]);
        let mut blocks = sj.chunks_exact(LANES);
        let mut shifts = shift.chunks_exact(LANES);
        for (js, sh) in (&mut blocks).zip(&mut shifts) {
            let js: &[u32; LANES] = js.try_into().expect("a chunk of LANES");
            bad |= block::<D, E, true>(geom, &xi, js, sh, pos, weight, force, &mut fi, &mut ui);
        }
        for (&j, shift) in blocks.remainder().iter().zip(shifts.remainder()) {
            let j = j as usize;
            let xj = pos[j];
            let mut dx = [0.0; 3];
            let mut r2 = 0.0;
            for d in 0..D {
                dx[d] = (xi[d] - xj[d]) + shift[d];
                r2 += dx[d] * dx[d];
            }
            bad |= r2 < MIN_R2;
            let u = pair::<D, E>(geom, &dx, r2, &mut fi, &mut force[j]);
            if E {
                ui += u * weight[j];
            }
        }
        for d in 0..D {
            force[i][d] = force[i][d].wrapping_add(fi[d]);
        }
        pe += ui;
    }
    (pe, bad)
}

/// The periodic shift that brings `j` nearest to `i` along one axis: `-k L` with `k` the
/// nearest whole number of boxes between them (exactly odd in `xi - xj`).
#[inline]
fn image_shift(raw: f64, l: f64) -> f64 {
    let a = raw.abs();
    if a < 0.5 * l {
        0.0
    } else if a < 1.5 * l {
        // One box: the same value as below, without a division and a libm call.
        if raw > 0.0 { -l } else { l }
    } else {
        -((raw / l).round() * l)
    }
}

/// Builds the half neighbour list of a region's own particles (`pos[..n_own]`) against its own
/// particles and its halo (`pos[n_own..]`), and the load per own column.
#[inline(never)] // keeps its own symbol in profiles (all figures were taken so)
fn build<const D: usize>(
    geom: &Geometry,
    st: &RegionState,
    n_own: usize,
    nl: &mut NeighbourList,
    scratch: &mut BuildScratch,
) -> Result<Vec<u64>> {
    let nc = geom.nc;
    let pos = &st.pos;
    let (ws, wl) = window(st.a, st.b, nc);
    // Local bins (half a cell per side, one column wide) over the window's columns: a
    // counting sort of the local particles.
    let nb = geom.bins();
    let (bs, bl) = (ws, wl);
    let per_bcol = nb.pow(D as u32 - 1);
    let bin_of = |p: &[f64; 3]| -> Option<usize> {
        let c = geom.bin_coords(p);
        let wpos = (c[0] + nb - bs) % nb;
        (wpos < bl).then(|| {
            let mut idx = wpos;
            for &cd in &c[1..D] {
                idx = idx * nb + cd;
            }
            idx
        })
    };
    let nbins = bl * per_bcol;
    let mut cell = Vec::with_capacity(pos.len());
    let mut cstart = vec![0u32; nbins + 1];
    for (k, p) in pos.iter().enumerate() {
        let Some(c) = bin_of(p) else {
            bail!("particle {k} of a region's view lies outside its window (internal error)");
        };
        cell.push(c as u32);
        cstart[c + 1] += 1;
    }
    for c in 0..nbins {
        cstart[c + 1] += cstart[c];
    }
    let mut next = cstart.clone();
    let mut items = vec![0u32; pos.len()];
    for (k, &c) in cell.iter().enumerate() {
        items[next[c as usize] as usize] = k as u32;
        next[c as usize] += 1;
    }

    let list_r = geom.rc + geom.skin;
    let list_r2 = list_r * list_r;
    // The wrapped coordinates in bin order, for the first pass; it keeps a little more than
    // the list radius (wrapping rounds), the exact test on the unwrapped ones decides.
    let filter_r2 = (list_r + 1e-6) * (list_r + 1e-6);
    let BuildScratch { wx, cand } = scratch;
    for (d, w) in wx.iter_mut().enumerate().take(D) {
        w.clear();
        w.extend(items.iter().map(|&k| geom.wrap(pos[k as usize][d])));
    }
    // One slot per local particle and one spare: the stencil's bins are distinct.
    cand.clear();
    cand.resize(pos.len() + 1, 0);
    let (l, half_l) = (geom.l, 0.5 * geom.l);
    nl.start.clear();
    nl.sstart.clear();
    nl.j.clear();
    nl.sj.clear();
    nl.shift.clear();
    let per_col = nc.pow(D as u32 - 1);
    let mut col_work = vec![CELL_COST * per_col as u64; st.b - st.a];
    let offsets: Vec<[isize; 3]> = neighbour_offsets(D);
    // The neighbour bins of the current bin (own particles come in bin order).
    // Each with the whole number of boxes that brings its particles next to the current bin's.
    let mut near: Vec<(usize, usize, [f64; 3])> = Vec::with_capacity(offsets.len());
    let mut near_of = usize::MAX;
    let wrap = |c: usize, o: isize| (c as isize + o).rem_euclid(nb as isize) as usize;
    // Own particles are numbered in local bin order, so a bin of an own column that comes
    // before the current one holds only particles numbered below `i`: those pairs were
    // listed from the other side (half the stencil, as LAMMPS's "newton on" lists).
    let own_col = |wpos: usize| (st.a..st.b).contains(&((ws + wpos) % nc));
    for i in 0..n_own {
        nl.start.push(nl.j.len() as u32);
        nl.sstart.push(nl.sj.len() as u32);
        if cell[i] as usize != near_of {
            near_of = cell[i] as usize;
            near.clear();
            // Decode the local bin into (window position, row[, layer]).
            let mut rest = near_of;
            let mut c = [0usize; 3];
            for d in (1..D).rev() {
                c[d] = rest % nb;
                rest /= nb;
            }
            let wpos = rest;
            c[0] = (bs + wpos) % nb;
            let whole = bl == nb;
            for off in &offsets {
                let p = if whole {
                    wrap(wpos, off[0])
                } else {
                    // Own bin columns sit at least 2 from either end of a partial window.
                    (wpos as isize + off[0]) as usize
                };
                let mut idx = p;
                for d in 1..D {
                    idx = idx * nb + wrap(c[d], off[d]);
                }
                // With each border pair listed once, only by the region on its left, a halo
                // bin to the left holds no pair of ours.
                let listed_there = if own_col(p) {
                    idx < near_of
                } else {
                    st.once && off[0] < 0
                };
                if !listed_there {
                    let mut bshift = [0.0; 3];
                    for d in 0..D {
                        let to = c[d] as isize + off[d];
                        bshift[d] = if to < 0 {
                            l
                        } else if to >= nb as isize {
                            -l
                        } else {
                            0.0
                        };
                    }
                    near.push((cstart[idx] as usize, cstart[idx + 1] as usize, bshift));
                }
            }
        }
        let xi = pos[i];
        let xiw: [f64; 3] = std::array::from_fn(|d| if d < D { geom.wrap(xi[d]) } else { 0.0 });
        // First a cheap pass over the wrapped coordinates in bin order (contiguous, no
        // branch: the slot is written and kept only if near), then the exact test below.
        let mut found = 0;
        for &(s0, s1, bshift) in &near {
            #[allow(clippy::needless_range_loop)] // `slot` indexes one array per axis
            for slot in s0..s1 {
                let mut r2 = 0.0;
                for d in 0..D {
                    let dx = (xiw[d] - wx[d][slot]) + bshift[d];
                    r2 += dx * dx;
                }
                cand[found] = slot as u32;
                found += usize::from(r2 <= filter_r2);
            }
        }
        let before = nl.pairs();
        for &slot in &cand[..found] {
            let j = items[slot as usize];
            let ju = j as usize;
            if ju < n_own && ju <= i {
                continue;
            }
            let xj = pos[ju];
            let mut shift = [0.0; 3];
            let mut r2 = 0.0;
            let mut shifted = false;
            for d in 0..D {
                let raw = xi[d] - xj[d];
                let s = if raw.abs() < half_l {
                    0.0
                } else {
                    shifted = true;
                    image_shift(raw, l)
                };
                shift[d] = s;
                let dx = raw + s;
                r2 += dx * dx;
            }
            if r2 > list_r2 {
                continue;
            }
            if shifted {
                nl.sj.push(j);
                nl.shift.push(shift);
            } else {
                nl.j.push(j);
            }
        }
        let own_col = (st.col[i] as usize + nc - st.a) % nc;
        col_work[own_col] += (nl.pairs() - before) as u64 + PARTICLE_COST;
    }
    nl.start.push(nl.j.len() as u32);
    nl.sstart.push(nl.sj.len() as u32);
    Ok(col_work)
}

/// The 25 (2D) or 125 (3D) bin offsets around a bin (bins are half a cell: 2 each way).
fn neighbour_offsets(dim: usize) -> Vec<[isize; 3]> {
    let mut v = Vec::new();
    let r = |d: usize| if d < dim { -2..=2isize } else { 0..=0 };
    for a in r(0) {
        for b in r(1) {
            for c in r(2) {
                v.push([a, b, c]);
            }
        }
    }
    v
}

/// The window (first column, number of columns) of a region owning columns `[a, b)`: its own
/// columns and two on each side (all columns when that would wrap onto itself).
pub(crate) fn window(a: usize, b: usize, nc: usize) -> (usize, usize) {
    let w = b - a;
    if w + 4 >= nc {
        (0, nc)
    } else {
        ((a + nc - 2) % nc, w + 4)
    }
}

/// Forces on every particle by brute force over all pairs (minimum image), in the same fixed
/// point as the region tasks: the reference the neighbour lists are tested against.
pub fn reference_forces(geom: &Geometry, x: &Axes) -> Vec<[i64; 3]> {
    let n = x[0].len();
    let mut f = vec![[0i64; 3]; n];
    for i in 0..n {
        for j in i + 1..n {
            let mut dx = [0.0; 3];
            let mut r2 = 0.0;
            for d in 0..geom.dim {
                let raw = x[d][i] - x[d][j];
                dx[d] = raw + image_shift(raw, geom.l);
                r2 += dx[d] * dx[d];
            }
            if r2 < geom.rc2 {
                let (mut fi, mut fj) = (f[i], f[j]);
                if geom.dim == 2 {
                    pair::<2, false>(geom, &dx, r2, &mut fi, &mut fj);
                } else {
                    pair::<3, false>(geom, &dx, r2, &mut fi, &mut fj);
                }
                (f[i], f[j]) = (fi, fj);
            }
        }
    }
    f
}

/// Forces on every particle, by particle id, computed with a fresh neighbour list for each
/// region `moved` cuts the particles into (for tests against [`reference_forces`]).
pub fn list_forces(geom: &Arc<Geometry>, moved: Moved, snap: &Snapshot) -> Result<Vec<[i64; 3]>> {
    let n = moved.order.len();
    let regions = moved.borders.len() - 1;
    let once = moved.once;
    let moved = Arc::new(moved);
    let mut outs = Vec::with_capacity(regions);
    for r in 0..regions {
        let job = RegionJob {
            prev: snap.clone(),
            region: r,
            state: RegionState::default(),
            out: Axes::default(),
            geom: geom.clone(),
            dt: 0.0,
            rebuild: true,
            finish_kick: false,
            advance: false,
            energy: false,
            phase: if once { Phase::Forces } else { Phase::Whole },
            halo_buf: Vec::new(),
            bins: Vec::new(),
            moved: Some(moved.clone()),
            bins_after: false,
        };
        outs.push(job.run()?);
    }
    let add = |to: &mut [i64; 3], from: &[i64; 3]| {
        for (t, v) in to.iter_mut().zip(from) {
            *t = t.wrapping_add(*v);
        }
    };
    let mut f = vec![[0i64; 3]; n];
    for out in &outs {
        let st = &out.state;
        for (&id, fk) in st.id.iter().zip(&st.force) {
            add(&mut f[id as usize], fk);
        }
        // Forces one region found on another's particles (border pairs listed once).
        for (&(src, k), hf) in st.halo.iter().zip(&out.halo_force) {
            add(&mut f[outs[src as usize].state.id[k as usize] as usize], hf);
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A dense 3D box with one region owning every column, particles jittered off an fcc-like
    /// grid and numbered in bin order (as the step loop numbers them), with its list built.
    fn region(dim: usize) -> (Geometry, RegionState, usize) {
        let n = if dim == 3 { 4000 } else { 3000 };
        let geom = Geometry::new(dim, n, 0.8, 0.3).unwrap();
        let side = (n as f64).powf(1.0 / dim as f64).ceil() as usize;
        let a = geom.l / side as f64;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut pos: Vec<[f64; 3]> = (0..n)
            .map(|k| {
                let mut p = [0.0; 3];
                let mut k = k;
                for c in p.iter_mut().take(dim) {
                    // Some particles a box or two away: positions are never wrapped.
                    let image = rng.random_range(-2..=2) as f64 * geom.l;
                    *c = ((k % side) as f64 + 0.5 + rng.random_range(-0.1..0.1)) * a + image;
                    k /= side;
                }
                p
            })
            .collect();
        let nb = geom.bins();
        let key = |p: &[f64; 3]| {
            let c = geom.bin_coords(p);
            c[..dim].iter().fold(0, |idx, &cd| idx * nb + cd)
        };
        pos.sort_by_key(key);
        let st = RegionState {
            a: 0,
            b: geom.nc,
            col: pos.iter().map(|p| geom.cell_coords(p)[0] as u32).collect(),
            pos,
            weight: vec![1.0; n],
            ..Default::default()
        };
        (geom, st, n)
    }

    fn check<const D: usize>() {
        let (geom, mut st, n) = region(D);
        let mut list = NeighbourList::default();
        build::<D>(&geom, &st, n, &mut list, &mut BuildScratch::default()).unwrap();
        st.list = list;
        assert!(st.list.pairs() > 5 * n && !st.list.sj.is_empty());
        let mut a = vec![[0i64; 3]; n];
        let (pe_a, bad_a) =
            forces_generic::<D, true>(&geom, &st.list, n, &st.pos, &st.weight, &mut a);
        let mut b = vec![[0i64; 3]; n];
        let (pe_b, bad_b) = forces::<D, true>(&geom, &st.list, n, &st.pos, &st.weight, &mut b);
        assert_eq!(
            (a.clone(), pe_a.to_bits(), bad_a),
            (b, pe_b.to_bits(), bad_b)
        );
        // And the lists hold every pair within the cutoff: the brute-force forces agree.
        let x: Axes = std::array::from_fn(|d| st.pos.iter().map(|p| p[d]).collect());
        assert_eq!(a, reference_forces(&geom, &x));
    }

    #[test]
    fn every_instruction_set_gives_the_same_bits_2d() {
        check::<2>();
    }

    #[test]
    fn every_instruction_set_gives_the_same_bits_3d() {
        check::<3>();
    }
}
