//! Test data shared by the period checks and the merged encoding: valid runs of the
//! built-in catalog made from small plans that proptest generates and shrinks, the merge of
//! such runs as the aggregator makes it, and encodings of a period laid out as any
//! conforming encoder may lay it out.

use hrs_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message as _;

use crate::catalog::{Catalog, ColumnType, Privacy, QueryDef};
use crate::ids::Level;

/// Site codes plans pick from, not in code order.
pub(crate) const CODES: [&str; 6] = ["P02", "CAS", "P10", "P01", "S01", "P03"];

/// The hierarchy every run belongs to.
pub(crate) const HIERARCHY: &str = "6f9619ff-8b86-d011-b42d-00c04fc964ff";

/// The period every run covers.
pub(crate) const PERIOD: &str = "2026-W48";

/// The built-in catalog, parsed once: parsing it is most of a small test case's time.
pub(crate) fn catalog() -> Catalog {
    static CATALOG: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
    CATALOG
        .get_or_init(|| Catalog::builtin().expect("the built-in catalog parses"))
        .clone()
}

/// One result set of a run: which query (among those of the run's level, modulo their
/// count), its rows (each made from a number), and whether it failed (then it has no rows).
#[derive(Debug, Clone)]
pub(crate) struct SetPlan {
    pub(crate) query: usize,
    pub(crate) rows: Vec<u64>,
    pub(crate) failed: bool,
}

/// One site's run: its code (an index into [`CODES`]), level, sequence and result sets.
#[derive(Debug, Clone)]
pub(crate) struct RunPlan {
    pub(crate) code: usize,
    pub(crate) level: Level,
    pub(crate) sequence: u64,
    pub(crate) sets: Vec<SetPlan>,
}

/// A period: the runs of its sites and the level it is merged at.
#[derive(Debug, Clone)]
pub(crate) struct PeriodPlan {
    pub(crate) runs: Vec<RunPlan>,
    pub(crate) level: Level,
}

fn level() -> impl Strategy<Value = Level> {
    prop::sample::select(vec![Level::Basic, Level::Enhanced, Level::Full])
}

fn set_plan() -> impl Strategy<Value = SetPlan> {
    (
        any::<usize>(),
        prop::collection::vec(any::<u64>(), 0..4),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(query, rows, failed)| SetPlan {
            query,
            rows: if failed { Vec::new() } else { rows },
            failed,
        })
}

fn run_plan() -> impl Strategy<Value = RunPlan> {
    (
        0..CODES.len(),
        level(),
        1u64..1000,
        prop::collection::vec(set_plan(), 0..6),
    )
        .prop_map(|(code, level, sequence, sets)| RunPlan {
            code,
            level,
            sequence,
            sets,
        })
}

/// Periods of one to four sites (a code drawn twice is one site), at any level.
pub(crate) fn period_plan() -> impl Strategy<Value = PeriodPlan> {
    (prop::collection::vec(run_plan(), 1..5), level()).prop_map(|(mut runs, level)| {
        let mut codes = std::collections::HashSet::new();
        runs.retain(|run| codes.insert(run.code));
        PeriodPlan { runs, level }
    })
}

