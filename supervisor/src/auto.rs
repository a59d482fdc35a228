//! Automatic placement: learns, per task name, whether a task is CPU-bound or I/O-bound
//! from how its runs used their threads, and counts the tasks that blocked a worker.
//!
//! A route with `executor = "auto"` and `auto = { io = "...", cpu = "..." }` asks the
//! [`Learner`] where each task name goes. An async name whose polls hold their worker
//! (blocking calls between `.await`s) is flagged as blocking and runs on a thread where
//! blocking is harmless: the pair's `blocking` executor when named, else the I/O
//! executor with the job marked to run on a thread (tokio: its blocking pool). Each task that ends adds a sample: the share of
//! its run time spent on the CPU, `cpu / (cpu + blocked)`, where *blocked* is the time its
//! thread was off the CPU by the task's own doing (asleep, waiting for I/O or a lock) and
//! not time spent waiting for a CPU. That makes the measure immune to a busy machine: a
//! spin on an oversubscribed pool still reads near 1, a sleep near 0. The estimate decays
//! (an exponential moving average), a name needs a minimum number of samples before it is
//! placed, and a placed name moves only across a band (hysteresis), so noise near the
//! threshold does not make it flap.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::RwLock;
use std::time::Duration;

use executor_core::Outcome;
use serde::{Deserialize, Serialize};

/// Where a learned name goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Mostly blocked: the I/O executor (many threads, or a blocking pool).
    Io,
    /// Mostly computing: the CPU executor.
    Cpu,
}

impl Class {
    /// `"io"` or `"cpu"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Io => "io",
            Class::Cpu => "cpu",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the learner decides. The defaults suit most work; see each field.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct AutoSettings {
    /// A name goes to the CPU executor once its CPU share reaches this (default 0.7).
    pub cpu_above: f64,
    /// A name goes to the I/O executor once its CPU share falls to this (default 0.4).
    /// Between the two a placed name stays where it is.
    pub io_below: f64,
    /// Samples a name needs before it is placed; until then it runs on the I/O executor,
    /// where a CPU task costs little and a blocking task blocks no CPU worker (default 5).
    pub min_samples: u32,
    /// The weight of a new sample in the moving average (default 0.2).
    pub decay: f64,
    /// An async task whose single poll runs this long holds its worker: counted as
    /// blocking (default 10 ms, tokio's own guideline for time between `.await`s).
    pub poll_threshold: Duration,
    /// A blocking task whose runs spent this long blocked (asleep or in I/O, not
    /// computing) held a CPU worker idle: counted as blocking (default 10 ms).
    pub block_threshold: Duration,
}

impl Default for AutoSettings {
    fn default() -> Self {
        AutoSettings {
            cpu_above: 0.7,
            io_below: 0.4,
            min_samples: 5,
            decay: 0.2,
            poll_threshold: Duration::from_millis(10),
            block_threshold: Duration::from_millis(10),
        }
    }
}

/// What the learner knows about one task name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Learned {
    /// The task name.
    pub name: String,
    /// The decayed CPU share, `cpu / (cpu + blocked)`, in 0..=1.
    pub cpu_share: f64,
    /// Samples seen.
    pub samples: u64,
    /// The placement; `None` until the name has enough samples.
    pub class: Option<Class>,
    /// Tasks of this name that blocked a worker of a pool whose threads must not block
    /// (a tokio runtime worker held by a poll past `poll_threshold`; a rayon thread, or
    /// any CPU executor's, by a run blocked past `block_threshold`).
    pub blocking: u64,
    /// The decayed share of the async runs whose longest poll held its worker past
    /// `poll_threshold` (0 for a name that never ran async).
    #[serde(default)]
    pub poll_blocking: f64,
    /// True once the name's polls are found to block their worker (a share of 0.5 or
    /// more, after the minimum samples; cleared at 0.25 or less): it then runs on a
    /// thread, not as a task of a runtime.
    #[serde(default)]
    pub blocks: bool,
}

impl fmt::Display for Learned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "auto: {} measured CPU/wall {:.2} over {} runs",
            self.name, self.cpu_share, self.samples
        )?;
        if self.blocking > 0 {
            write!(f, ", {} blocked a worker", self.blocking)?;
        }
        match self.class {
            Some(_) if self.blocks => write!(
                f,
                ", polls block their worker ({:.2}) → blocking (run on a thread)",
                self.poll_blocking
            ),
            Some(c) => write!(f, " → {c}"),
            None => write!(f, " → not placed yet (io until enough samples)"),
        }
    }
}

/// The state of what was learned, saved and loaded as JSON (see [`Learner::save`]).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    names: Vec<Learned>,
}

