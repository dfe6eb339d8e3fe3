//! Every role's listener answers gRPC health and reflection, plaintext and over mutual
//! TLS: SERVING for the role's service and the whole server, NOT_SERVING to a watch once
//! it shuts down, and reflection lists what it serves. A probe is not a refusal: only the
//! call that was refused is counted; an invented method still is.

use std::net::SocketAddr;
use std::path::Path;

use hrs_core::config::TlsFiles;
use hrs_pki::{Identity, Role};
use hrs_proto::v1 as pb;
use hrs_rpc::tls::ClientTls;
use hrs_tests::{Hierarchy, site, wall_now};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// The services every role lists beside its own.
const PROBES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// A connection to `addr`, over TLS with `tls` when given.
async fn channel(addr: SocketAddr, tls: Option<&ClientTls>) -> Channel {
    let scheme = if tls.is_some() { "https" } else { "http" };
    hrs_rpc::tls::endpoint_with(&format!("{scheme}://{addr}"), tls)
        .expect("endpoint")
        .connect()
        .await
        .expect("connects")
}

/// Asks health for `service`.
async fn check(channel: &Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|answer| answer.into_inner().status())
}

/// Asks reflection (v1) which services are served, sorted.
async fn listed(channel: &Channel) -> Vec<String> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("a reflection message")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list of services: {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

/// Asks reflection (v1alpha) for the file that declares `symbol`, and returns how many
/// encoded file descriptors came back.
async fn described_v1alpha(channel: &Channel, symbol: &str) -> usize {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
    };
    let answer = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner()
        .message()
        .await
        .expect("a reflection message")
        .expect("one answer");
    match answer.message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => files.file_descriptor_proto.len(),
        other => panic!("{symbol} not described: {other:?}"),
    }
}

/// Checks that the role at `channel` serves `service` and the whole server, knows no
/// other service, and lists exactly `service` and the probes.
async fn assert_probed(channel: &Channel, service: &str) {
    for name in ["", service] {
        assert_eq!(
            check(channel, name).await.expect("health answers"),
            ServingStatus::Serving,
            "{service}: health of {name:?}"
        );
    }
    let unknown = check(channel, "hrs.v1.Invented")
        .await
        .expect_err("an unknown service is not served");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{service}");
    let mut expected: Vec<String> = PROBES.iter().map(|s| (*s).to_owned()).collect();
    expected.push(service.to_owned());
    expected.sort();
    assert_eq!(
        listed(channel).await,
        expected,
        "{service}: listed services"
    );
    assert!(described_v1alpha(channel, service).await > 0, "{service}");
}

/// Calls a method health does not have: refused as any invented method is.
async fn invented(channel: &Channel) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    grpc.unary::<_, HealthCheckResponse, _>(
        tonic::Request::new(HealthCheckRequest::default()),
        tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Invented"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .expect_err("an invented method is refused")
}

/// The address in a role's `http://` URL.
fn address(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Each role answers health and reflection in plaintext; after all those probes, the
/// metrics files count only the one invented method, and a watch hears the shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_answers_probes_and_counts_none_as_refused() {
    let h = Hierarchy::builder().primaries(0).start().await;
    let hrs_aggregator::Onward::ConnectionPoint(cp) = &h.aggregator_config.onward else {
        panic!("the test hierarchy's aggregator forwards to its connection point");
    };
    let intake = address(h.connection_point.intake.as_deref().expect("an intake"));
    let roles = [
        (h.aggregator, "hrs.v1.Aggregator"),
        (address(cp), "hrs.v1.ConnectionPoint"),
        (intake, "hrs.v1.Intake"),
    ];
    for (addr, service) in roles {
        assert_probed(&channel(addr, None).await, service).await;
    }

    // Each role logs and counts only the refusal: a probe before it would be counted first.
    for (role, addr) in [("aggregator", h.aggregator), ("intake", intake)] {
        let channel = channel(addr, None).await;
        assert_eq!(invented(&channel).await.code(), tonic::Code::Unimplemented);
        let file = h.dir.path().join(format!("{role}.prom"));
        let line =
            format!("hrs_{role}_refusals_total{{method=\"unknown\",code=\"Unimplemented\"}} 1");
        let text = Hierarchy::wait_metric(&file, &line).await;
        let counted: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        assert_eq!(
            counted,
            [line.as_str()],
            "{role} counted probes as refusals"
        );
    }

    // A watch hears NOT_SERVING when the role shuts down, then ends: the drain does not
    // wait for it.
    let mut watch = HealthClient::new(channel(h.aggregator, None).await)
        .watch(HealthCheckRequest {
            service: "hrs.v1.Aggregator".into(),
        })
        .await
        .expect("watch answers")
        .into_inner();
    let first = watch.message().await.expect("a status").expect("one");
    assert_eq!(first.status(), ServingStatus::Serving);
    let ((), heard) = tokio::join!(h.shutdown(), async {
        let last = watch.message().await.expect("a status").expect("one");
        (last.status(), watch.message().await)
    });
    assert_eq!(heard.0, ServingStatus::NotServing);
    assert!(
        matches!(heard.1, Ok(None)),
        "the watch ended cleanly: {:?}",
        heard.1
    );
}

