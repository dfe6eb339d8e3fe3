//! The merge store: every run received, which run is current per (period, site), and what
//! has been forwarded upstream.

use std::path::Path;

use hrs_core::validate::RunHeader;
use hrs_proto::v1 as pb;
use hrs_store::{Store, StoreError};
use prost::Message as _;
use rusqlite::{OptionalExtension as _, params};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id          TEXT PRIMARY KEY,
    site            TEXT NOT NULL,
    period          TEXT NOT NULL,
    sequence        INTEGER NOT NULL,
    digest          TEXT NOT NULL,
    level           TEXT NOT NULL,
    catalog_version TEXT NOT NULL,
    received_at     TEXT NOT NULL,
    payload         BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS current_runs (
    period   TEXT NOT NULL,
    site     TEXT NOT NULL,
    run_id   TEXT NOT NULL REFERENCES runs(run_id),
    sequence INTEGER NOT NULL,
    PRIMARY KEY (period, site)
);
CREATE TABLE IF NOT EXISTS forwarded (
    period       TEXT PRIMARY KEY,
    digest       TEXT NOT NULL,
    forwarded_at TEXT NOT NULL
);
";

/// What committing a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Stored, and now the site's current run for its period.
    Merged,
    /// Stored, but a newer run of the same site and period stays current.
    Superseded,
    /// Already stored: a re-send, nothing changed.
    Duplicate,
}

/// Why a commit was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A run id arrived again with other content.
    #[error("run {run_id} was already stored with digest {stored}; this copy has {sent}")]
    Conflict {
        /// The reused run id.
        run_id: String,
        /// The digest stored first.
        stored: String,
        /// The digest of this copy.
        sent: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The aggregator's durable state. Backends implement this so they can be swapped and
/// tested against one suite.
pub trait MergeStore: Send + Sync + 'static {
    /// Stores a checked run atomically, and makes it current if it is the newest of its
    /// site and period. Idempotent on the run id.
    fn commit(
        &self,
        run: &pb::Run,
        header: &RunHeader,
        received_at: &str,
    ) -> Result<Commit, MergeError>;

    /// Returns the current run of every site, optionally for one period and one site,
    /// ordered by period then site.
    fn current(&self, period: Option<&str>, site: Option<&str>)
    -> Result<Vec<pb::Run>, StoreError>;

    /// Returns every period that has at least one current run, oldest first.
    fn periods(&self) -> Result<Vec<String>, StoreError>;

    /// Returns the digest last forwarded upstream for a period.
    fn forwarded(&self, period: &str) -> Result<Option<String>, StoreError>;

    /// Records that the merged period with this digest was committed upstream.
    fn mark_forwarded(&self, period: &str, digest: &str, at: &str) -> Result<(), StoreError>;
}

/// The embedded merge store.
#[derive(Debug, Clone)]
pub struct SqliteMergeStore {
    store: Store,
}

impl SqliteMergeStore {
    /// Opens or creates the store.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            store: Store::open(path, SCHEMA)?,
        })
    }

    /// Opens an existing store without writing to it, for `hrs view` beside a running
    /// aggregator.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            store: Store::open_read_only(path)?,
        })
    }
}

fn decode(run_id: &str, payload: &[u8]) -> Result<pb::Run, StoreError> {
    pb::Run::decode(payload).map_err(|e| StoreError::Corrupt(format!("run {run_id}: {e}")))
}

impl MergeStore for SqliteMergeStore {
    fn commit(
        &self,
        run: &pb::Run,
        header: &RunHeader,
        received_at: &str,
    ) -> Result<Commit, MergeError> {
        let sequence = i64::try_from(run.sequence).unwrap_or(i64::MAX);
        let period = header.period.to_string();
        let site = header.site.to_string();
        let payload = run.encode_to_vec();
        self.store.with(|conn| {
            let tx = conn.transaction()?;
            let stored: Option<String> = tx
                .query_row(
                    "SELECT digest FROM runs WHERE run_id = ?1",
                    params![run.run_id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(stored) = stored {
                return if stored == run.digest {
                    Ok(Ok(Commit::Duplicate))
                } else {
                    Ok(Err(MergeError::Conflict {
                        run_id: run.run_id.clone(),
                        stored,
                        sent: run.digest.clone(),
                    }))
                };
            }
            tx.execute(
                "INSERT INTO runs (run_id, site, period, sequence, digest, level,
                                   catalog_version, received_at, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    run.run_id,
                    site,
                    period,
                    sequence,
                    run.digest,
                    run.level,
                    run.catalog_version,
                    received_at,
                    payload
                ],
            )?;
            let newer = tx.execute(
                "INSERT INTO current_runs (period, site, run_id, sequence)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (period, site) DO UPDATE
                 SET run_id = excluded.run_id, sequence = excluded.sequence
                 WHERE excluded.sequence > current_runs.sequence",
                params![period, site, run.run_id, sequence],
            )?;
            tx.commit()?;
            Ok(Ok(if newer == 1 {
                Commit::Merged
            } else {
                Commit::Superseded
            }))
        })?
    }

    fn current(
        &self,
        period: Option<&str>,
        site: Option<&str>,
    ) -> Result<Vec<pb::Run>, StoreError> {
        self.store.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT r.run_id, r.payload FROM current_runs c JOIN runs r USING (run_id)
                 WHERE (?1 IS NULL OR c.period = ?1) AND (?2 IS NULL OR c.site = ?2)
                 ORDER BY c.period, c.site",
            )?;
            let rows = stmt.query_map(params![period, site], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (run_id, payload) = row?;
                out.push(decode(&run_id, &payload)?);
            }
            Ok(out)
        })
    }

    fn periods(&self) -> Result<Vec<String>, StoreError> {
        self.store.with(|conn| {
            let mut stmt =
                conn.prepare("SELECT DISTINCT period FROM current_runs ORDER BY period")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
    }

    fn forwarded(&self, period: &str) -> Result<Option<String>, StoreError> {
        self.store.with(|conn| {
            Ok(conn
                .query_row(
                    "SELECT digest FROM forwarded WHERE period = ?1",
                    params![period],
                    |r| r.get(0),
                )
                .optional()?)
        })
    }

    fn mark_forwarded(&self, period: &str, digest: &str, at: &str) -> Result<(), StoreError> {
        self.store.with(|conn| {
            conn.execute(
                "INSERT INTO forwarded (period, digest, forwarded_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (period) DO UPDATE
                 SET digest = excluded.digest, forwarded_at = excluded.forwarded_at",
                params![period, digest, at],
            )?;
            Ok(())
        })
    }
}
