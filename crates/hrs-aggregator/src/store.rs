//! The merge store: every run received, which run is current per (period, site), and what
//! has been forwarded upstream.

use std::path::Path;
use std::sync::Arc;

use hrs_core::bytes::RunBytes;
use hrs_core::clock::rfc3339;
use hrs_core::validate::RunHeader;
use hrs_core::{Period, SiteCode};
use hrs_proto::v1 as pb;
use hrs_store::blob;
use hrs_store::staging::{self, Staging};
use hrs_store::{Store, StoreError};
use prost::Message as _;
use rusqlite::{OptionalExtension as _, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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
CREATE TABLE IF NOT EXISTS site_links (
    site             TEXT PRIMARY KEY,
    last_contact_at  TEXT NOT NULL,
    last_delivery_at TEXT,
    last_run_id      TEXT,
    last_period      TEXT,
    report           BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS reinit (
    site         TEXT NOT NULL,
    period       TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    PRIMARY KEY (site, period)
);
CREATE TABLE IF NOT EXISTS relayed (
    run_id     TEXT PRIMARY KEY,
    relayed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS forwarded (
    period       TEXT PRIMARY KEY,
    digest       TEXT NOT NULL,
    forwarded_at TEXT NOT NULL
);
-- The current runs a period's last forward was merged from, so an unchanged period is
-- recognised without reading a payload.
CREATE TABLE IF NOT EXISTS forwarded_from (
    period TEXT PRIMARY KEY,
    runs   TEXT NOT NULL
);
";

/// Unfinished chunked runs kept per site, the one being offered included.
const UNFINISHED_PER_SITE: u32 = 4;

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

impl Commit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Merged => "merged",
            Self::Superseded => "superseded",
            Self::Duplicate => "duplicate",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "merged" => Some(Self::Merged),
            "superseded" => Some(Self::Superseded),
            "duplicate" => Some(Self::Duplicate),
            _ => None,
        }
    }
}

/// How far a chunked run has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staged {
    /// Bytes of its encoding held durably, from the start.
    pub held: u64,
    /// Set once the run was committed: what the commit did.
    pub committed: Option<Commit>,
    /// True when this offer started the staging (nothing of the run was held before).
    pub created: bool,
}

/// What a period's last forward upstream was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The merged digest committed upstream.
    pub digest: String,
    /// The current runs it was merged from, as the forwarder names them; empty when the
    /// forward was recorded before they were kept.
    pub runs: String,
}

/// A stored run, named without its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRun {
    /// The run.
    pub run_id: String,
    /// Its site.
    pub site: SiteCode,
    /// Its period.
    pub period: Period,
    /// Size of its encoding.
    pub size: u64,
}

