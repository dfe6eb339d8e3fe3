//! Valid inputs for every decoder, made at test time by the real machinery: runs collected
//! from seeded SQLite site databases by the agent's collector, merged by the aggregator's
//! merge, sent out through the connection point's outbound filter, written as a bundle;
//! configuration files from `deploy/` and variants of them; connection strings; ids.
//!
//! Made fresh rather than checked in, so they follow every change of the catalog, the
//! schema and the file formats. Mutations of them reach far deeper than random bytes.

use std::path::Path;
use std::sync::OnceLock;

use hrs_agent::SiteType;
use hrs_agent::collect::{Collection, collect};
use hrs_connection::{Mode, Policy};
use hrs_core::catalog::Catalog;
use hrs_core::hash::Hasher;
use hrs_core::{HierarchyId, Level, Period, SiteCode};
use hrs_proto::v1 as pb;
use prost::Message as _;
use sha2::{Digest as _, Sha256};

/// The hierarchy every seed belongs to (the one in `deploy/` and the end-to-end tests).
pub const HIERARCHY_ID: &str = "3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47";

/// The period every seed run covers.
pub const PERIOD: &str = "2026-W48";

/// Returns the clock every seed is made by: pinned to the Monday after [`PERIOD`], so the
/// seeds are the same on any date.
pub fn clock() -> hrs_core::clock::SharedClock {
    hrs_core::clock::ManualClock::new(MADE_AT).shared()
}

/// The time [`clock`] reads: when every seed was made.
pub const MADE_AT: time::OffsetDateTime = time::macros::datetime!(2026-11-30 06:00 UTC);

/// A fixed hash key (32 bytes of Base64), so keyed seeds are the same in every run.
pub const HASH_KEY: &str = "aHJzLWZ1enotZml4ZWQtaGFzaC1rZXktMzItYnl0ZXM=";

/// Sites the seed aggregator expects; P02 never reports, so merged periods list it missing.
pub const SITES: [&str; 3] = ["CAS", "P01", "P02"];

/// Clients seeded into each site database: enough for rows in every query, few enough
/// that seeds stay a few KiB.
const CLIENTS: u32 = 4;

/// Every kind of valid input, made once per process.
#[derive(Debug)]
pub struct Corpus {
    /// Runs that the run check accepts: several sites, levels and hash modes, and a run of
    /// a site database without tables (every query failed).
    pub runs: Vec<pb::Run>,
    /// Merged periods that `check_merged` accepts, as merged inside the hierarchy and as
    /// sent out of it.
    pub periods: Vec<pb::MergedPeriod>,
    /// Offline bundles (`hrs-bundle/4`, tar files) the connection tool's `prepare` wrote,
    /// which `read_bundle_file` accepts, as bytes.
    pub offline_bundles: Vec<Vec<u8>>,
    /// Agent configuration files that load.
    pub agent_configs: Vec<String>,
    /// Aggregator configuration files that load.
    pub aggregator_configs: Vec<String>,
    /// Connection point configuration files that load.
    pub connection_point_configs: Vec<String>,
    /// Intake configuration files that load.
    pub intake_configs: Vec<String>,
    /// ADO.NET connection strings, most of them valid.
    pub connection_strings: Vec<String>,
    /// Site codes, periods, levels and hierarchy ids, valid ones.
    pub ids: Vec<String>,
}

/// Returns the corpus, making it on first use.
///
/// # Panics
///
/// When the machinery cannot make a valid input (a seeding or collection failure): the
/// fuzz tests cannot run without seeds, and that failure is a bug of its own.
pub fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| make().unwrap_or_else(|e| panic!("cannot make the seed corpus: {e}")))
}

/// Why a seed could not be made.
type SeedError = Box<dyn std::error::Error + Send + Sync>;

