//! Site databases: what the agent reads its catalog from.
//!
//! Every backend implements [`SiteDb`]: the embedded default is SQLite ([`SqliteSiteDb`]),
//! production sites use SQL Server ([`MssqlSiteDb`]). One setting, parsed into a
//! [`SiteDbSpec`], chooses between them. [`seed`] and [`seed_spec`] write the same
//! deterministic sample data into either, so a whole hierarchy runs on one machine and
//! the two backends can be compared query by query.

mod mssql;
mod schema;
mod seed;
mod sqlite;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use hrs_core::{SiteCode, Value};
use time::Date;

pub use hrs_core::secret::PasswordSource;
pub use mssql::{MssqlSiteDb, MssqlSpec};
pub use seed::{SeedSummary, SiteSize, identifying_values, seed, seed_sized};
pub use sqlite::SqliteSiteDb;

/// Why a site database could not be opened, seeded or queried.
#[derive(Debug, thiserror::Error)]
pub enum SiteDbError {
    /// The site database setting is not usable; the reason never quotes a secret.
    #[error("invalid site database setting: {0}")]
    Spec(String),
    /// The SQL Server password could not be read from where the configuration says.
    #[error("site database password: {0}")]
    Password(String),
    /// SQL Server refused or failed an operation.
    #[error("sql server: {0}")]
    Mssql(tiberius::error::Error),
    /// The server redirected the login more than once (a gateway loop).
    #[error("the server redirected the login more than once")]
    Redirected,
    /// A connection or query did not finish in time.
    #[error("timed out {0}")]
    Timeout(String),
    /// A task this operation depended on stopped before finishing it.
    #[error("{0} stopped before finishing")]
    Stopped(String),
    /// Seeding would replace tables of a database the seeder did not make.
    #[error(
        "{0} holds tables that seeding would replace but was not made by `hrs sitedb seed`; seed a scratch database"
    )]
    NotSeeded(String),
    /// The seeder produced a row of the wrong width.
    #[error("a seeded row of {0} has the wrong number of values")]
    RowWidth(&'static str),
    /// The seeder wrote to a table the schema does not declare.
    #[error("no seeded table is named {0}")]
    UnknownTable(&'static str),
    /// The database file is missing.
    #[error("site database {0} does not exist")]
    Missing(String),
    /// The database file could not be replaced.
    #[error("site database i/o: {0}")]
    Io(std::io::Error),
    /// SQLite refused an operation.
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    /// A value came back in a form the model has no type for.
    #[error("column {column} returned a value of unsupported type {ty}")]
    UnsupportedValue {
        /// The column's position.
        column: usize,
        /// The SQL type seen.
        ty: String,
    },
}

// The causes are part of each message already, so they are not chained as sources too
// (which would print them twice).
impl From<std::io::Error> for SiteDbError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

impl From<rusqlite::Error> for SiteDbError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Sqlite(error)
    }
}

impl From<tiberius::error::Error> for SiteDbError {
    fn from(error: tiberius::error::Error) -> Self {
        Self::Mssql(error)
    }
}

impl SiteDbError {
    /// The error as it may leave the site with a run: what kind of failure, and SQL
    /// Server's error number, but never server names, values or other message text, which
    /// can be identifying. The full error is logged at the site.
    pub fn public_reason(&self) -> String {
        match self {
            Self::Mssql(tiberius::error::Error::Server(token)) => format!(
                "sql server error {} (severity {})",
                token.code(),
                token.class()
            ),
            Self::Mssql(tiberius::error::Error::Io { .. }) | Self::Io(_) => {
                "site database connection failed".into()
            }
            Self::Mssql(_) => "sql server protocol error".into(),
            Self::Timeout(_) => "site database timed out".into(),
            // SQLite's own messages name SQL constructs (no such column, syntax), not data.
            Self::Sqlite(error) => format!("sqlite: {error}"),
            Self::UnsupportedValue { column, ty } => {
                format!("column {column} returned a value of unsupported type {ty}")
            }
            Self::Spec(_) | Self::Password(_) | Self::Missing(_) => {
                "site database not configured correctly".into()
            }
            Self::Redirected
            | Self::Stopped(_)
            | Self::UnknownTable(_)
            | Self::NotSeeded(_)
            | Self::RowWidth(_) => "site database unavailable".into(),
        }
    }
}

