//! The way out through an HTTP proxy (CONNECT), with Basic authentication: the connection
//! point's update checks and the connection tool's `connect` both reach the intake through
//! it, and a proxy that refuses says why.

use hrs_chaos::ConnectProxy;
use hrs_connection::State;
use hrs_connection::offline::{self, ConnectOptions, Silent};
use hrs_rpc::proxy::Proxy;
use hrs_tests::{Hierarchy, PERIOD};
use secrecy::SecretString;

fn credentials() -> (String, String) {
    ("hrs".to_owned(), "proxy secret".to_owned())
}

fn through(proxy: &ConnectProxy, password: &str) -> Proxy {
    Proxy::new(&proxy.url())
        .expect("proxy url")
        .with_credentials("hrs", SecretString::from(password.to_owned()))
        .expect("credentials")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_point_submits_through_an_authenticating_proxy() {
    let proxy = ConnectProxy::start(Some(credentials()))
        .await
        .expect("proxy");
    let h = Hierarchy::builder()
        .primaries(1)
        .intake_proxy(through(&proxy, "proxy secret"))
        .start()
        .await;
    h.collect_everywhere().await;
    let state = h.wait_delivered(PERIOD).await;
    assert_eq!(state.state, State::Submitted);
    assert!(
        proxy.tunnels() >= 1,
        "the submission went through the proxy"
    );
    h.shutdown().await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_goes_through_the_proxy_and_a_refusal_says_why() {
    let proxy = ConnectProxy::start(Some(credentials()))
        .await
        .expect("proxy");
    let h = Hierarchy::builder()
        .primaries(1)
        .offline(true)
        .start()
        .await;
    h.collect_everywhere().await;
    h.wait_received(PERIOD).await;
    let media = tempfile::tempdir().expect("media");
    offline::prepare(&h.connection_point, media.path(), &Silent, &h.clock).expect("prepares");
    let downloads = tempfile::tempdir().expect("downloads");
    let options = |password: &str| ConnectOptions {
        updates_dest: downloads.path().to_owned(),
        download: "latest".into(),
        intake: None,
        intake_ca: None,
        token: None,
        proxy: Some(through(&proxy, password)),
        ca: None,
        allow_unsigned: true,
    };

    let refused = offline::connect(media.path(), &options("wrong"), &Silent, &h.clock)
        .await
        .expect("connect runs");
    let [(_, error)] = refused.failed.as_slice() else {
        panic!("one failure expected: {:?}", refused.failed);
    };
    let message = error.to_string();
    assert!(message.contains("refused the credentials"), "{message}");
    assert!(
        !message.contains("wrong"),
        "the password is never shown: {message}"
    );
    assert!(h.intake_blobs().is_empty());

    let summary = offline::connect(media.path(), &options("proxy secret"), &Silent, &h.clock)
        .await
        .expect("connects");
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    assert!(proxy.tunnels() >= 1);
    offline::import(&h.connection_point, downloads.path(), &Silent, &h.clock).expect("imports");
    h.wait_delivered(PERIOD).await;
    h.shutdown().await;
    proxy.stop().await;
}
