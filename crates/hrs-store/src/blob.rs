//! One stored blob read a range at a time through a single incremental-blob handle.
//!
//! SQLite keeps a blob larger than a page as a chain of overflow pages. A blob handle
//! learns the chain as it reads and then goes straight to any offset; a handle opened
//! afresh for each range walks the chain from its start every time, which made reading a
//! large payload in chunks quadratic (a 300 MB run read in 1 MiB ranges spent nearly all
//! its time in that walk). A [`BlobReader`] keeps one handle for its whole life.
//!
//! A reader is the [`RunBytes`] of a stored payload, so every role sends, hashes and merges
//! what it stores through it.
//!
//! A handle borrows its connection, and the store's shared connection cannot be lent for
//! that long, so each reader has its own read-only connection on a thread of its own,
//! opened at the first read. The connection reads in one transaction: the row is found and
//! read in one snapshot, unaffected by writers (the store's write-ahead log lets them go
//! on), and is never another row that took the same rowid meanwhile.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hrs_core::bytes::RunBytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use crate::StoreError;

/// Where the blob a reader reads lies, as its `locate` query finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobAt {
    /// The table holding it.
    pub table: &'static str,
    /// Its column.
    pub column: &'static str,
    /// Its row.
    pub rowid: i64,
}

/// Finds the blob to read, on the reader's own connection inside its transaction; `None`
/// when the row is gone.
pub type Locate = dyn Fn(&Connection) -> Result<Option<BlobAt>, StoreError> + Send + Sync;

/// Finds the blob in `table`.`column` of the row whose `key` column is `value`: by key in
/// the reader's snapshot, as the row may have been removed meanwhile and its rowid taken.
pub fn by_key(
    table: &'static str,
    column: &'static str,
    key: &'static str,
    value: String,
) -> impl Fn(&Connection) -> Result<Option<BlobAt>, StoreError> + Send + Sync + 'static {
    move |conn| {
        let rowid = conn
            .query_row(
                &format!("SELECT rowid FROM {table} WHERE {key} = ?1"),
                params![value],
                |r| r.get(0),
            )
            .optional()?;
        Ok(rowid.map(|rowid| BlobAt {
            table,
            column,
            rowid,
        }))
    }
}

/// Page cache of a reader's connection: reads are sequential, so a small cache does.
const READER_CACHE_KIB: i64 = 512;

/// A stored blob read a range at a time through one handle kept open; see the module
/// documentation for why.
pub struct BlobReader {
    path: PathBuf,
    what: String,
    size: u64,
    locate: Arc<Locate>,
    open: Mutex<Option<Open>>,
}

/// The reader's thread as its caller talks to it.
struct Open {
    requests: SyncSender<(u64, usize)>,
    replies: Receiver<Result<Vec<u8>, StoreError>>,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("path", &self.path)
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl BlobReader {
    /// A reader of the `size`-byte blob `locate` finds in the store file at `path`; `what`
    /// names it in errors. Nothing is opened until the first read, and a blob of another
    /// size is refused then.
    pub fn new(path: &Path, what: impl Into<String>, size: u64, locate: Arc<Locate>) -> Self {
        Self {
            path: path.to_owned(),
            what: what.into(),
            size,
            locate,
            open: Mutex::new(None),
        }
    }

    /// Reads `len` bytes at `offset`; blocks, so it runs off the async runtime.
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let reader = self.opened(&mut open)?;
        let end = offset
            .checked_add(len as u64)
            .filter(|end| *end <= self.size);
        if end.is_none() {
            return Err(StoreError::Corrupt(format!(
                "{}: {len} bytes at {offset} are past its end ({} bytes)",
                self.what, self.size
            )));
        }
        let answer = reader
            .requests
            .send((offset, len))
            .ok()
            .and_then(|()| reader.replies.recv().ok());
        match answer {
            Some(result) => result,
            None => {
                // The thread is gone; the next read starts a new one.
                *open = None;
                Err(StoreError::Task(format!(
                    "{}: its reader stopped",
                    self.what
                )))
            }
        }
    }

    /// The open reader, started on its own thread if there is none.
    fn opened<'a>(&self, open: &'a mut Option<Open>) -> Result<&'a Open, StoreError> {
        if open.is_none() {
            *open = Some(self.start()?);
        }
        open.as_ref()
            .ok_or_else(|| StoreError::Task(format!("{}: no reader", self.what)))
    }

    fn start(&self) -> Result<Open, StoreError> {
        let (requests, incoming) = sync_channel::<(u64, usize)>(0);
        let (reply, replies) = sync_channel(0);
        let (opened, was_opened) = sync_channel(1);
        let (path, what, locate) = (
            self.path.clone(),
            self.what.clone(),
            Arc::clone(&self.locate),
        );
        std::thread::Builder::new()
            .name("hrs-blob-reader".into())
            .spawn(move || serve(&path, &what, locate.as_ref(), &opened, &incoming, &reply))
            .map_err(|e| StoreError::Task(format!("cannot start a reader: {e}")))?;
        let size = was_opened
            .recv()
            .map_err(|_| StoreError::Task(format!("{}: its reader stopped", self.what)))??;
        if size != self.size {
            return Err(StoreError::Corrupt(format!(
                "{}: {size} bytes stored, {} expected",
                self.what, self.size
            )));
        }
        Ok(Open { requests, replies })
    }
}

