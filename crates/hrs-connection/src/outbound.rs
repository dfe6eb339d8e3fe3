//! The single definition of what leaves the hierarchy. Online submission, offline bundles
//! and the connection tool's export all go through [`outbound`], so what an operator
//! reviews is exactly what is sent.

use std::sync::Arc;

use hrs_core::Level;
use hrs_core::bytes::RunBytes;
use hrs_core::digest::merged_digest;
use hrs_core::hash::Hasher;
use hrs_core::merged_encoding::MergedEncoding;
use hrs_proto::v1 as pb;

use crate::config::{ConnectionPointConfig, Mode};

/// What decides the shape of data leaving the hierarchy, as configured now.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The hierarchy-wide level.
    pub level: Level,
    /// Online or offline; sent along as Basic data.
    pub mode: Mode,
    /// How site codes are hashed below Full.
    pub hasher: Hasher,
}

impl Policy {
    /// Reshapes a stored period's encoding as it may leave under this policy (what
    /// [`outbound`] makes of the decoded period), read from `source` a range at a time.
    pub fn reshape(
        &self,
        source: Arc<dyn RunBytes>,
    ) -> Result<MergedEncoding, hrs_core::merged_encoding::BuildError> {
        let hasher = self.hasher.clone();
        MergedEncoding::outbound(
            source,
            self.level,
            move |site| hasher.hash(site),
            self.mode.as_str(),
        )
    }

    /// The policy of a connection point's configuration.
    pub fn of(config: &ConnectionPointConfig) -> Self {
        Self {
            level: config.level,
            mode: config.mode,
            hasher: config.hasher.clone(),
        }
    }
}

/// Returns the merged period as it may leave the hierarchy under `policy`.
///
/// - The level sent is the lower of the level the data was collected at and `level`, so
///   a level lowered after collection applies at once and never claims more than was
///   collected.
/// - Result sets of queries above that level are dropped (as are sets whose level does not
///   parse: nothing leaves unless it is provably allowed).
/// - Site codes, present and missing, are replaced by their one-way hash (`hasher`: plain
///   or keyed) unless that level is Full: site codes never leave at Basic or Enhanced.
/// - Run ids and sequences are cleared: they are internal to the hierarchy.
/// - The digest is recomputed over what remains.
pub fn outbound(period: &pb::MergedPeriod, policy: &Policy) -> pb::MergedPeriod {
    // Periods are checked on arrival, so the level parses; if it did not, the strictest
    // level is the safe reading.
    let collected: Level = period.level.parse().unwrap_or(Level::Basic);
    let effective = collected.min(policy.level);
    let site_name = |site: &str| {
        if effective == Level::Full {
            site.to_owned()
        } else {
            policy.hasher.hash(site)
        }
    };
    let sites = period
        .sites
        .iter()
        .map(|site| pb::SiteResults {
            site: site_name(&site.site),
            run_id: String::new(),
            sequence: 0,
            started_at: site.started_at.clone(),
            finished_at: site.finished_at.clone(),
            results: site
                .results
                .iter()
                .filter(|set| {
                    set.level
                        .parse::<Level>()
                        .is_ok_and(|query| query.allowed_at(effective))
                })
                .cloned()
                .collect(),
        })
        .collect();
    let mut out = pb::MergedPeriod {
        hierarchy_hash: period.hierarchy_hash.clone(),
        period: period.period.clone(),
        catalog_version: period.catalog_version.clone(),
        level: effective.as_str().to_owned(),
        sites,
        missing_sites: period.missing_sites.iter().map(|s| site_name(s)).collect(),
        digest: String::new(),
        mode: policy.mode.as_str().to_owned(),
    };
    out.digest = merged_digest(&out);
    out
}
