//! The seeded site database's tables, declared once and rendered for each dialect.
//!
//! Both backends hold the same tables and the same values; only the SQL types differ
//! (SQLite keeps times as ISO text, SQL Server has DATETIME2), which is what the catalog's
//! two texts per query must bridge. The tables are named and shaped like the Configuration
//! Manager views a real site database has, so the queries read the same names everywhere.

use hrs_core::Value;

use crate::Dialect;

/// The kind of a seeded column, from which each dialect's SQL type follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Unicode text of at most this many characters.
    Text(u16),
    /// A whole number.
    Int,
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
    /// The SQL Server system view this table stands in for in SQLite, if it is one: SQL
    /// Server has its own, so these are seeded into SQLite only.
    pub system: Option<&'static str>,
}

impl Table {
    /// A table shaped like a Configuration Manager view, seeded into both backends.
    const fn view(name: &'static str, columns: &'static [(&'static str, Kind)]) -> Self {
        Self {
            name,
            columns,
            keyed: false,
            system: None,
        }
    }

    /// A SQLite stand-in for SQL Server's own view `system`.
    const fn system(
        system: &'static str,
        name: &'static str,
        columns: &'static [(&'static str, Kind)],
    ) -> Self {
        Self {
            name,
            columns,
            keyed: false,
            system: Some(system),
        }
    }

    /// The same table with its first column as the primary key.
    const fn keyed(self) -> Self {
        Self {
            keyed: true,
            ..self
        }
    }

    /// Whether `dialect`'s backend is seeded with this table.
    pub(crate) fn seeded_in(&self, dialect: Dialect) -> bool {
        self.system.is_none() || dialect == Dialect::Sqlite
    }
}

use Kind::{DateTime, Int, Text};

