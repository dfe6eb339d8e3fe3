//! Deterministic sample site databases, shaped like a real management site's.
//!
//! The same (site, clients, seed) always gives the same contents. Distributions are skewed
//! the way real estates are (most clients on a few OS builds and one client version), and
//! identifying values (computer and user names, addresses, e-mail) are included on purpose:
//! the catalog must prove it never lets them out at Basic or Enhanced.

use std::path::Path;

use hrs_core::SiteCode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusqlite::{Connection, params};

use crate::SiteDbError;

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

const SCHEMA: &str = "
CREATE TABLE site (site_code TEXT, site_name TEXT, site_type TEXT, version TEXT, build INTEGER,
    time_zone TEXT, install_date TEXT, status TEXT);
CREATE TABLE site_system (server_name TEXT PRIMARY KEY, ip_address TEXT, os_caption TEXT,
    is_virtual INTEGER);
CREATE TABLE site_system_role (server_name TEXT, role_name TEXT);
CREATE TABLE sql_info (version TEXT, edition TEXT, collation TEXT, db_size_mb INTEGER,
    log_size_mb INTEGER, compat_level INTEGER);
CREATE TABLE systems (resource_id INTEGER PRIMARY KEY, computer_name TEXT, user_name TEXT,
    domain TEXT, ip_address TEXT, mac_address TEXT, email TEXT, os_caption TEXT,
    os_build INTEGER, os_release_date TEXT, branch TEXT, client_version TEXT,
    client_language TEXT, form_factor TEXT, processor_name TEXT, cores INTEGER,
    memory_mb INTEGER, office_version TEXT, last_heartbeat TEXT, last_hw_scan TEXT,
    is_comanaged INTEGER);
CREATE TABLE processing_stats (day TEXT, component TEXT, discovery_records INTEGER,
    state_messages INTEGER, status_messages INTEGER, inventory_records INTEGER,
    inbox_backlog INTEGER);
CREATE TABLE component_status (component TEXT, uptime_hours INTEGER, memory_mb INTEGER,
    crash_count INTEGER);
CREATE TABLE ep_health (resource_id INTEGER, state TEXT, signature_age_days INTEGER,
    engine_version TEXT);
CREATE TABLE update_compliance (resource_id INTEGER, update_id TEXT, classification TEXT,
    status TEXT, error_code INTEGER, last_scan TEXT);
CREATE TABLE collections (collection_id TEXT, name TEXT, member_count INTEGER,
    eval_ms INTEGER, incremental INTEGER);
CREATE TABLE distribution_points (server_name TEXT, is_cloud INTEGER, package_count INTEGER,
    content_gb REAL);
CREATE TABLE deployments (kind TEXT, name TEXT, success INTEGER, failed INTEGER,
    in_progress INTEGER);
CREATE TABLE boot_times (resource_id INTEGER, boot_seconds REAL);
CREATE TABLE sql_maintenance (task_name TEXT, last_run TEXT, status TEXT);
";

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

