//! Deterministic sample site databases, shaped like a real management site's.
//!
//! The same (site, clients, seed) always gives the same contents. Distributions are skewed
//! the way real estates are (most clients on a few OS builds and one client version), and
//! identifying values (computer and user names, addresses, e-mail) are included on purpose:
//! the catalog must prove it never lets them out at Basic or Enhanced.

use std::path::Path;

use hrs_core::SiteCode;
use hrs_core::Value;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusqlite::Connection;

use crate::{Dialect, SiteDbError, schema};

mod services;

/// What a seeding wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedSummary {
    /// Client systems written.
    pub clients: u32,
    /// Site system servers written.
    pub servers: u32,
    /// Rows written across all tables.
    pub rows: u64,
}

/// How large a seeded site is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteSize {
    /// Client systems.
    pub clients: u32,
    /// Distinct software updates clients report compliance for.
    pub updates: u32,
    /// Updates each client reports compliance for, drawn from those.
    pub updates_per_client: u32,
}

impl SiteSize {
    /// A site of `clients` clients reporting on the three usual updates.
    pub fn clients(clients: u32) -> Self {
        Self {
            clients,
            updates: 3,
            updates_per_client: 3,
        }
    }
}

/// Picks from weighted choices, so a few values dominate like in a real estate.
fn pick<'a, T>(rng: &mut ChaCha8Rng, choices: &'a [(T, u32)]) -> &'a T {
    let total: u32 = choices.iter().map(|(_, w)| w).sum();
    let mut n = rng.random_range(0..total);
    for (value, weight) in choices {
        if n < *weight {
            return value;
        }
        n -= weight;
    }
    &choices[0].0
}