/// What kind of failure a query met, so an operator can be told what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A table, view or function the query reads is not in the database.
    MissingObject,
    /// A column the query reads is not in its view.
    MissingColumn,
    /// The login may not read what the query reads.
    Denied,
    /// The database could not be reached or did not answer in time.
    Connection,
    /// Anything else (a syntax the engine lacks, a value it cannot convert, ...).
    Other,
}

impl FailureKind {
    /// Returns the kind as reports name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingObject => "missing",
            Self::MissingColumn => "missing column",
            Self::Denied => "denied",
            Self::Connection => "unreachable",
            Self::Other => "failed",
        }
    }
}

impl SiteDbError {
    /// Returns the kind of this failure: SQL Server's error number or SQLite's message
    /// tells a missing view or column and a refused permission apart.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Mssql(tiberius::error::Error::Server(token)) => match token.code() {
                208 => FailureKind::MissingObject,
                207 => FailureKind::MissingColumn,
                // SELECT or VIEW SERVER STATE refused, or no access to the database.
                229 | 230 | 262 | 297 | 300 | 916 | 4060 => FailureKind::Denied,
                _ => FailureKind::Other,
            },
            Self::Mssql(tiberius::error::Error::Io { .. }) | Self::Io(_) | Self::Timeout(_) => {
                FailureKind::Connection
            }
            Self::Sqlite(error) => {
                let text = error.to_string();
                if text.contains("no such table") || text.contains("no such function") {
                    FailureKind::MissingObject
                } else if text.contains("no such column") {
                    FailureKind::MissingColumn
                } else {
                    FailureKind::Other
                }
            }
            Self::Missing(_) => FailureKind::Connection,
            _ => FailureKind::Other,
        }
    }
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

/// Work a [`RowSink`] needs awaited before it takes the next row.
pub type Pending<'a> = Pin<Box<dyn Future<Output = Result<(), SiteDbError>> + Send + 'a>>;

/// Where a query's rows go as they are read.
///
/// A closure taking each row is one. A sink that writes rows away (the agent's spool) also
/// says when that write must be awaited before the next row, so a slow disk holds the
/// reader back instead of blocking one of the runtime's threads.
pub trait RowSink: Send {
    /// Takes one row; an error stops the query and is returned by it.
    fn row(&mut self, row: Vec<Value>) -> Result<(), SiteDbError>;

    /// Work to await before the next row is handed over, if the sink has any.
    fn pending(&mut self) -> Option<Pending<'_>> {
        None
    }
}

impl<F: FnMut(Vec<Value>) -> Result<(), SiteDbError> + Send> RowSink for F {
    fn row(&mut self, row: Vec<Value>) -> Result<(), SiteDbError> {
        self(row)
    }
}

/// Hands `row` to `each` and awaits what it asks for before the next one.
pub(crate) async fn hand_over(each: &mut dyn RowSink, row: Vec<Value>) -> Result<(), SiteDbError> {
    each.row(row)?;
    if let Some(pending) = each.pending() {
        pending.await?;
    }
    Ok(())
}

/// A site database the catalog can run against.
pub trait SiteDb: Send {
    /// Returns the dialect of this backend.
    fn dialect(&self) -> Dialect;

    /// Runs one query and hands `each` its rows as they are read, values typed as the
    /// database returned them, so a result of any size is never held whole. An error from
    /// `each` stops the query and is returned.
    fn query_each(
        &mut self,
        sql: &str,
        params: &QueryParams,
        each: &mut dyn RowSink,
    ) -> impl Future<Output = Result<(), SiteDbError>> + Send;

