//! `hrs stress`: one very large run delivered over a link cut every few seconds, with the
//! peak memory of the agent and the aggregator measured while it travels. It seeds a large
//! site, starts an aggregator and an agent as their own processes on loopback with a
//! fault-injecting proxy between them, and reports what the run and the processes did.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hrs_chaos::{Faults, Proxy};
use hrs_core::{HierarchyId, Period, SiteCode};
use serde::Serialize;

use crate::cli::StressArgs;
use crate::demo::configs::{self, LISTEN_ANY};
use crate::demo::processes::Processes;
use crate::usage::{children_peak_kib, peak_kib};

/// How often the processes' peak memory is read.
const SAMPLE: Duration = Duration::from_millis(100);

/// What `hrs stress` reports.
#[derive(Debug, Serialize)]
struct Report {
    run_bytes: u64,
    seeded_rows: u64,
    collect_and_deliver_seconds: f64,
    link_cut_every_seconds: u64,
    connections: u64,
    cuts: u64,
    resumed_uploads: usize,
    agent_peak_mb: f64,
    aggregator_peak_mb: f64,
    dir: String,
}

/// Runs the stress delivery and prints its report.
pub async fn run(args: StressArgs) -> anyhow::Result<()> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => tempfile::Builder::new()
            .prefix("hrs-stress-")
            .tempdir()?
            .keep(),
    };
    for owned in ["aggregator", "site", "logs"] {
        let path = dir.join(owned);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot clear {}", path.display()))?;
        }
    }
    let dir = dir.canonicalize().unwrap_or(dir);
    let site: SiteCode = "P01".parse()?;
    let hierarchy = HierarchyId::new(uuid::Uuid::new_v4());
    let period: Period = "2026-W48".parse()?;

    let db = dir.join("site").join("sitedb.sqlite");
    std::fs::create_dir_all(db.parent().unwrap_or(&dir))?;
    eprintln!(
        "seeding a site of {} clients reporting on {} of {} updates each…",
        args.clients, args.updates_per_client, args.updates
    );
    let size = hrs_sitedb::SiteSize {
        clients: args.clients,
        updates: args.updates,
        updates_per_client: args.updates_per_client,
    };
    let (seed_db, seed_site) = (db.clone(), site.clone());
    let seeded =
        tokio::task::spawn_blocking(move || hrs_sitedb::seed_sized(&seed_db, &seed_site, &size, 1))
            .await??;

    let exe = std::env::current_exe().context("cannot find the hrs binary")?;
    let mut processes = Processes::new(exe, dir.join("logs"))?;
    let aggregator_config = dir.join("aggregator").join("aggregator.toml");
    configs::write(
        &aggregator_config,
        &format!(
            r#"# HRS aggregator for `hrs stress`: receives one large run; forwards nothing.
listen = "{LISTEN_ANY}"
hierarchy_id = "{hierarchy}"
level = "Full"
store = "merge.sqlite"
sites = ["{site}"]
max_run_mb = 953
"#
        ),
    )?;
    let aggregator = processes
        .start_server("aggregator", &aggregator_config)
        .await?;
    let cut_every = Duration::from_secs(args.cut_every_seconds.max(1));
    let faults = Faults {
        max_lifetime: cut_every,
        ..Faults::none()
    };
    let proxy = Proxy::start(aggregator.parse()?, faults, 1).await?;

    let agent_config = dir.join("site").join("agent.toml");
    configs::write(
        &agent_config,
        &format!(
            r#"# HRS agent for `hrs stress`: one Full run of a large site.
site = "{site}"
site_type = "primary"
hierarchy_id = "{hierarchy}"
level = "Full"
site_db = "sqlite:sitedb.sqlite"
spool = "spool.sqlite"
upstream = "http://{}"
period = "{period}"
retry_max_seconds = 2
spool_max_mb = 4096
"#,
            proxy.addr()
        ),
    )?;
    eprintln!(
        "collecting and delivering over a link cut every {} s…",
        cut_every.as_secs()
    );
    let started = Instant::now();
    processes.start_agent_with(
        &site,
        &agent_config,
        &["--once", "--deadline-seconds", "7200"],
    )?;
    let (mut agent_peak, mut aggregator_peak) = (0u64, 0u64);
    let status = loop {
        if let Some(pid) = processes.pid(site.as_str()) {
            agent_peak = agent_peak.max(peak_kib(pid).unwrap_or(0));
        }
        if let Some(pid) = processes.pid("aggregator") {
            aggregator_peak = aggregator_peak.max(peak_kib(pid).unwrap_or(0));
        }
        if let Some(status) = processes.try_wait_agent(site.as_str())? {
            break status;
        }
        processes.check_servers_running()?;
        tokio::time::sleep(SAMPLE).await;
    };
    let elapsed = started.elapsed();
    if let Some(pid) = processes.pid("aggregator") {
        aggregator_peak = aggregator_peak.max(peak_kib(pid).unwrap_or(0));
    }
    // The kernel's own account of the agent, now that it has been waited for.
    agent_peak = agent_peak.max(children_peak_kib());
    if !status.success() {
        bail!(
            "the agent failed ({status}); see {}",
            processes.log_path(&format!("agent-{site}")).display()
        );
    }
    let run_bytes = stored_run_bytes(&dir.join("aggregator").join("merge.sqlite"), &site)?;
    processes.stop().await;

    let resumed_uploads = std::fs::read_to_string(processes.log_path(&format!("agent-{site}")))
        .unwrap_or_default()
        .matches("resuming a broken upload")
        .count();
    let report = Report {
        run_bytes,
        seeded_rows: seeded.rows,
        collect_and_deliver_seconds: (elapsed.as_secs_f64() * 10.0).round() / 10.0,
        link_cut_every_seconds: cut_every.as_secs(),
        connections: proxy.counters().connections.load(Ordering::Relaxed),
        cuts: proxy.counters().cut.load(Ordering::Relaxed),
        resumed_uploads,
        agent_peak_mb: mib(agent_peak),
        aggregator_peak_mb: mib(aggregator_peak),
        dir: dir.display().to_string(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "run of {:.1} MB delivered in {:.1} s over a link cut every {} s ({} cuts, {} resumed uploads)",
            report.run_bytes as f64 / 1e6,
            report.collect_and_deliver_seconds,
            report.link_cut_every_seconds,
            report.cuts,
            report.resumed_uploads
        );
        println!(
            "peak memory: agent {:.1} MB, aggregator {:.1} MB",
            report.agent_peak_mb, report.aggregator_peak_mb
        );
        println!("folder: {}", report.dir);
    }
    Ok(())
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// The size of the run the aggregator committed for `site`.
fn stored_run_bytes(store: &Path, site: &SiteCode) -> anyhow::Result<u64> {
    use hrs_aggregator::MergeStore as _;
    let store = hrs_aggregator::SqliteMergeStore::open_read_only(store)
        .with_context(|| format!("cannot open {}", store.display()))?;
    match store
        .current_runs()?
        .into_iter()
        .find(|run| run.site == *site)
    {
        Some(run) => Ok(run.size),
        None => bail!("the aggregator holds no run of {site}"),
    }
}
