//! Every refused call, logged once and counted, whatever refused it: a handler's check, a
//! message that does not decode, one over the size limit, a connection beyond the limit,
//! a deadline. Installed as a layer on each server role, so no refusal goes unseen and
//! none is reported twice. Health and reflection are the exception: their answers, even
//! NOT_FOUND for a service the role does not serve, are what a probe asked, not refusals.
//!
//! The counts are written as a Prometheus text file (`[metrics] file`) for an exporter's
//! textfile collector, as the agent's metrics are.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, watch};
use tonic::Code;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::hygiene::{Connections, Tracked};

/// Labels of one count: the gRPC method and the status code it was refused with.
type Labels = Vec<(String, String)>;

/// The refusals of one server role.
#[derive(Debug)]
pub struct Refusals {
    role: &'static str,
    counts: Family<Labels, Counter>,
    changed: Notify,
}

impl Refusals {
    /// Counts for `role`, which prefixes the metric (`hrs_<role>_refusals_total`).
    pub fn new(role: &'static str) -> Arc<Self> {
        Arc::new(Self {
            role,
            counts: Family::default(),
            changed: Notify::new(),
        })
    }

    /// Counts one call to `method` refused with `code`.
    pub fn count(&self, method: &str, code: Code) {
        self.counts.get_or_create(&labels(method, code)).inc();
        self.changed.notify_one();
    }

    /// How many calls to `method` were refused with `code` so far.
    pub fn get(&self, method: &str, code: Code) -> u64 {
        self.counts.get_or_create(&labels(method, code)).get()
    }

    /// The counts as Prometheus text.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix(format!("hrs_{}", self.role.replace(' ', "_")));
        registry.register(
            "refusals",
            "Calls refused, by gRPC method and status code",
            self.counts.clone(),
        );
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }

    /// Writes the counts to `path` now, whenever they change (at most once a second), and
    /// once more when `stop` turns true.
    pub async fn keep_written(self: Arc<Self>, path: PathBuf, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(error) = write(&path, &self.render()) {
                tracing::warn!(file = %path.display(), %error, "cannot write the metrics file");
            }
            tokio::select! {
                () = self.changed.notified() => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
        }
        if let Err(error) = write(&path, &self.render()) {
            tracing::warn!(file = %path.display(), %error, "cannot write the metrics file");
        }
    }

    /// A layer that logs and counts every refused call of the services under it, and
    /// counts each call on its connection among `connections`.
    pub fn layer(self: &Arc<Self>, connections: &Arc<Connections>) -> RefusalLayer {
        RefusalLayer {
            refusals: Arc::clone(self),
            connections: Arc::clone(connections),
        }
    }
}

fn labels(method: &str, code: Code) -> Labels {
    vec![
        ("method".to_owned(), method.to_owned()),
        ("code".to_owned(), format!("{code:?}")),
    ]
}

/// Replaces the file whole, so a collector never reads half of it.
fn write(path: &Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension("prom.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

/// Installs [`Counted`] on a server.
#[derive(Debug, Clone)]
pub struct RefusalLayer {
    refusals: Arc<Refusals>,
    connections: Arc<Connections>,
}

impl<S> tower_layer::Layer<S> for RefusalLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            refusals: Arc::clone(&self.refusals),
            connections: Arc::clone(&self.connections),
        }
    }
}

/// A server's services, with every refusal they answer logged and counted, and every
/// call counted on its connection until its response ends.
#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    refusals: Arc<Refusals>,
    connections: Arc<Connections>,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Counted<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<Tracked<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let probe = crate::probes::is_probe(&method);
        let peer = peer_of(request.extensions());
        let refusals = Arc::clone(&self.refusals);
        let call = peer.and_then(|peer| self.connections.begin_call(peer));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let response = response.map(|body| Tracked::new(body, call));
            // A refusal is answered in the headers alone ("trailers-only"): every call of
            // ours answers one message or none, so an error never follows data.
            if let Some(status) = tonic::Status::from_header_map(response.headers())
                && status.code() != Code::Ok
            {
                if probe {
                    tracing::debug!(role = refusals.role, %method, code = ?status.code(), error = bounded(status.message()), "probe answered");
                    return Ok(response);
                }
                // A path no service answers is the caller's invention: one label for all of
                // them, so callers cannot grow the counts without bound.
                let method = if status.code() == Code::Unimplemented {
                    "unknown".to_owned()
                } else {
                    method
                };
                refusals.count(&method, status.code());
                let peer = peer.map(|p| p.to_string()).unwrap_or_default();
                let error = bounded(status.message());
                if status.code() == Code::Aborted {
                    // An upload broken off by its link: routine, resumed by the caller.
                    tracing::info!(role = refusals.role, %method, %peer, code = ?status.code(), %error, "call not completed");
                } else {
                    tracing::warn!(role = refusals.role, %method, %peer, code = ?status.code(), %error, "call refused");
                }
            }
            Ok(response)
        })
    }
}

/// Longest refusal message logged: a message may quote what the caller sent.
const MAX_LOGGED: usize = 1024;

/// `message` cut to [`MAX_LOGGED`] bytes on a character boundary.
fn bounded(message: &str) -> &str {
    if message.len() <= MAX_LOGGED {
        return message;
    }
    let mut end = MAX_LOGGED;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// The caller's address, over TCP or TLS.
fn peer_of(extensions: &http::Extensions) -> Option<std::net::SocketAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|tls| tls.get_ref().remote_addr())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_prometheus_text() {
        let refusals = Refusals::new("intake");
        refusals.count("/hrs.v1.Intake/SubmitChunks", Code::InvalidArgument);
        refusals.count("/hrs.v1.Intake/SubmitChunks", Code::InvalidArgument);
        assert_eq!(
            refusals.get("/hrs.v1.Intake/SubmitChunks", Code::InvalidArgument),
            2
        );
        let text = refusals.render();
        assert!(
            text.contains(
                "hrs_intake_refusals_total{method=\"/hrs.v1.Intake/SubmitChunks\",code=\"InvalidArgument\"} 2"
            ),
            "{text}"
        );
    }
}
