//! SQL Server site databases, read through tiberius.
//!
//! Configured by an ADO.NET connection string, as operators already write them for the
//! site server. The password may also come from an environment variable or a file, so
//! it need not sit in a configuration file; it never appears in logs or errors.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use connection_string::AdoNetString;
use hrs_core::Value;
use secrecy::{ExposeSecret, SecretString};
use tiberius::error::{Error as TdsError, IoErrorKind};
use tiberius::{AuthMethod, Client, ColumnData, Config, FromSql};
use tokio::net::TcpStream;
use tokio_stream::StreamExt as _;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use hrs_core::secret::PasswordSource;

use crate::{Dialect, QueryParams, RowSink, SiteDb, SiteDbError};

/// Keys this backend reads from a connection string; anything else is a typo to report.
const KNOWN_KEYS: &[&str] = &[
    "server",
    "data source",
    "database",
    "initial catalog",
    "uid",
    "user",
    "user id",
    "username",
    "password",
    "pwd",
    "integratedsecurity",
    "integrated security",
    "encrypt",
    "trustservercertificate",
    "trustservercertificateca",
    "hostnameincertificate",
    "hostname in certificate",
    "applicationname",
    "application name",
    "applicationintent",
    "application intent",
    "workstationid",
    "workstation id",
    "multisubnetfailover",
    "connect timeout",
    "connection timeout",
    "connecttimeout",
    "command timeout",
    "commandtimeout",
    "connectretrycount",
    "connect retry count",
    "connectretryinterval",
    "connect retry interval",
];

/// A parsed SQL Server connection: what to connect to, how long to wait, how often to retry.
#[derive(Clone)]
pub struct MssqlSpec {
    /// The connection string as given; it may hold the password.
    ado: SecretString,
    password: Option<PasswordSource>,
    windows_auth: bool,
    user: Option<String>,
    names_application: bool,
    summary: String,
    /// Bound on TCP connect and the TDS handshake (ADO.NET `Connect Timeout`, default 15 s;
    /// 0, none).
    pub connect_timeout: Option<Duration>,
    /// Bound on each server round trip of a query (`Command Timeout`, default 30 s; 0, none).
    pub command_timeout: Option<Duration>,
    /// Further attempts after a transient connection failure (`ConnectRetryCount`, 0–255,
    /// default 2).
    pub retry_count: u32,
    /// Pause before the first retry (`ConnectRetryInterval`, 1–60 s, default 2), doubled for
    /// each next one up to a minute.
    pub retry_interval: Duration,
    /// Whether to declare read-only intent (default; `ApplicationIntent=ReadWrite` clears it).
    pub read_only: bool,
}

impl fmt::Debug for MssqlSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MssqlSpec")
            .field("server", &self.summary)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for MssqlSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

/// Reads a whole-number keyword (under any of its `names`) within `range`, as ADO.NET
/// bounds it; errors name the keyword and the range, never another value.
fn number(
    keys: &HashMap<String, String>,
    names: &[&str],
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> Result<u64, SiteDbError> {
    let value = match names.iter().find_map(|n| keys.get(*n)) {
        None => default,
        Some(v) => v.trim().parse().map_err(|_| {
            SiteDbError::Spec(format!("{} must be a whole number of {unit}", names[0]))
        })?,
    };
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(SiteDbError::Spec(format!(
            "{} must be between {} and {} {unit}",
            names[0],
            range.start(),
            range.end()
        )))
    }
}

