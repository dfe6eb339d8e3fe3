//! The command line: one subcommand per role and per operator tool.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use hrs_core::report::Format;
use hrs_core::{HierarchyId, Level, Period, SiteCode};

/// HRS: carries a management hierarchy's weekly diagnostics and usage data from every
/// site up to one place, merges it, and hands it to the one role that may send it out.
#[derive(Debug, Parser)]
#[command(name = "hrs", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a site's agent: collect on schedule, spool, push upstream.
    Agent {
        /// The agent's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Collect the configured period now, deliver it, and exit.
        #[arg(long)]
        once: bool,
        /// With --once: give up delivering after this many seconds (the run stays spooled).
        #[arg(long, default_value_t = 120)]
        deadline_seconds: u64,
    },
    /// Run the aggregator: receive, store and merge every site's runs.
    Aggregator(Serve),
    /// Run the connection point: submit merged periods, or bundle them when offline.
    ConnectionPoint(Serve),
    /// Run the reference intake (the service that receives submissions), or manage it.
    Intake(IntakeArgs),
    /// The connection tool, for offline hierarchies.
    #[command(subcommand)]
    ConnectionTool(ToolCommand),
    /// Site database tools.
    #[command(subcommand)]
    Sitedb(SitedbCommand),
    /// Run the catalog once against a site database and print the run, sending nothing.
    Collect(CollectArgs),
    /// Print the health of replication links: an agent's, or every site's at an aggregator.
    Status {
        /// An agent's or an aggregator's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Output format: table or json.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Ask a site to collect and send its periods again (re-initialise its data).
    Reinit {
        /// The aggregator's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The site to re-initialise.
        #[arg(long)]
        site: SiteCode,
        /// Only this period (default: every period the site has delivered).
        #[arg(long)]
        period: Option<Period>,
    },
    /// Release runs an agent holds because too many of their queries failed: its next
    /// delivery sends them, and upstream they replace the site's current data.
    Release {
        /// The agent's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Only this run (default: every held run).
        #[arg(long)]
        run: Option<String>,
    },
    /// Print the merged data held by an aggregator.
    View(ViewArgs),
    /// Build and run a whole demo hierarchy on this machine.
    Demo(DemoArgs),
    /// Deliver one very large run over a link cut every few seconds and report the peak
    /// memory of the agent and the aggregator (a stress measurement, minutes long).
    Stress(StressArgs),
    /// Measure, in one run on the same bytes, the storage and network limits and each hop
    /// of HRS against them, many sites pushing at once, and each role's peak memory (a
    /// benchmark, minutes long; it reports and does not judge).
    Bench(BenchArgs),
    /// Review the query catalog shipped with this build.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Make the hierarchy's CA and the certificates of its sites and roles.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Print the one-way hash of a value exactly as the catalog applies it.
    Hash {
        /// The value: a GUID is hashed as its 16 bytes in .NET order, anything else as UTF-16LE.
        #[arg(required_unless_present = "new_key")]
        value: Option<String>,
        /// Hash keyed (HMAC-SHA-256) with the hierarchy's key in this file.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Write a new random hierarchy hash key to this file (owner-only) and print its id.
        #[arg(long, conflicts_with_all = ["value", "key_file"])]
        new_key: Option<PathBuf>,
    },
}

/// Catalog subcommands.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// List the queries, optionally only those collected at a level.
    List {
        /// Only queries collected at this level (each level includes the lower ones).
        #[arg(long)]
        level: Option<Level>,
        /// Output format: table or json.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Show one query: its SQL, its columns, and what is hashed or dropped.
    Show {
        /// The query's id.
        id: String,
    },
    /// Compare two catalog versions: queries added, removed and changed.
    Diff {
        /// The older version.
        version_a: String,
        /// The newer version.
        version_b: String,
    },
}

/// Where a SQL Server password comes from, when the connection string has none.
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the SQL Server password from this environment variable.
    #[arg(long, conflicts_with = "password_file")]
    pub password_env: Option<String>,
    /// Read the SQL Server password from this file: one line (a final line break is ignored).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

impl PasswordArgs {
    /// The password source these flags name.
    pub fn source(&self) -> Option<hrs_sitedb::PasswordSource> {
        hrs_sitedb::PasswordSource::from_options(
            self.password_env.as_deref(),
            self.password_file.as_deref(),
        )
    }
}

