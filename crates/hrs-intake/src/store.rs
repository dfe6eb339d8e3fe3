//! Where the intake keeps what it accepted: one row per distinct (hierarchy, period,
//! digest), so a re-sent submission is recognised and answered with the stored record
//! instead of being kept twice.
//!
//! A submission sent in chunks is staged (hrs-store's [`staging`]) until whole and checked,
//! then copied into its row a chunk at a time; stored payloads are read back a range at a
//! time ([`IntakeStore::last_accepted`]), so no submission is ever held whole.
//!
//! Everything goes through [`IntakeStore`], so another backend can replace SQLite and be
//! tested against the same suite. Periods and times are typed in and out; they become text
//! only in SQL (times as [`rfc3339`]: UTC, whole seconds), and a stored one that does not
//! parse back is reported as corruption.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use hrs_core::Period;
use hrs_core::bytes::RunBytes;
use hrs_core::clock::rfc3339;
use hrs_core::encoded_period::MergedSummary;
use hrs_proto::v1 as pb;
use hrs_store::blob;
use hrs_store::staging::{self, Appended, Offer, Staging};
use hrs_store::{Store, StoreError};
use prost::Message as _;
use rusqlite::{OptionalExtension as _, TransactionBehavior, params};
use sha2::{Digest as _, Sha256};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// The schema; idempotent so every start can apply it. `payload` is the last column: SQLite
/// keeps the `zeroblob` a chunked submission is copied into unmade only when it is the row's
/// last value, and otherwise makes it whole in memory.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS submissions (
    submission_id   TEXT PRIMARY KEY,
    hierarchy_hash  TEXT NOT NULL,
    period          TEXT NOT NULL,
    digest          TEXT NOT NULL,
    level           TEXT NOT NULL,
    catalog_version TEXT NOT NULL,
    client_version  TEXT NOT NULL,
    rows            INTEGER NOT NULL,
    accepted_at     TEXT NOT NULL,
    payload         BLOB NOT NULL,
    UNIQUE (hierarchy_hash, period, digest)
);
CREATE INDEX IF NOT EXISTS submissions_accepted_at ON submissions (accepted_at);
CREATE INDEX IF NOT EXISTS submissions_hierarchy ON submissions (hierarchy_hash, accepted_at);
";

/// The staging of submissions sent in chunks: one upload per submission id, owned by the
/// hierarchy that sends it.
const STAGED_SUBMISSIONS: Staging = Staging {
    uploads: "staged_submissions",
    chunks: "staged_submission_chunks",
    id: "submission_id",
    owner: "hierarchy_hash",
    max_chunk_bytes: hrs_rpc::chunks::MAX_CHUNK_BYTES as u64,
};

/// The outcome a staging is settled with: the submission's row is the record a re-send is
/// answered with, so the staging only says it is done.
const SETTLED: &str = "stored";

/// Unfinished chunked submissions one hierarchy may have staged at once: its connection
/// point sends periods one after another, so beyond the newest few the oldest are
/// abandoned ones; bounds the disk one hierarchy can fill.
const UNFINISHED_PER_HIERARCHY: u32 = 4;

/// The outcome of storing one submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Identifier of the stored submission, the same for every re-send.
    pub submission_id: String,
    /// True when this exact submission was already stored.
    pub duplicate: bool,
    /// When the submission was first accepted, as stored (UTC, whole seconds).
    pub accepted_at: OffsetDateTime,
}

/// One stored submission, without its payload, for listings and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionSummary {
    /// Identifier of the submission.
    pub submission_id: String,
    /// The submitting hierarchy's hashed ID.
    pub hierarchy_hash: String,
    /// The period (ISO week).
    pub period: Period,
    /// The merged period's digest.
    pub digest: String,
    /// The level the data was sent at.
    pub level: String,
    /// When the submission was first accepted (UTC, whole seconds).
    pub accepted_at: OffsetDateTime,
    /// Result rows in the submission, over all sites and queries.
    pub rows: u64,
}

