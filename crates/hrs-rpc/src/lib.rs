//! The HRS RPC runtime: the services of the wire contract (generated from `proto/hrs/v1`,
//! over hrs-proto's messages) and what every role serves and calls them with: one way to
//! serve ([`serve::serve_role`]), one error boundary ([`error`]), the connection gate, TLS, the CONNECT proxy, refusal
//! counting, health and reflection ([`probes`]), chunk streaming, and what the intake signs.

pub mod chunks;
pub mod codec;
pub mod error;
pub mod hygiene;
pub mod probes;
pub mod proxy;
pub mod receive;
pub mod refusals;
pub mod serve;
pub mod signed;
pub mod submit;
pub mod tls;

/// The services of version 1 of the contract, package `hrs.v1`: a client and a server
/// module per service.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod v1 {
    tonic::include_proto!("hrs.v1");
}
