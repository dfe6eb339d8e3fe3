//! `hrs demo`: a whole hierarchy on this machine. It seeds a site database per site,
//! writes the configuration file of every role (the same files an operator would deploy),
//! starts each role as its own process of this binary on loopback, runs one collection at
//! every site, waits until the merged period has left through the connection point, and
//! prints what happened.

mod chaos;
pub(crate) mod configs;
pub(crate) mod processes;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use hrs_aggregator::merge::{Merged, merge};
use hrs_aggregator::{MergeStore as _, SqliteMergeStore};
use hrs_core::catalog::Catalog;
use hrs_core::clock::{Clock as _, SystemClock};
use hrs_core::{HierarchyId, Level, Period, SiteCode};
use hrs_intake::{IntakeStore as _, SqliteIntake};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::cli::DemoArgs;
use crate::roles::shutdown_signal;
use chaos::{Chaos, ChaosSummary};
use configs::{Security, Timings};
use processes::Processes;

/// How long the agents may take to collect and deliver.
const AGENT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a merged period may take to reach the intake, online or with the connection tool.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the demo looks at a store it is waiting on.
const POLL: Duration = Duration::from_millis(100);

/// One site's line of the summary.
#[derive(Debug, Serialize)]
struct SiteSummary {
    site: String,
    rows: usize,
    queries: usize,
    failed_queries: usize,
}

/// One period's line of the summary: what the merge store and the intake hold for it.
#[derive(Debug, Serialize)]
struct PeriodSummary {
    period: String,
    merged_rows: usize,
    digest: String,
    /// Submissions the intake holds for this hierarchy and period: one, when nothing was
    /// lost or doubled on the way out.
    intake_submissions: usize,
    /// Digest of what the intake holds (what left the hierarchy, at the level set).
    intake_digest: Option<String>,
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
    periods: Vec<PeriodSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chaos: Option<ChaosSummary>,
    dir: String,
    logs: String,
    view_command: String,
}

/// Where the demo's hierarchy lives and how it is shaped.
struct Layout {
    dir: PathBuf,
    hierarchy: HierarchyId,
    sites: Vec<(SiteCode, &'static str)>,
}

impl Layout {
    fn codes(&self) -> Vec<SiteCode> {
        self.sites.iter().map(|(code, _)| code.clone()).collect()
    }

    fn agent_config(&self, site: &SiteCode) -> PathBuf {
        self.dir
            .join("sites")
            .join(site.as_str())
            .join("agent.toml")
    }

    fn merge_store(&self) -> PathBuf {
        self.dir.join("aggregator").join("merge.sqlite")
    }
}

/// Runs the demo. Interrupted (Ctrl-C or SIGTERM), it stops every role it started
/// rather than leave them running.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let keep_running = args.keep_running;
    let mut processes = tokio::select! {
        result = run_demo(args) => result?,
        () = shutdown_signal() => bail!("interrupted; the demo's roles were stopped"),
    };
    if keep_running {
        eprintln!("the hierarchy keeps serving; press Ctrl-C to stop it");
        shutdown_signal().await;
    }
    processes.stop().await;
    Ok(())
}

