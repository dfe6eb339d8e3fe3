//! `hrs bench`: in one run, on the same bytes, the figures every HRS hop is read against
//! and the hops themselves. It writes one run per site (together one merged period) and a
//! crowd of smaller runs, then measures
//!
//! - (a) the storage limit: the bytes written into SQLite, opened as the roles open their
//!   stores, in one transaction;
//! - (b) the network limit: the bytes copied over mutual TLS on loopback;
//! - (c) agent → aggregator: each site's `hrs agent` pushing its run to an `hrs aggregator`
//!   over mutual TLS, one site after another;
//! - (d) aggregator → connection point → intake: from the last site's commit until the
//!   intake has stored the merged period, every role its own process, mutual TLS between;
//! - (e) the crowd pushing at once to an aggregator of its own;
//!
//! and each role's peak memory, CPU time and disk writes in each phase. It reports; it does
//! not judge: a target missed is a figure, a phase that fails is an error.

mod data;
mod limits;
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hrs_aggregator::{MergeStore as _, SqliteMergeStore};
use hrs_core::clock::{Clock as _, SystemClock};
use hrs_core::{HierarchyId, Level, Period, SiteCode};
use hrs_intake::{IntakeStore as _, SqliteIntake};
use sha2::{Digest as _, Sha256};

use crate::cli::BenchArgs;
use crate::demo::configs::{self, LISTEN_ANY, Security, Timings};
use crate::demo::make_pki;
use crate::demo::processes::Processes;
use crate::roles::shutdown_signal;
use crate::usage::{self, Reading};
use data::{Batch, SiteRun};
use report::{MB, Measured, Report, RoleUse};

/// How often the bench looks at a store it waits on: short beside any phase's time.
const POLL: Duration = Duration::from_millis(20);

/// The folders the bench writes in its folder, cleared before it starts.
const OWNED: [&str; 10] = [
    "pki",
    "sites",
    "crowd",
    "runs",
    "limit",
    "aggregator",
    "crowd-aggregator",
    "connection-point",
    "intake",
    "logs",
];

/// Runs the bench and prints its report. Interrupted, it stops every role it started.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    tokio::select! {
        result = bench(args) => result,
        () = shutdown_signal() => bail!("interrupted; the bench's roles were stopped"),
    }
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let (dir, temporary) = match &args.dir {
        Some(dir) => (prepare(dir)?, None),
        None => {
            let temporary = tempfile::Builder::new().prefix("hrs-bench-").tempdir()?;
            (temporary.path().to_owned(), Some(temporary))
        }
    };
    match measure(&args, &dir).await {
        Ok(mut report) => {
            match temporary {
                Some(temporary) => temporary.close()?,
                None => {
                    report.dir = Some(dir.display().to_string());
                    // Kept beside the roles' logs, whichever form was printed.
                    let file = dir.join("report.json");
                    std::fs::write(&file, serde_json::to_string_pretty(&report)?)
                        .with_context(|| format!("cannot write {}", file.display()))?;
                }
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                report::print(&report);
            }
            Ok(())
        }
        Err(error) => {
            // What the roles logged is what explains a failed phase: kept for the reader.
            let kept = temporary.map_or(dir, tempfile::TempDir::keep);
            eprintln!("the bench's files and logs are kept in {}", kept.display());
            Err(error)
        }
    }
}

/// Creates the bench's folder, clearing what an earlier bench left in it.
fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for owned in OWNED {
        let path = dir.join(owned);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot clear {}", path.display()))?;
        }
    }
    Ok(dir.canonicalize()?)
}

