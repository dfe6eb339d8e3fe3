//! What probes and tools ask every role beside its own services: gRPC health
//! (`grpc.health.v1.Health`) and server reflection (`grpc.reflection.v1` and `v1alpha`), so
//! a load balancer, a service manager or `grpcurl` learns whether a role serves, and what,
//! without a client of HRS's own. [`crate::serve::serve_role`] serves both on every
//! listener, outside the role's own callers' checks; an answer of theirs is never a
//! refusal (see [`crate::refusals`]).
//!
//! Health is served here rather than by `tonic_health::server::health_reporter`, whose
//! `Watch` streams never end: each would hold a role's drain open until its deadline.
//! Here a watch hears NOT_SERVING when the role begins shutting down, and then ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The encoded descriptors of `proto/hrs/v1`, written by the build script, which
/// reflection answers from.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hrs_v1_descriptor.bin"));

/// The health service's name, as callers and reflection know it.
pub const HEALTH: &str = "grpc.health.v1.Health";

/// The reflection services' names: v1, and v1alpha for tools that know only it.
pub const REFLECTION: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Every method of health and reflection: answered, never counted as refused.
const METHODS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Returns whether `path` (an HTTP/2 `:path`) is a method of health or reflection: an
/// unknown method of theirs is as much the caller's invention as any other.
pub fn is_probe(path: &str) -> bool {
    METHODS.contains(&path)
}

/// Why health and reflection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The descriptors reflection answers from do not decode or do not fit together.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A role's health: SERVING for the whole server (`""`) and each of the role's services
/// from the moment it serves, NOT_SERVING from the moment it begins shutting down.
#[derive(Debug, Clone)]
pub struct RoleHealth {
    /// The names health answers for; any other is NOT_FOUND (SERVICE_UNKNOWN to a watch).
    services: Arc<[&'static str]>,
    /// True once the role is shutting down; shared by every watch.
    stopping: Arc<watch::Sender<bool>>,
}

impl RoleHealth {
    /// Health of a role serving `services` (fully qualified names), and of `""`.
    pub fn new(services: &[&'static str]) -> Self {
        let names: Vec<&'static str> = std::iter::once("")
            .chain(services.iter().copied())
            .collect();
        Self {
            services: names.into(),
            stopping: Arc::new(watch::channel(false).0),
        }
    }

    /// The health service to add to the role's server.
    pub fn server(&self) -> HealthServer<Self> {
        HealthServer::new(self.clone())
    }

    /// Reports NOT_SERVING from now on, and ends every watch once it has heard so.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// What a watch of `service` hears while the role is in the state `stopping`.
    fn status(&self, service: &str, stopping: bool) -> ServingStatus {
        match (self.services.contains(&service), stopping) {
            (false, _) => ServingStatus::ServiceUnknown,
            (true, false) => ServingStatus::Serving,
            (true, true) => ServingStatus::NotServing,
        }
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

#[tonic::async_trait]
impl Health for RoleHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.get_ref().service.as_str();
        match self.status(service, *self.stopping.borrow()) {
            // As the protocol asks, so a probe of a misspelt name fails loudly.
            ServingStatus::ServiceUnknown => Err(Status::not_found(format!(
                "this server has no service {service:?}"
            ))),
            status => Ok(Response::new(response(status))),
        }
    }

    type WatchStream = Watching;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Watching>, Status> {
        Ok(Response::new(Watching {
            health: self.clone(),
            service: request.into_inner().service,
            changes: WatchStream::new(self.stopping.subscribe()),
            ended: false,
        }))
    }
}

/// One `Watch` call: the current status at once, then each change, ending after the
/// NOT_SERVING of shutdown so the role's drain does not wait for it.
pub struct Watching {
    health: RoleHealth,
    service: String,
    changes: WatchStream<bool>,
    ended: bool,
}

impl Stream for Watching {
    type Item = Result<HealthCheckResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.changes).poll_next(cx) {
            Poll::Ready(Some(stopping)) => {
                self.ended = stopping;
                let status = self.health.status(&self.service, stopping);
                Poll::Ready(Some(Ok(response(status))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Reflection v1 and v1alpha over `proto/hrs/v1` and health, listing `services` (the
/// role's own, fully qualified), health and reflection: exactly what the role serves.
pub fn reflection(
    services: &[&'static str],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    ProbeError,
> {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Each version describes the other too, as both are listed.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .with_service_name(HEALTH);
        for name in services.iter().chain(&REFLECTION) {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt as _;

    fn asked(service: &str) -> Request<HealthCheckRequest> {
        Request::new(HealthCheckRequest {
            service: service.into(),
        })
    }

    #[tokio::test]
    async fn serves_until_stopped_and_knows_only_its_services() {
        let health = RoleHealth::new(&["hrs.v1.Intake"]);
        for service in ["", "hrs.v1.Intake"] {
            let answer = health.check(asked(service)).await.expect("known");
            assert_eq!(answer.get_ref().status(), ServingStatus::Serving);
        }
        let unknown = health
            .check(asked("hrs.v1.Aggregator"))
            .await
            .expect_err("not served here");
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        health.stop();
        let answer = health.check(asked("")).await.expect("known");
        assert_eq!(answer.get_ref().status(), ServingStatus::NotServing);
    }

    #[tokio::test]
    async fn a_watch_hears_shutdown_and_ends() {
        let health = RoleHealth::new(&["hrs.v1.Intake"]);
        let mut known = health
            .watch(asked("hrs.v1.Intake"))
            .await
            .expect("watch")
            .into_inner();
        let mut unknown = health
            .watch(asked("nope"))
            .await
            .expect("watch")
            .into_inner();
        let first = known.next().await.expect("a status").expect("ok");
        assert_eq!(first.status(), ServingStatus::Serving);
        let first = unknown.next().await.expect("a status").expect("ok");
        assert_eq!(first.status(), ServingStatus::ServiceUnknown);
        health.stop();
        let last = known.next().await.expect("a status").expect("ok");
        assert_eq!(last.status(), ServingStatus::NotServing);
        assert!(known.next().await.is_none(), "the watch ends at shutdown");
        let last = unknown.next().await.expect("a status").expect("ok");
        assert_eq!(last.status(), ServingStatus::ServiceUnknown);
        assert!(unknown.next().await.is_none(), "the watch ends at shutdown");
    }

    #[test]
    fn only_health_and_reflection_methods_are_probes() {
        assert!(is_probe("/grpc.health.v1.Health/Check"));
        assert!(is_probe(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_probe("/grpc.health.v1.Health/Invented"));
        assert!(!is_probe("/hrs.v1.Intake/SubmitChunks"));
    }

    #[test]
    fn reflection_builds_from_the_contract() {
        reflection(&["hrs.v1.Aggregator"]).expect("descriptors fit together");
    }
}
