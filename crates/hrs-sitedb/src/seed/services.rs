//! The site's management services: applications, cloud, co-management, compliance,
//! content, migration, MDM, OS deployment, site and software updates, SQL performance,
//! schema, security, boundaries, discovery, alerts, replication, metering and endpoint
//! protection. Each table feeds catalog queries of the category with the same name.

use hrs_core::Value;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Sink, date, pick};
use crate::SiteDbError;

/// What the services need to know of the site seeded so far.
pub(super) struct Site<'a> {
    /// The site code, e.g. `P01`.
    pub code: &'a str,
    /// Whether this is the central administration site.
    pub is_cas: bool,
    /// Clients the site manages.
    pub clients: u32,
    /// The site's servers, by name.
    pub servers: &'a [String],
    /// The first client's resource id; the others follow.
    pub first_resource: i64,
}

/// Puts one row into the sink.
macro_rules! put {
    ($sink:expr, $table:literal, [$($value:expr),* $(,)?]) => {
        $sink.row($table, vec![$(Value::from($value)),*])?
    };
}

/// Writes every service table for `site`.
pub(super) fn generate(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    site: &Site<'_>,
) -> Result<(), SiteDbError> {
    let clients = i64::from(site.clients);
    applications(sink, rng, clients)?;

    for (service, enabled, region) in [
        ("Cloud management gateway", 0.8, "West Europe"),
        ("Cloud distribution point", 0.3, "West Europe"),
        ("Tenant attach", 0.7, ""),
        ("Azure AD user discovery", 0.6, ""),
        ("Log Analytics connector", 0.2, "North Europe"),
    ] {
        let on = rng.random_bool(enabled);
        let instances = if on && !region.is_empty() {
            rng.random_range(1..4i64)
        } else {
            0
        };
        let transferred = if instances > 0 {
            f64::from(rng.random_range(10..5000u32)) / 4.0
        } else {
            0.0
        };
        put!(
            sink,
            "cloud_services",
            [service, on, region, instances, transferred]
        );
    }

    for workload in [
        "Compliance policies",
        "Device configuration",
        "Endpoint Protection",
        "Resource access policies",
        "Client apps",
        "Office Click-to-Run apps",
        "Windows Update policies",
    ] {
        let authority = *pick(
            rng,
            &[
                ("Configuration Manager", 5),
                ("Pilot Intune", 3),
                ("Intune", 2),
            ],
        );
        let pilot = if authority == "Pilot Intune" {
            rng.random_range(0..=clients / 5 + 1)
        } else {
            0
        };
        put!(sink, "comanagement_workloads", [workload, authority, pilot]);
    }

    for (ci_type, name) in [
        ("Baseline", "Security Baseline"),
        ("Baseline", "Office Hardening"),
        ("Setting", "Firewall enabled"),
        ("Setting", "Screen saver timeout"),
        ("Setting", "Local administrators"),
        ("Configuration Policy", "Certificate profile"),
    ] {
        let noncompliant = rng.random_range(0..=clients / 8 + 1);
        let errors = rng.random_range(0..=clients / 40 + 1);
        put!(
            sink,
            "configuration_items",
            [
                ci_type,
                name,
                (clients - noncompliant - errors).max(0),
                noncompliant,
                errors,
                rng.random_bool(0.4),
            ]
        );
    }

    let dps = site.servers.len().saturating_sub(1).max(1) as i64;
    for n in 0..(12 + rng.random_range(0..12)) {
        let kind = *pick(
            rng,
            &[
                ("Application", 40),
                ("Package", 20),
                ("Software Update Package", 20),
                ("Driver Package", 8),
                ("Boot Image", 6),
                ("Operating System Image", 6),
            ],
        );
        let size = f64::from(rng.random_range(5..40_000u32)) / 4.0;
        let failed = *pick(rng, &[(0i64, 85), (1, 12), (2, 3)]);
        put!(
            sink,
            "content_packages",
            [
                format!("{}{:05}", site.code, 100 + n),
                kind,
                size,
                rng.random_range(1..12i64),
                dps,
                failed.min(dps),
            ]
        );
    }

    if site.is_cas {
        for (job, state) in [
            ("Object migration", "Completed"),
            ("Collection migration", "Completed"),
            ("Objects modified after migration", "Failed"),
        ] {
            put!(
                sink,
                "migration_jobs",
                [
                    job,
                    state,
                    rng.random_range(10..500i64),
                    date(rng, 300, 200)
                ]
            );
        }
    }

    for (platform, ownership) in [
        ("Windows", "Corporate"),
        ("iOS", "Corporate"),
        ("iOS", "Personal"),
        ("Android", "Corporate"),
        ("Android", "Personal"),
    ] {
        put!(
            sink,
            "mdm_devices",
            [platform, ownership, rng.random_range(0..=clients / 15 + 1)]
        );
    }

    for (arch, version, pxe) in [
        ("x64", "10.0.26100.1", true),
        ("x64", "10.0.22621.1", false),
        ("x86", "10.0.22621.1", false),
    ] {
        put!(
            sink,
            "boot_images",
            [
                arch,
                version,
                pxe,
                f64::from(rng.random_range(1200..1900u32)) / 2.0,
                rng.random_bool(0.7),
            ]
        );
    }
    for (kind, steps) in [
        ("Operating system deployment", 64i64),
        ("Upgrade", 28),
        ("Custom", 12),
        ("Operating system deployment", 71),
    ] {
        let deployments = rng.random_range(0..4i64);
        let total = deployments * rng.random_range(0..=clients / 10 + 1);
        let failed = rng.random_range(0..=total / 8 + 1).min(total);
        put!(
            sink,
            "task_sequences",
            [kind, steps, deployments, total - failed, failed]
        );
    }

    for (name, kind, state, released) in [
        (
            "Configuration Manager 2403",
            "Version",
            "Installed",
            "2024-04-02",
        ),
        (
            "Configuration Manager 2409",
            "Version",
            "Installed",
            "2024-10-14",
        ),
        (
            "Configuration Manager 2503",
            "Version",
            "Ready to install",
            "2025-04-07",
        ),
        ("KB29166583", "Hotfix", "Installed", "2024-11-04"),
        ("KB30385346", "Hotfix", "Downloading", "2025-02-17"),
    ] {
        let state = if kind == "Hotfix" && rng.random_bool(0.1) {
            "Failed"
        } else {
            state
        };
        put!(sink, "site_updates", [name, kind, state, released]);
    }

    for day in 0..28 {
        let status = *pick(rng, &[("Succeeded", 25), ("Failed", 2), ("Cancelled", 1)]);
        let synced = if status == "Succeeded" {
            rng.random_range(0..400i64)
        } else {
            0
        };
        put!(
            sink,
            "sup_sync",
            [
                (time::macros::date!(2026 - 11 - 02) + time::Duration::days(day)).to_string(),
                status,
                synced,
                rng.random_range(2..90i64),
            ]
        );
    }
    for (classification, product) in [
        ("Security Updates", "Windows 11"),
        ("Security Updates", "Windows 10"),
        ("Security Updates", "Microsoft 365 Apps"),
        ("Critical Updates", "Windows 11"),
        ("Updates", "Windows 10"),
        ("Feature Updates", "Windows 11"),
        ("Definition Updates", "Microsoft Defender Antivirus"),
        ("Upgrades", "Windows 11"),
    ] {
        let updates = rng.random_range(20..2500i64);
        let expired = rng.random_range(0..=updates / 4);
        let superseded = rng.random_range(0..=(updates - expired) / 2);
        put!(
            sink,
            "update_catalog",
            [
                classification,
                product,
                updates,
                expired,
                superseded,
                rng.random_range(0..=updates / 10),
            ]
        );
    }

    for (counter, low, high) in [
        ("Batch Requests/sec", 50u32, 4000u32),
        ("Page life expectancy", 300, 20_000),
        ("Buffer cache hit ratio", 9_500, 10_000),
        ("SQL Compilations/sec", 5, 400),
        ("User Connections", 40, 900),
        ("Lock Waits/sec", 0, 50),
        ("Memory Grants Pending", 0, 5),
    ] {
        let value = f64::from(rng.random_range(low..=high));
        let value = if counter == "Buffer cache hit ratio" {
            value / 100.0
        } else {
            value
        };
        put!(sink, "sql_perf", [counter, value]);
    }

    for (table, per_client) in [
        ("System_DISC", 1.0),
        ("System_DATA", 1.0),
        ("Update_ComplianceStatus", 420.0),
        ("StatusMessages", 180.0),
        ("HinvChangeLog", 95.0),
        ("CI_AssignmentTargetedCIs", 60.0),
        ("Vulnerability_Report", 0.0),
        ("Custom_Inventory_Extension", 3.0),
    ] {
        let rows = (per_client * f64::from(site.clients)) as i64 + rng.random_range(0..50i64);
        put!(
            sink,
            "db_tables",
            [table, rows, (rows as f64 / 900.0 * 10.0).round() / 10.0]
        );
    }
    for (text, executions) in [
        ("SELECT * FROM vSMS_StatusMessage WHERE Time > @t", 9_000i64),
        ("EXEC spGetChangeNotifications @LastID", 40_000),
        (
            "UPDATE System_DISC SET LastHWScan = @d WHERE ItemKey = @k",
            12_000,
        ),
        (
            "SELECT CI_ID FROM CI_ConfigurationItems WHERE IsLatest = 1",
            3_000,
        ),
        ("EXEC spProcessStateMessages", 25_000),
    ] {
        put!(
            sink,
            "top_queries",
            [
                text,
                executions + rng.random_range(0..1000i64),
                executions * rng.random_range(1..40i64),
            ]
        );
    }

    for (n, kind) in ["Software updates", "Any", "Task sequences", "Any"]
        .into_iter()
        .enumerate()
    {
        put!(
            sink,
            "maintenance_windows",
            [
                format!("{}{:05}", site.code, n + 4),
                kind,
                *pick(rng, &[(120i64, 5), (240, 3), (480, 2)]),
                rng.random_bool(0.8),
            ]
        );
    }

    let third = (10 + site.code.bytes().map(u32::from).sum::<u32>() % 200) as u8;
    let boundary_groups = [
        format!("{} Headquarters", site.code),
        format!("{} Branch Offices", site.code),
        format!("{} VPN", site.code),
    ];
    for (kind, value, group) in [
        (
            "IP subnet",
            format!("10.{third}.0.0/16"),
            &boundary_groups[0],
        ),
        (
            "IP address range",
            format!("10.{third}.64.1-10.{third}.95.254"),
            &boundary_groups[1],
        ),
        (
            "Active Directory site",
            format!("{}-HQ-Site", site.code),
            &boundary_groups[0],
        ),
        (
            "IPv6 prefix",
            format!("fd00:{third:x}::/48"),
            &boundary_groups[1],
        ),
        (
            "VPN",
            format!("{}-vpn.contoso.example", site.code.to_ascii_lowercase()),
            &boundary_groups[2],
        ),
    ] {
        put!(sink, "boundaries", [kind, value, group.as_str()]);
    }
    for group in &boundary_groups {
        put!(
            sink,
            "boundary_groups",
            [
                group.as_str(),
                rng.random_range(1..=site.servers.len().max(1) as i64),
                rng.random_range(0..=clients / 2 + 1),
                *pick(rng, &[(120i64, 6), (0, 2), (60, 2)]),
            ]
        );
    }

    for (method, enabled, delta) in [
        ("Active Directory System Discovery", 0.95, true),
        ("Active Directory User Discovery", 0.8, true),
        ("Active Directory Group Discovery", 0.5, true),
        ("Active Directory Forest Discovery", 0.3, false),
        ("Heartbeat Discovery", 1.0, false),
        ("Network Discovery", 0.05, false),
    ] {
        let on = rng.random_bool(enabled);
        put!(
            sink,
            "discovery_methods",
            [
                method,
                on,
                *pick(rng, &[(10080i64, 5), (1440, 3), (60, 2)]),
                on && delta,
            ]
        );
    }

    for (role, count) in [
        ("Full Administrator", 3i64),
        ("Application Administrator", 4),
        ("Operations Administrator", 3),
        ("Read-only Analyst", 6),
        ("Security Administrator", 2),
    ] {
        for n in 0..rng.random_range(1..=count) {
            let first = super::FIRST[rng.random_range(0..super::FIRST.len())];
            put!(
                sink,
                "admin_users",
                [
                    format!("CONTOSO\\{first}.admin{n}"),
                    role,
                    rng.random_range(1..6i64)
                ]
            );
        }
    }

    for (alert, severity) in [
        ("Database replication component failed", "Critical"),
        ("Low free disk space on site database", "Critical"),
        ("Endpoint Protection malware detected", "Critical"),
        (
            "Software update group compliance below threshold",
            "Warning",
        ),
        ("Distribution point content validation failed", "Warning"),
        ("Client check passing below threshold", "Warning"),
    ] {
        let state = *pick(
            rng,
            &[
                ("Active", 2),
                ("Postponed", 1),
                ("Canceled", 1),
                ("Never triggered", 6),
            ],
        );
        let occurrences = if state == "Never triggered" {
            0
        } else {
            rng.random_range(1..30i64)
        };
        put!(sink, "alerts", [alert, severity, state, occurrences]);
    }

    if !site.is_cas {
        for group in ["Global data", "Site data"] {
            let state = *pick(rng, &[("Link active", 9), ("Link degraded", 1)]);
            put!(
                sink,
                "replication_links",
                [
                    format!("{} -> CAS", site.code),
                    group,
                    state,
                    format!(
                        "2026-11-{:02}T{:02}:00:00",
                        rng.random_range(20..30),
                        rng.random_range(0..24)
                    ),
                    rng.random_range(0..500i64),
                ]
            );
        }
    }

    for product in [
        "Microsoft Visio",
        "Microsoft Project",
        "Adobe Acrobat",
        "AutoCAD",
        "SAP GUI",
    ] {
        let on = rng.random_bool(0.7);
        let usage = if on {
            rng.random_range(0..=clients / 3 + 1)
        } else {
            0
        };
        put!(sink, "metering_rules", [product, on, usage]);
    }

    for policy in [
        "Antimalware",
        "Windows Firewall",
        "Attack surface reduction",
        "Exploit protection",
        "BitLocker",
    ] {
        put!(
            sink,
            "endpoint_policies",
            [
                policy,
                rng.random_range(1..6i64),
                rng.random_range(0..=clients)
            ]
        );
    }

    for n in 0..clients {
        let protection = *pick(rng, &[("On", 82), ("Off", 12), ("Unknown", 6)]);
        let method = *pick(
            rng,
            &[
                ("XTS-AES 256", 55),
                ("XTS-AES 128", 35),
                ("AES-CBC 128", 10),
            ],
        );
        let compliance = if protection == "On" && method.starts_with("XTS") {
            "Compliant"
        } else {
            "Non-compliant"
        };
        put!(
            sink,
            "bitlocker_status",
            [site.first_resource + n, protection, method, compliance]
        );
    }
    Ok(())
}

