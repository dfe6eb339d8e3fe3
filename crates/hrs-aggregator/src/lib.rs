//! The HRS aggregator, at the CAS: authenticates each site, validates and stores every
//! run, merges the hierarchy's data per period, and forwards each complete period to the
//! connection point.

pub mod config;
pub mod forward;
pub mod links;
pub mod merge;
pub mod service;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use hrs_core::catalog::{Catalog, CatalogError};
use hrs_core::clock::SharedClock;
use hrs_rpc::serve::Serving;
use hrs_rpc::v1::aggregator_server::AggregatorServer;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic::service::interceptor::InterceptedService;

pub use config::AggregatorConfig;
pub use links::{ReinitError, SiteLink, request_reinit, site_links};
pub use store::{Appended, Commit, Contact, MergeStore, SqliteMergeStore, Staged, StoredRun};

/// Largest message sent upstream (a merged period, a relayed run); the receiving role
/// enforces its own `max_message_mb`.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Calls one connection may have open at once; a site needs two (a resume and a push).
const CALLS_PER_CONNECTION: usize = 16;

/// Why the aggregator could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// The shipped catalog does not load.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The merge store could not be opened.
    #[error(transparent)]
    Store(#[from] hrs_store::StoreError),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The TLS certificates could not be loaded.
    #[error("tls: {0}")]
    Tls(#[from] hrs_rpc::tls::TlsError),
}

/// Serves the aggregator on `listener` until `shutdown` resolves, then stops forwarding and
/// returns once in-flight requests have finished.
pub async fn serve(
    config: AggregatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AggregatorError> {
    serve_with_clock(config, listener, shutdown, hrs_core::clock::system()).await
}

/// [`serve`] with arrivals stamped, and deadlines kept, by `clock` (tests pin it).
pub async fn serve_with_clock(
    config: AggregatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: SharedClock,
) -> Result<(), AggregatorError> {
    let catalog = Arc::new(Catalog::builtin()?);
    let store: Arc<dyn MergeStore> = Arc::new(SqliteMergeStore::open(&config.store)?);
    let config = Arc::new(config);
    let merged = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let forwarder = tokio::spawn(forward::run(
        Arc::clone(&config),
        Arc::clone(&store),
        catalog,
        Arc::clone(&merged),
        Arc::clone(&clock),
        stop_rx,
    ));
    // Periods already complete at startup are forwarded without waiting for a push.
    merged.notify_one();
    let settings = config.limits();
    let limits = hrs_rpc::serve::Limits::from_settings(
        settings.max_connections,
        CALLS_PER_CONNECTION,
        settings.request_timeout_seconds,
        settings.max_message_mb,
    );
    let service =
        service::AggregatorService::new(Arc::clone(&config), store, merged, Arc::clone(&clock));
    tracing::info!(addr = ?listener.local_addr().ok(), sites = config.sites.len(), "aggregator listening");
    let tls = match config.tls() {
        Some(tls) => {
            hrs_pki::warn_if_expiring(&tls.cert, clock.now());
            Some(hrs_rpc::tls::server(
                &tls,
                hrs_rpc::tls::ClientCertificates::Required,
            )?)
        }
        None => {
            tracing::warn!("serving without TLS: any client can claim any site");
            None
        }
    };
    let serving = Serving::new("aggregator", limits, config.metrics_file.clone());
    let router = serving.server(tls)?.add_service(InterceptedService::new(
        AggregatorServer::new(service)
            .max_decoding_message_size(limits.max_message_bytes)
            .max_encoding_message_size(limits.max_message_bytes),
        serving.gate(),
    ));
    let result = serving
        .serve(router, listener, shutdown, hrs_rpc::serve::DRAIN_DEADLINE)
        .await;
    let _ = stop_tx.send(true);
    let _ = forwarder.await;
    tracing::info!("aggregator stopped");
    Ok(result?)
}
