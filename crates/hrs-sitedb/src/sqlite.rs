//! The embedded SQLite site database.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use hrs_core::Value;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, InterruptHandle, OpenFlags};

use crate::{Dialect, QueryParams, RowSink, SiteDb, SiteDbError};

/// A site database in a SQLite file, opened read-only: the collector never writes to it.
/// Queries run on tokio's blocking pool, never on the async threads.
pub struct SqliteSiteDb {
    conn: Arc<Mutex<Connection>>,
    /// Stops a running query from outside its thread: when its caller stops reading or
    /// goes away, nothing keeps it running.
    interrupt: Arc<InterruptHandle>,
}

impl std::fmt::Debug for SqliteSiteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSiteDb")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

/// Interrupts the query in flight when dropped before [`StopOnDrop::finished`].
struct StopOnDrop(Option<Arc<InterruptHandle>>);

impl StopOnDrop {
    /// Interrupts the query now.
    fn now(&self) {
        if let Some(handle) = &self.0 {
            handle.interrupt();
        }
    }

    /// The query ended by itself: nothing to interrupt.
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.interrupt();
        }
    }
}

/// Rows read ahead of the caller, at most: a result of any size is never held whole.
const ROWS_AHEAD: usize = 1024;

impl SqliteSiteDb {
    /// Opens an existing database file read-only.
    pub fn open(path: &Path) -> Result<Self, SiteDbError> {
        if !path.exists() {
            return Err(SiteDbError::Missing(path.display().to_string()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Ok(Self {
            interrupt: Arc::new(conn.get_interrupt_handle()),
            conn: Arc::new(Mutex::new(conn)),
        })
    }
}

/// Runs one query on `conn`, handing `each` its rows.
fn run(
    conn: &Connection,
    sql: &str,
    params: &QueryParams,
    each: &mut (dyn FnMut(Vec<Value>) -> Result<(), SiteDbError> + Send),
) -> Result<(), SiteDbError> {
    let mut stmt = conn.prepare(sql)?;
    for (name, date) in [
        (":period_start", params.period_start),
        (":period_end", params.period_end),
    ] {
        if let Some(index) = stmt.parameter_index(name)? {
            stmt.raw_bind_parameter(index, date.to_string())?;
        }
    }
    let width = stmt.column_count();
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(width);
        for column in 0..width {
            values.push(match row.get_ref(column)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::Int(i),
                ValueRef::Real(r) => Value::Real(r),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(_) => {
                    return Err(SiteDbError::UnsupportedValue {
                        column,
                        ty: "blob".into(),
                    });
                }
            });
        }
        each(values)?;
    }
    Ok(())
}

impl SiteDb for SqliteSiteDb {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn query_each(
        &mut self,
        sql: &str,
        params: &QueryParams,
        each: &mut dyn RowSink,
    ) -> impl Future<Output = Result<(), SiteDbError>> + Send {
        let conn = Arc::clone(&self.conn);
        let stop = StopOnDrop(Some(Arc::clone(&self.interrupt)));
        let (sql, params) = (sql.to_owned(), *params);
        async move {
            let (rows, mut arriving) = tokio::sync::mpsc::channel::<Vec<Value>>(ROWS_AHEAD);
            let reader = tokio::task::spawn_blocking(move || {
                let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
                run(&conn, &sql, &params, &mut |row| {
                    rows.blocking_send(row)
                        .map_err(|_| SiteDbError::Stopped("the query's reader".into()))
                })
            });
            let mut refused = None;
            while let Some(row) = arriving.recv().await {
                if let Err(error) = crate::hand_over(each, row).await {
                    refused = Some(error);
                    break;
                }
            }
            // The caller stopped reading: stop the query, and its reader at its next row.
            if refused.is_some() {
                stop.now();
            }
            drop(arriving);
            let read = reader.await;
            stop.finished();
            match (refused, read) {
                (Some(error), _) => Err(error),
                (None, Ok(read)) => read,
                (None, Err(e)) => Err(SiteDbError::Stopped(format!("the query's reader ({e})"))),
            }
        }
    }
}
