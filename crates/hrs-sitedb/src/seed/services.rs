//! The site's administration tables and the database server's own state: server
//! components and discovery agents, BitLocker volumes and Endpoint Protection deployment,
//! boundaries, role-based administration, alerts, software metering, migration, content
//! distribution summaries, and the SQLite stand-ins for SQL Server's own views (server
//! properties, databases and their files, tables and their partitions, cached query
//! statistics, performance counters, Service Broker replication endpoints and queue, and
//! msdb's backup history).
//!
//! Identifying values (computer, user, server and site names, logons, addresses) are
//! included on purpose, as are customer-authored names (boundaries, alerts, custom roles,
//! metering rules, migration jobs): the catalog must prove it never lets them out below
//! Full.

use hrs_core::Value;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Sink, guid, nal_path, person, pick};
use crate::SiteDbError;

/// What the services need to know of the site seeded so far.
pub(super) struct Site<'a> {
    /// The site code, e.g. `P01`.
    pub code: &'a str,
    /// Whether this is the central administration site.
    pub is_cas: bool,
    /// Workstation resources the site has (`first_resource ..` on).
    pub clients: u32,
    /// The site's servers, FQDN upper case, the site server first; their resource ids
    /// follow the workstations' (`first_resource + clients + n`).
    pub servers: &'a [String],
    /// The first workstation's resource id; the others follow.
    pub first_resource: i64,
    /// Resource ids of the workstations with hardware inventory.
    pub inventoried: &'a [i64],
    /// The site's package ids.
    pub packages: &'a [String],
}

/// Puts one row into the sink, converting each value into the model's [`Value`].
macro_rules! put {
    ($sink:expr, $table:literal, [$($value:expr),* $(,)?]) => {
        $sink.row($table, vec![$(Value::from($value)),*])?
    };
}

type Written = Result<(), SiteDbError>;

/// Primary sites of the demo hierarchy, as a CAS sees them.
const PRIMARIES: [&str; 3] = ["P01", "P02", "P03"];

/// Writes every service table for `site`.
pub(super) fn generate(sink: &mut dyn Sink, rng: &mut ChaCha8Rng, site: &Site<'_>) -> Written {
    let ctx = Context::new(site);
    let agents = server_components(sink, rng, &ctx)?;
    agent_discoveries(sink, rng, &ctx, &agents)?;
    encryptable_volumes(sink, rng, &ctx)?;
    ep_deployment(sink, rng, &ctx)?;
    boundaries(sink, rng, &ctx)?;
    administration(sink, rng, &ctx)?;
    alerts(sink, rng, &ctx)?;
    metering(sink, rng, &ctx)?;
    migration(sink, rng, &ctx)?;
    package_status(sink, rng, &ctx)?;
    sql_server(sink, rng, &ctx)?;
    Ok(())
}

/// The site with what the tables below derive from it.
struct Context<'a> {
    site: &'a Site<'a>,
    /// The site server's FQDN.
    site_server: String,
    /// DNS domain of the servers, upper case (`CONTOSO.EXAMPLE`).
    domain: String,
    /// NetBIOS domain name (`CONTOSO`).
    netbios: String,
    /// Distribution points: at a primary every server but the site server, at a CAS the
    /// primaries'.
    dps: Vec<String>,
    /// The software update point (the second server), else the site server.
    sup: String,
    /// The site database's name (`CM_P01`).
    site_db: String,
}

impl<'a> Context<'a> {
    fn new(site: &'a Site<'a>) -> Self {
        let site_server = site
            .servers
            .first()
            .cloned()
            .unwrap_or_else(|| format!("{}-CM00.CONTOSO.EXAMPLE", site.code));
        let domain = site_server
            .split_once('.')
            .map_or("CONTOSO.EXAMPLE", |(_, d)| d)
            .to_owned();
        let netbios = domain.split('.').next().unwrap_or("CONTOSO").to_owned();
        // A primary's distribution points are its servers but the site server; a CAS has
        // none, its content sits on the primaries' servers.
        let dps = if site.is_cas {
            PRIMARIES
                .iter()
                .map(|p| format!("{p}-CM01.{domain}"))
                .collect()
        } else if site.servers.len() > 1 {
            site.servers[1..].to_vec()
        } else {
            vec![site_server.clone()]
        };
        let sup = site.servers.get(1).unwrap_or(&site_server).clone();
        Self {
            site,
            sup,
            site_server,
            domain,
            netbios,
            dps,
            site_db: format!("CM_{}", site.code),
        }
    }

    fn clients(&self) -> i64 {
        i64::from(self.site.clients)
    }

    /// Resource id of the `n`th server.
    fn server_resource(&self, n: usize) -> i64 {
        self.site.first_resource + self.clients() + n as i64
    }

    /// A site server of primary `code`, for the CAS's view of the hierarchy.
    fn primary_server(&self, code: &str, n: u32) -> String {
        format!("{code}-CM{n:02}.{}", self.domain)
    }
}

// ---------------------------------------------------------------------------------------
// Time.

const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// Seconds since 1970-01-01T00:00:00 of midnight on a date of the seeded years.
fn at(y: i64, m: i64, d: i64) -> i64 {
    let date = u8::try_from(m)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .and_then(|m| time::Date::from_calendar_date(y as i32, m, d as u8).ok())
        .unwrap_or(time::Date::MIN);
    date.midnight().assume_utc().unix_timestamp()
}

/// Renders seconds since the epoch as `YYYY-MM-DDTHH:MM:SS`.
fn stamp(t: i64) -> String {
    let (day, second) = (t.div_euclid(DAY), t.rem_euclid(DAY));
    let date = time::OffsetDateTime::UNIX_EPOCH.date() + time::Duration::days(day);
    super::clock_at(&date.to_string(), second)
}

/// The end of the seeded activity (2026-11-02 .. 2026-11-29), exclusive.
fn end() -> i64 {
    at(2026, 11, 30)
}

/// A random moment in `[from, to)`.
fn between(rng: &mut ChaCha8Rng, from: i64, to: i64) -> i64 {
    rng.random_range(from..to.max(from + 1))
}

// ---------------------------------------------------------------------------------------
// Server components and discovery.

/// Which discovery agents find this site's resources.
struct Agents {
    ad_system: bool,
    ad_group: bool,
    network: bool,
}

