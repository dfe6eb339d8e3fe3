//! The connection tool's read side: `export` (exactly what would leave, as CSV, for
//! review) and the delivery status of every period, both read from the connection point's
//! store without disturbing a running connection point.

use std::path::Path;

use hrs_core::report::{self, FlatRow, Format};

use crate::outbound::{Policy, outbound};
use crate::store::{PeriodState, SqliteOutbox};
use crate::{ConnectionError, ConnectionPointConfig};

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Periods exported.
    pub periods: usize,
    /// Result rows written (CSV lines after the header).
    pub rows: usize,
}

/// Opens the connection point's store for reading, with a clear error when it is missing.
fn open(config: &ConnectionPointConfig) -> Result<SqliteOutbox, ConnectionError> {
    SqliteOutbox::open_existing(&config.store)?.ok_or_else(|| ConnectionError::NoStore {
        store: config.store.clone(),
        config: config.describe(),
    })
}

/// Returns how many periods are stored and one flat row per result row of each, as it
/// would leave the hierarchy at the level configured now.
fn outbound_rows(config: &ConnectionPointConfig) -> Result<(usize, Vec<FlatRow>), ConnectionError> {
    let stored = open(config)?.stored_blocking()?;
    let rows = stored
        .iter()
        .flat_map(|period| report::flatten(&outbound(period, &Policy::of(config))))
        .collect();
    Ok((stored.len(), rows))
}

/// Returns one flat row per result row of every stored period, as it would leave the
/// hierarchy at the level configured now (for printing as a table or JSON).
pub fn export_rows(config: &ConnectionPointConfig) -> Result<Vec<FlatRow>, ConnectionError> {
    Ok(outbound_rows(config)?.1)
}

/// Writes every stored period, as it would leave the hierarchy at the level configured
/// now, to `dest` as CSV (atomically).
pub fn export_csv(
    config: &ConnectionPointConfig,
    dest: &Path,
) -> Result<ExportSummary, ConnectionError> {
    let (periods, rows) = outbound_rows(config)?;
    let mut csv = Vec::new();
    report::write(&mut csv, &rows, Format::Csv).map_err(|source| ConnectionError::Io {
        path: dest.to_owned(),
        source,
    })?;
    crate::bundle::write_atomic(dest, &csv).map_err(|source| ConnectionError::Io {
        path: dest.to_owned(),
        source,
    })?;
    Ok(ExportSummary {
        periods,
        rows: rows.len(),
    })
}

/// Returns every stored period's delivery state, so operators and scripts can see whether
/// a period was submitted or bundled.
pub fn periods(config: &ConnectionPointConfig) -> Result<Vec<PeriodState>, ConnectionError> {
    Ok(open(config)?.states_blocking()?)
}
