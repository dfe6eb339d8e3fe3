//! Offline bundles: one merged period as it leaves the hierarchy, in a JSON file an
//! administrator carries on removable media to an internet-facing machine.
//!
//! The file is plain JSON so it can be reviewed before it is carried out. It says what it
//! holds (format, tool version, hierarchy hash, period, level, digest) and protects its
//! payload twice: a SHA-256 over the payload's exact bytes catches any change to the file,
//! and the merged digest, recomputed from the payload, proves the content is what the
//! connection point sent. [`read_bundle`] refuses a file that fails either check.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use hrs_core::Value;
use hrs_core::clock::rfc3339;
use hrs_core::digest::merged_digest;
use hrs_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

/// The format tag of bundles written by this version.
pub const FORMAT: &str = "hrs-bundle/1";

/// Why a bundle could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file could not be read or written.
    #[error("bundle {path}: {source}")]
    Io {
        /// The bundle file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file is not a bundle document.
    #[error("bundle {path} is not a valid bundle document: {source}")]
    Parse {
        /// The bundle file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// The file is a bundle of a format this version does not read.
    #[error("bundle {path} has format {found:?}; this version reads {FORMAT:?}")]
    Format {
        /// The bundle file.
        path: PathBuf,
        /// The format the file declares.
        found: String,
    },
    /// The file was changed after it was written.
    #[error("bundle {path} was altered after it was written and is refused: {problem}")]
    Tampered {
        /// The bundle file.
        path: PathBuf,
        /// Which check failed.
        problem: String,
    },
    /// The period cannot be written as a bundle without changing its content.
    #[error("period {period} cannot be written as a bundle: {problem}")]
    Unrepresentable {
        /// The period.
        period: String,
        /// Why.
        problem: String,
    },
}

/// A bundle file: what it holds, checksums, and the payload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFile {
    /// Always [`FORMAT`] for this version; readers refuse formats they do not know.
    pub format: String,
    /// Version of the tool that wrote the bundle.
    pub tool_version: String,
    /// The hierarchy's hashed ID, so bundles of several hierarchies can share a folder.
    pub hierarchy_hash: String,
    /// RFC 3339 time the bundle was written.
    pub created_at: String,
    /// The period (ISO week).
    pub period: String,
    /// The level the payload was filtered to.
    pub level: String,
    /// The merged digest of the payload.
    pub digest: String,
    /// Hex SHA-256 of the payload's exact bytes in this file.
    pub payload_sha256: String,
    /// The payload, kept as its exact bytes so the checksum can be verified.
    pub payload: Box<RawValue>,
}

/// A merged period as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundlePayload {
    /// The hierarchy's hashed ID.
    pub hierarchy_hash: String,
    /// The period (ISO week).
    pub period: String,
    /// The catalog version the queries come from.
    pub catalog_version: String,
    /// The level the data is sent at.
    pub level: String,
    /// Each site's results; site names are hashed below the Full level.
    pub sites: Vec<BundleSite>,
    /// Sites that sent nothing for the period, named like `sites`.
    pub missing_sites: Vec<String>,
    /// The merged digest over the content.
    pub digest: String,
    /// How the hierarchy sends (`offline` for a bundle): Basic data about the hierarchy.
    #[serde(default)]
    pub mode: String,
}

/// One site's results in a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSite {
    /// The site, hashed below the Full level.
    pub site: String,
    /// When the site's collector ran (RFC 3339).
    #[serde(default)]
    pub started_at: String,
    /// When the site's collector finished (RFC 3339).
    #[serde(default)]
    pub finished_at: String,
    /// One entry per catalog query.
    pub results: Vec<BundleResultSet>,
}

/// One query's outcome at one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleResultSet {
    /// The catalog query.
    pub query_id: String,
    /// The query's level.
    pub level: String,
    /// Declared output columns.
    pub columns: Vec<BundleColumn>,
    /// Rows, each in column order.
    pub rows: Vec<Vec<Value>>,
    /// The error the query hit, or empty.
    pub error: String,
    /// How long the query ran, as sent online too (the collector's own statistics).
    #[serde(default)]
    pub duration_ms: u64,
}

