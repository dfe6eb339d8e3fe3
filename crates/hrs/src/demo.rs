//! `hrs demo`: a whole hierarchy on this machine. It seeds a site database per site,
//! writes the configuration file of every role (the same files an operator would deploy),
//! starts each role as its own process of this binary on loopback, runs one collection at
//! every site, waits until the merged period has left through the connection point, and
//! prints what happened.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use hrs_aggregator::merge::{Merged, merge};
use hrs_aggregator::{MergeStore as _, SqliteMergeStore};
use hrs_core::catalog::Catalog;
use hrs_core::{HierarchyId, Level, Period, SiteCode};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::process::{Child, Command};

use crate::cli::DemoArgs;
use crate::roles::shutdown_signal;

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agents may take to collect and deliver.
const AGENT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the merged period may take to reach the intake or the outbox.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the demo looks at a file or store it is waiting on.
const POLL: Duration = Duration::from_millis(50);

/// One site's line of the summary.
#[derive(Debug, Serialize)]
struct SiteSummary {
    site: String,
    rows: usize,
    queries: usize,
    failed_queries: usize,
}

/// The summary `--json` prints.
#[derive(Debug, Serialize)]
struct Summary {
    hierarchy_id: String,
    hierarchy_hash: String,
    period: String,
    level: String,
    sites: Vec<SiteSummary>,
    merged_rows: usize,
    delivered: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    submission_id: Option<String>,
    digest: String,
    dir: String,
    logs: String,
    view_command: String,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = prepare_dir(args.dir.as_deref())?;
    let exe = std::env::current_exe().context("cannot find the hrs binary")?;
    let period = args.period.unwrap_or_else(Period::current);
    let hierarchy = demo_hierarchy(args.seed);
    let mut sites = vec![("CAS".parse::<SiteCode>()?, "cas")];
    for n in 1..=args.sites {
        sites.push((format!("P{n:02}").parse()?, "primary"));
    }
    let codes: Vec<SiteCode> = sites.iter().map(|(code, _)| code.clone()).collect();

    tracing::info!(dir = %dir.display(), %hierarchy, %period, "building the demo hierarchy");
    for (code, _) in &sites {
        let db = dir.join("sites").join(code.as_str()).join("sitedb.sqlite");
        std::fs::create_dir_all(db.parent().unwrap_or(&dir))?;
        let context = format!("cannot seed the site database {}", db.display());
        let (code, clients, seed) = (code.clone(), args.clients, args.seed);
        tokio::task::spawn_blocking(move || hrs_sitedb::seed(&db, &code, clients, seed))
            .await?
            .context(context)?;
    }

    let mut roles = Roles::new(exe.clone(), dir.join("logs"))?;
    let intake_config = dir.join("intake").join("intake.toml");
    write_config(&intake_config, &intake_toml())?;
    let intake = roles.start_server("intake", &intake_config).await?;

    let cp_config = dir.join("connection-point").join("connection-point.toml");
    write_config(
        &cp_config,
        &connection_point_toml(hierarchy, args.level, args.offline, &intake),
    )?;
    let cp = roles.start_server("connection-point", &cp_config).await?;

    let aggregator_config = dir.join("aggregator").join("aggregator.toml");
    write_config(
        &aggregator_config,
        &aggregator_toml(hierarchy, args.level, &codes, &cp),
    )?;
    let aggregator = roles.start_server("aggregator", &aggregator_config).await?;

    let mut agents = Vec::new();
    for (code, site_type) in &sites {
        let config = dir.join("sites").join(code.as_str()).join("agent.toml");
        write_config(
            &config,
            &agent_toml(code, site_type, hierarchy, args.level, period, &aggregator),
        )?;
        agents.push((code.clone(), roles.start_agent(code, &config)?));
    }
    for (code, child) in agents {
        let status = tokio::time::timeout(AGENT_TIMEOUT, child.wait_with_output())
            .await
            .with_context(|| format!("the agent of {code} did not finish in time"))??
            .status;
        if !status.success() {
            bail!(
                "the agent of {code} failed ({status}); see {}",
                roles.log_path(&format!("agent-{code}")).display()
            );
        }
    }

    let cp_settings = hrs_connection::ConnectionPointConfig::load(&cp_config)?;
    let state = wait_delivered(&cp_settings, &period.to_string(), &mut roles).await?;

    let store_path = dir.join("aggregator").join("merge.sqlite");
    let merged = merged_period(&store_path, hierarchy, args.level, &codes, period)?;
    let summary = summarize(
        &merged,
        hierarchy,
        args.level,
        args.offline,
        state,
        &dir,
        &exe,
        &store_path,
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_table(&summary);
    }
    if args.keep_running {
        eprintln!("the hierarchy keeps serving; press Ctrl-C to stop it");
        shutdown_signal().await;
    }
    roles.stop().await;
    Ok(())
}

