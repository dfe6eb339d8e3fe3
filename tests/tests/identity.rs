//! A certificate names exactly one identity, and acts within it only: over mutual TLS the
//! aggregator refuses a certificate that names two (whichever comes first), and a region
//! aggregator's certificate relays the sites the aggregator above configures beneath its
//! region and no others. Refused calls leave the store row for row as it was. (At the
//! intake, a connection point's certificate submits for its own hierarchy only:
//! `tests/tests/limits.rs`.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hrs_aggregator::{AggregatorConfig, MergeStore as _, Onward, RegionSites};
use hrs_pki::{Identity, Region, Role};
use hrs_proto::v1 as pb;
use hrs_rpc::tls::TlsFiles;
use hrs_rpc::v1::aggregator_client::AggregatorClient;
use hrs_tests::{Hierarchy, site, wall_now};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest a test waits for a relayed run to arrive.
const RELAY_TIMEOUT: Duration = Duration::from_secs(30);

/// Interval of that wait's polling.
const POLL: Duration = Duration::from_millis(20);

fn region(name: &str) -> Region {
    name.parse().expect("region name")
}

/// Issues a certificate from the CA in `ca_dir` into `dir` (its own folder, so certificates
/// of the same role do not replace each other).
fn issue(ca_dir: &Path, dir: &Path, identity: &Identity) -> TlsFiles {
    std::fs::create_dir_all(dir).expect("dir");
    if dir != ca_dir {
        for file in ["ca.pem", "ca.key"] {
            std::fs::copy(ca_dir.join(file), dir.join(file)).expect("copies the CA");
        }
    }
    let issued =
        hrs_pki::issue(dir, identity, &["127.0.0.1".into()], 30, wall_now()).expect("issues");
    TlsFiles {
        cert: issued.cert,
        key: issued.key,
        ca: ca_dir.join("ca.pem"),
    }
}

/// Writes a client certificate naming every URI in `uris`, and `common_name`, signed by the
/// CA in `ca_dir`: what a careless CA operator might issue, and `hrs pki` never does.
fn crafted(ca_dir: &Path, name: &str, uris: &[&str], common_name: &str) -> TlsFiles {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
        SanType,
    };
    let read = |file: &str| std::fs::read_to_string(ca_dir.join(file)).expect("reads the CA");
    let issuer = Issuer::from_ca_cert_pem(
        &read("ca.pem"),
        KeyPair::from_pem(&read("ca.key")).expect("CA key"),
    )
    .expect("CA");
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for uri in uris {
        params
            .subject_alt_names
            .push(SanType::URI((*uri).try_into().expect("URI")));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = wall_now();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(1);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("signs");
    let (cert_file, key_file) = (
        ca_dir.join(format!("{name}.pem")),
        ca_dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_file, cert.pem()).expect("writes");
    std::fs::write(&key_file, key.serialize_pem()).expect("writes");
    TlsFiles {
        cert: cert_file,
        key: key_file,
        ca: ca_dir.join("ca.pem"),
    }
}

/// An aggregator served over mutual TLS on 127.0.0.1, on the hierarchy's pinned clock.
struct Served {
    addr: String,
    config: AggregatorConfig,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), hrs_aggregator::AggregatorError>>,
}

impl Served {
    async fn start(h: &Hierarchy, config: AggregatorConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        let config = AggregatorConfig {
            listen: addr,
            ..config
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hrs_aggregator::serve_with_clock(
            config.clone(),
            listener,
            async {
                let _ = stopped.await;
            },
            h.clock.shared(),
        ));
        Self {
            addr: addr.to_string(),
            config,
            stop,
            task,
        }
    }

    fn dump(&self) -> Vec<(String, Vec<Vec<rusqlite::types::Value>>)> {
        Hierarchy::store_dump(&self.config.store)
    }

    /// The sites whose runs it holds as current.
    fn sites(&self) -> Vec<String> {
        let store = hrs_aggregator::SqliteMergeStore::open_read_only(&self.config.store)
            .expect("opens the store");
        let mut sites: Vec<String> = store
            .current(None, None)
            .expect("reads")
            .into_iter()
            .map(|run| run.site)
            .collect();
        sites.sort();
        sites
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("joins").expect("serves");
    }
}

/// The CAS's aggregator for `h`, over TLS with `tls`, configuring `regions`.
async fn cas(h: &Hierarchy, tls: &TlsFiles, regions: Vec<RegionSites>) -> Served {
    let config = AggregatorConfig {
        store: h.dir.path().join("cas-tls.sqlite"),
        onward: Onward::Kept,
        tls: Some(tls.clone()),
        regions,
        ..h.aggregator_config.clone()
    };
    Served::start(h, config).await
}

/// Pushes `run` to the aggregator at `addr` with the client certificate `tls`, the way a
/// relaying aggregator does; returns its answer or the status it refused the run with.
async fn push_as(
    addr: &str,
    tls: &TlsFiles,
    run: &pb::Run,
) -> Result<pb::PushRunResponse, tonic::Status> {
    let channel = hrs_rpc::tls::connect(&format!("https://{addr}"), Some(tls))
        .await
        .expect("connects over mutual TLS");
    let outgoing = hrs_rpc::chunks::Outgoing {
        run_id: run.run_id.clone(),
        site: run.site.clone(),
        hierarchy_id: run.hierarchy_id.clone(),
    };
    let bytes: Arc<dyn hrs_core::bytes::RunBytes> = Arc::new(run.encode_to_vec());
    match hrs_rpc::chunks::push_run_chunks(
        &mut AggregatorClient::new(channel),
        outgoing,
        pb::LinkReport::default(),
        bytes,
        hrs_rpc::chunks::DEFAULT_CHUNK_BYTES,
    )
    .await
    {
        Ok(answer) => Ok(answer),
        Err(hrs_rpc::chunks::ChunkedPushError::Status(status)) => Err(status),
        Err(other) => panic!("pushing run {}: {other}", run.run_id),
    }
}

