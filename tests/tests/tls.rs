//! Mutual TLS between agents and the aggregator: a site's identity comes from its
//! certificate, so a site can write only its own data, and a client without a certificate
//! from the hierarchy's CA (none, another CA's, an expired one) gets nowhere. Refused calls
//! change nothing in the store.

use std::path::Path;

use hrs_agent::Agent;
use hrs_aggregator::MergeStore as _;
use hrs_pki::{Identity, Role};
use hrs_proto::v1 as pb;
use hrs_rpc::tls::TlsFiles;
use hrs_rpc::v1::aggregator_client::AggregatorClient;
use hrs_tests::{Hierarchy, site, wall_now};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity as TlsIdentity};

fn issue(dir: &Path, identity: Identity, days: u32) -> TlsFiles {
    let issued =
        hrs_pki::issue(dir, &identity, &["127.0.0.1".into()], days, wall_now()).expect("issues");
    TlsFiles {
        cert: issued.cert,
        key: issued.key,
        ca: dir.join("ca.pem"),
    }
}

/// A heartbeat for `site` over TLS with `client` (or with no client certificate).
async fn heartbeat(
    addr: &str,
    ca: &Path,
    client: Option<&TlsFiles>,
    h: &Hierarchy,
) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("ca")));
    if let Some(client) = client {
        tls = tls.identity(TlsIdentity::from_pem(
            std::fs::read(&client.cert).expect("cert"),
            std::fs::read(&client.key).expect("key"),
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    AggregatorClient::new(channel)
        .heartbeat(pb::HeartbeatRequest {
            site: "P01".into(),
            hierarchy_id: h.hierarchy_id.to_string(),
            link: None,
        })
        .await
        .map(drop)
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_writes_only_its_own_data_and_strangers_get_nowhere() {
    let h = Hierarchy::builder().primaries(2).start().await;
    let (p01, p02) = (site("P01"), site("P02"));
    let pki = h.dir.path().join("pki");
    hrs_pki::init(&pki, "test", 30, wall_now()).expect("CA");
    let p01_tls = issue(&pki, Identity::Site(p01.clone()), 30);
    let server_tls = issue(&pki, Identity::Role(Role::Aggregator), 30);
    let other = h.dir.path().join("other-pki");
    hrs_pki::init(&other, "another hierarchy", 30, wall_now()).expect("CA");
    let stranger = issue(&other, Identity::Site(p01.clone()), 30);
    // An expired certificate from the right CA.
    let stale = h.dir.path().join("stale-pki");
    std::fs::create_dir_all(&stale).expect("dir");
    for file in ["ca.pem", "ca.key"] {
        std::fs::copy(pki.join(file), stale.join(file)).expect("copies the CA");
    }
    let now = wall_now();
    let expired = hrs_pki::issue_valid(
        &stale,
        &Identity::Site(p01.clone()),
        &[],
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    )
    .expect("issues");
    let expired = TlsFiles {
        cert: expired.cert,
        key: expired.key,
        ca: stale.join("ca.pem"),
    };

    // A second aggregator for the same hierarchy, with TLS.
    let mut config = h.aggregator_config.clone();
    config.store = h.dir.path().join("tls-merge.sqlite");
    config.onward = hrs_aggregator::Onward::Kept;
    config.tls = Some(server_tls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("addr").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hrs_aggregator::serve(config.clone(), listener, async {
        let _ = stopped.await;
    }));
    let store = || hrs_aggregator::SqliteMergeStore::open(&config.store).expect("store");

    // P01 with its own certificate delivers.
    let agent_with = |code, tls: &TlsFiles| {
        let mut agent = h.agent_config(code);
        agent.upstream = format!("https://{addr}");
        agent.tls = Some(tls.clone());
        // On the real clock: the expiry it shows is that of a certificate issued today.
        Agent::open(agent, hrs_tests::wall_clock()).expect("agent")
    };
    agent_with(&p01, &p01_tls)
        .run_once(std::time::Duration::from_secs(30))
        .await
        .expect("P01 delivers its own run over mutual TLS");
    // Its certificate was issued for 30 days: `hrs status` warns that it needs renewing.
    let status = agent_with(&p01, &p01_tls).status().await.expect("status");
    let certificate = status.certificate.expect("the certificate is shown");
    assert!(certificate.days_left <= 30);
    assert!(
        certificate.warning.is_some_and(|w| w.contains("renew")),
        "expiry within 30 days is warned about"
    );
    let before = store().current(None, None).expect("reads");
    assert_eq!(before.len(), 1);

    // P02's data sent with P01's certificate is refused, whatever the run says.
    let refused = agent_with(&p02, &p01_tls)
        .run_once(std::time::Duration::from_secs(30))
        .await
        .expect_err("P01 cannot write P02's data");
    assert!(refused.is_refusal(), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("cannot write data of site P02"),
        "{refused}"
    );

    // No certificate, another hierarchy's CA, an expired certificate: no call gets through.
    for (who, client) in [
        ("no certificate", None),
        ("another CA", Some(&stranger)),
        ("expired", Some(&expired)),
    ] {
        let outcome = heartbeat(&addr, &pki.join("ca.pem"), client, &h).await;
        assert!(outcome.is_err(), "{who}: {outcome:?}");
    }
    assert!(
        heartbeat(&addr, &pki.join("ca.pem"), Some(&p01_tls), &h)
            .await
            .is_ok()
    );
    // Plaintext gets no answer at all: the port speaks TLS only.
    let plaintext = async {
        AggregatorClient::connect(format!("http://{addr}"))
            .await
            .map_err(|e| e.to_string())?
            .heartbeat(pb::HeartbeatRequest {
                site: "P01".into(),
                hierarchy_id: h.hierarchy_id.to_string(),
                link: None,
            })
            .await
            .map_err(|e| e.to_string())
    };
    assert!(plaintext.await.is_err(), "a plaintext call was answered");

    let after = store().current(None, None).expect("reads");
    assert_eq!(after, before, "refused calls changed nothing");
    let _ = stop.send(());
    server.await.expect("joins").expect("serves");
    h.shutdown().await;
}
