//! The durable queue: one SQLite table of named-task calls in WAL mode, claimed under
//! leases, and a log of finished tasks that submitters follow for their results.
//!
//! ```text
//! queued ──claim──▶ running (lease_owner, lease_until) ──ok──▶ succeeded
//!   ▲                 │  │
//!   │                 │  └─error, attempts left──▶ failed (run_at = now + backoff) ──claim──▶ running
//!   │                 └────error, last attempt or permanent──▶ dead (last_error kept)
//!   └── release (drain) / lease expired (a dead worker) ──┘
//! queued, failed, running ──cancel by id──▶ cancelled
//! ```
//!
//! Every change of a running task is guarded by its lease (owner and attempt): an
//! outcome that arrives after the lease was lost, or after a cancel, writes nothing, so
//! no task completes twice. Each end (succeeded, dead, cancelled) appends a row to
//! `done`, whose increasing `seq` submitters read as a cursor.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, the time unit of every column.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The schema. The check on `state` is a chain of comparisons, not `IN (...)`: SQLite
/// evaluates a constant list of more than two values through a temporary table it
/// builds on every execution of a statement that writes `state`.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL,
    key             TEXT,
    idem_key        TEXT,
    codec           TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    state           TEXT    NOT NULL CHECK (state = 'queued' OR state = 'running'
                                OR state = 'succeeded' OR state = 'failed'
                                OR state = 'dead' OR state = 'cancelled'),
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    backoff_ms      INTEGER NOT NULL,
    concurrency     INTEGER,
    key_concurrency INTEGER,
    lease_expiries  INTEGER NOT NULL DEFAULT 0,
    run_at          INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_error      TEXT,
    last_kind       TEXT,
    result          BLOB,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER
);
CREATE INDEX IF NOT EXISTS tasks_ready ON tasks (run_at, id) WHERE state IN ('queued','failed');
CREATE UNIQUE INDEX IF NOT EXISTS tasks_idem ON tasks (idem_key) WHERE idem_key IS NOT NULL;
-- Renewals and the reaper scan this one too (running tasks are few): each index costs
-- every claim and every end a b-tree write.
CREATE INDEX IF NOT EXISTS tasks_running ON tasks (name, key) WHERE state = 'running';
DROP INDEX IF EXISTS tasks_leases;
CREATE TABLE IF NOT EXISTS done (
    seq     INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL
);
";

/// How many times a task may be found with an expired lease (its worker died while
/// running it) before it is dead-lettered as a poison task.
pub(crate) const MAX_LEASE_EXPIRIES: i64 = 3;

/// A task's state, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    Pending,
    Succeeded,
    Dead,
    Cancelled,
}

impl Stored {
    fn from_column(s: &str) -> Stored {
        match s {
            "succeeded" => Stored::Succeeded,
            "dead" => Stored::Dead,
            "cancelled" => Stored::Cancelled,
            _ => Stored::Pending,
        }
    }
}

/// A row as a reader sees it.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) state: Stored,
    pub(crate) attempts: u32,
    pub(crate) result: Option<Vec<u8>>,
    pub(crate) last_error: Option<String>,
    pub(crate) last_kind: Option<String>,
}

/// What one enqueue stores.
pub(crate) struct NewTask {
    pub(crate) name: String,
    pub(crate) key: Option<String>,
    pub(crate) idem_key: Option<String>,
    pub(crate) codec: &'static str,
    pub(crate) payload: Vec<u8>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Duration,
    pub(crate) concurrency: Option<u32>,
    pub(crate) key_concurrency: Option<u32>,
}

/// A task a worker claimed.
#[derive(Clone, Debug)]
pub(crate) struct Claimed {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) codec: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Duration,
}

/// The lease of one claimed attempt: what recording its end needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lease {
    pub(crate) id: i64,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Duration,
}

impl Claimed {
    pub(crate) fn lease(&self) -> Lease {
        Lease {
            id: self.id,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
        }
    }
}

/// How an attempt ended.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    Succeeded(Vec<u8>),
    Failed {
        error: String,
        /// The wire error kind's name (`failed`, `panicked`, `bad-args`, ...).
        kind: &'static str,
        permanent: bool,
    },
}