fn make() -> Result<Corpus, SeedError> {
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let runs = runtime.block_on(collect_runs(dir.path()))?;
    let periods = merged_periods(&runs)?;
    let offline_bundles = runtime.block_on(offline_bundles(dir.path(), &periods))?;
    Ok(Corpus {
        runs,
        periods,
        offline_bundles,
        agent_configs: agent_configs(),
        aggregator_configs: aggregator_configs(),
        connection_point_configs: connection_point_configs(),
        intake_configs: intake_configs(),
        connection_strings: connection_strings(),
        ids: [
            "P01",
            "CAS",
            "Z9Z",
            "2026-W48",
            "2026-W53",
            "1970-W01",
            "Basic",
            "Enhanced",
            "Full",
            "full",
            HIERARCHY_ID,
            "{3B1F7A52-9C4E-4D7A-8F0E-2A6C5D9E1B47}",
        ]
        .map(str::to_owned)
        .to_vec(),
    })
}

/// Parses a constant known to be valid.
fn parsed<T: std::str::FromStr>(text: &str) -> Result<T, SeedError>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok(text.parse()?)
}

/// Returns the hasher of the seed hierarchy: plain, or keyed with [`HASH_KEY`].
pub fn hasher(keyed: bool) -> Result<Hasher, SeedError> {
    if !keyed {
        return Ok(Hasher::Plain);
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("hierarchy.key");
    std::fs::write(&path, HASH_KEY)?;
    Ok(Hasher::from_key_file(Some(&path))?)
}

async fn collect_runs(dir: &Path) -> Result<Vec<pb::Run>, SeedError> {
    let catalog = Catalog::builtin()?;
    let period: Period = parsed(PERIOD)?;
    let hierarchy_id: HierarchyId = parsed(HIERARCHY_ID)?;
    // (site, type, level, keyed hash, seeded database)
    let plan = [
        ("P01", SiteType::Primary, Level::Full, false, true),
        ("CAS", SiteType::Cas, Level::Enhanced, false, true),
        ("P01", SiteType::Primary, Level::Basic, true, true),
        ("P02", SiteType::Primary, Level::Enhanced, false, false),
    ];
    let mut runs = Vec::new();
    for (n, (site, site_type, level, keyed, seeded)) in plan.into_iter().enumerate() {
        let code: SiteCode = parsed(site)?;
        let db_path = dir.join(format!("site-{n}.sqlite"));
        if seeded {
            hrs_sitedb::seed(&db_path, &code, CLIENTS, n as u64 + 1)?;
        } else {
            // An empty file is an empty SQLite database: every query fails, so the run
            // carries result sets with errors and no rows.
            std::fs::write(&db_path, b"")?;
        }
        let mut db = hrs_sitedb::SqliteSiteDb::open(&db_path)?;
        let what = Collection {
            site: code,
            site_type,
            hierarchy_id,
            level,
            period,
            hasher: hasher(keyed)?,
            clock: clock(),
        };
        // A fixed run id per seed keeps seeds the same in every run of the tests.
        let run_id = uuid::Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 + n as u128);
        let mut run = collect(&mut db, &catalog, &what, run_id, n as u64 + 1).await;
        // Fixed times too: they are not part of the digest, only of the encoding.
        run.started_at = "2026-11-29T02:00:00Z".into();
        run.finished_at = "2026-11-29T02:00:01Z".into();
        crate::targets::check_canonical(&run)
            .map_err(|e| format!("the collected run of {site} is invalid: {e}"))?;
        runs.push(run);
    }
    Ok(runs)
}