    /// Runs one query and returns all its rows.
    fn query(
        &mut self,
        sql: &str,
        params: &QueryParams,
    ) -> impl Future<Output = Result<Vec<Vec<Value>>, SiteDbError>> + Send {
        async move {
            let mut rows = Vec::new();
            self.query_each(sql, params, &mut |row| {
                rows.push(row);
                Ok(())
            })
            .await?;
            Ok(rows)
        }
    }
}

/// Which site database to use: the one setting that chooses the backend.
#[derive(Debug, Clone)]
pub enum SiteDbSpec {
    /// An embedded SQLite file (`sqlite:PATH`).
    Sqlite(PathBuf),
    /// A SQL Server database (an ADO.NET connection string).
    SqlServer(MssqlSpec),
}

impl SiteDbSpec {
    /// Parses `sqlite:PATH` (or a bare file path) or an ADO.NET connection string (anything
    /// with `key=value`).
    ///
    /// `password` says where a SQL Server password comes from when the string has none.
    pub fn parse(text: &str, password: Option<PasswordSource>) -> Result<Self, SiteDbError> {
        if let Some(path) = text.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(SiteDbError::Spec("sqlite: needs a file path".into()));
            }
            if password.is_some() {
                return Err(SiteDbError::Spec(
                    "a password source is set but SQLite takes no password".into(),
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if text.contains('=') {
            return MssqlSpec::parse(text, password).map(Self::SqlServer);
        }
        if text.trim().is_empty() {
            return Err(SiteDbError::Spec(
                "expected sqlite:PATH or an ADO.NET connection string (server=...;database=...)"
                    .into(),
            ));
        }
        // A bare path, as earlier configurations wrote it.
        Self::parse(&format!("sqlite:{text}"), password)
    }
}

impl fmt::Display for SiteDbSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::SqlServer(spec) => spec.fmt(f),
        }
    }
}

/// An open site database of either backend, so callers need not be generic.
#[derive(Debug)]
pub enum AnySiteDb {
    /// The embedded backend.
    Sqlite(SqliteSiteDb),
    /// The SQL Server backend (boxed: a TDS client is large).
    SqlServer(Box<MssqlSiteDb>),
}

impl SiteDb for AnySiteDb {
    fn dialect(&self) -> Dialect {
        match self {
            Self::Sqlite(db) => db.dialect(),
            Self::SqlServer(db) => db.dialect(),
        }
    }

    async fn query_each(
        &mut self,
        sql: &str,
        params: &QueryParams,
        each: &mut dyn RowSink,
    ) -> Result<(), SiteDbError> {
        match self {
            Self::Sqlite(db) => db.query_each(sql, params, each).await,
            Self::SqlServer(db) => db.query_each(sql, params, each).await,
        }
    }
}

/// Opens the site database `spec` names, read-only.
pub async fn open(spec: &SiteDbSpec) -> Result<AnySiteDb, SiteDbError> {
    match spec {
        SiteDbSpec::Sqlite(path) => SqliteSiteDb::open(path).map(AnySiteDb::Sqlite),
        SiteDbSpec::SqlServer(spec) => MssqlSiteDb::open(spec.clone())
            .await
            .map(|db| AnySiteDb::SqlServer(Box::new(db))),
    }
}

/// Seeds (replacing) the site database `spec` names, on either backend.
pub async fn seed_spec(
    spec: &SiteDbSpec,
    site: &SiteCode,
    size: &SiteSize,
    seed: u64,
) -> Result<SeedSummary, SiteDbError> {
    match spec {
        SiteDbSpec::Sqlite(path) => {
            let (path, site, size) = (path.clone(), site.clone(), *size);
            tokio::task::spawn_blocking(move || seed::seed_sized(&path, &site, &size, seed))
                .await
                .map_err(|e| SiteDbError::Stopped(format!("seeding ({e})")))?
        }
        SiteDbSpec::SqlServer(spec) => seed::seed_mssql(spec, site, size, seed).await,
    }
}

#[cfg(test)]
mod tests;