fn applications(
    sink: &mut dyn Sink,
    rng: &mut ChaCha8Rng,
    clients: i64,
) -> Result<(), SiteDbError> {
    for n in 0..(15 + rng.random_range(0..20)) {
        let app_id = format!(
            "ScopeId_5C8E7D2A-1F0B-4C55-9A3E-2B7D1E0C{:04X}/Application_{:08x}",
            n,
            rng.random::<u32>()
        );
        let technology = *pick(
            rng,
            &[
                ("Windows Installer (MSI)", 45),
                ("Script Installer", 30),
                ("Windows app package (MSIX)", 10),
                ("Microsoft Application Virtualization 5", 5),
                ("Task sequence", 10),
            ],
        );
        let deployed = rng.random_bool(0.6);
        put!(
            sink,
            "applications",
            [
                app_id.as_str(),
                technology,
                rng.random_range(1..4i64),
                rng.random_bool(0.15),
                deployed,
                date(rng, 200, 700),
            ]
        );
        if deployed {
            let targeted = rng.random_range(1..=clients.max(1));
            let failed = rng.random_range(0..=targeted / 12);
            let unmet = rng.random_range(0..=targeted / 20);
            let pending = rng.random_range(0..=targeted / 25);
            for (state, devices, error) in [
                ("Success", targeted - failed - unmet - pending, 0i64),
                (
                    "Error",
                    failed,
                    *pick(
                        rng,
                        &[(-2_147_023_293i64, 2), (1603, 3), (-2_016_345_060, 1)],
                    ),
                ),
                ("Requirements not met", unmet, 0),
                ("In progress", pending, 0),
            ] {
                if devices > 0 {
                    let error = if state == "Error" { error } else { 0 };
                    put!(
                        sink,
                        "app_deployment_status",
                        [app_id.as_str(), state, devices.max(0), error]
                    );
                }
            }
        }
    }
    Ok(())
}
