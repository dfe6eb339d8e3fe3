//! End-to-end tests of HRS live in `tests/`; this library is their harness: [`Hierarchy`]
//! starts a whole hierarchy in this process, in a temporary folder — intake, connection
//! point and aggregator as real gRPC servers on 127.0.0.1, and one agent per site, each
//! collecting from its own seeded site database.
//!
//! Every role of a test hierarchy reads the time from one [`ManualClock`], pinned at
//! [`NOW`] unless a test chooses another start, so the suite passes on any date; a test
//! moves it to pass deadlines and schedules. Certificates are the exception: TLS checks
//! their validity against the system's clock, so tests issue them from [`wall_clock`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hrs_agent::spool::Spool;
use hrs_agent::{Agent, AgentConfig, SiteType};
use hrs_aggregator::{AggregatorConfig, MergeStore as _, Onward, SqliteMergeStore};
use hrs_connection::{ConnectionPointConfig, Mode, PeriodState, State};
use hrs_core::clock::{ManualClock, SharedClock};
use hrs_core::config::{MetricsTable, ServerLimits};
use hrs_core::link::LinkThresholds;
use hrs_core::{HierarchyId, Level, Period, SiteCode, Value};
use hrs_intake::{IntakeConfig, IntakeStore as _, SqliteIntake, SubmissionSummary};
use hrs_proto::v1 as pb;
use hrs_rpc::v1::aggregator_client::AggregatorClient;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// The period every agent of a test hierarchy collects.
pub const PERIOD: &str = "2026-W48";

/// Where a test hierarchy's clock starts: Monday after [`PERIOD`], 06:00 UTC, when that
/// week is the one due and its deadline is days away.
pub const NOW: time::OffsetDateTime = time::macros::datetime!(2026-11-30 06:00 UTC);

/// Returns a clock pinned at [`NOW`].
pub fn pinned_clock() -> ManualClock {
    ManualClock::new(NOW)
}

/// Returns the system's clock, for what is checked against it outside HRS: certificates,
/// whose validity TLS judges by the real date.
pub fn wall_clock() -> SharedClock {
    hrs_core::clock::system()
}

/// Returns the real time, to issue certificates from (see [`wall_clock`]).
pub fn wall_now() -> time::OffsetDateTime {
    wall_clock().now()
}

/// The hierarchy every test hierarchy belongs to.
pub const HIERARCHY_ID: &str = "3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47";

/// Clients seeded into every site database.
pub const CLIENTS: u32 = 40;

/// Returns the seed of a site's sample data: the site's position in the hierarchy (the
/// CAS first), plus one.
pub fn seed_of(site: &SiteCode) -> u64 {
    match site.as_str() {
        "CAS" => 1,
        code => code[1..].parse::<u64>().map_or(1, |n| n + 1),
    }
}

/// Minutes a test aggregator waits for quiet before forwarding a change (its
/// `period_settle_minutes`); tests pass it by moving the clock.
pub const SETTLE_MINUTES: u64 = 5;

/// Longest [`Hierarchy::wait_delivered`] waits.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Interval of [`Hierarchy::wait_delivered`]'s polling.
const POLL: Duration = Duration::from_millis(20);

/// Parses a site code, panicking on a malformed one (test input).
pub fn site(code: &str) -> SiteCode {
    code.parse()
        .unwrap_or_else(|e| panic!("site code {code:?}: {e}"))
}

/// Returns the period every test collects, parsed.
pub fn period() -> Period {
    PERIOD.parse().expect("PERIOD is a valid ISO week")
}

/// Returns the number of result rows in a run.
pub fn rows(run: &pb::Run) -> usize {
    run.results.iter().map(|r| r.rows.len()).sum()
}

/// Returns the number of result rows in a merged period, over all sites.
pub fn merged_rows(period: &pb::MergedPeriod) -> usize {
    period
        .sites
        .iter()
        .flat_map(|s| &s.results)
        .map(|r| r.rows.len())
        .sum()
}

