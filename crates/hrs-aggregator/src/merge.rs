//! Building a period's merged payload from the current run of every site.

use hrs_core::catalog::Catalog;
use hrs_core::digest::merged_digest;
use hrs_core::{HierarchyId, Level, SiteCode};
use hrs_proto::v1 as pb;

/// A period's merged payload and whether every expected site is in it.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The payload, digest included.
    pub period: pb::MergedPeriod,
    /// True when every configured site has a current run.
    pub complete: bool,
}

/// Merges the current runs of one period: the union of every site's result sets, tagged by
/// site, limited to `level`, with the sites that have not reported listed as missing.
pub fn merge(
    hierarchy: HierarchyId,
    level: Level,
    catalog: &Catalog,
    expected: &[SiteCode],
    period: &str,
    runs: Vec<pb::Run>,
) -> Merged {
    let mut sites: Vec<pb::SiteResults> = runs
        .into_iter()
        .filter(|run| run.period == period)
        .map(|run| pb::SiteResults {
            site: run.site,
            run_id: run.run_id,
            sequence: run.sequence,
            started_at: run.started_at,
            finished_at: run.finished_at,
            results: run
                .results
                .into_iter()
                .filter(|set| {
                    set.level
                        .parse::<Level>()
                        .is_ok_and(|l| l.allowed_at(level))
                })
                .collect(),
        })
        .collect();
    sites.sort_by(|a, b| a.site.cmp(&b.site));
    let missing_sites: Vec<String> = expected
        .iter()
        .map(SiteCode::to_string)
        .filter(|code| !sites.iter().any(|s| s.site == *code))
        .collect();
    let mut merged = pb::MergedPeriod {
        hierarchy_hash: hierarchy.hashed(),
        period: period.to_owned(),
        catalog_version: catalog.version.clone(),
        level: level.as_str().to_owned(),
        sites,
        missing_sites,
        digest: String::new(),
        mode: String::new(),
    };
    merged.digest = merged_digest(&merged);
    Merged {
        complete: merged.missing_sites.is_empty(),
        period: merged,
    }
}