/// A timeout in seconds where 0 means none, as in ADO.NET.
fn timeout(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// The longest pause between two connection attempts.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(60);

impl MssqlSpec {
    /// Parses an ADO.NET connection string; errors name the key, never echo a value.
    pub fn parse(text: &str, password: Option<PasswordSource>) -> Result<Self, SiteDbError> {
        let ado: AdoNetString = text
            .parse()
            // The parser's own message can quote a character of the string, which may be
            // a password's: say what to check instead.
            .map_err(|_| {
                SiteDbError::Spec(
                    "not an ADO.NET connection string: check its keyword=value pairs, and quote \
                     a value holding ';', '=', quotes or non-ASCII characters, e.g. password='...'"
                        .to_owned(),
                )
            })?;
        let keys: HashMap<String, String> = ado
            .iter()
            .map(|(k, v)| (k.trim().to_owned(), v.clone()))
            .collect();
        let has_password = keys.contains_key("password") || keys.contains_key("pwd");
        if let Some(unknown) = keys.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
            // An unquoted ';' in a password makes its tail look like a keyword: never echo
            // a keyword from a string that holds a password.
            return Err(SiteDbError::Spec(if has_password {
                "the connection string has an unknown keyword (not shown, since the string \
                 holds a password; quote any value containing ';', e.g. password='a;b')"
                    .to_owned()
            } else {
                format!("unknown connection string keyword {unknown:?}")
            }));
        }
        let server = keys
            .get("server")
            .or_else(|| keys.get("data source"))
            .ok_or_else(|| SiteDbError::Spec("the connection string names no server".into()))?;
        if server.contains('\\') {
            return Err(SiteDbError::Spec(
                "a named instance (host\\instance) needs the SQL Browser service, which HRS \
                 does not query: give the instance's TCP port, server=tcp:host,port"
                    .into(),
            ));
        }
        let database = keys
            .get("database")
            .or_else(|| keys.get("initial catalog"))
            .map(String::as_str)
            .unwrap_or("(default database)");
        let user = ["uid", "user", "user id", "username"]
            .iter()
            .find_map(|k| keys.get(*k))
            .cloned();
        let windows_auth = ["integratedsecurity", "integrated security"]
            .iter()
            .find_map(|k| keys.get(*k))
            .is_some_and(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "sspi" || v == "true" || v == "yes"
            });
        if has_password && password.is_some() {
            return Err(SiteDbError::Spec(
                "the password is given both in the connection string and in a password file or variable".into(),
            ));
        }
        let read_only = match keys
            .get("applicationintent")
            .or_else(|| keys.get("application intent"))
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => true,
            Some(v) if v == "readonly" => true,
            Some(v) if v == "readwrite" => false,
            Some(_) => {
                return Err(SiteDbError::Spec(
                    "applicationintent must be ReadOnly or ReadWrite".into(),
                ));
            }
        };
        // Let tiberius check the keys it owns (encrypt, certificates, server syntax) now,
        // so a bad string fails at configuration time rather than at the first collection.
        Config::from_ado_string(text).map_err(|e| SiteDbError::Spec(redact_tds(&e)))?;
        let auth = if windows_auth { "windows" } else { "sql" };
        let summary = format!(
            "sqlserver {server}/{database} ({auth} login{})",
            user.as_deref().map(|u| format!(" {u}")).unwrap_or_default()
        );
        Ok(Self {
            ado: SecretString::from(text.to_owned()),
            password,
            windows_auth,
            user,
            names_application: keys.contains_key("application name")
                || keys.contains_key("applicationname"),
            summary,
            connect_timeout: timeout(number(
                &keys,
                &["connect timeout", "connection timeout", "connecttimeout"],
                15,
                0..=2_147_483,
                "seconds",
            )?),
            command_timeout: timeout(number(
                &keys,
                &["command timeout", "commandtimeout"],
                30,
                0..=2_147_483,
                "seconds",
            )?),
            retry_count: u32::try_from(number(
                &keys,
                &["connectretrycount", "connect retry count"],
                2,
                0..=255,
                "retries",
            )?)
            .unwrap_or(255),
            retry_interval: Duration::from_secs(number(
                &keys,
                &["connectretryinterval", "connect retry interval"],
                2,
                1..=60,
                "seconds",
            )?),
            read_only,
        })
    }

    /// Returns a copy that writes: seeding needs it, collection never does.
    pub fn read_write(mut self) -> Self {
        self.read_only = false;
        self
    }

    /// Returns where the password comes from when the connection string holds none, so a
    /// configuration check can name a password file that cannot be read.
    pub fn password_source(&self) -> Option<&PasswordSource> {
        self.password.as_ref()
    }

    /// The password from its source when the connection string holds none.
    fn password_from_source(&self) -> Result<Option<SecretString>, SiteDbError> {
        self.password
            .as_ref()
            .map(|from| {
                from.read()
                    .map_err(|e| SiteDbError::Password(e.to_string()))
            })
            .transpose()
    }

    fn config(&self) -> Result<Config, SiteDbError> {
        let mut config = Config::from_ado_string(self.ado.expose_secret())
            .map_err(|e| SiteDbError::Spec(redact_tds(&e)))?;
        if let Some(password) = self.password_from_source()? {
            let user = self.user.clone().unwrap_or_default();
            config.authentication(self.auth(&user, password.expose_secret())?);
        }
        config.readonly(self.read_only);
        config.handshake_timeout(self.connect_timeout);
        config.command_timeout(self.command_timeout);
        if !self.names_application {
            config.application_name("hrs");
        }
        Ok(config)
    }

    #[cfg(unix)]
    fn auth(&self, user: &str, password: &str) -> Result<AuthMethod, SiteDbError> {
        Ok(if self.windows_auth {
            AuthMethod::windows(user, password)
        } else {
            AuthMethod::sql_server(user, password)
        })
    }

    #[cfg(not(unix))]
    fn auth(&self, user: &str, password: &str) -> Result<AuthMethod, SiteDbError> {
        if self.windows_auth {
            return Err(SiteDbError::Spec(
                "Windows authentication with a separate password needs the Unix build".into(),
            ));
        }
        Ok(AuthMethod::sql_server(user, password))
    }
}

