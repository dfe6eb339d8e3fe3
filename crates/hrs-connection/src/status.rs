//! A connection point's status, for `hrs status`: each period and whether the intake
//! acknowledged it, the update-check schedule, and the updates available.

use hrs_core::clock::rfc3339;
use serde::Serialize;

use crate::ConnectionError;
use crate::config::ConnectionPointConfig;
use crate::offline::{ManifestJson, UpdateJson};
use crate::store::{SqliteOutbox, State};

/// What a connection point holds, as `hrs status` shows it.
#[derive(Debug, Serialize)]
pub struct PointStatus {
    /// `online` or `offline`.
    pub mode: String,
    /// The level configured now.
    pub level: String,
    /// The intake's URL, when online.
    pub intake: Option<String>,
    /// Every period received, oldest first.
    pub periods: Vec<PointPeriod>,
    /// When the last update check ran (RFC 3339).
    pub last_check_at: Option<String>,
    /// Why that check could not submit everything, if it could not.
    pub last_check_error: Option<String>,
    /// When the next check is due (RFC 3339).
    pub next_check_at: Option<String>,
    /// When the latest update manifest arrived (RFC 3339).
    pub manifest_received_at: Option<String>,
    /// Where it came from: the intake online, or an imported receipt.
    pub manifest_source: Option<String>,
    /// The versions the hierarchy's sites run, as the manifest was decided for.
    pub site_versions: Vec<String>,
    /// The updates that apply.
    pub updates: Vec<UpdateJson>,
    /// Packages imported with the connection tool.
    pub imported_packages: Vec<String>,
}

/// One period at the connection point.
#[derive(Debug, Serialize)]
pub struct PointPeriod {
    /// The period, e.g. `2026-W48`.
    pub period: String,
    /// `sent`, `bundled, awaiting import` or `unsent`.
    pub state: String,
    /// Its digest.
    pub digest: String,
    /// The intake's submission id, once acknowledged.
    pub submission_id: Option<String>,
    /// The bundle it was written into, offline.
    pub bundle: Option<String>,
}

/// Reads the status of the connection point `config` configures from its store.
pub fn status(config: &ConnectionPointConfig) -> Result<PointStatus, ConnectionError> {
    let store =
        SqliteOutbox::open_existing(&config.store)?.ok_or_else(|| ConnectionError::NoStore {
            store: config.store.clone(),
            config: config.describe(),
        })?;
    let check = store.last_check_blocking()?;
    let manifest = store.latest_manifest_blocking()?;
    Ok(PointStatus {
        mode: config.mode.as_str().to_owned(),
        level: config.level.as_str().to_owned(),
        intake: config.intake.clone(),
        periods: store
            .states_blocking()?
            .into_iter()
            .map(|s| PointPeriod {
                period: s.period.to_string(),
                state: match s.state {
                    State::Submitted => "sent".to_owned(),
                    State::Bundled => "bundled, awaiting import".to_owned(),
                    State::Pending => "unsent".to_owned(),
                },
                digest: s.digest,
                submission_id: s.submission_id,
                bundle: s.bundle_path.map(|p| p.display().to_string()),
            })
            .collect(),
        last_check_at: check.as_ref().map(|c| rfc3339(c.last_check_at)),
        last_check_error: check.as_ref().and_then(|c| c.last_error.clone()),
        next_check_at: check.as_ref().map(|c| rfc3339(c.next_check_at)),
        manifest_received_at: manifest.as_ref().map(|m| rfc3339(m.received_at)),
        manifest_source: manifest.as_ref().map(|m| m.source.clone()),
        site_versions: manifest
            .as_ref()
            .map(|m| m.manifest.site_versions.clone())
            .unwrap_or_default(),
        updates: manifest
            .as_ref()
            .map(|m| ManifestJson::from(&m.manifest).updates)
            .unwrap_or_default(),
        imported_packages: store
            .packages_blocking()?
            .into_iter()
            .map(|p| p.path.display().to_string())
            .collect(),
    })
}
