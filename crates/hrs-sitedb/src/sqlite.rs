//! The embedded SQLite site database.

use std::future::Future;
use std::path::Path;

use hrs_core::Value;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::{Dialect, QueryParams, SiteDb, SiteDbError};

/// A site database in a SQLite file, opened read-only: the collector never writes to it.
#[derive(Debug)]
pub struct SqliteSiteDb {
    conn: Connection,
}

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
        Ok(Self { conn })
    }

    fn run(
        &self,
        sql: &str,
        params: &QueryParams,
        each: &mut (dyn FnMut(Vec<Value>) -> Result<(), SiteDbError> + Send),
    ) -> Result<(), SiteDbError> {
        let mut stmt = self.conn.prepare(sql)?;
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
}

impl SiteDb for SqliteSiteDb {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn query_each(
        &mut self,
        sql: &str,
        params: &QueryParams,
        each: &mut (dyn FnMut(Vec<Value>) -> Result<(), SiteDbError> + Send),
    ) -> impl Future<Output = Result<(), SiteDbError>> + Send {
        let result = self.run(sql, params, each);
        async move { result }
    }
}