/// A declared column in a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleColumn {
    /// Column name.
    pub name: String,
    /// `text`, `int`, `real` or `bool`.
    #[serde(rename = "type")]
    pub ty: String,
}

impl From<&pb::MergedPeriod> for BundlePayload {
    fn from(p: &pb::MergedPeriod) -> Self {
        Self {
            hierarchy_hash: p.hierarchy_hash.clone(),
            period: p.period.clone(),
            catalog_version: p.catalog_version.clone(),
            level: p.level.clone(),
            sites: p
                .sites
                .iter()
                .map(|s| BundleSite {
                    site: s.site.clone(),
                    started_at: s.started_at.clone(),
                    finished_at: s.finished_at.clone(),
                    results: s
                        .results
                        .iter()
                        .map(|r| BundleResultSet {
                            query_id: r.query_id.clone(),
                            level: r.level.clone(),
                            columns: r
                                .columns
                                .iter()
                                .map(|c| BundleColumn {
                                    name: c.name.clone(),
                                    ty: c.r#type.clone(),
                                })
                                .collect(),
                            rows: r
                                .rows
                                .iter()
                                .map(|row| row.values.iter().map(Value::from).collect())
                                .collect(),
                            error: r.error.clone(),
                            duration_ms: r.duration_ms,
                        })
                        .collect(),
                })
                .collect(),
            missing_sites: p.missing_sites.clone(),
            digest: p.digest.clone(),
            mode: p.mode.clone(),
        }
    }
}

impl From<&BundlePayload> for pb::MergedPeriod {
    fn from(p: &BundlePayload) -> Self {
        Self {
            hierarchy_hash: p.hierarchy_hash.clone(),
            period: p.period.clone(),
            catalog_version: p.catalog_version.clone(),
            level: p.level.clone(),
            sites: p
                .sites
                .iter()
                .map(|s| pb::SiteResults {
                    site: s.site.clone(),
                    run_id: String::new(),
                    sequence: 0,
                    started_at: s.started_at.clone(),
                    finished_at: s.finished_at.clone(),
                    results: s
                        .results
                        .iter()
                        .map(|r| pb::ResultSet {
                            query_id: r.query_id.clone(),
                            level: r.level.clone(),
                            columns: r
                                .columns
                                .iter()
                                .map(|c| pb::Column {
                                    name: c.name.clone(),
                                    r#type: c.ty.clone(),
                                })
                                .collect(),
                            rows: r
                                .rows
                                .iter()
                                .map(|row| pb::Row {
                                    values: row.iter().map(pb::Value::from).collect(),
                                })
                                .collect(),
                            error: r.error.clone(),
                            duration_ms: r.duration_ms,
                        })
                        .collect(),
                })
                .collect(),
            missing_sites: p.missing_sites.clone(),
            digest: p.digest.clone(),
            mode: p.mode.clone(),
        }
    }
}