/// What appending a chunk to a staged run did.
pub use hrs_store::staging::Appended;

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
    /// Returns the current run of every site, optionally for one period and one site,
    /// ordered by period then site.
    fn current(
        &self,
        period: Option<&Period>,
        site: Option<&SiteCode>,
    ) -> Result<Vec<pb::Run>, StoreError>;

    /// Returns every period that has at least one current run, oldest first.
    fn periods(&self) -> Result<Vec<Period>, StoreError>;

    /// Returns what was last forwarded upstream for a period.
    fn forwarded(&self, period: &Period) -> Result<Option<Forwarded>, StoreError>;

    /// Returns when the newest of a period's current runs was received (RFC 3339): the
    /// last time its merged content changed.
    fn last_change(&self, period: &Period) -> Result<Option<OffsetDateTime>, StoreError>;

    /// Records that the merged period with this digest, merged from `runs` (see
    /// [`Forwarded::runs`]), was committed upstream.
    fn mark_forwarded(
        &self,
        period: &Period,
        digest: &str,
        runs: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Records an accepted contact from a site: a push (with the run it delivered) or a
    /// heartbeat, with the site's own report of its link.
    fn record_contact(&self, contact: &Contact) -> Result<(), StoreError>;

    /// Returns the last contact of every site that ever made one, by site.
    fn contacts(&self) -> Result<Vec<Contact>, StoreError>;

    /// Asks a site to collect and send these periods again, at its next contact.
    fn request_reinit(
        &self,
        site: &SiteCode,
        periods: &[Period],
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Returns the periods a site has been asked to send again and has not yet sent.
    fn reinit_pending(&self, site: &SiteCode) -> Result<Vec<Period>, StoreError>;

    /// Records that a site sent a period again, so it is no longer asked to.
    fn reinit_done(&self, site: &SiteCode, period: &Period) -> Result<(), StoreError>;

    /// Returns the current runs not yet committed by the upstream aggregator, by period
    /// and site (a region aggregator relays every site's runs up as they are): what they
    /// are, not their payloads, which [`MergeStore::payload`] reads piece by piece.
    fn unrelayed(&self) -> Result<Vec<StoredRun>, StoreError>;

    /// Returns every current run, by period and site: what they are, not their payloads.
    fn current_runs(&self) -> Result<Vec<StoredRun>, StoreError>;

    /// A stored run's encoding, read a range at a time as it is merged or relayed, so a run
    /// of hundreds of megabytes never sits in memory whole.
    fn payload(&self, run: &StoredRun) -> Arc<dyn RunBytes>;

    /// Records that the upstream aggregator committed a run.
    fn mark_relayed(&self, run_id: &str, at: OffsetDateTime) -> Result<(), StoreError>;

    /// Starts staging a chunked run, or finds it staged: returns how much is held. An
    /// offer with other content restarts a staging not yet committed, and conflicts with
    /// a committed one. Staging untouched since `stale_before` is dropped first.
    fn stage(
        &self,
        offer: &pb::RunOffer,
        at: OffsetDateTime,
        stale_before: OffsetDateTime,
    ) -> Result<Staged, MergeError>;

    /// Appends a chunk durably, if it starts where the held bytes end.
    fn stage_append(&self, run_id: &str, offset: u64, data: &[u8]) -> Result<Appended, StoreError>;

    /// Returns `len` bytes of a staged run's encoding from `offset`.
    fn staged_range(&self, run_id: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError>;

    /// Stores a fully staged, checked run, and makes it current if it is the newest of its
    /// site and period: the one way a run is committed, every run arriving in chunks.
    /// Idempotent on the run id. `fields` are its own fields (results left out), the
    /// payload is copied from the staged chunks one at a time, and the staging records the
    /// outcome, all in one transaction.
    fn commit_staged(
        &self,
        fields: &pb::Run,
        header: &RunHeader,
        offer: &pb::RunOffer,
        received_at: OffsetDateTime,
    ) -> Result<Commit, MergeError>;

    /// Drops a staged run whose bytes turned out bad, so the next offer starts afresh.
    fn stage_discard(&self, run_id: &str) -> Result<(), StoreError>;
}

/// The last accepted contact from one site.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    /// The site.
    pub site: SiteCode,
    /// When it was.
    pub at: OffsetDateTime,
    /// The run it delivered, with its period, when it was a push.
    pub delivered: Option<(String, Period)>,
    /// When the site last delivered a run, from this or an earlier contact.
    pub last_delivery_at: Option<OffsetDateTime>,
    /// The site's own view of its link at that moment.
    pub report: pb::LinkReport,
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
            store: Store::open(path, &format!("{SCHEMA}{}", STAGED_RUNS.schema()))?,
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

/// Runs a query selecting `(run_id, payload)` and decodes every run it returns.
fn decode_rows(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<pb::Run>, StoreError> {
    let rows = stmt.query_map(params, |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (run_id, payload) = row?;
        out.push(decode(&run_id, &payload)?);
    }
    Ok(out)
}

/// Writes a staged run's chunks into the payload blob of row `rowid` of `runs`, one chunk
/// in memory at a time.
/// The staging of runs sent in chunks; its tables keep the names earlier stores have.
const STAGED_RUNS: Staging = Staging {
    uploads: "staged_runs",
    chunks: "staged_chunks",
    id: "run_id",
    owner: "site",
    max_chunk_bytes: hrs_rpc::chunks::MAX_CHUNK_BYTES as u64,
};

/// A run's offer as its staging records it: a run id staged by one site is never touched
/// by another's offer.
fn upload_of(offer: &pb::RunOffer) -> staging::Offer {
    staging::Offer {
        id: offer.run_id.clone(),
        owner: offer.site.clone(),
        size: offer.size,
        sha256: offer.sha256.clone(),
    }
}

/// The current runs `filter` (a `WHERE` clause on `runs r`, or nothing) keeps, by period
/// and site.
fn stored_runs(conn: &rusqlite::Connection, filter: &str) -> Result<Vec<StoredRun>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT r.run_id, r.site, r.period, length(r.payload)
         FROM current_runs c JOIN runs r ON r.run_id = c.run_id
         {filter}
         ORDER BY c.period, c.site"
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
        .map(|(run_id, site, period, size)| {
            Ok(StoredRun {
                run_id,
                site: stored_site(&site)?,
                period: stored_period(&period)?,
                size: u64::try_from(size).unwrap_or(0),
            })
        })
        .collect()
}

/// A period the store wrote itself: one that does not parse is corruption.
fn stored_period(text: &str) -> Result<Period, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("stored period {text:?}: {e}")))
}

