//! The seeded site database's tables, declared once and rendered for each dialect.
//!
//! Both backends hold the same tables and the same values; only the SQL types differ
//! (SQLite keeps dates as ISO text and flags as 0/1, SQL Server has DATE, DATETIME2 and
//! BIT), which is what the catalog's two texts per query must bridge.

use hrs_core::Value;

use crate::Dialect;

/// The kind of a seeded column, from which each dialect's SQL type follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Unicode text of at most this many characters.
    Text(u16),
    /// A whole number.
    Int,
    /// A floating-point number.
    Real,
    /// A yes/no flag.
    Flag,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// A date and time, `YYYY-MM-DDTHH:MM:SS`.
    DateTime,
}

/// One seeded table.
#[derive(Debug)]
pub(crate) struct Table {
    /// Table name, the same in both dialects.
    pub name: &'static str,
    /// Columns in insert order; the first is the key where the table has one.
    pub columns: &'static [(&'static str, Kind)],
    /// Whether the first column is the primary key.
    pub keyed: bool,
}

use Kind::{Date, DateTime, Flag, Int, Real, Text};

/// Every table of a seeded site database, in the order they are written.
pub(crate) const TABLES: &[Table] = &[
    Table {
        name: "site",
        keyed: false,
        columns: &[
            ("site_code", Text(3)),
            ("site_name", Text(128)),
            ("site_type", Text(16)),
            ("version", Text(32)),
            ("build", Int),
            ("time_zone", Text(64)),
            ("install_date", Date),
            ("status", Text(16)),
        ],
    },
    Table {
        name: "site_system",
        keyed: true,
        columns: &[
            ("server_name", Text(256)),
            ("ip_address", Text(45)),
            ("os_caption", Text(128)),
            ("is_virtual", Flag),
        ],
    },
    Table {
        name: "site_system_role",
        keyed: false,
        columns: &[("server_name", Text(256)), ("role_name", Text(64))],
    },
    Table {
        name: "sql_info",
        keyed: false,
        columns: &[
            ("version", Text(32)),
            ("edition", Text(64)),
            ("collation", Text(64)),
            ("db_size_mb", Int),
            ("log_size_mb", Int),
            ("compat_level", Int),
        ],
    },
    Table {
        name: "systems",
        keyed: true,
        columns: &[
            ("resource_id", Int),
            ("computer_name", Text(64)),
            ("user_name", Text(128)),
            ("domain", Text(128)),
            ("ip_address", Text(45)),
            ("mac_address", Text(17)),
            ("email", Text(256)),
            ("os_caption", Text(128)),
            ("os_build", Int),
            ("os_release_date", Date),
            ("branch", Text(32)),
            ("client_version", Text(32)),
            ("client_language", Text(16)),
            ("form_factor", Text(16)),
            ("processor_name", Text(128)),
            ("cores", Int),
            ("memory_mb", Int),
            ("office_version", Text(64)),
            ("last_heartbeat", Date),
            ("last_hw_scan", Date),
            ("is_comanaged", Flag),
        ],
    },
    Table {
        name: "processing_stats",
        keyed: false,
        columns: &[
            ("day", Date),
            ("component", Text(64)),
            ("discovery_records", Int),
            ("state_messages", Int),
            ("status_messages", Int),
            ("inventory_records", Int),
            ("inbox_backlog", Int),
        ],
    },
    Table {
        name: "component_status",
        keyed: false,
        columns: &[
            ("component", Text(64)),
            ("uptime_hours", Int),
            ("memory_mb", Int),
            ("crash_count", Int),
        ],
    },
    Table {
        name: "ep_health",
        keyed: false,
        columns: &[
            ("resource_id", Int),
            ("state", Text(32)),
            ("signature_age_days", Int),
            ("engine_version", Text(32)),
        ],
    },
    Table {
        name: "update_compliance",
        keyed: false,
        columns: &[
            ("resource_id", Int),
            ("update_id", Text(16)),
            ("classification", Text(64)),
            ("status", Text(16)),
            ("error_code", Int),
            ("last_scan", DateTime),
        ],
    },
    Table {
        name: "collections",
        keyed: false,
        columns: &[
            ("collection_id", Text(8)),
            ("name", Text(128)),
            ("member_count", Int),
            ("eval_ms", Int),
            ("incremental", Flag),
        ],
    },
    Table {
        name: "distribution_points",
        keyed: false,
        columns: &[
            ("server_name", Text(256)),
            ("is_cloud", Flag),
            ("package_count", Int),
            ("content_gb", Real),
        ],
    },
    Table {
        name: "deployments",
        keyed: false,
        columns: &[
            ("kind", Text(32)),
            ("name", Text(128)),
            ("success", Int),
            ("failed", Int),
            ("in_progress", Int),
        ],
    },
    Table {
        name: "boot_times",
        keyed: false,
        columns: &[("resource_id", Int), ("boot_seconds", Real)],
    },
    Table {
        name: "sql_maintenance",
        keyed: false,
        columns: &[
            ("task_name", Text(64)),
            ("last_run", Date),
            ("status", Text(16)),
        ],
    },
    Table {
        name: "applications",
        keyed: true,
        columns: &[
            ("app_id", Text(128)),
            ("technology", Text(64)),
            ("deployment_types", Int),
            ("is_superseded", Flag),
            ("is_deployed", Flag),
            ("created", Date),
        ],
    },
    Table {
        name: "app_deployment_status",
        keyed: false,
        columns: &[
            ("app_id", Text(128)),
            ("state", Text(64)),
            ("devices", Int),
            ("error_code", Int),
        ],
    },
    Table {
        name: "cloud_services",
        keyed: false,
        columns: &[
            ("service", Text(64)),
            ("enabled", Flag),
            ("region", Text(64)),
            ("vm_instances", Int),
            ("gb_transferred", Real),
        ],
    },
    Table {
        name: "comanagement_workloads",
        keyed: false,
        columns: &[
            ("workload", Text(64)),
            ("authority", Text(64)),
            ("pilot_devices", Int),
        ],
    },
    Table {
        name: "configuration_items",
        keyed: false,
        columns: &[
            ("ci_type", Text(64)),
            ("name", Text(128)),
            ("compliant", Int),
            ("noncompliant", Int),
            ("errors", Int),
            ("remediate", Flag),
        ],
    },
    Table {
        name: "content_packages",
        keyed: true,
        columns: &[
            ("package_id", Text(8)),
            ("package_type", Text(64)),
            ("size_mb", Real),
            ("source_version", Int),
            ("dp_targeted", Int),
            ("dp_failed", Int),
        ],
    },
    Table {
        name: "migration_jobs",
        keyed: false,
        columns: &[
            ("job_type", Text(64)),
            ("state", Text(32)),
            ("objects", Int),
            ("last_run", Date),
        ],
    },
    Table {
        name: "mdm_devices",
        keyed: false,
        columns: &[
            ("platform", Text(32)),
            ("ownership", Text(32)),
            ("devices", Int),
        ],
    },
    Table {
        name: "boot_images",
        keyed: false,
        columns: &[
            ("architecture", Text(8)),
            ("os_version", Text(64)),
            ("pxe_enabled", Flag),
            ("size_mb", Real),
            ("deployed", Flag),
        ],
    },
    Table {
        name: "task_sequences",
        keyed: false,
        columns: &[
            ("ts_type", Text(64)),
            ("steps", Int),
            ("deployments", Int),
            ("success", Int),
            ("failed", Int),
        ],
    },
    Table {
        name: "site_updates",
        keyed: false,
        columns: &[
            ("update_name", Text(64)),
            ("update_type", Text(32)),
            ("state", Text(32)),
            ("released", Date),
        ],
    },
    Table {
        name: "sup_sync",
        keyed: false,
        columns: &[
            ("sync_day", Date),
            ("status", Text(32)),
            ("updates_synced", Int),
            ("duration_minutes", Int),
        ],
    },
    Table {
        name: "update_catalog",
        keyed: false,
        columns: &[
            ("classification", Text(64)),
            ("product", Text(64)),
            ("updates", Int),
            ("expired", Int),
            ("superseded", Int),
            ("deployed", Int),
        ],
    },
    Table {
        name: "sql_perf",
        keyed: false,
        columns: &[("counter", Text(64)), ("value", Real)],
    },
    Table {
        name: "db_tables",
        keyed: false,
        columns: &[
            ("table_name", Text(128)),
            ("row_count", Int),
            ("size_mb", Real),
        ],
    },
    Table {
        name: "top_queries",
        keyed: false,
        columns: &[
            ("query_text", Text(512)),
            ("executions", Int),
            ("total_ms", Int),
        ],
    },
    Table {
        name: "maintenance_windows",
        keyed: false,
        columns: &[
            ("collection_id", Text(8)),
            ("window_type", Text(32)),
            ("duration_minutes", Int),
            ("recurring", Flag),
        ],
    },
    Table {
        name: "boundaries",
        keyed: false,
        columns: &[
            ("boundary_type", Text(64)),
            ("value", Text(128)),
            ("boundary_group", Text(64)),
        ],
    },
    Table {
        name: "boundary_groups",
        keyed: false,
        columns: &[
            ("name", Text(64)),
            ("site_systems", Int),
            ("members", Int),
            ("fallback_minutes", Int),
        ],
    },
    Table {
        name: "discovery_methods",
        keyed: false,
        columns: &[
            ("method", Text(64)),
            ("enabled", Flag),
            ("interval_minutes", Int),
            ("delta", Flag),
        ],
    },
    Table {
        name: "admin_users",
        keyed: false,
        columns: &[
            ("user_name", Text(128)),
            ("role", Text(64)),
            ("scopes", Int),
        ],
    },
    Table {
        name: "alerts",
        keyed: false,
        columns: &[
            ("alert_type", Text(64)),
            ("severity", Text(32)),
            ("state", Text(32)),
            ("occurrences", Int),
        ],
    },
    Table {
        name: "replication_links",
        keyed: false,
        columns: &[
            ("link", Text(64)),
            ("replication_group", Text(64)),
            ("state", Text(32)),
            ("last_sync", DateTime),
            ("backlog", Int),
        ],
    },
    Table {
        name: "metering_rules",
        keyed: false,
        columns: &[
            ("product", Text(64)),
            ("enabled", Flag),
            ("usage_count", Int),
        ],
    },
    Table {
        name: "endpoint_policies",
        keyed: false,
        columns: &[
            ("policy_type", Text(64)),
            ("policies", Int),
            ("targeted_devices", Int),
        ],
    },
    Table {
        name: "bitlocker_status",
        keyed: true,
        columns: &[
            ("resource_id", Int),
            ("protection", Text(32)),
            ("encryption_method", Text(64)),
            ("compliance", Text(32)),
        ],
    },
];

