//! The durable job queue: one SQLite table in WAL mode, claimed with leases.
//!
//! A job moves through these states (the `state` column):
//!
//! ```text
//! queued ──claim──▶ running (lease_owner, lease_until) ──ok──▶ succeeded
//!   ▲                 │  │
//!   │                 │  └─error, attempts left──▶ failed (run_at = now + backoff) ──claim──▶ running
//!   │                 └────error, permanent or last attempt──▶ dead (last_error kept)
//!   └── release (shutdown) / lease expired (crash) ──┘
//! ```
//!
//! Every write is one short transaction; the worker batches the outcomes of many jobs into
//! one commit (group commit), so the cost of a durable commit is shared.

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, the time unit of every column.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The queue's tables and indexes.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id             INTEGER PRIMARY KEY,
    kind           TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    idem_key       TEXT    NOT NULL UNIQUE,
    state          TEXT    NOT NULL CHECK (state IN ('queued','running','succeeded','failed','dead')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    max_attempts   INTEGER NOT NULL,
    lease_expiries INTEGER NOT NULL DEFAULT 0,
    run_at         INTEGER NOT NULL,
    lease_owner    TEXT,
    lease_until    INTEGER,
    last_error     TEXT,
    result         TEXT,
    created_at     INTEGER NOT NULL,
    finished_at    INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (run_at, id) WHERE state IN ('queued','failed');
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (lease_until) WHERE state = 'running';
CREATE TABLE IF NOT EXISTS failures (
    job_id    INTEGER NOT NULL,
    attempt   INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    permanent INTEGER NOT NULL,
    error     TEXT    NOT NULL
);
";

/// How many times a job may be found with an expired lease (its worker died while running
/// it) before it is treated as a poison job and dead-lettered.
pub const MAX_LEASE_EXPIRIES: i64 = 3;

/// Durability of each commit (SQLite's `synchronous` pragma in WAL mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// Survives a crash of the process (`kill -9`); a power cut may lose the last commits.
    Normal,
    /// Every commit is fsynced: survives a power cut too, at the cost of one fsync per commit.
    Full,
}

/// Settings for opening a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Commit durability.
    pub sync: Sync,
    /// How long a write waits for another process's lock before it fails.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: Sync::Normal,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A job to enqueue.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// The job kind (`email`, `cleanup`, `webhook`, `noop`).
    pub kind: String,
    /// The payload as JSON text (validated by the caller).
    pub payload: String,
    /// The idempotency key; enqueueing the same key twice yields the first job.
    pub idem_key: String,
    /// Attempts before the job is dead-lettered.
    pub max_attempts: u32,
}

/// The result of an enqueue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job with this id.
    New(i64),
    /// A job with the same idempotency key already existed.
    Existing(i64),
}

/// A job claimed by a worker.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// Row id.
    pub id: i64,
    /// Job kind.
    pub kind: String,
    /// Payload JSON text.
    pub payload: String,
    /// Idempotency key, sent with every effect.
    pub idem_key: String,
    /// This attempt's number (1-based).
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
}

/// How one attempt ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The effect happened; the text says what (e.g. bytes freed).
    Succeeded(String),
    /// The attempt failed; `permanent` failures are not retried.
    Failed {
        /// The error, kept as the job's last error.
        error: String,
        /// True when retrying cannot help (bad payload, rejected recipient, 4xx).
        permanent: bool,
    },
}

/// Where a finished attempt left its job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Landed {
    /// Succeeded.
    Succeeded,
    /// Will be retried after the given delay.
    Retry(Duration),
    /// Dead-lettered.
    Dead,
    /// The job was no longer ours (lease lost); nothing was written.
    Stale,
}

/// Job counts per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Waiting for a first or a released attempt.
    pub queued: u64,
    /// Claimed by a worker under a lease.
    pub running: u64,
    /// Done.
    pub succeeded: u64,
    /// Last attempt failed; waiting for the retry time.
    pub failed: u64,
    /// Dead-lettered.
    pub dead: u64,
}

impl Counts {
    /// All jobs.
    pub fn total(&self) -> u64 {
        self.queued + self.running + self.succeeded + self.failed + self.dead
    }
    /// Jobs that are not finished yet.
    pub fn pending(&self) -> u64 {
        self.queued + self.running + self.failed
    }
}

/// A dead-lettered job and why.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Row id.
    pub id: i64,
    /// Job kind.
    pub kind: String,
    /// Idempotency key.
    pub idem_key: String,
    /// Attempts made.
    pub attempts: u32,
    /// The error of the last attempt.
    pub last_error: String,
}