/// A site code the store wrote itself.
fn stored_site(text: &str) -> Result<SiteCode, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("stored site {text:?}: {e}")))
}

/// A time the store wrote itself (RFC 3339, see [`rfc3339`]).
fn stored_time(text: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| StoreError::Corrupt(format!("stored time {text:?}: {e}")))
}

fn decode(run_id: &str, payload: &[u8]) -> Result<pb::Run, StoreError> {
    pb::Run::decode(payload).map_err(|e| StoreError::Corrupt(format!("run {run_id}: {e}")))
}

impl MergeStore for SqliteMergeStore {
    fn current(
        &self,
        period: Option<&Period>,
        site: Option<&SiteCode>,
    ) -> Result<Vec<pb::Run>, StoreError> {
        let (period, site) = (period.map(Period::to_string), site.map(SiteCode::as_str));
        self.store.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT r.run_id, r.payload FROM current_runs c JOIN runs r USING (run_id)
                 WHERE (?1 IS NULL OR c.period = ?1) AND (?2 IS NULL OR c.site = ?2)
                 ORDER BY c.period, c.site",
            )?;
            decode_rows(&mut stmt, params![period, site])
        })
    }

    fn periods(&self) -> Result<Vec<Period>, StoreError> {
        self.store.with(|conn| {
            let mut stmt =
                conn.prepare("SELECT DISTINCT period FROM current_runs ORDER BY period")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.map(|text| stored_period(&text?)).collect()
        })
    }

    fn forwarded(&self, period: &Period) -> Result<Option<Forwarded>, StoreError> {
        self.store.with(|conn| {
            Ok(conn
                .query_row(
                    "SELECT f.digest, COALESCE(r.runs, '') FROM forwarded f
                     LEFT JOIN forwarded_from r USING (period) WHERE f.period = ?1",
                    params![period.to_string()],
                    |r| {
                        Ok(Forwarded {
                            digest: r.get(0)?,
                            runs: r.get(1)?,
                        })
                    },
                )
                .optional()?)
        })
    }

    fn last_change(&self, period: &Period) -> Result<Option<OffsetDateTime>, StoreError> {
        self.store.with(|conn| {
            let at: Option<String> = conn.query_row(
                "SELECT MAX(r.received_at) FROM current_runs c
                 JOIN runs r ON r.run_id = c.run_id WHERE c.period = ?1",
                params![period.to_string()],
                |r| r.get(0),
            )?;
            at.as_deref().map(stored_time).transpose()
        })
    }

    fn mark_forwarded(
        &self,
        period: &Period,
        digest: &str,
        runs: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (period, at) = (period.to_string(), rfc3339(at));
        self.store.with(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO forwarded (period, digest, forwarded_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (period) DO UPDATE
                 SET digest = excluded.digest, forwarded_at = excluded.forwarded_at",
                params![period, digest, at],
            )?;
            tx.execute(
                "INSERT INTO forwarded_from (period, runs) VALUES (?1, ?2)
                 ON CONFLICT (period) DO UPDATE SET runs = excluded.runs",
                params![period, runs],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn record_contact(&self, contact: &Contact) -> Result<(), StoreError> {
        let report = contact.report.encode_to_vec();
        let (run_id, period) = contact
            .delivered
            .clone()
            .map_or((None, None), |(r, p)| (Some(r), Some(p.to_string())));
        let (site, at) = (contact.site.as_str(), rfc3339(contact.at));
        self.store.with(|conn| {
            // A heartbeat keeps the last delivery; a push replaces it.
            conn.execute(
                "INSERT INTO site_links
                   (site, last_contact_at, last_delivery_at, last_run_id, last_period, report)
                 VALUES (?1, ?2, CASE WHEN ?3 IS NULL THEN NULL ELSE ?2 END, ?3, ?4, ?5)
                 ON CONFLICT(site) DO UPDATE SET
                   last_contact_at = excluded.last_contact_at,
                   last_delivery_at = COALESCE(excluded.last_delivery_at, last_delivery_at),
                   last_run_id = COALESCE(excluded.last_run_id, last_run_id),
                   last_period = COALESCE(excluded.last_period, last_period),
                   report = excluded.report",
                params![site, at, run_id, period, report],
            )?;
            Ok(())
        })
    }

    fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        self.store.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT site, last_contact_at, last_delivery_at, last_run_id, last_period, report
                 FROM site_links ORDER BY site",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (site, at, last_delivery_at, run_id, period, report) = row?;
                let report = pb::LinkReport::decode(report.as_slice())
                    .map_err(|e| StoreError::Corrupt(format!("link report of {site}: {e}")))?;
                let delivered = match run_id.zip(period) {
                    Some((run_id, period)) => Some((run_id, stored_period(&period)?)),
                    None => None,
                };
                out.push(Contact {
                    site: stored_site(&site)?,
                    at: stored_time(&at)?,
                    delivered,
                    last_delivery_at: last_delivery_at.as_deref().map(stored_time).transpose()?,
                    report,
                });
            }
            Ok(out)
        })
    }

    fn request_reinit(
        &self,
        site: &SiteCode,
        periods: &[Period],
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (site, at) = (site.as_str(), rfc3339(at));
        self.store.with(|conn| {
            let tx = conn.transaction()?;
            for period in periods {
                tx.execute(
                    "INSERT INTO reinit (site, period, requested_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(site, period) DO UPDATE SET requested_at = excluded.requested_at",
                    params![site, period.to_string(), at],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn reinit_pending(&self, site: &SiteCode) -> Result<Vec<Period>, StoreError> {
        self.store.with(|conn| {
            let mut stmt =
                conn.prepare("SELECT period FROM reinit WHERE site = ?1 ORDER BY period")?;
            let rows = stmt.query_map(params![site.as_str()], |r| r.get::<_, String>(0))?;
            rows.map(|text| stored_period(&text?)).collect()
        })
    }

    fn reinit_done(&self, site: &SiteCode, period: &Period) -> Result<(), StoreError> {
        self.store.with(|conn| {
            conn.execute(
                "DELETE FROM reinit WHERE site = ?1 AND period = ?2",
                params![site.as_str(), period.to_string()],
            )?;
            Ok(())
        })
    }

    fn unrelayed(&self) -> Result<Vec<StoredRun>, StoreError> {
        self.store
            .with(|conn| stored_runs(conn, "WHERE r.run_id NOT IN (SELECT run_id FROM relayed)"))
    }

    fn current_runs(&self) -> Result<Vec<StoredRun>, StoreError> {
        self.store.with(|conn| stored_runs(conn, ""))
    }

    fn payload(&self, run: &StoredRun) -> Arc<dyn RunBytes> {
        let id = run.run_id.clone();
        let locate = blob::by_key("runs", "payload", "run_id", id.clone());
        Arc::new(
            self.store
                .blob_reader(format!("run {id}"), run.size, locate),
        )
    }

    fn mark_relayed(&self, run_id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        let at = rfc3339(at);
        self.store.with(|conn| {
            conn.execute(
                "INSERT INTO relayed (run_id, relayed_at) VALUES (?1, ?2)
                 ON CONFLICT(run_id) DO NOTHING",
                params![run_id, at],
            )?;
            Ok(())
        })
    }

    fn stage(
        &self,
        offer: &pb::RunOffer,
        at: OffsetDateTime,
        stale_before: OffsetDateTime,
    ) -> Result<Staged, MergeError> {
        let (at, stale_before) = (rfc3339(at), rfc3339(stale_before));
        let upload = upload_of(offer);
        self.store.with(|conn| {
            let tx = conn.transaction()?;
            // A site sends its runs one after another, so its older unfinished stagings
            // are abandoned (runs its spool dropped).
            let staged =
                STAGED_RUNS.stage(&tx, &upload, &at, &stale_before, UNFINISHED_PER_SITE)?;
            let staged = match staged {
                staging::Staged::Open { held, created } => Staged {
                    held,
                    committed: None,
                    created,
                },
                staging::Staged::Settled(outcome) => Staged {
                    held: offer.size,
                    committed: Commit::parse(&outcome),
                    created: false,
                },
                staging::Staged::Conflict { stored, sent } => {
                    return Ok(Err(MergeError::Conflict {
                        run_id: offer.run_id.clone(),
                        stored,
                        sent,
                    }));
                }
            };
            tx.commit()?;
            Ok(Ok(staged))
        })?
    }

    fn stage_append(&self, run_id: &str, offset: u64, data: &[u8]) -> Result<Appended, StoreError> {
        self.store
            .with(|conn| STAGED_RUNS.append(conn, run_id, offset, data))
    }

    fn staged_range(&self, run_id: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        self.store
            .with(|conn| STAGED_RUNS.range(conn, run_id, offset, len))
    }

    fn commit_staged(
        &self,
        fields: &pb::Run,
        header: &RunHeader,
        offer: &pb::RunOffer,
        received_at: OffsetDateTime,
    ) -> Result<Commit, MergeError> {
        let received_at = rfc3339(received_at);
        let sequence = i64::try_from(fields.sequence).unwrap_or(i64::MAX);
        let period = header.period.to_string();
        let site = header.site.to_string();
        let run_id = fields.run_id.clone();
        let size = offer.size;
        self.store.with(|conn| {
            let tx = conn.transaction()?;
            // The staging checked a moment ago must still be the same, whole and open: it
            // may have been swept, evicted or replaced meanwhile.
            if !STAGED_RUNS.intact(&tx, &upload_of(offer))? {
                return Err(StoreError::Corrupt(format!(
                    "run {run_id} changed in staging while it was committed; send it again"
                )));
            }
            let stored: Option<String> = tx
                .query_row(
                    "SELECT digest FROM runs WHERE run_id = ?1",
                    params![run_id],
                    |r| r.get(0),
                )
                .optional()?;
            let commit = match stored {
                Some(stored) if stored != fields.digest => {
                    return Ok(Err(MergeError::Conflict {
                        run_id,
                        stored,
                        sent: fields.digest.clone(),
                    }));
                }
                Some(_) => Commit::Duplicate,
                None => {
                    tx.execute(
                        "INSERT INTO runs (run_id, site, period, sequence, digest, level,
                                           catalog_version, received_at, payload)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, zeroblob(?9))",
                        params![
                            run_id,
                            site,
                            period,
                            sequence,
                            fields.digest,
                            fields.level,
                            fields.catalog_version,
                            received_at,
                            i64::try_from(size).unwrap_or(i64::MAX)
                        ],
                    )?;
                    let rowid = tx.last_insert_rowid();
                    STAGED_RUNS.copy_into(&tx, &run_id, "runs", "payload", rowid)?;
                    let newer = tx.execute(
                        "INSERT INTO current_runs (period, site, run_id, sequence)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (period, site) DO UPDATE
                         SET run_id = excluded.run_id, sequence = excluded.sequence
                         WHERE excluded.sequence > current_runs.sequence",
                        params![period, site, run_id, sequence],
                    )?;
                    if newer == 1 {
                        Commit::Merged
                    } else {
                        Commit::Superseded
                    }
                }
            };
            STAGED_RUNS.settle(&tx, &run_id, commit.as_str())?;
            tx.commit()?;
            Ok(Ok(commit))
        })?
    }

    fn stage_discard(&self, run_id: &str) -> Result<(), StoreError> {
        self.store.with(|conn| STAGED_RUNS.discard(conn, run_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(run: u8, size: u64) -> pb::RunOffer {
        pb::RunOffer {
            run_id: format!("00000000-0000-4000-8000-0000000000{run:02}"),
            site: "P01".into(),
            hierarchy_id: String::new(),
            size,
            sha256: format!("{run:064}"),
        }
    }

    fn at(second: u8) -> OffsetDateTime {
        time::macros::datetime!(2026-11-25 00:00 UTC) + time::Duration::seconds(i64::from(second))
    }

    /// A run of P01 for 2026-W48 without results, as the run check returns its own fields,
    /// with the header the check reads from it.
    fn checked_run(run: u8, sequence: u64, digest: &str) -> (pb::Run, RunHeader) {
        let fields = pb::Run {
            run_id: offer(run, 0).run_id,
            sequence,
            site: "P01".into(),
            hierarchy_id: "3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47".into(),
            period: "2026-W48".into(),
            catalog_version: "2026.12.1".into(),
            level: "Basic".into(),
            started_at: "2026-11-25T00:00:00Z".into(),
            finished_at: "2026-11-25T00:00:01Z".into(),
            digest: digest.into(),
            ..Default::default()
        };
        let header = RunHeader {
            run_id: uuid::Uuid::parse_str(&fields.run_id).expect("uuid"),
            site: "P01".parse().expect("site"),
            hierarchy_id: fields.hierarchy_id.parse().expect("hierarchy"),
            period: "2026-W48".parse().expect("period"),
            level: hrs_core::Level::Basic,
            started_at: time::macros::datetime!(2026-11-25 00:00 UTC),
        };
        (fields, header)
    }

    /// Commits a run the one way runs are committed: offered and staged, its encoding
    /// appended in chunks, then committed from the staging. Staging untouched since
    /// `stale_before` is swept first, as every offer sweeps it.
    fn stage_and_commit(
        store: &SqliteMergeStore,
        (fields, header): &(pb::Run, RunHeader),
        now: OffsetDateTime,
        stale_before: OffsetDateTime,
    ) -> Result<Commit, MergeError> {
        let bytes = fields.encode_to_vec();
        let offer = pb::RunOffer {
            run_id: fields.run_id.clone(),
            site: fields.site.clone(),
            hierarchy_id: fields.hierarchy_id.clone(),
            size: bytes.len() as u64,
            sha256: hrs_core::bytes::sha256_of(&bytes, 1 << 20).expect("hashes"),
        };
        let staged = store.stage(&offer, now, stale_before)?;
        assert_eq!(staged.committed, None, "staged afresh");
        let mut held = staged.held;
        for chunk in bytes[usize::try_from(held).expect("fits")..].chunks(7) {
            held = match store.stage_append(&offer.run_id, held, chunk)? {
                Appended::Held(after) => after,
                other => panic!("{other:?}"),
            };
        }
        store.commit_staged(fields, header, &offer, now)
    }

    #[test]
    fn staging_keeps_chunks_in_order_and_reads_any_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteMergeStore::open(&dir.path().join("merge.sqlite")).expect("opens");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let first = offer(1, data.len() as u64);
        let staged = store.stage(&first, at(1), at(0)).expect("stages");
        assert_eq!(staged.held, 0);
        let mut held = 0;
        for chunk in data.chunks(3_000) {
            held = match store
                .stage_append(&first.run_id, held, chunk)
                .expect("appends")
            {
                Appended::Held(after) => after,
                other => panic!("{other:?}"),
            };
        }
        assert_eq!(held, data.len() as u64);
        assert_eq!(
            store.stage_append(&first.run_id, 5, b"x").expect("refuses"),
            Appended::Elsewhere(held)
        );
        for (offset, len) in [
            (0, 10_000),
            (2_999, 2),
            (3_000, 3_000),
            (9_999, 1),
            (100, 7_000),
        ] {
            assert_eq!(
                store
                    .staged_range(&first.run_id, offset, len)
                    .expect("reads"),
                data[offset as usize..offset as usize + len]
            );
        }
        assert!(store.staged_range(&first.run_id, 9_999, 2).is_err());
        // The same offer finds what is held; another content for the run starts over.
        assert_eq!(
            store.stage(&first, at(2), at(0)).expect("stages").held,
            held
        );
        let changed = pb::RunOffer {
            sha256: "f".repeat(64),
            ..first.clone()
        };
        assert_eq!(store.stage(&changed, at(3), at(0)).expect("stages").held, 0);
    }

    #[test]
    fn the_newest_run_is_current_and_a_run_id_commits_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteMergeStore::open(&dir.path().join("merge.sqlite")).expect("opens");
        let newer = checked_run(1, 2, &"a".repeat(64));
        let older = checked_run(2, 1, &"b".repeat(64));
        let current = |store: &SqliteMergeStore| -> Vec<String> {
            store
                .current(None, None)
                .expect("reads")
                .into_iter()
                .map(|run| run.run_id)
                .collect()
        };
        assert_eq!(
            stage_and_commit(&store, &newer, at(1), at(0)).expect("commits"),
            Commit::Merged
        );
        assert_eq!(
            stage_and_commit(&store, &older, at(2), at(0)).expect("commits"),
            Commit::Superseded
        );
        assert_eq!(current(&store), vec![newer.0.run_id.clone()]);
        assert_eq!(
            store.current(None, None).expect("reads")[0],
            newer.0,
            "the payload is the staged encoding"
        );

        // Its staging answers a re-send with what the commit did.
        let bytes = newer.0.encode_to_vec();
        let offered = pb::RunOffer {
            run_id: newer.0.run_id.clone(),
            site: "P01".into(),
            hierarchy_id: newer.0.hierarchy_id.clone(),
            size: bytes.len() as u64,
            sha256: hrs_core::bytes::sha256_of(&bytes, 1 << 20).expect("hashes"),
        };
        let staged = store.stage(&offered, at(3), at(0)).expect("stages");
        assert_eq!(staged.committed, Some(Commit::Merged));

        // Once its staging is swept, the same run sent again is a duplicate, and the same
        // run id with other content a conflict; neither changes what is current.
        assert_eq!(
            stage_and_commit(&store, &newer, at(10), at(5)).expect("commits"),
            Commit::Duplicate
        );
        let reused = checked_run(1, 3, &"c".repeat(64));
        assert!(matches!(
            stage_and_commit(&store, &reused, at(20), at(15)),
            Err(MergeError::Conflict { .. })
        ));
        assert_eq!(current(&store), vec![newer.0.run_id.clone()]);
    }

    #[test]
    fn a_staging_gone_or_claimed_by_another_site_is_never_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteMergeStore::open(&dir.path().join("merge.sqlite")).expect("opens");
        let first = offer(1, 10);
        store.stage(&first, at(1), at(0)).expect("stages");
        store
            .stage_append(&first.run_id, 0, &[1; 10])
            .expect("appends");
        let other_site = pb::RunOffer {
            site: "P02".into(),
            ..first.clone()
        };
        assert!(matches!(
            store.stage(&other_site, at(2), at(0)),
            Err(MergeError::Conflict { .. })
        ));
        store.stage_discard(&first.run_id).expect("discards");
        let header = RunHeader {
            run_id: uuid::Uuid::parse_str(&first.run_id).expect("uuid"),
            site: "P01".parse().expect("site"),
            hierarchy_id: hrs_core::HierarchyId::new(uuid::Uuid::new_v4()),
            period: "2026-W48".parse().expect("period"),
            level: hrs_core::Level::Basic,
            started_at: time::macros::datetime!(2026-11-30 06:00 UTC),
        };
        let fields = pb::Run {
            run_id: first.run_id.clone(),
            sequence: 1,
            ..Default::default()
        };
        assert!(
            store
                .commit_staged(&fields, &header, &first, at(3))
                .is_err()
        );
        assert!(store.current(None, None).expect("reads").is_empty());
    }

    #[test]
    fn a_site_keeps_only_its_newest_unfinished_runs_and_stale_ones_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteMergeStore::open(&dir.path().join("merge.sqlite")).expect("opens");
        for run in 1..=6u8 {
            let offer = offer(run, 100);
            store.stage(&offer, at(run), at(0)).expect("stages");
            store
                .stage_append(&offer.run_id, 0, &[run; 10])
                .expect("appends");
        }
        let staged = |run: u8| {
            store
                .stage_append(&offer(run, 100).run_id, 10, &[0; 1])
                .expect("appends")
        };
        assert_eq!(staged(1), Appended::Gone, "the oldest was evicted");
        assert_eq!(staged(2), Appended::Gone);
        assert!(matches!(staged(3), Appended::Held(11)));
        assert!(matches!(staged(6), Appended::Held(11)));
        // Stagings older than the cut-off go with the next offer.
        store.stage(&offer(7, 100), at(30), at(20)).expect("stages");
        assert_eq!(staged(6), Appended::Gone);
        let orphans: i64 = store
            .store
            .with(|conn| {
                Ok(conn.query_row(
                    "SELECT COUNT(*) FROM staged_chunks
                     WHERE run_id NOT IN (SELECT run_id FROM staged_runs)",
                    [],
                    |r| r.get(0),
                )?)
            })
            .expect("counts");
        assert_eq!(orphans, 0, "no chunk outlives its staging");
    }
}
