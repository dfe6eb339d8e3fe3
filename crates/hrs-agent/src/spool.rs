//! The durable spool: a run is written here before any attempt to send it, and removed
//! only after the upstream has acknowledged its durable commit.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use hrs_core::digest::RunDigest;
use hrs_core::link::LinkRecord;
use hrs_proto::v1 as pb;
use hrs_store::blob::{self, BlobReader};
use hrs_store::{Store, StoreError};
use prost::Message as _;
use prost::encoding::{encode_varint, encoded_len_varint};
use rusqlite::{OptionalExtension as _, params};
use std::io::Write as _;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    sequence     INTEGER NOT NULL UNIQUE,
    period       TEXT NOT NULL,
    digest       TEXT NOT NULL,
    collected_at TEXT NOT NULL,
    payload      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS collecting_sets (
    run_id     TEXT NOT NULL,
    set_index  INTEGER NOT NULL,
    opening    BLOB NOT NULL,
    closing    BLOB NOT NULL,
    rows       INTEGER NOT NULL,
    rows_bytes INTEGER NOT NULL,
    PRIMARY KEY (run_id, set_index)
);
CREATE TABLE IF NOT EXISTS collecting_rows (
    run_id    TEXT NOT NULL,
    set_index INTEGER NOT NULL,
    piece     INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (run_id, set_index, piece)
);
CREATE TABLE IF NOT EXISTS state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS held_runs (
    run_id  TEXT PRIMARY KEY,
    reason  TEXT NOT NULL,
    held_at TEXT NOT NULL
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

/// A spooled run kept from delivery until an operator releases it (`hrs release`): too
/// many of its queries failed for it to replace the site's current data unasked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeldRun {
    /// The run's id.
    pub run_id: String,
    /// Its period.
    pub period: String,
    /// Why it is held: how many of its queries failed, against which limit.
    pub reason: String,
    /// When it was held (RFC 3339).
    pub held_at: String,
    /// The length of its encoding, in bytes.
    pub size: u64,
}

/// The last collection that produced nothing to spool, as `hrs status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailedCollection {
    /// When it failed (RFC 3339).
    pub at: String,
    /// The period it was collecting.
    pub period: String,
    /// Why: what the operator has to check.
    pub error: String,
}

/// Collections that produced nothing to spool (the site database could not be opened, or
/// every query failed), kept in the spool's state so they outlive the process.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailedCollections {
    /// How many, ever.
    pub count: u64,
    /// The last of them.
    pub last: Option<FailedCollection>,
}

/// Why held runs could not be released.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The spool failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No run is held.
    #[error("spool {spool}: no run is held, so there is nothing to release")]
    NothingHeld {
        /// The spool file.
        spool: PathBuf,
    },
    /// The run named is not one of the held runs.
    #[error("spool {spool}: run {run_id} is not held (held: {held})")]
    NotHeld {
        /// The spool file.
        spool: PathBuf,
        /// The run asked for.
        run_id: String,
        /// The runs that are held, for the operator to pick from.
        held: String,
    },
}

/// Why a collection could not be written into the spool, or turned into a run there.
#[derive(Debug, thiserror::Error)]
pub enum CollectingError {
    /// The spool failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another collection (the service, or `--once` beside it) holds the spool: only one
    /// collection at a time may write into a spool, or one could clear the other's sets.
    #[error(
        "spool {spool}: another collection is running on it (lock {lock} is held); \
         wait for it to finish, then collect again"
    )]
    Busy {
        /// The spool file.
        spool: PathBuf,
        /// The lock file the other collection holds.
        lock: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("spool {spool}: cannot take the collection lock {lock}: {source}")]
    Lock {
        /// The spool file.
        spool: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The rows stored for a set are not the bytes recorded for it; the run is not
    /// spooled, and the collection's pieces are left for the next one to clear.
    #[error(
        "run {run_id}: {set} recorded {recorded} bytes of rows but the spool holds {stored}; \
         the run was not spooled"
    )]
    RowBytes {
        /// The run.
        run_id: String,
        /// The set, by query id (or position, for rows without a set).
        set: String,
        /// Bytes recorded when the set ended.
        recorded: u64,
        /// Bytes of the pieces stored for it.
        stored: u64,
    },
    /// The rows stored for a set are not as many as recorded for it; as for `RowBytes`.
    #[error(
        "run {run_id}: {set} recorded {recorded} rows but the spool holds {stored}; \
         the run was not spooled"
    )]
    RowCount {
        /// The run.
        run_id: String,
        /// The set, by query id.
        set: String,
        /// Rows recorded when the set ended.
        recorded: u64,
        /// Rows decoded from its stored pieces.
        stored: u64,
    },
    /// The run's encoding came out at another size than computed for it; as for
    /// `RowBytes`.
    #[error(
        "run {run_id}: its encoding is {expected} bytes but its parts came to {written}; \
         the run was not spooled"
    )]
    Size {
        /// The run.
        run_id: String,
        /// The size computed from its parts.
        expected: u64,
        /// The bytes its parts came to.
        written: u64,
    },
}

