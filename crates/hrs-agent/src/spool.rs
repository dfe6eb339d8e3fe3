//! The durable spool: a run is written here before any attempt to send it, and removed
//! only after the upstream has acknowledged its durable commit.

use std::path::Path;

use hrs_core::link::LinkRecord;
use hrs_proto::v1 as pb;
use hrs_store::{Store, StoreError};
use prost::Message as _;
use rusqlite::{OptionalExtension as _, params};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    sequence     INTEGER NOT NULL UNIQUE,
    period       TEXT NOT NULL,
    digest       TEXT NOT NULL,
    collected_at TEXT NOT NULL,
    payload      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// A spooled run awaiting delivery.
#[derive(Debug, Clone)]
pub struct Spooled {
    /// The run's id.
    pub run_id: String,
    /// Its sequence number; runs are delivered in this order.
    pub sequence: u64,
    /// The run itself.
    pub run: pb::Run,
}

/// A spooled run as delivery needs it: which run, and how large its encoding is. The run
/// itself stays on disk and is read a chunk at a time as it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The run's id.
    pub run_id: String,
    /// Its sequence number; runs are delivered in this order.
    pub sequence: u64,
    /// Its period.
    pub period: String,
    /// The length of its encoding, in bytes.
    pub size: u64,
}

/// One spooled run's encoding, read in ranges straight from the spool file.
pub struct SpooledBytes {
    store: Store,
    rowid: i64,
    size: u64,
}

impl hrs_proto::chunks::RunBytes for SpooledBytes {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let offset = usize::try_from(offset).map_err(std::io::Error::other)?;
        self.store
            .with(|conn| {
                let blob =
                    conn.blob_open(rusqlite::MAIN_DB, "runs", "payload", self.rowid, true)?;
                let mut data = vec![0u8; len];
                blob.read_at_exact(&mut data, offset)
                    .map_err(|e| StoreError::Corrupt(format!("spooled run: {e}")))?;
                Ok(data)
            })
            .map_err(std::io::Error::other)
    }
}

/// What waits in the spool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Runs waiting.
    pub runs: u64,
    /// Their encoded size, in bytes.
    pub bytes: u64,
    /// When the oldest of them was collected (RFC 3339).
    pub oldest_collected_at: Option<String>,
}

/// How much the spool may hold before it drops its oldest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Total size of the waiting runs, in bytes.
    pub max_bytes: u64,
    /// Age of the oldest waiting run, in seconds.
    pub max_age_seconds: u64,
}

/// A run the spool dropped to stay within its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The run's id.
    pub run_id: String,
    /// Its period.
    pub period: String,
    /// Which limit it broke.
    pub reason: String,
}

/// The agent's spool file.
#[derive(Debug, Clone)]
pub struct Spool {
    store: Store,
}