/// Where a submission offered in chunks stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// Being received: this many bytes are held, from the start; `created` when this offer
    /// started the staging.
    Open {
        /// Bytes held durably.
        held: u64,
        /// True when nothing of the submission was staged before this offer.
        created: bool,
    },
    /// Already stored: a re-send is answered with the stored record.
    Stored(Accepted),
}

/// Every read and write the intake makes to its durable state.
pub trait IntakeStore: Send + Sync + 'static {
    /// Returns every stored submission, oldest first.
    fn submissions(
        &self,
    ) -> impl Future<Output = Result<Vec<SubmissionSummary>, StoreError>> + Send;

    /// Returns the merged period stored under `submission_id`.
    fn payload(
        &self,
        submission_id: &str,
    ) -> impl Future<Output = Result<Option<pb::MergedPeriod>, StoreError>> + Send;

    /// Returns the most recently accepted merged period of a hierarchy for a period.
    fn latest(
        &self,
        hierarchy_hash: &str,
        period: &Period,
    ) -> impl Future<Output = Result<Option<pb::MergedPeriod>, StoreError>> + Send;

    /// Returns the encoding of the newest period a hierarchy submitted (its latest accepted
    /// version), read a range at a time: what the intake knows of the hierarchy now, which
    /// decides its updates; a late re-send of an older period does not turn its versions
    /// back.
    fn last_accepted(
        &self,
        hierarchy_hash: &str,
    ) -> impl Future<Output = Result<Option<Arc<dyn RunBytes>>, StoreError>> + Send;

    /// Finds or starts the staging of a submission offered in chunks (`upload.id` its
    /// submission id, `upload.owner` its hierarchy): how much is held, or the stored record
    /// when it is stored already. An offer of other bytes restarts an unfinished staging.
    /// Stagings started before `stale_before` are dropped first.
    fn stage(
        &self,
        upload: &Offer,
        at: OffsetDateTime,
        stale_before: OffsetDateTime,
    ) -> impl Future<Output = Result<Held, StoreError>> + Send;

    /// Appends a chunk durably, if it starts where the held bytes end.
    fn stage_append(
        &self,
        submission_id: &str,
        offset: u64,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// Returns a staged submission's bytes, read a range at a time (reads block).
    fn staged(&self, submission_id: &str, size: u64) -> Arc<dyn RunBytes>;

    /// Stores a whole staged submission that was checked as `summary`, as accepted `at`: its
    /// payload is copied from the staged chunks one at a time and the staging settled, in
    /// one transaction. A submission stored already is answered with its record.
    fn commit_staged(
        &self,
        upload: &Offer,
        summary: &MergedSummary,
        client_version: &str,
        at: OffsetDateTime,
    ) -> impl Future<Output = Result<Accepted, StoreError>> + Send;

    /// Drops a staged submission whose bytes turned out bad, so the next offer starts
    /// afresh.
    fn stage_discard(
        &self,
        submission_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes submissions accepted before `older_than`; returns how many went.
    fn prune(
        &self,
        older_than: OffsetDateTime,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

/// The intake's store in an embedded SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteIntake {
    store: Store,
}

impl SqliteIntake {
    /// Opens (creating if needed) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let store = Store::open(path, &format!("{SCHEMA}{}", STAGED_SUBMISSIONS.schema()))?;
        store.with(payload_last)?;
        Ok(Self { store })
    }

    /// Returns the store's file.
    pub fn path(&self) -> &Path {
        self.store.path()
    }
}

/// Rebuilds a store made before submissions arrived in chunks, whose `payload` comes before
/// `accepted_at`, with `payload` last (see [`SCHEMA`]), once; row ids are kept, as they
/// order the submissions accepted in one second.
fn payload_last(conn: &mut rusqlite::Connection) -> Result<(), StoreError> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('submissions') ORDER BY cid")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if columns.last().is_none_or(|last| last == "payload") {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // The renamed table keeps its indexes, by their names: they go, and come back with the
    // new table.
    tx.execute_batch(&format!(
        "ALTER TABLE submissions RENAME TO submissions_before_chunks;
         DROP INDEX IF EXISTS submissions_accepted_at;
         DROP INDEX IF EXISTS submissions_hierarchy;
         {SCHEMA}
         INSERT INTO submissions (rowid, submission_id, hierarchy_hash, period, digest, level,
             catalog_version, client_version, rows, accepted_at, payload)
         SELECT rowid, submission_id, hierarchy_hash, period, digest, level, catalog_version,
             client_version, rows, accepted_at, payload
         FROM submissions_before_chunks ORDER BY rowid;
         DROP TABLE submissions_before_chunks;"
    ))?;
    tx.commit()?;
    tracing::info!("intake store rebuilt with each submission's payload last");
    Ok(())
}

