//! A builder that starts a whole hierarchy in this process: intake, connection point and
//! aggregator as real gRPC servers on 127.0.0.1 port 0, and one agent per site.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hrs_agent::{Agent, AgentConfig, SiteType};
use hrs_aggregator::{AggregatorConfig, MergeStore as _, SqliteMergeStore};
use hrs_connection::{ConnectionPointConfig, Mode, State};
use hrs_core::{HierarchyId, Level, Period, SiteCode};
use hrs_intake::IntakeConfig;
use hrs_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The period every test collects.
pub const PERIOD: &str = "2026-W48";

/// A running hierarchy in a temporary folder.
pub struct Hierarchy {
    pub dir: tempfile::TempDir,
    pub hierarchy_id: HierarchyId,
    pub level: Level,
    pub sites: Vec<SiteCode>,
    pub aggregator: SocketAddr,
    pub intake_store: PathBuf,
    pub merge_store: PathBuf,
    pub connection_point: ConnectionPointConfig,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("address");
    (listener, addr)
}

fn stop_signal(stops: &mut Vec<oneshot::Sender<()>>) -> impl Future<Output = ()> + use<> {
    let (tx, rx) = oneshot::channel();
    stops.push(tx);
    async move {
        let _ = rx.await;
    }
}

impl Hierarchy {
    /// Seeds the CAS and `primaries` primary sites and starts every server.
    pub async fn start(primaries: u32, level: Level, offline: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let hierarchy_id: HierarchyId = "3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47".parse().expect("id");
        let mut sites: Vec<SiteCode> = vec!["CAS".parse().expect("site")];
        for n in 1..=primaries {
            sites.push(format!("P{n:02}").parse().expect("site"));
        }
        for (n, site) in sites.iter().enumerate() {
            hrs_sitedb::seed(&site_db(dir.path(), site), site, 40, n as u64 + 1).expect("seeds");
        }
        let mut stops = Vec::new();
        let mut tasks = Vec::new();

        let (l, intake_addr) = listener().await;
        let intake_store = dir.path().join("intake.sqlite");
        let config = IntakeConfig {
            listen: intake_addr,
            store: intake_store.clone(),
            retention_days: 365,
        };
        let stop = stop_signal(&mut stops);
        tasks.push(tokio::spawn(async move {
            hrs_intake::serve(config, l, stop)
                .await
                .expect("intake serves");
        }));

        let (l, cp_addr) = listener().await;
        let connection_point = ConnectionPointConfig {
            listen: cp_addr,
            hierarchy_id,
            level,
            mode: if offline { Mode::Offline } else { Mode::Online },
            store: dir.path().join("connection-point.sqlite"),
            intake: Some(format!("http://{intake_addr}")),
            outbox: Some(dir.path().join("outbox")),
            retry_seconds: 1,
            source: None,
        };
        let config = connection_point.clone();
        let stop = stop_signal(&mut stops);
        tasks.push(tokio::spawn(async move {
            hrs_connection::serve(config, l, stop)
                .await
                .expect("connection point serves");
        }));

        let (l, aggregator) = listener().await;
        let merge_store = dir.path().join("merge.sqlite");
        let config = AggregatorConfig {
            listen: aggregator,
            hierarchy_id,
            level,
            store: merge_store.clone(),
            sites: sites.clone(),
            connection_point: Some(format!("http://{cp_addr}")),
            period_deadline_hours: 72,
            retry_seconds: 1,
        };
        let stop = stop_signal(&mut stops);
        tasks.push(tokio::spawn(async move {
            hrs_aggregator::serve(config, l, stop)
                .await
                .expect("aggregator serves");
        }));
        Self {
            dir,
            hierarchy_id,
            level,
            sites,
            aggregator,
            intake_store,
            merge_store,
            connection_point,
            stops,
            tasks,
        }
    }

    /// Returns the configuration of a site's agent.
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
            site_db: format!("sqlite:{}", site_db(self.dir.path(), site).display()),
            spool: self.dir.path().join(format!("spool-{site}.sqlite")),
            upstream: format!("http://{}", self.aggregator),
            period: Some(PERIOD.parse::<Period>().expect("period")),
            check_minutes: 60,
            retry_max_seconds: 1,
        }
    }

    /// Opens a site's agent.
    pub fn agent(&self, site: &SiteCode) -> Agent {
        Agent::open(self.agent_config(site)).expect("agent opens")
    }

    /// Collects and delivers at every site.
    pub async fn collect_everywhere(&self) {
        for site in &self.sites {
            self.agent(site)
                .run_once(Duration::from_secs(30))
                .await
                .expect("run delivered");
        }
    }

    /// Waits (bounded) until the connection point has delivered the period.
    pub async fn wait_delivered(&self) -> hrs_connection::PeriodState {
        for _ in 0..1500 {
            if self.connection_point.store.exists() {
                let states = hrs_connection::periods(&self.connection_point).expect("reads");
                if let Some(state) = states
                    .into_iter()
                    .find(|s| s.period == PERIOD && s.state != State::Pending)
                {
                    return state;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("period {PERIOD} was not delivered within 30 s");
    }

    /// Returns the current run of every site.
    pub fn merged_runs(&self) -> Vec<pb::Run> {
        SqliteMergeStore::open_read_only(&self.merge_store)
            .expect("opens")
            .current(Some(PERIOD), None)
            .expect("reads")
    }

    /// Returns every payload blob the intake stored, as raw bytes.
    pub fn intake_payloads(&self) -> Vec<Vec<u8>> {
        let conn = rusqlite::Connection::open(&self.intake_store).expect("opens");
        let mut stmt = conn
            .prepare("SELECT payload FROM submissions")
            .expect("prepares");
        stmt.query_map([], |r| r.get(0))
            .expect("queries")
            .collect::<Result<_, _>>()
            .expect("reads")
    }

    /// Returns the identifying values seeded at every site.
    pub fn identifying_values(&self) -> Vec<String> {
        self.sites
            .iter()
            .flat_map(|s| {
                hrs_sitedb::identifying_values(&site_db(self.dir.path(), s)).expect("values")
            })
            .collect()
    }

    /// Stops every server and waits for it.
    pub async fn stop(mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            task.await.expect("server task");
        }
    }
}

fn site_db(dir: &Path, site: &SiteCode) -> PathBuf {
    dir.join(format!("sitedb-{site}.sqlite"))
}

/// Returns the rows of a run.
pub fn rows(run: &pb::Run) -> usize {
    run.results.iter().map(|r| r.rows.len()).sum()
}