fn merged_periods(runs: &[pb::Run]) -> Result<Vec<pb::MergedPeriod>, SeedError> {
    let catalog = Catalog::builtin()?;
    let hierarchy: HierarchyId = parsed(HIERARCHY_ID)?;
    let expected: Vec<SiteCode> = SITES.iter().map(|s| parsed(s)).collect::<Result<_, _>>()?;
    // The current run of each site: the plain P01 run and the CAS run.
    let current: Vec<pb::Run> = runs.iter().take(2).cloned().collect();
    let mut periods = Vec::new();
    for level in [Level::Full, Level::Enhanced] {
        let merged = hrs_aggregator::merge::merge(
            hierarchy,
            level,
            &catalog,
            &expected,
            PERIOD,
            current.clone(),
        )
        .period;
        periods.push(merged);
    }
    // As it leaves the hierarchy: site codes hashed (keyed), levels filtered, mode set.
    let inside = periods[0].clone();
    for (level, mode, keyed) in [
        (Level::Basic, Mode::Offline, true),
        (Level::Enhanced, Mode::Online, false),
    ] {
        let policy = Policy {
            level,
            mode,
            hasher: hasher(keyed)?,
        };
        periods.push(hrs_connection::outbound(&inside, &policy));
    }
    for period in &periods {
        hrs_core::validate::check_merged(period)
            .map_err(|e| format!("a merged seed period is invalid: {e}"))?;
    }
    Ok(periods)
}

/// Prepares an offline bundle as the connection tool does: a connection point store in
/// offline mode holding the merged period, then `prepare` onto a media folder.
async fn offline_bundles(
    dir: &Path,
    periods: &[pb::MergedPeriod],
) -> Result<Vec<Vec<u8>>, SeedError> {
    use hrs_connection::OutboxStore as _;
    let point = dir.join("point");
    std::fs::create_dir_all(&point)?;
    let config_path = point.join("connection-point.toml");
    std::fs::write(
        &config_path,
        format!(
            "listen = \"127.0.0.1:0\"\nhierarchy_id = \"{HIERARCHY_ID}\"\nlevel = \"Enhanced\"\n\
             mode = \"offline\"\nstore = \"cp.sqlite\"\n"
        ),
    )?;
    let config = hrs_connection::ConnectionPointConfig::load(&config_path)?;
    let store = hrs_connection::SqliteOutbox::open(&config.store)?;
    // Kept as the connection point keeps a period offered in chunks: staged whole, then
    // committed.
    let bytes = periods[0].encode_to_vec();
    let offer = period_offer(&periods[0], &bytes, true);
    store.stage(&offer, MADE_AT, MADE_AT).await?;
    store.stage_append(&offer, 0, bytes).await?;
    store
        .commit_staged(&offer, parsed(&periods[0].level)?, MADE_AT)
        .await?;
    drop(store);
    let prepared = hrs_connection::offline::prepare(
        &config,
        &point.join("media"),
        &hrs_connection::offline::Silent,
        &*clock(),
    )?;
    let path = prepared.path.ok_or("prepare wrote no bundle")?;
    Ok(vec![std::fs::read(path)?])
}

/// Returns the lowercase hex SHA-256 of `bytes`, as offers and bundles carry it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The gRPC requests of a corpus, encoded: what agents, aggregators and connection points
/// send, built around the corpus's runs and periods.
#[derive(Debug, Default)]
pub struct Requests {
    /// First `RunChunk`s carrying whole runs, with offers that match them.
    pub run_chunk: Vec<Vec<u8>>,
    /// `ResumeRunRequest`s, one per run.
    pub resume_run: Vec<Vec<u8>>,
    /// `HeartbeatRequest`s, one per site.
    pub heartbeat: Vec<Vec<u8>>,
    /// First `PeriodChunk`s carrying whole merged periods, with offers naming them (size
    /// and SHA-256 left for the sender), one per period of the corpus, in its order.
    pub period_chunk: Vec<Vec<u8>>,
    /// `ResumePeriodRequest`s with complete offers, one per period.
    pub resume_period: Vec<Vec<u8>>,
    /// The chunks of one stream per period, each chunk encoded: the first carries the
    /// complete offer, each the next piece of the period's encoding where the last ended.
    pub period_stream: Vec<Vec<Vec<u8>>>,
}