/// Describes a tiberius error without anything that could carry a secret.
fn redact_tds(error: &TdsError) -> String {
    match error {
        // Conversion errors may quote the offending part of the connection string.
        TdsError::Conversion(_) => "the connection string has an invalid value".into(),
        other => other.to_string(),
    }
}

/// Whether a failure is worth another attempt: the network, or SQL Server saying it is
/// busy, starting up or failing over.
fn is_transient(error: &SiteDbError) -> bool {
    match error {
        SiteDbError::Timeout(_) => true,
        // Only connecting does I/O of its own: refused, reset, unreachable, name lookup.
        SiteDbError::Io(_) => true,
        SiteDbError::Mssql(TdsError::Io { kind, .. }) => !matches!(
            kind,
            IoErrorKind::InvalidInput | IoErrorKind::InvalidData | IoErrorKind::PermissionDenied
        ),
        SiteDbError::Mssql(TdsError::Server(token)) => matches!(
            token.code(),
            // Database unavailable, service busy, failover in progress, resources.
            4060 | 4221
                | 10928
                | 10929
                | 40143
                | 40197
                | 40501
                | 40540
                | 40613
                | 49918
                | 49919
                | 49920
        ),
        _ => false,
    }
}

type TdsClient = Client<Compat<TcpStream>>;

async fn connect_once(spec: &MssqlSpec, config: Config) -> Result<TdsClient, SiteDbError> {
    let mut config = config;
    // One redirect is followed: Azure SQL and some gateways route the login elsewhere.
    for _ in 0..2 {
        let addr = config.get_addr();
        let tcp = match spec.connect_timeout {
            Some(limit) => tokio::time::timeout(limit, TcpStream::connect(&addr))
                .await
                .map_err(|_| SiteDbError::Timeout(format!("connecting to {addr}")))??,
            None => TcpStream::connect(&addr).await?,
        };
        tcp.set_nodelay(true)?;
        match Client::connect(config.clone(), tcp.compat_write()).await {
            Ok(client) => return Ok(client),
            Err(TdsError::Routing { host, port }) => {
                config.host(&host);
                config.port(port);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(SiteDbError::Redirected)
}

/// Connects, retrying transient failures a bounded number of times with growing pauses.
async fn connect(spec: &MssqlSpec) -> Result<TdsClient, SiteDbError> {
    let config = spec.config()?;
    let mut pause = spec.retry_interval;
    let mut attempt = 0;
    loop {
        match connect_once(spec, config.clone()).await {
            Ok(client) => return Ok(client),
            Err(error) if attempt < spec.retry_count && is_transient(&error) => {
                attempt += 1;
                tracing::warn!(server = %spec, attempt, %error, "site database connection failed, retrying");
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2).min(MAX_RETRY_PAUSE);
            }
            Err(error) => return Err(error),
        }
    }
}

/// A SQL Server site database: one connection, reopened when it breaks.
pub struct MssqlSiteDb {
    spec: MssqlSpec,
    client: Option<TdsClient>,
}

impl fmt::Debug for MssqlSiteDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MssqlSiteDb")
            .field("spec", &self.spec)
            .field("connected", &self.client.is_some())
            .finish()
    }
}