/// Returns the stable identifier of a submission: hex of the first 16 bytes of SHA-256 over
/// `hierarchy_hash|period|digest`, the period as the submission spells it.
pub fn submission_id(hierarchy_hash: &str, period: &str, digest: &str) -> String {
    let hash = Sha256::digest(format!("{hierarchy_hash}|{period}|{digest}"));
    hash.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Returns `at` as the store keeps it: UTC, whole seconds (see [`rfc3339`]; the fixed width
/// makes stored times order correctly as text).
fn as_stored(at: OffsetDateTime) -> OffsetDateTime {
    let at = at.to_offset(UtcOffset::UTC);
    at - time::Duration::nanoseconds(i64::from(at.nanosecond()))
}

/// A period the store wrote itself: one that does not parse is corruption.
fn stored_period(text: &str) -> Result<Period, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("stored period {text:?}: {e}")))
}

/// A time the store wrote itself (RFC 3339, see [`rfc3339`]).
fn stored_time(text: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| StoreError::Corrupt(format!("stored time {text:?}: {e}")))
}

/// A SQLite integer for a count or size; none of ours reach `i64::MAX`.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The stored record of submission `id`, if it is stored.
fn stored(tx: &rusqlite::Transaction<'_>, id: &str) -> Result<Option<Accepted>, StoreError> {
    let accepted_at: Option<String> = tx
        .query_row(
            "SELECT accepted_at FROM submissions WHERE submission_id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?;
    accepted_at
        .map(|at| {
            Ok(Accepted {
                submission_id: id.to_owned(),
                duplicate: true,
                accepted_at: stored_time(&at)?,
            })
        })
        .transpose()
}

/// The fields of a submission's row, apart from its payload.
struct Row {
    id: String,
    hierarchy_hash: String,
    period: String,
    digest: String,
    level: String,
    catalog_version: String,
    client_version: String,
    rows: i64,
}

impl Row {
    /// Inserts the row with a zeroblob of `size` bytes for the payload to be copied into;
    /// returns its rowid.
    fn insert(
        &self,
        tx: &rusqlite::Transaction<'_>,
        size: i64,
        at: &str,
    ) -> Result<i64, StoreError> {
        tx.execute(
            "INSERT INTO submissions (submission_id, hierarchy_hash, period, digest, level,
                 catalog_version, client_version, rows, payload, accepted_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, zeroblob(?9), ?10)",
            params![
                self.id,
                self.hierarchy_hash,
                self.period,
                self.digest,
                self.level,
                self.catalog_version,
                self.client_version,
                self.rows,
                size,
                at
            ],
        )?;
        Ok(tx.last_insert_rowid())
    }
}

/// A staged submission's bytes, read back from its chunks a range at a time.
struct StagedPayload {
    store: Store,
    submission_id: String,
    size: u64,
}

impl RunBytes for StagedPayload {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.store
            .with(|conn| STAGED_SUBMISSIONS.range(conn, &self.submission_id, offset, len))
            .map_err(std::io::Error::other)
    }
}

fn decode(bytes: &[u8]) -> Result<pb::MergedPeriod, StoreError> {
    pb::MergedPeriod::decode(bytes)
        .map_err(|e| StoreError::Corrupt(format!("submission payload: {e}")))
}

