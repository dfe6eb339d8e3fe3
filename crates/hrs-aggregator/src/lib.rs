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
use hrs_rpc::serve::{Background, RoleService as _, RoleServing, ServeError, serve_role};
use hrs_rpc::tls::ClientCertificates;
use hrs_rpc::v1::aggregator_server::AggregatorServer;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use config::{AggregatorConfig, Onward, RegionSites};
pub use links::{ReinitError, SiteLink, request_reinit, site_links};
pub use store::{
    Appended, Commit, Contact, Forwarded, MergeStore, SqliteMergeStore, Staged, StoredRun,
};

/// Largest message sent upstream (a chunk of a merged period or of a relayed run); the
/// receiving role enforces its own `max_message_mb`.
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
    /// The gRPC server could not be set up or failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
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
    let forwarding = {
        let (config, store, merged, clock) = (
            Arc::clone(&config),
            Arc::clone(&store),
            Arc::clone(&merged),
            Arc::clone(&clock),
        );
        Background::spawn("forwarding", move |stop| {
            forward::run(config, store, catalog, merged, clock, stop)
        })
    };
    // Periods already complete at startup are forwarded without waiting for a push.
    merged.notify_one();
    let service =
        service::AggregatorService::new(Arc::clone(&config), store, merged, Arc::clone(&clock));
    tracing::info!(addr = ?listener.local_addr().ok(), sites = config.sites.len(), "aggregator listening");
    let role = RoleServing {
        role: "aggregator",
        services: &[hrs_rpc::v1::aggregator_server::SERVICE_NAME],
        limits: config.limits,
        calls_per_connection: CALLS_PER_CONNECTION,
        tls: config.tls.as_ref(),
        clients: ClientCertificates::Required,
        plaintext_warning: "any client can claim any site",
        metrics: &config.metrics,
        now: clock.now(),
    };
    let result = serve_role(
        role,
        listener,
        |router, limits, gate| {
            router.add_service(AggregatorServer::new(service).limited(limits, gate))
        },
        forwarding,
        shutdown,
    )
    .await;
    Ok(result?)
}