/// Returns the table with this name.
pub(crate) fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

impl Kind {
    fn sql_type(self, dialect: Dialect) -> String {
        match (dialect, self) {
            (Dialect::Sqlite, Text(_) | Date | DateTime) => "TEXT".into(),
            (Dialect::Sqlite, Int | Flag) => "INTEGER".into(),
            (Dialect::Sqlite, Real) => "REAL".into(),
            (Dialect::Tsql, Text(n)) => format!("NVARCHAR({n})"),
            (Dialect::Tsql, Int) => "BIGINT".into(),
            (Dialect::Tsql, Real) => "FLOAT".into(),
            (Dialect::Tsql, Flag) => "BIT".into(),
            (Dialect::Tsql, Date) => "DATE".into(),
            (Dialect::Tsql, DateTime) => "DATETIME2".into(),
        }
    }

    /// Renders a value as a T-SQL literal of this kind.
    ///
    /// Only the seeder's own generated values reach here; text is still quoted properly
    /// so a value with an apostrophe cannot break the statement.
    pub(crate) fn tsql_literal(self, value: &Value) -> String {
        match (self, value) {
            (_, Value::Null) => "NULL".into(),
            (Flag, Value::Bool(b)) => if *b { "1" } else { "0" }.into(),
            (_, Value::Int(i)) => i.to_string(),
            (_, Value::Real(r)) => format!("{r:?}"),
            (_, Value::Bool(b)) => i32::from(*b).to_string(),
            (Text(_), Value::Text(s)) => format!("N'{}'", s.replace('\'', "''")),
            (_, Value::Text(s)) => format!("'{}'", s.replace('\'', "''")),
        }
    }
}