/// Whether two reals are the same result: equal to within one unit of the expected value's
/// last decimal (counting at least two), because engines round ties differently (54.275 to
/// 54.27 or 54.28).
fn same_real(expected: f64, got: f64) -> bool {
    let text = expected.to_string();
    let decimals = text.split_once('.').map_or(0, |(_, d)| d.len()).clamp(2, 9);
    let unit = 10f64.powi(-i32::try_from(decimals).unwrap_or(9));
    (expected - got).abs() <= unit * 1.000_001
}

fn same_value(expected: &Value, got: &Value) -> bool {
    match (expected, got) {
        (Value::Real(a), Value::Real(b)) => same_real(*a, *b),
        (a, b) => a == b,
    }
}

/// Compares two result sets as data, as the same query gives them on two backends: rows in
/// any order (collations order text differently), reals as [`same_real`] says.
pub fn same_rows(expected: &[Vec<Value>], got: &[Vec<Value>]) -> Result<(), String> {
    if expected.len() != got.len() {
        return Err(format!(
            "{} rows expected, {} got",
            expected.len(),
            got.len()
        ));
    }
    let mut unmatched: Vec<&Vec<Value>> = got.iter().collect();
    for row in expected {
        let found = unmatched.iter().position(|candidate| {
            candidate.len() == row.len()
                && row
                    .iter()
                    .zip(candidate.iter())
                    .all(|(a, b)| same_value(a, b))
        });
        match found {
            Some(i) => {
                unmatched.swap_remove(i);
            }
            None => return Err(format!("row {row:?} has no match in {got:?}")),
        }
    }
    Ok(())
}

/// Options of a [`Hierarchy`] before it starts.
#[derive(Debug, Clone)]
pub struct HierarchyBuilder {
    primaries: u32,
    level: Level,
    offline: bool,
    clock: ManualClock,
    update_catalog: Option<PathBuf>,
    hierarchy_id: HierarchyId,
    intake_proxy: Option<hrs_rpc::proxy::Proxy>,
}

impl Default for HierarchyBuilder {
    fn default() -> Self {
        Self {
            primaries: 3,
            level: Level::Enhanced,
            offline: false,
            clock: pinned_clock(),
            update_catalog: None,
            hierarchy_id: HIERARCHY_ID.parse().expect("valid hierarchy id"),
            intake_proxy: None,
        }
    }
}

impl HierarchyBuilder {
    /// Sets how many primary sites (`P01`..`Pnn`) report besides the CAS (default 3).
    pub fn primaries(mut self, primaries: u32) -> Self {
        self.primaries = primaries;
        self
    }

    /// Sets the hierarchy-wide data level (default Enhanced).
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// Makes the connection point offline: periods leave only with the connection tool.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Runs every role on `clock` instead of one pinned at [`NOW`].
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = clock;
        self
    }

    /// Uses this hierarchy ID instead of [`HIERARCHY_ID`], for tests with two hierarchies.
    pub fn hierarchy_id(mut self, id: HierarchyId) -> Self {
        self.hierarchy_id = id;
        self
    }

    /// Makes the connection point reach the intake through this HTTP proxy.
    pub fn intake_proxy(mut self, proxy: hrs_rpc::proxy::Proxy) -> Self {
        self.intake_proxy = Some(proxy);
        self
    }

    /// Gives the intake this update catalog.
    pub fn update_catalog(mut self, catalog: PathBuf) -> Self {
        self.update_catalog = Some(catalog);
        self
    }

    /// Seeds every site database and starts the intake, connection point and aggregator.
    pub async fn start(self) -> Hierarchy {
        Hierarchy::start(self).await
    }
}