/// How the store is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash of the process (`kill -9`); a power cut may lose the last commits.
    Normal,
    /// Every commit is fsynced: survives a power cut too.
    Full,
}

/// One connection to the queue. Open one per thread.
pub(crate) struct Store {
    conn: Connection,
}

impl Store {
    pub(crate) fn open(path: &Path, durability: Durability) -> rusqlite::Result<Store> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // Switching to WAL while another process opens the same file can answer "busy"
        // without waiting on the busy timeout: try again for as long as it would wait.
        let _mode: String =
            while_busy(|| conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)))?;
        let sync = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.execute_batch(&format!("PRAGMA synchronous = {sync};"))?;
        // Two processes creating the schema at once: the second waits on the write lock,
        // taken up front (a deferred transaction that reads the schema, then writes, may
        // be refused at once when the other commits in between).
        while_busy(|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(SCHEMA)?;
            tx.commit()
        })?;
        Ok(Store { conn })
    }

    /// Fsyncs every commit from now on ([`Durability::Full`]).
    pub(crate) fn make_full(&self) -> rusqlite::Result<()> {
        self.conn.execute_batch("PRAGMA synchronous = FULL;")
    }

    fn immediate(&mut self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
    }

    /// Stores the task; with a known idempotency key, returns the first task's id.
    /// Stores the tasks in one transaction (a group commit of several submitters' calls):
    /// their ids, in order; with a known idempotency key, the first task's id.
    pub(crate) fn enqueue_many(&mut self, ts: &[&NewTask]) -> rusqlite::Result<Vec<i64>> {
        let now = now_ms();
        let tx = self.immediate()?;
        let mut ids = Vec::with_capacity(ts.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO tasks (name, key, idem_key, codec, payload, state, max_attempts,
                                    backoff_ms, concurrency, key_concurrency, run_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8, ?9, ?10, ?10)
                 ON CONFLICT DO NOTHING",
            )?;
            for t in ts {
                let n = insert.execute(params![
                    t.name,
                    t.key,
                    t.idem_key,
                    t.codec,
                    t.payload,
                    t.max_attempts.max(1),
                    t.backoff.as_millis() as i64,
                    t.concurrency,
                    t.key_concurrency,
                    now
                ])?;
                ids.push(if n == 1 {
                    tx.last_insert_rowid()
                } else {
                    tx.query_row(
                        "SELECT id FROM tasks WHERE idem_key = ?1",
                        [&t.idem_key],
                        |r| r.get(0),
                    )?
                });
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// One round of a worker in one transaction (group commit): records the ends of its
    /// finished attempts, then claims up to `claim.n` runnable tasks among `claim.names`.
    /// Each end applies only while the task is still leased to `owner` for that attempt.
    pub(crate) fn round(
        &mut self,
        owner: &str,
        done: &[(Lease, Outcome)],
        claim: Option<ClaimSpec<'_>>,
    ) -> rusqlite::Result<Round> {
        let now = now_ms();
        let tx = self.immediate()?;
        let (recorded, next_retry) = finish_in(&tx, owner, done, now)?;
        let claimed = match claim {
            Some(c) if c.n > 0 => claim_in(&tx, owner, c, now)?,
            _ => Vec::new(),
        };
        tx.commit()?;
        Ok(Round {
            recorded,
            claimed,
            next_retry,
        })
    }

    /// True when a task among `names` may be runnable now (a read, no lock taken): an idle
    /// worker looks before it opens a write transaction to claim.
    pub(crate) fn ready(&self, names: &str) -> rusqlite::Result<bool> {
        self.conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM tasks
                 WHERE state IN ('queued','failed') AND run_at <= ?1
                   AND name IN (SELECT value FROM json_each(?2)))",
            )?
            .query_row(params![now_ms(), names], |r| r.get(0))
    }

    /// Extends the leases of every task `owner` runs.
    pub(crate) fn renew(&self, owner: &str, lease: Duration) -> rusqlite::Result<usize> {
        let until = now_ms() + lease.as_millis() as i64;
        self.conn.execute(
            "UPDATE tasks SET lease_until = ?1 WHERE state = 'running' AND lease_owner = ?2",
            params![until, owner],
        )
    }

    /// Puts back every running task whose lease expired (its worker died); the cut-short
    /// attempt is not counted, but a task found so [`MAX_LEASE_EXPIRIES`] times is
    /// dead-lettered. Returns (re-queued, dead-lettered).
    pub(crate) fn requeue_expired(&mut self) -> rusqlite::Result<(usize, usize)> {
        let now = now_ms();
        let tx = self.immediate()?;
        let dead = {
            let mut dead = tx.prepare_cached(
                "UPDATE tasks SET state = 'dead', lease_owner = NULL, lease_until = NULL,
                        lease_expiries = lease_expiries + 1, finished_at = ?1, last_kind = 'crashed',
                        last_error = 'its worker died ' || (lease_expiries + 1) || ' times while running it'
                 WHERE state = 'running' AND lease_until < ?1 AND lease_expiries + 1 >= ?2
                 RETURNING id",
            )?;
            let ids: Vec<i64> = dead
                .query_map(params![now, MAX_LEASE_EXPIRIES], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for id in &ids {
                tx.execute("INSERT INTO done (task_id) VALUES (?1)", [id])?;
            }
            ids.len()
        };
        let requeued = tx.execute(
            "UPDATE tasks SET state = 'queued', lease_owner = NULL, lease_until = NULL,
                    attempts = MAX(attempts - 1, 0), lease_expiries = lease_expiries + 1
             WHERE state = 'running' AND lease_until < ?1",
            params![now],
        )?;
        tx.commit()?;
        Ok((requeued, dead))
    }

    /// Gives unfinished tasks back without counting the attempt (a drain past its grace).
    pub(crate) fn release(&mut self, owner: &str, tasks: &[(i64, u32)]) -> rusqlite::Result<usize> {
        let tx = self.immediate()?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE tasks SET state = 'queued', lease_owner = NULL, lease_until = NULL,
                        attempts = MAX(attempts - 1, 0)
                 WHERE id = ?1 AND state = 'running' AND lease_owner = ?2 AND attempts = ?3",
            )?;
            for (id, attempt) in tasks {
                n += stmt.execute(params![id, owner, attempt])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Cancels a task that has not ended; true if it was cancelled.
    pub(crate) fn cancel(&mut self, id: i64) -> rusqlite::Result<bool> {
        let tx = self.immediate()?;
        let n = tx.execute(
            "UPDATE tasks SET state = 'cancelled', finished_at = ?1, lease_owner = NULL,
                    lease_until = NULL
             WHERE id = ?2 AND state IN ('queued','failed','running')",
            params![now_ms(), id],
        )?;
        if n == 1 {
            tx.execute("INSERT INTO done (task_id) VALUES (?1)", [id])?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        Ok(Row {
            id: r.get(0)?,
            name: r.get(1)?,
            state: Stored::from_column(&r.get::<_, String>(2)?),
            attempts: r.get(3)?,
            result: r.get(4)?,
            last_error: r.get(5)?,
            last_kind: r.get(6)?,
        })
    }

    /// The task with this id.
    pub(crate) fn get(&self, id: i64) -> rusqlite::Result<Option<Row>> {
        self.conn
            .prepare_cached(
                "SELECT id, name, state, attempts, result, last_error, last_kind
                 FROM tasks WHERE id = ?1",
            )?
            .query_row([id], Self::row)
            .optional()
    }

    /// The ids of tasks that ended after cursor `seq` (the log only, not the rows), and
    /// the new cursor.
    pub(crate) fn ended_ids_since(&self, seq: i64) -> rusqlite::Result<(Vec<i64>, i64)> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, task_id FROM done WHERE seq > ?1 ORDER BY seq")?;
        let mut last = seq;
        let ids = stmt
            .query_map([seq], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
            .map(|r| {
                r.map(|(s, id)| {
                    last = last.max(s);
                    id
                })
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((ids, last))
    }

    /// The cursor of the last ended task.
    pub(crate) fn last_seq(&self) -> rusqlite::Result<i64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM done", [], |r| r.get(0))
    }

    /// Every dead-lettered task.
    pub(crate) fn dead(&self) -> rusqlite::Result<Vec<Row>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, state, attempts, result, last_error, last_kind
             FROM tasks WHERE state = 'dead' ORDER BY finished_at, id",
        )?;
        let rows = stmt.query_map([], Self::row)?;
        rows.collect()
    }

    /// Counts per state name.
    pub(crate) fn counts(&self) -> rusqlite::Result<Vec<(String, u64)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM tasks GROUP BY state ORDER BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        rows.collect()
    }
}