/// Every table of a seeded site database, in the order they are written.
///
/// Each is named and shaped like the Configuration Manager view (or SQL Server system view)
/// the catalog reads on a real site database, with the documented column names, so the
/// catalog's SQLite and T-SQL texts read the same names. `crates/hrs-core/catalog/views.md`
/// gives the page documenting each.
pub(crate) const TABLES: &[Table] = &[
    // The site and its servers.
    Table::view(
        "v_Site",
        &[
            ("SiteCode", Text(3)),
            ("SiteName", Text(50)),
            ("Type", Int),
            ("Version", Text(32)),
            ("BuildNumber", Int),
            ("Status", Int),
            ("TimeZoneInfo", Text(256)),
            ("ReportingSiteCode", Text(3)),
            ("ServerName", Text(256)),
            ("InstallDir", Text(256)),
        ],
    ),
    Table::view("v_Identification", &[("ThisSiteCode", Text(3))]),
    Table::view(
        "v_SystemResourceList",
        &[
            ("RoleName", Text(64)),
            ("ServerName", Text(256)),
            ("SiteCode", Text(3)),
            ("NALPath", Text(512)),
            ("ResourceType", Text(32)),
        ],
    ),
    Table::view(
        "v_ServerComponents",
        &[
            ("SiteCode", Text(3)),
            ("MachineName", Text(256)),
            ("ComponentName", Text(128)),
            ("Flags", Int),
        ],
    ),
    Table::view(
        "v_ComponentSummarizer",
        &[
            ("SiteCode", Text(3)),
            ("MachineName", Text(256)),
            ("ComponentName", Text(128)),
            ("ComponentType", Text(32)),
            ("Status", Int),
            ("State", Int),
            ("LastStarted", DateTime),
            ("Errors", Int),
            ("Warnings", Int),
            ("Infos", Int),
            ("TallyInterval", Text(16)),
        ],
    ),
    Table::view(
        "v_StatusMessage",
        &[
            ("RecordID", Int),
            ("Component", Text(128)),
            ("MachineName", Text(256)),
            ("MessageID", Int),
            ("ModuleName", Text(128)),
            ("Severity", Int),
            ("SiteCode", Text(3)),
            ("Time", DateTime),
            ("Win32Error", Int),
        ],
    )
    .keyed(),
    // Discovered systems and users, and their hardware inventory.
    Table::view(
        "v_R_System",
        &[
            ("ResourceID", Int),
            ("Name0", Text(64)),
            ("Netbios_Name0", Text(16)),
            ("Resource_Domain_OR_Workgr0", Text(32)),
            ("Full_Domain_Name0", Text(255)),
            ("User_Name0", Text(64)),
            ("User_Domain0", Text(32)),
            ("Client0", Int),
            ("Client_Version0", Text(32)),
            ("Obsolete0", Int),
            ("Active0", Int),
            ("Decommissioned0", Int),
            ("Is_Virtual_Machine0", Int),
            ("Operating_System_Name_and0", Text(128)),
            ("Build01", Text(32)),
            ("SMS_Unique_Identifier0", Text(64)),
            ("AD_Site_Name0", Text(64)),
            ("Creation_Date0", DateTime),
        ],
    )
    .keyed(),
    Table::view(
        "v_RA_System_IPAddresses",
        &[("ResourceID", Int), ("IP_Addresses0", Text(45))],
    ),
    Table::view(
        "v_RA_System_MACAddresses",
        &[("ResourceID", Int), ("MAC_Addresses0", Text(17))],
    ),
    Table::view(
        "v_R_User",
        &[
            ("ResourceID", Int),
            ("User_Name0", Text(64)),
            ("Unique_User_Name0", Text(128)),
            ("Full_User_Name0", Text(128)),
            ("Mail0", Text(256)),
            ("Windows_NT_Domain0", Text(32)),
        ],
    )
    .keyed(),
    Table::view(
        "v_AgentDiscoveries",
        &[
            ("ResourceID", Int),
            ("AgentName", Text(64)),
            ("AgentSite", Text(3)),
            ("AgentTime", DateTime),
        ],
    ),
    Table::view(
        "v_GS_OPERATING_SYSTEM",
        &[
            ("ResourceID", Int),
            ("GroupID", Int),
            ("Caption0", Text(256)),
            ("Version0", Text(32)),
            ("BuildNumber0", Text(32)),
            ("OSLanguage0", Int),
            ("Locale0", Text(16)),
            ("InstallDate0", DateTime),
            ("LastBootUpTime0", DateTime),
            ("ProductType0", Int),
            ("SystemDrive0", Text(8)),
            ("TotalVisibleMemorySize0", Int),
        ],
    ),
    Table::view(
        "v_GS_PROCESSOR",
        &[
            ("ResourceID", Int),
            ("GroupID", Int),
            ("DeviceID0", Text(16)),
            ("Name0", Text(256)),
            ("Manufacturer0", Text(64)),
            ("NumberOfCores0", Int),
            ("NumberOfLogicalProcessors0", Int),
            ("MaxClockSpeed0", Int),
        ],
    ),
    Table::view(
        "v_GS_X86_PC_MEMORY",
        &[
            ("ResourceID", Int),
            ("GroupID", Int),
            ("TotalPhysicalMemory0", Int),
        ],
    ),
    Table::view(
        "v_GS_COMPUTER_SYSTEM",
        &[
            ("ResourceID", Int),
            ("GroupID", Int),
            ("Name0", Text(64)),
            ("Domain0", Text(255)),
            ("Manufacturer0", Text(128)),
            ("Model0", Text(128)),
            ("SystemType0", Text(32)),
        ],
    ),
    Table::view(
        "v_GS_SYSTEM_ENCLOSURE",
        &[
            ("ResourceID", Int),
            ("GroupID", Int),
            ("ChassisTypes0", Int),
            ("Manufacturer0", Text(128)),
            ("SerialNumber0", Text(64)),
        ],
    ),
    Table::view(
        "v_GS_WORKSTATION_STATUS",
        &[
            ("ResourceID", Int),
            ("GroupID", Int),
            ("LastHWScan", DateTime),
        ],
    ),
    Table::view(
        "v_GS_INSTALLED_SOFTWARE",
        &[
            ("ResourceID", Int),
            ("GroupID", Int),
            ("ProductName0", Text(255)),
            ("ProductVersion0", Text(64)),
            ("Publisher0", Text(255)),
            ("SoftwareCode0", Text(64)),
        ],
    ),
    Table::view(
        "v_GS_SYSTEMBOOTDATA",
        &[
            ("ResourceID", Int),
            ("GroupID", Int),
            ("BiosDuration0", Int),
            ("BootDuration0", Int),
            ("GPDuration0", Int),
            ("SystemStartTime0", DateTime),
        ],
    ),
    Table::view(
        "v_GS_ENCRYPTABLE_VOLUME",
        &[
            ("ResourceID", Int),
            ("GroupID", Int),
            ("DeviceID0", Text(128)),
            ("DriveLetter0", Text(8)),
            ("ProtectionStatus0", Int),
        ],
    ),
    Table::view(
        "v_GS_EPDeploymentState",
        &[("ResourceID", Int), ("DeploymentState", Int)],
    ),
    Table::view(
        "v_CombinedDeviceResources",
        &[
            ("MachineID", Int),
            ("Name", Text(256)),
            ("IsClient", Int),
            ("IsObsolete", Int),
            ("ClientActiveStatus", Int),
            ("ClientVersion", Text(32)),
            ("ClientEdition", Int),
            ("LastDDR", DateTime),
            ("LastHardwareScan", DateTime),
            ("LastPolicyRequest", DateTime),
            ("EPEnabled", Int),
            ("EPDeploymentState", Int),
            ("EPProductStatus", Int),
            ("EPInfectionStatus", Int),
            ("EPEngineVersion", Text(32)),
            ("EPAntivirusSignatureLastUpdateDateTime", DateTime),
            ("DeviceOS", Text(128)),
            ("DeviceOwner", Int),
            ("CoManaged", Int),
        ],
    )
    .keyed(),
    // Collections, maintenance windows and deployments.
    Table::view(
        "v_Collection",
        &[
            ("CollectionID", Text(8)),
            ("Name", Text(255)),
            ("CollectionType", Int),
            ("MemberCount", Int),
            ("RefreshType", Int),
            ("LimitToCollectionID", Text(8)),
            ("ServiceWindowsCount", Int),
            ("FullEvaluationRunTime", Int),
            ("IncrementalEvaluationRunTime", Int),
            ("LastRefreshTime", DateTime),
        ],
    )
    .keyed(),
    Table::view(
        "v_ServiceWindow",
        &[
            ("CollectionID", Text(8)),
            ("ServiceWindowID", Text(64)),
            ("Name", Text(128)),
            ("StartTime", DateTime),
            ("Duration", Int),
            ("RecurrenceType", Int),
            ("ServiceWindowType", Int),
            ("IsEnabled", Int),
            ("IsGMT", Int),
        ],
    ),
    Table::view(
        "v_DeploymentSummary",
        &[
            ("AssignmentID", Int),
            ("SoftwareName", Text(512)),
            ("CollectionID", Text(8)),
            ("CollectionName", Text(255)),
            ("PackageID", Text(8)),
            ("CI_ID", Int),
            ("FeatureType", Int),
            ("DeploymentIntent", Int),
            ("DeploymentTime", DateTime),
            ("NumberTargeted", Int),
            ("NumberSuccess", Int),
            ("NumberErrors", Int),
            ("NumberInProgress", Int),
            ("NumberUnknown", Int),
            ("NumberOther", Int),
        ],
    ),
    Table::view(
        "v_Advertisement",
        &[
            ("AdvertisementID", Text(8)),
            ("AdvertisementName", Text(255)),
            ("PackageID", Text(8)),
            ("CollectionID", Text(8)),
            ("PresentTime", DateTime),
        ],
    ),
    // Applications and compliance settings.
    Table::view(
        "v_ConfigurationItems",
        &[
            ("CI_ID", Int),
            ("CI_UniqueID", Text(512)),
            ("CIType_ID", Int),
            ("ModelName", Text(256)),
            ("IsDeployed", Int),
            ("IsSuperseded", Int),
            ("IsLatest", Int),
            ("IsEnabled", Int),
            ("DateCreated", DateTime),
            ("DateLastModified", DateTime),
        ],
    )
    .keyed(),
    Table::view("v_CITypes", &[("CIType_ID", Int), ("TypeName", Text(64))]).keyed(),
    Table::view(
        "v_LocalizedCIProperties",
        &[
            ("CI_ID", Int),
            ("LocaleID", Int),
            ("DisplayName", Text(512)),
            ("Description", Text(512)),
        ],
    ),
    Table::view(
        "v_CIRelation",
        &[("FromCIID", Int), ("ToCIID", Int), ("RelationType", Int)],
    ),
    Table::view(
        "v_CICurrentComplianceStatus",
        &[
            ("CI_ID", Int),
            ("ResourceID", Int),
            ("ComplianceState", Int),
            ("LastComplianceMessageTime", DateTime),
        ],
    ),
    Table::view(
        "v_CIRemediationHistory",
        &[
            ("CI_ID", Int),
            ("ResourceID", Int),
            ("RemediationDate", DateTime),
        ],
    ),
    Table::view(
        "v_StateNames",
        &[
            ("TopicType", Int),
            ("StateID", Int),
            ("StateName", Text(128)),
        ],
    ),
    Table::view(
        "v_ApplicationModelInfo",
        &[
            ("CI_ID", Int),
            ("ModelName", Text(256)),
            ("Technology", Text(32)),
            ("NumberOfDeploymentTypes", Int),
        ],
    ),
    Table::view(
        "v_AppIntentAssetData",
        &[
            ("AssignmentID", Int),
            ("AppCI", Int),
            ("MachineID", Int),
            ("UserName", Text(128)),
            ("ComplianceState", Int),
            ("EnforcementState", Int),
        ],
    ),
    // Software updates.
    Table::view(
        "v_UpdateInfo",
        &[
            ("CI_ID", Int),
            ("CI_UniqueID", Text(64)),
            ("CIType_ID", Int),
            ("ArticleID", Text(32)),
            ("BulletinID", Text(32)),
            ("Title", Text(512)),
            ("Severity", Int),
            ("DateRevised", DateTime),
            ("IsDeployed", Int),
            ("IsExpired", Int),
            ("IsSuperseded", Int),
        ],
    )
    .keyed(),
    Table::view(
        "v_CICategoryInfo_All",
        &[
            ("CI_ID", Int),
            ("CategoryInstanceID", Int),
            ("CategoryTypeName", Text(64)),
            ("CategoryInstanceName", Text(256)),
        ],
    ),
    Table::view(
        "v_UpdateComplianceStatus",
        &[
            ("ResourceID", Int),
            ("CI_ID", Int),
            ("Status", Int),
            ("LastStatusCheckTime", DateTime),
            ("LastEnforcementMessageID", Int),
            ("LastErrorCode", Int),
        ],
    ),
    Table::view(
        "v_UpdateScanStatus",
        &[
            ("ResourceID", Int),
            ("UpdateSourceID", Int),
            ("LastScanTime", DateTime),
            ("LastScanState", Int),
            ("LastErrorCode", Int),
            ("LastWUAVersion", Text(32)),
        ],
    ),
    // Content and operating system deployment.
    Table::view(
        "v_Package",
        &[
            ("PackageID", Text(8)),
            ("Name", Text(255)),
            ("PackageType", Int),
            ("PackageSize", Int),
            ("SourceVersion", Int),
            ("SourceDate", DateTime),
            ("PkgSourcePath", Text(512)),
        ],
    )
    .keyed(),
    Table::view(
        "v_PackageStatusDetailSumm",
        &[
            ("PackageID", Text(8)),
            ("SiteCode", Text(3)),
            ("Targeted", Int),
            ("Installed", Int),
            ("Retrying", Int),
            ("Failed", Int),
        ],
    ),
    Table::view(
        "v_DistributionPointInfo",
        &[
            ("ServerName", Text(256)),
            ("NALPath", Text(512)),
            ("SiteCode", Text(3)),
            ("IsPXE", Int),
            ("IsPullDP", Int),
            ("Region", Text(64)),
            ("ServiceType", Int),
            ("OperatingSystem", Text(128)),
        ],
    ),
    Table::view(
        "v_DistributionPoint",
        &[
            ("PackageID", Text(8)),
            ("ServerNALPath", Text(512)),
            ("SiteCode", Text(3)),
            ("LastRefreshTime", DateTime),
        ],
    ),
    Table::view(
        "v_BootImagePackage",
        &[
            ("PackageID", Text(8)),
            ("Name", Text(255)),
            ("Architecture", Int),
            ("ImageOSVersion", Text(32)),
            ("PackageSize", Int),
            ("PkgSourcePath", Text(512)),
        ],
    ),
    Table::view(
        "v_TaskSequencePackage",
        &[
            ("PackageID", Text(8)),
            ("Name", Text(255)),
            ("BootImageID", Text(8)),
            ("Type", Int),
            ("Sequence", Text(4000)),
        ],
    ),
    // Site administration: boundaries, security, alerts, metering, migration.
    Table::view(
        "v_BoundaryInfo",
        &[
            ("BoundaryID", Int),
            ("BoundaryType", Int),
            ("Value", Text(256)),
            ("DisplayName", Text(256)),
            ("SiteCode", Text(3)),
            ("BoundaryFlags", Int),
            ("GroupCount", Int),
        ],
    )
    .keyed(),
    Table::view(
        "v_BoundarySiteSystems",
        &[
            ("BoundaryID", Int),
            ("ServerNALPath", Text(512)),
            ("SiteSystemName", Text(256)),
            ("SiteCode", Text(3)),
        ],
    ),
    Table::view(
        "v_Admins",
        &[
            ("AdminID", Int),
            ("LogonName", Text(256)),
            ("DisplayName", Text(256)),
            ("IsGroup", Int),
        ],
    )
    .keyed(),
    Table::view(
        "v_Roles",
        &[
            ("RoleID", Text(8)),
            ("RoleName", Text(128)),
            ("IsBuiltIn", Int),
        ],
    )
    .keyed(),
    Table::view(
        "v_SecuredScopePermissions",
        &[
            ("AdminID", Int),
            ("RoleID", Text(8)),
            ("CategoryID", Text(16)),
        ],
    ),
    Table::view(
        "v_Alert",
        &[
            ("ID", Int),
            ("Name", Text(256)),
            ("TypeID", Int),
            ("Severity", Int),
            ("AlertState", Int),
            ("OccurrenceCount", Int),
            ("CreationTime", DateTime),
        ],
    )
    .keyed(),
    Table::view(
        "v_MeteredProductRule",
        &[
            ("RuleID", Int),
            ("ProductName", Text(255)),
            ("FileName", Text(255)),
            ("SecurityKey", Text(8)),
            ("Enabled", Int),
        ],
    )
    .keyed(),
    Table::view(
        "v_MeteredFiles",
        &[
            ("MeteredFileID", Int),
            ("RuleID", Int),
            ("MeteredProductID", Int),
        ],
    ),
    Table::view(
        "v_MonthlyUsageSummary",
        &[
            ("FileID", Int),
            ("ResourceID", Int),
            ("TimeKey", Int),
            ("UsageCount", Int),
            ("UsageTime", Int),
        ],
    ),
    Table::view(
        "v_MIG_Job",
        &[
            ("JobID", Int),
            ("JobName", Text(255)),
            ("JobType", Int),
            ("Status", Int),
            ("LastRunTime", DateTime),
        ],
    )
    .keyed(),
    Table::view(
        "v_MIG_JobEntity",
        &[("JobID", Int), ("EntityID", Int), ("Status", Int)],
    ),
    // SQL Server's own views, for the queries about the database itself. SQL Server has
    // these; the SQLite sample holds their columns under the name with `.` made `_`.
    Table::system(
        "SERVERPROPERTY",
        "sys_serverproperty",
        &[("ProductVersion", Text(128)), ("Edition", Text(128))],
    ),
    Table::system(
        "sys.databases",
        "sys_databases",
        &[
            ("database_id", Int),
            ("name", Text(128)),
            ("collation_name", Text(128)),
            ("compatibility_level", Int),
        ],
    ),
    Table::system(
        "sys.database_files",
        "sys_database_files",
        &[
            ("file_id", Int),
            ("type", Int),
            ("name", Text(128)),
            ("size", Int),
        ],
    ),
    Table::system(
        "sys.tables",
        "sys_tables",
        &[("object_id", Int), ("schema_id", Int), ("name", Text(128))],
    ),
    Table::system(
        "sys.schemas",
        "sys_schemas",
        &[("schema_id", Int), ("name", Text(128))],
    ),
    Table::system(
        "sys.dm_db_partition_stats",
        "sys_dm_db_partition_stats",
        &[
            ("object_id", Int),
            ("index_id", Int),
            ("row_count", Int),
            ("reserved_page_count", Int),
        ],
    ),
    Table::system(
        "sys.dm_exec_query_stats",
        "sys_dm_exec_query_stats",
        &[
            ("query_hash", Text(18)),
            ("execution_count", Int),
            ("total_elapsed_time", Int),
            // From sys.dm_exec_sql_text(sql_handle), which SQLite cannot call.
            ("text", Text(4000)),
            ("dbid", Int),
        ],
    ),
    Table::system(
        "sys.dm_os_performance_counters",
        "sys_dm_os_performance_counters",
        &[
            ("object_name", Text(128)),
            ("counter_name", Text(128)),
            ("instance_name", Text(128)),
            ("cntr_value", Int),
            ("cntr_type", Int),
        ],
    ),
    Table::system(
        "sys.conversation_endpoints",
        "sys_conversation_endpoints",
        &[
            ("far_service", Text(256)),
            ("far_broker_instance", Text(128)),
            ("state", Text(2)),
        ],
    ),
    Table::system(
        "sys.transmission_queue",
        "sys_transmission_queue",
        &[
            ("to_service_name", Text(256)),
            ("to_broker_instance", Text(128)),
            ("enqueue_time", DateTime),
        ],
    ),
    Table::system(
        "msdb.dbo.backupset",
        "msdb_backupset",
        &[
            ("database_name", Text(128)),
            ("type", Text(1)),
            ("backup_finish_date", DateTime),
        ],
    ),
];