/// One row of the queue, for status and accounting.
#[derive(Clone, Debug)]
pub struct JobRow {
    /// Row id.
    pub id: i64,
    /// Job kind.
    pub kind: String,
    /// Payload JSON text.
    pub payload: String,
    /// Idempotency key.
    pub idem_key: String,
    /// State name.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// The error of the last failed attempt, if any.
    pub last_error: Option<String>,
    /// What a successful attempt reported.
    pub result: Option<String>,
}

/// Exponential backoff with jitter for retries.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (1-based): `base * 2^(attempt-1)`,
    /// capped at `max`, then drawn uniformly from its upper half ("equal jitter"), so
    /// that jobs failing together do not retry together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max);
        let half = capped / 2;
        let jitter = rand::random_range(0.0..=1.0f64);
        half + half.mul_f64(jitter)
    }
}

/// The queue, over one SQLite connection. Open one per thread or process.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the queue at `path`, in WAL mode.
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<Store> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create directory {}", parent.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open job database {}", path.display()))?;
        Self::init(conn, opts).with_context(|| {
            format!(
                "{} is not a usable job database (corrupt, locked by another process, or not SQLite)",
                path.display()
            )
        })
    }

    /// Opens a private in-memory queue (for tests and the benchmark).
    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?, &StoreOptions::default())
    }

    fn init(conn: Connection, opts: &StoreOptions) -> Result<Store> {
        conn.busy_timeout(opts.busy_timeout)?;
        // Reading the journal mode touches the file header: a corrupt file fails here.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if mode != "wal" && mode != "memory" {
            bail!("could not switch the database to WAL mode (got {mode})");
        }
        let sync = match opts.sync {
            Sync::Normal => "NORMAL",
            Sync::Full => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
        ))?;
        conn.execute_batch(SCHEMA)?;
        let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if ok != "ok" {
            bail!("integrity check failed: {ok}");
        }
        Ok(Store { conn })
    }

    /// Enqueues one job in its own committed transaction.
    pub fn enqueue(&mut self, job: &NewJob) -> Result<Enqueued> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("cannot start a write transaction (database locked?)")?;
        let r = Self::enqueue_in(&tx, job, now_ms())?;
        tx.commit().context("cannot commit the enqueue")?;
        Ok(r)
    }

    /// Enqueues many jobs in one transaction.
    pub fn enqueue_many(&mut self, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("cannot start a write transaction (database locked?)")?;
        let now = now_ms();
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(Self::enqueue_in(&tx, job, now)?);
        }
        tx.commit().context("cannot commit the enqueue")?;
        Ok(out)
    }

    fn enqueue_in(conn: &Connection, job: &NewJob, now: i64) -> Result<Enqueued> {
        let mut insert = conn.prepare_cached(
            "INSERT INTO jobs (kind, payload, idem_key, state, max_attempts, run_at, created_at)
             VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?5)
             ON CONFLICT (idem_key) DO NOTHING",
        )?;
        let n = insert.execute(params![
            job.kind,
            job.payload,
            job.idem_key,
            job.max_attempts.max(1),
            now
        ])?;
        if n == 1 {
            return Ok(Enqueued::New(conn.last_insert_rowid()));
        }
        let id = conn.query_row(
            "SELECT id FROM jobs WHERE idem_key = ?1",
            [&job.idem_key],
            |r| r.get(0),
        )?;
        Ok(Enqueued::Existing(id))
    }

    /// Claims up to `n` runnable jobs for `owner`, leasing them until `now + lease`.
    pub fn claim(&mut self, owner: &str, n: usize, lease: Duration) -> Result<Vec<Claimed>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let claimed = {
            let mut stmt = tx.prepare_cached(
                "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_until = ?2,
                        attempts = attempts + 1
                 WHERE id IN (SELECT id FROM jobs WHERE state IN ('queued','failed')
                              AND run_at <= ?3 ORDER BY run_at, id LIMIT ?4)
                 RETURNING id, kind, payload, idem_key, attempts, max_attempts",
            )?;
            let rows = stmt.query_map(params![owner, until, now, n as i64], |r| {
                Ok(Claimed {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    payload: r.get(2)?,
                    idem_key: r.get(3)?,
                    attempt: r.get(4)?,
                    max_attempts: r.get(5)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.commit()?;
        Ok(claimed)
    }

    /// Extends the leases of every job `owner` is running; returns how many.
    pub fn renew(&self, owner: &str, lease: Duration) -> Result<usize> {
        let until = now_ms() + lease.as_millis() as i64;
        Ok(self.conn.execute(
            "UPDATE jobs SET lease_until = ?1 WHERE state = 'running' AND lease_owner = ?2",
            params![until, owner],
        )?)
    }

    /// Puts back every running job whose lease has expired (its worker died): the
    /// interrupted attempt is not counted, but a job found this way
    /// [`MAX_LEASE_EXPIRIES`] times is dead-lettered as a poison job. Returns
    /// (re-queued, dead-lettered).
    pub fn requeue_expired(&mut self) -> Result<(usize, usize)> {
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let dead = tx.execute(
            "UPDATE jobs SET state = 'dead', lease_owner = NULL, lease_until = NULL,
                    lease_expiries = lease_expiries + 1, finished_at = ?1,
                    last_error = 'worker died ' || (lease_expiries + 1) || ' times while running this job'
             WHERE state = 'running' AND lease_until < ?1 AND lease_expiries + 1 >= ?2",
            params![now, MAX_LEASE_EXPIRIES],
        )?;
        let requeued = tx.execute(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL,
                    attempts = MAX(attempts - 1, 0), lease_expiries = lease_expiries + 1
             WHERE state = 'running' AND lease_until < ?1",
            params![now],
        )?;
        tx.commit()?;
        Ok((requeued, dead))
    }

    /// Records the outcomes of finished attempts in one transaction. Each outcome only
    /// applies while the job is still leased to `owner` for that attempt.
    pub fn finish(
        &mut self,
        owner: &str,
        backoff: &Backoff,
        done: &[(Claimed, Outcome)],
    ) -> Result<Vec<Landed>> {
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut landed = Vec::with_capacity(done.len());
        {
            let mut ok = tx.prepare_cached(
                "UPDATE jobs SET state = 'succeeded', result = ?1, finished_at = ?2,
                        lease_owner = NULL, lease_until = NULL
                 WHERE id = ?3 AND state = 'running' AND lease_owner = ?4 AND attempts = ?5",
            )?;
            let mut retry = tx.prepare_cached(
                "UPDATE jobs SET state = 'failed', last_error = ?1, run_at = ?2,
                        lease_owner = NULL, lease_until = NULL
                 WHERE id = ?3 AND state = 'running' AND lease_owner = ?4 AND attempts = ?5",
            )?;
            let mut dead = tx.prepare_cached(
                "UPDATE jobs SET state = 'dead', last_error = ?1, finished_at = ?2,
                        lease_owner = NULL, lease_until = NULL
                 WHERE id = ?3 AND state = 'running' AND lease_owner = ?4 AND attempts = ?5",
            )?;
            let mut log = tx.prepare_cached(
                "INSERT INTO failures (job_id, attempt, at, permanent, error) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (job, outcome) in done {
                let key = (job.id, owner, job.attempt);
                let l = match outcome {
                    Outcome::Succeeded(result) => {
                        let n = ok.execute(params![result, now, key.0, key.1, key.2])?;
                        if n == 1 {
                            Landed::Succeeded
                        } else {
                            Landed::Stale
                        }
                    }
                    Outcome::Failed { error, permanent } => {
                        let last = *permanent || job.attempt >= job.max_attempts;
                        let (n, l) = if last {
                            let n = dead.execute(params![error, now, key.0, key.1, key.2])?;
                            (n, Landed::Dead)
                        } else {
                            let d = backoff.delay(job.attempt);
                            let at = now + d.as_millis() as i64;
                            let n = retry.execute(params![error, at, key.0, key.1, key.2])?;
                            (n, Landed::Retry(d))
                        };
                        if n == 1 {
                            log.execute(params![job.id, job.attempt, now, *permanent, error])?;
                            l
                        } else {
                            Landed::Stale
                        }
                    }
                };
                landed.push(l);
            }
        }
        tx.commit()?;
        Ok(landed)
    }

    /// Gives jobs back to the queue without counting the attempt (shutdown before they
    /// finished). Returns how many were released.
    pub fn release(&mut self, owner: &str, jobs: &[Claimed]) -> Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL,
                        attempts = MAX(attempts - 1, 0)
                 WHERE id = ?1 AND state = 'running' AND lease_owner = ?2 AND attempts = ?3",
            )?;
            for job in jobs {
                n += stmt.execute(params![job.id, owner, job.attempt])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Counts per state.
    pub fn counts(&self) -> Result<Counts> {
        let mut c = Counts::default();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (state, n) = row?;
            let n = n as u64;
            match state.as_str() {
                "queued" => c.queued = n,
                "running" => c.running = n,
                "succeeded" => c.succeeded = n,
                "failed" => c.failed = n,
                "dead" => c.dead = n,
                _ => {}
            }
        }
        Ok(c)
    }

    /// The time (ms since epoch) at which the next waiting job becomes runnable, if any.
    pub fn next_run_at(&self) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT MIN(run_at) FROM jobs WHERE state IN ('queued','failed')",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten())
    }

    /// The earliest lease expiry of a running job, if any.
    pub fn next_lease_expiry(&self) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MIN(lease_until) FROM jobs WHERE state = 'running'",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )?)
    }

    /// Dead letters, newest first, at most `limit`.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, kind, idem_key, attempts, COALESCE(last_error, '')
             FROM jobs WHERE state = 'dead' ORDER BY finished_at DESC, id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(DeadLetter {
                id: r.get(0)?,
                kind: r.get(1)?,
                idem_key: r.get(2)?,
                attempts: r.get(3)?,
                last_error: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every job (for accounting).
    pub fn all_jobs(&self) -> Result<Vec<JobRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, kind, payload, idem_key, state, attempts, last_error, result FROM jobs ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(JobRow {
                id: r.get(0)?,
                kind: r.get(1)?,
                payload: r.get(2)?,
                idem_key: r.get(3)?,
                state: r.get(4)?,
                attempts: r.get(5)?,
                last_error: r.get(6)?,
                result: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Failed attempts logged in all (each failure of each job).
    pub fn failure_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM failures", [], |r| r.get::<_, i64>(0))?
            as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(key: &str) -> NewJob {
        NewJob {
            kind: "noop".into(),
            payload: "{}".into(),
            idem_key: key.into(),
            max_attempts: 2,
        }
    }

    const NO_WAIT: Backoff = Backoff {
        base: Duration::ZERO,
        max: Duration::ZERO,
    };

    #[test]
    fn enqueue_is_idempotent_by_key() {
        let mut s = Store::open_in_memory().unwrap();
        let a = s.enqueue(&job("k1")).unwrap();
        let b = s.enqueue(&job("k1")).unwrap();
        assert!(matches!(a, Enqueued::New(_)));
        assert_eq!(
            b,
            Enqueued::Existing(match a {
                Enqueued::New(id) => id,
                Enqueued::Existing(id) => id,
            })
        );
        assert_eq!(s.counts().unwrap().queued, 1);
    }

    #[test]
    fn retry_then_dead_letter_keeps_error() {
        let mut s = Store::open_in_memory().unwrap();
        s.enqueue(&job("k")).unwrap();
        let fail = |e: &str| Outcome::Failed {
            error: e.into(),
            permanent: false,
        };
        let c = s.claim("w", 10, Duration::from_secs(5)).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].attempt, 1);
        let l = s
            .finish("w", &NO_WAIT, &[(c[0].clone(), fail("boom 1"))])
            .unwrap();
        assert!(matches!(l[0], Landed::Retry(_)));
        assert_eq!(s.counts().unwrap().failed, 1);
        let c = s.claim("w", 10, Duration::from_secs(5)).unwrap();
        assert_eq!(c[0].attempt, 2);
        let l = s
            .finish("w", &NO_WAIT, &[(c[0].clone(), fail("boom 2"))])
            .unwrap();
        assert_eq!(l[0], Landed::Dead);
        let dl = s.dead_letters(10).unwrap();
        assert_eq!(dl[0].last_error, "boom 2");
        assert_eq!(dl[0].attempts, 2);
        assert_eq!(s.failure_count().unwrap(), 2);
    }

    #[test]
    fn stale_outcome_after_release_is_ignored() {
        let mut s = Store::open_in_memory().unwrap();
        s.enqueue(&job("k")).unwrap();
        let c = s.claim("w1", 1, Duration::from_secs(5)).unwrap();
        assert_eq!(s.release("w1", &c).unwrap(), 1);
        let c2 = s.claim("w2", 1, Duration::from_secs(5)).unwrap();
        assert_eq!(c2[0].attempt, 1, "a released attempt is not counted");
        let l = s
            .finish(
                "w1",
                &NO_WAIT,
                &[(c[0].clone(), Outcome::Succeeded(String::new()))],
            )
            .unwrap();
        assert_eq!(l[0], Landed::Stale);
        let l = s
            .finish(
                "w2",
                &NO_WAIT,
                &[(c2[0].clone(), Outcome::Succeeded("x".into()))],
            )
            .unwrap();
        assert_eq!(l[0], Landed::Succeeded);
    }

    #[test]
    fn expired_lease_is_requeued_then_poison_dead_lettered() {
        let mut s = Store::open_in_memory().unwrap();
        s.enqueue(&job("k")).unwrap();
        for round in 1..=MAX_LEASE_EXPIRIES {
            let c = s.claim("w", 1, Duration::ZERO).unwrap();
            assert_eq!(c.len(), 1, "round {round}");
            std::thread::sleep(Duration::from_millis(2));
            let (requeued, dead) = s.requeue_expired().unwrap();
            if round < MAX_LEASE_EXPIRIES {
                assert_eq!((requeued, dead), (1, 0));
            } else {
                assert_eq!((requeued, dead), (0, 1));
            }
        }
        assert!(
            s.dead_letters(1).unwrap()[0]
                .last_error
                .contains("worker died 3 times")
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            assert!(b.delay(30) <= Duration::from_secs(1));
        }
    }
}