impl RunBytes for BlobReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.read(offset, len).map_err(std::io::Error::other)
    }
}

/// The reader's thread: opens the connection and the handle, answers reads until its
/// reader is dropped, then closes both (ending the transaction).
fn serve(
    path: &Path,
    what: &str,
    locate: &Locate,
    opened: &SyncSender<Result<u64, StoreError>>,
    incoming: &Receiver<(u64, usize)>,
    reply: &SyncSender<Result<Vec<u8>, StoreError>>,
) {
    let conn = match connect(path) {
        Ok(conn) => conn,
        Err(error) => {
            let _ = opened.send(Err(error));
            return;
        }
    };
    let blob = match open_blob(&conn, what, locate) {
        Ok(blob) => blob,
        Err(error) => {
            let _ = opened.send(Err(error));
            return;
        }
    };
    if opened.send(Ok(blob.len() as u64)).is_err() {
        return;
    }
    for (offset, len) in incoming {
        let result = usize::try_from(offset)
            .map_err(|e| StoreError::Corrupt(format!("{what}: offset {e}")))
            .and_then(|at| {
                let mut data = vec![0u8; len];
                blob.read_at_exact(&mut data, at)
                    .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?;
                Ok(data)
            });
        if reply.send(result).is_err() {
            return;
        }
    }
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
    // Deferred: the snapshot is taken by `locate`'s first read and kept until the end.
    conn.execute_batch("BEGIN")?;
    Ok(conn)
}

fn open_blob<'c>(
    conn: &'c Connection,
    what: &str,
    locate: &Locate,
) -> Result<rusqlite::blob::Blob<'c>, StoreError> {
    let at =
        locate(conn)?.ok_or_else(|| StoreError::Corrupt(format!("{what}: no longer stored")))?;
    Ok(conn.blob_open(rusqlite::MAIN_DB, at.table, at.column, at.rowid, true)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS payloads (name TEXT PRIMARY KEY, data BLOB);";

    fn locate(name: &str) -> Arc<Locate> {
        Arc::new(by_key("payloads", "data", "name", name.to_owned()))
    }

    fn stored(dir: &Path, data: &[u8]) -> Store {
        let store = Store::open(&dir.join("s.sqlite"), SCHEMA).expect("opens");
        store
            .with(|c| {
                c.execute(
                    "INSERT INTO payloads (name, data) VALUES ('a', ?1)",
                    params![data],
                )?;
                Ok(())
            })
            .expect("stores");
        store
    }

    #[test]
    fn reads_any_range_in_any_order_and_refuses_past_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let store = stored(dir.path(), &data);
        let reader = BlobReader::new(store.path(), "payload a", data.len() as u64, locate("a"));
        for (offset, len) in [(150_000, 50_000), (0, 10), (4093, 9000), (199_999, 1)] {
            let got = reader.read(offset, len).expect("reads");
            assert_eq!(got, data[offset as usize..offset as usize + len]);
        }
        let past = reader.read(199_999, 2).expect_err("past the end");
        assert!(past.to_string().contains("payload a"), "{past}");
        let other = BlobReader::new(store.path(), "payload a", 7, locate("a"));
        let sized = other.read(0, 1).expect_err("another size");
        assert!(
            sized
                .to_string()
                .contains("200000 bytes stored, 7 expected"),
            "{sized}"
        );
    }

    #[test]
    fn a_reader_keeps_reading_the_row_it_opened_while_writers_replace_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = stored(dir.path(), &[1u8; 100_000]);
        let reader = BlobReader::new(store.path(), "payload a", 100_000, locate("a"));
        assert_eq!(reader.read(0, 4).expect("reads"), [1; 4]);
        store
            .with(|c| {
                c.execute("DELETE FROM payloads WHERE name = 'a'", [])?;
                c.execute(
                    "INSERT INTO payloads (name, data) VALUES ('a', ?1)",
                    params![vec![2u8; 100_000]],
                )?;
                Ok(())
            })
            .expect("replaces while the reader is open");
        assert_eq!(reader.read(99_996, 4).expect("reads"), [1; 4]);
        drop(reader);
        let fresh = BlobReader::new(store.path(), "payload a", 100_000, locate("a"));
        assert_eq!(fresh.read(0, 4).expect("reads"), [2; 4]);
    }

    #[test]
    fn a_row_that_is_gone_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = stored(dir.path(), b"x");
        let reader = BlobReader::new(store.path(), "payload b", 1, locate("b"));
        let gone = reader.read(0, 1).expect_err("no such row");
        assert!(
            gone.to_string().contains("payload b: no longer stored"),
            "{gone}"
        );
    }
}