/// Pieces a seed period stream is cut into: enough to take the receivers past their first
/// chunk.
const STREAM_PIECES: usize = 3;

/// Returns the offer of a merged period's encoding: its hierarchy, period and digest,
/// completed with the size and SHA-256 of `bytes` when `complete`.
pub fn period_offer(period: &pb::MergedPeriod, bytes: &[u8], complete: bool) -> pb::PeriodOffer {
    let offer = pb::PeriodOffer {
        hierarchy_hash: period.hierarchy_hash.clone(),
        period: period.period.clone(),
        digest: period.digest.clone(),
        client_version: hrs_core::VERSION.into(),
        ..Default::default()
    };
    if !complete {
        return offer;
    }
    pb::PeriodOffer {
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
        ..offer
    }
}

/// Returns the link report every seed request carries.
fn link() -> pb::LinkReport {
    pb::LinkReport {
        consecutive_failures: 1,
        last_success_at: "2026-11-22T02:00:00Z".into(),
        backlog_runs: 1,
        backlog_bytes: 4096,
        oldest_pending_at: "2026-11-29T02:00:00Z".into(),
        dropped_runs: 0,
    }
}

/// Returns the offer of a run: its id, site, hierarchy, size and SHA-256.
pub fn offer(run: &pb::Run) -> pb::RunOffer {
    let bytes = run.encode_to_vec();
    pb::RunOffer {
        run_id: run.run_id.clone(),
        site: run.site.clone(),
        hierarchy_id: run.hierarchy_id.clone(),
        size: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
    }
}

/// Returns the encoded requests, made once per process.
pub fn requests() -> &'static Requests {
    static REQUESTS: OnceLock<Requests> = OnceLock::new();
    REQUESTS.get_or_init(|| {
        let corpus = corpus();
        let mut r = Requests::default();
        for run in &corpus.runs {
            r.run_chunk.push(
                pb::RunChunk {
                    offer: Some(offer(run)),
                    link: Some(link()),
                    offset: 0,
                    data: run.encode_to_vec(),
                }
                .encode_to_vec(),
            );
            r.resume_run.push(
                pb::ResumeRunRequest {
                    offer: Some(offer(run)),
                }
                .encode_to_vec(),
            );
        }
        for site in SITES {
            r.heartbeat.push(
                pb::HeartbeatRequest {
                    site: site.into(),
                    hierarchy_id: HIERARCHY_ID.into(),
                    link: Some(link()),
                }
                .encode_to_vec(),
            );
        }
        for period in &corpus.periods {
            let bytes = period.encode_to_vec();
            r.period_chunk.push(
                pb::PeriodChunk {
                    offer: Some(period_offer(period, &bytes, false)),
                    offset: 0,
                    data: bytes.clone(),
                }
                .encode_to_vec(),
            );
            let offer = period_offer(period, &bytes, true);
            r.resume_period.push(
                pb::ResumePeriodRequest {
                    offer: Some(offer.clone()),
                }
                .encode_to_vec(),
            );
            let piece = bytes.len().div_ceil(STREAM_PIECES).max(1);
            let mut first = Some(offer);
            r.period_stream.push(
                bytes
                    .chunks(piece)
                    .enumerate()
                    .map(|(i, data)| {
                        pb::PeriodChunk {
                            offer: first.take(),
                            offset: (i * piece) as u64,
                            data: data.to_vec(),
                        }
                        .encode_to_vec()
                    })
                    .collect(),
            );
        }
        r
    })
}

/// The agent example of `deploy/`, which every variant starts from.
const AGENT_EXAMPLE: &str = include_str!("../../../deploy/config/agent.toml");
/// The aggregator example of `deploy/`.
const AGGREGATOR_EXAMPLE: &str = include_str!("../../../deploy/config/aggregator.toml");
/// The connection point example of `deploy/`.
const CONNECTION_POINT_EXAMPLE: &str = include_str!("../../../deploy/config/connection-point.toml");
/// The intake example of `deploy/`.
const INTAKE_EXAMPLE: &str = include_str!("../../../deploy/config/intake.toml");