/// An error saving or loading what was learned.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LearnError(String);

/// Learns the placement of task names from their outcomes. Shared by the routes of one
/// policy; safe to use from every thread.
#[derive(Debug, Default)]
pub struct Learner {
    settings: AutoSettings,
    names: RwLock<HashMap<String, Learned>>,
}

impl Learner {
    /// A learner with these settings and nothing learned.
    pub fn new(settings: AutoSettings) -> Self {
        Learner {
            settings,
            names: RwLock::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &AutoSettings {
        &self.settings
    }

    /// The placement of `name`, once it has one.
    #[inline]
    pub fn class(&self, name: &str) -> Option<Class> {
        self.read().get(name).and_then(|l| l.class)
    }

    /// The placement of `name` and whether its polls block their worker (see
    /// [`Learned::blocks`]), once it has one.
    #[inline]
    pub fn placement(&self, name: &str) -> Option<(Class, bool)> {
        self.read()
            .get(name)
            .and_then(|l| l.class.map(|c| (c, l.blocks)))
    }

    /// What is known of `name`.
    pub fn get(&self, name: &str) -> Option<Learned> {
        self.read().get(name).cloned()
    }

    /// Everything learned, by name.
    pub fn all(&self) -> Vec<Learned> {
        let mut all: Vec<Learned> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Adds the outcome of one task of `name` that ran where blocking holds a worker
    /// others need (a tokio runtime, a rayon pool). See [`record_on`](Self::record_on).
    pub fn record(&self, name: &str, outcome: &Outcome) {
        self.record_on(name, outcome, true);
    }

    /// Adds the outcome of one task of `name`; `on_worker_pool` says whether it ran where
    /// blocking holds a worker others need (a tokio runtime's worker, a rayon thread): only
    /// there does a blocking run count in [`Learned::blocking`]. Outcomes without CPU and
    /// blocked times (the task never ran) teach nothing. Logs a name whose class changes,
    /// once per change.
    pub fn record_on(&self, name: &str, outcome: &Outcome, on_worker_pool: bool) {
        let (Some(cpu), Some(blocked)) = (outcome.cpu_time(), outcome.blocked_time()) else {
            return;
        };
        if outcome.attempts() == 0 {
            return;
        }
        let s = &self.settings;
        let busy = cpu + blocked;
        if busy.is_zero() {
            return;
        }
        let share = cpu.as_secs_f64() / busy.as_secs_f64();
        let long_poll = outcome.longest_poll().map(|p| p >= s.poll_threshold);
        let blocking = long_poll.unwrap_or(blocked >= s.block_threshold);
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        let entry = names.entry(name.to_owned()).or_insert_with(|| Learned {
            name: name.to_owned(),
            cpu_share: share,
            samples: 0,
            class: None,
            blocking: 0,
            poll_blocking: f64::from(u8::from(long_poll == Some(true))),
            blocks: false,
        });
        if entry.samples > 0 {
            entry.cpu_share += s.decay * (share - entry.cpu_share);
            if let Some(long) = long_poll {
                let x = f64::from(u8::from(long));
                entry.poll_blocking += s.decay * (x - entry.poll_blocking);
            }
        }
        entry.samples += 1;
        // A flagged name runs on a thread, where its long polls hold no runtime worker.
        entry.blocking += u64::from(blocking && on_worker_pool && !entry.blocks);
        if entry.samples < u64::from(s.min_samples) {
            return;
        }
        let blocks = if entry.blocks {
            entry.poll_blocking > 0.25
        } else {
            entry.poll_blocking >= 0.5
        };
        if blocks != entry.blocks {
            tracing::info!(
                task = name,
                blocks,
                poll_blocking = entry.poll_blocking,
                samples = entry.samples,
                "auto: a name's polls {} their worker",
                if blocks { "block" } else { "no longer block" }
            );
            entry.blocks = blocks;
        }
        let next = match entry.class {
            None if entry.cpu_share >= (s.cpu_above + s.io_below) / 2.0 => Class::Cpu,
            None => Class::Io,
            Some(Class::Io) if entry.cpu_share >= s.cpu_above => Class::Cpu,
            Some(Class::Cpu) if entry.cpu_share <= s.io_below => Class::Io,
            Some(c) => c,
        };
        if entry.class != Some(next) {
            tracing::info!(
                task = name,
                from = entry.class.map_or("unplaced", Class::as_str),
                to = next.as_str(),
                cpu_share = entry.cpu_share,
                samples = entry.samples,
                "auto placement changed"
            );
            entry.class = Some(next);
        }
    }

    /// Saves what was learned to `path` as JSON.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), LearnError> {
        let path = path.as_ref();
        let saved = Saved { names: self.all() };
        let text = serde_json::to_string_pretty(&saved)
            .map_err(|e| LearnError(format!("cannot encode what was learned: {e}")))?;
        std::fs::write(path, text)
            .map_err(|e| LearnError(format!("cannot write {}: {e}", path.display())))
    }

    /// Loads what was saved at `path`, replacing the entries of the names it holds.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<(), LearnError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| LearnError(format!("cannot read {}: {e}", path.display())))?;
        let saved: Saved = serde_json::from_str(&text)
            .map_err(|e| LearnError(format!("{}: not a saved placement: {e}", path.display())))?;
        self.restore(saved.names);
        Ok(())
    }

    /// Takes over entries learned elsewhere (a snapshot from [`all`](Self::all), or the
    /// learner of the policy a reload replaces).
    pub fn restore(&self, learned: impl IntoIterator<Item = Learned>) {
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        for l in learned {
            if l.cpu_share.is_finite() {
                names.insert(l.name.clone(), l);
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Learned>> {
        self.names.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use executor_core::Status;

    fn outcome(cpu_ms: u64, blocked_ms: u64) -> Outcome {
        Outcome::new(
            Status::Completed,
            1,
            Duration::from_millis(cpu_ms + blocked_ms),
        )
        .with_cpu_time(Duration::from_millis(cpu_ms))
        .with_blocked_time(Duration::from_millis(blocked_ms))
    }

    #[test]
    fn a_name_is_placed_after_the_minimum_samples_and_moves_only_across_the_band() {
        let l = Learner::new(AutoSettings::default());
        for _ in 0..4 {
            l.record("spin", &outcome(10, 0));
        }
        assert_eq!(l.class("spin"), None);
        l.record("spin", &outcome(10, 0));
        assert_eq!(l.class("spin"), Some(Class::Cpu));
        // Samples around the middle keep it where it is.
        for _ in 0..50 {
            l.record("spin", &outcome(5, 5));
        }
        assert_eq!(l.class("spin"), Some(Class::Cpu));
        for _ in 0..20 {
            l.record("spin", &outcome(1, 20));
        }
        assert_eq!(l.class("spin"), Some(Class::Io));
        assert_eq!(l.get("spin").unwrap().blocking, 20);
    }

    #[test]
    fn a_long_poll_counts_as_blocking_and_a_short_one_does_not() {
        let l = Learner::new(AutoSettings::default());
        l.record(
            "hold",
            &outcome(0, 30).with_longest_poll(Duration::from_millis(30)),
        );
        l.record(
            "yield",
            &outcome(0, 30).with_longest_poll(Duration::from_micros(50)),
        );
        assert_eq!(l.get("hold").unwrap().blocking, 1);
        assert_eq!(l.get("yield").unwrap().blocking, 0);
    }

    #[test]
    fn a_name_whose_polls_block_is_flagged_and_counts_only_where_it_holds_a_worker() {
        let l = Learner::new(AutoSettings::default());
        let hold = outcome(0, 30).with_longest_poll(Duration::from_millis(30));
        for _ in 0..5 {
            l.record_on("hold", &hold, true);
        }
        assert_eq!(l.placement("hold"), Some((Class::Io, true)));
        assert_eq!(l.get("hold").unwrap().blocking, 5);
        // Flagged, it runs on a thread: its long polls hold no runtime worker.
        l.record_on("hold", &hold, true);
        assert_eq!(l.get("hold").unwrap().blocking, 5);
        // Polls that yield clear the flag, past the band.
        let short = outcome(0, 30).with_longest_poll(Duration::from_micros(50));
        for _ in 0..10 {
            l.record_on("hold", &short, true);
        }
        assert_eq!(l.placement("hold"), Some((Class::Io, false)));
        // A blocking run on a pool made for blocking (threads) is not counted.
        l.record_on("sleepy", &outcome(0, 30), false);
        assert_eq!(l.get("sleepy").unwrap().blocking, 0);
    }

    #[test]
    fn what_was_learned_survives_a_save_and_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("learned.json");
        let l = Learner::new(AutoSettings::default());
        for _ in 0..6 {
            l.record("a", &outcome(9, 1));
        }
        l.save(&path).unwrap();
        let again = Learner::new(AutoSettings::default());
        again.load(&path).unwrap();
        assert_eq!(again.all(), l.all());
        assert_eq!(again.class("a"), Some(Class::Cpu));
        std::fs::write(&path, "{").unwrap();
        assert!(again.load(&path).is_err());
    }
}