/// The statement that binds the period before every catalog query.
///
/// The dates are rendered by [`time::Date`] as `YYYY-MM-DD`, never taken from input text,
/// so they are safe to put into the batch.
fn declare_params(params: &QueryParams) -> String {
    format!(
        "DECLARE @period_start DATE = '{}'; DECLARE @period_end DATE = '{}';\n",
        params.period_start, params.period_end
    )
}

impl MssqlSiteDb {
    /// Connects to the database `spec` names.
    pub async fn open(spec: MssqlSpec) -> Result<Self, SiteDbError> {
        let client = connect(&spec).await?;
        Ok(Self {
            spec,
            client: Some(client),
        })
    }

    async fn client(&mut self) -> Result<&mut TdsClient, SiteDbError> {
        match &mut self.client {
            Some(client) => Ok(client),
            slot => Ok(slot.insert(connect(&self.spec).await?)),
        }
    }

    /// Runs a batch and returns the rows of its result sets.
    pub(crate) async fn batch(&mut self, sql: &str) -> Result<Vec<Vec<Value>>, SiteDbError> {
        let mut rows = Vec::new();
        self.batch_each(sql, &mut |row| {
            rows.push(row);
            Ok(())
        })
        .await?;
        Ok(rows)
    }

    /// Runs a batch and hands `each` the rows of its result sets as they arrive.
    async fn batch_each(&mut self, sql: &str, each: &mut dyn RowSink) -> Result<(), SiteDbError> {
        let client = self.client().await?;
        let outcome = async {
            let mut rows = client.simple_query(sql).await?.into_row_stream();
            while let Some(row) = rows.next().await {
                let handed = match row_values(row?) {
                    Ok(values) => crate::hand_over(each, values).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = handed {
                    return Ok(Err(error));
                }
            }
            Ok(Ok(()))
        }
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                // Rows left unread put the connection out of step with the server.
                self.client = None;
                Err(error)
            }
            Err(error) => {
                // A timed-out or broken connection is out of step with the server: drop it.
                if matches!(error, TdsError::Io { .. } | TdsError::Protocol(_)) {
                    self.client = None;
                }
                Err(error.into())
            }
        }
    }

    /// Executes statements that return no rows (the seeder's DDL and inserts).
    pub(crate) async fn execute(&mut self, sql: &str) -> Result<(), SiteDbError> {
        self.batch(sql).await.map(|_| ())
    }
}

fn row_values(row: tiberius::Row) -> Result<Vec<Value>, SiteDbError> {
    row.into_iter()
        .enumerate()
        .map(|(column, data)| value(column, data))
        .collect()
}