impl Spool {
    /// Opens or creates the spool.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            store: Store::open(path, SCHEMA)?,
        })
    }

    /// Reserves the next run sequence number.
    ///
    /// Sequences never go back: the counter is persisted, and starts from the clock (in
    /// milliseconds) so a site whose spool was lost still outranks its earlier runs.
    pub async fn next_sequence(&self) -> Result<u64, StoreError> {
        let clock = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let clock = u64::try_from(clock).unwrap_or(0);
        self.store
            .call(move |conn| {
                let tx = conn.transaction()?;
                let last: Option<String> = tx
                    .query_row("SELECT value FROM state WHERE key = 'sequence'", [], |r| {
                        r.get(0)
                    })
                    .optional()?;
                let last: u64 = last.and_then(|v| v.parse().ok()).unwrap_or(0);
                let next = (last + 1).max(clock);
                tx.execute(
                    "INSERT INTO state (key, value) VALUES ('sequence', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![next.to_string()],
                )?;
                tx.commit()?;
                Ok(next)
            })
            .await
    }

    /// Stores a run durably and records its period as collected, in one transaction.
    pub async fn put(&self, run: &pb::Run, collected_at: String) -> Result<(), StoreError> {
        let payload = run.encode_to_vec();
        let (run_id, sequence, period, digest) = (
            run.run_id.clone(),
            i64::try_from(run.sequence).unwrap_or(i64::MAX),
            run.period.clone(),
            run.digest.clone(),
        );
        self.store
            .call(move |conn| {
                let tx = conn.transaction()?;
                tx.execute(
                    "INSERT INTO runs (run_id, sequence, period, digest, collected_at, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![run_id, sequence, period, digest, collected_at, payload],
                )?;
                tx.execute(
                    "INSERT INTO state (key, value) VALUES ('last_period', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![period],
                )?;
                tx.commit()?;
                Ok(())
            })
            .await
    }

    /// Returns every spooled run, oldest first.
    pub async fn pending(&self) -> Result<Vec<Spooled>, StoreError> {
        self.store
            .call(|conn| {
                let mut stmt =
                    conn.prepare("SELECT run_id, sequence, payload FROM runs ORDER BY sequence")?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (run_id, sequence, payload) = row?;
                    let run = pb::Run::decode(payload.as_slice())
                        .map_err(|e| StoreError::Corrupt(format!("run {run_id}: {e}")))?;
                    out.push(Spooled {
                        run_id,
                        sequence: u64::try_from(sequence).unwrap_or(0),
                        run,
                    });
                }
                Ok(out)
            })
            .await
    }

    /// Returns every spooled run's id, sequence, period and size, oldest first, without
    /// reading the runs themselves.
    pub async fn waiting(&self) -> Result<Vec<Waiting>, StoreError> {
        self.store
            .call(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT run_id, sequence, period, LENGTH(payload) FROM runs ORDER BY sequence",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(Waiting {
                        run_id: r.get(0)?,
                        sequence: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        period: r.get(2)?,
                        size: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    /// Opens a spooled run's encoding for reading in ranges.
    pub async fn bytes(&self, run_id: &str) -> Result<SpooledBytes, StoreError> {
        let run_id = run_id.to_owned();
        let (rowid, size) = self
            .store
            .call(move |conn| {
                Ok(conn.query_row(
                    "SELECT rowid, LENGTH(payload) FROM runs WHERE run_id = ?1",
                    params![run_id],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )?)
            })
            .await?;
        Ok(SpooledBytes {
            store: self.store.clone(),
            rowid,
            size: u64::try_from(size).unwrap_or(0),
        })
    }

    /// Removes a run the upstream has committed.
    pub async fn remove(&self, run_id: &str) -> Result<(), StoreError> {
        let run_id = run_id.to_owned();
        self.store
            .call(move |conn| {
                conn.execute("DELETE FROM runs WHERE run_id = ?1", params![run_id])?;
                Ok(())
            })
            .await
    }

    /// Returns the last period this site collected, so the scheduler runs each period once.
    pub async fn last_collected(&self) -> Result<Option<String>, StoreError> {
        self.store
            .call(|conn| {
                Ok(conn
                    .query_row(
                        "SELECT value FROM state WHERE key = 'last_period'",
                        [],
                        |r| r.get(0),
                    )
                    .optional()?)
            })
            .await
    }

    /// Records one delivery attempt: a success resets the count of consecutive failures,
    /// a failure adds one and keeps its reason.
    pub async fn record_attempt(
        &self,
        outcome: Result<(), String>,
        at: String,
    ) -> Result<LinkRecord, StoreError> {
        self.store
            .call(move |conn| {
                let tx = conn.transaction()?;
                let mut link = read_link(&tx)?;
                link.last_attempt_at = Some(at.clone());
                match outcome {
                    Ok(()) => {
                        link.consecutive_failures = 0;
                        link.last_success_at = Some(at);
                        link.last_error = None;
                    }
                    Err(error) => {
                        link.consecutive_failures = link.consecutive_failures.saturating_add(1);
                        link.last_error = Some(error);
                    }
                }
                let text = serde_json::to_string(&link)
                    .map_err(|e| StoreError::Corrupt(format!("link record: {e}")))?;
                tx.execute(
                    "INSERT INTO state (key, value) VALUES ('link', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![text],
                )?;
                tx.commit()?;
                Ok(link)
            })
            .await
    }

    /// Returns what is known of the link to the upstream.
    pub async fn link(&self) -> Result<LinkRecord, StoreError> {
        self.store.call(|conn| read_link(conn)).await
    }

    /// Returns how many runs wait, how large they are, and since when.
    pub async fn backlog(&self) -> Result<Backlog, StoreError> {
        self.store
            .call(|conn| {
                Ok(conn.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), MIN(collected_at)
                     FROM runs",
                    [],
                    |r| {
                        Ok(Backlog {
                            runs: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                            bytes: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                            oldest_collected_at: r.get(2)?,
                        })
                    },
                )?)
            })
            .await
    }

    /// Drops the oldest runs until the spool is within `limits`, never the newest run and
    /// never part of a run, and returns what it dropped so the caller can say so loudly.
    /// Each drop is counted in the spool's state, for `hrs status`.
    pub async fn enforce(
        &self,
        limits: SpoolLimits,
        now: time::OffsetDateTime,
    ) -> Result<Vec<Dropped>, StoreError> {
        self.store
            .call(move |conn| {
                let tx = conn.transaction()?;
                let runs: Vec<(String, String, String, u64)> = {
                    let mut stmt = tx.prepare(
                        "SELECT run_id, period, collected_at, LENGTH(payload) FROM runs
                         ORDER BY sequence",
                    )?;
                    let rows = stmt.query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        ))
                    })?;
                    rows.collect::<Result<_, _>>()?
                };
                let mut total: u64 = runs.iter().map(|r| r.3).sum();
                let mut dropped = Vec::new();
                let newest = runs.len().saturating_sub(1);
                for (i, (run_id, period, collected_at, bytes)) in runs.into_iter().enumerate() {
                    if i == newest {
                        break;
                    }
                    let age = time::OffsetDateTime::parse(
                        &collected_at,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .map(|t| (now - t).whole_seconds())
                    .unwrap_or(0);
                    let reason = if u64::try_from(age).unwrap_or(0) > limits.max_age_seconds {
                        format!("older than {} s", limits.max_age_seconds)
                    } else if total > limits.max_bytes {
                        format!("spool above {} bytes", limits.max_bytes)
                    } else {
                        continue;
                    };
                    tx.execute("DELETE FROM runs WHERE run_id = ?1", params![run_id])?;
                    total -= bytes;
                    dropped.push(Dropped {
                        run_id,
                        period,
                        reason,
                    });
                }
                if !dropped.is_empty() {
                    tx.execute(
                        "INSERT INTO state (key, value) VALUES ('dropped_runs', ?1)
                         ON CONFLICT(key) DO UPDATE SET
                           value = CAST(CAST(state.value AS INTEGER) + ?1 AS TEXT)",
                        params![dropped.len() as i64],
                    )?;
                }
                tx.commit()?;
                Ok(dropped)
            })
            .await
    }

    /// Returns how many runs the spool has dropped to stay within its limits, ever.
    pub async fn dropped_runs(&self) -> Result<u64, StoreError> {
        self.store
            .call(|conn| {
                let value: Option<String> = conn
                    .query_row(
                        "SELECT value FROM state WHERE key = 'dropped_runs'",
                        [],
                        |r| r.get(0),
                    )
                    .optional()?;
                Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
            })
            .await
    }
}

