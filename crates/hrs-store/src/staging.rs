//! Resumable uploads held durably until whole: the receiving side of every chunked transfer
//! (a run at the aggregator, a merged period at the connection point and the intake).
//!
//! An upload is offered with its size and SHA-256, then arrives as chunks, each appended in
//! its own transaction only where the held bytes end, so a broken stream resumes from the
//! last durable chunk. Once whole and checked, the receiver copies it into its own table and
//! settles the upload with the outcome, which answers a re-sent offer without its bytes.
//!
//! The functions run inside the caller's store closure (see [`crate::Store::call`]), so an
//! upload's bookkeeping commits in the same transaction as the receiver's own rows.

use rusqlite::{Connection, OptionalExtension as _, Transaction, params};

use crate::StoreError;

/// The tables one kind of upload is staged in, and the names of its id and owner columns,
/// so stores that already hold stagings keep their files as they are.
#[derive(Debug, Clone, Copy)]
pub struct Staging {
    /// The table with one row per upload.
    pub uploads: &'static str,
    /// The table with the uploads' chunks.
    pub chunks: &'static str,
    /// The upload's id column, in both tables.
    pub id: &'static str,
    /// The column naming who offered the upload; one owner never touches another's.
    pub owner: &'static str,
    /// Longest chunk the receiver accepts: bounds how far back a range read looks.
    pub max_chunk_bytes: u64,
}

/// An upload as offered: what it is, who sends it, and what its bytes must add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The upload's id, stable across re-sends.
    pub id: String,
    /// Who sends it.
    pub owner: String,
    /// Length of the bytes, and their SHA-256 (lowercase hex).
    pub size: u64,
    /// The SHA-256 of the whole upload.
    pub sha256: String,
}

/// Where an offered upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staged {
    /// Being received: this many bytes are held, from the start; `created` when this offer
    /// started it.
    Open {
        /// Bytes held durably.
        held: u64,
        /// True when nothing of the upload was held before this offer.
        created: bool,
    },
    /// Already received whole and settled with this outcome.
    Settled(String),
    /// Refused: the id is staged by another owner, or was settled with other bytes.
    Conflict {
        /// What the store holds under the id.
        stored: String,
        /// What this offer says.
        sent: String,
    },
}

/// What appending a chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored; this many bytes are held now.
    Held(u64),
    /// Not stored: the chunk does not start where the held bytes (this many) end.
    Elsewhere(u64),
    /// Not stored: the upload is no longer open (settled, refused, or evicted).
    Gone,
}