fn issue(dir: &Path, identity: &Identity) -> TlsFiles {
    let issued =
        hrs_pki::issue(dir, identity, &["127.0.0.1".into()], 30, wall_now()).expect("issues");
    TlsFiles {
        cert: issued.cert,
        key: issued.key,
        ca: dir.join("ca.pem"),
    }
}

/// Binds a loopback port.
async fn bound() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// Over mutual TLS each role answers a client with a certificate from the hierarchy's CA;
/// one without a certificate is turned away at the handshake, except by an intake that
/// accepts tokens, where it reaches health and reflection but not the intake itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls_probes_need_what_the_listener_needs() {
    let h = Hierarchy::builder().primaries(0).start().await;
    let pki = h.dir.path().join("pki");
    hrs_pki::init(&pki, "test", 30, wall_now()).expect("CA");
    let client = ClientTls::from(&issue(&pki, &Identity::Site(site("CAS"))));
    let anonymous = ClientTls {
        ca: pki.join("ca.pem"),
        identity: None,
    };
    let mut stops = Vec::new();
    let mut servers = Vec::new();

    let (listener, aggregator) = bound().await;
    let mut config = h.aggregator_config.clone();
    config.store = h.dir.path().join("tls-merge.sqlite");
    config.onward = hrs_aggregator::Onward::Kept;
    config.tls = Some(issue(&pki, &Identity::Role(Role::Aggregator)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    stops.push(stop);
    servers.push(tokio::spawn(async move {
        hrs_aggregator::serve(config, listener, async {
            let _ = stopped.await;
        })
        .await
        .map_err(|e| e.to_string())
    }));

    let (listener, point) = bound().await;
    let mut config = h.connection_point.clone();
    config.store = h.dir.path().join("tls-connection-point.sqlite");
    config.mode = hrs_connection::Mode::Offline;
    config.intake = None;
    config.tls = Some(issue(&pki, &Identity::Role(Role::ConnectionPoint)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    stops.push(stop);
    servers.push(tokio::spawn(async move {
        hrs_connection::serve(config, listener, async {
            let _ = stopped.await;
        })
        .await
        .map_err(|e| e.to_string())
    }));

    let (listener, intake) = bound().await;
    let mut config = h.intake_config.clone();
    config.store = h.dir.path().join("tls-intake.sqlite");
    config.metrics.file = Some(h.dir.path().join("tls-intake.prom"));
    config.tls = Some(issue(&pki, &Identity::Role(Role::Intake)));
    config.hierarchy_tokens = vec![hrs_intake::HierarchyToken {
        hierarchy: h.hierarchy_id.hashed(),
        token_sha256: hrs_core::token::fingerprint("secret"),
    }];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    stops.push(stop);
    servers.push(tokio::spawn(async move {
        hrs_intake::serve(config, listener, async {
            let _ = stopped.await;
        })
        .await
        .map_err(|e| e.to_string())
    }));

    for (addr, service) in [
        (aggregator, "hrs.v1.Aggregator"),
        (point, "hrs.v1.ConnectionPoint"),
        (intake, "hrs.v1.Intake"),
    ] {
        assert_probed(&channel(addr, Some(&client)).await, service).await;
    }

    // Certificates are required by the aggregator and the connection point: a probe
    // without one gets no answer at all.
    for addr in [aggregator, point] {
        let tls = hrs_rpc::tls::endpoint_with(&format!("https://{addr}"), Some(&anonymous))
            .expect("endpoint");
        let answer = match tls.connect().await {
            Ok(channel) => check(&channel, "").await.map_err(|s| s.to_string()),
            Err(error) => Err(error.to_string()),
        };
        assert!(answer.is_err(), "{addr} answered without a certificate");
    }
    // An intake taking tokens lets a client without a certificate connect: health and
    // reflection answer it, the intake refuses it.
    let channel = channel(intake, Some(&anonymous)).await;
    assert_probed(&channel, "hrs.v1.Intake").await;
    let refused = hrs_rpc::v1::intake_client::IntakeClient::new(channel)
        .check_updates(pb::CheckUpdatesRequest {
            hierarchy_hash: h.hierarchy_id.hashed(),
            ..Default::default()
        })
        .await
        .expect_err("no credentials");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let file = h.dir.path().join("tls-intake.prom");
    let line = "hrs_intake_refusals_total{method=\"/hrs.v1.Intake/CheckUpdates\",code=\"Unauthenticated\"} 1";
    let text = Hierarchy::wait_metric(&file, line).await;
    let counted = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert_eq!(counted, 1, "the intake counted probes as refusals:\n{text}");

    for stop in stops {
        let _ = stop.send(());
    }
    for server in servers {
        server.await.expect("joins").expect("serves");
    }
    h.shutdown().await;
}