/// Asserts `answer` is a `PermissionDenied` whose message holds every one of `named`.
fn denied<T: std::fmt::Debug>(answer: Result<T, tonic::Status>, named: &[&str]) {
    let status = answer.expect_err("refused");
    assert_eq!(
        status.code(),
        tonic::Code::PermissionDenied,
        "{}",
        status.message()
    );
    for name in named {
        assert!(status.message().contains(name), "{}", status.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_naming_two_identities_is_refused_whichever_comes_first() {
    let h = Hierarchy::builder().primaries(1).start().await;
    let pki = h.dir.path().join("pki");
    hrs_pki::init(&pki, "test", 30, wall_now()).expect("CA");
    let server = issue(&pki, &pki, &Identity::Role(Role::Aggregator));
    let cas = cas(
        &h,
        &server,
        vec![RegionSites {
            name: region("EU"),
            sites: vec![site("P01")],
        }],
    )
    .await;
    let run = h.spooled_run(&site("P01")).await;
    let before = cas.dump();

    // A site and the aggregator role, in either order; a site in its URI and another in its
    // common name; a site and a region.
    for (name, uris, common_name) in [
        (
            "site-then-role",
            &["urn:hrs:site:P01", "urn:hrs:role:aggregator"][..],
            "P01",
        ),
        (
            "role-then-site",
            &["urn:hrs:role:aggregator", "urn:hrs:site:P01"],
            "aggregator",
        ),
        ("uri-and-common-name", &["urn:hrs:site:P02"], "P01"),
        (
            "site-and-region",
            &["urn:hrs:site:P01", "urn:hrs:region:EU"],
            "P01",
        ),
    ] {
        let two = crafted(&pki, name, uris, common_name);
        denied(
            push_as(&cas.addr, &two, &run).await,
            &["more than one identity", "exactly one"],
        );
    }
    assert_eq!(cas.dump(), before, "refused pushes changed nothing");

    // The site's own certificate, naming it once, writes.
    let p01 = issue(
        &pki,
        &h.dir.path().join("p01"),
        &Identity::Site(site("P01")),
    );
    push_as(&cas.addr, &p01, &run)
        .await
        .expect("a certificate naming one site writes that site's run");
    assert_eq!(cas.sites(), ["P01"]);
    cas.stop().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_certificate_relays_only_the_sites_configured_beneath_it() {
    // The CAS expects the CAS and three primaries; P01 and P02 sit beneath region EU.
    let h = Hierarchy::builder().primaries(3).start().await;
    let pki = h.dir.path().join("pki");
    hrs_pki::init(&pki, "test", 30, wall_now()).expect("CA");
    let server = issue(&pki, &pki, &Identity::Role(Role::Aggregator));
    let eu = issue(&pki, &pki, &Identity::Region(region("EU")));
    let us = issue(&pki, &pki, &Identity::Region(region("US")));
    let top = issue(
        &pki,
        &h.dir.path().join("another-aggregator"),
        &Identity::Role(Role::Aggregator),
    );
    let cas = cas(
        &h,
        &server,
        vec![RegionSites {
            name: region("EU"),
            sites: vec![site("P01"), site("P02")],
        }],
    )
    .await;

    // The region's aggregator, over TLS with its region's certificate, relays P01's run.
    let region_aggregator = Served::start(
        &h,
        AggregatorConfig {
            sites: vec![site("P01"), site("P02")],
            store: h.dir.path().join("region.sqlite"),
            onward: Onward::Upstream(format!("https://{}", cas.addr)),
            tls: Some(eu.clone()),
            ..h.aggregator_config.clone()
        },
    )
    .await;
    let p01 = issue(
        &pki,
        &h.dir.path().join("p01"),
        &Identity::Site(site("P01")),
    );
    let mut agent = h.agent_config(&site("P01"));
    agent.upstream = format!("https://{}", region_aggregator.addr);
    agent.tls = Some(p01);
    hrs_agent::Agent::open(agent, h.clock.shared())
        .expect("agent opens")
        .run_once(Duration::from_secs(30))
        .await
        .expect("P01 delivers to its region");
    let deadline = tokio::time::Instant::now() + RELAY_TIMEOUT;
    while cas.sites().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the region did not relay P01 within {RELAY_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(cas.sites(), ["P01"]);

    // P03 is not beneath EU: its run relayed with EU's certificate is refused, naming the
    // site and the caller, as it is with a region the CAS does not configure, or with an
    // aggregator's certificate naming no region. The CAS's store is as it was.
    let p03 = h.spooled_run(&site("P03")).await;
    let p02 = h.spooled_run(&site("P02")).await;
    let before = cas.dump();
    denied(
        push_as(&cas.addr, &eu, &p03).await,
        &["region aggregator EU", "site P03", "P01, P02"],
    );
    denied(
        push_as(&cas.addr, &us, &p02).await,
        &["region aggregator US", "site P02"],
    );
    denied(
        push_as(&cas.addr, &top, &p02).await,
        &["aggregator", "site P02", "names no region"],
    );
    assert_eq!(cas.dump(), before, "refused relays changed nothing");

    // P02 is beneath EU: EU's certificate relays it.
    push_as(&cas.addr, &eu, &p02)
        .await
        .expect("a region relays a site beneath it");
    assert_eq!(cas.sites(), ["P01", "P02"]);

    region_aggregator.stop().await;
    cas.stop().await;
    h.shutdown().await;
}