/// Caption, build, release date and servicing branch of an operating system.
type Os = (&'static str, i64, &'static str, &'static str);

const OS: &[(Os, u32)] = &[
    (
        (
            "Windows 10 Enterprise",
            19045,
            "2022-10-18",
            "Current Branch",
        ),
        48,
    ),
    (
        (
            "Windows 11 Enterprise",
            22631,
            "2023-10-31",
            "Current Branch",
        ),
        30,
    ),
    (
        (
            "Windows 11 Enterprise",
            26100,
            "2024-10-01",
            "Current Branch",
        ),
        8,
    ),
    (
        ("Windows 10 Enterprise LTSC", 17763, "2018-11-13", "LTSC"),
        5,
    ),
    (
        (
            "Windows 10 Enterprise",
            19044,
            "2021-11-16",
            "Current Branch",
        ),
        5,
    ),
    (
        (
            "Windows 10 Enterprise",
            18363,
            "2019-11-12",
            "Current Branch",
        ),
        2,
    ),
    (
        ("Windows Server 2019 Standard", 17763, "2018-11-13", "LTSC"),
        1,
    ),
    (
        ("Windows Server 2022 Standard", 20348, "2021-08-18", "LTSC"),
        1,
    ),
];
const CLIENT_VERSIONS: &[(&str, u32)] = &[
    ("5.00.9128.1007", 70),
    ("5.00.9122.1018", 18),
    ("5.00.9106.1000", 8),
    ("5.00.9088.1007", 4),
];
const LANGUAGES: &[(&str, u32)] = &[
    ("en-US", 74),
    ("de-DE", 9),
    ("fr-FR", 7),
    ("ja-JP", 4),
    ("es-ES", 4),
    ("pt-BR", 2),
];
const FORM_FACTORS: &[(&str, u32)] = &[("Laptop", 58), ("Desktop", 34), ("Virtual", 8)];
const CPUS: &[((&str, i64), u32)] = &[
    (("Intel(R) Core(TM) i5-1145G7 @ 2.60GHz", 4), 30),
    (("Intel(R) Core(TM) i7-1265U", 10), 22),
    (("Intel(R) Core(TM) i5-8365U CPU @ 1.60GHz", 4), 14),
    (("AMD Ryzen 7 PRO 5850U", 8), 10),
    (("Intel(R) Core(TM) i7-10700 CPU @ 2.90GHz", 8), 8),
    (("Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz", 4), 6),
    (("Intel(R) Core(TM) i5-6500 CPU @ 3.20GHz", 4), 4),
    (("AMD Ryzen 5 PRO 4650G", 6), 3),
    (("Intel(R) Core(TM) Ultra 7 165U", 12), 2),
    (("Intel(R) Celeron(R) N4120 CPU @ 1.10GHz", 4), 1),
];
const OFFICE: &[(&str, u32)] = &[
    ("Microsoft 365 Apps 16.0.17928", 60),
    ("Microsoft 365 Apps 16.0.17531", 20),
    ("Office Professional Plus 2019", 10),
    ("Office Professional Plus 2016", 6),
    ("", 4),
];
const FIRST: &[&str] = &[
    "anna", "ben", "carla", "david", "emma", "felix", "grace", "hugo", "iris", "jonas", "karin",
    "liam", "maria", "noah", "olga", "paul",
];
const LAST: &[&str] = &[
    "schmidt", "meyer", "dubois", "garcia", "tanaka", "novak", "jensen", "rossi", "silva",
    "kowalski",
];
const COMPONENTS: &[&str] = &[
    "SMS_DISCOVERY_DATA_MANAGER",
    "SMS_STATE_SYSTEM",
    "SMS_STATUS_MANAGER",
    "SMS_INVENTORY_DATA_LOADER",
    "SMS_POLICY_PROVIDER",
    "SMS_DISTRIBUTION_MANAGER",
    "SMS_HIERARCHY_MANAGER",
];
const ROLES: &[&str] = &[
    "SMS Site Server",
    "SMS SQL Server",
    "SMS Management Point",
    "SMS Distribution Point",
    "SMS Software Update Point",
    "SMS Reporting Point",
    "SMS Provider",
];

fn date(rng: &mut ChaCha8Rng, from_day: i64, span: i64) -> String {
    let base = time::macros::date!(2024 - 01 - 01);
    (base + time::Duration::days(from_day + rng.random_range(0..span.max(1)))).to_string()
}

/// Resource id of a site's first client, as the system modelled numbers them.
const FIRST_RESOURCE: i64 = 16_777_216;

/// Receives the seeded rows, table by table, and writes them to one backend.
pub(crate) trait Sink {
    /// Takes one row of `table`, values in the table's column order.
    fn row(&mut self, table: &'static str, values: Vec<Value>) -> Result<(), SiteDbError>;
}

/// Puts one row into the sink, converting each value into the model's [`Value`].
macro_rules! put {
    ($sink:expr, $table:literal, [$($value:expr),* $(,)?]) => {
        $sink.row($table, vec![$(Value::from($value)),*])?
    };
}

/// Mixes the site code into the seed, so every site of a demo hierarchy differs.
fn site_mix(site: &SiteCode) -> u64 {
    site.as_str().bytes().fold(0u64, |acc, b| {
        acc.wrapping_mul(131).wrapping_add(u64::from(b))
    })
}

/// Generates the contents of one site database into `sink`.
pub(crate) fn generate(
    sink: &mut dyn Sink,
    site: &SiteCode,
    size: &SiteSize,
    seed: u64,
) -> Result<SeedSummary, SiteDbError> {
    let clients = size.clients;
    let mut counted = Counted { sink, rows: 0 };
    let sink = &mut counted;
    let site_mix = site_mix(site);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ site_mix.rotate_left(32));
    let code = site.as_str();
    let lower = code.to_ascii_lowercase();
    let is_cas = code == "CAS";
    let domain = "contoso.example";

    let site_name = format!(
        "{code} Contoso {}",
        if is_cas { "Central" } else { "Region" }
    );
    let time_zone = *pick(
        &mut rng,
        &[
            ("W. Europe Standard Time", 5),
            ("Eastern Standard Time", 3),
            ("Tokyo Standard Time", 1),
        ],
    );
    put!(
        sink,
        "site",
        [
            code,
            site_name,
            if is_cas { "CAS" } else { "Primary" },
            "5.00.9128.1000",
            9128i64,
            time_zone,
            date(&mut rng, 0, 365),
            "Active",
        ]
    );

    let servers = if is_cas {
        3
    } else {
        2 + clients / 500 + rng.random_range(0..3)
    };
    let mut server_names = Vec::new();
    for n in 0..servers {
        let name = format!("{lower}-cm{n:02}.{domain}");
        server_names.push(name.clone());
        let os = *pick(
            &mut rng,
            &[
                ("Windows Server 2022 Standard", 6),
                ("Windows Server 2019 Standard", 3),
                ("Windows Server 2016 Standard", 1),
            ],
        );
        put!(
            sink,
            "site_system",
            [
                name.as_str(),
                format!("10.{}.0.{}", 10 + site_mix % 200, 10 + n),
                os,
                rng.random_bool(0.7),
            ]
        );
        let roles: Vec<&str> = if n == 0 {
            ROLES[..3].to_vec()
        } else {
            ROLES[3..]
                .iter()
                .copied()
                .filter(|_| rng.random_bool(0.6))
                .collect()
        };
        for role in roles {
            put!(sink, "site_system_role", [name.as_str(), role]);
        }
        if n > 0 {
            put!(
                sink,
                "distribution_points",
                [
                    name.as_str(),
                    false,
                    rng.random_range(40..400i64),
                    f64::from(rng.random_range(50..900u32)) / 2.0,
                ]
            );
        }
    }
    let sql_version = *pick(&mut rng, &[("15.0.4375.4", 6), ("16.0.4125.3", 4)]);
    let edition = *pick(
        &mut rng,
        &[("Standard Edition", 5), ("Enterprise Edition", 3)],
    );
    put!(
        sink,
        "sql_info",
        [
            sql_version,
            edition,
            "SQL_Latin1_General_CP1_CI_AS",
            20_000 + i64::from(clients) * 12,
            4_000 + i64::from(clients) * 2,
            150i64,
        ]
    );

    for n in 0..clients {
        let id = FIRST_RESOURCE + i64::from(n);
        let (os, build, release, branch) = *pick(&mut rng, OS);
        let (cpu, cores) = *pick(&mut rng, CPUS);
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        let user = format!("{first}.{last}{}", rng.random_range(1..99));
        let form = *pick(&mut rng, FORM_FACTORS);
        let prefix = if form == "Laptop" { "LT" } else { "WS" };
        let mac = format!(
            "00:15:5D:{:02X}:{:02X}:{:02X}",
            rng.random_range(0..256),
            rng.random_range(0..256),
            rng.random_range(0..256)
        );
        let client_version = *pick(&mut rng, CLIENT_VERSIONS);
        let language = *pick(&mut rng, LANGUAGES);
        let memory = *pick(
            &mut rng,
            &[(8192i64, 40), (16384, 45), (32768, 12), (4096, 3)],
        );
        let office = *pick(&mut rng, OFFICE);
        let heartbeat = date(&mut rng, 1000, 60);
        let hw_scan = date(&mut rng, 980, 80);
        put!(
            sink,
            "systems",
            [
                id,
                format!("{code}-{prefix}-{n:05}"),
                format!("CONTOSO\\{user}"),
                domain,
                format!("10.{}.{}.{}", 64 + site_mix % 100, n / 250, 1 + n % 250),
                mac,
                format!("{user}@{domain}"),
                os,
                build,
                release,
                branch,
                client_version,
                language,
                form,
                cpu,
                cores,
                memory,
                office,
                heartbeat,
                hw_scan,
                rng.random_bool(0.35),
            ]
        );
        let state = *pick(
            &mut rng,
            &[
                ("Protected", 86),
                ("At risk", 7),
                ("Unknown", 5),
                ("Unsupported", 2),
            ],
        );
        let signature_age = *pick(&mut rng, &[(0i64, 60), (1, 25), (3, 8), (9, 5), (30, 2)]);
        let engine = *pick(&mut rng, &[("1.1.24080.9", 80), ("1.1.24060.5", 20)]);
        put!(sink, "ep_health", [id, state, signature_age, engine]);
        put!(
            sink,
            "boot_times",
            [id, f64::from(rng.random_range(120..900u32)) / 10.0]
        );
        for (kb, class) in client_updates(&mut rng, size) {
            let status = *pick(
                &mut rng,
                &[
                    ("Installed", 80),
                    ("Required", 12),
                    ("Failed", 4),
                    ("Unknown", 4),
                ],
            );
            let error = if status == "Failed" {
                *pick(&mut rng, &[(-2_145_124_329i64, 3), (-2_016_409_966, 1)])
            } else {
                0
            };
            let scanned = format!(
                "{}T{:02}:00:00",
                date(&mut rng, 1020, 30),
                rng.random_range(0..24)
            );
            put!(
                sink,
                "update_compliance",
                [id, kb, class, status, error, scanned]
            );
        }
    }

    for day in 0..28 {
        for component in COMPONENTS {
            let scale = 1 + i64::from(clients) / 10;
            put!(
                sink,
                "processing_stats",
                [
                    (time::macros::date!(2026 - 11 - 02) + time::Duration::days(day)).to_string(),
                    *component,
                    scale * rng.random_range(1..20),
                    scale * rng.random_range(50..400),
                    scale * rng.random_range(20..200),
                    scale * rng.random_range(5..60),
                    rng.random_range(0..40i64),
                ]
            );
        }
    }
    for component in COMPONENTS {
        put!(
            sink,
            "component_status",
            [
                *component,
                rng.random_range(24..2000i64),
                rng.random_range(40..900i64),
                *pick(&mut rng, &[(0i64, 85), (1, 10), (3, 5)]),
            ]
        );
    }
    for (n, name) in [
        "All Systems",
        "All Desktop and Server Clients",
        "All Windows 11 Devices",
        "Pilot Ring",
        "Servers - Patch Group A",
        "Laptops - Finance",
        "Co-managed Devices",
    ]
    .into_iter()
    .enumerate()
    {
        put!(
            sink,
            "collections",
            [
                format!("{code}{:05}", n + 1),
                name,
                i64::from(clients) / (n as i64 + 1),
                rng.random_range(20..5000i64),
                rng.random_bool(0.5),
            ]
        );
    }
    for (kind, name) in [
        ("Application", "Company Portal"),
        ("Application", "Microsoft 365 Apps"),
        ("Application", "Line of Business Tool"),
        ("Task Sequence", "Windows 11 23H2 Upgrade"),
        ("Software Update Group", "2026-11 Patch Tuesday"),
        ("Baseline", "Security Baseline"),
    ] {
        let total = i64::from(clients);
        let failed = rng.random_range(0..=total / 10 + 1);
        let in_progress = rng.random_range(0..=total / 20 + 1);
        put!(
            sink,
            "deployments",
            [
                kind,
                name,
                (total - failed - in_progress).max(0),
                failed,
                in_progress
            ]
        );
    }
    for task in [
        "Backup Site Server",
        "Rebuild Indexes",
        "Delete Aged Discovery Data",
        "Delete Aged Inventory History",
        "Summarize Software Metering",
    ] {
        let last_run = date(&mut rng, 1040, 20);
        let status = *pick(&mut rng, &[("Succeeded", 9), ("Failed", 1)]);
        put!(sink, "sql_maintenance", [task, last_run, status]);
    }
    services::generate(
        sink,
        &mut rng,
        &services::Site {
            code,
            is_cas,
            clients,
            servers: &server_names,
            first_resource: FIRST_RESOURCE,
        },
    )?;
    Ok(SeedSummary {
        clients,
        servers,
        rows: counted.rows,
    })
}

/// Counts the rows passing through to the real sink.
struct Counted<'a> {
    sink: &'a mut dyn Sink,
    rows: u64,
}