/// Arguments of `hrs collect`.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// The site database: `sqlite:PATH` or an ADO.NET connection string.
    #[arg(long)]
    pub site_db: String,
    /// SQL Server password source.
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Data level to collect at.
    #[arg(long, default_value = "Enhanced")]
    pub level: Level,
    /// Period to collect (default: the last ISO week to have ended); with --periods, the newest.
    #[arg(long)]
    pub period: Option<Period>,
    /// Number of consecutive periods to collect, one after another, ending with --period.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=52))]
    pub periods: u32,
    /// Inject faults drawn from this seed: links cut and delayed through proxies, and the
    /// aggregator, the connection point and agents killed (SIGKILL) and started again.
    /// The result must equal the demo's without faults.
    #[arg(long, value_name = "SEED")]
    pub chaos: Option<u64>,
    /// The site's code, as its run would carry it.
    #[arg(long, default_value = "P01")]
    pub site: SiteCode,
    /// Collect as a central administration site (runs the CAS-scoped queries).
    #[arg(long)]
    pub cas: bool,
    /// The hierarchy's hash key file, to hash keyed as its sites do.
    #[arg(long)]
    pub hash_key_file: Option<PathBuf>,
    /// The hierarchy ID whose hash starts every row.
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000000")]
    pub hierarchy_id: HierarchyId,
    /// Output format: table or json.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

