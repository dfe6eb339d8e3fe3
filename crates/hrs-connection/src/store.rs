//! The connection point's outbox: every merged period it was offered, as received, and how
//! far its delivery got. One row per period; a newer merged version of a period replaces
//! the older one and is delivered again.
//!
//! The role writes only through [`OutboxStore`], so another backend can replace SQLite and
//! be tested against the same suite. The connection tool reads the SQLite file directly
//! (read-only) through [`SqliteOutbox::open_existing`].
//!
//! Periods and times are typed in and out; they become text only in SQL (times as
//! [`rfc3339`]: UTC, whole seconds), and a stored one that does not parse back is reported
//! as corruption.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hrs_core::Level;
use hrs_core::Period;
use hrs_core::bytes::RunBytes;
use hrs_core::clock::rfc3339;
use hrs_proto::v1 as pb;
use hrs_store::blob::BlobAt;
use hrs_store::staging::{self, Appended, Staged, Staging};
use hrs_store::{Store, StoreError};
use prost::Message as _;
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The schema; idempotent so every start can apply it.
const SCHEMA: &str = "
-- `payload` is empty for every period stored now: payloads live in `period_payloads`, so
-- recording a period's delivery never rewrites its bytes. Stores written before keep the
-- payloads they hold here; readers take either.
CREATE TABLE IF NOT EXISTS periods (
    period        TEXT PRIMARY KEY,
    digest        TEXT NOT NULL,
    level         TEXT NOT NULL,
    payload       BLOB NOT NULL,
    received_at   TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'submitted', 'bundled')),
    submission_id TEXT,
    bundle_path   TEXT,
    answered_at   TEXT
);
-- A stored period's encoding as received: inserted whole, never updated. The payload is the
-- last column, so SQLite can write it from a zeroblob a chunk at a time without making
-- the blob in memory first.
CREATE TABLE IF NOT EXISTS period_payloads (
    period  TEXT PRIMARY KEY,
    payload BLOB NOT NULL
);
-- Every update manifest the intake answered, online or carried back by the connection
-- tool; the newest is what `hrs status` shows.
CREATE TABLE IF NOT EXISTS manifests (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('online', 'import')),
    manifest    BLOB NOT NULL
);
-- The update-check schedule: one row.
CREATE TABLE IF NOT EXISTS update_checks (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    last_check_at TEXT NOT NULL,
    last_error    TEXT,
    next_check_at TEXT NOT NULL
);
-- Update packages imported by the connection tool.
CREATE TABLE IF NOT EXISTS packages (
    update_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    path        TEXT NOT NULL,
    imported_at TEXT NOT NULL,
    PRIMARY KEY (update_id, name)
);
";

/// How far a period's delivery got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Received, not yet delivered.
    Pending,
    /// Accepted by the intake (online).
    Submitted,
    /// Written to a bundle by the connection tool (offline); still unsent until the
    /// intake's acknowledgement is imported.
    Bundled,
}

impl State {
    /// Returns the state's name as stored and shown.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Submitted => "submitted",
            Self::Bundled => "bundled",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "pending" => Ok(Self::Pending),
            "submitted" => Ok(Self::Submitted),
            "bundled" => Ok(Self::Bundled),
            other => Err(StoreError::Corrupt(format!(
                "unknown period state {other:?}"
            ))),
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an offer did to the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// The period was new.
    New,
    /// An older version of the period was replaced and will be delivered again.
    Replaced,
    /// The same version was already stored; nothing changed.
    Duplicate,
}

impl Offered {
    /// The outcome's name, as a period's staging records it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Replaced => "replaced",
            Self::Duplicate => "duplicate",
        }
    }
}