impl Sink for Counted<'_> {
    fn row(&mut self, table: &'static str, values: Vec<Value>) -> Result<(), SiteDbError> {
        self.rows += 1;
        self.sink.row(table, values)
    }
}

/// Writes rows into a SQLite transaction, one cached statement per table.
struct SqliteSink<'a> {
    tx: &'a rusqlite::Transaction<'a>,
}

impl Sink for SqliteSink<'_> {
    fn row(&mut self, table: &'static str, values: Vec<Value>) -> Result<(), SiteDbError> {
        let spec = schema::table(table).ok_or(SiteDbError::UnknownTable(table))?;
        let marks = vec!["?"; spec.columns.len()].join(", ");
        let mut stmt = self.tx.prepare_cached(&format!(
            "INSERT INTO {table} ({}) VALUES ({marks})",
            spec.column_list()
        ))?;
        let values = values.iter().map(|v| match v {
            Value::Null => rusqlite::types::Value::Null,
            Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
            Value::Int(i) => rusqlite::types::Value::Integer(*i),
            Value::Real(r) => rusqlite::types::Value::Real(*r),
            Value::Bool(b) => rusqlite::types::Value::Integer(i64::from(*b)),
        });
        stmt.execute(rusqlite::params_from_iter(values))?;
        Ok(())
    }
}