/// A `[tls]` table with relative files (they are not read when loading): last in a file,
/// as every key after it belongs to it.
const TLS: &str = "[tls]\ncert = \"pki/role.pem\"\nkey = \"pki/role.key\"\nca = \"pki/ca.pem\"\n";

fn agent_configs() -> Vec<String> {
    vec![
        AGENT_EXAMPLE.to_owned(),
        format!(
            "site = \"CAS\"\nsite_type = \"cas\"\nhierarchy_id = \"{HIERARCHY_ID}\"\nlevel = \"Full\"\n\
             site_db = \"server=tcp:cm01.contoso.example,1433;database=CM_CAS;user=hrs_reader;\
             password=Seed-Secret-7f3a;encrypt=true\"\nspool = \"spool.sqlite\"\n\
             upstream = \"http://127.0.0.1:7401\"\nperiod = \"{PERIOD}\"\nhash_key_file = \"hierarchy.key\"\n\
             push_chunk_kib = 64\n[metrics]\nfile = \"agent.prom\"\n"
        ),
        format!(
            "site = \"P01\"\nhierarchy_id = \"{HIERARCHY_ID}\"\nsite_db = \"site.sqlite\"\n\
             spool = \"spool.sqlite\"\nupstream = \"https://cas.example.internal:7401\"\n{TLS}"
        ),
    ]
}

fn aggregator_configs() -> Vec<String> {
    vec![
        AGGREGATOR_EXAMPLE.to_owned(),
        format!(
            "listen = \"127.0.0.1:0\"\nhierarchy_id = \"{HIERARCHY_ID}\"\nstore = \"merge.sqlite\"\n\
             sites = [\"CAS\", \"P01\", \"P02\"]\nupstream = \"https://cas.example.internal:7401\"\n\
             hash_key_file = \"hierarchy.key\"\n{TLS}"
        ),
    ]
}

fn connection_point_configs() -> Vec<String> {
    vec![
        CONNECTION_POINT_EXAMPLE.to_owned(),
        format!(
            "listen = \"127.0.0.1:7402\"\nhierarchy_id = \"{HIERARCHY_ID}\"\nlevel = \"Basic\"\n\
             mode = \"offline\"\nstore = \"cp.sqlite\"\n\
             hash_key_file = \"hierarchy.key\"\n{TLS}"
        ),
    ]
}

fn intake_configs() -> Vec<String> {
    vec![
        INTAKE_EXAMPLE.to_owned(),
        format!(
            "listen = \"127.0.0.1:7400\"\nstore = \"data/intake.sqlite\"\nretention_days = 30\n{TLS}"
        ),
    ]
}

fn connection_strings() -> Vec<String> {
    [
        "sqlite:/var/lib/hrs/sitedb.sqlite",
        "site.sqlite",
        "server=tcp:cm01.contoso.example,1433;database=CM_P01;user=hrs_reader;encrypt=true;TrustServerCertificateCA=/etc/hrs/sql-ca.pem",
        "Server=cm01;Database=CM_P01;User Id=hrs;Password=Seed-Secret-7f3a;Encrypt=true;TrustServerCertificate=true",
        "Data Source=tcp:10.0.0.5,1433;Initial Catalog=CM_CAS;Integrated Security=SSPI;Connect Timeout=30;Command Timeout=0;ConnectRetryCount=3;ConnectRetryInterval=5;ApplicationIntent=ReadWrite",
        "server=cm01;uid=hrs;pwd='Seed;Secret=7f3a';Application Name=hrs-test",
        "server=cm01;user=hrs;password={Seed;Secret}}7f3a}",
        "server=cm01\\SCCM;database=CM_P01",
    ]
    .map(str::to_owned)
    .to_vec()
}