/// One stored period and its delivery state, for status and polling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodState {
    /// The period (ISO week).
    pub period: Period,
    /// Digest of the merged period as received.
    pub digest: String,
    /// The level the period was collected at.
    pub level: String,
    /// When it was received (whole seconds, as stored).
    pub received_at: OffsetDateTime,
    /// How far its delivery got.
    pub state: State,
    /// The intake's identifier, once submitted.
    pub submission_id: Option<String>,
    /// The bundle file, once bundled.
    pub bundle_path: Option<PathBuf>,
    /// When it was delivered (submitted or bundled).
    pub answered_at: Option<OffsetDateTime>,
}

/// Every read and write the connection point makes to its durable state.
pub trait OutboxStore: Send + Sync + 'static {
    /// Returns the merged periods the intake has not acknowledged (pending or only
    /// bundled), as received, oldest period first.
    fn pending(&self) -> impl Future<Output = Result<Vec<pb::MergedPeriod>, StoreError>> + Send;

    /// Records that the intake accepted `period` at `digest`, answering `at`; returns false
    /// when a newer version arrived meanwhile (which then stays pending).
    fn mark_submitted(
        &self,
        period: &Period,
        digest: &str,
        submission_id: &str,
        at: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Returns every stored period's delivery state, in period order.
    fn states(&self) -> impl Future<Output = Result<Vec<PeriodState>, StoreError>> + Send;

    /// Returns every stored merged period as received, in period order.
    fn stored(&self) -> impl Future<Output = Result<Vec<pb::MergedPeriod>, StoreError>> + Send;

    /// Keeps an update manifest the intake answered, from `source`.
    fn record_manifest(
        &self,
        manifest: &pb::UpdateManifest,
        source: ManifestSource,
        received_at: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records an update check: when it ran, why it failed if it did, and when the next
    /// one is due.
    fn record_check(
        &self,
        check: &CheckRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The last update check, if any ran.
    fn last_check(&self) -> impl Future<Output = Result<Option<CheckRecord>, StoreError>> + Send;

    /// Returns the periods the intake has not acknowledged (pending or only bundled), named
    /// without their payloads, oldest period first.
    fn unsent(&self) -> impl Future<Output = Result<Vec<Unsent>, StoreError>> + Send;

    /// A stored period's encoding as received, read a range at a time (reads block: run
    /// them off the runtime). It is read in one snapshot from its first read: a newer
    /// version stored meanwhile is never mixed in, and a payload first read after it was
    /// replaced fails.
    fn payload(&self, unsent: &Unsent) -> Arc<dyn RunBytes>;

    /// Starts staging a period sent in chunks, or finds it staged: how much is held, or
    /// that it is stored. Stagings untouched since `stale_before` are dropped first.
    fn stage(
        &self,
        offer: &pb::PeriodOffer,
        at: OffsetDateTime,
        stale_before: OffsetDateTime,
    ) -> impl Future<Output = Result<Staged, StoreError>> + Send;

    /// Appends a chunk of a staged period durably, if it starts where the held bytes end.
    fn stage_append(
        &self,
        offer: &pb::PeriodOffer,
        offset: u64,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// A staged period's bytes, read a range at a time (reads block: run them off the
    /// runtime).
    fn staged_bytes(&self, offer: &pb::PeriodOffer) -> Arc<dyn RunBytes>;

    /// Stores a whole staged period, checked, for delivery, as received `at`, in the one
    /// transaction that settles its staging; `level` is the level it was collected at.
    fn commit_staged(
        &self,
        offer: &pb::PeriodOffer,
        level: Level,
        at: OffsetDateTime,
    ) -> impl Future<Output = Result<Offered, StoreError>> + Send;

    /// Forgets a staged period (refused on its content).
    fn stage_discard(
        &self,
        offer: &pb::PeriodOffer,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A stored period the intake has not acknowledged, named without its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsent {
    /// The period.
    pub period: Period,
    /// Its merged digest as received.
    pub digest: String,
    /// The level it was collected at.
    pub level: Level,
    /// Length of its encoding.
    pub size: u64,
}

/// Finds a stored period's payload by period and digest, so a newer version stored
/// meanwhile is never read in its place.
fn locate_payload(
    conn: &Connection,
    period: &str,
    digest: &str,
) -> Result<Option<BlobAt>, StoreError> {
    let found: Option<(Option<i64>, i64)> = conn
        .query_row(
            "SELECT pp.rowid, p.rowid FROM periods p
             LEFT JOIN period_payloads pp USING (period)
             WHERE p.period = ?1 AND p.digest = ?2",
            params![period, digest],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(found.map(|found| match found {
        (Some(rowid), _) => BlobAt {
            table: "period_payloads",
            column: "payload",
            rowid,
        },
        // Stored before payloads had a table of their own.
        (None, rowid) => BlobAt {
            table: "periods",
            column: "payload",
            rowid,
        },
    }))
}

/// The staging of periods sent in chunks.
const STAGED_PERIODS: Staging = Staging {
    uploads: "staged_periods",
    chunks: "staged_period_chunks",
    id: "upload_id",
    owner: "hierarchy_hash",
    max_chunk_bytes: hrs_rpc::chunks::MAX_CHUNK_BYTES as u64,
};

/// Unfinished period uploads kept per hierarchy, the one being offered included: an
/// aggregator offers one period at a time, and a newer version replaces an older one.
const OPEN_UPLOADS: u32 = 4;

/// The staging a period's offer names: one per period and content.
fn upload_of(offer: &pb::PeriodOffer) -> staging::Offer {
    staging::Offer {
        id: format!("{}/{}", offer.period, offer.sha256),
        owner: offer.hierarchy_hash.clone(),
        size: offer.size,
        sha256: offer.sha256.clone(),
    }
}

/// A staged period's bytes, read from the staging a range at a time.
struct StagedBytes {
    store: Store,
    upload: String,
    size: u64,
}

impl RunBytes for StagedBytes {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.store
            .with(|conn| STAGED_PERIODS.range(conn, &self.upload, offset, len))
            .map_err(std::io::Error::other)
    }
}

/// Where a manifest came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestSource {
    /// The connection point's own update check.
    Online,
    /// Carried back by the connection tool and imported.
    Import,
}

impl ManifestSource {
    /// The source's name as stored and shown.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Import => "import",
        }
    }
}

/// The newest manifest kept, with when and how it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredManifest {
    /// When it arrived.
    pub received_at: OffsetDateTime,
    /// `online` or `import`.
    pub source: String,
    /// The manifest itself.
    pub manifest: pb::UpdateManifest,
}

/// One update check, as `hrs status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRecord {
    /// When it ran (stored to the whole second).
    pub last_check_at: OffsetDateTime,
    /// Why it failed, when it did.
    pub last_error: Option<String>,
    /// When the next check is due (stored to the whole second).
    pub next_check_at: OffsetDateTime,
}