/// Writes the runs and measures every phase.
async fn measure(args: &BenchArgs, dir: &Path) -> anyhow::Result<Report> {
    let exe = std::env::current_exe().context("cannot find the hrs binary")?;
    let batch = Batch {
        hierarchy: bench_hierarchy(args.seed),
        period: Period::last_ended(SystemClock.now()),
        seed: args.seed,
    };
    let sites = codes('P', args.sites)?;
    let crowd_sites = codes('C', args.crowd)?;
    let all: Vec<SiteCode> = sites.iter().chain(&crowd_sites).cloned().collect();
    let security = make_pki(&dir.join("pki"), batch.hierarchy, &all)?;

    let per_site = args.mb * MB / u64::from(args.sites);
    eprintln!(
        "writing {} runs of {:.1} MB and {} of {} MB…",
        sites.len(),
        per_site as f64 / MB as f64,
        crowd_sites.len(),
        args.crowd_mb
    );
    let runs = write_runs(&batch, &sites, per_site, &dir.join("sites"), dir).await?;
    let crowd = write_runs(
        &batch,
        &crowd_sites,
        args.crowd_mb * MB,
        &dir.join("crowd"),
        dir,
    )
    .await?;
    let files: Vec<PathBuf> = runs.iter().map(|r| r.file.clone()).collect();
    let bytes: u64 = runs.iter().map(|r| r.bytes).sum();

    eprintln!("(a) writing them into SQLite in one transaction…");
    let limit = dir.join("limit");
    let (written, elapsed) = limits::sqlite(&limit.join("limit.sqlite"), &files).await?;
    same_bytes("(a)", written, bytes)?;
    let a = Measured {
        bytes: written,
        elapsed,
    };
    std::fs::remove_dir_all(&limit)?;

    eprintln!("(b) copying them over TLS on loopback…");
    let (copied, elapsed) = limits::tls_copy(&dir.join("pki"), &files).await?;
    same_bytes("(b)", copied, bytes)?;
    let b = Measured {
        bytes: copied,
        elapsed,
    };

    let hops = hops(&exe, dir, &batch, &security, &runs).await?;
    let crowded = crowd_push(&exe, dir, &batch, &security, &crowd).await?;

    let crowd_bytes: u64 = crowd.iter().map(|r| r.bytes).sum();
    let names = [
        "SQLite, one transaction (storage limit)".to_owned(),
        "TLS copy on loopback (network limit)".to_owned(),
        "agent → aggregator, mTLS".to_owned(),
        "aggregator → connection point → intake".to_owned(),
        format!("{} sites at once → aggregator", crowd.len()),
    ];
    let c = Measured {
        bytes,
        elapsed: hops.site_times.iter().sum(),
    };
    let d = Measured {
        bytes,
        elapsed: hops.forward_time,
    };
    let e = Measured {
        bytes: crowd_bytes,
        elapsed: crowded.time,
    };
    let site_seconds = hops
        .site_times
        .iter()
        .map(|t| report::round(t.as_secs_f64(), 3))
        .collect();
    let mut roles = hops.roles;
    roles.extend(crowded.roles);
    Ok(Report {
        command: format!(
            "hrs bench --mb {} --sites {} --crowd {} --crowd-mb {} --seed {}",
            args.mb, args.sites, args.crowd, args.crowd_mb, args.seed
        ),
        machine: report::Machine::this(),
        period: batch.period.to_string(),
        run_bytes: runs.iter().map(|r| r.bytes).collect(),
        crowd_run_bytes: crowd.iter().map(|r| r.bytes).collect(),
        phases: report::phases(names, [a, b, c, d, e], site_seconds, hops.period_bytes),
        roles,
        dir: None,
    })
}

/// Site codes `P01`, `P02`, … (or with another letter), `count` of them.
fn codes(letter: char, count: u32) -> anyhow::Result<Vec<SiteCode>> {
    (1..=count)
        .map(|n| Ok(format!("{letter}{n:02}").parse()?))
        .collect()
}