/// Returns the demo's hierarchy ID: derived from the seed, so the same flags give the same
/// hierarchy.
fn demo_hierarchy(seed: u64) -> HierarchyId {
    let digest = Sha256::digest(format!("hrs-demo-hierarchy:{seed}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    HierarchyId::new(uuid::Builder::from_random_bytes(bytes).into_uuid())
}

/// Creates the demo folder, clearing what an earlier demo left in it (only the folders
/// the demo itself writes).
fn prepare_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for owned in [
                "intake",
                "connection-point",
                "aggregator",
                "sites",
                "logs",
                "run",
            ] {
                let path = dir.join(owned);
                if path.exists() {
                    std::fs::remove_dir_all(&path)
                        .with_context(|| format!("cannot clear {}", path.display()))?;
                }
            }
            dir.to_owned()
        }
        None => tempfile::Builder::new()
            .prefix("hrs-demo-")
            .tempdir()?
            .keep(),
    };
    std::fs::create_dir_all(dir.join("run"))?;
    Ok(std::fs::canonicalize(&dir)?)
}

fn write_config(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Loopback with port 0: the role picks a free port, reports it, and the demo writes the
/// port it got back into the file, so the file on disk is what is running.
const LISTEN_ANY: &str = "127.0.0.1:0";

fn intake_toml() -> String {
    format!(
        r#"# HRS intake: the service that receives each hierarchy's merged periods.
listen = "{LISTEN_ANY}"
# Submissions, per hashed hierarchy ID (relative paths are relative to this file).
store = "intake.sqlite"
# How long submissions are kept.
retention_days = 365
"#
    )
}

fn connection_point_toml(
    hierarchy: HierarchyId,
    level: Level,
    offline: bool,
    intake: &str,
) -> String {
    let mode = if offline { "offline" } else { "online" };
    format!(
        r#"# HRS connection point, at the top-level site: the only role that sends data out.
listen = "{LISTEN_ANY}"
hierarchy_id = "{hierarchy}"
# What leaves the hierarchy never exceeds this level (Basic, Enhanced or Full).
level = "{level}"
# online: submit to the intake; offline: write bundles to the outbox for the connection tool.
mode = "{mode}"
store = "connection-point.sqlite"
intake = "http://{intake}"
outbox = "outbox"
retry_seconds = 5
"#
    )
}

fn aggregator_toml(
    hierarchy: HierarchyId,
    level: Level,
    sites: &[SiteCode],
    connection_point: &str,
) -> String {
    let sites = sites
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"# HRS aggregator, at the CAS: receives every site's runs and merges them per period.
listen = "{LISTEN_ANY}"
hierarchy_id = "{hierarchy}"
level = "{level}"
store = "merge.sqlite"
# Every site expected to report; a period is complete once each has.
sites = [{sites}]
connection_point = "http://{connection_point}"
# Forward a period with sites missing this many hours after it ends.
period_deadline_hours = 72
retry_seconds = 5
"#
    )
}

fn agent_toml(
    site: &SiteCode,
    site_type: &str,
    hierarchy: HierarchyId,
    level: Level,
    period: Period,
    aggregator: &str,
) -> String {
    format!(
        r#"# HRS agent of site {site}: runs the catalog weekly and pushes each run upstream.
site = "{site}"
site_type = "{site_type}"
hierarchy_id = "{hierarchy}"
level = "{level}"
site_db = "sqlite:sitedb.sqlite"
spool = "spool.sqlite"
upstream = "http://{aggregator}"
# The demo collects one fixed period; leave this out to collect the current ISO week.
period = "{period}"
check_minutes = 60
retry_max_seconds = 10
"#
    )
}

/// The role processes the demo started; any still running are killed if the demo fails.
struct Roles {
    exe: PathBuf,
    logs: PathBuf,
    servers: Vec<(String, Child)>,
}