/// The updates one client reports compliance for: the three usual ones on a site of the
/// usual size, else `updates_per_client` drawn from `updates` numbered ones.
fn client_updates(rng: &mut ChaCha8Rng, size: &SiteSize) -> Vec<(String, &'static str)> {
    const USUAL: [(&str, &str); 3] = [
        ("KB5046613", "Security Updates"),
        ("KB5046740", "Updates"),
        ("KB5043935", "Critical Updates"),
    ];
    if size.updates <= 3 && size.updates_per_client >= size.updates {
        return USUAL
            .iter()
            .take(size.updates as usize)
            .map(|(kb, class)| ((*kb).to_owned(), *class))
            .collect();
    }
    const CLASSES: [&str; 4] = [
        "Security Updates",
        "Updates",
        "Critical Updates",
        "Definition Updates",
    ];
    (0..size.updates_per_client.min(size.updates))
        .map(|_| {
            let n = rng.random_range(0..size.updates.max(1));
            (format!("KB{}", 5_000_000 + n), CLASSES[(n % 4) as usize])
        })
        .collect()
}

/// Creates (replacing) a seeded SQLite site database at `path`, of `clients` clients.
pub fn seed(
    path: &Path,
    site: &SiteCode,
    clients: u32,
    seed: u64,
) -> Result<SeedSummary, SiteDbError> {
    seed_sized(path, site, &SiteSize::clients(clients), seed)
}

