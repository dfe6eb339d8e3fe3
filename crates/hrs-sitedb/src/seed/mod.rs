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
    /// A site of `clients` clients, each reporting on the site's sixteen usual updates.
    pub fn clients(clients: u32) -> Self {
        Self {
            clients,
            updates: 16,
            updates_per_client: 16,
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

/// Caption, build number and product type (1 workstation, 3 server) of an operating system,
/// as Windows reports them to hardware inventory.
type Os = (&'static str, &'static str, i64);

const CLIENT_OS: &[(Os, u32)] = &[
    (("Microsoft Windows 10 Enterprise", "19045", 1), 48),
    (("Microsoft Windows 11 Enterprise", "22631", 1), 30),
    (("Microsoft Windows 11 Enterprise", "26100", 1), 8),
    (("Microsoft Windows 10 Enterprise LTSC", "17763", 1), 5),
    (("Microsoft Windows 10 Enterprise", "19044", 1), 5),
    (("Microsoft Windows 10 Enterprise", "18363", 1), 2),
    (("Microsoft Windows Server 2019 Standard", "17763", 3), 1),
    (("Microsoft Windows Server 2022 Standard", "20348", 3), 1),
];
const SERVER_OS: &[(Os, u32)] = &[
    (("Microsoft Windows Server 2022 Standard", "20348", 3), 6),
    (("Microsoft Windows Server 2019 Standard", "17763", 3), 3),
    (("Microsoft Windows Server 2016 Standard", "14393", 3), 1),
];
const CLIENT_VERSIONS: &[(&str, u32)] = &[
    ("5.00.9128.1007", 70),
    ("5.00.9122.1018", 18),
    ("5.00.9106.1000", 8),
    ("5.00.9088.1007", 4),
];
/// Windows installation languages, as LCIDs.
const LANGUAGES: &[(i64, u32)] = &[
    (1033, 74),
    (1031, 9),
    (1036, 7),
    (1041, 4),
    (3082, 4),
    (1046, 2),
];
const FORM_FACTORS: &[(&str, u32)] = &[("Laptop", 58), ("Desktop", 34), ("Virtual", 8)];
/// SMBIOS chassis types of each form factor.
const LAPTOP_CHASSIS: &[(i64, u32)] = &[(10, 60), (9, 25), (31, 15)];
const DESKTOP_CHASSIS: &[(i64, u32)] = &[(3, 60), (35, 25), (15, 15)];
/// Manufacturer and model of each form factor.
const LAPTOPS: &[((&str, &str), u32)] = &[
    (("Dell Inc.", "Latitude 5440"), 40),
    (("HP", "HP EliteBook 840 G9 Notebook PC"), 35),
    (("LENOVO", "21HES0J200"), 25),
];
const DESKTOPS: &[((&str, &str), u32)] = &[
    (("Dell Inc.", "OptiPlex 7010"), 50),
    (("HP", "HP EliteDesk 800 G6 Desktop Mini PC"), 50),
];
/// Processor name as inventoried (Xeons keep the padding Windows reports), cores, manufacturer.
const CPUS: &[((&str, i64, &str), u32)] = &[
    (
        ("Intel(R) Core(TM) i5-1145G7 @ 2.60GHz", 4, "GenuineIntel"),
        30,
    ),
    (("Intel(R) Core(TM) i7-1265U", 10, "GenuineIntel"), 22),
    (
        (
            "Intel(R) Core(TM) i5-8365U CPU @ 1.60GHz",
            4,
            "GenuineIntel",
        ),
        14,
    ),
    (
        (
            "AMD Ryzen 7 PRO 5850U with Radeon Graphics",
            8,
            "AuthenticAMD",
        ),
        10,
    ),
    (
        (
            "Intel(R) Core(TM) i7-10700 CPU @ 2.90GHz",
            8,
            "GenuineIntel",
        ),
        8,
    ),
    (
        (
            "Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz   ",
            4,
            "GenuineIntel",
        ),
        6,
    ),
    (
        ("Intel(R) Core(TM) i5-6500 CPU @ 3.20GHz", 4, "GenuineIntel"),
        4,
    ),
    (
        (
            "AMD Ryzen 5 PRO 4650G with Radeon Graphics",
            6,
            "AuthenticAMD",
        ),
        3,
    ),
    (("Intel(R) Core(TM) Ultra 7 165U", 12, "GenuineIntel"), 2),
    (
        ("Intel(R) Celeron(R) N4120 CPU @ 1.10GHz", 4, "GenuineIntel"),
        1,
    ),
];
const SERVER_CPUS: &[((&str, i64), u32)] = &[
    (("Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz   ", 24), 5),
    (("Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz   ", 16), 4),
    (("AMD EPYC 7313 16-Core Processor                ", 16), 1),
];
/// Office as installed-software inventory names it: product, version.
const OFFICE: &[(Option<(&str, &str)>, u32)] = &[
    (
        Some((
            "Microsoft 365 Apps for enterprise - en-us",
            "16.0.17928.20156",
        )),
        60,
    ),
    (
        Some((
            "Microsoft 365 Apps for enterprise - en-us",
            "16.0.17531.20190",
        )),
        20,
    ),
    (
        Some((
            "Microsoft Office Professional Plus 2019",
            "16.0.10417.20012",
        )),
        10,
    ),
    (
        Some(("Microsoft Office Professional Plus 2016", "16.0.4266.1001")),
        6,
    ),
    (None, 4),
];
/// Other installed software: product, version, publisher, share of clients.
const SOFTWARE: &[(&str, &str, &str, f64)] = &[
    ("7-Zip 23.01 (x64)", "23.01", "Igor Pavlov", 0.55),
    ("Google Chrome", "131.0.6778.86", "Google LLC", 0.7),
    ("Contoso Expense Client", "4.2.1", "Contoso Ltd", 0.3),
];
const FIRST: &[&str] = &[
    "anna", "ben", "carla", "david", "emma", "felix", "grace", "hugo", "iris", "jonas", "karin",
    "liam", "maria", "noah", "olga", "paul",
];
const LAST: &[&str] = &[
    "schmidt", "meyer", "dubois", "garcia", "tanaka", "novak", "jensen", "rossi", "silva",
    "kowalski",
];
/// Site server components that report status, with the status message IDs they raise most.
const COMPONENTS: &[(&str, &[i64])] = &[
    ("SMS_DISCOVERY_DATA_MANAGER", &[2700, 2703, 2636]),
    ("SMS_STATE_SYSTEM", &[6104, 6105]),
    ("SMS_STATUS_MANAGER", &[4609, 4610]),
    ("SMS_INVENTORY_DATA_LOADER", &[2711, 2720, 2716]),
    ("SMS_POLICY_PROVIDER", &[5100, 5101]),
    ("SMS_DISTRIBUTION_MANAGER", &[2301, 2302, 2330]),
    ("SMS_HIERARCHY_MANAGER", &[3306, 3307]),
    ("SMS_MP_CONTROL_MANAGER", &[5460, 5462]),
    ("SMS_WSUS_SYNC_MANAGER", &[6705, 6706]),
];
/// Status message severities as the site database stores them.
const INFORMATIONAL: i64 = 1_073_741_824;
const WARNING: i64 = -1_073_741_824;
const ERROR: i64 = -2_147_483_648;
/// Summarizer tally intervals: since midnight, and since the site was installed.
const TALLY_INTERVALS: &[&str] = &["0001128000100008", "000A470000284400"];
/// Security role names of the site server roles, as Configuration Manager lists them.
const SITE_SERVER_ROLES: &[&str] = &[
    "SMS Site Server",
    "SMS SQL Server",
    "SMS Management Point",
    "SMS Provider",
    "SMS Component Server",
    "SMS Site System",
];

/// Days from 2024-01-01 to the Monday of the first seeded week of activity, 2026-11-02;
/// four ISO weeks (2026-W45 to W48) follow.
const ACTIVITY_FIRST_DAY: i64 = 1036;
const ACTIVITY_DAYS: i64 = 28;

/// A date `from_day + [0, span)` days after 2024-01-01, as `YYYY-MM-DD`.
fn date(rng: &mut ChaCha8Rng, from_day: i64, span: i64) -> String {
    let base = time::macros::date!(2024 - 01 - 01);
    (base + time::Duration::days(from_day + rng.random_range(0..span.max(1)))).to_string()
}

/// A UTC time in the days `from_day + [0, span)` after 2024-01-01, as the site database
/// keeps it (`YYYY-MM-DDTHH:MM:SS`).
fn moment(rng: &mut ChaCha8Rng, from_day: i64, span: i64) -> String {
    let day = date(rng, from_day, span);
    let second = rng.random_range(0..86_400);
    clock_at(&day, second)
}

/// `day` (`YYYY-MM-DD`) at `second` seconds after midnight.
fn clock_at(day: &str, second: i64) -> String {
    format!(
        "{day}T{:02}:{:02}:{:02}",
        second / 3600,
        second / 60 % 60,
        second % 60
    )
}

/// A GUID, upper or lower case hex, without braces.
fn guid(rng: &mut ChaCha8Rng, upper: bool) -> String {
    let a: u32 = rng.random();
    let b: u16 = rng.random();
    let c: u16 = (rng.random::<u16>() & 0x0fff) | 0x4000;
    let d: u16 = (rng.random::<u16>() & 0x3fff) | 0x8000;
    let e: u64 = rng.random::<u64>() & 0xffff_ffff_ffff;
    let g = format!("{a:08x}-{b:04x}-{c:04x}-{d:04x}-{e:012x}");
    if upper { g.to_ascii_uppercase() } else { g }
}

/// The network abstraction layer path of a site system, as site system views store it.
fn nal_path(server: &str, site_code: &str) -> String {
    format!(r#"["Display=\\{server}\"]MSWNET:["SMS_SITE={site_code}"]\\{server}\"#)
}

/// A person: logon (`anna.schmidt12`) and display name (`Anna Schmidt`).
fn person(rng: &mut ChaCha8Rng) -> (String, String) {
    let capitalized = |s: &str| -> String {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect())
            .unwrap_or_default()
    };
    let first = FIRST[rng.random_range(0..FIRST.len())];
    let last = LAST[rng.random_range(0..LAST.len())];
    (
        format!("{first}.{last}{}", rng.random_range(1..99)),
        format!("{} {}", capitalized(first), capitalized(last)),
    )
}

/// Resource id of a site's first client, as the system modelled numbers them.
const FIRST_RESOURCE: i64 = 16_777_216;
/// Resource id of a site's first user resource.
const FIRST_USER: i64 = 2_063_597_568;
/// CI_IDs of the seeded configuration items, by kind.
const APP_CI: i64 = 16_777_300;
const BASELINE_CI: i64 = 16_777_500;
const SETTING_CI: i64 = 16_777_600;
const UPDATE_GROUP_CI: i64 = 16_777_700;
const UPDATE_CI: i64 = 16_780_000;

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

/// A site server: its short name, FQDN and roles.
struct Server {
    netbios: String,
    fqdn: String,
    roles: Vec<&'static str>,
    virtual_machine: bool,
}

impl Server {
    /// The server's network abstraction layer path.
    fn nal_path(&self, code: &str) -> String {
        nal_path(&self.fqdn, code)
    }

    fn has(&self, role: &str) -> bool {
        self.roles.contains(&role)
    }
}

/// One discovered system as the generator tracks it between tables.
struct Resource {
    id: i64,
    name: String,
    client: bool,
    obsolete: bool,
    /// Whether it sent hardware inventory (so has `v_GS_*` rows).
    inventoried: bool,
    server: bool,
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
    let rng = &mut rng;
    let code = site.as_str();
    let is_cas = code == "CAS";

    sites(sink, rng, code, is_cas)?;
    let servers = servers(sink, rng, code, is_cas, clients)?;
    let updates = update_catalog(sink, rng, size)?;
    let resources = systems(sink, rng, code, clients, &servers, size, &updates)?;
    let collections = collections(sink, rng, code, &resources)?;
    let packages = content(sink, rng, code, &servers)?;
    deployments(sink, rng, code, &resources, &collections, &packages)?;
    compliance(sink, rng, &resources)?;
    status(sink, rng, code, &servers, &resources)?;

    let inventoried: Vec<i64> = resources
        .iter()
        .filter(|r| r.inventoried && !r.server)
        .map(|r| r.id)
        .collect();
    let server_names: Vec<String> = servers.iter().map(|s| s.fqdn.clone()).collect();
    services::generate(
        sink,
        rng,
        &services::Site {
            code,
            is_cas,
            clients,
            servers: &server_names,
            first_resource: FIRST_RESOURCE,
            inventoried: &inventoried,
            packages: &packages,
        },
    )?;
    Ok(SeedSummary {
        clients,
        servers: servers.len() as u32,
        rows: counted.rows,
    })
}

/// The sites this database knows: itself, its parent or children, and its own code.
fn sites(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    code: &str,
    is_cas: bool,
) -> Result<(), SiteDbError> {
    let zone_info = *pick(
        rng,
        &[
            (
                "FFFFFFC4 0000 000A 0000 0005 0003 0000 0000 0000 0000 0000 0003 0000 0005 0002 0000 0000 0000 FFFFFFC4",
                5,
            ),
            (
                "0000012C 0000 000B 0000 0001 0002 0000 0000 0000 0000 0000 0003 0000 0002 0002 0000 0000 0000 FFFFFFC4",
                3,
            ),
            (
                "FFFFFDE4 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 00000000",
                1,
            ),
        ],
    );
    let mut rows: Vec<(String, String, i64, Option<&str>)> = vec![(
        code.to_owned(),
        format!(
            "{code} Contoso {}",
            if is_cas { "Central" } else { "Region" }
        ),
        if is_cas { 4 } else { 2 },
        if is_cas { None } else { Some("CAS") },
    )];
    if is_cas {
        for n in 1..=3 {
            rows.push((
                format!("P0{n}"),
                format!("P0{n} Contoso Region"),
                2,
                Some("CAS"),
            ));
        }
    } else {
        rows.push(("CAS".into(), "CAS Contoso Central".into(), 4, None));
    }
    for (site_code, name, kind, parent) in rows {
        let server = format!("{site_code}-CM00.CONTOSO.EXAMPLE");
        put!(
            sink,
            "v_Site",
            [
                site_code.as_str(),
                name,
                kind,
                "5.00.9128.1000",
                9128i64,
                1i64,
                zone_info,
                parent,
                server,
                "C:\\Program Files\\Microsoft Configuration Manager",
            ]
        );
    }
    put!(sink, "v_Identification", [code]);
    Ok(())
}

/// The site's servers and their roles; distribution points get their content views later.
fn servers(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    code: &str,
    is_cas: bool,
    clients: u32,
) -> Result<Vec<Server>, SiteDbError> {
    let count = if is_cas {
        3
    } else {
        2 + clients / 500 + rng.random_range(0..3)
    };
    let mut servers = Vec::new();
    for n in 0..count {
        let netbios = format!("{code}-CM{n:02}");
        let mut roles: Vec<&'static str> = Vec::new();
        if n == 0 {
            roles.extend(SITE_SERVER_ROLES);
            if is_cas {
                roles.retain(|r| *r != "SMS Management Point");
            }
        } else {
            roles.extend(["SMS Component Server", "SMS Site System"]);
            if is_cas {
                roles.push(if n == 1 {
                    "SMS Software Update Point"
                } else {
                    "SMS Dmp Connector"
                });
                if n == 1 {
                    roles.push("SMS SRS Reporting Point");
                }
            } else {
                roles.push("SMS Distribution Point");
                if n == 1 {
                    roles.push("SMS Software Update Point");
                    if rng.random_bool(0.5) {
                        roles.push("SMS SRS Reporting Point");
                    }
                } else if rng.random_bool(0.4) {
                    roles.push("SMS Management Point");
                }
            }
        }
        let server = Server {
            fqdn: format!("{netbios}.CONTOSO.EXAMPLE"),
            netbios,
            roles,
            virtual_machine: rng.random_bool(0.7),
        };
        for role in &server.roles {
            put!(
                sink,
                "v_SystemResourceList",
                [
                    *role,
                    server.fqdn.as_str(),
                    code,
                    server.nal_path(code),
                    "Windows NT Server",
                ]
            );
        }
        servers.push(server);
    }
    Ok(servers)
}

/// The software updates the site knows, with their classification and product; returns
/// each update's CI_ID and classification.
fn update_catalog(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    size: &SiteSize,
) -> Result<Vec<i64>, SiteDbError> {
    const CLASSES: [(&str, i64); 5] = [
        ("Security Updates", 16_777_401),
        ("Critical Updates", 16_777_402),
        ("Updates", 16_777_403),
        ("Definition Updates", 16_777_404),
        ("Feature Packs", 16_777_405),
    ];
    const PRODUCTS: [(&str, i64); 6] = [
        ("Windows 10", 16_777_411),
        ("Windows 11", 16_777_412),
        ("Windows Server 2019", 16_777_413),
        ("Microsoft 365 Apps/Office 2019/Office 2016", 16_777_414),
        ("Microsoft Defender Antivirus", 16_777_415),
        ("Windows Server 2022", 16_777_416),
    ];
    let mut ids = Vec::new();
    for (n, update) in usual_updates(size).into_iter().enumerate() {
        let id = UPDATE_CI + n as i64;
        let (class, product) = (CLASSES[update.class], PRODUCTS[update.product]);
        put!(
            sink,
            "v_UpdateInfo",
            [
                id,
                guid(rng, true),
                1i64,
                update.article.as_str(),
                "",
                update.title.as_str(),
                *pick(rng, &[(10i64, 50), (8, 30), (6, 10), (0, 10)]),
                moment(rng, 900, 150),
                i64::from(rng.random_bool(0.6)),
                i64::from(rng.random_bool(0.05)),
                i64::from(rng.random_bool(0.2)),
            ]
        );
        put!(
            sink,
            "v_CICategoryInfo_All",
            [id, class.1, "UpdateClassification", class.0]
        );
        put!(
            sink,
            "v_CICategoryInfo_All",
            [id, product.1, "Product", product.0]
        );
        if size.updates <= USUAL_UPDATES.len() as u32 {
            put!(
                sink,
                "v_CICategoryInfo_All",
                [id, 16_777_420i64, "Company", "Microsoft Corporation"]
            );
        }
        ids.push(id);
    }
    Ok(ids)
}

/// One software update of the seeded catalog.
struct UpdateDef {
    article: String,
    title: String,
    class: usize,
    product: usize,
}

/// The usual site's updates: article, title, classification and product index.
const USUAL_UPDATES: &[(&str, &str, usize, usize)] = &[
    (
        "5046613",
        "2026-11 Cumulative Update for Windows 10 Version 22H2 for x64-based Systems (KB5046613)",
        0,
        0,
    ),
    (
        "5046633",
        "2026-11 Cumulative Update for Windows 11 Version 23H2 for x64-based Systems (KB5046633)",
        0,
        1,
    ),
    (
        "5046617",
        "2026-11 Cumulative Update for Windows 11 Version 24H2 for x64-based Systems (KB5046617)",
        0,
        1,
    ),
    (
        "5046615",
        "2026-11 Cumulative Update for Windows Server 2019 for x64-based Systems (KB5046615)",
        0,
        2,
    ),
    (
        "5046616",
        "2026-11 Cumulative Update for Microsoft server operating system version 21H2 for x64-based Systems (KB5046616)",
        0,
        5,
    ),
    (
        "5046740",
        "2026-11 Cumulative Update Preview for Windows 11 Version 23H2 for x64-based Systems (KB5046740)",
        2,
        1,
    ),
    (
        "5043935",
        "2026-10 Cumulative Update for .NET Framework 3.5, 4.8 and 4.8.1 for Windows 10 Version 22H2 for x64 (KB5043935)",
        1,
        0,
    ),
    (
        "890830",
        "Windows Malicious Software Removal Tool x64 - v5.131 (KB890830)",
        2,
        0,
    ),
    (
        "2267602",
        "Security Intelligence Update for Microsoft Defender Antivirus - KB2267602 (Version 1.421.1234.0)",
        3,
        4,
    ),
    (
        "5002623",
        "Security Update for Microsoft Office 2016 (KB5002623) 64-Bit Edition",
        0,
        3,
    ),
    (
        "5002621",
        "Update for Microsoft Office 2016 (KB5002621) 64-Bit Edition",
        2,
        3,
    ),
    (
        "5045594",
        "2026-10 Cumulative Update for Windows 10 Version 22H2 for x64-based Systems (KB5045594)",
        0,
        0,
    ),
    (
        "5044284",
        "2026-10 Cumulative Update for Windows 11 Version 23H2 for x64-based Systems (KB5044284)",
        0,
        1,
    ),
    (
        "5027397",
        "Feature update to Windows 11, version 23H2 via Enablement Package (KB5027397)",
        4,
        1,
    ),
    (
        "5046714",
        "2026-11 Dynamic Update for Windows 11 Version 24H2 for x64-based Systems (KB5046714)",
        1,
        1,
    ),
    (
        "5007651",
        "Update for Windows Security platform - KB5007651 (Version 1.0.2410.14001)",
        2,
        4,
    ),
];

/// The updates of a site of this size: the usual ones, or `size.updates` numbered ones.
fn usual_updates(size: &SiteSize) -> Vec<UpdateDef> {
    if size.updates <= USUAL_UPDATES.len() as u32 {
        return USUAL_UPDATES
            .iter()
            .take(size.updates as usize)
            .map(|(article, title, class, product)| UpdateDef {
                article: (*article).to_owned(),
                title: (*title).to_owned(),
                class: *class,
                product: *product,
            })
            .collect();
    }
    (0..size.updates)
        .map(|n| {
            let article = 5_000_000 + n;
            UpdateDef {
                article: article.to_string(),
                title: format!("Update for Windows (KB{article})"),
                class: (n % 4) as usize,
                product: (n % 6) as usize,
            }
        })
        .collect()
}

/// Discovered systems with their inventory, health and update state: the clients, the site
/// servers, systems discovered without a client, obsolete duplicates and mobile devices.
#[allow(clippy::too_many_arguments)]
fn systems(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    code: &str,
    clients: u32,
    servers: &[Server],
    size: &SiteSize,
    updates: &[i64],
) -> Result<Vec<Resource>, SiteDbError> {
    let mut resources = Vec::new();
    let mix = site_mix(
        &code
            .parse()
            .map_err(|_| SiteDbError::UnknownTable("site"))?,
    );
    for n in 0..clients {
        let id = FIRST_RESOURCE + i64::from(n);
        let form = *pick(rng, FORM_FACTORS);
        let prefix = if form == "Laptop" { "LT" } else { "WS" };
        let name = format!("{code}-{prefix}-{n:05}");
        let (user, display) = person(rng);
        let inventoried = rng.random_bool(0.97);
        let os = *pick(rng, CLIENT_OS);
        let machine = Machine {
            id,
            name: &name,
            user: Some(&user),
            os,
            form,
            server_cpu: None,
            inventoried,
        };
        machine.write(sink, rng, mix, n)?;
        put!(
            sink,
            "v_R_User",
            [
                FIRST_USER + i64::from(n),
                user.as_str(),
                format!("CONTOSO\\{user}"),
                display,
                format!("{user}@contoso.example"),
                "CONTOSO",
            ]
        );
        if inventoried {
            installed_software(sink, rng, id)?;
            for &update in client_updates(rng, size, updates).iter() {
                update_status(sink, rng, id, update)?;
            }
            let failed = rng.random_bool(0.03);
            put!(
                sink,
                "v_UpdateScanStatus",
                [
                    id,
                    16_777_217i64,
                    moment(rng, ACTIVITY_FIRST_DAY + ACTIVITY_DAYS - 9, 9),
                    if failed { 6i64 } else { 3 },
                    if failed { -2_145_107_924i64 } else { 0 },
                    *pick(rng, &[("10.0.19041.4355", 60), ("10.0.22621.3527", 40)]),
                ]
            );
        }
        resources.push(Resource {
            id,
            name,
            client: true,
            obsolete: false,
            inventoried,
            server: false,
        });
    }
    let mut next = FIRST_RESOURCE + i64::from(clients);
    for (n, server) in servers.iter().enumerate() {
        let os = *pick(rng, SERVER_OS);
        let cpu = *pick(rng, SERVER_CPUS);
        let machine = Machine {
            id: next,
            name: &server.netbios,
            user: None,
            os,
            form: if server.virtual_machine {
                "Virtual"
            } else {
                "Rack"
            },
            server_cpu: Some(cpu),
            inventoried: true,
        };
        machine.write(sink, rng, mix, 60_000 + n as u32)?;
        resources.push(Resource {
            id: next,
            name: server.netbios.clone(),
            client: true,
            obsolete: false,
            inventoried: true,
            server: true,
        });
        next += 1;
    }
    // Systems Active Directory discovery found that never installed the client, and the
    // obsolete records a reinstalled client leaves behind.
    let discovered = (0..clients / 30 + 1).map(|n| (format!("{code}-WS-{:05}", 90_000 + n), false));
    let obsolete: Vec<(String, bool)> = (0..clients / 50)
        .map(|n| {
            (
                resources[(n as usize * 7) % clients.max(1) as usize]
                    .name
                    .clone(),
                true,
            )
        })
        .collect();
    for (name, obsolete) in discovered.chain(obsolete) {
        discovered_only(sink, rng, next, &name, obsolete)?;
        resources.push(Resource {
            id: next,
            name,
            client: obsolete,
            obsolete,
            inventoried: false,
            server: false,
        });
        next += 1;
    }
    // Mobile devices enrolled through on-premises MDM have no discovery record of their own.
    for n in 0..clients / 20 {
        let (os, _) = *pick(
            rng,
            &[
                (("iOS 17.5.1", ""), 45),
                (("Android 14", ""), 35),
                (("iPadOS 17.5", ""), 20),
            ],
        );
        let owner = *pick(rng, &[(1i64, 70), (2, 30)]);
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let device = if os.starts_with("Android") {
            "Galaxy"
        } else if os.starts_with("iPad") {
            "iPad"
        } else {
            "iPhone"
        };
        put!(
            sink,
            "v_CombinedDeviceResources",
            [
                next,
                format!("{first}'s {device} {n}"),
                0i64,
                0i64,
                Option::<i64>::None,
                Option::<String>::None,
                3i64,
                moment(rng, 1040, 24),
                Option::<String>::None,
                moment(rng, 1050, 14),
                Option::<i64>::None,
                Option::<i64>::None,
                Option::<i64>::None,
                Option::<i64>::None,
                Option::<String>::None,
                Option::<String>::None,
                os,
                owner,
                0i64,
            ]
        );
        next += 1;
    }
    Ok(resources)
}

/// A managed machine, client or server, as it appears across discovery and inventory.
struct Machine<'a> {
    id: i64,
    name: &'a str,
    user: Option<&'a str>,
    os: Os,
    /// Laptop, Desktop, Virtual or Rack.
    form: &'a str,
    /// A server's processor and cores per socket.
    server_cpu: Option<(&'static str, i64)>,
    inventoried: bool,
}

impl Machine<'_> {
    /// Writes discovery, addresses, hardware inventory and health; `n` numbers addresses.
    fn write(
        &self,
        sink: &mut dyn Sink,
        rng: &mut ChaCha8Rng,
        mix: u64,
        n: u32,
    ) -> Result<(), SiteDbError> {
        let (caption, build, product_type) = self.os;
        let is_virtual = self.form == "Virtual";
        let client_version = if self.server_cpu.is_some() {
            CLIENT_VERSIONS[0].0
        } else {
            *pick(rng, CLIENT_VERSIONS)
        };
        let family = if product_type == 3 {
            "Microsoft Windows NT Server 10.0"
        } else {
            "Microsoft Windows NT Workstation 10.0"
        };
        put!(
            sink,
            "v_R_System",
            [
                self.id,
                self.name,
                self.name,
                "CONTOSO",
                "CONTOSO.EXAMPLE",
                self.user,
                self.user.map(|_| "CONTOSO"),
                1i64,
                client_version,
                0i64,
                1i64,
                0i64,
                i64::from(is_virtual),
                family,
                format!("10.0.{build}"),
                format!("GUID:{}", guid(rng, true)),
                *pick(
                    rng,
                    &[("Contoso-FRA", 6), ("Contoso-NYC", 3), ("Contoso-TYO", 1)]
                ),
                moment(rng, 300, 600),
            ]
        );
        put!(
            sink,
            "v_RA_System_IPAddresses",
            [
                self.id,
                format!("10.{}.{}.{}", 64 + mix % 100, n / 250, 1 + n % 250)
            ]
        );
        if rng.random_bool(0.3) {
            put!(
                sink,
                "v_RA_System_IPAddresses",
                [
                    self.id,
                    format!(
                        "fe80::{:x}:{:x}:{:x}:{:x}",
                        rng.random_range(0..0xffffu32),
                        rng.random_range(0..0xffffu32),
                        rng.random_range(0..0xffffu32),
                        rng.random_range(0..0xffffu32)
                    )
                ]
            );
        }
        put!(
            sink,
            "v_RA_System_MACAddresses",
            [
                self.id,
                format!(
                    "00:15:5D:{:02X}:{:02X}:{:02X}",
                    rng.random_range(0..256),
                    rng.random_range(0..256),
                    rng.random_range(0..256)
                )
            ]
        );
        let stale = rng.random_bool(0.12);
        let heartbeat = if stale {
            moment(rng, 800, 236)
        } else {
            moment(rng, ACTIVITY_FIRST_DAY + ACTIVITY_DAYS - 14, 14)
        };
        // Hardware inventory runs weekly: most clients sent theirs in the last week.
        let hw_scan = self.inventoried.then(|| {
            if rng.random_bool(0.85) {
                moment(rng, ACTIVITY_FIRST_DAY + ACTIVITY_DAYS - 7, 7)
            } else {
                moment(rng, ACTIVITY_FIRST_DAY - 60, 60 + ACTIVITY_DAYS - 7)
            }
        });
        let (ep_state, ep_status, infection) = (
            *pick(rng, &[(3i64, 90), (1, 4), (2, 2), (4, 2), (5, 2)]),
            *pick(
                rng,
                &[(0i64, 88), (0x20, 5), (0x40, 3), (0x2, 2), (0x80000, 2)],
            ),
            *pick(rng, &[(1i64, 93), (2, 4), (3, 2), (4, 1)]),
        );
        let signature_age = *pick(rng, &[(0i64, 60), (1, 25), (3, 8), (9, 5), (30, 2)]);
        let signature = clock_at(
            &date(
                rng,
                ACTIVITY_FIRST_DAY + ACTIVITY_DAYS - 1 - signature_age,
                1,
            ),
            rng.random_range(0..86_400),
        );
        let managed = ep_state == 3;
        put!(
            sink,
            "v_CombinedDeviceResources",
            [
                self.id,
                self.name,
                1i64,
                0i64,
                i64::from(!stale),
                client_version,
                0i64,
                heartbeat.as_str(),
                hw_scan.clone(),
                moment(rng, ACTIVITY_FIRST_DAY + ACTIVITY_DAYS - 3, 3),
                i64::from(managed || rng.random_bool(0.5)),
                ep_state,
                ep_status,
                managed.then_some(infection),
                managed.then(|| *pick(rng, &[("1.1.24080.9", 80), ("1.1.24060.5", 20)])),
                managed.then_some(signature),
                Option::<String>::None,
                Option::<i64>::None,
                i64::from(product_type == 1 && rng.random_bool(0.35)),
            ]
        );
        let Some(hw_scan) = hw_scan else {
            return Ok(());
        };
        let language = *pick(rng, LANGUAGES);
        put!(
            sink,
            "v_GS_OPERATING_SYSTEM",
            [
                self.id,
                1i64,
                caption,
                format!("10.0.{build}"),
                build,
                language,
                format!("{language:04x}"),
                moment(rng, 0, 900),
                moment(rng, ACTIVITY_FIRST_DAY + ACTIVITY_DAYS - 20, 20),
                product_type,
                "C:",
                Option::<i64>::None,
            ]
        );
        let (cpu, cores, maker, sockets) = match self.server_cpu {
            Some((cpu, cores)) if !is_virtual => (cpu, cores, "GenuineIntel", 2),
            Some((cpu, _)) => (cpu, 4, "GenuineIntel", 1),
            None => {
                let (cpu, cores, maker) = *pick(rng, CPUS);
                (cpu, cores, maker, 1)
            }
        };
        let maker = if cpu.starts_with("AMD") {
            "AuthenticAMD"
        } else {
            maker
        };
        for socket in 0..sockets {
            put!(
                sink,
                "v_GS_PROCESSOR",
                [
                    self.id,
                    1 + socket,
                    format!("CPU{socket}"),
                    cpu,
                    maker,
                    cores,
                    cores * 2,
                    *pick(rng, &[(2600i64, 40), (1800, 30), (3000, 30)]),
                ]
            );
        }
        let memory = if self.server_cpu.is_some() {
            *pick(
                rng,
                &[(33_554_432i64, 40), (67_108_864, 50), (134_217_728, 10)],
            )
        } else {
            *pick(
                rng,
                &[
                    (8_388_608i64, 40),
                    (16_777_216, 45),
                    (33_554_432, 12),
                    (4_194_304, 3),
                ],
            )
        };
        put!(sink, "v_GS_X86_PC_MEMORY", [self.id, 1i64, memory]);
        let ((maker, model), chassis) = match self.form {
            "Laptop" => (*pick(rng, LAPTOPS), *pick(rng, LAPTOP_CHASSIS)),
            "Desktop" => (*pick(rng, DESKTOPS), *pick(rng, DESKTOP_CHASSIS)),
            "Rack" => (("Dell Inc.", "PowerEdge R650"), 23),
            _ => (("Microsoft Corporation", "Virtual Machine"), 1),
        };
        put!(
            sink,
            "v_GS_COMPUTER_SYSTEM",
            [
                self.id,
                1i64,
                self.name,
                "CONTOSO.EXAMPLE",
                maker,
                model,
                "x64-based PC"
            ]
        );
        let serial = format!("{:08X}", rng.random::<u32>());
        put!(
            sink,
            "v_GS_SYSTEM_ENCLOSURE",
            [self.id, 1i64, chassis, maker, serial.as_str()]
        );
        // A docked laptop reports the docking station as a second enclosure.
        if self.form == "Laptop" && rng.random_bool(0.1) {
            put!(
                sink,
                "v_GS_SYSTEM_ENCLOSURE",
                [self.id, 2i64, 12i64, maker, format!("{serial}D")]
            );
        }
        put!(sink, "v_GS_WORKSTATION_STATUS", [self.id, 1i64, hw_scan]);
        let bios = rng.random_range(2_000..15_000i64);
        put!(
            sink,
            "v_GS_SYSTEMBOOTDATA",
            [
                self.id,
                1i64,
                bios,
                rng.random_range(12_000..90_000i64),
                rng.random_range(300..8_000i64),
                moment(rng, ACTIVITY_FIRST_DAY + ACTIVITY_DAYS - 20, 20),
            ]
        );
        Ok(())
    }
}

/// A discovery record without inventory: a system without the client, or an obsolete one.
fn discovered_only(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    id: i64,
    name: &str,
    obsolete: bool,
) -> Result<(), SiteDbError> {
    put!(
        sink,
        "v_R_System",
        [
            id,
            name,
            name,
            "CONTOSO",
            "CONTOSO.EXAMPLE",
            Option::<String>::None,
            Option::<String>::None,
            obsolete.then_some(1i64),
            obsolete.then_some(CLIENT_VERSIONS[1].0),
            i64::from(obsolete),
            i64::from(!obsolete),
            0i64,
            0i64,
            "Microsoft Windows NT Workstation 10.0",
            Option::<String>::None,
            obsolete.then(|| format!("GUID:{}", guid(rng, true))),
            "Contoso-FRA",
            moment(rng, 300, 600),
        ]
    );
    // An obsolete record keeps its old client's last heartbeat; the other was never a client.
    let client = i64::from(obsolete);
    put!(
        sink,
        "v_CombinedDeviceResources",
        [
            id,
            name,
            client,
            client,
            obsolete.then_some(0i64),
            obsolete.then_some(CLIENT_VERSIONS[1].0),
            0i64,
            obsolete.then(|| moment(rng, 700, 200)),
            Option::<String>::None,
            Option::<String>::None,
            obsolete.then_some(0i64),
            obsolete.then_some(1i64),
            obsolete.then_some(0i64),
            Option::<i64>::None,
            Option::<String>::None,
            Option::<String>::None,
            Option::<String>::None,
            Option::<i64>::None,
            0i64,
        ]
    );
    Ok(())
}

/// Office and the other software installed-software inventory finds on a client.
fn installed_software(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    id: i64,
) -> Result<(), SiteDbError> {
    if let Some((product, version)) = *pick(rng, OFFICE) {
        put!(
            sink,
            "v_GS_INSTALLED_SOFTWARE",
            [
                id,
                1i64,
                product,
                version,
                "Microsoft Corporation",
                "{90160000-008C-0000-1000-0000000FF1CE}",
            ]
        );
    }
    for (n, (product, version, publisher, share)) in SOFTWARE.iter().enumerate() {
        if rng.random_bool(*share) {
            put!(
                sink,
                "v_GS_INSTALLED_SOFTWARE",
                [
                    id,
                    2 + n as i64,
                    *product,
                    *version,
                    *publisher,
                    format!("{{{}}}", guid(rng, true)),
                ]
            );
        }
    }
    Ok(())
}

/// One client's compliance state for one update.
fn update_status(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    id: i64,
    update: i64,
) -> Result<(), SiteDbError> {
    let status = *pick(rng, &[(3i64, 78), (2, 12), (1, 5), (0, 5)]);
    let failed = status == 2 && rng.random_bool(0.3);
    let error = if failed {
        *pick(rng, &[(-2_145_124_329i64, 3), (-2_016_409_966, 1)])
    } else {
        0
    };
    put!(
        sink,
        "v_UpdateComplianceStatus",
        [
            id,
            update,
            status,
            moment(rng, ACTIVITY_FIRST_DAY + ACTIVITY_DAYS - 14, 14),
            if failed {
                6i64
            } else if status == 3 {
                4
            } else {
                0
            },
            error,
        ]
    );
    Ok(())
}

/// The updates one client reports compliance for: every update of a site of the usual size,
/// else `updates_per_client` drawn from the site's updates.
fn client_updates(rng: &mut ChaCha8Rng, size: &SiteSize, updates: &[i64]) -> Vec<i64> {
    if size.updates <= USUAL_UPDATES.len() as u32 && size.updates_per_client >= size.updates {
        return updates.to_vec();
    }
    let mut picked: Vec<i64> = (0..size.updates_per_client.min(size.updates))
        .map(|_| updates[rng.random_range(0..updates.len().max(1))])
        .collect();
    picked.sort_unstable();
    picked.dedup();
    picked
}

/// A seeded collection: its ID, name and members.
struct CollectionDef {
    id: String,
    name: String,
    members: i64,
}

/// Built-in and administrator-made collections, with their maintenance windows.
fn collections(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    code: &str,
    resources: &[Resource],
) -> Result<Vec<CollectionDef>, SiteDbError> {
    let systems = resources.len() as i64;
    let clients = resources.iter().filter(|r| r.client && !r.obsolete).count() as i64;
    let users = resources.iter().filter(|r| !r.server && r.client).count() as i64;
    // Built-in collections: ID, name, type (1 user, 2 device), members, refresh type.
    let builtin = [
        ("SMS00001", "All Systems", 2, systems, 6),
        ("SMS00002", "All Users", 1, users, 6),
        ("SMS00003", "All User Groups", 1, users / 40 + 3, 6),
        (
            "SMS00004",
            "All Users and User Groups",
            1,
            users + users / 40 + 3,
            6,
        ),
        ("SMSDM001", "All Mobile Devices", 2, systems / 25, 2),
        ("SMSDM003", "All Desktop and Server Clients", 2, clients, 6),
        ("SMS000US", "All Unknown Computers", 2, 2, 2),
    ];
    let custom = [
        ("Pilot Ring", 20, 4),
        ("Servers - Patch Group A", 0, 2),
        ("Laptops - Finance", 8, 6),
        ("Windows 11 23H2 Devices", 3, 4),
        ("Workstations - Saturday Maintenance", 2, 2),
        ("Co-managed Devices", 3, 4),
        ("Contoso Expense Client Users", 4, 1),
    ];
    let mut out = Vec::new();
    let mut windows = Vec::new();
    for (id, name, kind, members, refresh) in builtin {
        out.push((id.to_owned(), name.to_owned(), kind, members, refresh, 0));
    }
    for (n, (name, share, refresh)) in custom.into_iter().enumerate() {
        let members = if share == 0 {
            resources.iter().filter(|r| r.server).count() as i64
        } else {
            clients / share
        };
        let id = format!("{code}{:05}", 10 + n);
        let window_count = match name {
            "Servers - Patch Group A" => 2,
            "Pilot Ring" | "Workstations - Saturday Maintenance" | "Windows 11 23H2 Devices" => 1,
            _ => 0,
        };
        for w in 0..window_count {
            windows.push((id.clone(), name, w));
        }
        out.push((id, name.to_owned(), 2, members, refresh, window_count));
    }
    for (id, name, kind, members, refresh, window_count) in &out {
        let full = match members {
            0..=100 => rng.random_range(0..4i64),
            101..=5000 => rng.random_range(1..30),
            _ => rng.random_range(10..120),
        };
        put!(
            sink,
            "v_Collection",
            [
                id.as_str(),
                name.as_str(),
                *kind,
                *members,
                *refresh,
                if *kind == 1 { "SMS00002" } else { "SMS00001" },
                *window_count,
                full,
                if refresh & 4 == 4 {
                    rng.random_range(0..5i64)
                } else {
                    0
                },
                moment(rng, ACTIVITY_FIRST_DAY + ACTIVITY_DAYS - 2, 2),
            ]
        );
    }
    for (id, name, n) in windows {
        let (title, kind, duration, recurrence) = match name {
            "Servers - Patch Group A" if n == 0 => ("Patch Tuesday + 5 days", 4i64, 240i64, 4i64),
            "Servers - Patch Group A" => ("Emergency patching", 4, 120, 1),
            "Pilot Ring" => ("Pilot updates nightly", 4, 120, 2),
            "Windows 11 23H2 Devices" => ("Upgrade window", 5, 180, 3),
            _ => ("Saturday night", 1, 360, 3),
        };
        put!(
            sink,
            "v_ServiceWindow",
            [
                id,
                format!("{{{}}}", guid(rng, true)),
                title,
                moment(rng, 700, 300),
                duration,
                recurrence,
                kind,
                i64::from(rng.random_bool(0.9)),
                0i64,
            ]
        );
    }
    Ok(out
        .into_iter()
        .map(|(id, name, _, members, _, _)| CollectionDef { id, name, members })
        .collect())
}

/// A package of the site: ID, name, type, size in KB.
type PackageDef = (&'static str, i64, i64);

/// The site's packages by number, name, type and size (KB).
const PACKAGES: &[PackageDef] = &[
    ("User State Migration Tool for Windows", 0, 68_412),
    ("Configuration Manager Client Package", 0, 412_880),
    ("Configuration Manager Client Piloting Package", 0, 413_120),
    ("Boot image (x64)", 258, 612_304),
    ("Boot image (x86)", 258, 498_220),
    ("Windows 11 23H2 Enterprise", 257, 5_124_408),
    ("Windows 11 24H2 Upgrade", 259, 5_612_884),
    ("Dell Latitude 5440 Drivers", 3, 1_402_118),
    ("2026 Workstation Updates", 5, 3_981_552),
    ("Windows 11 Deployment", 4, 12),
    ("Windows 11 23H2 In-place Upgrade", 4, 9),
    ("Contoso Line of Business Tool 4.2", 0, 88_340),
];

/// Applications: name, deployment type technologies, content size (KB).
const APPLICATIONS: &[(&str, &[&str], i64)] = &[
    ("Company Portal", &["Windows8App"], 52_118),
    ("Microsoft 365 Apps for enterprise", &["Script"], 3_420_118),
    ("Contoso Line of Business Tool", &["MSI", "Script"], 91_002),
    ("Google Chrome", &["MSI"], 118_440),
    ("7-Zip", &["MSI"], 1_912),
    ("Adobe Acrobat Reader", &["MSI"], 401_337),
    ("Contoso Expense Client", &["AppV5X"], 27_019),
    ("Notepad++", &["Script"], 5_402),
];

/// Packages, boot images, task sequences and application content, and the distribution
/// points that hold them; returns every PackageID.
fn content(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    code: &str,
    servers: &[Server],
) -> Result<Vec<String>, SiteDbError> {
    let mut ids = Vec::new();
    let source = format!("\\\\{code}-CM00.CONTOSO.EXAMPLE\\Sources");
    let mut all: Vec<(String, i64, i64)> = PACKAGES
        .iter()
        .map(|(name, kind, kb)| ((*name).to_owned(), *kind, *kb))
        .collect();
    for (name, _, kb) in APPLICATIONS {
        all.push(((*name).to_owned(), 8, *kb));
    }
    for (n, (name, kind, kb)) in all.iter().enumerate() {
        let id = format!("{code}{:05}", n + 1);
        put!(
            sink,
            "v_Package",
            [
                id.as_str(),
                name.as_str(),
                *kind,
                *kb,
                rng.random_range(1..12i64),
                moment(rng, 500, 500),
                format!("{source}\\{}", name.replace(' ', "_")),
            ]
        );
        match *kind {
            258 => put!(
                sink,
                "v_BootImagePackage",
                [
                    id.as_str(),
                    name.as_str(),
                    if name.contains("x86") { 0i64 } else { 9 },
                    if name.contains("x86") {
                        "10.0.22621.1"
                    } else {
                        "10.0.26100.1"
                    },
                    *kb,
                    format!("{source}\\boot.wim"),
                ]
            ),
            4 => {
                let steps = rng.random_range(12..60);
                let sequence = format!(
                    "<sequence version=\"3.10\">{}</sequence>",
                    (0..steps)
                        .map(|s| format!("<step type=\"SMS_TaskSequence_RunCommandLineAction\" name=\"Step {s}\"/>"))
                        .collect::<String>()
                );
                let sequence: String = sequence.chars().take(4000).collect();
                put!(
                    sink,
                    "v_TaskSequencePackage",
                    [
                        id.as_str(),
                        name.as_str(),
                        format!("{code}00004"),
                        2i64,
                        sequence
                    ]
                );
            }
            _ => {}
        }
        for server in servers.iter().filter(|s| s.has("SMS Distribution Point")) {
            if *kind != 4 && rng.random_bool(0.92) {
                put!(
                    sink,
                    "v_DistributionPoint",
                    [
                        id.as_str(),
                        server.nal_path(code),
                        code,
                        moment(rng, 900, 160)
                    ]
                );
            }
        }
        ids.push(id);
    }
    for server in servers.iter().filter(|s| s.has("SMS Distribution Point")) {
        put!(
            sink,
            "v_DistributionPointInfo",
            [
                server.fqdn.as_str(),
                server.nal_path(code),
                code,
                i64::from(rng.random_bool(0.4)),
                i64::from(rng.random_bool(0.2)),
                Option::<String>::None,
                Option::<i64>::None,
                "Microsoft Windows Server 2022 Standard",
            ]
        );
    }
    Ok(ids)
}

/// Deployments of applications, packages, update groups, baselines and task sequences,
/// with the applications' per-device state they summarise.
fn deployments(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    code: &str,
    resources: &[Resource],
    collections: &[CollectionDef],
    packages: &[String],
) -> Result<(), SiteDbError> {
    let machines: Vec<i64> = resources
        .iter()
        .filter(|r| r.client && !r.obsolete && !r.server)
        .map(|r| r.id)
        .collect();
    let clients = machines.len().max(1) as f64;
    let custom: Vec<&CollectionDef> = collections
        .iter()
        .filter(|c| !c.id.starts_with("SMS"))
        .collect();
    let all_clients = collections
        .iter()
        .find(|c| c.id == "SMSDM003")
        .ok_or(SiteDbError::UnknownTable("v_Collection"))?;
    let mut assignment = 16_777_220i64;
    let mut advert = 0;
    // Applications: each deployed to all clients or to one custom collection.
    for (n, (name, technologies, _)) in APPLICATIONS.iter().enumerate() {
        let ci = APP_CI + 10 * n as i64;
        let model = format!("ScopeId_{}/Application_{}", scope(code), guid(rng, true));
        for (t, technology) in technologies.iter().enumerate() {
            let dt = ci + 1 + t as i64;
            put!(
                sink,
                "v_ConfigurationItems",
                [
                    dt,
                    format!(
                        "ScopeId_{}/DeploymentType_{}/1",
                        scope(code),
                        guid(rng, true)
                    ),
                    21i64,
                    format!("ScopeId_{}/DeploymentType_{}", scope(code), guid(rng, true)),
                    1i64,
                    0i64,
                    1i64,
                    1i64,
                    moment(rng, 200, 700),
                    moment(rng, 900, 100),
                ]
            );
            put!(
                sink,
                "v_LocalizedCIProperties",
                [dt, 1033i64, format!("{name} - {technology}"), ""]
            );
            put!(sink, "v_CIRelation", [ci, dt, 9i64]);
        }
        let deployed = n != APPLICATIONS.len() - 1;
        put!(
            sink,
            "v_ConfigurationItems",
            [
                ci,
                format!("{model}/{}", rng.random_range(1..9)),
                10i64,
                model.as_str(),
                i64::from(deployed),
                i64::from(n == 5),
                1i64,
                1i64,
                moment(rng, 200, 700),
                moment(rng, 900, 100),
            ]
        );
        put!(sink, "v_LocalizedCIProperties", [ci, 1033i64, *name, ""]);
        put!(
            sink,
            "v_ApplicationModelInfo",
            [
                ci,
                model.as_str(),
                technologies[0],
                technologies.len() as i64
            ]
        );
        if !deployed {
            continue;
        }
        let target = if n % 3 == 0 {
            all_clients
        } else {
            custom[n % custom.len()]
        };
        let share = (target.members as f64 / clients).min(1.0);
        let mut counts = [0i64; 5];
        for &machine in &machines {
            if !rng.random_bool(share) {
                continue;
            }
            let enforcement = *pick(
                rng,
                &[
                    (1000i64, 80),
                    (2001, 5),
                    (3000, 5),
                    (5001, 3),
                    (5002, 2),
                    (5006, 1),
                    (4000, 4),
                ],
            );
            counts[match enforcement {
                1000..=1999 => 0,
                5000..=5999 => 1,
                2000..=2999 => 2,
                4000..=4999 => 3,
                _ => 4,
            }] += 1;
            put!(
                sink,
                "v_AppIntentAssetData",
                [
                    assignment,
                    ci,
                    machine,
                    Option::<String>::None,
                    if enforcement == 1000 { 1i64 } else { 2 },
                    enforcement,
                ]
            );
        }
        put!(
            sink,
            "v_DeploymentSummary",
            [
                assignment,
                *name,
                target.id.as_str(),
                target.name.as_str(),
                packages[PACKAGES.len() + n].as_str(),
                ci,
                1i64,
                if n % 2 == 0 { 1i64 } else { 2 },
                moment(rng, 800, 230),
                counts.iter().sum::<i64>(),
                counts[0],
                counts[1],
                counts[2],
                counts[3],
                counts[4],
            ]
        );
        assignment += 1;
    }
    // Software update groups.
    for (n, name) in ["2026-11 Patch Tuesday", "2026-10 Patch Tuesday"]
        .iter()
        .enumerate()
    {
        let ci = UPDATE_GROUP_CI + n as i64;
        put!(
            sink,
            "v_ConfigurationItems",
            [
                ci,
                format!("ScopeId_{}/AuthList_{}/1", scope(code), guid(rng, true)),
                9i64,
                format!("ScopeId_{}/AuthList_{}", scope(code), guid(rng, true)),
                1i64,
                0i64,
                1i64,
                1i64,
                moment(rng, 1000, 30),
                moment(rng, 1030, 20)
            ]
        );
        put!(sink, "v_LocalizedCIProperties", [ci, 1033i64, *name, ""]);
        for target in [all_clients, custom[1]] {
            summary(sink, rng, assignment, name, target, None, ci, 5)?;
            assignment += 1;
        }
    }
    // Packages with a program, and task sequences, deployed through advertisements.
    for (package, feature, target) in [
        (11usize, 2i64, custom[6 % custom.len()]),
        (9, 7, custom[3 % custom.len()]),
        (10, 7, custom[0]),
    ] {
        let name = PACKAGES[package].0;
        let id = packages[package].as_str();
        summary(sink, rng, assignment, name, target, Some(id), 0, feature)?;
        advert += 1;
        put!(
            sink,
            "v_Advertisement",
            [
                format!("{code}2{advert:04}"),
                format!("{name}_{}", target.name),
                id,
                target.id.as_str(),
                moment(rng, 900, 120),
            ]
        );
        assignment += 1;
    }
    // Configuration baselines deployed to all clients.
    for (n, (name, _)) in BASELINES.iter().enumerate() {
        summary(
            sink,
            rng,
            assignment,
            name,
            all_clients,
            None,
            BASELINE_CI + n as i64,
            6,
        )?;
        assignment += 1;
    }
    Ok(())
}

/// One deployment's summary, its counters drawn around a typical success rate.
#[allow(clippy::too_many_arguments)]
fn summary(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    assignment: i64,
    name: &str,
    target: &CollectionDef,
    package: Option<&str>,
    ci: i64,
    feature: i64,
) -> Result<(), SiteDbError> {
    let total = target.members;
    let failed = rng.random_range(0..=total / 10 + 1).min(total);
    let in_progress = rng.random_range(0..=total / 20 + 1).min(total - failed);
    let unknown = rng
        .random_range(0..=total / 20 + 1)
        .min(total - failed - in_progress);
    put!(
        sink,
        "v_DeploymentSummary",
        [
            assignment,
            name,
            target.id.as_str(),
            target.name.as_str(),
            package,
            (ci > 0).then_some(ci),
            feature,
            1i64,
            moment(rng, 800, 230),
            total,
            total - failed - in_progress - unknown,
            failed,
            in_progress,
            unknown,
            0i64,
        ]
    );
    Ok(())
}

/// The authoring scope of the site's configuration items, as their unique IDs embed it.
fn scope(code: &str) -> String {
    let n = code
        .bytes()
        .fold(0x6B1D_5CF1u32, |acc, b| acc.rotate_left(5) ^ u32::from(b));
    format!("{n:08X}-1F4E-4B6A-9C7B-{:012X}", u64::from(n) * 7919)
}

/// Configuration baselines: name, and the configuration items each one holds.
const BASELINES: &[(&str, &[&str])] = &[
    (
        "Security Baseline - Windows 11",
        &[
            "Firewall Enabled",
            "Defender Real-time Protection",
            "TLS 1.0 Disabled",
        ],
    ),
    ("BitLocker Compliance", &["BitLocker Required on OS Drive"]),
    ("Contoso Browser Settings", &["Contoso Proxy Setting"]),
];

/// Baselines and their configuration items, each device's compliance with them, the
/// remediations clients made, and the state names that label the states.
fn compliance(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    resources: &[Resource],
) -> Result<(), SiteDbError> {
    put!(sink, "v_CITypes", [1i64, "Software Update"]);
    put!(sink, "v_CITypes", [2i64, "Baseline"]);
    put!(sink, "v_CITypes", [3i64, "Configuration Item"]);
    put!(sink, "v_CITypes", [9i64, "Software Update Group"]);
    put!(sink, "v_CITypes", [10i64, "Application"]);
    put!(sink, "v_CITypes", [21i64, "Deployment Type"]);
    for (topic, states) in [
        (
            401i64,
            &[
                (0i64, "Compliance State Unknown"),
                (1, "Compliant"),
                (2, "Non-Compliant"),
                (3, "Conflict Detected"),
                (4, "Error"),
            ][..],
        ),
        (
            402,
            &[
                (0, "Enforcement state unknown"),
                (1, "Installing update(s)"),
                (2, "Waiting for restart"),
                (3, "Waiting for another installation to complete"),
                (4, "Successfully installed update(s)"),
                (5, "Pending system restart"),
                (6, "Failed to install update(s)"),
                (7, "Downloading update(s)"),
            ][..],
        ),
        (
            500,
            &[
                (0, "Compliance state unknown"),
                (1, "Compliant"),
                (2, "Non-compliant"),
                (3, "Conflict detected"),
            ][..],
        ),
    ] {
        for (state, name) in states {
            put!(sink, "v_StateNames", [topic, *state, *name]);
        }
    }
    let machines: Vec<i64> = resources
        .iter()
        .filter(|r| r.inventoried && !r.server)
        .map(|r| r.id)
        .collect();
    let mut setting = SETTING_CI;
    for (n, (name, settings)) in BASELINES.iter().enumerate() {
        let baseline = BASELINE_CI + n as i64;
        config_item(sink, rng, baseline, 2, name)?;
        let mut items = Vec::new();
        for item in *settings {
            config_item(sink, rng, setting, 3, item)?;
            put!(sink, "v_CIRelation", [baseline, setting, 2i64]);
            items.push(setting);
            setting += 1;
        }
        for &machine in &machines {
            let mut worst = 1i64;
            for &item in &items {
                let state = *pick(rng, &[(1i64, 84), (2, 12), (4, 3), (0, 1)]);
                worst = worst.max(state);
                put!(
                    sink,
                    "v_CICurrentComplianceStatus",
                    [
                        item,
                        machine,
                        state,
                        moment(rng, ACTIVITY_FIRST_DAY + ACTIVITY_DAYS - 7, 7)
                    ]
                );
                if state == 1 && rng.random_bool(0.04) {
                    put!(
                        sink,
                        "v_CIRemediationHistory",
                        [
                            item,
                            machine,
                            moment(rng, ACTIVITY_FIRST_DAY, ACTIVITY_DAYS)
                        ]
                    );
                }
            }
            put!(
                sink,
                "v_CICurrentComplianceStatus",
                [
                    baseline,
                    machine,
                    worst,
                    moment(rng, ACTIVITY_FIRST_DAY + ACTIVITY_DAYS - 7, 7)
                ]
            );
        }
    }
    Ok(())
}

/// One compliance-settings item (a baseline or a configuration item) and its name.
fn config_item(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    ci: i64,
    kind: i64,
    name: &str,
) -> Result<(), SiteDbError> {
    let prefix = if kind == 2 {
        "Baseline"
    } else {
        "OperatingSystem"
    };
    let model = format!("ScopeId_{}/{prefix}_{}", scope("CAS"), guid(rng, true));
    put!(
        sink,
        "v_ConfigurationItems",
        [
            ci,
            format!("{model}/{}", rng.random_range(1..6)),
            kind,
            model.as_str(),
            1i64,
            0i64,
            1i64,
            1i64,
            moment(rng, 300, 600),
            moment(rng, 900, 120),
        ]
    );
    put!(sink, "v_LocalizedCIProperties", [ci, 1033i64, name, ""]);
    Ok(())
}

/// Status messages of the activity weeks (server components, the provider, clients, and an
/// administrator's own scripts), software update point synchronisations, and the component
/// status summaries.
fn status(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    code: &str,
    servers: &[Server],
    resources: &[Resource],
) -> Result<(), SiteDbError> {
    let site_server = servers[0].fqdn.as_str();
    let sup = servers
        .iter()
        .find(|s| s.has("SMS Software Update Point"))
        .map_or(site_server, |s| s.fqdn.as_str());
    let clients: Vec<&Resource> = resources
        .iter()
        .filter(|r| r.inventoried && !r.server)
        .collect();
    let scale = 1 + clients.len() as i64 / 500;
    let mut record = 16_777_216i64;
    let base = time::macros::date!(2024 - 01 - 01);
    for day in 0..ACTIVITY_DAYS {
        let day_text = (base + time::Duration::days(ACTIVITY_FIRST_DAY + day)).to_string();
        let mut messages: Vec<(i64, &str, &str, i64, &str, i64)> = Vec::new();
        for (component, ids) in COMPONENTS {
            if *component == "SMS_MP_CONTROL_MANAGER" && !servers[0].has("SMS Management Point") {
                continue;
            }
            for _ in 0..scale * rng.random_range(3..40) {
                let severity = *pick(rng, &[(INFORMATIONAL, 85), (WARNING, 10), (ERROR, 5)]);
                messages.push((
                    rng.random_range(0..86_400),
                    component,
                    site_server,
                    ids[rng.random_range(0..ids.len())],
                    "SMS Server",
                    severity,
                ));
            }
        }
        for _ in 0..rng.random_range(1..8) {
            messages.push((
                rng.random_range(28_800..64_800),
                "Microsoft.ConfigurationManagement.exe",
                site_server,
                *pick(rng, &[(30_015i64, 3), (30_152, 2), (30_196, 1)]),
                "SMS Provider",
                INFORMATIONAL,
            ));
        }
        for _ in 0..(clients.len() / 20).max(1) {
            let Some(client) = clients.get(rng.random_range(0..clients.len().max(1))) else {
                break;
            };
            messages.push((
                rng.random_range(0..86_400),
                "SMS_CLIENT_CONFIG_MANAGER",
                client.name.as_str(),
                *pick(rng, &[(10_002i64, 3), (10_006, 1)]),
                "SMS Client",
                *pick(rng, &[(INFORMATIONAL, 7), (ERROR, 1)]),
            ));
        }
        for _ in 0..rng.random_range(0..3) {
            messages.push((
                rng.random_range(0..86_400),
                "Contoso Patch Wrapper",
                site_server,
                *pick(rng, &[(39_997i64, 1), (39_998, 1)]),
                "Contoso Scripts",
                INFORMATIONAL,
            ));
        }
        for _ in 0..rng.random_range(1..4) {
            let start = rng.random_range(0..80_000);
            let end = start + rng.random_range(180..2_700);
            messages.push((
                start,
                "SMS_WSUS_SYNC_MANAGER",
                sup,
                6701,
                "SMS Server",
                INFORMATIONAL,
            ));
            let ok = rng.random_bool(0.9);
            messages.push((
                end.min(86_399),
                "SMS_WSUS_SYNC_MANAGER",
                sup,
                if ok { 6702 } else { 6703 },
                "SMS Server",
                if ok { INFORMATIONAL } else { ERROR },
            ));
        }
        messages.sort_by_key(|m| m.0);
        for (second, component, machine, id, module, severity) in messages {
            put!(
                sink,
                "v_StatusMessage",
                [
                    record,
                    component,
                    machine,
                    id,
                    module,
                    severity,
                    code,
                    clock_at(&day_text, second),
                    0i64,
                ]
            );
            record += 1;
        }
    }
    for (component, _) in COMPONENTS.iter().chain(
        [
            ("SMS_EXECUTIVE", &[][..]),
            ("SMS_SITE_COMPONENT_MANAGER", &[][..]),
        ]
        .iter(),
    ) {
        let machines: Vec<&str> = if *component == "SMS_MP_CONTROL_MANAGER" {
            servers
                .iter()
                .filter(|s| s.has("SMS Management Point"))
                .map(|s| s.fqdn.as_str())
                .collect()
        } else {
            vec![site_server]
        };
        for machine in machines {
            let started = moment(rng, ACTIVITY_FIRST_DAY, ACTIVITY_DAYS);
            let running = rng.random_bool(0.95);
            for (n, interval) in TALLY_INTERVALS.iter().enumerate() {
                let scale = if n == 0 { 1 } else { 400 };
                let errors = scale * *pick(rng, &[(0i64, 80), (2, 12), (12, 8)]);
                let warnings = scale * rng.random_range(0..25i64);
                let status = if errors >= 10 * scale {
                    2i64
                } else if errors > 0 || warnings > 20 * scale {
                    1
                } else {
                    0
                };
                put!(
                    sink,
                    "v_ComponentSummarizer",
                    [
                        code,
                        machine,
                        *component,
                        "Autostarting",
                        status,
                        i64::from(running),
                        started.as_str(),
                        errors,
                        warnings,
                        scale * rng.random_range(20..400i64),
                        *interval,
                    ]
                );
            }
        }
    }
    Ok(())
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
    for table in schema::TABLES
        .iter()
        .filter(|t| t.seeded_in(Dialect::Sqlite))
    {
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
        let spec = schema::table(table).ok_or(SiteDbError::UnknownTable(table))?;
        if !spec.seeded_in(Dialect::Tsql) {
            // SQL Server answers its system views itself.
            return Ok(());
        }
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

/// The tables seeded into SQL Server: all but the stand-ins for its own system views.
fn tsql_tables() -> impl Iterator<Item = &'static schema::Table> {
    schema::TABLES.iter().filter(|t| t.seeded_in(Dialect::Tsql))
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
    // A real site database has views of these names, so any object of such a name counts.
    let names: Vec<String> = tsql_tables().map(|t| format!("'{}'", t.name)).collect();
    let clashing = db
        .batch(&format!(
            "SELECT name FROM sys.objects WHERE name IN ({})",
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
    for table in tsql_tables() {
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

/// Returns every identifying value stored in a seeded database (site codes and names,
/// computer, user, administrator and server names, addresses, e-mail, and the ids and
/// names that embed a site code or were typed by the site's administrators), so tests can
/// prove none leaves.
pub fn identifying_values(path: &Path) -> Result<Vec<String>, SiteDbError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut out = Vec::new();
    for sql in [
        "SELECT SiteCode FROM v_Site UNION ALL SELECT SiteName FROM v_Site
         UNION ALL SELECT ServerName FROM v_SystemResourceList",
        "SELECT Name0 FROM v_R_System UNION ALL SELECT User_Name0 FROM v_R_System
         UNION ALL SELECT IP_Addresses0 FROM v_RA_System_IPAddresses
         UNION ALL SELECT MAC_Addresses0 FROM v_RA_System_MACAddresses
         UNION ALL SELECT Mail0 FROM v_R_User UNION ALL SELECT Unique_User_Name0 FROM v_R_User
         UNION ALL SELECT Name FROM v_CombinedDeviceResources",
        // Names the administrators chose, and ids that embed the site code.
        "SELECT CollectionID FROM v_Collection WHERE CollectionID NOT LIKE 'SMS%'
         UNION ALL SELECT Name FROM v_Collection WHERE CollectionID NOT LIKE 'SMS%'
         UNION ALL SELECT PackageID FROM v_Package
         UNION ALL SELECT SoftwareName FROM v_DeploymentSummary WHERE SoftwareName LIKE 'Contoso%'
         UNION ALL SELECT DisplayName FROM v_LocalizedCIProperties WHERE DisplayName LIKE '%Contoso%'
         UNION ALL SELECT Value FROM v_BoundaryInfo UNION ALL SELECT DisplayName FROM v_BoundaryInfo
         UNION ALL SELECT LogonName FROM v_Admins
         UNION ALL SELECT RoleName FROM v_Roles WHERE IsBuiltIn = 0
         UNION ALL SELECT Name FROM v_Alert",
    ] {
        let mut stmt = conn.prepare(sql)?;
        let values = stmt.query_map([], |r| r.get::<_, Option<String>>(0))?;
        for value in values {
            out.extend(value?.filter(|v| !v.is_empty()));
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
                    (_, Value::Null) => true,
                    (Kind::Text(max), Value::Text(s)) => s.chars().count() <= usize::from(*max),
                    (Kind::DateTime, Value::Text(s)) => {
                        let format = time::macros::format_description!(
                            "[year]-[month]-[day]T[hour]:[minute]:[second]"
                        );
                        time::PrimitiveDateTime::parse(s, &format).is_ok()
                    }
                    (Kind::Int, Value::Int(_)) => true,
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
