//! Domain model shared by every HRS role: identifiers, the query catalog, runs and merged
//! periods, the digests that make delivery idempotent, and the one-way hash that keeps
//! identifying values inside the hierarchy.

pub mod bytes;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod digest;
pub mod encoded;
pub mod encoded_period;
pub mod error;
pub mod files;
#[cfg(test)]
mod fixtures;
pub mod hash;
pub mod ids;
pub mod link;
pub mod merged_encoding;
pub mod report;
pub mod secret;
pub mod token;
pub mod validate;
pub mod value;
mod wire;

pub use catalog::{Catalog, ColumnDef, ColumnType, Privacy, QueryDef, Scope};
pub use ids::{HierarchyId, Level, Period, SiteCode};
pub use value::Value;

/// The version every role reports about itself.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