impl Table {
    /// The `CREATE TABLE` statement for this table in `dialect`.
    pub(crate) fn create(&self, dialect: Dialect) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (name, kind))| {
                let key = if i == 0 && self.keyed {
                    " PRIMARY KEY"
                } else {
                    ""
                };
                // A key column must be bounded in SQL Server; NVARCHAR(n) already is.
                format!("{name} {}{key}", kind.sql_type(dialect))
            })
            .collect();
        format!("CREATE TABLE {} ({})", self.name, columns.join(", "))
    }

    /// The column list, for INSERT statements.
    pub(crate) fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dialect_gets_its_own_types() {
        let systems = table("systems").expect("systems");
        let sqlite = systems.create(Dialect::Sqlite);
        let tsql = systems.create(Dialect::Tsql);
        assert!(sqlite.starts_with("CREATE TABLE systems (resource_id INTEGER PRIMARY KEY,"));
        assert!(tsql.contains("last_heartbeat DATE"));
        assert!(tsql.contains("is_comanaged BIT"));
        assert!(!tsql.contains("TEXT"));
    }

    #[test]
    fn literals_are_quoted_for_tsql() {
        assert_eq!(
            Text(8).tsql_literal(&Value::Text("O'Neil".into())),
            "N'O''Neil'"
        );
        assert_eq!(Flag.tsql_literal(&Value::Bool(true)), "1");
        assert_eq!(Real.tsql_literal(&Value::Real(12.5)), "12.5");
        assert_eq!(Real.tsql_literal(&Value::Real(3.0)), "3.0");
        assert_eq!(
            Date.tsql_literal(&Value::Text("2026-01-05".into())),
            "'2026-01-05'"
        );
    }
}
