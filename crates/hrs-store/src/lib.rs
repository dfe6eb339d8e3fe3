//! The embedded SQLite store behind every role's durable state (agent spool, merge store,
//! connection point outbox, intake).
//!
//! Every store opens its file the same way: write-ahead log so readers (`hrs view`,
//! `hrs status`) never block the role, `synchronous = FULL` so a commit that was
//! acknowledged survives power loss, and a busy timeout instead of spurious lock errors.
//! Work runs on tokio's blocking pool so the async roles never stall on disk.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub mod blob;
pub mod staging;

/// Why a store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or its schema created.
    #[error("store {path}: {source}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The folder for the store could not be created.
    #[error("store {path}: cannot create its folder: {source}")]
    Folder {
        /// The store file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A statement failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Stored bytes did not decode: the file was changed by something other than HRS.
    #[error("store holds a record that does not decode: {0}")]
    Corrupt(String),
    /// The blocking task running the work panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Returns the store file when opening it (or making its folder) failed, so a role can
    /// tell a path the file system refuses, an operator's to fix, from a broken store.
    pub fn unopened(&self) -> Option<&Path> {
        match self {
            Self::Open { path, .. } | Self::Folder { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// A shared handle on one SQLite store file.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path` and applies `schema`, which must be
    /// idempotent (`CREATE TABLE IF NOT EXISTS ...`).
    pub fn open(path: &Path, schema: &str) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Folder {
                path: path.to_owned(),
                source,
            })?;
        }
        let open = || -> Result<Connection, rusqlite::Error> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            conn.execute_batch(schema)?;
            Ok(conn)
        };
        let conn = open().map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
        })
    }

    /// Opens an existing store read-only, for tools that inspect a role's state.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|conn| {
            conn.busy_timeout(Duration::from_secs(10))?;
            Ok(conn)
        })
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
        })
    }

    /// Returns the store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A reader of one `size`-byte blob of this store, kept open across ranges so a large
    /// payload is read in one pass (see [`blob`]); `what` names it in errors.
    pub fn blob_reader(
        &self,
        what: impl Into<String>,
        size: u64,
        locate: impl Fn(&Connection) -> Result<Option<blob::BlobAt>, StoreError> + Send + Sync + 'static,
    ) -> blob::BlobReader {
        blob::BlobReader::new(&self.path, what, size, Arc::new(locate))
    }

    /// Runs `work` with the connection on the current thread; for callers outside a runtime.
    pub fn with<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back
        // on drop), so the poisoned guard is safe to reuse.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        work(&mut conn)
    }

    /// Runs `work` with the connection on tokio's blocking pool.
    pub async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.with(work))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commits_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/store.sqlite");
        let schema = "CREATE TABLE IF NOT EXISTS t (v INTEGER NOT NULL);";
        let store = Store::open(&path, schema).expect("opens");
        store
            .call(|c| Ok(c.execute("INSERT INTO t (v) VALUES (7)", [])?))
            .await
            .expect("inserts");
        drop(store);
        let again = Store::open(&path, schema).expect("reopens");
        let v: i64 = again
            .with(|c| Ok(c.query_row("SELECT v FROM t", [], |r| r.get(0))?))
            .expect("reads");
        assert_eq!(v, 7);
    }
}
