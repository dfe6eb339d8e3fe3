//! The connection tool's read side: `export` (exactly what would leave, as CSV, for
//! review) and the delivery status of every period, both read from the connection point's
//! store without disturbing a running connection point.

use std::path::Path;

use hrs_core::encoded_period::for_each_flat_row;
use hrs_core::report::{self, FlatRow};

use crate::outbound::{Policy, outbound};
use crate::store::{OutboxStore as _, PeriodState, SqliteOutbox};
use crate::{ConnectionError, ConnectionPointConfig};

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Periods exported.
    pub periods: usize,
    /// Result rows written (CSV lines after the header).
    pub rows: usize,
}

/// Why a row could not be exported: the period's encoding, or the file written.
#[derive(Debug, thiserror::Error)]
enum RowError {
    #[error(transparent)]
    Encoded(#[from] hrs_core::encoded::EncodedError),
    #[error(transparent)]
    Io(std::io::Error),
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
/// now, to `dest` as CSV (atomically): each period is reshaped and read from the store a
/// range at a time and written a row at a time, so a period of any size is exported with
/// flat memory.
pub fn export_csv(
    config: &ConnectionPointConfig,
    dest: &Path,
) -> Result<ExportSummary, ConnectionError> {
    let store = open(config)?;
    let stored = store.named_blocking()?;
    let policy = Policy::of(config);
    let io = |source: std::io::Error| ConnectionError::Io {
        path: dest.to_owned(),
        source,
    };
    let mut rows = 0;
    crate::bundle::write_atomic_with(dest, |file| {
        let mut csv = report::CsvRows::new(std::io::BufWriter::new(file))?;
        for period in &stored {
            let leaving = policy
                .reshape(store.payload(period))
                .map_err(std::io::Error::other)?;
            for_each_flat_row(&leaving, |row| {
                rows += 1;
                csv.write(&row).map_err(RowError::Io)
            })
            .map_err(std::io::Error::other)?;
        }
        csv.finish()
    })
    .map_err(io)?;
    Ok(ExportSummary {
        periods: stored.len(),
        rows,
    })
}

/// Returns every stored period's delivery state, so operators and scripts can see whether
/// a period was submitted or bundled.
pub fn periods(config: &ConnectionPointConfig) -> Result<Vec<PeriodState>, ConnectionError> {
    Ok(open(config)?.states_blocking()?)
}