fn value(column: usize, data: ColumnData<'static>) -> Result<Value, SiteDbError> {
    let unsupported = |ty: &str| SiteDbError::UnsupportedValue {
        column,
        ty: ty.to_owned(),
    };
    let conversion = |e: TdsError| SiteDbError::Mssql(e);
    Ok(match data {
        ColumnData::U8(v) => v.map_or(Value::Null, |v| Value::Int(i64::from(v))),
        ColumnData::I16(v) => v.map_or(Value::Null, |v| Value::Int(i64::from(v))),
        ColumnData::I32(v) => v.map_or(Value::Null, |v| Value::Int(i64::from(v))),
        ColumnData::I64(v) => v.map_or(Value::Null, Value::Int),
        ColumnData::F32(v) => v.map_or(Value::Null, |v| Value::Real(f64::from(v))),
        ColumnData::F64(v) => v.map_or(Value::Null, Value::Real),
        ColumnData::Bit(v) => v.map_or(Value::Null, Value::Bool),
        ColumnData::String(v) => v.map_or(Value::Null, |v| Value::Text(v.into_owned())),
        ColumnData::Guid(v) => v.map_or(Value::Null, |v| Value::Text(v.to_string())),
        ColumnData::Numeric(v) => v.map_or(Value::Null, |v| {
            if v.scale() == 0 {
                i64::try_from(v.value()).map_or(Value::Real(f64::from(v)), Value::Int)
            } else {
                Value::Real(f64::from(v))
            }
        }),
        ColumnData::Date(_) => time::Date::from_sql(&data)
            .map_err(conversion)?
            .map_or(Value::Null, |d| Value::Text(d.to_string())),
        ColumnData::DateTime(_) | ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => {
            time::PrimitiveDateTime::from_sql(&data)
                .map_err(conversion)?
                .map_or(Value::Null, |d| Value::Text(iso_datetime(d)))
        }
        ColumnData::DateTimeOffset(_) => time::OffsetDateTime::from_sql(&data)
            .map_err(conversion)?
            .map_or(Value::Null, |d| {
                Value::Text(
                    d.format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                )
            }),
        ColumnData::Time(_) => return Err(unsupported("time")),
        ColumnData::Binary(_) => return Err(unsupported("binary")),
        ColumnData::Xml(_) => return Err(unsupported("xml")),
    })
}