/// An update package the connection tool imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedPackage {
    /// The update it belongs to.
    pub update_id: String,
    /// Its file name.
    pub name: String,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Where it was put.
    pub path: PathBuf,
}

/// One period the intake acknowledged, as the connection tool carried it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    /// The period.
    pub period: Period,
    /// Digest of the period as this connection point received it (not as sent).
    pub received_digest: String,
    /// The intake's identifier of the submission.
    pub submission_id: String,
}

/// What an import changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Periods marked accepted now.
    pub accepted: Vec<Period>,
    /// Periods acknowledged for a version this store no longer holds (a newer version
    /// arrived since `prepare`), left unsent.
    pub stale: Vec<Period>,
    /// Periods that were already accepted.
    pub already: Vec<Period>,
}

/// The outbox in an embedded SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteOutbox {
    store: Store,
}

impl SqliteOutbox {
    /// Opens (creating if needed) the outbox file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            store: Store::open(path, &format!("{SCHEMA}{}", STAGED_PERIODS.schema()))?,
        })
    }

    /// Opens an existing outbox read-only, for tools; `None` when the file does not exist.
    pub fn open_existing(path: &Path) -> Result<Option<Self>, StoreError> {
        if !path.is_file() {
            return Ok(None);
        }
        Ok(Some(Self {
            store: Store::open_read_only(path)?,
        }))
    }

    /// Returns the store's file.
    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// Returns every stored period's delivery state, on the calling thread.
    pub fn states_blocking(&self) -> Result<Vec<PeriodState>, StoreError> {
        self.store.with(read_states)
    }

    /// Returns every stored merged period, on the calling thread.
    pub fn stored_blocking(&self) -> Result<Vec<pb::MergedPeriod>, StoreError> {
        self.store.with(read_stored)
    }

    /// Opens an existing outbox for writing, for the connection tool's `prepare` and
    /// `import`; `None` when the file does not exist.
    pub fn open_existing_writable(path: &Path) -> Result<Option<Self>, StoreError> {
        if !path.is_file() {
            return Ok(None);
        }
        Self::open(path).map(Some)
    }

    /// Returns every stored period named without its payload (which [`OutboxStore::payload`]
    /// reads a range at a time), oldest first, on the calling thread.
    pub fn named_blocking(&self) -> Result<Vec<Unsent>, StoreError> {
        self.store.with(|conn| read_named(conn, ""))
    }

    /// Returns the unacknowledged periods named without their payloads, oldest first, on
    /// the calling thread.
    pub fn unsent_blocking(&self) -> Result<Vec<Unsent>, StoreError> {
        self.store.with(read_unsent)
    }

    /// Records, on the calling thread, that `periods` at their digests went into the
    /// bundle at `path`; returns the periods recorded (a newer version is left pending).
    pub fn mark_bundled_blocking(
        &self,
        periods: &[(Period, String)],
        path: &Path,
        at: OffsetDateTime,
    ) -> Result<Vec<Period>, StoreError> {
        let (path, at) = (path.to_string_lossy().into_owned(), rfc3339(at));
        self.store.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut marked = Vec::new();
            for (period, digest) in periods {
                let changed = tx.execute(
                    "UPDATE periods SET state = 'bundled', bundle_path = ?3, answered_at = ?4
                     WHERE period = ?1 AND digest = ?2 AND state IN ('pending', 'bundled')",
                    params![period.to_string(), digest, path, at],
                )?;
                if changed == 1 {
                    marked.push(*period);
                }
            }
            tx.commit()?;
            Ok(marked)
        })
    }

    /// Applies what the connection tool carried back, all or nothing, on the calling
    /// thread: marks each acknowledged period accepted (if this store still holds the
    /// version that was sent), keeps the manifest (when the update check completed), and
    /// records the imported packages.
    pub fn import_blocking(
        &self,
        acknowledged: &[Acknowledged],
        manifest: Option<&pb::UpdateManifest>,
        packages: &[ImportedPackage],
        at: OffsetDateTime,
    ) -> Result<ImportOutcome, StoreError> {
        let (manifest, at) = (manifest.map(|m| m.encode_to_vec()), rfc3339(at));
        self.store.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut outcome = ImportOutcome::default();
            for ack in acknowledged {
                let period = ack.period.to_string();
                let stored: Option<(String, String)> = tx
                    .query_row(
                        "SELECT digest, state FROM periods WHERE period = ?1",
                        params![period],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                match stored {
                    Some((digest, state)) if digest == ack.received_digest => {
                        if state == "submitted" {
                            outcome.already.push(ack.period);
                        } else {
                            tx.execute(
                                "UPDATE periods SET state = 'submitted', submission_id = ?2,
                                     answered_at = ?3
                                 WHERE period = ?1",
                                params![period, ack.submission_id, at],
                            )?;
                            outcome.accepted.push(ack.period);
                        }
                    }
                    _ => outcome.stale.push(ack.period),
                }
            }
            if let Some(manifest) = &manifest {
                tx.execute(
                    "INSERT INTO manifests (received_at, source, manifest) VALUES (?1, 'import', ?2)",
                    params![at, manifest],
                )?;
            }
            for package in packages {
                tx.execute(
                    "INSERT INTO packages (update_id, name, sha256, size, path, imported_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (update_id, name) DO UPDATE SET
                         sha256 = excluded.sha256, size = excluded.size, path = excluded.path,
                         imported_at = excluded.imported_at",
                    params![
                        package.update_id,
                        package.name,
                        package.sha256,
                        i64::try_from(package.size).unwrap_or(i64::MAX),
                        package.path.to_string_lossy(),
                        at
                    ],
                )?;
            }
            tx.commit()?;
            Ok(outcome)
        })
    }

    /// The newest manifest kept, on the calling thread.
    pub fn latest_manifest_blocking(&self) -> Result<Option<StoredManifest>, StoreError> {
        self.store.with(|conn| {
            let row: Option<(String, String, Vec<u8>)> = conn
                .query_row(
                    "SELECT received_at, source, manifest FROM manifests ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            row.map(|(received_at, source, bytes)| {
                Ok(StoredManifest {
                    received_at: stored_time(&received_at)?,
                    source,
                    manifest: pb::UpdateManifest::decode(bytes.as_slice())
                        .map_err(|e| StoreError::Corrupt(format!("manifest: {e}")))?,
                })
            })
            .transpose()
        })
    }

    /// The imported packages, on the calling thread.
    pub fn packages_blocking(&self) -> Result<Vec<ImportedPackage>, StoreError> {
        self.store.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT update_id, name, sha256, size, path FROM packages ORDER BY update_id, name",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(ImportedPackage {
                        update_id: r.get(0)?,
                        name: r.get(1)?,
                        sha256: r.get(2)?,
                        size: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        path: PathBuf::from(r.get::<_, String>(4)?),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// The last update check, on the calling thread.
    pub fn last_check_blocking(&self) -> Result<Option<CheckRecord>, StoreError> {
        self.store.with(read_check)
    }
}