impl IntakeStore for SqliteIntake {
    async fn submissions(&self) -> Result<Vec<SubmissionSummary>, StoreError> {
        self.store
            .call(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT submission_id, hierarchy_hash, period, digest, level, accepted_at, rows
                     FROM submissions ORDER BY accepted_at, rowid",
                )?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, String>(5)?,
                            r.get::<_, i64>(6)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows.into_iter()
                    .map(
                        |(
                            submission_id,
                            hierarchy_hash,
                            period,
                            digest,
                            level,
                            accepted_at,
                            rows,
                        )| {
                            Ok(SubmissionSummary {
                                submission_id,
                                hierarchy_hash,
                                period: stored_period(&period)?,
                                digest,
                                level,
                                accepted_at: stored_time(&accepted_at)?,
                                rows: u64::try_from(rows).unwrap_or(0),
                            })
                        },
                    )
                    .collect()
            })
            .await
    }

    async fn payload(&self, submission_id: &str) -> Result<Option<pb::MergedPeriod>, StoreError> {
        let id = submission_id.to_owned();
        let bytes: Option<Vec<u8>> = self
            .store
            .call(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT payload FROM submissions WHERE submission_id = ?1",
                        params![id],
                        |r| r.get(0),
                    )
                    .optional()?)
            })
            .await?;
        bytes.as_deref().map(decode).transpose()
    }

    async fn latest(
        &self,
        hierarchy_hash: &str,
        period: &Period,
    ) -> Result<Option<pb::MergedPeriod>, StoreError> {
        let (hierarchy_hash, period) = (hierarchy_hash.to_owned(), period.to_string());
        let bytes: Option<Vec<u8>> = self
            .store
            .call(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT payload FROM submissions WHERE hierarchy_hash = ?1 AND period = ?2
                         ORDER BY accepted_at DESC, rowid DESC LIMIT 1",
                        params![hierarchy_hash, period],
                        |r| r.get(0),
                    )
                    .optional()?)
            })
            .await?;
        bytes.as_deref().map(decode).transpose()
    }

    async fn last_accepted(
        &self,
        hierarchy_hash: &str,
    ) -> Result<Option<Arc<dyn RunBytes>>, StoreError> {
        let hierarchy_hash = hierarchy_hash.to_owned();
        let newest: Option<(String, i64)> = self
            .store
            .call(move |conn| {
                // Periods (YYYY-Www) order as text; acceptance times have whole seconds, so
                // the row id orders the versions of one period accepted in one second.
                Ok(conn
                    .query_row(
                        "SELECT submission_id, length(payload) FROM submissions
                         WHERE hierarchy_hash = ?1
                         ORDER BY period DESC, accepted_at DESC, rowid DESC LIMIT 1",
                        params![hierarchy_hash],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?)
            })
            .await?;
        Ok(newest.map(|(submission_id, size)| {
            let what = format!("submission {submission_id}");
            let size = u64::try_from(size).unwrap_or(0);
            let locate = blob::by_key("submissions", "payload", "submission_id", submission_id);
            Arc::new(self.store.blob_reader(what, size, locate)) as Arc<dyn RunBytes>
        }))
    }

    async fn stage(
        &self,
        upload: &Offer,
        at: OffsetDateTime,
        stale_before: OffsetDateTime,
    ) -> Result<Held, StoreError> {
        let (at, stale_before) = (rfc3339(at), rfc3339(stale_before));
        let upload = upload.clone();
        self.store
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if let Some(accepted) = stored(&tx, &upload.id)? {
                    // A staging of it left unfinished (an earlier version also took periods whole)
                    // is done with.
                    STAGED_SUBMISSIONS.settle(&tx, &upload.id, SETTLED)?;
                    tx.commit()?;
                    return Ok(Held::Stored(accepted));
                }
                // Settled, but its submission is gone (pruned since): it starts over.
                let Staging { uploads, id, .. } = STAGED_SUBMISSIONS;
                tx.execute(
                    &format!("DELETE FROM {uploads} WHERE {id} = ?1 AND outcome IS NOT NULL"),
                    params![upload.id],
                )?;
                let held = match STAGED_SUBMISSIONS.stage(
                    &tx,
                    &upload,
                    &at,
                    &stale_before,
                    UNFINISHED_PER_HIERARCHY,
                )? {
                    staging::Staged::Open { held, created } => Held::Open { held, created },
                    // Neither can be: the id names its hierarchy, and settled stagings
                    // without their submission were just dropped.
                    staging::Staged::Settled(outcome) => {
                        return Err(StoreError::Corrupt(format!(
                            "staged submission {} settled as {outcome:?} without a stored row",
                            upload.id
                        )));
                    }
                    staging::Staged::Conflict { stored, sent } => {
                        return Err(StoreError::Corrupt(format!(
                            "staged submission {}: {stored} conflicts with {sent}",
                            upload.id
                        )));
                    }
                };
                tx.commit()?;
                Ok(held)
            })
            .await
    }

    async fn stage_append(
        &self,
        submission_id: &str,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Appended, StoreError> {
        let id = submission_id.to_owned();
        self.store
            .call(move |conn| STAGED_SUBMISSIONS.append(conn, &id, offset, &data))
            .await
    }

    fn staged(&self, submission_id: &str, size: u64) -> Arc<dyn RunBytes> {
        Arc::new(StagedPayload {
            store: self.store.clone(),
            submission_id: submission_id.to_owned(),
            size,
        })
    }

    async fn commit_staged(
        &self,
        upload: &Offer,
        summary: &MergedSummary,
        client_version: &str,
        at: OffsetDateTime,
    ) -> Result<Accepted, StoreError> {
        let period = summary.period.to_string();
        let row = Row {
            id: submission_id(&summary.hierarchy_hash, &period, &summary.digest),
            hierarchy_hash: summary.hierarchy_hash.clone(),
            period,
            digest: summary.digest.clone(),
            level: summary.level.as_str().to_owned(),
            catalog_version: summary.catalog_version.clone(),
            client_version: client_version.to_owned(),
            rows: int(summary.rows),
        };
        if row.id != upload.id {
            return Err(StoreError::Corrupt(format!(
                "staged submission {} holds submission {}",
                upload.id, row.id
            )));
        }
        let upload = upload.clone();
        let (at, now) = (as_stored(at), rfc3339(at));
        self.store
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // Stored meanwhile (by another stream of it, or sent whole): its record
                // answers, and the staging is done with.
                if let Some(accepted) = stored(&tx, &row.id)? {
                    STAGED_SUBMISSIONS.settle(&tx, &upload.id, SETTLED)?;
                    tx.commit()?;
                    return Ok(accepted);
                }
                // The staging checked a moment ago must still be the same, whole and open: it
                // may have been swept, evicted or replaced meanwhile.
                if !STAGED_SUBMISSIONS.intact(&tx, &upload)? {
                    return Err(StoreError::Corrupt(format!(
                        "submission {} changed in staging while it was committed; send it again",
                        upload.id
                    )));
                }
                let rowid = row.insert(&tx, int(upload.size), &now)?;
                STAGED_SUBMISSIONS.copy_into(&tx, &upload.id, "submissions", "payload", rowid)?;
                STAGED_SUBMISSIONS.settle(&tx, &upload.id, SETTLED)?;
                tx.commit()?;
                Ok(Accepted {
                    submission_id: row.id,
                    duplicate: false,
                    accepted_at: at,
                })
            })
            .await
    }

    async fn stage_discard(&self, submission_id: &str) -> Result<(), StoreError> {
        let id = submission_id.to_owned();
        self.store
            .call(move |conn| STAGED_SUBMISSIONS.discard(conn, &id))
            .await
    }

    async fn prune(&self, older_than: OffsetDateTime) -> Result<usize, StoreError> {
        let cutoff = rfc3339(older_than);
        self.store
            .call(move |conn| {
                Ok(conn.execute(
                    "DELETE FROM submissions WHERE accepted_at < ?1",
                    params![cutoff],
                )?)
            })
            .await
    }
}