/// A running hierarchy in a temporary folder. Stop it with [`Hierarchy::shutdown`].
#[derive(Debug)]
pub struct Hierarchy {
    /// The temporary folder holding every database, spool and store.
    pub dir: tempfile::TempDir,
    /// The hierarchy's ID, as configured on every role.
    pub hierarchy_id: HierarchyId,
    /// The hierarchy-wide data level.
    pub level: Level,
    /// Every site, CAS first, then the primaries in order.
    pub sites: Vec<SiteCode>,
    /// The aggregator's address.
    pub aggregator: SocketAddr,
    /// The aggregator's configuration.
    pub aggregator_config: AggregatorConfig,
    /// The intake's configuration (its `store` is the intake's SQLite file).
    pub intake_config: IntakeConfig,
    /// The connection point's configuration, for the connection tool's functions.
    pub connection_point: ConnectionPointConfig,
    /// The clock every role and agent of the hierarchy reads; tests move it.
    pub clock: ManualClock,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Both stores of a hierarchy, row by row.
#[derive(Debug, PartialEq)]
pub struct StoresDump {
    /// The aggregator's merge store.
    pub aggregator: Vec<(String, Vec<Vec<rusqlite::types::Value>>)>,
    /// The intake's store.
    pub intake: Vec<(String, Vec<Vec<rusqlite::types::Value>>)>,
}

/// Binds a listener on a free loopback port.
async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds a loopback port");
    let addr = listener.local_addr().expect("listener has an address");
    (listener, addr)
}

/// Returns a shutdown future that completes once its sender (kept in `stops`) fires or
/// is dropped.
fn stop_signal(stops: &mut Vec<oneshot::Sender<()>>) -> impl Future<Output = ()> + Send + use<> {
    let (tx, rx) = oneshot::channel();
    stops.push(tx);
    async move {
        let _ = rx.await;
    }
}

impl Hierarchy {
    /// Returns a builder with the defaults: 3 primaries, Enhanced, online.
    pub fn builder() -> HierarchyBuilder {
        HierarchyBuilder::default()
    }

    async fn start(options: HierarchyBuilder) -> Self {
        let dir = tempfile::tempdir().expect("creates a temporary folder");
        let hierarchy_id = options.hierarchy_id;
        let mut sites = vec![site("CAS")];
        sites.extend((1..=options.primaries).map(|n| site(&format!("P{n:02}"))));
        for code in &sites {
            hrs_sitedb::seed(&site_db(dir.path(), code), code, CLIENTS, seed_of(code))
                .unwrap_or_else(|e| panic!("seeding {code}: {e}"));
        }
        let mut stops = Vec::new();
        let mut tasks = Vec::new();

        // Every listener is bound before any server starts, so no role ever dials a port
        // that is not yet open.
        let (intake_listener, intake_addr) = listener().await;
        let (cp_listener, cp_addr) = listener().await;
        let (aggregator_listener, aggregator) = listener().await;

        let mut intake_config = IntakeConfig::new(
            "127.0.0.1:0".parse().expect("address"),
            dir.path().join("intake.sqlite"),
        );
        intake_config.metrics.file = Some(dir.path().join("intake.prom"));
        intake_config.update_catalog = options.update_catalog.clone();
        let config = intake_config.clone();
        let stop = stop_signal(&mut stops);
        let clock = options.clock.shared();
        tasks.push(tokio::spawn(async move {
            hrs_intake::serve_with_clock(config, intake_listener, stop, clock)
                .await
                .expect("intake serves");
        }));

        let connection_point = ConnectionPointConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            hierarchy_id,
            level: options.level,
            mode: if options.offline {
                Mode::Offline
            } else {
                Mode::Online
            },
            store: dir.path().join("connection-point.sqlite"),
            intake: Some(format!("http://{intake_addr}")),
            check_hours: 24,
            recheck_minutes: 60,
            retry_seconds: 1,
            hasher: hrs_core::hash::Hasher::Plain,
            intake_ca: None,
            intake_token: None,
            intake_proxy: options.intake_proxy.clone(),
            tls: None,
            limits: ServerLimits::with_max_connections(64),
            metrics: MetricsTable::default(),
            source: None,
        };
        let config = connection_point.clone();
        let stop = stop_signal(&mut stops);
        let clock = options.clock.shared();
        tasks.push(tokio::spawn(async move {
            hrs_connection::serve_with_clock(config, cp_listener, stop, clock)
                .await
                .expect("connection point serves");
        }));