/// Creates (replacing) a seeded SQLite site database at `path`, of the given size.
pub fn seed_sized(
    path: &Path,
    site: &SiteCode,
    size: &SiteSize,
    seed: u64,
) -> Result<SeedSummary, SiteDbError> {
    if path.exists() {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let marked: bool = conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [MARKER],
                |r| r.get(0),
            )
            .unwrap_or(false);
        if !marked {
            return Err(SiteDbError::NotSeeded(path.display().to_string()));
        }
        drop(conn);
        std::fs::remove_file(path)?;
    }
    let mut conn = Connection::open(path)?;
    let tx = conn.transaction()?;
    for table in schema::TABLES {
        tx.execute(&table.create(Dialect::Sqlite), [])?;
    }
    tx.execute(&marker_table(Dialect::Sqlite), [])?;
    let summary = generate(&mut SqliteSink { tx: &tx }, site, size, seed)?;
    tx.commit()?;
    Ok(summary)
}

/// The table that marks a database as made by the seeder, so reseeding may replace it and
/// nothing else is ever dropped.
const MARKER: &str = "hrs_seeded";

fn marker_table(dialect: Dialect) -> String {
    let text = match dialect {
        Dialect::Sqlite => "TEXT",
        Dialect::Tsql => "NVARCHAR(64)",
    };
    format!("CREATE TABLE {MARKER} (note {text})")
}