/// How many runnable tasks a claim passes over for limits before it stops looking.
const MAX_SKIPPED: usize = 256;

/// What a round claims: up to `n` tasks among the JSON array `names`, for `lease`.
#[derive(Clone, Copy)]
pub(crate) struct ClaimSpec<'a> {
    pub(crate) names: &'a str,
    pub(crate) n: usize,
    pub(crate) lease: Duration,
}

/// What a worker's round did.
pub(crate) struct Round {
    /// Per end, whether it was recorded (the lease was still this attempt's).
    pub(crate) recorded: Vec<bool>,
    /// The tasks claimed.
    pub(crate) claimed: Vec<Claimed>,
    /// When the soonest retry this round scheduled is due (ms since the epoch).
    pub(crate) next_retry: Option<i64>,
}

/// Claims up to `c.n` runnable tasks among `c.names` for `owner`, under the route and key
/// limits counted over every worker's running tasks, inside the caller's transaction.
fn claim_in(
    tx: &rusqlite::Transaction<'_>,
    owner: &str,
    c: ClaimSpec<'_>,
    now: i64,
) -> rusqlite::Result<Vec<Claimed>> {
    let n = c.n;
    let until = now + c.lease.as_millis() as i64;
    let mut out = Vec::new();
    // The candidate carries what the claim returns: the update needs no RETURNING
    // (which costs a temporary table per statement).
    let mut candidates = tx.prepare_cached(
        "SELECT id, name, key, concurrency, key_concurrency,
                codec, payload, attempts, max_attempts, backoff_ms FROM tasks
         WHERE state IN ('queued','failed') AND run_at <= ?1
           AND name IN (SELECT value FROM json_each(?2))
         ORDER BY run_at, id LIMIT ?3 OFFSET ?4",
    )?;
    struct Candidate {
        key: Option<String>,
        limit: Option<u32>,
        key_limit: Option<u32>,
        claimed: Claimed,
    }
    // Candidates come a page at a time: a page as large as what is still wanted, after
    // the ones skipped so far (those claimed left the ready set), up to MAX_SKIPPED.
    let mut skipped = 0usize;
    let mut page = |want: usize, skipped: usize| -> rusqlite::Result<Vec<Candidate>> {
        candidates
            .query_map(params![now, c.names, want as i64, skipped as i64], |r| {
                Ok(Candidate {
                    key: r.get(2)?,
                    limit: r.get(3)?,
                    key_limit: r.get(4)?,
                    claimed: Claimed {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        codec: r.get(5)?,
                        payload: r.get(6)?,
                        attempt: r.get::<_, u32>(7)? + 1,
                        max_attempts: r.get(8)?,
                        backoff: Duration::from_millis(r.get::<_, i64>(9)?.max(0) as u64),
                    },
                })
            })?
            .collect()
    };
    let mut per_name: HashMap<String, u32> = HashMap::new();
    let mut per_key: HashMap<(String, String), u32> = HashMap::new();
    let mut count_name =
        tx.prepare_cached("SELECT COUNT(*) FROM tasks WHERE state = 'running' AND name = ?1")?;
    let mut count_key = tx.prepare_cached(
        "SELECT COUNT(*) FROM tasks WHERE state = 'running' AND name = ?1 AND key = ?2",
    )?;
    let mut take = tx.prepare_cached(
        "UPDATE tasks SET state = 'running', lease_owner = ?1, lease_until = ?2,
                attempts = ?3, started_at = ?4
         WHERE id = ?5",
    )?;
    while out.len() < n && skipped <= MAX_SKIPPED {
        let want = n - out.len();
        let rows = page(want, skipped)?;
        let last_page = rows.len() < want;
        for cand in rows {
            let Candidate {
                key,
                limit,
                key_limit,
                claimed,
            } = cand;
            let name = &claimed.name;
            if limit.is_some() && !per_name.contains_key(name) {
                let running = count_name.query_row([name], |r| r.get(0))?;
                per_name.insert(name.clone(), running);
            }
            let key_id = key.map(|k| (name.clone(), k));
            if let (Some(_), Some(k)) = (key_limit, &key_id)
                && !per_key.contains_key(k)
            {
                let running = count_key.query_row(params![k.0, k.1], |r| r.get(0))?;
                per_key.insert(k.clone(), running);
            }
            let name_full = limit.is_some_and(|l| per_name[name] >= l);
            let key_full = match (key_limit, &key_id) {
                (Some(l), Some(k)) => per_key[k] >= l,
                _ => false,
            };
            if name_full || key_full {
                skipped += 1;
                continue;
            }
            if let Some(c) = per_name.get_mut(name) {
                *c += 1;
            }
            if let Some(c) = key_id.as_ref().and_then(|k| per_key.get_mut(k)) {
                *c += 1;
            }
            take.execute(params![owner, until, claimed.attempt, now, claimed.id])?;
            let c = claimed;
            out.push(c);
        }
        if last_page {
            break;
        }
    }
    Ok(out)
}