/// Returns the file name of the bundle of `period` (an outbound merged period).
pub fn file_name(period: &pb::MergedPeriod) -> String {
    let short: String = period.digest.chars().take(12).collect();
    format!("hrs-bundle-{}-{short}.json", period.period)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `period` (already filtered by [`crate::outbound`]) as a bundle made `created_at`
/// into `folder`, atomically, and returns the file's path.
pub fn write_bundle(
    folder: &Path,
    period: &pb::MergedPeriod,
    created_at: OffsetDateTime,
) -> Result<PathBuf, BundleError> {
    let path = folder.join(file_name(period));
    let bytes = encode_period(period, created_at)?;
    write_atomic(&path, &bytes).map_err(|source| BundleError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Encodes `period` (already filtered by [`crate::outbound`]) as one period's bundle
/// document made `created_at`, refusing a period whose values would not survive JSON.
pub fn encode_period(
    period: &pb::MergedPeriod,
    created_at: OffsetDateTime,
) -> Result<Vec<u8>, BundleError> {
    let payload = BundlePayload::from(period);
    let unrepresentable = |problem: String| BundleError::Unrepresentable {
        period: period.period.clone(),
        problem,
    };
    let payload_json =
        serde_json::to_string(&payload).map_err(|e| unrepresentable(e.to_string()))?;
    // JSON cannot hold every value (NaN, infinities); refuse rather than write a bundle
    // that would fail its own digest check at the other end.
    let again: BundlePayload =
        serde_json::from_str(&payload_json).map_err(|e| unrepresentable(e.to_string()))?;
    let actual = merged_digest(&pb::MergedPeriod::from(&again));
    if actual != period.digest {
        return Err(unrepresentable(
            "a value does not survive JSON (NaN or infinity?)".to_owned(),
        ));
    }
    let document = BundleFile {
        format: FORMAT.to_owned(),
        tool_version: hrs_core::VERSION.to_owned(),
        hierarchy_hash: period.hierarchy_hash.clone(),
        created_at: rfc3339(created_at),
        period: period.period.clone(),
        level: period.level.clone(),
        digest: period.digest.clone(),
        payload_sha256: sha256_hex(payload_json.as_bytes()),
        payload: RawValue::from_string(payload_json).map_err(|e| unrepresentable(e.to_string()))?,
    };
    let mut bytes =
        serde_json::to_vec_pretty(&document).map_err(|e| unrepresentable(e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Reads a bundle file, verifying its payload checksum and digest, and returns the merged
/// period it carries.
pub fn read_bundle(path: &Path) -> Result<pb::MergedPeriod, BundleError> {
    let bytes = std::fs::read(path).map_err(|source| BundleError::Io {
        path: path.to_owned(),
        source,
    })?;
    decode_period(&bytes, path)
}

/// Decodes one period's bundle document (named `path` in errors), verifying its payload
/// checksum and digest, and returns the merged period it carries.
pub fn decode_period(bytes: &[u8], path: &Path) -> Result<pb::MergedPeriod, BundleError> {
    let parse = |source| BundleError::Parse {
        path: path.to_owned(),
        source,
    };
    let tampered = |problem: String| BundleError::Tampered {
        path: path.to_owned(),
        problem,
    };
    let document: BundleFile = serde_json::from_slice(bytes).map_err(parse)?;
    if document.format != FORMAT {
        return Err(BundleError::Format {
            path: path.to_owned(),
            found: document.format,
        });
    }
    let checksum = sha256_hex(document.payload.get().as_bytes());
    if checksum != document.payload_sha256 {
        return Err(tampered(format!(
            "payload_sha256 says {}, the payload hashes to {checksum}",
            document.payload_sha256
        )));
    }
    let payload: BundlePayload = serde_json::from_str(document.payload.get()).map_err(parse)?;
    let period = pb::MergedPeriod::from(&payload);
    let actual = merged_digest(&period);
    if actual != payload.digest || actual != document.digest {
        return Err(tampered(format!(
            "digest says {}, the content hashes to {actual}",
            document.digest
        )));
    }
    for (field, header, inside) in [
        (
            "hierarchy_hash",
            &document.hierarchy_hash,
            &payload.hierarchy_hash,
        ),
        ("period", &document.period, &payload.period),
        ("level", &document.level, &payload.level),
    ] {
        if header != inside {
            return Err(tampered(format!(
                "{field} is {header:?} in the header but {inside:?} in the payload"
            )));
        }
    }
    Ok(period)
}

/// Writes `bytes` to `path` so that a reader sees the old file or the whole new one, never
/// a part: write a temporary file beside it, flush it to disk, rename it into place.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the destination is not a file path",
        ));
    };
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder)?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // Best effort: a stale temporary file is harmless but untidy.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable; folders cannot be opened for sync everywhere.
    #[cfg(unix)]
    std::fs::File::open(folder)?.sync_all()?;
    Ok(())
}