fn read_check(conn: &mut Connection) -> Result<Option<CheckRecord>, StoreError> {
    let row: Option<(String, Option<String>, String)> = conn
        .query_row(
            "SELECT last_check_at, last_error, next_check_at FROM update_checks WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    row.map(|(last_check_at, last_error, next_check_at)| {
        Ok(CheckRecord {
            last_check_at: stored_time(&last_check_at)?,
            last_error,
            next_check_at: stored_time(&next_check_at)?,
        })
    })
    .transpose()
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

/// Records a period as received and pending, replacing an older version of it and its
/// payload; the caller inserts the new payload into `period_payloads`.
fn put_period(
    tx: &rusqlite::Transaction<'_>,
    period: &str,
    digest: &str,
    level: &str,
    received_at: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM period_payloads WHERE period = ?1",
        params![period],
    )?;
    tx.execute(
        "INSERT INTO periods (period, digest, level, payload, received_at, state)
         VALUES (?1, ?2, ?3, X'', ?4, 'pending')
         ON CONFLICT (period) DO UPDATE SET
             digest = excluded.digest, level = excluded.level,
             payload = excluded.payload, received_at = excluded.received_at,
             state = 'pending', submission_id = NULL, bundle_path = NULL,
             answered_at = NULL",
        params![period, digest, level, received_at],
    )?;
    Ok(())
}