/// Options shared by the server roles.
#[derive(Debug, Args)]
pub struct Serve {
    /// The role's configuration file.
    #[arg(long)]
    pub config: PathBuf,
    /// Write the address actually bound here once listening (useful with port 0).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// `hrs intake`: runs the intake with `--config`, or one of its subcommands.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct IntakeArgs {
    /// What to do instead of running the intake.
    #[command(subcommand)]
    pub command: Option<IntakeCommand>,
    /// The intake's configuration file.
    #[arg(long, required = true)]
    pub config: Option<PathBuf>,
    /// Write the address actually bound here once listening (useful with port 0).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// Intake subcommands.
#[derive(Debug, Subcommand)]
pub enum IntakeCommand {
    /// Make a hierarchy's token, for a connection point that cannot hold a client
    /// certificate: writes the token to an owner-only file and prints the lines to add to
    /// the intake's configuration (which keeps only the token's SHA-256).
    Token {
        /// The hierarchy: its ID (a GUID, hashed here) or its hashed ID as submissions
        /// carry it.
        #[arg(long)]
        hierarchy: String,
        /// The new token file, handed to the connection point as `intake_token_file`.
        #[arg(long)]
        out: PathBuf,
    },
    /// List the hierarchies the intake holds submissions of, with their last submissions.
    List {
        /// The intake's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Output format: table or json.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
}

/// Connection tool subcommands.
#[derive(Debug, Subcommand)]
pub enum ToolCommand {
    /// On the connection point: write every period not yet accepted by the intake into one
    /// bundle file in DEST (removable media).
    Prepare {
        /// The connection point's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The folder to write the bundle to.
        #[arg(long)]
        dest: PathBuf,
    },
    /// On an internet-facing machine: upload every bundle in SOURCE to the intake and
    /// download each hierarchy's update manifest and packages into UPDATES_DEST.
    Connect(ConnectArgs),
    /// On the connection point: verify and import what `connect` downloaded, and mark the
    /// uploaded periods as accepted.
    Import {
        /// The connection point's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The folder `connect` downloaded into.
        #[arg(long)]
        source: PathBuf,
    },
    /// Write exactly what would leave the hierarchy, as CSV, for review.
    Export {
        /// The connection point's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The CSV file to write.
        #[arg(long)]
        dest: PathBuf,
    },
}

/// `hrs connection-tool connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The folder holding the bundles (several hierarchies' bundles may share it).
    #[arg(long)]
    pub source: PathBuf,
    /// The folder to download update manifests and packages into.
    #[arg(long)]
    pub updates_dest: PathBuf,
    /// Which updates to download: latest, all, hotfixes or version=V.
    #[arg(long, default_value = "latest")]
    pub download: String,
    /// An HTTP proxy to reach the intake through (CONNECT), e.g. http://proxy:3128.
    #[arg(long)]
    pub proxy: Option<String>,
    /// The proxy's user; the password comes from HRS_PROXY_PASSWORD.
    #[arg(long)]
    pub proxy_user: Option<String>,
    /// The intake's URL, instead of the one each bundle names.
    #[arg(long)]
    pub intake: Option<String>,
    /// The CA the intake's certificate comes from, for an https:// intake.
    #[arg(long)]
    pub intake_ca: Option<PathBuf>,
    /// A hierarchy's intake token file, when the intake asks for one (one bundle's
    /// hierarchy at a time).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The hierarchy's CA (the ca.pem of `hrs pki`): each bundle must be signed by its
    /// hierarchy's connection point with a certificate from it, or nothing of it is sent.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Take bundles that carry no signature, from a connection point without a PKI
    /// (no [tls]); each is named in the log as unchecked.
    #[arg(long)]
    pub allow_unsigned: bool,
}

/// Site database subcommands.
#[derive(Debug, Subcommand)]
pub enum SitedbCommand {
    /// Create a site database filled with deterministic sample data.
    Seed {
        /// The SQLite file to create (replaced if it exists).
        #[arg(long, conflicts_with = "site_db", required_unless_present = "site_db")]
        db: Option<PathBuf>,
        /// Or any site database: `sqlite:PATH` or an ADO.NET connection string (its seeded
        /// tables are replaced).
        #[arg(long)]
        site_db: Option<String>,
        /// SQL Server password source.
        #[command(flatten)]
        password: PasswordArgs,
        /// The site's code.
        #[arg(long)]
        site: SiteCode,
        /// How many clients the site manages.
        #[arg(long, default_value_t = 200)]
        clients: u32,
        /// Distinct software updates the clients report compliance for; a large number
        /// makes the large site whose Full runs are hundreds of MB.
        #[arg(long, default_value_t = 16)]
        updates: u32,
        /// Updates each client reports compliance for, drawn from --updates.
        #[arg(long, default_value_t = 16)]
        updates_per_client: u32,
        /// Seed of the sample data; the same seed gives the same database.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Check, with the agent's login, that a site database can run the catalog: every view
    /// the queries read, and every query once; exits non-zero when one cannot run.
    Check(SitedbCheckArgs),
}

/// Arguments of `hrs sitedb check`.
#[derive(Debug, Args)]
pub struct SitedbCheckArgs {
    /// The site database: `sqlite:PATH` or an ADO.NET connection string, as the agent's
    /// `site_db`.
    #[arg(long)]
    pub site_db: String,
    /// SQL Server password source.
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Check the queries up to this level.
    #[arg(long, default_value = "Full")]
    pub level: Level,
    /// Check as a central administration site (the CAS-scoped queries).
    #[arg(long)]
    pub cas: bool,
    /// The period the queries are bounded by (default: the last ISO week to have ended).
    #[arg(long)]
    pub period: Option<Period>,
    /// Output format: table or json.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

/// Arguments of `hrs view`.
#[derive(Debug, Args)]
pub struct ViewArgs {
    /// The aggregator's merge store.
    #[arg(long, conflicts_with = "config", required_unless_present = "config")]
    pub store: Option<PathBuf>,
    /// The aggregator's configuration file (its `store` is read).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Only this period.
    #[arg(long)]
    pub period: Option<Period>,
    /// Only this site.
    #[arg(long)]
    pub site: Option<SiteCode>,
    /// Only this catalog query.
    #[arg(long)]
    pub query: Option<String>,
    /// Output format: table, csv or json.
    #[arg(long, default_value = "table")]
    pub format: Format,
}

/// Arguments of `hrs demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder to build the hierarchy in (a new temporary folder, kept, when not given).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Number of primary sites under the CAS.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=25))]
    pub sites: u32,
    /// Clients per site.
    #[arg(long, default_value_t = 200)]
    pub clients: u32,
    /// Seed of the sample data and of the hierarchy ID.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Period to collect (default: the last ISO week to have ended); with --periods, the newest.
    #[arg(long)]
    pub period: Option<Period>,
    /// Number of consecutive periods to collect, one after another, ending with --period.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=52))]
    pub periods: u32,
    /// Inject faults drawn from this seed: links cut and delayed through proxies, and the
    /// aggregator, the connection point and agents killed (SIGKILL) and started again.
    /// The result must equal the demo's without faults.
    #[arg(long, value_name = "SEED")]
    pub chaos: Option<u64>,
    /// Data level of the hierarchy.
    #[arg(long, default_value = "Enhanced")]
    pub level: Level,
    /// Deliver as a bundle for the connection tool instead of to the intake.
    #[arg(long)]
    pub offline: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Let the roles talk in plaintext instead of mutual TLS with a PKI made in DIR/pki.
    #[arg(long)]
    pub insecure: bool,
    /// Keep the hierarchy serving until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
}

/// Arguments of `hrs stress`.
#[derive(Debug, Args)]
pub struct StressArgs {
    /// Folder to work in (a new temporary folder, kept, when not given).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Clients of the large site.
    #[arg(long, default_value_t = 50_000)]
    pub clients: u32,
    /// Distinct software updates the clients report on; with the defaults, the site's
    /// Full run is over 200 MB.
    #[arg(long, default_value_t = 1_500_000)]
    pub updates: u32,
    /// Updates each client reports on.
    #[arg(long, default_value_t = 120)]
    pub updates_per_client: u32,
    /// The link between agent and aggregator is cut after at most this many seconds.
    #[arg(long, default_value_t = 5)]
    pub cut_every_seconds: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `hrs bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Megabytes (10^6 bytes) of the one merged period the storage limit, the TLS copy and
    /// every hop carry, made of one run per site. The connection point and the intake keep a
    /// period in one SQLite blob, so it may be at most 953 MiB (999 MB).
    #[arg(long, default_value_t = 992, value_parser = clap::value_parser!(u64).range(1..=999))]
    pub mb: u64,
    /// Sites whose runs make up the period, each sending an equal share.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub sites: u32,
    /// Sites pushing a run to the aggregator at once, in the crowd phase.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub crowd: u32,
    /// Megabytes of each crowd site's run.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..=999))]
    pub crowd_mb: u64,
    /// Folder to work in, kept afterwards (a temporary folder, removed when the bench
    /// succeeds, when not given).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seed of the runs' rows: the same seed, the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// PKI subcommands.
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a hierarchy CA in a folder (ca.pem, and ca.key readable by its owner only).
    Init {
        /// The folder; it must not hold a CA already.
        #[arg(long)]
        dir: PathBuf,
        /// A name for the CA, shown in its subject.
        #[arg(long, default_value = "HRS hierarchy")]
        name: String,
        /// Days the CA is valid (1 to 36525).
        #[arg(long, default_value_t = 3650, value_parser = days())]
        days: u32,
    },
    /// Issue (or renew) a site's or a role's certificate and key from the folder's CA.
    Issue {
        /// The folder holding the CA; the certificate and key are written there.
        #[arg(long)]
        dir: PathBuf,
        /// The site the certificate is for: it names the site, which is then the only site
        /// its holder can write data for.
        #[arg(long, conflicts_with_all = ["role", "region"], required_unless_present_any = ["role", "region"])]
        site: Option<SiteCode>,
        /// Or the role: aggregator (the top one, which offers periods to the connection
        /// point), connection-point (with --hierarchy) or intake.
        #[arg(long, conflicts_with = "region")]
        role: Option<hrs_pki::Role>,
        /// Or a region aggregator's region: it relays only the sites the aggregator above
        /// lists for this region under `[[regions]]`.
        #[arg(long)]
        region: Option<hrs_pki::Region>,
        /// For a connection point: the hierarchy (its ID or hashed ID) whose periods it may
        /// submit to the intake, and no other's.
        #[arg(long, required_if_eq("role", "connection-point"), conflicts_with_all = ["site", "region"], value_parser = hierarchy)]
        hierarchy: Option<String>,
        /// Host names or addresses a role serves under (repeatable).
        #[arg(long = "host", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
        hosts: Vec<String>,
        /// Days the certificate is valid (1 to 36525).
        #[arg(long, default_value_t = 397, value_parser = days())]
        days: u32,
    },
}

/// The validity a certificate may be given: a certificate of no days is expired as it is
/// written, and one beyond a hundred years is a typing mistake.
fn days() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=i64::from(hrs_pki::MAX_DAYS))
}

/// Reads `--hierarchy` as the hashed ID a connection point's certificate names.
fn hierarchy(text: &str) -> Result<String, String> {
    hrs_pki::hierarchy_hash(text).map_err(|e| e.to_string())
}