/// The bench's hierarchy ID, from its seed.
fn bench_hierarchy(seed: u64) -> HierarchyId {
    let digest = Sha256::digest(format!("hrs-bench-hierarchy:{seed}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    HierarchyId::new(uuid::Builder::from_random_bytes(bytes).into_uuid())
}

fn same_bytes(phase: &str, carried: u64, bytes: u64) -> anyhow::Result<()> {
    if carried != bytes {
        bail!("{phase} carried {carried} bytes of the {bytes} it was given");
    }
    Ok(())
}

/// Writes the runs of `sites`, each of about `target` bytes, as many at a time as there
/// are cores: each into the spool in `folders`/SITE, and to a file in `dir`/runs.
async fn write_runs(
    batch: &Batch,
    sites: &[SiteCode],
    target: u64,
    folders: &Path,
    dir: &Path,
) -> anyhow::Result<Vec<SiteRun>> {
    let files = dir.join("runs");
    std::fs::create_dir_all(&files)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runs = Vec::with_capacity(sites.len());
    for group in sites.chunks(cores) {
        let mut writing = tokio::task::JoinSet::new();
        for (n, site) in group.iter().enumerate() {
            let folder = folders.join(site.as_str());
            std::fs::create_dir_all(&folder)?;
            let file = files.join(format!("{site}.run"));
            let (batch, site) = (batch.clone(), site.clone());
            writing.spawn(async move {
                let run = data::site_run(&batch, &site, target, &folder, &file)
                    .await
                    .with_context(|| format!("cannot write the run of {site}"));
                (n, run)
            });
        }
        let mut done: Vec<(usize, SiteRun)> = Vec::with_capacity(group.len());
        while let Some(joined) = writing.join_next().await {
            let (n, run) = joined?;
            done.push((n, run?));
        }
        done.sort_by_key(|(n, _)| *n);
        runs.extend(done.into_iter().map(|(_, run)| run));
    }
    Ok(runs)
}

/// What (c) and (d) measured.
struct Hops {
    /// Each site's time from starting its agent until the aggregator committed its run.
    site_times: Vec<Duration>,
    /// From the last site's commit until the intake stored the merged period.
    forward_time: Duration,
    /// The size of the merged period the intake stored.
    period_bytes: u64,
    /// Each role's use in (c) and (d).
    roles: Vec<RoleUse>,
}

/// (c) and (d): a whole hierarchy, every role its own process, mutual TLS between them.
async fn hops(
    exe: &Path,
    dir: &Path,
    batch: &Batch,
    security: &Security,
    runs: &[SiteRun],
) -> anyhow::Result<Hops> {
    let common = common(batch, security);
    let mut processes = Processes::new(exe.to_owned(), dir.join("logs"))?;
    let intake = processes
        .start_configured(
            "intake",
            &dir.join("intake").join("intake.toml"),
            &configs::intake(security, None),
        )
        .await?;
    let cp = processes
        .start_configured(
            "connection-point",
            &dir.join("connection-point").join("connection-point.toml"),
            &configs::connection_point(&common, false, &intake),
        )
        .await?;
    let codes: Vec<SiteCode> = runs.iter().map(|r| r.site.clone()).collect();
    let aggregator = processes
        .start_configured(
            "aggregator",
            &dir.join("aggregator").join("aggregator.toml"),
            &configs::aggregator(&common, &codes, &cp),
        )
        .await?;
    let merge = merge_store(&dir.join("aggregator"), &mut processes).await?;
    let intake_store = SqliteIntake::open(&dir.join("intake").join("intake.sqlite"))?;
    let servers = ["aggregator", "connection-point", "intake"].map(|role| pid(&processes, role));
    let [aggregator_pid, cp_pid, intake_pid] = servers;
    let aggregator_pid = aggregator_pid?;

    let total: u64 = runs.iter().map(|r| r.bytes).sum();
    eprintln!(
        "(c) {} agents pushing to the aggregator, one after another…",
        runs.len()
    );
    let aggregator_before = begin(aggregator_pid)?;
    let mut site_times = Vec::with_capacity(runs.len());
    let mut agents = Vec::with_capacity(runs.len());
    for run in runs {
        let config = agent_config(&common, batch, run, &aggregator)?;
        let started = Instant::now();
        // A service agent: the period is already collected in its spool, so it only delivers.
        processes.start_agent_with(&run.site, &config, &[])?;
        let mut wait = Wait::new(format!("the run of {}", run.site), run.bytes, &processes);
        while !committed(&merge, run)? {
            wait.next(&mut processes).await?;
        }
        site_times.push(started.elapsed());
        agents.push(end(&processes, run.site.as_str(), &Reading::default())?);
    }
    let forward_started = Instant::now();
    let aggregator_c = end(&processes, "aggregator", &aggregator_before)?;

    eprintln!("(d) the merged period on its way to the intake…");
    let (cp_pid, intake_pid) = (cp_pid?, intake_pid?);
    let before = [begin(aggregator_pid)?, begin(cp_pid)?, begin(intake_pid)?];
    let mut wait = Wait::new("the merged period at the intake", total, &processes);
    let hierarchy_hash = batch.hierarchy.hashed();
    loop {
        let submissions = intake_store.submissions().await?;
        if submissions
            .iter()
            .any(|s| s.period == batch.period && s.hierarchy_hash == hierarchy_hash)
        {
            break;
        }
        wait.next(&mut processes).await?;
    }
    let forward_time = forward_started.elapsed();
    let [aggregator_d, cp_d, intake_d] = [
        end(&processes, "aggregator", &before[0])?,
        end(&processes, "connection-point", &before[1])?,
        end(&processes, "intake", &before[2])?,
    ];
    let period_bytes = intake_store
        .last_accepted(&hierarchy_hash)
        .await?
        .map_or(0, |stored| stored.size());
    processes.stop().await;
    Ok(Hops {
        site_times,
        forward_time,
        period_bytes,
        roles: vec![
            RoleUse::of("agent", "c", &agents),
            RoleUse::of("aggregator", "c", &[aggregator_c]),
            RoleUse::of("aggregator", "d", &[aggregator_d]),
            RoleUse::of("connection point", "d", &[cp_d]),
            RoleUse::of("intake", "d", &[intake_d]),
        ],
    })
}

/// What (e) measured.
struct Crowd {
    /// From starting the first agent until the aggregator committed the last run.
    time: Duration,
    /// The agents' and the aggregator's use.
    roles: Vec<RoleUse>,
}

/// (e): every crowd site's agent started at once, pushing to an aggregator of their own.
async fn crowd_push(
    exe: &Path,
    dir: &Path,
    batch: &Batch,
    security: &Security,
    runs: &[SiteRun],
) -> anyhow::Result<Crowd> {
    let mut processes = Processes::new(exe.to_owned(), dir.join("logs").join("crowd"))?;
    let sites = runs
        .iter()
        .map(|r| format!("\"{}\"", r.site))
        .collect::<Vec<_>>()
        .join(", ");
    let aggregator = processes
        .start_configured(
            "aggregator",
            &dir.join("crowd-aggregator").join("aggregator.toml"),
            &format!(
                r#"# HRS aggregator for the crowd of `hrs bench`: takes every site's run, forwards nothing.
listen = "{LISTEN_ANY}"
hierarchy_id = "{}"
level = "Full"
store = "merge.sqlite"
sites = [{sites}]
{}"#,
                batch.hierarchy,
                security.settings("aggregator")
            ),
        )
        .await?;
    let merge = merge_store(&dir.join("crowd-aggregator"), &mut processes).await?;
    let common = common(batch, security);
    let configs_written = runs
        .iter()
        .map(|run| agent_config(&common, batch, run, &aggregator))
        .collect::<anyhow::Result<Vec<_>>>()?;

    eprintln!(
        "(e) {} agents pushing to an aggregator at once…",
        runs.len()
    );
    let before = begin(pid(&processes, "aggregator")?)?;
    let started = Instant::now();
    for (run, config) in runs.iter().zip(&configs_written) {
        processes.start_agent_with(&run.site, config, &[])?;
    }
    let total: u64 = runs.iter().map(|r| r.bytes).sum();
    let mut wait = Wait::new("the crowd's runs", total, &processes);
    loop {
        let held = merge.current_runs()?;
        if runs
            .iter()
            .all(|run| held.iter().any(|h| h.run_id == run.run_id))
        {
            break;
        }
        wait.next(&mut processes).await?;
    }
    let time = started.elapsed();
    let aggregator = end(&processes, "aggregator", &before)?;
    let agents = runs
        .iter()
        .map(|run| end(&processes, run.site.as_str(), &Reading::default()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    processes.stop().await;
    Ok(Crowd {
        time,
        roles: vec![
            RoleUse::of("agent", "e", &agents),
            RoleUse::of("aggregator", "e", &[aggregator]),
        ],
    })
}

/// What every role's configuration of the bench shares: its hierarchy, at Full, so every
/// byte of every run leaves, over mutual TLS.
fn common<'a>(batch: &Batch, security: &'a Security) -> configs::Common<'a> {
    configs::Common {
        hierarchy: batch.hierarchy,
        level: Level::Full,
        timings: Timings::new(false, batch.period, SystemClock.now()),
        security,
    }
}

/// Writes the configuration of a site's agent beside its spool, pointed at `aggregator`.
fn agent_config(
    common: &configs::Common<'_>,
    batch: &Batch,
    run: &SiteRun,
    aggregator: &str,
) -> anyhow::Result<PathBuf> {
    let config = run.folder.join("agent.toml");
    configs::write(
        &config,
        &configs::agent(common, &run.site, "primary", batch.period, aggregator),
    )?;
    Ok(config)
}

/// The merge store of the aggregator in `folder`, read-only, once the aggregator has made
/// it: it listens before it opens its store.
async fn merge_store(folder: &Path, processes: &mut Processes) -> anyhow::Result<SqliteMergeStore> {
    let path = folder.join("merge.sqlite");
    let mut wait = Wait::new("the aggregator's store", 0, processes);
    loop {
        if let Ok(store) = SqliteMergeStore::open_read_only(&path)
            && store.current_runs().is_ok()
        {
            return Ok(store);
        }
        wait.next(processes).await?;
    }
}

/// True once the aggregator has committed `run`, whole.
fn committed(merge: &SqliteMergeStore, run: &SiteRun) -> anyhow::Result<bool> {
    match merge
        .current_runs()?
        .into_iter()
        .find(|held| held.run_id == run.run_id)
    {
        Some(held) if held.size == run.bytes => Ok(true),
        Some(held) => bail!(
            "the aggregator holds {} bytes of the {}-byte run of {}",
            held.size,
            run.bytes,
            run.site
        ),
        None => Ok(false),
    }
}

fn pid(processes: &Processes, name: &str) -> anyhow::Result<u32> {
    processes
        .pid(name)
        .with_context(|| format!("the {name} is not running"))
}

/// Starts a phase for a process: its peak memory afresh, and its counters as they stand.
fn begin(pid: u32) -> anyhow::Result<Reading> {
    usage::reset_peak(pid);
    usage::read(pid).with_context(|| format!("cannot read process {pid}"))
}

/// Ends a phase for a running role: what it did since `before`.
fn end(processes: &Processes, name: &str, before: &Reading) -> anyhow::Result<Reading> {
    let pid = pid(processes, name)?;
    let now = usage::read(pid).with_context(|| format!("cannot read the {name}'s process"))?;
    Ok(now.since(before))
}

/// How often a long wait says it is still waiting.
const STILL_WAITING: Duration = Duration::from_secs(60);

/// A bounded wait for the roles to carry something: gives up, saying what the logs last
/// complained of, once it has taken far longer than any phase should, or a role stopped.
struct Wait {
    what: String,
    started: Instant,
    until: Instant,
    logs: PathBuf,
    /// Minutes already told of, so a long wait is told once a minute.
    told: u64,
}

impl Wait {
    /// A wait for `what`, of `bytes`: ten minutes, and four seconds per MB, far longer than
    /// a phase takes at any rate the bench has seen, so a slow phase is measured, not cut.
    fn new(what: impl Into<String>, bytes: u64, processes: &Processes) -> Self {
        let patience = Duration::from_secs(600 + 4 * bytes / MB);
        let started = Instant::now();
        Self {
            what: what.into(),
            started,
            until: started + patience,
            logs: processes.logs().to_owned(),
            told: 0,
        }
    }

    /// Waits a little, failing when a role has stopped or the wait is over.
    async fn next(&mut self, processes: &mut Processes) -> anyhow::Result<()> {
        processes.check_running()?;
        let waited = self.started.elapsed();
        let minutes = waited.as_secs() / STILL_WAITING.as_secs();
        if minutes > self.told {
            self.told = minutes;
            eprintln!(
                "    still waiting for {} ({} s)…",
                self.what,
                waited.as_secs()
            );
        }
        if Instant::now() > self.until {
            let complaint = last_complaint(&self.logs)
                .map(|line| format!(": the logs last said {line:?}"))
                .unwrap_or_default();
            bail!(
                "{} did not arrive in time{complaint}; see {}",
                self.what,
                self.logs.display()
            );
        }
        tokio::time::sleep(POLL).await;
        Ok(())
    }
}

/// The last warning or error in the roles' logs, from the log written to last.
fn last_complaint(logs: &Path) -> Option<String> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(logs)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            Some((entry.metadata().ok()?.modified().ok()?, entry.path()))
        })
        .collect();
    files.sort();
    files.iter().rev().find_map(|(_, path)| {
        std::fs::read_to_string(path)
            .ok()?
            .lines()
            .rev()
            .find(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .map(str::to_owned)
    })
}