/// Returns the table with this name.
pub(crate) fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

impl Kind {
    fn sql_type(self, dialect: Dialect) -> String {
        match (dialect, self) {
            (Dialect::Sqlite, Text(_) | DateTime) => "TEXT".into(),
            (Dialect::Sqlite, Int) => "INTEGER".into(),
            (Dialect::Tsql, Text(n)) => format!("NVARCHAR({n})"),
            (Dialect::Tsql, Int) => "BIGINT".into(),
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
        let systems = table("v_R_System").expect("v_R_System");
        let sqlite = systems.create(Dialect::Sqlite);
        let tsql = systems.create(Dialect::Tsql);
        assert!(sqlite.starts_with("CREATE TABLE v_R_System (ResourceID INTEGER PRIMARY KEY,"));
        assert!(tsql.contains("Creation_Date0 DATETIME2"));
        assert!(tsql.contains("Netbios_Name0 NVARCHAR(16)"));
        assert!(!tsql.contains("TEXT"));
        assert!(
            !table("sys_databases")
                .expect("stand-in")
                .seeded_in(Dialect::Tsql)
        );
    }

    #[test]
    fn literals_are_quoted_for_tsql() {
        assert_eq!(
            Text(8).tsql_literal(&Value::Text("O'Neil".into())),
            "N'O''Neil'"
        );
        assert_eq!(Int.tsql_literal(&Value::Int(-3)), "-3");
        assert_eq!(
            DateTime.tsql_literal(&Value::Text("2026-01-05T10:00:00".into())),
            "'2026-01-05T10:00:00'"
        );
    }
}