/// Builds and runs the hierarchy, prints the summary, and returns the roles still running.
async fn run_demo(args: DemoArgs) -> anyhow::Result<Processes> {
    let dir = prepare_dir(args.dir.as_deref())?;
    let exe = std::env::current_exe().context("cannot find the hrs binary")?;
    let now = SystemClock.now();
    let newest = args.period.unwrap_or_else(|| Period::last_ended(now));
    let periods = periods_ending(newest, args.periods);
    let timings = Timings::new(args.chaos.is_some(), periods[0], now);
    let mut sites = vec![("CAS".parse::<SiteCode>()?, "cas")];
    for n in 1..=args.sites {
        sites.push((format!("P{n:02}").parse()?, "primary"));
    }
    let layout = Layout {
        dir,
        hierarchy: demo_hierarchy(args.seed),
        sites,
    };
    let (dir, hierarchy, codes) = (&layout.dir, layout.hierarchy, layout.codes());

    tracing::info!(dir = %dir.display(), %hierarchy, periods = periods.len(), "building the demo hierarchy");
    for code in &codes {
        let db = dir.join("sites").join(code.as_str()).join("sitedb.sqlite");
        std::fs::create_dir_all(db.parent().unwrap_or(dir))?;
        let context = format!("cannot seed the site database {}", db.display());
        let (code, clients, seed) = (code.clone(), args.clients, args.seed);
        tokio::task::spawn_blocking(move || hrs_sitedb::seed(&db, &code, clients, seed))
            .await?
            .context(context)?;
    }

    let mut chaos = args.chaos.map(Chaos::new);
    if let Some(chaos) = &chaos {
        tracing::warn!(
            seed = chaos.summary().seed,
            "injecting faults: links cut and delayed, roles killed"
        );
    }
    let security = if args.insecure {
        tracing::warn!("--insecure: the roles talk in plaintext, without certificates");
        Security::Insecure
    } else {
        make_pki(&dir.join("pki"), hierarchy, &codes)?
    };
    let common = configs::Common {
        hierarchy,
        level: args.level,
        timings,
        security: &security,
    };
    let mut processes = Processes::new(exe.clone(), dir.join("logs"))?;
    // The connection tool runs on a machine with no certificate: under TLS it presents
    // the hierarchy's token, which the intake knows by its SHA-256.
    let token = match &security {
        Security::Tls(pki) => {
            let token = hrs_core::token::Token::generate();
            let file = pki.join("intake.token");
            hrs_core::files::write_owner_only(&file, token.expose().as_bytes())
                .with_context(|| format!("cannot write {}", file.display()))?;
            Some((token.fingerprint(), file))
        }
        Security::Insecure => None,
    };
    let intake_config = dir.join("intake").join("intake.toml");
    let hierarchy_hash = hierarchy.hashed();
    let intake_text = configs::intake(
        &security,
        token
            .as_ref()
            .map(|(sha256, _)| (hierarchy_hash.as_str(), sha256.as_str())),
    );
    let intake = processes
        .start_configured("intake", &intake_config, &intake_text)
        .await?;
    let intake = faulty_link(&mut chaos, "intake", intake).await?;

    let cp_config = dir.join("connection-point").join("connection-point.toml");
    let cp_text = configs::connection_point(&common, args.offline, &intake);
    let cp = processes
        .start_configured("connection-point", &cp_config, &cp_text)
        .await?;
    let cp = faulty_link(&mut chaos, "connection-point", cp).await?;

    let aggregator_config = dir.join("aggregator").join("aggregator.toml");
    let aggregator_text = configs::aggregator(&common, &codes, &cp);
    let aggregator = processes
        .start_configured("aggregator", &aggregator_config, &aggregator_text)
        .await?;
    let aggregator = faulty_link(&mut chaos, "aggregator", aggregator).await?;

    let cp_settings = hrs_connection::ConnectionPointConfig::load(&cp_config)?;
    let trip = args.offline.then(|| OfflineTrip {
        exe: exe.clone(),
        config: cp_config.clone(),
        media: dir.join("media"),
        downloads: dir.join("downloads"),
        intake_ca: match &security {
            Security::Tls(pki) => Some(pki.join("ca.pem")),
            Security::Insecure => None,
        },
        token_file: token.as_ref().map(|(_, file)| file.clone()),
        intake: format!("{}://{intake}", security.scheme()),
        log: dir.join("logs").join("connection-tool.log"),
    });
    let mut delivered = Vec::new();
    for &period in &periods {
        for (code, site_type) in &layout.sites {
            configs::write(
                &layout.agent_config(code),
                &configs::agent(&common, code, site_type, period, &aggregator),
            )?;
        }
        let merged = match &mut chaos {
            None => {
                for code in &codes {
                    processes.start_agent(code, &layout.agent_config(code), true)?;
                }
                processes.wait_agents(AGENT_TIMEOUT).await?;
                wait_delivered(
                    &layout,
                    &cp_settings,
                    args.level,
                    period,
                    &mut processes,
                    None,
                    trip.as_ref(),
                )
                .await?
            }
            Some(chaos) => {
                // Agents run as services here, so a killed one starts again where its
                // spool left off, as it would on a real site.
                for code in &codes {
                    processes.start_agent(code, &layout.agent_config(code), false)?;
                }
                chaos.arm();
                let merged = wait_delivered(
                    &layout,
                    &cp_settings,
                    args.level,
                    period,
                    &mut processes,
                    Some(chaos),
                    trip.as_ref(),
                )
                .await?;
                processes.stop_agents().await;
                merged
            }
        };
        delivered.push(merged);
    }

    let intake_store = SqliteIntake::open(&dir.join("intake").join("intake.sqlite"))?;
    let submissions = intake_store.submissions().await?;
    let period_summaries = delivered
        .iter()
        .map(|(merged, state)| {
            let held: Vec<_> = submissions
                .iter()
                .filter(|s| s.hierarchy_hash == hierarchy.hashed() && s.period == state.period)
                .collect();
            PeriodSummary {
                period: merged.period.period.clone(),
                merged_rows: merged_rows(merged),
                digest: merged.period.digest.clone(),
                intake_submissions: held.len(),
                intake_digest: held.last().map(|s| s.digest.clone()),
            }
        })
        .collect();
    let (newest_merged, state) = delivered.pop().context("no period was run")?;
    let summary = summarize(
        &newest_merged,
        period_summaries,
        chaos.as_ref().map(Chaos::summary),
        &layout,
        args.level,
        args.offline,
        state,
        &exe,
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_table(&summary);
    }
    Ok(processes)
}