/// Components of every site server.
const SITE_SERVER_COMPONENTS: &[&str] = &[
    "SMS_ALERT_NOTIFICATION",
    "SMS_CERTIFICATE_MANAGER",
    "SMS_COMPONENT_STATUS_SUMMARIZER",
    "SMS_DATABASE_NOTIFICATION_MONITOR",
    "SMS_DESPOOLER",
    "SMS_DISCOVERY_DATA_MANAGER",
    "SMS_DISTRIBUTION_MANAGER",
    "SMS_EXECUTIVE",
    "SMS_HIERARCHY_MANAGER",
    "SMS_INBOX_MONITOR",
    "SMS_INVENTORY_DATA_LOADER",
    "SMS_LAN_SENDER",
    "SMS_NOTIFICATION_MANAGER",
    "SMS_OBJECT_REPLICATION_MANAGER",
    "SMS_OFFER_MANAGER",
    "SMS_PACKAGE_TRANSFER_MANAGER",
    "SMS_POLICY_PROVIDER",
    "SMS_REPLICATION_CONFIGURATION_MONITOR",
    "SMS_RULE_ENGINE",
    "SMS_SCHEDULER",
    "SMS_SITE_BACKUP",
    "SMS_SITE_COMPONENT_MANAGER",
    "SMS_SITE_CONTROL_MANAGER",
    "SMS_SITE_SYSTEM_STATUS_SUMMARIZER",
    "SMS_SITE_VSS_WRITER",
    "SMS_STATE_SYSTEM",
    "SMS_STATUS_MANAGER",
    "SMS_WSUS_CONFIGURATION_MANAGER",
    "SMS_WSUS_SYNC_MANAGER",
];
/// Components only a primary site server has: clients report to primaries, and the
/// site server is also the management point.
const PRIMARY_COMPONENTS: &[&str] = &[
    "SMS_CLIENT_CONFIG_MANAGER",
    "SMS_CLIENT_HEALTH",
    "SMS_INVENTORY_PROCESSOR",
    "SMS_MP_CONTROL_MANAGER",
    "SMS_MP_FILE_DISPATCH_MANAGER",
    "SMS_NOTIFICATION_SERVER",
    "SMS_OFFER_STATUS_SUMMARIZER",
    "SMS_SOFTWARE_INVENTORY_PROCESSOR",
    "SMS_SOFTWARE_METERING_PROCESSOR",
    "SMS_WINNT_SERVER_DISCOVERY_AGENT",
];

/// Writes `v_ServerComponents` and returns which discovery agents run.
fn server_components(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    ctx: &Context<'_>,
) -> Result<Agents, SiteDbError> {
    let code = ctx.site.code;
    let mut components: Vec<&str> = SITE_SERVER_COMPONENTS.to_vec();
    let agents = if ctx.site.is_cas {
        // A CAS runs forest discovery only; its resources come from the primaries.
        if rng.random_bool(0.6) {
            components.push("SMS_AD_FOREST_KNOWLEDGE_DISCOVERY_AGENT");
        }
        components.push("SMS_MIGRATION_MANAGER");
        Agents {
            ad_system: true,
            ad_group: rng.random_bool(0.5),
            network: false,
        }
    } else {
        components.extend_from_slice(PRIMARY_COMPONENTS);
        let agents = Agents {
            ad_system: rng.random_bool(0.95),
            ad_group: rng.random_bool(0.5),
            network: rng.random_bool(0.1),
        };
        for (present, component) in [
            (agents.ad_system, "SMS_AD_SYSTEM_DISCOVERY_AGENT"),
            (rng.random_bool(0.85), "SMS_AD_USER_DISCOVERY_AGENT"),
            (agents.ad_group, "SMS_AD_SECURITY_GROUP_DISCOVERY_AGENT"),
            (
                rng.random_bool(0.4),
                "SMS_AD_FOREST_KNOWLEDGE_DISCOVERY_AGENT",
            ),
            (agents.network, "SMS_NETWORK_DISCOVERY"),
        ] {
            if present {
                components.push(component);
            }
        }
        agents
    };
    components.sort_unstable();
    for component in components {
        let flags = *pick(rng, &[(6i64, 80), (2, 15), (0, 5)]);
        put!(
            sink,
            "v_ServerComponents",
            [code, ctx.site_server.as_str(), component, flags]
        );
    }
    // Remote site systems: the software update point (and at a CAS the reporting point,
    // then the service connection point) run components under their own executive.
    for (n, server) in ctx.site.servers.iter().enumerate().skip(1) {
        let mut remote = vec!["SMS_EXECUTIVE"];
        match (ctx.site.is_cas, n) {
            (_, 1) => remote.push("SMS_WSUS_CONTROL_MANAGER"),
            (true, 2) => remote.extend(["SMS_DMP_DOWNLOADER", "SMS_DMP_UPLOADER"]),
            _ => {}
        }
        if ctx.site.is_cas && n == 1 {
            remote.push("SMS_SRS_REPORTING_POINT");
        }
        for component in remote {
            put!(
                sink,
                "v_ServerComponents",
                [code, server.as_str(), component, 6i64]
            );
        }
    }
    Ok(agents)
}

