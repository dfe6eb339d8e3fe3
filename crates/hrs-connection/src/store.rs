//! The connection point's outbox: every merged period it was offered, as received, and how
//! far its delivery got. One row per period; a newer merged version of a period replaces
//! the older one and is delivered again.
//!
//! The role writes only through [`OutboxStore`], so another backend can replace SQLite and
//! be tested against the same suite. The connection tool reads the SQLite file directly
//! (read-only) through [`SqliteOutbox::open_existing`].

use std::future::Future;
use std::path::{Path, PathBuf};

use hrs_proto::v1 as pb;
use hrs_store::{Store, StoreError};
use prost::Message as _;
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use time::OffsetDateTime;

/// The schema; idempotent so every start can apply it.
const SCHEMA: &str = "
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
";

/// How far a period's delivery got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Received, not yet delivered.
    Pending,
    /// Accepted by the intake (online).
    Submitted,
    /// Written to a bundle file (offline).
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

/// One stored period and its delivery state, for status and polling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodState {
    /// The period (ISO week).
    pub period: String,
    /// Digest of the merged period as received.
    pub digest: String,
    /// The level the period was collected at.
    pub level: String,
    /// RFC 3339 time it was received.
    pub received_at: String,
    /// How far its delivery got.
    pub state: State,
    /// The intake's identifier, once submitted.
    pub submission_id: Option<String>,
    /// The bundle file, once bundled.
    pub bundle_path: Option<PathBuf>,
    /// RFC 3339 time of the delivery.
    pub answered_at: Option<String>,
}

/// Every read and write the connection point makes to its durable state.
pub trait OutboxStore: Send + Sync + 'static {
    /// Stores a checked merged period durably for delivery.
    fn offer(
        &self,
        period: &pb::MergedPeriod,
    ) -> impl Future<Output = Result<Offered, StoreError>> + Send;

    /// Returns the merged periods not yet delivered, as received, oldest period first.
    fn pending(&self) -> impl Future<Output = Result<Vec<pb::MergedPeriod>, StoreError>> + Send;

    /// Records that the intake accepted `period` at `digest`; returns false when a newer
    /// version arrived meanwhile (which then stays pending).
    fn mark_submitted(
        &self,
        period: &str,
        digest: &str,
        submission_id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records that `period` at `digest` was written to the bundle at `path`; returns false
    /// when a newer version arrived meanwhile.
    fn mark_bundled(
        &self,
        period: &str,
        digest: &str,
        path: &Path,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Returns every stored period's delivery state, in period order.
    fn states(&self) -> impl Future<Output = Result<Vec<PeriodState>, StoreError>> + Send;

    /// Returns every stored merged period as received, in period order.
    fn stored(&self) -> impl Future<Output = Result<Vec<pb::MergedPeriod>, StoreError>> + Send;
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
            store: Store::open(path, SCHEMA)?,
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
}

/// Formats the current UTC time as RFC 3339 with whole seconds.
pub(crate) fn now() -> String {
    let at = OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
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
                    period,
                    digest,
                    level,
                    received_at,
                    state: State::parse(&state)?,
                    submission_id,
                    bundle_path: bundle_path.map(PathBuf::from),
                    answered_at,
                })
            },
        )
        .collect()
}

fn read_stored(conn: &mut Connection) -> Result<Vec<pb::MergedPeriod>, StoreError> {
    let mut stmt = conn.prepare("SELECT payload FROM periods ORDER BY period")?;
    let payloads = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    payloads.iter().map(|p| decode(p)).collect()
}

impl OutboxStore for SqliteOutbox {
    async fn offer(&self, period: &pb::MergedPeriod) -> Result<Offered, StoreError> {
        let payload = period.encode_to_vec();
        let (when, digest, level) = (
            period.period.clone(),
            period.digest.clone(),
            period.level.clone(),
        );
        let received_at = now();
        self.store
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let existing: Option<String> = tx
                    .query_row(
                        "SELECT digest FROM periods WHERE period = ?1",
                        params![when],
                        |r| r.get(0),
                    )
                    .optional()?;
                let offered = match existing {
                    Some(stored) if stored == digest => return Ok(Offered::Duplicate),
                    Some(_) => Offered::Replaced,
                    None => Offered::New,
                };
                tx.execute(
                    "INSERT INTO periods (period, digest, level, payload, received_at, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending')
                     ON CONFLICT (period) DO UPDATE SET
                         digest = excluded.digest, level = excluded.level,
                         payload = excluded.payload, received_at = excluded.received_at,
                         state = 'pending', submission_id = NULL, bundle_path = NULL,
                         answered_at = NULL",
                    params![when, digest, level, payload, received_at],
                )?;
                tx.commit()?;
                Ok(offered)
            })
            .await
    }

    async fn pending(&self) -> Result<Vec<pb::MergedPeriod>, StoreError> {
        let payloads: Vec<Vec<u8>> = self
            .store
            .call(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT payload FROM periods WHERE state = 'pending' ORDER BY period",
                )?;
                let rows = stmt
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await?;
        payloads.iter().map(|p| decode(p)).collect()
    }

    async fn mark_submitted(
        &self,
        period: &str,
        digest: &str,
        submission_id: &str,
    ) -> Result<bool, StoreError> {
        let (period, digest, id) = (
            period.to_owned(),
            digest.to_owned(),
            submission_id.to_owned(),
        );
        let at = now();
        self.store
            .call(move |conn| {
                let changed = conn.execute(
                    "UPDATE periods SET state = 'submitted', submission_id = ?3, answered_at = ?4
                     WHERE period = ?1 AND digest = ?2 AND state = 'pending'",
                    params![period, digest, id, at],
                )?;
                Ok(changed == 1)
            })
            .await
    }

    async fn mark_bundled(
        &self,
        period: &str,
        digest: &str,
        path: &Path,
    ) -> Result<bool, StoreError> {
        let (period, digest) = (period.to_owned(), digest.to_owned());
        let path = path.to_string_lossy().into_owned();
        let at = now();
        self.store
            .call(move |conn| {
                let changed = conn.execute(
                    "UPDATE periods SET state = 'bundled', bundle_path = ?3, answered_at = ?4
                     WHERE period = ?1 AND digest = ?2 AND state = 'pending'",
                    params![period, digest, path, at],
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
}