/// Rows per INSERT statement; SQL Server accepts at most 1000 in one VALUES list.
const TSQL_ROWS_PER_INSERT: usize = 250;

/// Collects rows into multi-row T-SQL INSERTs and hands each full statement on.
struct TsqlSink {
    table: Option<&'static schema::Table>,
    values: Vec<String>,
    out: tokio::sync::mpsc::Sender<String>,
}

impl TsqlSink {
    fn flush(&mut self) -> Result<(), SiteDbError> {
        let Some(table) = self.table else {
            return Ok(());
        };
        if self.values.is_empty() {
            return Ok(());
        }
        let statement = format!(
            "INSERT INTO {} ({}) VALUES {}",
            table.name,
            table.column_list(),
            self.values.join(", ")
        );
        self.values.clear();
        self.out
            .blocking_send(statement)
            .map_err(|_| SiteDbError::Stopped("the SQL Server writer".into()))
    }
}

impl Sink for TsqlSink {
    fn row(&mut self, table: &'static str, values: Vec<Value>) -> Result<(), SiteDbError> {
        if self.table.map(|t| t.name) != Some(table) || self.values.len() >= TSQL_ROWS_PER_INSERT {
            self.flush()?;
            self.table = Some(schema::table(table).ok_or(SiteDbError::UnknownTable(table))?);
        }
        let spec = self.table.ok_or(SiteDbError::UnknownTable(table))?;
        if values.len() != spec.columns.len() {
            return Err(SiteDbError::RowWidth(table));
        }
        let literals: Vec<String> = spec
            .columns
            .iter()
            .zip(&values)
            .map(|((_, kind), value)| kind.tsql_literal(value))
            .collect();
        self.values.push(format!("({})", literals.join(", ")));
        Ok(())
    }
}