impl Roles {
    fn new(exe: PathBuf, logs: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&logs)?;
        Ok(Self {
            exe,
            logs,
            servers: Vec::new(),
        })
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    fn command(&self, name: &str, args: &[&str]) -> anyhow::Result<Command> {
        let log = File::create(self.log_path(name))?;
        let mut command = Command::new(&self.exe);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            )
            .kill_on_drop(true);
        Ok(command)
    }

    /// Starts a server role and returns the address it listens on, once it listens.
    async fn start_server(&mut self, role: &str, config: &Path) -> anyhow::Result<String> {
        let ready = config.with_extension("addr");
        let _ = std::fs::remove_file(&ready);
        let config_arg = config.display().to_string();
        let ready_arg = ready.display().to_string();
        let mut child = self
            .command(
                role,
                &[role, "--config", &config_arg, "--ready-file", &ready_arg],
            )?
            .spawn()
            .with_context(|| format!("cannot start the {role}"))?;
        let started = tokio::time::Instant::now();
        let addr = loop {
            if let Ok(addr) = std::fs::read_to_string(&ready) {
                break addr;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the {role} exited ({status}) before listening; see {}",
                    self.log_path(role).display()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("the {role} did not start listening in time");
            }
            tokio::time::sleep(POLL).await;
        };
        let _ = std::fs::remove_file(&ready);
        let text = std::fs::read_to_string(config)?;
        std::fs::write(
            config,
            text.replace(
                &format!("listen = \"{LISTEN_ANY}\""),
                &format!("listen = \"{addr}\""),
            ),
        )?;
        tracing::info!(role, addr, "role listening");
        self.servers.push((role.to_owned(), child));
        Ok(addr)
    }

    /// Starts a one-shot agent that collects, delivers and exits.
    fn start_agent(&self, site: &SiteCode, config: &Path) -> anyhow::Result<Child> {
        let config_arg = config.display().to_string();
        self.command(
            &format!("agent-{site}"),
            &["agent", "--config", &config_arg, "--once"],
        )?
        .spawn()
        .with_context(|| format!("cannot start the agent of {site}"))
    }

    /// Fails with the role's log path when a server has stopped.
    fn check_running(&mut self) -> anyhow::Result<()> {
        for (role, child) in &mut self.servers {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the {role} stopped ({status}); see {}",
                    self.logs.join(format!("{role}.log")).display()
                );
            }
        }
        Ok(())
    }

    /// Stops the servers in reverse start order: SIGTERM, then a kill after a deadline.
    async fn stop(&mut self) {
        while let Some((role, mut child)) = self.servers.pop() {
            if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                tracing::warn!(role, "did not stop in time; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

/// Waits until the connection point has delivered `period`: submitted to the intake when
/// online, written as a bundle when offline.
async fn wait_delivered(
    config: &hrs_connection::ConnectionPointConfig,
    period: &str,
    roles: &mut Roles,
) -> anyhow::Result<hrs_connection::PeriodState> {
    let started = tokio::time::Instant::now();
    loop {
        roles.check_running()?;
        if config.store.exists() {
            let states = hrs_connection::periods(config)?;
            if let Some(state) = states
                .into_iter()
                .find(|s| s.period == period && s.state != hrs_connection::State::Pending)
            {
                return Ok(state);
            }
        }
        if started.elapsed() > DELIVERY_TIMEOUT {
            bail!(
                "period {period} was not delivered in time; see {}",
                roles.logs.display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn merged_period(
    store_path: &Path,
    hierarchy: HierarchyId,
    level: Level,
    sites: &[SiteCode],
    period: Period,
) -> anyhow::Result<Merged> {
    let store = SqliteMergeStore::open_read_only(store_path)?;
    let runs = store.current(Some(&period.to_string()), None)?;
    let catalog = Catalog::builtin()?;
    Ok(merge(
        hierarchy,
        level,
        &catalog,
        sites,
        &period.to_string(),
        runs,
    ))
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    merged: &Merged,
    hierarchy: HierarchyId,
    level: Level,
    offline: bool,
    state: hrs_connection::PeriodState,
    dir: &Path,
    exe: &Path,
    store: &Path,
) -> Summary {
    let sites: Vec<SiteSummary> = merged
        .period
        .sites
        .iter()
        .map(|s| SiteSummary {
            site: s.site.clone(),
            rows: s.results.iter().map(|r| r.rows.len()).sum(),
            queries: s.results.len(),
            failed_queries: s.results.iter().filter(|r| !r.error.is_empty()).count(),
        })
        .collect();
    Summary {
        hierarchy_id: hierarchy.to_string(),
        hierarchy_hash: hierarchy.hashed(),
        period: merged.period.period.clone(),
        level: level.to_string(),
        merged_rows: sites.iter().map(|s| s.rows).sum(),
        sites,
        delivered: if offline { "bundle" } else { "intake" },
        bundle: state.bundle_path.map(|p| p.display().to_string()),
        submission_id: state.submission_id,
        digest: merged.period.digest.clone(),
        dir: dir.display().to_string(),
        logs: dir.join("logs").display().to_string(),
        view_command: format!(
            "{} view --store {}",
            shell_quote(&exe.display().to_string()),
            shell_quote(&store.display().to_string())
        ),
    }
}

/// Quotes a path for a POSIX shell when it needs quoting.
fn shell_quote(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn print_table(summary: &Summary) {
    println!(
        "HRS demo hierarchy {} ({} sites), period {}, level {}",
        summary.hierarchy_id,
        summary.sites.len(),
        summary.period,
        summary.level
    );
    println!();
    println!(
        "{:<6} {:>8} {:>8} {:>7}",
        "site", "rows", "queries", "failed"
    );
    for site in &summary.sites {
        println!(
            "{:<6} {:>8} {:>8} {:>7}",
            site.site, site.rows, site.queries, site.failed_queries
        );
    }
    println!("{:<6} {:>8}", "merged", summary.merged_rows);
    println!();
    match (&summary.bundle, &summary.submission_id) {
        (Some(bundle), _) => println!("delivered: bundle {bundle}"),
        (None, Some(id)) => println!("delivered: to the intake, submission {id}"),
        (None, None) => println!("delivered: {}", summary.delivered),
    }
    println!("digest:    {}", summary.digest);
    println!("folder:    {} (logs in {})", summary.dir, summary.logs);
    println!("view:      {}", summary.view_command);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchy_follows_the_seed() {
        assert_eq!(demo_hierarchy(1), demo_hierarchy(1));
        assert_ne!(demo_hierarchy(1), demo_hierarchy(2));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/tmp/a-b/c.sqlite"), "/tmp/a-b/c.sqlite");
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