fn iso_datetime(d: time::PrimitiveDateTime) -> String {
    format!(
        "{}T{:02}:{:02}:{:02}",
        d.date(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

impl SiteDb for MssqlSiteDb {
    fn dialect(&self) -> Dialect {
        Dialect::Tsql
    }

    async fn query_each(
        &mut self,
        sql: &str,
        params: &QueryParams,
        each: &mut dyn RowSink,
    ) -> Result<(), SiteDbError> {
        let batch = format!("{}{sql}", declare_params(params));
        self.batch_each(&batch, each).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_that_does_not_parse_shows_nothing_of_itself() {
        let err = MssqlSpec::parse("server=cm01;password=Sécret-Pw", None)
            .expect_err("an unquoted non-ASCII value does not parse")
            .to_string();
        assert!(!err.contains('é') && !err.contains("cret"), "{err}");
        // Quoted, it may parse; either way nothing of the password shows.
        let shown = match MssqlSpec::parse("server=cm01;password='Sécret-Pw'", None) {
            Ok(spec) => format!("{spec} {spec:?}"),
            Err(err) => err.to_string(),
        };
        assert!(!shown.contains('é') && !shown.contains("cret"), "{shown}");
    }

    #[test]
    fn parses_a_site_server_connection_string() {
        let spec = MssqlSpec::parse(
            "server=tcp:cm01.contoso.example,1433;database=CM_P01;user=hrs;password=S3cret!;encrypt=true;trustservercertificate=false;Connect Timeout=5;Command Timeout=60;ConnectRetryCount=1",
            None,
        )
        .expect("parses");
        assert_eq!(spec.connect_timeout, Some(Duration::from_secs(5)));
        assert_eq!(spec.command_timeout, Some(Duration::from_secs(60)));
        assert_eq!(spec.retry_count, 1);
        assert!(spec.read_only);
        let shown = format!("{spec} {spec:?}");
        assert!(shown.contains("cm01.contoso.example"));
        assert!(!shown.contains("S3cret"), "{shown}");
    }

    #[test]
    fn errors_name_the_keyword_and_hide_values() {
        let err =
            MssqlSpec::parse("server=tcp:h,1433;user=hrs;pasword=S3cret!", None).expect_err("typo");
        let text = err.to_string();
        assert!(text.contains("pasword"), "{text}");
        assert!(!text.contains("S3cret"), "{text}");

        let err = MssqlSpec::parse(
            "server=tcp:h,1433;password=S3cret!;Connect Timeout=soon",
            None,
        )
        .expect_err("bad timeout");
        assert!(err.to_string().contains("connect timeout"));

        // A ';' in an unquoted password must not show its tail as a "keyword".
        let err = MssqlSpec::parse("server=tcp:h,1433;user=hrs;password=Tr0ub;4dor=x", None)
            .expect_err("split password");
        assert!(!err.to_string().contains("4dor"), "{err}");

        let err =
            MssqlSpec::parse("server=tcp:h\\SCCM;user=hrs", None).expect_err("named instance");
        assert!(err.to_string().contains("tcp:host,port"), "{err}");
        for bad in [
            "ConnectRetryCount=256",
            "ConnectRetryInterval=0",
            "Connect Timeout=-1",
        ] {
            let err = MssqlSpec::parse(&format!("server=tcp:h,1;{bad}"), None).expect_err(bad);
            assert!(err.to_string().contains("must be"), "{err}");
        }
        let unbounded = MssqlSpec::parse(
            "server=tcp:h,1;Connect Timeout=0;Command Timeout=0;Application Intent=ReadWrite",
            None,
        )
        .expect("0 means no timeout");
        assert_eq!(unbounded.connect_timeout, None);
        assert_eq!(unbounded.command_timeout, None);
        assert!(!unbounded.read_only);
        assert!(!err.to_string().contains("S3cret"));

        let err = MssqlSpec::parse("database=x", None).expect_err("no server");
        assert!(err.to_string().contains("no server"));
    }

    #[test]
    fn the_password_comes_from_one_place() {
        let both = MssqlSpec::parse(
            "server=tcp:h,1433;user=hrs;password=x",
            Some(PasswordSource::Env("HRS_TEST_UNUSED".into())),
        );
        assert!(both.is_err());
        let spec = MssqlSpec::parse(
            "server=tcp:h,1433;user=hrs",
            Some(PasswordSource::Env("HRS_TEST_SURELY_UNSET_VARIABLE".into())),
        )
        .expect("parses");
        let err = spec.config().expect_err("unset variable");
        assert!(err.to_string().contains("HRS_TEST_SURELY_UNSET_VARIABLE"));
    }

    #[test]
    fn the_password_file_is_read_at_connect_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").expect("writes");
        let spec = MssqlSpec::parse(
            "server=tcp:h,1433;user=hrs;encrypt=false",
            Some(PasswordSource::File(file)),
        )
        .expect("parses");
        spec.config().expect("reads the file");
    }

    /// A server that accepts connections and then does what `serve` says with each, counting
    /// them; returns its port.
    async fn fake_server(
        serve: fn(tokio::net::TcpStream) -> tokio::task::JoinHandle<()>,
    ) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let port = listener.local_addr().expect("addr").port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = std::sync::Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                serve(stream);
            }
        });
        (port, accepted)
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_a_bounded_number_of_times() {
        // Each connection is dropped at once: a network failure, worth retrying.
        let (port, accepted) =
            fake_server(|stream| tokio::spawn(async move { drop(stream) })).await;
        let spec = MssqlSpec::parse(
            &format!("server=tcp:127.0.0.1,{port};user=hrs;password=x;encrypt=DANGER_PLAINTEXT;ConnectRetryCount=2;ConnectRetryInterval=1"),
            None,
        )
        .expect("parses");
        let err = MssqlSiteDb::open(spec)
            .await
            .expect_err("the server hangs up");
        assert!(is_transient(&err), "{err}");
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "1 try + 2 retries"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out_the_handshake() {
        // The server accepts and never answers the prelogin.
        let (port, _) = fake_server(|stream| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(stream);
            })
        })
        .await;
        let spec = MssqlSpec::parse(
            &format!("server=tcp:127.0.0.1,{port};user=hrs;password=x;encrypt=DANGER_PLAINTEXT;Connect Timeout=1;ConnectRetryCount=0"),
            None,
        )
        .expect("parses");
        let started = std::time::Instant::now();
        let err = MssqlSiteDb::open(spec).await.expect_err("times out");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "bounded by the timeout"
        );
        assert!(err.to_string().to_lowercase().contains("time"), "{err}");
        assert!(!err.to_string().contains("password"));
    }

    #[test]
    fn the_period_is_declared_as_dates() {
        let period: hrs_core::Period = "2026-W48".parse().expect("period");
        let sql = declare_params(&QueryParams {
            period_start: period.start(),
            period_end: period.end(),
        });
        assert_eq!(
            sql,
            "DECLARE @period_start DATE = '2026-11-23'; DECLARE @period_end DATE = '2026-11-29';\n"
        );
    }
}