/// A number mixed (splitmix64), so the values of one row differ from column to column.
fn mix(mut n: u64) -> u64 {
    n = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    n = (n ^ (n >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    n = (n ^ (n >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    n ^ (n >> 31)
}

/// A value of a column's type made from a number: NULL now and then, a hash in a hashed
/// column, never NaN (a period holding one is not equal to itself).
fn value(ty: ColumnType, hashed: bool, n: u64) -> pb::Value {
    use pb::value::Kind;
    let kind = if n.is_multiple_of(5) {
        Kind::Null(true)
    } else {
        match ty {
            ColumnType::Text if hashed => Kind::Text(crate::hash::hash_value(&format!("h{n}"))),
            ColumnType::Text => Kind::Text(format!("text {} é", n % 1000)),
            ColumnType::Int => Kind::Int(n as i64),
            ColumnType::Real => Kind::Real((n % 100_000) as f64 / 7.0),
            ColumnType::Bool => Kind::Bool(n.is_multiple_of(2)),
        }
    };
    pb::Value { kind: Some(kind) }
}

/// A row of the query made from `seed`.
pub(crate) fn row(query: &QueryDef, seed: u64) -> pb::Row {
    let hashed = |name: &str| {
        query
            .columns
            .iter()
            .any(|c| c.name == name && c.privacy == Privacy::Hash)
    };
    pb::Row {
        values: query
            .output_columns()
            .into_iter()
            .enumerate()
            .map(|(k, (name, ty))| value(ty, hashed(&name), mix(seed ^ mix(k as u64))))
            .collect(),
    }
}

/// The result set of a query, with its declared columns.
pub(crate) fn set(query: &QueryDef, rows: Vec<pb::Row>, error: &str) -> pb::ResultSet {
    pb::ResultSet {
        query_id: query.id.clone(),
        level: query.level.as_str().to_owned(),
        columns: query.wire_columns(),
        rows,
        error: error.to_owned(),
        duration_ms: 3,
    }
}

/// A run the run check accepts, made from its plan.
pub(crate) fn run(plan: &RunPlan, catalog: &Catalog) -> pb::Run {
    let queries: Vec<&QueryDef> = catalog.at_level(plan.level).collect();
    let mut ids = std::collections::HashSet::new();
    let results = plan
        .sets
        .iter()
        .filter_map(|set_plan| {
            let query = queries[set_plan.query % queries.len()];
            ids.insert(query.id.clone()).then(|| {
                let rows = set_plan.rows.iter().map(|n| row(query, *n)).collect();
                let error = if set_plan.failed {
                    "timeout expired"
                } else {
                    ""
                };
                set(query, rows, error)
            })
        })
        .collect();
    let code = CODES[plan.code];
    let mut run = pb::Run {
        run_id: uuid::Uuid::from_u64_pair(plan.sequence, plan.code as u64).to_string(),
        sequence: plan.sequence,
        site: code.to_owned(),
        hierarchy_id: HIERARCHY.to_owned(),
        period: PERIOD.to_owned(),
        catalog_version: catalog.version.clone(),
        level: plan.level.as_str().to_owned(),
        started_at: "2026-11-30T06:00:00Z".into(),
        finished_at: format!("2026-11-30T06:{:02}:00Z", plan.sequence % 60),
        results,
        ..Default::default()
    };
    run.digest = crate::digest::run_digest(&run);
    run
}

/// The runs of a period's plan.
pub(crate) fn runs(plan: &PeriodPlan, catalog: &Catalog) -> Vec<pb::Run> {
    plan.runs
        .iter()
        .map(|run_plan| run(run_plan, catalog))
        .collect()
}

/// The hierarchy's hash, as periods carry it.
pub(crate) fn hierarchy_hash() -> String {
    HIERARCHY
        .parse::<crate::HierarchyId>()
        .expect("a hierarchy id")
        .hashed()
}

/// The sites a plan's period expects but has no run from.
pub(crate) fn missing(plan: &PeriodPlan) -> Vec<String> {
    (0..CODES.len())
        .filter(|code| !plan.runs.iter().any(|run| run.code == *code))
        .take(2)
        .map(|code| CODES[code].to_owned())
        .collect()
}

/// Merges runs as the aggregator's `merge` does (hrs-aggregator's merge.rs): each site's
/// result sets of a level allowed at the period's, sites in code order, the digest last.
pub(crate) fn merge(
    level: Level,
    catalog: &Catalog,
    missing_sites: Vec<String>,
    runs: Vec<pb::Run>,
) -> pb::MergedPeriod {
    let mut sites: Vec<pb::SiteResults> = runs
        .into_iter()
        .filter(|run| run.period == PERIOD)
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
    let mut merged = pb::MergedPeriod {
        hierarchy_hash: hierarchy_hash(),
        period: PERIOD.to_owned(),
        catalog_version: catalog.version.clone(),
        level: level.as_str().to_owned(),
        sites,
        missing_sites,
        digest: String::new(),
        mode: String::new(),
    };
    merged.digest = crate::digest::merged_digest(&merged);
    merged
}

/// The merged period of a plan.
pub(crate) fn period(plan: &PeriodPlan) -> pb::MergedPeriod {
    let catalog = catalog();
    merge(plan.level, &catalog, missing(plan), runs(plan, &catalog))
}

/// How a period is laid out on the wire beyond prost's canonical order: what any
/// conforming encoder may do, read alike by prost and by the walk of the encoding.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    /// Every message's own fields after its repeated messages (sites, sets, rows).
    pub(crate) own_fields_last: bool,
    /// Earlier values of the string fields, overridden by the later ones.
    pub(crate) stale: bool,
    /// An unknown field in every message.
    pub(crate) unknown: bool,
}

pub(crate) fn layout() -> impl Strategy<Value = Layout> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(own_fields_last, stale, unknown)| {
        Layout {
            own_fields_last,
            stale,
            unknown,
        }
    })
}

/// A length-delimited field: its key, its length, its bytes.
pub(crate) fn len_field(number: u32, bytes: &[u8]) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let mut out = Vec::with_capacity(bytes.len() + 8);
    encode_key(number, WireType::LengthDelimited, &mut out);
    encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// Field 99, known to no message of run.proto, as a varint.
const UNKNOWN: [u8; 3] = [0x98, 0x06, 0x01];

/// A message's own fields and its repeated messages, in the layout's order.
fn message(layout: &Layout, stale: Vec<u8>, own: Vec<u8>, nested: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    if layout.stale {
        out.extend(stale);
    }
    if layout.own_fields_last {
        out.extend(nested);
        out.extend(own);
    } else {
        out.extend(own);
        out.extend(nested);
    }
    if layout.unknown {
        out.extend(UNKNOWN);
    }
    out
}

/// An earlier value of a string field that a later one overrides: none for an empty field,
/// which prost does not write, so nothing would override it.
fn stale(value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        "stale".into()
    }
}