/// Seeds (replacing the seeded tables of) a SQL Server database.
///
/// Rows are generated on a blocking thread and written as they come, so memory stays
/// bounded however many clients the site has.
pub(crate) async fn seed_mssql(
    spec: &crate::MssqlSpec,
    site: &SiteCode,
    size: &SiteSize,
    seed: u64,
) -> Result<SeedSummary, SiteDbError> {
    let size = *size;
    let mut db = crate::MssqlSiteDb::open(spec.clone().read_write()).await?;
    // Refuse a database that holds tables of these names but was not made by the seeder:
    // it may be a real site database.
    let names: Vec<String> = schema::TABLES
        .iter()
        .map(|t| format!("'{}'", t.name))
        .collect();
    let clashing = db
        .batch(&format!(
            "SELECT name FROM sys.tables WHERE name IN ({})",
            names.join(", ")
        ))
        .await?;
    let marked = db
        .batch(&format!(
            "SELECT name FROM sys.tables WHERE name = '{MARKER}'"
        ))
        .await?;
    if !clashing.is_empty() && marked.is_empty() {
        return Err(SiteDbError::NotSeeded(spec.to_string()));
    }
    db.execute(&format!(
        "IF OBJECT_ID(N'dbo.{MARKER}', N'U') IS NULL {}",
        marker_table(Dialect::Tsql)
    ))
    .await?;
    for table in schema::TABLES {
        // OBJECT_ID rather than DROP TABLE IF EXISTS: it also works before SQL Server 2016.
        db.execute(&format!(
            "IF OBJECT_ID(N'dbo.{0}', N'U') IS NOT NULL DROP TABLE dbo.{0}",
            table.name
        ))
        .await?;
        db.execute(&table.create(Dialect::Tsql)).await?;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
    let site = site.clone();
    let generator = tokio::task::spawn_blocking(move || {
        let mut sink = TsqlSink {
            table: None,
            values: Vec::new(),
            out: tx,
        };
        let summary = generate(&mut sink, &site, &size, seed)?;
        sink.flush()?;
        Ok::<_, SiteDbError>(summary)
    });
    while let Some(statement) = rx.recv().await {
        if let Err(error) = db.execute(&statement).await {
            // Dropping the receiver stops the generator at its next statement.
            drop(rx);
            let _ = generator.await;
            return Err(error);
        }
    }
    generator
        .await
        .map_err(|e| SiteDbError::Stopped(format!("seeding ({e})")))?
}

/// Returns every identifying value stored in a seeded database (site code and name,
/// computer, user, administrator and server names, addresses, e-mail, and the ids and
/// names that embed a site code), so tests can prove none leaves.
pub fn identifying_values(path: &Path) -> Result<Vec<String>, SiteDbError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut out = Vec::new();
    for sql in [
        "SELECT site_code FROM site UNION ALL SELECT site_name FROM site",
        "SELECT server_name FROM site_system UNION ALL SELECT ip_address FROM site_system",
        "SELECT computer_name FROM systems UNION ALL SELECT user_name FROM systems
         UNION ALL SELECT ip_address FROM systems UNION ALL SELECT mac_address FROM systems
         UNION ALL SELECT email FROM systems",
        // Names that embed the site code or a person: collection and package ids, boundary
        // values and groups, administrators, replication links.
        "SELECT collection_id FROM collections UNION ALL SELECT package_id FROM content_packages
         UNION ALL SELECT value FROM boundaries UNION ALL SELECT name FROM boundary_groups
         UNION ALL SELECT user_name FROM admin_users UNION ALL SELECT link FROM replication_links",
    ] {
        let mut stmt = conn.prepare(sql)?;
        let values = stmt.query_map([], |r| r.get::<_, String>(0))?;
        for value in values {
            out.push(value?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Kind;

    /// Checks every row against the declared schema, as SQL Server would.
    struct Checking(u64);

    impl Sink for Checking {
        fn row(&mut self, table: &'static str, values: Vec<Value>) -> Result<(), SiteDbError> {
            let spec = schema::table(table).ok_or(SiteDbError::UnknownTable(table))?;
            assert_eq!(values.len(), spec.columns.len(), "{table}: row width");
            for ((name, kind), value) in spec.columns.iter().zip(&values) {
                let fits = match (kind, value) {
                    (Kind::Text(max), Value::Text(s)) => s.chars().count() <= usize::from(*max),
                    (Kind::Date, Value::Text(s)) => {
                        time::Date::parse(s, &time::format_description::well_known::Iso8601::DATE)
                            .is_ok()
                    }
                    (Kind::DateTime, Value::Text(s)) => s.len() == 19 && s.as_bytes()[10] == b'T',
                    (Kind::Int, Value::Int(_)) | (Kind::Real, Value::Real(_)) => true,
                    (Kind::Flag, Value::Bool(_)) => true,
                    _ => false,
                };
                assert!(fits, "{table}.{name}: {value:?} does not fit {kind:?}");
            }
            self.0 += 1;
            Ok(())
        }
    }

    #[test]
    fn every_seeded_value_fits_its_declared_column() {
        for (site, clients) in [("CAS", 5), ("P01", 700), ("P99", 1)] {
            let mut sink = Checking(0);
            let summary = generate(
                &mut sink,
                &site.parse().expect("site"),
                &SiteSize::clients(clients),
                3,
            )
            .expect("generates");
            assert_eq!(summary.rows, sink.0);
        }
    }
}