/// A SQLite integer for a size or offset; none of ours reach `i64::MAX`.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Staging {
    /// The tables' schema; idempotent, for the store's own schema.
    pub fn schema(&self) -> String {
        let Self {
            uploads,
            chunks,
            id,
            owner,
            ..
        } = self;
        format!(
            "CREATE TABLE IF NOT EXISTS {uploads} (
                 {id}       TEXT PRIMARY KEY,
                 {owner}    TEXT NOT NULL,
                 size       INTEGER NOT NULL,
                 sha256     TEXT NOT NULL,
                 held       INTEGER NOT NULL,
                 started_at TEXT NOT NULL,
                 outcome    TEXT
             );
             CREATE TABLE IF NOT EXISTS {chunks} (
                 {id}   TEXT NOT NULL,
                 offset INTEGER NOT NULL,
                 data   BLOB NOT NULL,
                 PRIMARY KEY ({id}, offset)
             );"
        )
    }

    /// Records an offer: resumes the upload it names when size and SHA-256 agree, answers
    /// with the outcome when it was settled, or starts it over. Uploads started before
    /// `stale_before` are swept first, and an owner keeps at most `open_per_owner` open
    /// uploads (its oldest go), which bounds the disk one sender can fill.
    pub fn stage(
        &self,
        tx: &Transaction<'_>,
        offer: &Offer,
        at: &str,
        stale_before: &str,
        open_per_owner: u32,
    ) -> Result<Staged, StoreError> {
        let Self {
            uploads,
            chunks,
            id,
            owner,
            ..
        } = *self;
        for table in [chunks, uploads] {
            tx.execute(
                &format!(
                    "DELETE FROM {table} WHERE {id} IN
                       (SELECT {id} FROM {uploads} WHERE started_at < ?1)"
                ),
                params![stale_before],
            )?;
        }
        let existing: Option<(i64, String, i64, Option<String>, String)> = tx
            .query_row(
                &format!(
                    "SELECT size, sha256, held, outcome, {owner} FROM {uploads} WHERE {id} = ?1"
                ),
                params![offer.id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        match &existing {
            Some((.., stored_owner)) if *stored_owner != offer.owner => {
                return Ok(Staged::Conflict {
                    stored: format!("an upload of {stored_owner}"),
                    sent: format!("an offer of {}", offer.owner),
                });
            }
            Some((size, sha256, held, outcome, _))
                if *size == int(offer.size) && *sha256 == offer.sha256 =>
            {
                return Ok(match outcome {
                    Some(outcome) => Staged::Settled(outcome.clone()),
                    None => Staged::Open {
                        held: u64::try_from(*held).unwrap_or(0),
                        created: false,
                    },
                });
            }
            Some((_, sha256, _, Some(_), _)) => {
                return Ok(Staged::Conflict {
                    stored: sha256.clone(),
                    sent: offer.sha256.clone(),
                });
            }
            Some(_) => {
                tx.execute(
                    &format!("DELETE FROM {chunks} WHERE {id} = ?1"),
                    params![offer.id],
                )?;
            }
            None => {}
        }
        for table in [chunks, uploads] {
            tx.execute(
                &format!(
                    "DELETE FROM {table} WHERE {id} IN
                       (SELECT {id} FROM {uploads}
                        WHERE {owner} = ?1 AND outcome IS NULL AND {id} <> ?2
                        ORDER BY started_at DESC LIMIT -1 OFFSET ?3)"
                ),
                params![
                    offer.owner,
                    offer.id,
                    i64::from(open_per_owner.saturating_sub(1))
                ],
            )?;
        }
        tx.execute(
            &format!(
                "INSERT INTO {uploads} ({id}, {owner}, size, sha256, held, started_at)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5)
                 ON CONFLICT({id}) DO UPDATE SET
                   {owner} = excluded.{owner}, size = excluded.size, sha256 = excluded.sha256,
                   held = 0, started_at = excluded.started_at, outcome = NULL"
            ),
            params![offer.id, offer.owner, int(offer.size), offer.sha256, at],
        )?;
        Ok(Staged::Open {
            held: 0,
            created: true,
        })
    }

    /// Appends a chunk in its own transaction, if it starts where the held bytes end.
    ///
    /// The transaction is not synced to disk on its own: nothing is acknowledged per chunk,
    /// and the sync of the commit that acknowledges the whole upload covers every chunk
    /// before it. A chunk lost to a power cut is only sent again, as a resumed upload
    /// starts where the held bytes end; a crash of the process loses nothing.
    pub fn append(
        &self,
        conn: &mut Connection,
        upload: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<Appended, StoreError> {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let appended = self.append_unsynced(conn, upload, offset, data);
        let restored = conn.pragma_update(None, "synchronous", "FULL");
        let appended = appended?;
        restored?;
        Ok(appended)
    }

    fn append_unsynced(
        &self,
        conn: &mut Connection,
        upload: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<Appended, StoreError> {
        let Self {
            uploads,
            chunks,
            id,
            ..
        } = *self;
        let tx = conn.transaction()?;
        let held: Option<i64> = tx
            .query_row(
                &format!("SELECT held FROM {uploads} WHERE {id} = ?1 AND outcome IS NULL"),
                params![upload],
                |r| r.get(0),
            )
            .optional()?;
        let Some(held) = held else {
            return Ok(Appended::Gone);
        };
        let held = u64::try_from(held).unwrap_or(0);
        if offset != held {
            return Ok(Appended::Elsewhere(held));
        }
        let after = held + data.len() as u64;
        tx.execute(
            &format!("INSERT INTO {chunks} ({id}, offset, data) VALUES (?1, ?2, ?3)"),
            params![upload, int(held), data],
        )?;
        tx.execute(
            &format!("UPDATE {uploads} SET held = ?2 WHERE {id} = ?1"),
            params![upload, int(after)],
        )?;
        tx.commit()?;
        Ok(Appended::Held(after))
    }

    /// Reads `len` bytes of an upload from `offset`.
    pub fn range(
        &self,
        conn: &Connection,
        upload: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, StoreError> {
        let Self { chunks, id, .. } = *self;
        let (start, end) = (offset, offset + len as u64);
        // No chunk is longer than a chunk may be, so only those starting that far before the
        // range can reach into it: the key's range scan stays short however many came before.
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT offset, data FROM {chunks}
             WHERE {id} = ?1 AND offset >= ?4 AND offset < ?3 AND offset + LENGTH(data) > ?2
             ORDER BY offset"
        ))?;
        let earliest = start.saturating_sub(self.max_chunk_bytes);
        let mut rows = stmt.query(params![upload, int(start), int(end), int(earliest)])?;
        let mut out = Vec::with_capacity(len);
        while let Some(row) = rows.next()? {
            let at = u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0);
            let data = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
            let from = usize::try_from(start.saturating_sub(at)).unwrap_or(usize::MAX);
            let to = usize::try_from(end - at)
                .unwrap_or(usize::MAX)
                .min(data.len());
            if let Some(part) = data.get(from..to) {
                out.extend_from_slice(part);
            }
        }
        if out.len() != len {
            return Err(StoreError::Corrupt(format!(
                "staged upload {upload}: {} of {len} bytes at {offset}",
                out.len()
            )));
        }
        Ok(out)
    }

    /// True when the upload is still open and whole as `offer` describes it: it may have
    /// been swept, evicted or replaced since it was checked.
    pub fn intact(&self, tx: &Transaction<'_>, offer: &Offer) -> Result<bool, StoreError> {
        let Self { uploads, id, .. } = *self;
        let staged: Option<(i64, String, i64, Option<String>)> = tx
            .query_row(
                &format!("SELECT size, sha256, held, outcome FROM {uploads} WHERE {id} = ?1"),
                params![offer.id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let whole = int(offer.size);
        Ok(matches!(
            staged,
            Some((size, sha256, held, None))
                if size == whole && held == whole && sha256 == offer.sha256
        ))
    }

    /// Copies a whole upload into the blob at `table`.`column` of row `rowid` (made with
    /// `zeroblob(size)`), a chunk at a time.
    pub fn copy_into(
        &self,
        tx: &Transaction<'_>,
        upload: &str,
        table: &str,
        column: &str,
        rowid: i64,
    ) -> Result<(), StoreError> {
        let Self { chunks, id, .. } = *self;
        let mut blob = tx.blob_open(rusqlite::MAIN_DB, table, column, rowid, false)?;
        let mut stmt = tx.prepare(&format!(
            "SELECT offset, data FROM {chunks} WHERE {id} = ?1 ORDER BY offset"
        ))?;
        let mut rows = stmt.query(params![upload])?;
        while let Some(row) = rows.next()? {
            let at = usize::try_from(row.get::<_, i64>(0)?).unwrap_or(usize::MAX);
            let data = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
            blob.write_at(data, at)
                .map_err(|e| StoreError::Corrupt(format!("staged upload {upload}: {e}")))?;
        }
        Ok(())
    }

    /// Drops an upload's chunks and records its outcome, which answers a re-sent offer.
    pub fn settle(
        &self,
        tx: &Transaction<'_>,
        upload: &str,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let Self {
            uploads,
            chunks,
            id,
            ..
        } = *self;
        tx.execute(
            &format!("DELETE FROM {chunks} WHERE {id} = ?1"),
            params![upload],
        )?;
        tx.execute(
            &format!("UPDATE {uploads} SET outcome = ?2 WHERE {id} = ?1"),
            params![upload, outcome],
        )?;
        Ok(())
    }

    /// Forgets an upload and its chunks (refused after its check).
    pub fn discard(&self, conn: &mut Connection, upload: &str) -> Result<(), StoreError> {
        let tx = conn.transaction()?;
        for table in [self.chunks, self.uploads] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE {} = ?1", self.id),
                params![upload],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPLOADS: Staging = Staging {
        uploads: "staged",
        chunks: "staged_chunks",
        id: "upload_id",
        owner: "sender",
        max_chunk_bytes: 4,
    };

    fn offer(id: &str, owner: &str, data: &[u8]) -> Offer {
        Offer {
            id: id.into(),
            owner: owner.into(),
            size: data.len() as u64,
            sha256: format!("sha-of-{}", String::from_utf8_lossy(data)),
        }
    }

    fn stage(conn: &mut Connection, offer: &Offer, at: &str) -> Staged {
        let tx = conn.transaction().expect("tx");
        let staged = UPLOADS.stage(&tx, offer, at, "0", 2).expect("stages");
        tx.commit().expect("commits");
        staged
    }

    fn open() -> Connection {
        let conn = Connection::open_in_memory().expect("opens");
        conn.execute_batch(&UPLOADS.schema()).expect("schema");
        conn.execute_batch(&UPLOADS.schema())
            .expect("the schema is idempotent");
        conn
    }

    #[test]
    fn chunks_append_only_where_the_held_bytes_end_and_any_range_reads_back() {
        let mut conn = open();
        let data = b"abcdefghij";
        let upload = offer("u1", "A", data);
        assert_eq!(
            stage(&mut conn, &upload, "1"),
            Staged::Open {
                held: 0,
                created: true
            }
        );
        assert_eq!(
            UPLOADS
                .append(&mut conn, "u1", 4, b"efgh")
                .expect("appends"),
            Appended::Elsewhere(0)
        );
        for (at, chunk) in [(0, &data[..4]), (4, &data[4..8]), (8, &data[8..])] {
            UPLOADS.append(&mut conn, "u1", at, chunk).expect("appends");
        }
        // A re-sent offer resumes where the held bytes end.
        assert_eq!(
            stage(&mut conn, &upload, "2"),
            Staged::Open {
                held: 10,
                created: false
            }
        );
        for (at, len) in [(0, 10), (3, 5), (7, 3), (9, 1), (4, 0)] {
            let got = UPLOADS.range(&conn, "u1", at, len).expect("reads");
            assert_eq!(got, &data[at as usize..at as usize + len], "{at}+{len}");
        }
        assert!(UPLOADS.range(&conn, "u1", 8, 3).is_err(), "past the end");

        conn.execute_batch("CREATE TABLE kept (payload BLOB NOT NULL)")
            .expect("table");
        let tx = conn.transaction().expect("tx");
        assert!(UPLOADS.intact(&tx, &upload).expect("checks"));
        tx.execute("INSERT INTO kept (payload) VALUES (zeroblob(10))", [])
            .expect("row");
        let rowid = tx.last_insert_rowid();
        UPLOADS
            .copy_into(&tx, "u1", "kept", "payload", rowid)
            .expect("copies");
        UPLOADS.settle(&tx, "u1", "stored").expect("settles");
        tx.commit().expect("commits");
        let kept: Vec<u8> = conn
            .query_row("SELECT payload FROM kept", [], |r| r.get(0))
            .expect("reads");
        assert_eq!(kept, data);
        assert_eq!(
            stage(&mut conn, &upload, "3"),
            Staged::Settled("stored".into())
        );
        assert_eq!(
            UPLOADS.append(&mut conn, "u1", 10, b"k").expect("answers"),
            Appended::Gone
        );
    }

    #[test]
    fn an_owner_never_touches_anothers_upload_and_a_settled_id_keeps_its_bytes() {
        let mut conn = open();
        stage(&mut conn, &offer("u1", "A", b"abc"), "1");
        assert!(matches!(
            stage(&mut conn, &offer("u1", "B", b"abc"), "2"),
            Staged::Conflict { .. }
        ));
        let tx = conn.transaction().expect("tx");
        UPLOADS.settle(&tx, "u1", "stored").expect("settles");
        tx.commit().expect("commits");
        assert!(matches!(
            stage(&mut conn, &offer("u1", "A", b"xyz"), "3"),
            Staged::Conflict { .. }
        ));
    }

    #[test]
    fn an_owner_keeps_only_its_newest_open_uploads_and_stale_ones_go() {
        let mut conn = open();
        for (n, at) in ["1", "2", "3"].iter().enumerate() {
            let id = format!("u{n}");
            stage(&mut conn, &offer(&id, "A", b"abc"), at);
            UPLOADS.append(&mut conn, &id, 0, b"a").expect("appends");
        }
        stage(&mut conn, &offer("b", "B", b"abc"), "4");
        let ids: Vec<String> = conn
            .prepare("SELECT upload_id FROM staged ORDER BY upload_id")
            .expect("prepares")
            .query_map([], |r| r.get(0))
            .expect("queries")
            .collect::<Result<_, _>>()
            .expect("reads");
        assert_eq!(ids, ["b", "u1", "u2"]);
        let tx = conn.transaction().expect("tx");
        UPLOADS
            .stage(&tx, &offer("c", "C", b"abc"), "9", "4", 2)
            .expect("stages");
        tx.commit().expect("commits");
        let left: i64 = conn
            .query_row("SELECT COUNT(*) FROM staged_chunks", [], |r| r.get(0))
            .expect("counts");
        assert_eq!(left, 0, "the stale uploads' chunks go with them");
    }
}