/// Encodes a period in a layout. The default layout decodes as prost's encoding does but is
/// not byte for byte prost's: each message's own fields come before its repeated messages.
pub(crate) fn lay_out(period: &pb::MergedPeriod, layout: &Layout) -> Vec<u8> {
    let sites: Vec<u8> = period
        .sites
        .iter()
        .flat_map(|site| len_field(5, &lay_out_site(site, layout)))
        .collect();
    let stale = pb::MergedPeriod {
        hierarchy_hash: stale(&period.hierarchy_hash),
        period: stale(&period.period),
        catalog_version: stale(&period.catalog_version),
        level: stale(&period.level),
        digest: stale(&period.digest),
        mode: stale(&period.mode),
        ..Default::default()
    };
    let own = pb::MergedPeriod {
        sites: Vec::new(),
        ..period.clone()
    };
    message(layout, stale.encode_to_vec(), own.encode_to_vec(), sites)
}

fn lay_out_site(site: &pb::SiteResults, layout: &Layout) -> Vec<u8> {
    let sets: Vec<u8> = site
        .results
        .iter()
        .flat_map(|set| len_field(4, &lay_out_set(set, layout)))
        .collect();
    let stale = pb::SiteResults {
        site: stale(&site.site),
        run_id: stale(&site.run_id),
        sequence: site.sequence.min(7),
        started_at: stale(&site.started_at),
        finished_at: stale(&site.finished_at),
        ..Default::default()
    };
    let own = pb::SiteResults {
        results: Vec::new(),
        ..site.clone()
    };
    message(layout, stale.encode_to_vec(), own.encode_to_vec(), sets)
}

fn lay_out_set(set: &pb::ResultSet, layout: &Layout) -> Vec<u8> {
    let rows: Vec<u8> = set
        .rows
        .iter()
        .flat_map(|row| {
            let mut bytes = row.encode_to_vec();
            if layout.unknown {
                bytes.extend(UNKNOWN);
            }
            len_field(4, &bytes)
        })
        .collect();
    let stale = pb::ResultSet {
        query_id: stale(&set.query_id),
        level: stale(&set.level),
        error: stale(&set.error),
        duration_ms: set.duration_ms.min(9),
        ..Default::default()
    };
    let own = pb::ResultSet {
        rows: Vec::new(),
        ..set.clone()
    };
    message(layout, stale.encode_to_vec(), own.encode_to_vec(), rows)
}

/// An encoding in memory that records every read of it, to show how it is read.
pub(crate) struct Counted {
    bytes: Vec<u8>,
    reads: std::sync::Mutex<Vec<(u64, usize)>>,
}

impl Counted {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            reads: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Every read so far, as offset and length, and forgets them.
    pub(crate) fn reads(&self) -> Vec<(u64, usize)> {
        std::mem::take(&mut *self.reads.lock().expect("not poisoned"))
    }
}

impl crate::bytes::RunBytes for Counted {
    fn size(&self) -> u64 {
        self.bytes.size()
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.reads.lock().expect("not poisoned").push((offset, len));
        self.bytes.read_at(offset, len)
    }
}