        let aggregator_config = AggregatorConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            hierarchy_id,
            level: options.level,
            store: dir.path().join("merge.sqlite"),
            sites: sites.clone(),
            onward: Onward::ConnectionPoint(format!("http://{cp_addr}")),
            regions: Vec::new(),
            period_deadline_hours: 72,
            period_settle_minutes: SETTLE_MINUTES,
            retry_seconds: 1,
            site_check_minutes: 60,
            link_thresholds: LinkThresholds {
                degraded_after: 12,
                failed_after: 24,
            },
            max_run_mb: 953,
            max_runs_in_flight: 2,
            tls: None,
            limits: ServerLimits::with_max_connections(512),
            metrics: MetricsTable {
                file: Some(dir.path().join("aggregator.prom")),
            },
            hash_key_file: None,
            hash_key_id: String::new(),
        };
        let config = aggregator_config.clone();
        let stop = stop_signal(&mut stops);
        let clock = options.clock.shared();
        tasks.push(tokio::spawn(async move {
            hrs_aggregator::serve_with_clock(config, aggregator_listener, stop, clock)
                .await
                .expect("aggregator serves");
        }));

        Self {
            dir,
            hierarchy_id,
            level: options.level,
            sites,
            aggregator,
            aggregator_config,
            intake_config,
            connection_point,
            clock: options.clock,
            stops,
            tasks,
        }
    }

    /// Returns the path of a site's seeded database.
    pub fn site_db(&self, site: &SiteCode) -> PathBuf {
        site_db(self.dir.path(), site)
    }

    /// Returns the configuration of a site's agent: fixed period [`PERIOD`], upstream the
    /// aggregator, retries capped at 1 s.
    pub fn agent_config(&self, site: &SiteCode) -> AgentConfig {
        AgentConfig {
            site: site.clone(),
            site_type: if site.as_str() == "CAS" {
                SiteType::Cas
            } else {
                SiteType::Primary
            },
            hierarchy_id: self.hierarchy_id,
            level: self.level,
            site_db: hrs_sitedb::SiteDbSpec::Sqlite(self.site_db(site)),
            hash_key_file: None,
            spool: self.dir.path().join(format!("spool-{site}.sqlite")),
            metrics: MetricsTable::default(),
            tls: None,
            upstream: format!("http://{}", self.aggregator),
            period: Some(period()),
            check_minutes: 60,
            retry_max_seconds: 1,
            spool_max_mb: 1024,
            spool_max_age_days: 365,
            push_chunk_kib: 1024,
            max_run_mb: 953,
            link_degraded_after: 12,
            link_failed_after: 24,
            max_failed_share: hrs_agent::config::DEFAULT_MAX_FAILED_SHARE,
            file: None,
        }
    }

    /// Opens a site's agent, on the hierarchy's clock.
    pub fn agent(&self, site: &SiteCode) -> Agent {
        Agent::open(self.agent_config(site), self.clock.shared())
            .unwrap_or_else(|e| panic!("agent {site}: {e}"))
    }

    /// Collects [`PERIOD`] at `site` into its spool without sending it, and returns the
    /// spooled run.
    pub async fn spooled_run(&self, site: &SiteCode) -> pb::Run {
        let summary = self
            .agent(site)
            .collect(period())
            .await
            .unwrap_or_else(|e| panic!("collecting at {site}: {e}"));
        self.spool(site)
            .pending()
            .await
            .expect("reads the spool")
            .into_iter()
            .find(|s| s.run_id == summary.run_id)
            .expect("the collected run is spooled")
            .run
    }

    /// Opens a site's spool.
    pub fn spool(&self, site: &SiteCode) -> Spool {
        Spool::open(&self.agent_config(site).spool).expect("opens the spool")
    }

    /// Connects a gRPC client to the aggregator, as an agent would.
    pub async fn aggregator_client(&self) -> AggregatorClient<Channel> {
        AggregatorClient::connect(format!("http://{}", self.aggregator))
            .await
            .expect("connects to the aggregator")
    }

    /// Pushes `run` to the aggregator the one way runs travel, through
    /// `hrs_rpc::chunks::push_run_chunks` (ask what is held, stream the rest in chunks),
    /// offered as the site and hierarchy the run names, without a link report. Returns the
    /// aggregator's answer, or the status it refused the run with.
    pub async fn push(&self, run: &pb::Run) -> Result<pb::PushRunResponse, tonic::Status> {
        let mut client = self.aggregator_client().await;
        let outgoing = hrs_rpc::chunks::Outgoing {
            run_id: run.run_id.clone(),
            site: run.site.clone(),
            hierarchy_id: run.hierarchy_id.clone(),
        };
        let bytes: std::sync::Arc<dyn hrs_core::bytes::RunBytes> =
            std::sync::Arc::new(run.encode_to_vec());
        let pushed = hrs_rpc::chunks::push_run_chunks(
            &mut client,
            outgoing,
            pb::LinkReport::default(),
            bytes,
            hrs_rpc::chunks::DEFAULT_CHUNK_BYTES,
        )
        .await;
        match pushed {
            Ok(answer) => Ok(answer),
            Err(hrs_rpc::chunks::ChunkedPushError::Status(status)) => Err(status),
            // A run in memory always reads, and this aggregator never claims more than
            // the run's size: anything else is a bug the test should show.
            Err(other) => panic!("pushing run {}: {other}", run.run_id),
        }
    }

    /// Collects and delivers once at every site; panics if any site fails.
    pub async fn collect_everywhere(&self) {
        for code in &self.sites {
            self.agent(code)
                .run_once(Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("agent {code}: {e}"));
        }
    }

    /// Waits (polling every 20 ms, at most 30 s) until the connection point has delivered
    /// `period`, and returns its state; panics on timeout.
    pub async fn wait_delivered(&self, period: &str) -> PeriodState {
        self.wait_state(period, |s| s.state == State::Submitted)
            .await
    }

    /// Waits until the connection point holds `period` from every site (offline, it then
    /// waits there for the connection tool), and returns its state.
    pub async fn wait_received(&self, period: &str) -> PeriodState {
        let sites = self.sites.len();
        self.wait_state(period, |s| {
            hrs_connection::SqliteOutbox::open_existing(&self.connection_point.store)
                .ok()
                .flatten()
                .and_then(|store| store.stored_blocking().ok())
                .into_iter()
                .flatten()
                .any(|p| {
                    p.period == s.period.to_string()
                        && p.digest == s.digest
                        && p.sites.len() == sites
                })
        })
        .await
    }

    async fn wait_state(&self, period: &str, done: impl Fn(&PeriodState) -> bool) -> PeriodState {
        let period: Period = period.parse().expect("a period");
        let started = tokio::time::Instant::now();
        let mut last = None;
        while started.elapsed() < DELIVERY_TIMEOUT {
            if self.connection_point.store.exists() {
                let states = hrs_connection::periods(&self.connection_point)
                    .expect("reads the connection point's periods");
                last = states.into_iter().find(|s| s.period == period);
                if let Some(state) = last.as_ref().filter(|s| done(s)) {
                    return state.clone();
                }
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "period {period} did not get there within {} s; last state: {last:?}",
            DELIVERY_TIMEOUT.as_secs()
        );
    }

    /// Returns the current run of every site for [`PERIOD`], read from the merge store.
    pub fn merged_runs(&self) -> Vec<pb::Run> {
        SqliteMergeStore::open_read_only(&self.aggregator_config.store)
            .expect("opens the merge store")
            .current(Some(&period()), None)
            .expect("reads the merge store")
    }

    /// Returns the current runs of [`PERIOD`] as encoded bytes, to compare the merge store
    /// before and after an operation byte for byte.
    pub fn merged_bytes(&self) -> Vec<Vec<u8>> {
        self.merged_runs()
            .iter()
            .map(|run| run.encode_to_vec())
            .collect()
    }

    /// Every row of every table of the SQLite file at `path`, table by table in name order
    /// and row by row in key order: two equal dumps mean the store holds the same bytes.
    pub fn store_dump(path: &Path) -> Vec<(String, Vec<Vec<rusqlite::types::Value>>)> {
        let conn =
            rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("opens the store read-only");
        let mut tables = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .expect("lists tables");
        let tables: Vec<String> = tables
            .query_map([], |r| r.get(0))
            .expect("lists tables")
            .collect::<Result<_, _>>()
            .expect("reads table names");
        tables
            .into_iter()
            .map(|table| {
                let mut select = conn
                    .prepare(&format!("SELECT * FROM \"{table}\""))
                    .expect("selects");
                let columns = select.column_count();
                let mut rows: Vec<Vec<rusqlite::types::Value>> = select
                    .query_map([], |r| (0..columns).map(|i| r.get(i)).collect())
                    .expect("reads rows")
                    .collect::<Result<_, _>>()
                    .expect("reads rows");
                rows.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
                (table, rows)
            })
            .collect()
    }

    /// The aggregator's merge store and the intake's store, dumped: see [`Self::store_dump`].
    pub fn stores(&self) -> StoresDump {
        StoresDump {
            aggregator: Self::store_dump(&self.aggregator_config.store),
            intake: Self::store_dump(&self.intake_config.store),
        }
    }

    /// Waits until the metrics file at `path` holds `line`, and returns the file's text.
    pub async fn wait_metric(path: &Path, line: &str) -> String {
        let mut text = String::new();
        for _ in 0..200 {
            text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().any(|l| l == line) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} never held {line:?}; it holds:\n{text}", path.display());
    }

    /// Waits (polling every 20 ms, at most 30 s) until the intake holds exactly `count`
    /// submissions, and returns them, oldest first; panics on timeout.
    pub async fn wait_submissions(&self, count: usize) -> Vec<SubmissionSummary> {
        let started = tokio::time::Instant::now();
        let mut held = Vec::new();
        while started.elapsed() < DELIVERY_TIMEOUT {
            held = self.intake_submissions().await;
            if held.len() == count {
                return held;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("the intake never held {count} submission(s); it holds {held:?}");
    }

    /// Returns the intake's submissions, oldest first.
    pub async fn intake_submissions(&self) -> Vec<SubmissionSummary> {
        SqliteIntake::open(&self.intake_config.store)
            .expect("opens the intake store")
            .submissions()
            .await
            .expect("reads the intake's submissions")
    }

    /// Returns the merged period stored under a submission.
    pub async fn intake_payload(&self, submission_id: &str) -> pb::MergedPeriod {
        SqliteIntake::open(&self.intake_config.store)
            .expect("opens the intake store")
            .payload(submission_id)
            .await
            .expect("reads the payload")
            .unwrap_or_else(|| panic!("no submission {submission_id}"))
    }

    /// Returns every payload blob the intake stored, as raw bytes straight from its file.
    pub fn intake_blobs(&self) -> Vec<Vec<u8>> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.intake_config.store,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("opens the intake file");
        let mut stmt = conn
            .prepare("SELECT payload FROM submissions ORDER BY submission_id")
            .expect("prepares");
        stmt.query_map([], |r| r.get(0))
            .expect("queries")
            .collect::<Result<_, _>>()
            .expect("reads payloads")
    }

    /// Returns the identifying values seeded at one site.
    pub fn identifying_values(&self, site: &SiteCode) -> Vec<String> {
        hrs_sitedb::identifying_values(&self.site_db(site))
            .unwrap_or_else(|e| panic!("identifying values of {site}: {e}"))
    }

    /// Stops every server and waits for each; panics if one failed.
    pub async fn shutdown(mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            task.await.expect("server task ends cleanly");
        }
    }
}

fn site_db(dir: &Path, site: &SiteCode) -> PathBuf {
    dir.join(format!("sitedb-{site}.sqlite"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_match_in_any_order_with_reals_to_their_last_decimal() {
        let a = vec![
            vec![Value::Text("x".into()), Value::Real(54.27)],
            vec![Value::Text("y".into()), Value::Int(3)],
        ];
        let b = vec![
            vec![Value::Text("y".into()), Value::Int(3)],
            vec![Value::Text("x".into()), Value::Real(54.28)],
        ];
        assert!(same_rows(&a, &b).is_ok());
        let off = vec![
            b[0].clone(),
            vec![Value::Text("x".into()), Value::Real(54.3)],
        ];
        assert!(same_rows(&a, &off).is_err());
        assert!(same_rows(&a, &b[..1]).is_err());
        assert!(same_real(0.3333, 0.3334) && !same_real(0.3333, 0.3344));
        assert!(
            !same_real(13.0, 14.0),
            "a whole number is not a licence for +-1"
        );
    }
}