/// The periods the intake has not acknowledged, named without their payloads, oldest first.
fn read_unsent(conn: &mut Connection) -> Result<Vec<Unsent>, StoreError> {
    read_named(conn, "WHERE p.state IN ('pending', 'bundled')")
}

/// The stored periods `filter` keeps, named without their payloads, oldest first.
fn read_named(conn: &mut Connection, filter: &str) -> Result<Vec<Unsent>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT p.period, p.digest, p.level, COALESCE(length(pp.payload), length(p.payload))
         FROM periods p LEFT JOIN period_payloads pp USING (period)
         {filter} ORDER BY p.period"
    ))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(period, digest, level, size)| {
            Ok(Unsent {
                period: stored_period(&period)?,
                digest,
                level: level.parse().map_err(|e| {
                    StoreError::Corrupt(format!("period {period}: level {level:?}: {e}"))
                })?,
                size: u64::try_from(size).unwrap_or(0),
            })
        })
        .collect()
}

fn read_pending(conn: &mut Connection) -> Result<Vec<pb::MergedPeriod>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT COALESCE(pp.payload, p.payload) FROM periods p
         LEFT JOIN period_payloads pp USING (period)
         WHERE p.state IN ('pending', 'bundled') ORDER BY p.period",
    )?;
    let payloads = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    payloads.iter().map(|p| decode(p)).collect()
}

