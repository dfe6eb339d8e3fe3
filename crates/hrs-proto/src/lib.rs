//! The HRS wire contract: the message types generated from `proto/hrs/v1`. Its services,
//! and the runtime every role serves them with, are in hrs-rpc.
//!
//! Generated code is fenced off from the workspace lints here and in hrs-rpc, nowhere else.

/// Version 1 of the contract, package `hrs.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/hrs.v1.rs"));
}