/// Makes the demo hierarchy's PKI: a CA, a certificate for every role (serving on
/// loopback; the connection point's for `hierarchy`) and one per site, as `hrs pki` would.
pub(crate) fn make_pki(
    dir: &Path,
    hierarchy: HierarchyId,
    sites: &[SiteCode],
) -> anyhow::Result<Security> {
    let hosts = ["127.0.0.1".to_owned(), "localhost".to_owned()];
    let now = SystemClock.now();
    hrs_pki::init(dir, "HRS demo hierarchy", 3650, now).context("cannot create the demo CA")?;
    for identity in [
        hrs_pki::Identity::Role(hrs_pki::Role::Aggregator),
        hrs_pki::Identity::ConnectionPoint {
            hierarchy: hierarchy.hashed(),
        },
        hrs_pki::Identity::Role(hrs_pki::Role::Intake),
    ] {
        hrs_pki::issue(dir, &identity, &hosts, 397, now)?;
    }
    for site in sites {
        hrs_pki::issue(dir, &hrs_pki::Identity::Site(site.clone()), &[], 397, now)?;
    }
    Ok(Security::Tls(dir.to_owned()))
}

/// The `count` consecutive periods ending with `newest`, oldest first.
fn periods_ending(newest: Period, count: u32) -> Vec<Period> {
    let mut periods = vec![newest];
    for _ in 1..count {
        periods.push(periods[periods.len() - 1].previous());
    }
    periods.reverse();
    periods
}

/// Routes clients of a role through a faulty link when faults are injected.
async fn faulty_link(
    chaos: &mut Option<Chaos>,
    role: &str,
    addr: String,
) -> anyhow::Result<String> {
    match chaos {
        Some(chaos) => chaos.link_to(role, &addr).await,
        None => Ok(addr),
    }
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
                "pki",
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

/// The offline round trip the demo runs for an offline hierarchy, with the connection
/// tool as an operator would: prepare onto "media", connect from there, import back.
struct OfflineTrip {
    exe: PathBuf,
    config: PathBuf,
    media: PathBuf,
    downloads: PathBuf,
    intake_ca: Option<PathBuf>,
    token_file: Option<PathBuf>,
    /// The intake, named on the command line as a token requires.
    intake: String,
    log: PathBuf,
}

impl OfflineTrip {
    /// Runs `hrs connection-tool prepare`, `connect` and `import`, their output in `log`.
    async fn carry_out(&self) -> anyhow::Result<()> {
        let config = self.config.display().to_string();
        let media = self.media.display().to_string();
        let downloads = self.downloads.display().to_string();
        let mut connect = vec![
            "connect".to_owned(),
            "--source".into(),
            media.clone(),
            "--updates-dest".into(),
            downloads.clone(),
            "--intake".into(),
            self.intake.clone(),
        ];
        // The demo's one CA issued the intake's certificate and the connection point's,
        // whose signature each bundle carries; without a PKI, bundles are not signed.
        match &self.intake_ca {
            Some(ca) => connect.extend([
                "--intake-ca".into(),
                ca.display().to_string(),
                "--ca".into(),
                ca.display().to_string(),
            ]),
            None => connect.push("--allow-unsigned".into()),
        }
        if let Some(token) = &self.token_file {
            connect.extend(["--token-file".into(), token.display().to_string()]);
        }
        for step in [
            vec![
                "prepare".to_owned(),
                "--config".into(),
                config.clone(),
                "--dest".into(),
                media.clone(),
            ],
            connect,
            vec![
                "import".to_owned(),
                "--config".into(),
                config.clone(),
                "--source".into(),
                downloads.clone(),
            ],
        ] {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)?;
            let status = tokio::process::Command::new(&self.exe)
                .arg("connection-tool")
                .args(&step)
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .status()
                .await?;
            if !status.success() {
                bail!(
                    "hrs connection-tool {} failed; see {}",
                    step[0],
                    self.log.display()
                );
            }
        }
        Ok(())
    }
}

