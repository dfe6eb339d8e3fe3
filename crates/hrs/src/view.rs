//! `hrs view`: the merged data an aggregator holds, as operators review it.

use anyhow::Context as _;
use hrs_aggregator::{AggregatorConfig, MergeStore as _, SqliteMergeStore};
use hrs_core::report;

use crate::cli::ViewArgs;

/// Prints the current run of every matching (period, site), one line per result row.
pub fn run(args: ViewArgs) -> anyhow::Result<()> {
    let store_path = match (&args.store, &args.config) {
        (Some(store), _) => store.clone(),
        // Only the store's path is needed, and it is opened read-only: the aggregator's
        // key and folders need not be the operator's to read or write.
        (None, Some(config)) => AggregatorConfig::read(config)?.store,
        (None, None) => anyhow::bail!("give --store or --config"),
    };
    if !store_path.exists() {
        anyhow::bail!("no merge store at {}", store_path.display());
    }
    let store = SqliteMergeStore::open_read_only(&store_path)
        .with_context(|| format!("cannot open merge store {}", store_path.display()))?;
    let runs = store.current(args.period.as_ref(), args.site.as_ref())?;
    let rows: Vec<report::FlatRow> = runs
        .iter()
        .flat_map(|run| {
            let mut rows = report::collector_rows_of(
                &run.period,
                &run.site,
                (&run.started_at, &run.finished_at),
                &run.results,
            );
            rows.extend(report::flatten_site(&run.period, &run.site, &run.results));
            rows
        })
        .filter(|row| args.query.as_ref().is_none_or(|q| *q == row.query_id))
        .collect();
    let mut out = Vec::new();
    report::write(&mut out, &rows, args.format)?;
    crate::output::emit(&String::from_utf8_lossy(&out))?;
    Ok(())
}