/// Writes `v_AgentDiscoveries`: which discovery agents found each system and when.
///
/// The systems are those the core seed writes to `v_R_System`, in its order: the
/// workstations (all clients), the servers, then `clients / 30 + 1` systems discovered
/// without a client and `clients / 50` obsolete records.
fn agent_discoveries(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    ctx: &Context<'_>,
    agents: &Agents,
) -> Written {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Workstation,
        Server,
        NoClient,
        Obsolete,
    }
    let end = end();
    // Weekly full AD discovery, last run Sunday night; group discovery a week earlier.
    let full_system = at(2026, 11, 29) + 2 * HOUR;
    let full_group = at(2026, 11, 23) + 3 * HOUR;
    let clients = ctx.site.clients;
    let kinds = [
        (Kind::Workstation, clients),
        (Kind::Server, ctx.site.servers.len() as u32),
        (Kind::NoClient, clients / 30 + 1),
        (Kind::Obsolete, clients / 50),
    ];
    let mut id = ctx.site.first_resource;
    for (kind, count) in kinds {
        for _ in 0..count {
            let agent_site = if ctx.site.is_cas {
                *pick(
                    rng,
                    &[(PRIMARIES[0], 5), (PRIMARIES[1], 3), (PRIMARIES[2], 2)],
                )
            } else {
                ctx.site.code
            };
            let row = |sink: &mut dyn Sink, agent: &str, time: i64| {
                put!(
                    sink,
                    "v_AgentDiscoveries",
                    [id, agent, agent_site, stamp(time)]
                );
                Ok::<_, SiteDbError>(())
            };
            let joined = kind != Kind::Workstation || rng.random_bool(0.99);
            if joined {
                // When AD system discovery was since turned off, its records stay.
                let time = if !agents.ad_system {
                    between(rng, at(2025, 6, 1), at(2026, 6, 1))
                } else if kind == Kind::Obsolete {
                    between(rng, at(2025, 11, 1), at(2026, 6, 1))
                } else if rng.random_bool(0.8) {
                    full_system + rng.random_range(0..40 * MINUTE)
                } else {
                    between(rng, end - 7 * DAY, end)
                };
                row(sink, "SMS_AD_SYSTEM_DISCOVERY_AGENT", time)?;
            }
            if agents.ad_group && joined && kind != Kind::Obsolete && rng.random_bool(0.35) {
                row(
                    sink,
                    "SMS_AD_SYSTEM_GROUP_DISCOVERY_AGENT",
                    full_group + rng.random_range(0..20 * MINUTE),
                )?;
            }
            if kind != Kind::NoClient {
                // Heartbeats: most in the last two weeks, some clients long silent.
                let heartbeat = if kind == Kind::Obsolete {
                    between(rng, at(2025, 11, 1), at(2026, 6, 1))
                } else if rng.random_bool(0.88) {
                    between(rng, end - 14 * DAY, end)
                } else {
                    between(rng, at(2026, 3, 10), at(2026, 11, 2))
                };
                row(sink, "Heartbeat Discovery", heartbeat)?;
                let registered = between(rng, at(2023, 1, 9), heartbeat - DAY);
                row(sink, "MP_ClientRegistration", registered)?;
            }
            if kind == Kind::Server {
                row(
                    sink,
                    "SMS_WINNT_SERVER_DISCOVERY_AGENT",
                    between(rng, end - 2 * DAY, end),
                )?;
            }
            if agents.network && kind != Kind::Obsolete && rng.random_bool(0.1) {
                row(
                    sink,
                    "SMS_NETWORK_DISCOVERY",
                    between(rng, end - 30 * DAY, end),
                )?;
            }
            id += 1;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Client security state.

/// Writes `v_GS_ENCRYPTABLE_VOLUME`: the OS volume of every inventoried workstation, a
/// data volume on some, and a volume without a drive letter on a few.
fn encryptable_volumes(sink: &mut dyn Sink, rng: &mut ChaCha8Rng, ctx: &Context<'_>) -> Written {
    for &id in ctx.site.inventoried {
        let mut volumes: Vec<(Option<&str>, i64)> =
            vec![(Some("C:"), *pick(rng, &[(1i64, 82), (0, 13), (2, 5)]))];
        if rng.random_bool(0.15) {
            volumes.push((Some("D:"), *pick(rng, &[(1i64, 55), (0, 45)])));
        }
        if rng.random_bool(0.08) {
            volumes.push((None, 0));
        }
        for (group, (letter, status)) in volumes.into_iter().enumerate() {
            put!(
                sink,
                "v_GS_ENCRYPTABLE_VOLUME",
                [
                    id,
                    group as i64 + 1,
                    format!(r"\\?\Volume{{{}}}\", guid(rng, false)),
                    letter,
                    status,
                ]
            );
        }
    }
    Ok(())
}

/// Writes `v_GS_EPDeploymentState`: 1 unmanaged, 2 to be installed, 3 managed, 4 failed,
/// 5 reboot pending, for every client (inventoried workstations and the servers).
fn ep_deployment(sink: &mut dyn Sink, rng: &mut ChaCha8Rng, ctx: &Context<'_>) -> Written {
    for &id in ctx.site.inventoried {
        let state = *pick(rng, &[(3i64, 91), (1, 3), (2, 2), (4, 2), (5, 2)]);
        put!(sink, "v_GS_EPDeploymentState", [id, state]);
    }
    for n in 0..ctx.site.servers.len() {
        let state = *pick(rng, &[(3i64, 70), (1, 30)]);
        put!(
            sink,
            "v_GS_EPDeploymentState",
            [ctx.server_resource(n), state]
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Boundaries.

/// AD sites the core seed puts clients in, with the city the customer calls each.
const AD_SITES: &[(&str, &str)] = &[
    ("Contoso-FRA", "Frankfurt"),
    ("Contoso-NYC", "New York"),
    ("Contoso-TYO", "Tokyo"),
];
const SUBNET_USES: &[&str] = &[
    "Floor 1",
    "Floor 2",
    "Floor 3",
    "Wi-Fi",
    "Printers",
    "Lab",
    "Meeting rooms",
];

/// The second octet of a site's client addresses, as the core seed numbers them
/// (`10.<64 + mix % 100>.<n / 250>.<1 + n % 250>`, servers in `.240.`).
fn address_octet(code: &str) -> u64 {
    let mix = code.bytes().fold(0u64, |acc, b| {
        acc.wrapping_mul(131).wrapping_add(u64::from(b))
    });
    64 + mix % 100
}

/// Writes `v_BoundaryInfo` and `v_BoundarySiteSystems`: the AD sites, the /24 subnets
/// and DHCP ranges the clients' addresses fall in, the servers' subnet, and on some sites
/// an IPv6 prefix and a VPN boundary (BoundaryType 0 subnet, 1 AD site, 2 IPv6 prefix,
/// 3 range, 4 VPN).
fn boundaries(sink: &mut dyn Sink, rng: &mut ChaCha8Rng, ctx: &Context<'_>) -> Written {
    // Boundaries are global data: the CAS sees every primary's.
    let sites: Vec<(&str, i64, Vec<String>)> = if ctx.site.is_cas {
        PRIMARIES
            .iter()
            .map(|p| {
                let servers = vec![ctx.primary_server(p, 0), ctx.primary_server(p, 1)];
                (*p, ctx.clients() / 3, servers)
            })
            .collect()
    } else {
        let mut systems = ctx.dps.clone();
        if !systems.contains(&ctx.site_server) {
            systems.push(ctx.site_server.clone());
        }
        vec![(ctx.site.code, ctx.clients(), systems)]
    };
    let mut id = 16_777_216i64;
    for (site_code, clients, systems) in &sites {
        let octet = address_octet(site_code);
        // Type, value, display name, flags (0 fast, 1 slow).
        let mut rows: Vec<(i64, String, String, i64)> = Vec::new();
        for (ad_site, city) in AD_SITES {
            rows.push((1, (*ad_site).to_owned(), format!("{city} AD site"), 0));
        }
        // One /24 per 250 clients: the first ones as subnets, the rest as ranges of four.
        let blocks = *clients / 250 + 1;
        let subnets = blocks.min(24);
        for i in 0..subnets {
            let (_, city) = AD_SITES[i as usize % AD_SITES.len()];
            let usage = SUBNET_USES[rng.random_range(0..SUBNET_USES.len())];
            rows.push((
                0,
                format!("10.{octet}.{i}.0"),
                format!("{city} - {usage}"),
                0,
            ));
        }
        let mut a = subnets;
        while a < blocks && a < 24 + 4 * 15 {
            let (_, city) = AD_SITES[a as usize % AD_SITES.len()];
            rows.push((
                3,
                format!("10.{octet}.{a}.1-10.{octet}.{}.254", a + 3),
                format!("{city} - DHCP scope {}", (a - subnets) / 4 + 1),
                *pick(rng, &[(0i64, 3), (1, 1)]),
            ));
            a += 4;
        }
        rows.push((
            0,
            format!("10.{octet}.240.0"),
            "Datacenter - Servers".to_owned(),
            0,
        ));
        rows.push((
            3,
            format!("10.{octet}.250.1-10.{octet}.251.254"),
            "VPN address pool".to_owned(),
            1,
        ));
        if rng.random_bool(0.4) {
            rows.push((
                2,
                format!(
                    "FD00:{octet:04X}:{:04X}:0000",
                    rng.random_range(1..0x100u32)
                ),
                "Frankfurt - IPv6".to_owned(),
                0,
            ));
        }
        if rng.random_bool(0.4) {
            rows.push((
                4,
                "Auto:On".to_owned(),
                "Always On VPN clients".to_owned(),
                1,
            ));
        }
        for (kind, value, display, flags) in rows {
            id += 1;
            let groups = *pick(rng, &[(1i64, 75), (2, 15), (0, 10)]);
            let assigned = (groups > 0 && rng.random_bool(0.9)).then_some(*site_code);
            put!(
                sink,
                "v_BoundaryInfo",
                [id, kind, value, display, assigned, flags, groups]
            );
            if groups > 0 {
                let first = rng.random_range(0..systems.len());
                let count = if systems.len() > 1 && rng.random_bool(0.3) {
                    2
                } else {
                    1
                };
                for k in 0..count {
                    let server = &systems[(first + k) % systems.len()];
                    put!(
                        sink,
                        "v_BoundarySiteSystems",
                        [id, nal_path(server, site_code), server.as_str(), *site_code]
                    );
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Role-based administration.

/// The built-in security roles, with the ids the product gives them.
const BUILT_IN_ROLES: &[(&str, &str)] = &[
    ("SMS0001R", "Full Administrator"),
    ("SMS0002R", "Read-only Analyst"),
    ("SMS0003R", "Remote Tools Operator"),
    ("SMS0004R", "Asset Manager"),
    ("SMS0006R", "Compliance Settings Manager"),
    ("SMS0007R", "Application Deployment Manager"),
    ("SMS0008R", "Application Author"),
    ("SMS0009R", "Application Administrator"),
    ("SMS000AR", "Operating System Deployment Manager"),
    ("SMS000BR", "Infrastructure Administrator"),
    ("SMS000CR", "Software Update Manager"),
    ("SMS000ER", "Operations Administrator"),
    ("SMS000FR", "Security Administrator"),
    ("SMS000GR", "Endpoint Protection Manager"),
    ("SMS000HR", "Company Resource Access Manager"),
];
const CUSTOM_ROLES: &[&str] = &[
    "Contoso Helpdesk Tier 1",
    "Contoso Helpdesk Tier 2",
    "Contoso Packaging Team",
    "Contoso Server Patching",
];
/// How often users hold each built-in role (by index into `BUILT_IN_ROLES`).
const ROLE_WEIGHTS: &[(usize, u32)] = &[
    (0, 2),
    (1, 6),
    (2, 2),
    (3, 1),
    (4, 1),
    (5, 1),
    (6, 1),
    (7, 3),
    (8, 2),
    (9, 1),
    (10, 3),
    (11, 2),
    (12, 1),
    (13, 1),
];

/// Writes `v_Admins`, `v_Roles` and `v_SecuredScopePermissions`.
fn administration(sink: &mut dyn Sink, rng: &mut ChaCha8Rng, ctx: &Context<'_>) -> Written {
    let code = ctx.site.code;
    for (id, name) in BUILT_IN_ROLES {
        put!(sink, "v_Roles", [*id, *name, 1i64]);
    }
    let custom_roles: Vec<String> = (0..rng.random_range(2..=CUSTOM_ROLES.len()))
        .map(|n| {
            let id = format!("{code}{:05}", n + 1);
            put!(sink, "v_Roles", [id.as_str(), CUSTOM_ROLES[n], 0i64]);
            Ok(id)
        })
        .collect::<Result<_, SiteDbError>>()?;
    let custom_scopes: Vec<String> = (0..rng.random_range(2..5))
        .map(|n| format!("{code}{:05}", 10 + n))
        .collect();

    let mut admin_id = 16_777_216i64;
    let mut admin = |sink: &mut dyn Sink, logon: String, display: String, group: bool| {
        admin_id += 1;
        put!(
            sink,
            "v_Admins",
            [admin_id, logon, display, i64::from(group)]
        );
        Ok::<_, SiteDbError>(admin_id)
    };
    let netbios = ctx.netbios.as_str();
    // The group of site administrators holds every permission on every scope.
    let admins = admin(
        sink,
        format!("{netbios}\\CM Admins"),
        "CM Admins".into(),
        true,
    )?;
    put!(
        sink,
        "v_SecuredScopePermissions",
        [admins, "SMS0001R", "SMS00ALL"]
    );
    put!(
        sink,
        "v_SecuredScopePermissions",
        [admins, "SMS0001R", "SMS00UNA"]
    );
    let helpdesk = admin(
        sink,
        format!("{netbios}\\CM Helpdesk"),
        "CM Helpdesk".into(),
        true,
    )?;
    for scope in custom_scopes.iter().take(2) {
        put!(
            sink,
            "v_SecuredScopePermissions",
            [helpdesk, custom_roles[0].as_str(), scope.as_str()]
        );
    }
    if rng.random_bool(0.6) {
        let packaging = admin(
            sink,
            format!("{netbios}\\CM Packaging"),
            "CM Packaging".into(),
            true,
        )?;
        put!(
            sink,
            "v_SecuredScopePermissions",
            [packaging, "SMS0008R", "SMS00UNA"]
        );
        put!(
            sink,
            "v_SecuredScopePermissions",
            [packaging, custom_roles[1].as_str(), "SMS00UNA"]
        );
    }
    let users = 3 + (ctx.clients() / 1500).min(22) + rng.random_range(0..3);
    for _ in 0..users {
        let (logon, display) = person(rng);
        let id = admin(sink, format!("{netbios}\\{logon}"), display, false)?;
        let mut roles: Vec<String> = Vec::new();
        for _ in 0..if rng.random_bool(0.3) { 2 } else { 1 } {
            let role = if rng.random_bool(0.2) {
                custom_roles[rng.random_range(0..custom_roles.len())].clone()
            } else {
                BUILT_IN_ROLES[*pick(rng, ROLE_WEIGHTS)].0.to_owned()
            };
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        for role in roles {
            if role == "SMS0001R" {
                put!(
                    sink,
                    "v_SecuredScopePermissions",
                    [id, role.as_str(), "SMS00ALL"]
                );
                continue;
            }
            let mut scopes = vec!["SMS00UNA"];
            for scope in &custom_scopes {
                if rng.random_bool(0.35) {
                    scopes.push(scope.as_str());
                }
            }
            if scopes.len() > 1 && rng.random_bool(0.4) {
                scopes.remove(0);
            }
            for scope in scopes {
                put!(
                    sink,
                    "v_SecuredScopePermissions",
                    [id, role.as_str(), scope]
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Alerts.

/// Writes `v_Alert`: general alerts the administrators configured (Severity 1 error,
/// 2 warning, 3 informational; AlertState 0 active .. 5 never triggered).
fn alerts(sink: &mut dyn Sink, rng: &mut ChaCha8Rng, ctx: &Context<'_>) -> Written {
    let code = ctx.site.code;
    let dp = &ctx.dps[rng.random_range(0..ctx.dps.len())];
    let mut alerts: Vec<(i64, i64, String)> = vec![
        (
            1,
            1,
            format!("Low free space alert for database on site: {code}"),
        ),
        (
            2,
            2,
            format!("Database free space is below 20 GB on site: {code}"),
        ),
        (
            10,
            1,
            format!(
                "Synchronization failure alert for software update point: {}",
                ctx.sup
            ),
        ),
        (
            11,
            2,
            "Software update group compliance below 90 percent: 2026-11 Patch Tuesday".to_owned(),
        ),
        (
            20,
            2,
            format!("Distribution point content validation failed on: {dp}"),
        ),
        (
            30,
            3,
            "Collection member count exceeds 5000: Laptops - Finance".to_owned(),
        ),
        (
            31,
            3,
            "Maintenance window count exceeds threshold: Servers - Patch Group A".to_owned(),
        ),
    ];
    if ctx.site.is_cas {
        for p in PRIMARIES {
            alerts.push((3, 1, format!("Replication link has failed: {code} - {p}")));
        }
    } else {
        alerts.push((3, 1, format!("Replication link has failed: CAS - {code}")));
        alerts.push((
            40,
            2,
            format!(
                "Management point health below threshold on: {}",
                ctx.site_server
            ),
        ));
    }
    for (n, (type_id, severity, name)) in alerts.into_iter().enumerate() {
        let state = *pick(rng, &[(0i64, 2), (1, 1), (2, 1), (3, 1), (4, 1), (5, 6)]);
        let occurrences = match state {
            5 => 0,
            4 => rng.random_range(0..3i64),
            _ => rng.random_range(1..40i64),
        };
        let created = between(rng, at(2024, 2, 1), at(2026, 10, 1));
        put!(
            sink,
            "v_Alert",
            [
                16_777_217 + n as i64,
                name,
                type_id,
                severity,
                state,
                occurrences,
                stamp(created),
            ]
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Software metering.

/// Metering rules: product, file, share of workstations running it in a month, enabled.
const METERED: &[(&str, &str, f64, f64)] = &[
    ("Microsoft Visio", "VISIO.EXE", 0.08, 0.9),
    ("Microsoft Project", "WINPROJ.EXE", 0.04, 0.8),
    ("Adobe Acrobat", "Acrobat.exe", 0.30, 0.8),
    ("AutoCAD", "acad.exe", 0.02, 0.6),
    ("SAP GUI for Windows", "saplogon.exe", 0.12, 0.7),
    ("Contoso Expense Client", "ContosoExpense.exe", 0.25, 0.9),
];

/// Writes `v_MeteredProductRule`, `v_MeteredFiles` and `v_MonthlyUsageSummary` (usage of
/// the enabled rules' files per workstation for October and November 2026).
fn metering(sink: &mut dyn Sink, rng: &mut ChaCha8Rng, ctx: &Context<'_>) -> Written {
    let mut enabled_files: Vec<(i64, f64)> = Vec::new();
    for (n, (product, file, share, enabled)) in METERED.iter().enumerate() {
        let rule = n as i64 + 1;
        let on = rng.random_bool(*enabled);
        put!(
            sink,
            "v_MeteredProductRule",
            [
                rule,
                *product,
                *file,
                format!("{}{:05}", ctx.site.code, rule),
                i64::from(on),
            ]
        );
        let file_id = 100 + rule;
        put!(sink, "v_MeteredFiles", [file_id, rule, 1_000 + rule]);
        if on {
            enabled_files.push((file_id, *share));
        }
    }
    for &id in ctx.site.inventoried {
        for month in [202_610i64, 202_611] {
            for &(file_id, share) in &enabled_files {
                if rng.random_bool(share) {
                    let count = rng.random_range(1..60i64);
                    let minutes = count * rng.random_range(3..90i64);
                    put!(
                        sink,
                        "v_MonthlyUsageSummary",
                        [file_id, id, month, count, minutes]
                    );
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Migration.

/// Writes `v_MIG_Job` and `v_MIG_JobEntity`: a few jobs migrating objects from an older
/// hierarchy (JobType 1 collection, 2 object, 3 objects modified after migration).
fn migration(sink: &mut dyn Sink, rng: &mut ChaCha8Rng, ctx: &Context<'_>) -> Written {
    let jobs: &[(&str, i64)] = if ctx.site.is_cas {
        &[
            ("Collections from SCCM 2012 hierarchy", 1),
            ("Applications wave 1", 2),
            ("Packages and task sequences", 2),
            ("Objects modified after migration", 3),
        ]
    } else {
        &[("Collections - Finance", 1), ("Legacy packages", 2)]
    };
    let mut entity = 16_777_300i64;
    for (n, (name, job_type)) in jobs.iter().enumerate() {
        let job = n as i64 + 1;
        let status = *pick(rng, &[(4i64, 6), (5, 2), (3, 1), (6, 1)]);
        let last_run = between(rng, at(2025, 3, 1), at(2026, 11, 1));
        put!(
            sink,
            "v_MIG_Job",
            [job, *name, *job_type, status, stamp(last_run)]
        );
        for _ in 0..rng.random_range(5..40) {
            entity += rng.random_range(1..9);
            let state = *pick(rng, &[(4i64, 90), (5, 7), (3, 3)]);
            put!(sink, "v_MIG_JobEntity", [job, entity, state]);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Content.

/// Writes `v_PackageStatusDetailSumm`: per package (and, at a CAS, per primary) how many
/// distribution points are targeted and how many hold it, retry, or failed.
fn package_status(sink: &mut dyn Sink, rng: &mut ChaCha8Rng, ctx: &Context<'_>) -> Written {
    let targets: Vec<(&str, i64)> = if ctx.site.is_cas {
        PRIMARIES.iter().map(|p| (*p, 2)).collect()
    } else {
        vec![(ctx.site.code, ctx.dps.len() as i64)]
    };
    for package in ctx.site.packages {
        for &(site_code, dps) in &targets {
            let failed = (*pick(rng, &[(0i64, 85), (1, 12), (2, 3)])).min(dps);
            let retrying = (*pick(rng, &[(0i64, 90), (1, 10)])).min(dps - failed);
            put!(
                sink,
                "v_PackageStatusDetailSumm",
                [
                    package.as_str(),
                    site_code,
                    dps,
                    dps - failed - retrying,
                    retrying,
                    failed
                ]
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// SQL Server's own views (SQLite stand-ins).

/// A site-database table: name, fixed rows, rows per client, bytes per row, nonclustered
/// indexes, whether it is a heap.
type TableSpec = (&'static str, f64, f64, u32, u8, bool);

const SITE_TABLES: &[TableSpec] = &[
    ("System_DISC", 12.0, 1.04, 1_400, 4, false),
    ("System_IP_Address_ARR", 20.0, 2.6, 70, 1, false),
    ("System_MAC_Addresses_ARR", 15.0, 1.9, 70, 1, false),
    ("System_System_OU_Name_ARR", 30.0, 4.2, 180, 1, false),
    ("User_DISC", 40.0, 1.3, 1_100, 3, false),
    ("User_Group_DISC", 200.0, 0.3, 900, 2, false),
    ("Operating_System_DATA", 0.0, 1.0, 900, 1, false),
    ("Operating_System_HIST", 0.0, 3.5, 900, 1, false),
    ("PROCESSOR_DATA", 0.0, 1.05, 500, 1, false),
    ("PROCESSOR_HIST", 0.0, 2.2, 500, 1, false),
    ("PC_Memory_DATA", 0.0, 1.0, 120, 0, false),
    ("Computer_System_DATA", 0.0, 1.0, 600, 1, false),
    ("System_Enclosure_DATA", 0.0, 1.03, 300, 1, false),
    ("ENCRYPTABLE_VOLUME_DATA", 0.0, 1.2, 250, 1, false),
    ("Add_Remove_Programs_DATA", 0.0, 85.0, 420, 2, false),
    ("Add_Remove_Programs_64_DATA", 0.0, 110.0, 420, 2, false),
    ("INSTALLED_SOFTWARE_DATA", 0.0, 160.0, 650, 2, false),
    ("WorkstationStatus_DATA", 0.0, 1.0, 90, 0, false),
    ("SoftwareFile", 40_000.0, 25.0, 260, 3, false),
    ("SoftwareProduct", 6_000.0, 0.5, 300, 2, false),
    ("SoftwareInventory", 0.0, 240.0, 60, 2, false),
    ("HinvChangeLog", 0.0, 95.0, 70, 1, true),
    ("CI_ConfigurationItems", 30_000.0, 0.0, 1_800, 5, false),
    ("CI_ConfigurationItemRelations", 90_000.0, 0.0, 60, 2, false),
    ("CI_DocumentStore", 30_000.0, 0.0, 16_000, 0, false),
    ("CI_LocalizedProperties", 45_000.0, 0.0, 1_500, 1, false),
    ("CI_CurrentComplianceStatus", 0.0, 45.0, 80, 2, false),
    ("CI_AssignmentTargetedCIs", 8_000.0, 0.0, 40, 1, false),
    ("CI_CIAssignments", 120.0, 0.0, 2_500, 1, false),
    ("Update_ComplianceStatus", 0.0, 420.0, 64, 3, false),
    ("StatusMessages", 50_000.0, 150.0, 220, 3, false),
    ("StatusMessageAttributes", 150_000.0, 450.0, 90, 1, false),
    ("StatusMessageInsStrs", 200_000.0, 600.0, 160, 1, false),
    ("Collections_G", 150.0, 0.0, 3_000, 1, false),
    ("Collections_L", 150.0, 0.0, 400, 0, false),
    ("CollectionMembers", 0.0, 14.0, 200, 3, false),
];
/// A customer's hardware-inventory extension: its tables are named after their class.
const CUSTOM_TABLES: &[TableSpec] = &[
    ("CONTOSO_ASSETTAG_DATA", 0.0, 1.0, 150, 0, true),
    ("CONTOSO_ASSETTAG_HIST", 0.0, 2.0, 150, 0, true),
];
const SCHEMAS: &[(i64, &str)] = &[
    (1, "dbo"),
    (2, "guest"),
    (3, "INFORMATION_SCHEMA"),
    (4, "sys"),
    (16_384, "db_owner"),
    (16_385, "db_accessadmin"),
    (16_386, "db_securityadmin"),
    (16_387, "db_ddladmin"),
    (16_389, "db_backupoperator"),
    (16_390, "db_datareader"),
    (16_391, "db_datawriter"),
    (16_392, "db_denydatareader"),
    (16_393, "db_denydatawriter"),
];

/// Pads a performance-counter name the way SQL Server's nchar(128) columns do.
fn padded(s: &str) -> String {
    format!("{s:<128}")
}

/// Writes the SQL Server stand-ins.
fn sql_server(sink: &mut dyn Sink, rng: &mut ChaCha8Rng, ctx: &Context<'_>) -> Written {
    let clients = ctx.clients();
    let (version, level) = *pick(
        rng,
        &[(("15.0.4375.4", 150i64), 6), (("16.0.4125.3", 160), 4)],
    );
    let level = if level == 160 && rng.random_bool(0.3) {
        150
    } else {
        level
    };
    let edition = if clients > 5_000 {
        *pick(
            rng,
            &[
                ("Enterprise Edition: Core-based Licensing (64-bit)", 6),
                ("Standard Edition (64-bit)", 4),
            ],
        )
    } else {
        *pick(
            rng,
            &[
                ("Standard Edition (64-bit)", 7),
                ("Enterprise Edition: Core-based Licensing (64-bit)", 2),
                ("Enterprise Edition (64-bit)", 1),
            ],
        )
    };
    put!(sink, "sys_serverproperty", [version, edition]);

    // Databases: the system ones, the site database, and WSUS's and Reporting Services'
    // when they share the instance.
    let site_db = ctx.site_db.as_str();
    let susdb = !ctx.site.is_cas && rng.random_bool(0.6);
    let reporting = rng.random_bool(0.5);
    let mut databases: Vec<&str> = vec!["master", "tempdb", "model", "msdb", site_db];
    if susdb {
        databases.push("SUSDB");
    }
    if reporting {
        databases.extend(["ReportServer", "ReportServerTempDB"]);
    }
    let site_db_id = 5i64;
    for (n, name) in databases.iter().enumerate() {
        put!(
            sink,
            "sys_databases",
            [n as i64 + 1, *name, "SQL_Latin1_General_CP1_CI_AS", level]
        );
    }

    // The site database's files, in 8-KB pages: about 2 GB plus 6 MB per client.
    let data_mb = (2_048 + clients * 6) * rng.random_range(85..115i64) / 100;
    let log_mb = data_mb * rng.random_range(20..45i64) / 100;
    let data_files = 1 + (clients / 5_000).min(3);
    put!(
        sink,
        "sys_database_files",
        [1i64, 0i64, site_db, data_mb * 128 / data_files]
    );
    put!(
        sink,
        "sys_database_files",
        [2i64, 1i64, format!("{site_db}_log"), log_mb * 128]
    );
    for n in 1..data_files {
        put!(
            sink,
            "sys_database_files",
            [
                n + 2,
                0i64,
                format!("{site_db}_{n}"),
                data_mb * 128 / data_files
            ]
        );
    }

    tables(sink, rng, ctx)?;
    query_stats(sink, rng, ctx, site_db_id, susdb, reporting)?;
    performance_counters(sink, rng, ctx, data_mb, log_mb)?;
    service_broker(sink, rng, ctx)?;
    backups(sink, rng, ctx, data_mb, susdb)?;
    Ok(())
}

/// Writes `sys_schemas`, `sys_tables` and `sys_dm_db_partition_stats`.
fn tables(sink: &mut dyn Sink, rng: &mut ChaCha8Rng, ctx: &Context<'_>) -> Written {
    for (id, name) in SCHEMAS {
        put!(sink, "sys_schemas", [*id, *name]);
    }
    let clients = ctx.clients() as f64;
    let packages = ctx.site.packages.len() as f64;
    let dps = ctx.dps.len() as f64;
    let mut specs: Vec<TableSpec> = SITE_TABLES.to_vec();
    specs.push(("SMSPackages_G", packages, 0.0, 2_500, 1, false));
    specs.push((
        "PkgStatus",
        packages * (dps + 1.0) * 2.0,
        0.0,
        300,
        2,
        false,
    ));
    if rng.random_bool(0.5) {
        specs.extend_from_slice(CUSTOM_TABLES);
    }
    let mut object_id = rng.random_range(1_000_000..5_000_000i64);
    for (name, fixed, per_client, bytes, nonclustered, heap) in specs {
        object_id += rng.random_range(100_000..40_000_000i64);
        put!(sink, "sys_tables", [object_id, 1i64, name]);
        let spread = f64::from(rng.random_range(85..115u32)) / 100.0;
        let rows = ((fixed + per_client * clients) * spread).round() as i64;
        // Rows plus page overhead (fill factor, page headers), at least one page.
        let pages = (rows * i64::from(bytes) * 13 / 10 / 8_192).max(1) + 1;
        put!(
            sink,
            "sys_dm_db_partition_stats",
            [object_id, if heap { 0i64 } else { 1 }, rows, pages]
        );
        for index in 0..i64::from(nonclustered) {
            let key_pages = (rows * rng.random_range(24..80i64) * 13 / 10 / 8_192).max(1) + 1;
            put!(
                sink,
                "sys_dm_db_partition_stats",
                [object_id, index + 2, rows, key_pages]
            );
        }
    }
    Ok(())
}

/// A query hash as SQL Server prints it (`0x` and 16 hex digits).
fn query_hash(rng: &mut ChaCha8Rng) -> String {
    format!("0x{:016X}", rng.random::<u64>())
}

/// Writes `sys_dm_exec_query_stats`: cached statements of the site database (ConfigMgr's
/// own and administrators' ad-hoc ones, some with names as literals), of the other
/// databases on the instance, and ad-hoc batches with no database.
fn query_stats(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    ctx: &Context<'_>,
    site_db_id: i64,
    susdb: bool,
    reporting: bool,
) -> Written {
    let code = ctx.site.code;
    let clients = ctx.clients().max(1);
    let computer = |rng: &mut ChaCha8Rng| {
        let kind = if rng.random_bool(0.6) { "LT" } else { "WS" };
        format!("{code}-{kind}-{:05}", rng.random_range(1..=clients))
    };
    let (user, _) = person(rng);
    let dp = ctx.dps[rng.random_range(0..ctx.dps.len())].clone();
    // Statement, executions per client, average elapsed microseconds.
    let mut site: Vec<(String, f64, i64)> = vec![
        ("exec spGetChangeNotifications".to_owned(), 40.0, 900),
        ("exec spProcessStateMessages".to_owned(), 25.0, 4_500),
        ("(@P1 int)SELECT RecordID, Component, MessageID FROM vSMS_StatusMessage WHERE RecordID > @P1".to_owned(), 6.0, 12_000),
        ("(@P1 nvarchar(64))SELECT ItemKey FROM System_DISC WHERE Netbios_Name0 = @P1".to_owned(), 12.0, 350),
        ("(@P1 bigint,@P2 datetime)UPDATE System_DISC SET Last_Logon_Timestamp0 = @P2 WHERE ItemKey = @P1".to_owned(), 3.0, 800),
        ("MERGE Update_ComplianceStatus AS t USING #UpdateStatus AS s ON t.CI_ID = s.CI_ID AND t.MachineID = s.MachineID WHEN MATCHED THEN UPDATE SET t.Status = s.Status WHEN NOT MATCHED THEN INSERT (CI_ID, MachineID, Status) VALUES (s.CI_ID, s.MachineID, s.Status);".to_owned(), 4.0, 40_000),
        ("SELECT CI_ID, CI_UniqueID, CIVersion FROM CI_ConfigurationItems WHERE IsLatest = 1 AND IsExpired = 0".to_owned(), 0.5, 220_000),
        ("insert into #TempMembers (MachineID, ArchitectureKey) select all SMS_R_SYSTEM.ItemKey, SMS_R_SYSTEM.DiscArchKey from vSMS_R_System AS SMS_R_System where SMS_R_System.Client0 = 1".to_owned(), 0.2, 600_000),
        ("ALTER INDEX ALL ON dbo.Update_ComplianceStatus REORGANIZE".to_owned(), 0.0, 90_000_000),
        (format!("SELECT ResourceID, Netbios_Name0, User_Name0 FROM v_R_System WHERE Netbios_Name0 = N'{}'", computer(rng)), 0.0, 4_000),
        (format!("SELECT ResourceID FROM v_R_System WHERE Name0 LIKE N'{}%'", computer(rng)), 0.0, 9_000),
        (format!("SELECT CollectionID, MemberCount FROM v_Collection WHERE Name = N'{}'", *pick(rng, &[("Laptops - Finance", 1), ("Pilot Ring", 1), ("Servers - Patch Group A", 1)])), 0.0, 2_500),
        (format!("SELECT ResourceID, Mail0 FROM v_R_User WHERE User_Name0 = N'{user}'"), 0.0, 3_000),
        (format!("SELECT PackageID, LastRefreshTime FROM v_DistributionPoint WHERE ServerNALPath LIKE N'%{dp}%'"), 0.0, 15_000),
        (format!("SELECT ComponentName, Status, Errors FROM v_ComponentSummarizer WHERE SiteCode = N'{code}' AND MachineName = N'{}'", ctx.site_server), 0.0, 1_800),
    ];
    if ctx.site.is_cas {
        site.push(("exec spDRSSendChangesToSite".to_owned(), 30.0, 2_000));
    }
    for (text, per_client, micros) in site {
        let executions = if per_client > 0.0 {
            ((per_client * clients as f64) as i64).max(1) + rng.random_range(0..500i64)
        } else {
            rng.random_range(1..40i64)
        };
        let elapsed = executions * micros * rng.random_range(70..140i64) / 100;
        put!(
            sink,
            "sys_dm_exec_query_stats",
            [query_hash(rng), executions, elapsed, text, site_db_id]
        );
    }
    let mut other: Vec<(String, Option<i64>)> = vec![
        (
            format!(
                "SELECT MAX(backup_finish_date) FROM msdb.dbo.backupset WHERE database_name = N'{}' AND type = 'D'",
                ctx.site_db
            ),
            Some(4),
        ),
        (
            "exec msdb.dbo.sp_sqlagent_get_perf_counters".to_owned(),
            Some(4),
        ),
        (
            "SELECT name, state_desc FROM sys.databases".to_owned(),
            Some(1),
        ),
        ("SELECT @@VERSION".to_owned(), None),
        (
            "SET NOCOUNT ON; SELECT SERVERPROPERTY('ProductVersion')".to_owned(),
            None,
        ),
    ];
    if susdb {
        other.push((
            "(@P1 uniqueidentifier)SELECT RevisionID FROM tbRevision WHERE LocalUpdateID = (SELECT LocalUpdateID FROM tbUpdate WHERE UpdateID = @P1)".to_owned(),
            Some(6),
        ));
    }
    if reporting {
        other.push((
            format!(
                "SELECT ItemID, Path FROM Catalog WHERE Path = N'/ConfigMgr_{code}/Software Updates - A Compliance/Compliance 1 - Overall compliance'"
            ),
            Some(if susdb { 7 } else { 6 }),
        ));
    }
    for (text, dbid) in other {
        let executions = rng.random_range(5..5_000i64);
        let elapsed = executions * rng.random_range(200..50_000i64);
        put!(
            sink,
            "sys_dm_exec_query_stats",
            [query_hash(rng), executions, elapsed, text, dbid]
        );
    }
    Ok(())
}

/// Writes `sys_dm_os_performance_counters` as a default or named instance shows them.
fn performance_counters(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    ctx: &Context<'_>,
    data_mb: i64,
    log_mb: i64,
) -> Written {
    const RAW: i64 = 65_792;
    const BULK: i64 = 272_696_576;
    const FRACTION: i64 = 537_003_264;
    const BASE: i64 = 1_073_939_712;
    let clients = ctx.clients();
    let prefix = if rng.random_bool(0.8) {
        "SQLServer"
    } else {
        "MSSQL$CMSQL"
    };
    let uptime = rng.random_range(3..60i64) * DAY + rng.random_range(0..DAY);
    let per_sec =
        |rng: &mut ChaCha8Rng, rate: i64| uptime * rate * rng.random_range(60..140i64) / 100;
    let batch_rate = 40 + clients / 15;
    let hit_base = rng.random_range(2_000..8_000i64);
    let hit = hit_base * rng.random_range(970..1_000i64) / 1_000;
    let ple = rng.random_range(300..20_000i64);
    let memory_kb = (4 + (clients / 1_000).min(28) * 4) * 1_048_576;
    let lock_waits = per_sec(rng, 1 + clients / 2_000);
    let site_db = ctx.site_db.as_str();
    let counters: Vec<(&str, &str, &str, i64, i64)> = vec![
        (
            "Buffer Manager",
            "Buffer cache hit ratio",
            "",
            hit,
            FRACTION,
        ),
        (
            "Buffer Manager",
            "Buffer cache hit ratio base",
            "",
            hit_base,
            BASE,
        ),
        ("Buffer Manager", "Page life expectancy", "", ple, RAW),
        (
            "Buffer Manager",
            "Page reads/sec",
            "",
            per_sec(rng, 20 + clients / 50),
            BULK,
        ),
        ("Buffer Node", "Page life expectancy", "000", ple, RAW),
        (
            "General Statistics",
            "User Connections",
            "",
            40 + clients / 25 + rng.random_range(0..60i64),
            RAW,
        ),
        (
            "General Statistics",
            "Processes blocked",
            "",
            *pick(rng, &[(0i64, 8), (1, 1), (3, 1)]),
            RAW,
        ),
        (
            "SQL Statistics",
            "Batch Requests/sec",
            "",
            per_sec(rng, batch_rate),
            BULK,
        ),
        (
            "SQL Statistics",
            "SQL Compilations/sec",
            "",
            per_sec(rng, 1 + batch_rate / 10),
            BULK,
        ),
        (
            "SQL Statistics",
            "SQL Re-Compilations/sec",
            "",
            per_sec(rng, 1 + batch_rate / 100),
            BULK,
        ),
        ("Locks", "Lock Waits/sec", "_Total", lock_waits, BULK),
        ("Locks", "Lock Waits/sec", "Key", lock_waits * 6 / 10, BULK),
        ("Locks", "Lock Waits/sec", "Page", lock_waits * 3 / 10, BULK),
        ("Locks", "Lock Waits/sec", "Object", lock_waits / 10, BULK),
        (
            "Locks",
            "Number of Deadlocks/sec",
            "_Total",
            rng.random_range(0..40i64),
            BULK,
        ),
        (
            "Memory Manager",
            "Memory Grants Pending",
            "",
            *pick(rng, &[(0i64, 9), (1, 1)]),
            RAW,
        ),
        (
            "Memory Manager",
            "Target Server Memory (KB)",
            "",
            memory_kb,
            RAW,
        ),
        (
            "Memory Manager",
            "Total Server Memory (KB)",
            "",
            memory_kb * rng.random_range(80..100i64) / 100,
            RAW,
        ),
        (
            "Databases",
            "Data File(s) Size (KB)",
            site_db,
            data_mb * 1_024,
            RAW,
        ),
        (
            "Databases",
            "Log File(s) Size (KB)",
            site_db,
            log_mb * 1_024,
            RAW,
        ),
        (
            "Databases",
            "Transactions/sec",
            site_db,
            per_sec(rng, batch_rate / 2 + 1),
            BULK,
        ),
        (
            "Databases",
            "Data File(s) Size (KB)",
            "_Total",
            data_mb * 1_024 * 12 / 10,
            RAW,
        ),
    ];
    for (object, counter, instance, value, kind) in counters {
        put!(
            sink,
            "sys_dm_os_performance_counters",
            [
                padded(&format!("{prefix}:{object}")),
                padded(counter),
                padded(instance),
                value,
                kind,
            ]
        );
    }
    Ok(())
}

/// Writes `sys_conversation_endpoints` and `sys_transmission_queue`: the Service Broker
/// conversations database replication holds with its peers (a primary's CAS, a CAS's
/// primaries) and the messages waiting to be sent on 2026-11-29.
fn service_broker(sink: &mut dyn Sink, rng: &mut ChaCha8Rng, ctx: &Context<'_>) -> Written {
    let peers: usize = if ctx.site.is_cas { PRIMARIES.len() } else { 1 };
    let own = guid(rng, true);
    let day = at(2026, 11, 29);
    for _ in 0..peers {
        let peer = guid(rng, true);
        for _ in 0..2 {
            put!(
                sink,
                "sys_conversation_endpoints",
                ["ConfigMgrDRSSite", peer.as_str(), "CO"]
            );
        }
        if rng.random_bool(0.2) {
            let state = *pick(rng, &[("DI", 2), ("CD", 2), ("ER", 1), ("SO", 1)]);
            put!(
                sink,
                "sys_conversation_endpoints",
                ["ConfigMgrDRSSite", peer.as_str(), state]
            );
        }
        let backlog = match *pick(rng, &[(0u8, 5), (1, 4), (2, 1)]) {
            0 => 0,
            1 => rng.random_range(1..20i64),
            _ => rng.random_range(20..(200 + ctx.clients() / 100)),
        };
        let oldest = day + rng.random_range(0..20 * HOUR);
        for _ in 0..backlog {
            let time = between(rng, oldest, day + DAY);
            put!(
                sink,
                "sys_transmission_queue",
                ["ConfigMgrDRSSite", peer.as_str(), stamp(time)]
            );
        }
    }
    // Query notifications of the SMS Provider: a local service, not a replication peer.
    for _ in 0..rng.random_range(1..3) {
        put!(
            sink,
            "sys_conversation_endpoints",
            [
                format!("SqlQueryNotificationService-{}", guid(rng, false)),
                own.as_str(),
                "CO"
            ]
        );
    }
    Ok(())
}

/// Writes `msdb_backupset` for November 2026: the site database's weekly full backup
/// (Sundays), daily differentials, log backups every six hours when it runs in full
/// recovery, and the system databases' weekly full backups.
fn backups(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    ctx: &Context<'_>,
    data_mb: i64,
    susdb: bool,
) -> Written {
    let full_minutes = 5 + data_mb / 2_000;
    let logs = rng.random_bool(0.4);
    let site_db = ctx.site_db.as_str();
    for day in 1..=29 {
        let midnight = at(2026, 11, day);
        // 2026-11-01 is a Sunday.
        let sunday = (day - 1) % 7 == 0;
        if sunday {
            for db in ["master", "msdb"] {
                let finish = midnight + HOUR + rng.random_range(10..90i64);
                put!(sink, "msdb_backupset", [db, "D", stamp(finish)]);
            }
            if susdb {
                let finish = midnight + HOUR + rng.random_range(120..900i64);
                put!(sink, "msdb_backupset", ["SUSDB", "D", stamp(finish)]);
            }
            let finish = midnight + 2 * HOUR + full_minutes * MINUTE + rng.random_range(0..600i64);
            put!(sink, "msdb_backupset", [site_db, "D", stamp(finish)]);
        } else if rng.random_bool(0.95) {
            let finish =
                midnight + 2 * HOUR + full_minutes * MINUTE / 5 + rng.random_range(0..300i64);
            put!(sink, "msdb_backupset", [site_db, "I", stamp(finish)]);
        }
        if logs {
            for slot in 0..4 {
                let finish = midnight + slot * 6 * HOUR + 30 * MINUTE + rng.random_range(0..240i64);
                put!(sink, "msdb_backupset", [site_db, "L", stamp(finish)]);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_civil_times() {
        assert_eq!(
            stamp(at(2026, 11, 29) + 2 * HOUR + 61),
            "2026-11-29T02:01:01"
        );
        assert_eq!(stamp(at(2024, 2, 29)), "2024-02-29T00:00:00");
        assert_eq!(stamp(end() - 1), "2026-11-29T23:59:59");
        assert_eq!(stamp(at(2026, 1, 1) - 1), "2025-12-31T23:59:59");
    }

    #[test]
    fn nal_paths_are_written_as_configmgr_writes_them() {
        assert_eq!(
            nal_path("P01-CM01.CONTOSO.EXAMPLE", "P01"),
            r#"["Display=\\P01-CM01.CONTOSO.EXAMPLE\"]MSWNET:["SMS_SITE=P01"]\\P01-CM01.CONTOSO.EXAMPLE\"#
        );
    }
}