/// Waits until `period` is complete in the merge store (every site's run current) and the
/// intake has acknowledged exactly that merged period: online by the connection point's
/// update check, offline once the connection tool's round trip (`trip`) carried it out and
/// back. Under faults, kills roles while it waits.
#[allow(clippy::too_many_arguments)]
async fn wait_delivered(
    layout: &Layout,
    config: &hrs_connection::ConnectionPointConfig,
    level: Level,
    period: Period,
    processes: &mut Processes,
    mut chaos: Option<&mut Chaos>,
    trip: Option<&OfflineTrip>,
) -> anyhow::Result<(Merged, hrs_connection::PeriodState)> {
    let started = tokio::time::Instant::now();
    loop {
        processes.check_running()?;
        // Under faults, a period counts as delivered only once all its kills have
        // happened: kills after delivery must not double or lose anything either.
        let mut spent = true;
        if let Some(chaos) = chaos.as_deref_mut() {
            chaos.strike(processes).await?;
            spent = chaos.spent();
        }
        if spent && config.store.exists() {
            let state = hrs_connection::periods(config)?
                .into_iter()
                .find(|s| s.period == period);
            if let Some(state) = state {
                let merged = merged_period(layout, level, period)?;
                if merged.complete && merged.period.digest == state.digest {
                    match (state.state, trip) {
                        (hrs_connection::State::Submitted, _) => return Ok((merged, state)),
                        (_, Some(trip)) => {
                            trip.carry_out().await?;
                            continue;
                        }
                        (_, None) => {}
                    }
                }
            }
        }
        if started.elapsed() > DELIVERY_TIMEOUT {
            bail!(
                "period {period} was not delivered in time; see {}",
                processes.logs().display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Merges `period` from the aggregator's store, as the aggregator itself would.
fn merged_period(layout: &Layout, level: Level, period: Period) -> anyhow::Result<Merged> {
    let store = SqliteMergeStore::open_read_only(&layout.merge_store())?;
    let runs = store.current(Some(&period), None)?;
    let catalog = Catalog::builtin()?;
    Ok(merge(
        layout.hierarchy,
        level,
        &catalog,
        &layout.codes(),
        &period.to_string(),
        runs,
    ))
}

fn merged_rows(merged: &Merged) -> usize {
    merged
        .period
        .sites
        .iter()
        .flat_map(|s| &s.results)
        .map(|r| r.rows.len())
        .sum()
}

/// The digest of the whole merge store the demo filled: the period's own digest when there
/// is one period, else a SHA-256 over every period's name and digest, in order.
fn store_digest(periods: &[PeriodSummary]) -> String {
    match periods {
        [one] => one.digest.clone(),
        many => {
            let mut hasher = Sha256::new();
            for period in many {
                hasher.update(format!("{} {}\n", period.period, period.digest));
            }
            hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    newest: &Merged,
    periods: Vec<PeriodSummary>,
    chaos: Option<ChaosSummary>,
    layout: &Layout,
    level: Level,
    offline: bool,
    state: hrs_connection::PeriodState,
    exe: &Path,
) -> Summary {
    let sites: Vec<SiteSummary> = newest
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
    let dir = &layout.dir;
    Summary {
        hierarchy_id: layout.hierarchy.to_string(),
        hierarchy_hash: layout.hierarchy.hashed(),
        period: newest.period.period.clone(),
        level: level.to_string(),
        merged_rows: periods.iter().map(|p| p.merged_rows).sum(),
        sites,
        // Offline, the data left as a bundle the connection tool carried to the intake.
        delivered: if offline { "bundle" } else { "intake" },
        bundle: state.bundle_path.map(|p| p.display().to_string()),
        submission_id: state.submission_id,
        digest: store_digest(&periods),
        periods,
        chaos,
        dir: dir.display().to_string(),
        logs: dir.join("logs").display().to_string(),
        view_command: format!(
            "{} view --store {}",
            shell_quote(&exe.display().to_string()),
            shell_quote(&layout.merge_store().display().to_string())
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
    if let [_, _, ..] = summary.periods.as_slice() {
        println!();
        println!("{:<9} {:>8}  digest", "period", "rows");
        for period in &summary.periods {
            println!(
                "{:<9} {:>8}  {}",
                period.period, period.merged_rows, period.digest
            );
        }
    }
    println!("{:<6} {:>8}", "merged", summary.merged_rows);
    println!();
    if let Some(chaos) = &summary.chaos {
        println!(
            "faults:    seed {}, {} kill(s) ({}), {} of {} connections cut",
            chaos.seed,
            chaos.kills.len(),
            chaos.kills.join(", "),
            chaos.cuts,
            chaos.connections
        );
    }
    match (&summary.bundle, &summary.submission_id) {
        (Some(bundle), Some(id)) => {
            println!("delivered: bundle {bundle}, carried by the connection tool, submission {id}")
        }
        (Some(bundle), None) => println!("delivered: bundle {bundle}"),
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
    fn periods_run_back_from_the_newest() {
        let newest: Period = "2026-W02".parse().expect("period");
        let names: Vec<String> = periods_ending(newest, 3)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["2025-W52", "2026-W01", "2026-W02"]);
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/tmp/a-b/c.sqlite"), "/tmp/a-b/c.sqlite");
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