fn decode(bytes: &[u8]) -> Result<pb::MergedPeriod, StoreError> {
    pb::MergedPeriod::decode(bytes).map_err(|e| StoreError::Corrupt(format!("period payload: {e}")))
}

fn read_states(conn: &mut Connection) -> Result<Vec<PeriodState>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT period, digest, level, received_at, state, submission_id, bundle_path, answered_at
         FROM periods ORDER BY period",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(
            |(
                period,
                digest,
                level,
                received_at,
                state,
                submission_id,
                bundle_path,
                answered_at,
            )| {
                Ok(PeriodState {
                    period: stored_period(&period)?,
                    digest,
                    level,
                    received_at: stored_time(&received_at)?,
                    state: State::parse(&state)?,
                    submission_id,
                    bundle_path: bundle_path.map(PathBuf::from),
                    answered_at: answered_at.as_deref().map(stored_time).transpose()?,
                })
            },
        )
        .collect()
}

fn read_stored(conn: &mut Connection) -> Result<Vec<pb::MergedPeriod>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT COALESCE(pp.payload, p.payload) FROM periods p
         LEFT JOIN period_payloads pp USING (period) ORDER BY p.period",
    )?;
    let payloads = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    payloads.iter().map(|p| decode(p)).collect()
}

impl OutboxStore for SqliteOutbox {
    async fn pending(&self) -> Result<Vec<pb::MergedPeriod>, StoreError> {
        self.store.call(read_pending).await
    }

    async fn mark_submitted(
        &self,
        period: &Period,
        digest: &str,
        submission_id: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (period, digest, id, at) = (
            period.to_string(),
            digest.to_owned(),
            submission_id.to_owned(),
            rfc3339(at),
        );
        self.store
            .call(move |conn| {
                let changed = conn.execute(
                    "UPDATE periods SET state = 'submitted', submission_id = ?3, answered_at = ?4
                     WHERE period = ?1 AND digest = ?2 AND state IN ('pending', 'bundled')",
                    params![period, digest, id, at],
                )?;
                Ok(changed == 1)
            })
            .await
    }

    async fn states(&self) -> Result<Vec<PeriodState>, StoreError> {
        self.store.call(read_states).await
    }

    async fn stored(&self) -> Result<Vec<pb::MergedPeriod>, StoreError> {
        self.store.call(read_stored).await
    }