/// Records finished attempts inside the caller's transaction; each applies only while
/// the task is still leased to `owner` for that attempt. Returns, per outcome, whether
/// it was recorded, and when the soonest retry scheduled is due.
fn finish_in(
    tx: &rusqlite::Transaction<'_>,
    owner: &str,
    done: &[(Lease, Outcome)],
    now: i64,
) -> rusqlite::Result<(Vec<bool>, Option<i64>)> {
    let mut recorded = Vec::with_capacity(done.len());
    let mut next_retry: Option<i64> = None;
    if done.is_empty() {
        return Ok((recorded, next_retry));
    }
    let mut ok = tx.prepare_cached(
        "UPDATE tasks SET state = 'succeeded', result = ?1, finished_at = ?2,
                lease_owner = NULL, lease_until = NULL
         WHERE id = ?3 AND state = 'running' AND lease_owner = ?4 AND attempts = ?5",
    )?;
    let mut failed = tx.prepare_cached(
        "UPDATE tasks SET state = ?1, last_error = ?2, last_kind = ?3, run_at = ?4,
                finished_at = CASE WHEN ?1 = 'dead' THEN ?5 END,
                lease_owner = NULL, lease_until = NULL
         WHERE id = ?6 AND state = 'running' AND lease_owner = ?7 AND attempts = ?8",
    )?;
    let mut log = tx.prepare_cached("INSERT INTO done (task_id) VALUES (?1)")?;
    for (c, outcome) in done {
        let (n, ended) = match outcome {
            Outcome::Succeeded(value) => (
                ok.execute(params![value, now, c.id, owner, c.attempt])?,
                true,
            ),
            Outcome::Failed {
                error,
                kind,
                permanent,
            } => {
                let last = *permanent || c.attempt >= c.max_attempts;
                let state = if last { "dead" } else { "failed" };
                let at = now + backoff(c.backoff, c.attempt).as_millis() as i64;
                let n =
                    failed.execute(params![state, error, kind, at, now, c.id, owner, c.attempt])?;
                if n == 1 && !last {
                    next_retry = Some(next_retry.map_or(at, |t| t.min(at)));
                }
                (n, last)
            }
        };
        if n == 1 && ended {
            log.execute([c.id])?;
        }
        recorded.push(n == 1);
    }
    Ok((recorded, next_retry))
}

/// The delay after failed attempt `attempt` (1-based): `base * 2^(attempt-1)`, at most a
/// minute, drawn from its upper half so that tasks failing together do not retry together.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(Duration::from_secs(60));
    let half = capped / 2;
    half + half.mul_f64(rand::random_range(0.0..=1.0f64))
}

/// Runs `f` again while SQLite answers "busy" (for up to 30 s, as the busy timeout).
fn while_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < give_up =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_jitter() {
        let base = Duration::from_millis(100);
        for _ in 0..50 {
            let d1 = backoff(base, 1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = backoff(base, 3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            assert!(backoff(base, 40) <= Duration::from_secs(60));
        }
    }
}