impl From<rusqlite::Error> for CollectingError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Store(error.into())
    }
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
    /// Sequences never go back: the counter is persisted, and starts from `now` (in
    /// milliseconds) so a site whose spool was lost still outranks its earlier runs.
    pub async fn next_sequence(&self, now: time::OffsetDateTime) -> Result<u64, StoreError> {
        let clock = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
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

    /// Returns the id, sequence, period and size of every spooled run delivery may push
    /// (held runs are not), oldest first, without reading the runs themselves.
    pub async fn waiting(&self) -> Result<Vec<Waiting>, StoreError> {
        self.store
            .call(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT run_id, sequence, period, LENGTH(payload) FROM runs
                     WHERE run_id NOT IN (SELECT run_id FROM held_runs)
                     ORDER BY sequence",
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
    pub async fn bytes(&self, run_id: &str) -> Result<BlobReader, StoreError> {
        let id = run_id.to_owned();
        let size: i64 = self
            .store
            .call(move |conn| {
                Ok(conn.query_row(
                    "SELECT LENGTH(payload) FROM runs WHERE run_id = ?1",
                    params![id],
                    |r| r.get(0),
                )?)
            })
            .await?;
        let size = u64::try_from(size).unwrap_or(0);
        let locate = blob::by_key("runs", "payload", "run_id", run_id.to_owned());
        Ok(self
            .store
            .blob_reader(format!("spooled run {run_id}"), size, locate))
    }

    /// Removes a run the upstream has committed.
    pub async fn remove(&self, run_id: &str) -> Result<(), StoreError> {
        let run_id = run_id.to_owned();
        self.store
            .call(move |conn| {
                let tx = conn.transaction()?;
                tx.execute("DELETE FROM runs WHERE run_id = ?1", params![run_id])?;
                tx.execute("DELETE FROM held_runs WHERE run_id = ?1", params![run_id])?;
                tx.commit()?;
                Ok(())
            })
            .await
    }

    /// Returns the held runs, oldest first.
    pub async fn held(&self) -> Result<Vec<HeldRun>, StoreError> {
        self.store.call(|conn| read_held(conn)).await
    }

    /// Releases the held run `run_id`, or every held run when `None`, so the next delivery
    /// pushes it; returns what it released.
    pub async fn release(&self, run_id: Option<&str>) -> Result<Vec<HeldRun>, ReleaseError> {
        let spool = self.store.path().to_owned();
        let wanted = run_id.map(str::to_owned);
        let released = self
            .store
            .call(move |conn| {
                let tx = conn.transaction()?;
                let held = read_held(&tx)?;
                let chosen: Vec<HeldRun> = match &wanted {
                    None => held.clone(),
                    Some(id) => held.iter().filter(|h| &h.run_id == id).cloned().collect(),
                };
                for run in &chosen {
                    tx.execute(
                        "DELETE FROM held_runs WHERE run_id = ?1",
                        params![run.run_id],
                    )?;
                }
                tx.commit()?;
                Ok((held, chosen))
            })
            .await?;
        match released {
            (held, _) if held.is_empty() => Err(ReleaseError::NothingHeld { spool }),
            (held, chosen) if chosen.is_empty() => Err(ReleaseError::NotHeld {
                spool,
                run_id: run_id.unwrap_or_default().to_owned(),
                held: held
                    .iter()
                    .map(|h| format!("{} ({})", h.run_id, h.period))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            (_, chosen) => Ok(chosen),
        }
    }

    /// Counts a collection that produced nothing to spool, and keeps it as the last one.
    pub async fn record_failed_collection(
        &self,
        failure: FailedCollection,
    ) -> Result<FailedCollections, StoreError> {
        self.store
            .call(move |conn| {
                update_record(
                    conn,
                    FAILED_COLLECTIONS,
                    |failed: &mut FailedCollections| {
                        failed.count = failed.count.saturating_add(1);
                        failed.last = Some(failure);
                    },
                )
            })
            .await
    }

    /// Returns the collections that produced nothing to spool: how many, and the last.
    pub async fn failed_collections(&self) -> Result<FailedCollections, StoreError> {
        self.store
            .call(|conn| read_record(conn, FAILED_COLLECTIONS))
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
                update_record(conn, LINK, |link: &mut LinkRecord| {
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
                })
            })
            .await
    }

    /// Returns what is known of the link to the upstream.
    pub async fn link(&self) -> Result<LinkRecord, StoreError> {
        self.store.call(|conn| read_record(conn, LINK)).await
    }

    /// Returns how many runs wait for delivery (held runs do not), how large they are, and
    /// since when.
    pub async fn backlog(&self) -> Result<Backlog, StoreError> {
        self.store
            .call(|conn| {
                Ok(conn.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), MIN(collected_at)
                     FROM runs WHERE run_id NOT IN (SELECT run_id FROM held_runs)",
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
                    tx.execute("DELETE FROM held_runs WHERE run_id = ?1", params![run_id])?;
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

/// Bytes of encoded rows gathered before they are written to the spool as one piece.
const PIECE_BYTES: usize = 1 << 20;
/// Protobuf keys of the two repeated fields written here: `Run.results` (field 10) and
/// `ResultSet.rows` (field 4), both length-delimited.
const RESULTS_KEY: u8 = (10 << 3) | 2;
const ROWS_KEY: u8 = (4 << 3) | 2;

/// A collection being written into the spool as it is produced: rows go to disk in pieces
/// of about a MiB, so memory stays flat whatever the run's size. [`Collecting::finish`]
/// turns the pieces into one spooled run, byte for byte the encoding of the whole run.
///
/// It holds the spool's collection lock from [`Spool::begin`] until it is finished or
/// dropped (or its process dies), so no other collection runs on the spool meanwhile.
pub struct Collecting {
    store: Store,
    /// The collection lock; released when this is dropped.
    lock: File,
    run_id: String,
    set_index: i64,
    piece: i64,
    buffer: Vec<u8>,
    rows: u64,
    rows_bytes: u64,
}

/// Returns the collection lock file of the spool at `spool`: beside it, never removed (a
/// lock file removed while another process waits to open it would let two hold "it").
fn lock_path(spool: &Path) -> PathBuf {
    let mut name = spool.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl Spool {
    /// Starts writing a collection for `run_id`, clearing what interrupted ones left.
    ///
    /// It first takes the spool's collection lock, and fails at once with
    /// [`CollectingError::Busy`] when another collection (of this or another process)
    /// holds it. Holding the lock is what makes clearing safe: no other collection is live
    /// on this spool, so whatever the collecting tables hold is a dead one's.
    pub async fn begin(&self, run_id: &str) -> Result<Collecting, CollectingError> {
        let spool = self.store.path().to_owned();
        let lock = lock_path(&spool);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock);
        let file = match file {
            Ok(file) => file,
            Err(source) => {
                return Err(CollectingError::Lock {
                    spool,
                    lock,
                    source,
                });
            }
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(CollectingError::Busy { spool, lock }),
            Err(TryLockError::Error(source)) => {
                return Err(CollectingError::Lock {
                    spool,
                    lock,
                    source,
                });
            }
        }
        self.store.call(|conn| {
            let tx = conn.transaction()?;
            let leftovers: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT run_id FROM collecting_sets UNION SELECT run_id FROM collecting_rows",
                )?;
                stmt.query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            };
            for leftover in &leftovers {
                tracing::info!(run_id = %leftover, "clearing the pieces of an interrupted collection");
                clear_pieces(&tx, leftover)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
        Ok(Collecting {
            store: self.store.clone(),
            lock: file,
            run_id: run_id.to_owned(),
            set_index: 0,
            piece: 0,
            buffer: Vec::new(),
            rows: 0,
            rows_bytes: 0,
        })
    }
}

/// A collection turned into a spooled run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The run's digest, computed from its pieces.
    pub digest: String,
    /// The length of its encoding, in bytes.
    pub size: u64,
    /// The held runs of the same period it replaced.
    pub replaced: Vec<String>,
}

impl Collecting {
    /// Writes the gathered pieces into the spool as one run, its digest computed from
    /// them, together with the period it collected. With `hold` (the reason), the run is
    /// held in the same transaction, so it is never pushable before it is held. Any held
    /// run of the same period is replaced: the newest collection of a period is the one an
    /// operator decides on.
    ///
    /// It first checks that the pieces are what was recorded of them (bytes and rows of
    /// every set) and that the run comes out at the size computed for it; on a mismatch
    /// nothing is spooled and the pieces stay for the next [`Spool::begin`] to clear.
    pub async fn finish(
        self,
        header: &pb::Run,
        collected_at: String,
        hold: Option<String>,
    ) -> Result<Finished, CollectingError> {
        let Collecting {
            store,
            lock,
            run_id,
            ..
        } = self;
        let header = header.clone();
        let finished = store
            .call(move |conn| Ok(write_run(conn, &run_id, &header, collected_at, hold)))
            .await?;
        // Released only once the run is committed (or left as it was).
        drop(lock);
        finished
    }

    /// Ends the collection without spooling anything: its pieces are cleared, the period
    /// is not marked collected, and the lock is released.
    pub async fn discard(self) -> Result<(), CollectingError> {
        let Collecting {
            store,
            lock,
            run_id,
            ..
        } = self;
        store
            .call(move |conn| {
                let tx = conn.transaction()?;
                clear_pieces(&tx, &run_id)?;
                tx.commit()?;
                Ok(())
            })
            .await?;
        drop(lock);
        Ok(())
    }
}

/// Turns the collection `run_id` into a spooled run, in one transaction; see
/// [`Collecting::finish`].
fn write_run(
    conn: &mut rusqlite::Connection,
    run_id: &str,
    header: &pb::Run,
    collected_at: String,
    hold: Option<String>,
) -> Result<Finished, CollectingError> {
    let tx = conn.transaction()?;
    let sets = collected_sets(&tx, run_id)?;
    check_pieces(&tx, run_id, &sets)?;

    let mut digest = RunDigest::new(header, sets.len() as u64);
    let mut sorted: Vec<&CollectedSet> = sets.iter().collect();
    sorted.sort_by(|a, b| a.fields.query_id.cmp(&b.fields.query_id));
    for set in sorted {
        digest.set(&set.fields, set.rows);
        let mut rows = 0u64;
        for_each_piece(&tx, run_id, set.index, |piece| {
            let mut rest = piece;
            while let Some((&key, after)) = rest.split_first() {
                if key != ROWS_KEY {
                    return Err(StoreError::Corrupt(format!(
                        "collected row: key {key} where a row's is {ROWS_KEY}"
                    )));
                }
                rest = after;
                let row = pb::Row::decode_length_delimited(&mut rest)
                    .map_err(|e| StoreError::Corrupt(format!("collected row: {e}")))?;
                digest.row(&row);
                rows += 1;
            }
            Ok(())
        })?;
        if rows != set.rows {
            return Err(CollectingError::RowCount {
                run_id: run_id.to_owned(),
                set: set.fields.query_id.clone(),
                recorded: set.rows,
                stored: rows,
            });
        }
    }
    let digest = digest.finish();

    // The run's fields 1 to 9, its results, then fields 11 and 12: prost's order, so the
    // spooled bytes are exactly the whole run's encoding.
    let opening = pb::Run {
        results: Vec::new(),
        digest: String::new(),
        hash_key_id: String::new(),
        ..header.clone()
    }
    .encode_to_vec();
    let closing = pb::Run {
        digest: digest.clone(),
        hash_key_id: header.hash_key_id.clone(),
        ..Default::default()
    }
    .encode_to_vec();
    let set_len =
        |set: &CollectedSet| set.opening.len() as u64 + set.rows_bytes + set.closing.len() as u64;
    let size = opening.len() as u64
        + closing.len() as u64
        + sets
            .iter()
            .map(|set| 1 + encoded_len_varint(set_len(set)) as u64 + set_len(set))
            .sum::<u64>();

    let replaced: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT h.run_id FROM held_runs h JOIN runs r ON r.run_id = h.run_id
             WHERE r.period = ?1",
        )?;
        stmt.query_map(params![header.period], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    for old in &replaced {
        tx.execute("DELETE FROM runs WHERE run_id = ?1", params![old])?;
        tx.execute("DELETE FROM held_runs WHERE run_id = ?1", params![old])?;
    }
    if let Some(reason) = hold {
        tx.execute(
            "INSERT INTO held_runs (run_id, reason, held_at) VALUES (?1, ?2, ?3)",
            params![run_id, reason, collected_at],
        )?;
    }
    tx.execute(
        "INSERT INTO runs (run_id, sequence, period, digest, collected_at, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, zeroblob(?6))",
        params![
            run_id,
            i64::try_from(header.sequence).unwrap_or(i64::MAX),
            header.period,
            digest,
            collected_at,
            i64::try_from(size).unwrap_or(i64::MAX)
        ],
    )?;
    let written = {
        let rowid = tx.last_insert_rowid();
        let mut blob = tx.blob_open(rusqlite::MAIN_DB, "runs", "payload", rowid, false)?;
        // Every part is counted, and written only while it fits: a run whose parts do not
        // come to its size is refused below rather than spooled cut or padded with zeros.
        let mut written = 0u64;
        let mut put = |bytes: &[u8]| -> Result<(), StoreError> {
            written += bytes.len() as u64;
            if written <= size {
                blob.write_all(bytes)
                    .map_err(|e| StoreError::Corrupt(format!("writing the run: {e}")))?;
            }
            Ok(())
        };
        put(&opening)?;
        for set in &sets {
            let mut prefix = vec![RESULTS_KEY];
            encode_varint(set_len(set), &mut prefix);
            put(&prefix)?;
            put(&set.opening)?;
            for_each_piece(&tx, run_id, set.index, &mut put)?;
            put(&set.closing)?;
        }
        put(&closing)?;
        written
    };
    if written != size {
        return Err(CollectingError::Size {
            run_id: run_id.to_owned(),
            expected: size,
            written,
        });
    }
    tx.execute(
        "INSERT INTO state (key, value) VALUES ('last_period', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![header.period],
    )?;
    clear_pieces(&tx, run_id)?;
    tx.commit()?;
    Ok(Finished {
        digest,
        size,
        replaced,
    })
}

/// Checks that the pieces stored for each set of `run_id` add up to the bytes recorded
/// for it, and that no rows are stored for a set that was never recorded.
fn check_pieces(
    conn: &rusqlite::Connection,
    run_id: &str,
    sets: &[CollectedSet],
) -> Result<(), CollectingError> {
    let mut stored: std::collections::BTreeMap<i64, u64> = {
        let mut stmt = conn.prepare(
            "SELECT set_index, SUM(LENGTH(data)) FROM collecting_rows WHERE run_id = ?1
             GROUP BY set_index",
        )?;
        stmt.query_map(params![run_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })?
        .collect::<Result<_, _>>()?
    };
    let mismatch = |set: String, recorded: u64, stored: u64| CollectingError::RowBytes {
        run_id: run_id.to_owned(),
        set,
        recorded,
        stored,
    };
    for set in sets {
        let bytes = stored.remove(&set.index).unwrap_or(0);
        if bytes != set.rows_bytes {
            return Err(mismatch(set.fields.query_id.clone(), set.rows_bytes, bytes));
        }
    }
    if let Some((index, bytes)) = stored.pop_first() {
        return Err(mismatch(format!("set #{index} (never recorded)"), 0, bytes));
    }
    Ok(())
}

impl crate::collect::Sink for Collecting {
    type Error = StoreError;

    fn row(&mut self, row: &pb::Row) -> Result<(), StoreError> {
        let before = self.buffer.len();
        self.buffer.push(ROWS_KEY);
        row.encode_length_delimited(&mut self.buffer)
            .map_err(|e| StoreError::Corrupt(format!("encoding a row: {e}")))?;
        self.rows += 1;
        self.rows_bytes += (self.buffer.len() - before) as u64;
        Ok(())
    }

    fn full(&self) -> bool {
        self.buffer.len() >= PIECE_BYTES
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buffer);
        let (run_id, set_index, piece) = (self.run_id.clone(), self.set_index, self.piece);
        self.store
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO collecting_rows (run_id, set_index, piece, data)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![run_id, set_index, piece, data],
                )?;
                Ok(())
            })
            .await?;
        self.piece += 1;
        Ok(())
    }

    async fn end_set(&mut self, set: &pb::ResultSet) -> Result<(), StoreError> {
        let failed = !set.error.is_empty();
        if failed {
            // A failed query carries no rows: drop what it produced before failing.
            self.buffer.clear();
            let (run_id, set_index) = (self.run_id.clone(), self.set_index);
            self.store
                .call(move |conn| {
                    conn.execute(
                        "DELETE FROM collecting_rows WHERE run_id = ?1 AND set_index = ?2",
                        params![run_id, set_index],
                    )?;
                    Ok(())
                })
                .await?;
            self.rows = 0;
            self.rows_bytes = 0;
        } else {
            self.flush().await?;
        }
        // Fields 1 to 3 come before the rows, 5 and 6 after, as prost writes them.
        let opening = pb::ResultSet {
            query_id: set.query_id.clone(),
            level: set.level.clone(),
            columns: set.columns.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        let closing = pb::ResultSet {
            error: set.error.clone(),
            duration_ms: set.duration_ms,
            ..Default::default()
        }
        .encode_to_vec();
        let (run_id, set_index) = (self.run_id.clone(), self.set_index);
        let (rows, rows_bytes) = (
            i64::try_from(self.rows).unwrap_or(i64::MAX),
            i64::try_from(self.rows_bytes).unwrap_or(i64::MAX),
        );
        self.store
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO collecting_sets
                         (run_id, set_index, opening, closing, rows, rows_bytes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![run_id, set_index, opening, closing, rows, rows_bytes],
                )?;
                Ok(())
            })
            .await?;
        self.set_index += 1;
        self.piece = 0;
        self.rows = 0;
        self.rows_bytes = 0;
        Ok(())
    }
}

/// One collected result set as the spool holds it until the run is finished.
struct CollectedSet {
    index: i64,
    /// Its fields (rows left out), for the digest.
    fields: pb::ResultSet,
    opening: Vec<u8>,
    closing: Vec<u8>,
    rows: u64,
    rows_bytes: u64,
}

fn collected_sets(
    conn: &rusqlite::Connection,
    run_id: &str,
) -> Result<Vec<CollectedSet>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT set_index, opening, closing, rows, rows_bytes FROM collecting_sets
         WHERE run_id = ?1 ORDER BY set_index",
    )?;
    let rows = stmt.query_map(params![run_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    let mut sets = Vec::new();
    for row in rows {
        let (index, opening, closing, rows, rows_bytes) = row?;
        let mut fields = pb::ResultSet::decode(opening.as_slice())
            .map_err(|e| StoreError::Corrupt(format!("collected set: {e}")))?;
        fields
            .merge(closing.as_slice())
            .map_err(|e| StoreError::Corrupt(format!("collected set: {e}")))?;
        sets.push(CollectedSet {
            index,
            fields,
            opening,
            closing,
            rows: u64::try_from(rows).unwrap_or(0),
            rows_bytes: u64::try_from(rows_bytes).unwrap_or(0),
        });
    }
    Ok(sets)
}

/// Hands `each` the pieces of one collected set's rows, in order, one at a time.
fn for_each_piece(
    conn: &rusqlite::Connection,
    run_id: &str,
    set_index: i64,
    mut each: impl FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(
        "SELECT data FROM collecting_rows WHERE run_id = ?1 AND set_index = ?2 ORDER BY piece",
    )?;
    let mut rows = stmt.query(params![run_id, set_index])?;
    while let Some(row) = rows.next()? {
        let data = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
        each(data)?;
    }
    Ok(())
}

fn read_held(conn: &rusqlite::Connection) -> Result<Vec<HeldRun>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT h.run_id, r.period, h.reason, h.held_at, LENGTH(r.payload)
         FROM held_runs h JOIN runs r ON r.run_id = h.run_id ORDER BY r.sequence",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(HeldRun {
            run_id: r.get(0)?,
            period: r.get(1)?,
            reason: r.get(2)?,
            held_at: r.get(3)?,
            size: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The state key of the link's record, and how errors name it.
const LINK: (&str, &str) = ("link", "link record");

/// The state key of the failed collections' record, and how errors name it.
const FAILED_COLLECTIONS: (&str, &str) = ("failed_collections", "failed collections");

/// Reads the record kept as JSON under `key` in the spool's state; the default when none is.
fn read_record<T: serde::de::DeserializeOwned + Default>(
    conn: &rusqlite::Connection,
    (key, name): (&str, &str),
) -> Result<T, StoreError> {
    let text: Option<String> = conn
        .query_row(
            "SELECT value FROM state WHERE key = ?1",
            params![key],
            |r| r.get(0),
        )
        .optional()?;
    match text {
        None => Ok(T::default()),
        Some(text) => {
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
        }
    }
}

/// Deletes the pieces a collection of `run_id` wrote, in the caller's transaction.
fn clear_pieces(tx: &rusqlite::Transaction<'_>, run_id: &str) -> Result<(), rusqlite::Error> {
    tx.execute(
        "DELETE FROM collecting_rows WHERE run_id = ?1",
        params![run_id],
    )?;
    tx.execute(
        "DELETE FROM collecting_sets WHERE run_id = ?1",
        params![run_id],
    )?;
    Ok(())
}

/// Changes a JSON record in the spool's state in one transaction and returns it changed.
fn update_record<T: serde::Serialize + serde::de::DeserializeOwned + Default>(
    conn: &mut rusqlite::Connection,
    record: (&str, &str),
    change: impl FnOnce(&mut T),
) -> Result<T, StoreError> {
    let tx = conn.transaction()?;
    let mut value: T = read_record(&tx, record)?;
    change(&mut value);
    write_record(&tx, record, &value)?;
    tx.commit()?;
    Ok(value)
}

/// Keeps `record` as JSON under `key` in the spool's state.
fn write_record<T: serde::Serialize>(
    conn: &rusqlite::Connection,
    (key, name): (&str, &str),
    record: &T,
) -> Result<(), StoreError> {
    let text =
        serde_json::to_string(record).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))?;
    conn.execute(
        "INSERT INTO state (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, text],
    )?;
    Ok(())
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

    #[test]
    fn a_run_written_in_pieces_is_byte_for_byte_the_whole_runs_encoding() {
        use crate::collect::Sink as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&dir.path().join("spool.sqlite")).expect("opens");
        let text = |n: usize| pb::Value {
            kind: Some(pb::value::Kind::Text(format!("{n:0>1000}"))),
        };
        let big: Vec<pb::Row> = (0..2_500)
            .map(|n| pb::Row {
                values: vec![text(n), pb::Value::default()],
            })
            .collect();
        let set = |id: &str, rows: Vec<pb::Row>, error: &str| pb::ResultSet {
            query_id: id.into(),
            level: "Basic".into(),
            columns: vec![pb::Column {
                name: "c".into(),
                r#type: "text".into(),
            }],
            rows,
            error: error.into(),
            duration_ms: 7,
        };
        // Out of query-id order, a set spanning several pieces, an empty one, and one
        // that failed after producing rows (which must not be kept).
        let sets = [
            set("Z-BIG", big.clone(), ""),
            set("A-EMPTY", Vec::new(), ""),
            set("M-FAILED", big[..3].to_vec(), "sqlite: no such table"),
        ];
        let mut header = run(1, 0);
        header.results.clear();
        header.digest.clear();
        header.hash_key_id = "0123456789abcdef".into();

        let mut sink = block(spool.begin(&header.run_id)).expect("begins");
        for s in &sets {
            put_rows(&mut sink, &s.rows);
            block(sink.end_set(&pb::ResultSet {
                rows: Vec::new(),
                ..s.clone()
            }))
            .expect("set");
        }
        let Finished { digest, size, .. } =
            block(sink.finish(&header, rfc3339(at(1)), None)).expect("finishes");

        let mut expected = header.clone();
        expected.results = sets.to_vec();
        expected.results[2].rows.clear();
        expected.digest = hrs_core::digest::run_digest(&expected);
        let encoded = expected.encode_to_vec();
        assert_eq!(digest, expected.digest);
        assert_eq!(size, encoded.len() as u64);
        let stored = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(spool.bytes(&header.run_id))
            .expect("spooled");
        use hrs_core::bytes::RunBytes as _;
        let bytes = stored.read_at(0, encoded.len()).expect("reads");
        assert!(
            bytes == encoded,
            "the spooled bytes differ from the run's encoding"
        );
    }

    /// A run header as the agent makes one, for collections written by hand.
    fn header(run_id: &str, sequence: u64) -> pb::Run {
        pb::Run {
            run_id: run_id.into(),
            sequence,
            period: "2026-W48".into(),
            ..Default::default()
        }
    }

    /// Writes `sets` sets of `rows` rows each into `sink`; returns them as the run should
    /// record them.
    fn write_sets(
        sink: &mut Collecting,
        tag: &str,
        sets: usize,
        rows: usize,
    ) -> Vec<pb::ResultSet> {
        use crate::collect::Sink as _;
        (0..sets)
            .map(|s| {
                let rows: Vec<pb::Row> = (0..rows)
                    .map(|n| pb::Row {
                        values: vec![pb::Value {
                            kind: Some(pb::value::Kind::Text(format!("{tag}-{s}-{n:0>200}"))),
                        }],
                    })
                    .collect();
                put_rows(sink, &rows);
                let set = pb::ResultSet {
                    query_id: format!("{tag}-Q{s}"),
                    level: "Basic".into(),
                    duration_ms: 1,
                    ..Default::default()
                };
                block(sink.end_set(&set)).expect("set");
                pb::ResultSet { rows, ..set }
            })
            .collect()
    }

    /// Hands `rows` to `sink` as a collection does, writing a piece whenever one is full.
    fn put_rows(sink: &mut Collecting, rows: &[pb::Row]) {
        use crate::collect::Sink as _;
        for row in rows {
            sink.row(row).expect("row");
            if sink.full() {
                block(sink.flush()).expect("writes a piece");
            }
        }
    }

    /// Runs `work` to its end, for the tests that drive collections by hand.
    fn block<T>(work: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(work)
    }

    /// Returns the run spooled as `run_id`, decoded.
    fn spooled_run(spool: &Spool, run_id: &str) -> pb::Run {
        block(spool.pending())
            .expect("pending")
            .into_iter()
            .find(|s| s.run_id == run_id)
            .unwrap_or_else(|| panic!("run {run_id} is not spooled"))
            .run
    }

    /// Counts what the collecting tables hold, in sets and pieces.
    fn collecting(spool: &Spool) -> (i64, i64) {
        spool
            .store
            .with(|conn| {
                Ok(conn.query_row(
                    "SELECT (SELECT COUNT(*) FROM collecting_sets),
                            (SELECT COUNT(*) FROM collecting_rows)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .expect("counts")
    }

    #[test]
    fn a_second_collection_on_one_spool_fails_at_once_and_neither_loses_sets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.sqlite");
        // Two handles, as the service and `--once` beside it each open the spool.
        let service = Spool::open(&path).expect("opens");
        let once = Spool::open(&path).expect("opens again");

        let mut first = block(service.begin("run-service")).expect("begins");
        let first_sets = write_sets(&mut first, "S", 3, 3_000);

        // From another thread, on the other handle, while the first is live: refused at
        // once, naming the spool, without touching the first's sets.
        let refused = std::thread::scope(|scope| {
            scope
                .spawn(|| block(once.begin("run-once")).err())
                .join()
                .expect("joins")
        });
        match refused {
            Some(CollectingError::Busy { spool, lock }) => {
                assert_eq!(spool, path);
                assert_eq!(lock, dir.path().join("spool.sqlite.lock"));
            }
            other => panic!("expected the spool to be busy, got {other:?}"),
        }
        let message = block(once.begin("run-once"))
            .err()
            .expect("still busy")
            .to_string();
        assert!(
            message.contains(&path.display().to_string())
                && message.contains("another collection is running"),
            "{message}"
        );

        // The first goes on and finishes whole.
        let more = write_sets(&mut first, "T", 1, 10);
        block(first.finish(&header("run-service", 1), rfc3339(at(1)), None)).expect("finishes");
        let run = spooled_run(&once, "run-service");
        assert_eq!(run.results, [first_sets, more].concat());
        assert_eq!(run.digest, hrs_core::digest::run_digest(&run));

        // Once it is done, the second collects in turn, and both runs stay.
        let mut second = block(once.begin("run-once")).expect("begins after the first");
        let second_sets = write_sets(&mut second, "O", 2, 50);
        block(second.finish(&header("run-once", 2), rfc3339(at(1)), None)).expect("finishes");
        assert_eq!(spooled_run(&service, "run-once").results, second_sets);
        assert_eq!(spooled_run(&service, "run-service").results.len(), 4);
        assert_eq!(collecting(&service), (0, 0));
    }

    #[test]
    fn the_next_collection_clears_what_an_interrupted_one_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&dir.path().join("spool.sqlite")).expect("opens");
        let mut crashed = block(spool.begin("run-crashed")).expect("begins");
        write_sets(&mut crashed, "C", 2, 5_000);
        // Dropped unfinished, as when the process dies: the lock goes with it.
        drop(crashed);
        assert!(collecting(&spool).1 > 0);

        let mut next = block(spool.begin("run-next")).expect("begins");
        assert_eq!(collecting(&spool), (0, 0));
        let sets = write_sets(&mut next, "N", 1, 3);
        block(next.finish(&header("run-next", 2), rfc3339(at(1)), None)).expect("finishes");
        assert_eq!(spooled_run(&spool, "run-next").results, sets);
        assert_eq!(block(spooled(&spool)).len(), 1);
    }

    #[test]
    fn a_discarded_collection_leaves_nothing_and_frees_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&dir.path().join("spool.sqlite")).expect("opens");
        let mut sink = block(spool.begin("run-discarded")).expect("begins");
        write_sets(&mut sink, "D", 2, 3_000);
        assert!(collecting(&spool).0 > 0);
        block(sink.discard()).expect("discards");
        assert_eq!(collecting(&spool), (0, 0));
        assert!(block(spooled(&spool)).is_empty());
        assert_eq!(block(spool.last_collected()).expect("reads"), None);
        let next = block(spool.begin("run-next")).expect("the lock is free");
        block(next.finish(&header("run-next", 2), rfc3339(at(1)), None)).expect("finishes");
    }

    #[test]
    fn finish_spools_nothing_when_the_pieces_are_not_what_was_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&dir.path().join("spool.sqlite")).expect("opens");
        let tamperings = [
            "UPDATE collecting_sets SET rows_bytes = rows_bytes + 1 WHERE set_index = 1",
            "UPDATE collecting_sets SET rows = rows - 1 WHERE set_index = 0",
            "INSERT INTO collecting_rows (run_id, set_index, piece, data)
             VALUES ('run-1', 7, 0, x'2200')",
        ];
        for (n, tampering) in tamperings.iter().enumerate() {
            let mut sink = block(spool.begin("run-1")).expect("begins");
            write_sets(&mut sink, "X", 2, 2_000);
            spool
                .store
                .with(|conn| Ok(conn.execute(tampering, [])?))
                .expect("tampers");
            let error =
                block(sink.finish(&header("run-1", 1), rfc3339(at(1)), None)).expect_err("refuses");
            match (n, &error) {
                (0, CollectingError::RowBytes { set, .. }) => assert_eq!(set, "X-Q1"),
                (1, CollectingError::RowCount { set, .. }) => assert_eq!(set, "X-Q0"),
                (2, CollectingError::RowBytes { set, stored, .. }) => {
                    assert!(set.contains("#7"), "{set}");
                    assert_eq!(*stored, 2);
                }
                _ => panic!("tampering {n}: unexpected {error:?}"),
            }
            assert!(error.to_string().contains("not spooled"), "{error}");
            // Nothing spooled, the period not marked collected, the pieces left for the
            // next collection, which may begin: the lock was released.
            assert!(block(spooled(&spool)).is_empty());
            assert_eq!(block(spool.last_collected()).expect("reads"), None);
            assert!(collecting(&spool).1 > 0);
        }
        let next = block(spool.begin("run-2")).expect("begins");
        assert_eq!(collecting(&spool), (0, 0));
        block(next.finish(&header("run-2", 2), rfc3339(at(1)), None))
            .expect("an empty run finishes");
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