/// Creates (replacing) a seeded site database at `path`.
pub fn seed(
    path: &Path,
    site: &SiteCode,
    clients: u32,
    seed: u64,
) -> Result<SeedSummary, SiteDbError> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let site_mix = site.as_str().bytes().fold(0u64, |acc, b| {
        acc.wrapping_mul(131).wrapping_add(u64::from(b))
    });
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ site_mix.rotate_left(32));
    let mut conn = Connection::open(path)?;
    conn.execute_batch(SCHEMA)?;
    let tx = conn.transaction()?;
    let mut rows = 0u64;
    let code = site.as_str();
    let lower = code.to_ascii_lowercase();
    let is_cas = code == "CAS";
    let domain = "contoso.example";

    tx.execute(
        "INSERT INTO site VALUES (?1, ?2, ?3, '5.00.9128.1000', 9128, ?4, ?5, 'Active')",
        params![
            code,
            format!(
                "{code} Contoso {}",
                if is_cas { "Central" } else { "Region" }
            ),
            if is_cas { "CAS" } else { "Primary" },
            *pick(
                &mut rng,
                &[
                    ("W. Europe Standard Time", 5),
                    ("Eastern Standard Time", 3),
                    ("Tokyo Standard Time", 1)
                ]
            ),
            date(&mut rng, 0, 365),
        ],
    )?;
    rows += 1;

    let servers = if is_cas {
        3
    } else {
        2 + clients / 500 + rng.random_range(0..3)
    };
    for n in 0..servers {
        let name = format!("{lower}-cm{n:02}.{domain}");
        tx.execute(
            "INSERT INTO site_system VALUES (?1, ?2, ?3, ?4)",
            params![
                name,
                format!("10.{}.0.{}", 10 + site_mix % 200, 10 + n),
                *pick(
                    &mut rng,
                    &[
                        ("Windows Server 2022 Standard", 6),
                        ("Windows Server 2019 Standard", 3),
                        ("Windows Server 2016 Standard", 1)
                    ]
                ),
                i64::from(rng.random_bool(0.7)),
            ],
        )?;
        rows += 1;
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
            tx.execute(
                "INSERT INTO site_system_role VALUES (?1, ?2)",
                params![name, role],
            )?;
            rows += 1;
        }
        if n > 0 {
            tx.execute(
                "INSERT INTO distribution_points VALUES (?1, 0, ?2, ?3)",
                params![
                    name,
                    rng.random_range(40..400),
                    f64::from(rng.random_range(50..900u32)) / 2.0
                ],
            )?;
            rows += 1;
        }
    }
    tx.execute(
        "INSERT INTO sql_info VALUES (?1, ?2, 'SQL_Latin1_General_CP1_CI_AS', ?3, ?4, 150)",
        params![
            *pick(&mut rng, &[("15.0.4375.4", 6), ("16.0.4125.3", 4)]),
            *pick(
                &mut rng,
                &[("Standard Edition", 5), ("Enterprise Edition", 3)]
            ),
            20_000 + i64::from(clients) * 12,
            4_000 + i64::from(clients) * 2,
        ],
    )?;
    rows += 1;

    {
        let mut system = tx.prepare(
            "INSERT INTO systems VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,
             ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
        )?;
        let mut ep = tx.prepare("INSERT INTO ep_health VALUES (?1, ?2, ?3, ?4)")?;
        let mut upd =
            tx.prepare("INSERT INTO update_compliance VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        let mut boot = tx.prepare("INSERT INTO boot_times VALUES (?1, ?2)")?;
        for n in 0..clients {
            let id = 16_777_216 + i64::from(n);
            let (os, build, release, branch) = *pick(&mut rng, OS);
            let (cpu, cores) = *pick(&mut rng, CPUS);
            let first = FIRST[rng.random_range(0..FIRST.len())];
            let last = LAST[rng.random_range(0..LAST.len())];
            let user = format!("{first}.{last}{}", rng.random_range(1..99));
            let form = *pick(&mut rng, FORM_FACTORS);
            let prefix = if form == "Laptop" { "LT" } else { "WS" };
            system.execute(params![
                id,
                format!("{code}-{prefix}-{n:05}"),
                format!("CONTOSO\\{user}"),
                domain,
                format!("10.{}.{}.{}", 64 + site_mix % 100, n / 250, 1 + n % 250),
                format!(
                    "00:15:5D:{:02X}:{:02X}:{:02X}",
                    rng.random_range(0..256),
                    rng.random_range(0..256),
                    rng.random_range(0..256)
                ),
                format!("{user}@{domain}"),
                os,
                build,
                release,
                branch,
                *pick(&mut rng, CLIENT_VERSIONS),
                *pick(&mut rng, LANGUAGES),
                form,
                cpu,
                cores,
                *pick(&mut rng, &[(8192, 40), (16384, 45), (32768, 12), (4096, 3)]),
                *pick(&mut rng, OFFICE),
                date(&mut rng, 1000, 60),
                date(&mut rng, 980, 80),
                i64::from(rng.random_bool(0.35)),
            ])?;
            ep.execute(params![
                id,
                *pick(
                    &mut rng,
                    &[
                        ("Protected", 86),
                        ("At risk", 7),
                        ("Unknown", 5),
                        ("Unsupported", 2)
                    ]
                ),
                *pick(&mut rng, &[(0, 60), (1, 25), (3, 8), (9, 5), (30, 2)]),
                *pick(&mut rng, &[("1.1.24080.9", 80), ("1.1.24060.5", 20)]),
            ])?;
            boot.execute(params![id, f64::from(rng.random_range(120..900u32)) / 10.0])?;
            rows += 3;
            for (kb, class) in [
                ("KB5046613", "Security Updates"),
                ("KB5046740", "Updates"),
                ("KB5043935", "Critical Updates"),
            ] {
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
                upd.execute(params![
                    id,
                    kb,
                    class,
                    status,
                    error,
                    format!(
                        "{}T{:02}:00:00",
                        date(&mut rng, 1020, 30),
                        rng.random_range(0..24)
                    )
                ])?;
                rows += 1;
            }
        }
    }

    for day in 0..28 {
        for component in COMPONENTS {
            let scale = 1 + i64::from(clients) / 10;
            tx.execute(
                "INSERT INTO processing_stats VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    (time::macros::date!(2026 - 11 - 02) + time::Duration::days(day)).to_string(),
                    component,
                    scale * rng.random_range(1..20),
                    scale * rng.random_range(50..400),
                    scale * rng.random_range(20..200),
                    scale * rng.random_range(5..60),
                    rng.random_range(0..40),
                ],
            )?;
            rows += 1;
        }
    }
    for component in COMPONENTS {
        tx.execute(
            "INSERT INTO component_status VALUES (?1, ?2, ?3, ?4)",
            params![
                component,
                rng.random_range(24..2000),
                rng.random_range(40..900),
                *pick(&mut rng, &[(0, 85), (1, 10), (3, 5)]),
            ],
        )?;
        rows += 1;
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
    .iter()
    .enumerate()
    {
        tx.execute(
            "INSERT INTO collections VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                format!("{code}{:05}", n + 1),
                name,
                i64::from(clients) / (n as i64 + 1),
                rng.random_range(20..5000),
                i64::from(rng.random_bool(0.5)),
            ],
        )?;
        rows += 1;
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
        tx.execute(
            "INSERT INTO deployments VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                kind,
                name,
                (total - failed - in_progress).max(0),
                failed,
                in_progress
            ],
        )?;
        rows += 1;
    }
    for task in [
        "Backup Site Server",
        "Rebuild Indexes",
        "Delete Aged Discovery Data",
        "Delete Aged Inventory History",
        "Summarize Software Metering",
    ] {
        tx.execute(
            "INSERT INTO sql_maintenance VALUES (?1, ?2, ?3)",
            params![
                task,
                date(&mut rng, 1040, 20),
                *pick(&mut rng, &[("Succeeded", 9), ("Failed", 1)])
            ],
        )?;
        rows += 1;
    }
    tx.commit()?;
    Ok(SeedSummary {
        clients,
        servers,
        rows,
    })
}

/// Returns every identifying value stored in a seeded database (site code and name,
/// computer, user and server names, addresses, e-mail), so tests can prove none leaves.
pub fn identifying_values(path: &Path) -> Result<Vec<String>, SiteDbError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut out = Vec::new();
    for sql in [
        "SELECT site_code FROM site UNION ALL SELECT site_name FROM site",
        "SELECT server_name FROM site_system UNION ALL SELECT ip_address FROM site_system",
        "SELECT computer_name FROM systems UNION ALL SELECT user_name FROM systems
         UNION ALL SELECT ip_address FROM systems UNION ALL SELECT mac_address FROM systems
         UNION ALL SELECT email FROM systems",
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
