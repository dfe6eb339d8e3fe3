//! Site databases: what the agent reads its catalog from.
//!
//! Every backend implements [`SiteDb`]; the embedded default is SQLite ([`SqliteSiteDb`]),
//! seeded deterministically by [`seed`] so a whole hierarchy runs on one machine.

mod seed;
mod sqlite;

use std::future::Future;

use hrs_core::Value;
use time::Date;

pub use seed::{SeedSummary, identifying_values, seed};
pub use sqlite::SqliteSiteDb;

/// Why a site database could not be opened, seeded or queried.
#[derive(Debug, thiserror::Error)]
pub enum SiteDbError {
    /// The location string names no backend this build knows.
    #[error("invalid site database {0:?}: expected sqlite:PATH")]
    Spec(String),
    /// The database file is missing.
    #[error("site database {0} does not exist")]
    Missing(String),
    /// The database file could not be replaced.
    #[error("site database file: {0}")]
    Io(#[from] std::io::Error),
    /// SQLite refused an operation.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A value came back in a form the model has no type for.
    #[error("column {column} returned a value of unsupported type {ty}")]
    UnsupportedValue {
        /// The column's position.
        column: usize,
        /// The SQL type seen.
        ty: String,
    },
}

/// The SQL dialect a backend speaks, so the collector picks the right query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite, the embedded default.
    Sqlite,
    /// SQL Server's T-SQL.
    Tsql,
}

/// Parameters every catalog query may use, bound by name (`:period_start`, `:period_end`
/// in SQLite; `@period_start`, `@period_end` in T-SQL) as `YYYY-MM-DD` text.
///
/// Queries measure ages and windows against the period, never against the clock, so a
/// run of the same period over the same data gives the same rows.
#[derive(Debug, Clone, Copy)]
pub struct QueryParams {
    /// The Monday that opens the period.
    pub period_start: Date,
    /// The Sunday that closes the period.
    pub period_end: Date,
}

/// A site database the catalog can run against.
pub trait SiteDb: Send {
    /// Returns the dialect of this backend.
    fn dialect(&self) -> Dialect;

    /// Runs one query and returns its rows, values typed as the database returned them.
    fn query(
        &mut self,
        sql: &str,
        params: &QueryParams,
    ) -> impl Future<Output = Result<Vec<Vec<Value>>, SiteDbError>> + Send;
}

/// Opens the site database named by `spec`: `sqlite:PATH` (or a bare path).
pub fn open(spec: &str) -> Result<SqliteSiteDb, SiteDbError> {
    let path = spec.strip_prefix("sqlite:").unwrap_or(spec);
    if path.is_empty() {
        return Err(SiteDbError::Spec(spec.to_owned()));
    }
    SqliteSiteDb::open(std::path::Path::new(path))
}

#[cfg(test)]
mod tests;