fn read_link(conn: &rusqlite::Connection) -> Result<LinkRecord, StoreError> {
    let text: Option<String> = conn
        .query_row("SELECT value FROM state WHERE key = 'link'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match text {
        None => Ok(LinkRecord::default()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("link record: {e}"))),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: u64, rows: usize) -> pb::Run {
        pb::Run {
            run_id: format!("run-{n}"),
            sequence: n,
            period: format!("2026-W{:02}", 40 + n),
            digest: format!("d{n}"),
            results: vec![pb::ResultSet {
                query_id: "Q".into(),
                rows: vec![pb::Row::default(); rows],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn at(day: u8) -> time::OffsetDateTime {
        time::OffsetDateTime::new_utc(
            time::Date::from_calendar_date(2026, time::Month::November, day).expect("date"),
            time::Time::MIDNIGHT,
        )
    }

    fn rfc3339(t: time::OffsetDateTime) -> String {
        t.format(&time::format_description::well_known::Rfc3339)
            .expect("formats")
    }

    async fn spooled(spool: &Spool) -> Vec<String> {
        spool
            .pending()
            .await
            .expect("pending")
            .into_iter()
            .map(|s| s.run_id)
            .collect()
    }

    #[tokio::test]
    async fn the_oldest_whole_runs_go_first_and_the_newest_always_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&dir.path().join("spool.sqlite")).expect("opens");
        for n in 1..=3 {
            spool
                .put(&run(n, 400), rfc3339(at(n as u8)))
                .await
                .expect("puts");
        }
        let one_run = run(1, 400).encode_to_vec().len() as u64;
        let roomy = SpoolLimits {
            max_bytes: 10 * one_run,
            max_age_seconds: 30 * 86_400,
        };
        assert!(
            spool
                .enforce(roomy, at(4))
                .await
                .expect("enforces")
                .is_empty()
        );

        // Room for two runs: the oldest goes, whole.
        let tight = SpoolLimits {
            max_bytes: 2 * one_run,
            ..roomy
        };
        let dropped = spool.enforce(tight, at(4)).await.expect("enforces");
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].run_id, "run-1");
        assert_eq!(spooled(&spool).await, ["run-2", "run-3"]);

        // Too old: everything but the newest goes, even when the newest is old too.
        let short = SpoolLimits {
            max_age_seconds: 86_400,
            ..roomy
        };
        let dropped = spool.enforce(short, at(20)).await.expect("enforces");
        assert_eq!(dropped.len(), 1);
        assert!(dropped[0].reason.contains("older than"));
        assert_eq!(spooled(&spool).await, ["run-3"]);
        assert_eq!(spool.dropped_runs().await.expect("count"), 2);

        // A newest run larger than the whole limit is still kept.
        let tiny = SpoolLimits {
            max_bytes: 1,
            ..roomy
        };
        assert!(
            spool
                .enforce(tiny, at(4))
                .await
                .expect("enforces")
                .is_empty()
        );
        assert_eq!(spooled(&spool).await, ["run-3"]);
    }
}