    async fn record_manifest(
        &self,
        manifest: &pb::UpdateManifest,
        source: ManifestSource,
        received_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (bytes, source, at) = (
            manifest.encode_to_vec(),
            source.as_str(),
            rfc3339(received_at),
        );
        self.store
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO manifests (received_at, source, manifest) VALUES (?1, ?2, ?3)",
                    params![at, source, bytes],
                )?;
                Ok(())
            })
            .await
    }

    async fn record_check(&self, check: &CheckRecord) -> Result<(), StoreError> {
        let (last_check_at, last_error, next_check_at) = (
            rfc3339(check.last_check_at),
            check.last_error.clone(),
            rfc3339(check.next_check_at),
        );
        self.store
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO update_checks (id, last_check_at, last_error, next_check_at)
                     VALUES (1, ?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET last_check_at = excluded.last_check_at,
                         last_error = excluded.last_error, next_check_at = excluded.next_check_at",
                    params![last_check_at, last_error, next_check_at],
                )?;
                Ok(())
            })
            .await
    }

    async fn last_check(&self) -> Result<Option<CheckRecord>, StoreError> {
        self.store.call(read_check).await
    }

    async fn unsent(&self) -> Result<Vec<Unsent>, StoreError> {
        self.store.call(read_unsent).await
    }

    fn payload(&self, unsent: &Unsent) -> Arc<dyn RunBytes> {
        let (period, digest) = (unsent.period.to_string(), unsent.digest.clone());
        Arc::new(
            self.store
                .blob_reader(format!("period {period}"), unsent.size, move |conn| {
                    locate_payload(conn, &period, &digest)
                }),
        )
    }

    async fn stage(
        &self,
        offer: &pb::PeriodOffer,
        at: OffsetDateTime,
        stale_before: OffsetDateTime,
    ) -> Result<Staged, StoreError> {
        let (upload, at, stale_before) = (upload_of(offer), rfc3339(at), rfc3339(stale_before));
        self.store
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let staged =
                    STAGED_PERIODS.stage(&tx, &upload, &at, &stale_before, OPEN_UPLOADS)?;
                tx.commit()?;
                Ok(staged)
            })
            .await
    }

    async fn stage_append(
        &self,
        offer: &pb::PeriodOffer,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Appended, StoreError> {
        let upload = upload_of(offer).id;
        self.store
            .call(move |conn| STAGED_PERIODS.append(conn, &upload, offset, &data))
            .await
    }

    fn staged_bytes(&self, offer: &pb::PeriodOffer) -> Arc<dyn RunBytes> {
        Arc::new(StagedBytes {
            store: self.store.clone(),
            upload: upload_of(offer).id,
            size: offer.size,
        })
    }

    async fn commit_staged(
        &self,
        offer: &pb::PeriodOffer,
        level: Level,
        at: OffsetDateTime,
    ) -> Result<Offered, StoreError> {
        let upload = upload_of(offer);
        let (period, digest, received_at) =
            (offer.period.clone(), offer.digest.clone(), rfc3339(at));
        self.store
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // The staging checked a moment ago must still be whole and open: a newer
                // offer may have evicted it meanwhile.
                if !STAGED_PERIODS.intact(&tx, &upload)? {
                    return Err(StoreError::Corrupt(format!(
                        "period {period} changed in staging while it was stored; send it again"
                    )));
                }
                let existing: Option<String> = tx
                    .query_row(
                        "SELECT digest FROM periods WHERE period = ?1",
                        params![period],
                        |r| r.get(0),
                    )
                    .optional()?;
                let offered = match existing {
                    Some(stored) if stored == digest => Offered::Duplicate,
                    Some(_) => Offered::Replaced,
                    None => Offered::New,
                };
                if offered != Offered::Duplicate {
                    put_period(&tx, &period, &digest, level.as_str(), &received_at)?;
                    tx.execute(
                        "INSERT INTO period_payloads (period, payload) VALUES (?1, zeroblob(?2))",
                        params![period, i64::try_from(upload.size).unwrap_or(i64::MAX)],
                    )?;
                    let rowid = tx.last_insert_rowid();
                    STAGED_PERIODS.copy_into(
                        &tx,
                        &upload.id,
                        "period_payloads",
                        "payload",
                        rowid,
                    )?;
                }
                STAGED_PERIODS.settle(&tx, &upload.id, offered.as_str())?;
                tx.commit()?;
                Ok(offered)
            })
            .await
    }

    async fn stage_discard(&self, offer: &pb::PeriodOffer) -> Result<(), StoreError> {
        let upload = upload_of(offer).id;
        self.store
            .call(move |conn| STAGED_PERIODS.discard(conn, &upload))
            .await
    }
}
