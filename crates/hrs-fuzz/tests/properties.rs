//! Property tests: generated runs, merged periods, bundles, configuration files,
//! connection strings and identifiers, fed to every decoder and validator.
//!
//! Case counts are modest so the whole file runs in seconds; `PROPTEST_CASES` raises them
//! all. Generated runs contain no wire groups and stay far below the run check's size
//! limits: those are the known, deliberate differences between checking a run's bytes as
//! they arrive and checking the canonical encoding of what prost decodes from them (see
//! the crate docs), and are left out of generation rather than excused.

use std::path::Path;

use hrs_core::catalog::Catalog;
use hrs_core::digest::{merged_digest, run_digest};
use hrs_core::encoded::check_run_encoded;
use hrs_core::{Period, SiteCode};
use hrs_fuzz::seeds::{self, corpus};
use hrs_fuzz::targets::check_canonical;
use hrs_fuzz::wire::{self, Field, Payload, Schema};
use hrs_proto::v1 as pb;
use hrs_proto::v1::value::Kind;
use proptest::prelude::*;
use prost::Message as _;

/// The configuration of a property: `cases` unless `PROPTEST_CASES` says otherwise, and no
/// regression files written into the source tree (a failure prints its input instead).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn pick<T>(items: &[T], n: u32) -> Option<&T> {
    (!items.is_empty()).then(|| &items[n as usize % items.len()])
}

fn pick_mut<T>(items: &mut [T], n: u32) -> Option<&mut T> {
    let len = items.len();
    (len > 0).then(|| &mut items[n as usize % len])
}

// ---------------------------------------------------------------------------------------
// Generated values and runs.

/// Raw material of one cell: a value of each type, and which to use when the type is free.
#[derive(Debug, Clone)]
struct Cell {
    null: bool,
    kind: u8,
    text: String,
    int: i64,
    real: f64,
    flag: bool,
}

fn cell() -> impl Strategy<Value = Cell> {
    (
        prop::bool::weighted(0.1),
        any::<u8>(),
        prop_oneof![".{0,16}", Just(String::new()), "[\\x00-\\x7f]{0,4}"],
        prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), Just(0)],
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0),
            Just(5e-324)
        ],
        any::<bool>(),
    )
        .prop_map(|(null, kind, text, int, real, flag)| Cell {
            null,
            kind,
            text,
            int,
            real,
            flag,
        })
}

impl Cell {
    /// The value of the declared type `ty` (or NULL), or of any type when `ty` is None.
    fn value(&self, ty: Option<&str>) -> pb::Value {
        if self.null {
            return pb::Value {
                kind: Some(Kind::Null(true)),
            };
        }
        let kind = match ty.unwrap_or(["text", "int", "real", "bool"][self.kind as usize % 4]) {
            "text" => Kind::Text(self.text.clone()),
            "int" => Kind::Int(self.int),
            "real" => Kind::Real(self.real),
            _ => Kind::Bool(self.flag),
        };
        pb::Value { kind: Some(kind) }
    }
}

/// Strings a run's fields may be set to: valid ones, near misses, and garbage.
fn field_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "P01", "CAS", "p01", "P1", "2026-W48", "2026-W53", "2025-W53", "2026-W+1", "Basic",
            "Enhanced", "Full", "full", "Extended", "2026.12.1", "1999.1.1", seeds::HIERARCHY_ID,
            "{3B1F7A52-9C4E-4D7A-8F0E-2A6C5D9E1B47}", "not-a-guid", "text", "int", "real", "bool",
            "", "0123456789abcdef",
        ])
        .prop_map(str::to_owned),
        1 => ".{0,10}",
    ]
}

/// One change to a valid run; indices are taken modulo what is there.
#[derive(Debug, Clone)]
enum Change {
    Cell {
        set: u32,
        row: u32,
        col: u32,
        cell: Cell,
        typed: bool,
    },
    DropRow {
        set: u32,
        row: u32,
    },
    RepeatRow {
        set: u32,
        row: u32,
    },
    DropValue {
        set: u32,
        row: u32,
    },
    DropSet {
        set: u32,
    },
    RepeatSet {
        set: u32,
    },
    SwapSets {
        a: u32,
        b: u32,
    },
    Error {
        set: u32,
        text: String,
    },
    RunField {
        field: u8,
        text: String,
    },
    Sequence(u64),
    ColumnName {
        set: u32,
        col: u32,
        name: String,
    },
    ColumnType {
        set: u32,
        col: u32,
        ty: String,
    },
    SetLevel {
        set: u32,
        level: String,
    },
    QueryId {
        set: u32,
        id: String,
    },
}

fn change() -> impl Strategy<Value = Change> {
    let n = any::<u32>;
    prop_oneof![
        8 => (n(), n(), n(), cell(), prop::bool::weighted(0.8))
            .prop_map(|(set, row, col, cell, typed)| Change::Cell { set, row, col, cell, typed }),
        2 => (n(), n()).prop_map(|(set, row)| Change::DropRow { set, row }),
        2 => (n(), n()).prop_map(|(set, row)| Change::RepeatRow { set, row }),
        1 => (n(), n()).prop_map(|(set, row)| Change::DropValue { set, row }),
        1 => n().prop_map(|set| Change::DropSet { set }),
        1 => n().prop_map(|set| Change::RepeatSet { set }),
        2 => (n(), n()).prop_map(|(a, b)| Change::SwapSets { a, b }),
        1 => (n(), ".{0,8}").prop_map(|(set, text)| Change::Error { set, text }),
        2 => (any::<u8>(), field_text()).prop_map(|(field, text)| Change::RunField { field, text }),
        1 => prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>()].prop_map(Change::Sequence),
        1 => (n(), n(), field_text()).prop_map(|(set, col, name)| Change::ColumnName { set, col, name }),
        1 => (n(), n(), field_text()).prop_map(|(set, col, ty)| Change::ColumnType { set, col, ty }),
        1 => (n(), field_text()).prop_map(|(set, level)| Change::SetLevel { set, level }),
        1 => (n(), field_text()).prop_map(|(set, id)| Change::QueryId { set, id }),
    ]
}

/// Applies a change to result sets (of a run or of one site of a merged period).
fn change_sets(sets: &mut Vec<pb::ResultSet>, change: &Change) {
    match change {
        Change::Cell {
            set,
            row,
            col,
            cell,
            typed,
        } => {
            let Some(set) = pick_mut(sets, *set) else {
                return;
            };
            let types: Vec<String> = set.columns.iter().map(|c| c.r#type.clone()).collect();
            let Some(row) = pick_mut(&mut set.rows, *row) else {
                return;
            };
            let len = row.values.len();
            if len > 0 {
                let at = *col as usize % len;
                let ty = if *typed {
                    types.get(at).map(String::as_str)
                } else {
                    None
                };
                row.values[at] = cell.value(ty);
            }
        }
        Change::DropRow { set, row } => {
            if let Some(set) = pick_mut(sets, *set)
                && !set.rows.is_empty()
            {
                let at = *row as usize % set.rows.len();
                set.rows.remove(at);
            }
        }
        Change::RepeatRow { set, row } => {
            if let Some(set) = pick_mut(sets, *set)
                && let Some(copy) = pick(&set.rows, *row).cloned()
            {
                set.rows.push(copy);
            }
        }
        Change::DropValue { set, row } => {
            if let Some(set) = pick_mut(sets, *set)
                && let Some(row) = pick_mut(&mut set.rows, *row)
            {
                row.values.pop();
            }
        }
        Change::DropSet { set } => {
            if !sets.is_empty() {
                let at = *set as usize % sets.len();
                sets.remove(at);
            }
        }
        Change::RepeatSet { set } => {
            if let Some(copy) = pick(sets, *set).cloned() {
                sets.push(copy);
            }
        }
        Change::SwapSets { a, b } => {
            if !sets.is_empty() {
                let len = sets.len();
                sets.swap(*a as usize % len, *b as usize % len);
            }
        }
        Change::Error { set, text } => {
            if let Some(set) = pick_mut(sets, *set) {
                set.error = text.clone();
            }
        }
        Change::ColumnName { set, col, name } => {
            if let Some(set) = pick_mut(sets, *set)
                && let Some(column) = pick_mut(&mut set.columns, *col)
            {
                column.name = name.clone();
            }
        }
        Change::ColumnType { set, col, ty } => {
            if let Some(set) = pick_mut(sets, *set)
                && let Some(column) = pick_mut(&mut set.columns, *col)
            {
                column.r#type = ty.clone();
            }
        }
        Change::SetLevel { set, level } => {
            if let Some(set) = pick_mut(sets, *set) {
                set.level = level.clone();
            }
        }
        Change::QueryId { set, id } => {
            if let Some(set) = pick_mut(sets, *set) {
                set.query_id = id.clone();
            }
        }
        Change::RunField { .. } | Change::Sequence(_) => {}
    }
}

fn change_run(run: &mut pb::Run, change: &Change) {
    match change {
        Change::RunField { field, text } => {
            let slot = match field % 9 {
                0 => &mut run.site,
                1 => &mut run.period,
                2 => &mut run.level,
                3 => &mut run.catalog_version,
                4 => &mut run.hierarchy_id,
                5 => &mut run.run_id,
                6 => &mut run.hash_key_id,
                7 => &mut run.started_at,
                _ => &mut run.finished_at,
            };
            *slot = text.clone();
        }
        Change::Sequence(n) => run.sequence = *n,
        other => change_sets(&mut run.results, other),
    }
}

/// How a generated run is laid out on the wire beyond prost's canonical order: things a
/// conforming encoder may do and both checks must read alike. No wire groups.
#[derive(Debug, Clone)]
enum Layout {
    /// An unknown field somewhere in the run, a result set or a row.
    Unknown {
        at: u32,
        number: u32,
        wire: u8,
        value: u64,
    },
    /// An earlier occurrence of a run's string field, overridden by the later one.
    Stale { field: u32, text: String },
    /// Two fields of the run swapped.
    Swap { a: u32, b: u32 },
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        (
            any::<u32>(),
            13u32..64,
            prop::sample::select(vec![0u8, 1, 2, 5]),
            any::<u64>()
        )
            .prop_map(|(at, number, wire, value)| Layout::Unknown {
                at,
                number,
                wire,
                value
            }),
        (1u32..13, field_text()).prop_map(|(field, text)| Layout::Stale { field, text }),
        (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Layout::Swap { a, b }),
    ]
}

/// Encodes a run with a layout applied.
fn lay_out(run: &pb::Run, layouts: &[Layout]) -> Vec<u8> {
    let mut fields =
        wire::parse(&run.encode_to_vec(), Some(Schema::Run)).expect("prost's own encoding parses");
    for layout in layouts {
        match layout {
            Layout::Unknown {
                at,
                number,
                wire,
                value,
            } => {
                let payload = match wire {
                    0 => Payload::Varint(*value),
                    1 => Payload::Fixed64(*value),
                    2 => Payload::Bytes(value.to_le_bytes().to_vec()),
                    _ => Payload::Fixed32(*value as u32),
                };
                // Into the run itself, or into a message in it: a set, a row, a value (whose
                // unknown fields prost skips in both checks). Field numbers above 12 are
                // unknown everywhere in run.proto.
                let paths = wire::paths(&fields);
                let parent = pick(&paths, *at)
                    .filter(|_| at % 3 != 0)
                    .and_then(|path| wire::parent_mut(&mut fields, path))
                    .and_then(|(list, i)| match &mut list[i].payload {
                        Payload::Message(_, inner) => Some(inner),
                        _ => None,
                    });
                let field = Field {
                    number: *number,
                    payload,
                };
                match parent {
                    Some(inner) => inner.push(field),
                    None => fields.push(field),
                }
            }
            Layout::Stale { field, text } => fields.insert(
                0,
                Field {
                    number: *field,
                    payload: if *field == 2 {
                        Payload::Varint(text.len() as u64)
                    } else if *field == 10 {
                        // Field 10 is the results: a stale set would be a real one.
                        Payload::Bytes(Vec::new())
                    } else {
                        Payload::Bytes(text.clone().into_bytes())
                    },
                },
            ),
            Layout::Swap { a, b } => {
                if !fields.is_empty() {
                    let len = fields.len();
                    fields.swap(*a as usize % len, *b as usize % len);
                }
            }
        }
    }
    wire::encode(&fields)
}

/// A seed run with changes, its digest fixed or not.
fn changed_run() -> impl Strategy<Value = pb::Run> {
    let runs = corpus().runs.clone();
    (
        0..runs.len(),
        prop::collection::vec(change(), 0..5),
        prop::bool::weighted(0.8),
    )
        .prop_map(move |(i, changes, fix)| {
            let mut run = runs[i].clone();
            for change in &changes {
                change_run(&mut run, change);
            }
            if fix {
                run.digest = run_digest(&run);
            }
            run
        })
}

proptest! {
    #![proptest_config(config(96))]

    /// Whatever a run holds and however it is laid out on the wire, the run check accepts
    /// its bytes exactly when it accepts the canonical encoding of what prost decodes from
    /// them, with the same header and digest.
    #[test]
    fn the_run_check_reads_any_layout_as_prost_does(
        run in changed_run(),
        layouts in prop::collection::vec(layout(), 0..4),
    ) {
        let bytes = lay_out(&run, &layouts);
        prop_assert!(wire::streaming_gap(&bytes).is_none(), "generation left the known gaps");
        let decoded = pb::Run::decode(bytes.as_slice()).expect("a laid out run decodes");
        let streamed = check_run_encoded(&bytes);
        let checked = check_canonical(&decoded);
        prop_assert_eq!(
            streamed.is_ok(),
            checked.is_ok(),
            "streamed {:?}, decoded {:?}",
            streamed.as_ref().err().map(ToString::to_string),
            checked.as_ref().err()
        );
        // The fuzz target's oracle compares headers, digests and the run's own fields.
        hrs_fuzz::targets::run_encoded(&bytes);
    }

    /// Digests leave out identity and timing and the order of sets and sites, and change
    /// with any content.
    #[test]
    fn digests_cover_content_only(
        i in 0usize..3,
        shuffle in prop::collection::vec((any::<u32>(), any::<u32>()), 0..6),
        sequence in any::<u64>(),
        change in (any::<u32>(), any::<u32>(), any::<u32>(), cell()),
    ) {
        let run = corpus().runs[i].clone();
        let mut same = run.clone();
        for (a, b) in &shuffle {
            change_sets(&mut same.results, &Change::SwapSets { a: *a, b: *b });
        }
        same.sequence = sequence;
        same.run_id = uuid::Uuid::from_u128(u128::from(sequence)).to_string();
        same.started_at = "later".into();
        for set in &mut same.results {
            set.duration_ms = sequence;
        }
        prop_assert_eq!(run_digest(&same), run_digest(&run));

        let (set, row, col, cell) = change;
        let mut other = run.clone();
        change_sets(&mut other.results, &Change::Cell { set, row, col, cell, typed: false });
        // Equal content is equal bit for bit: 0.0 and -0.0 differ, NaNs of equal bits not.
        let changed = other.encode_to_vec() != run.encode_to_vec();
        prop_assert_eq!(run_digest(&other) != run_digest(&run), changed);

        let period = corpus().periods[0].clone();
        let mut shuffled = period.clone();
        shuffled.sites.reverse();
        shuffled.missing_sites.reverse();
        for site in &mut shuffled.sites {
            site.run_id = "another".into();
            site.sequence = sequence;
        }
        prop_assert_eq!(merged_digest(&shuffled), merged_digest(&period));
    }
}

/// One defect of a valid run.
#[derive(Debug, Clone)]
enum Defect {
    WrongType { set: u32, row: u32, col: u32 },
    ShortRow { set: u32, row: u32 },
    LongRow { set: u32, row: u32 },
    ColumnRenamed { set: u32, col: u32 },
    ColumnRetyped { set: u32, col: u32 },
    WrongLevel { set: u32 },
    UnknownQuery { set: u32 },
    FailedWithRows { set: u32 },
    SetTwice { set: u32 },
    RunField { field: u8 },
}

fn defect() -> impl Strategy<Value = Defect> {
    let n = any::<u32>;
    prop_oneof![
        3 => (n(), n(), n()).prop_map(|(set, row, col)| Defect::WrongType { set, row, col }),
        1 => (n(), n()).prop_map(|(set, row)| Defect::ShortRow { set, row }),
        1 => (n(), n()).prop_map(|(set, row)| Defect::LongRow { set, row }),
        1 => (n(), n()).prop_map(|(set, col)| Defect::ColumnRenamed { set, col }),
        1 => (n(), n()).prop_map(|(set, col)| Defect::ColumnRetyped { set, col }),
        1 => n().prop_map(|set| Defect::WrongLevel { set }),
        1 => n().prop_map(|set| Defect::UnknownQuery { set }),
        1 => n().prop_map(|set| Defect::FailedWithRows { set }),
        1 => n().prop_map(|set| Defect::SetTwice { set }),
        1 => any::<u8>().prop_map(|field| Defect::RunField { field }),
    ]
}

/// Gives a valid run with rows exactly one defect, and returns what its refusal must say:
/// the field at fault with the start of the problem, or the problem alone for the run's
/// catalog and digest. None when the run has no place for the defect.
fn break_run(run: &mut pb::Run, defect: &Defect) -> Option<String> {
    let with_rows: Vec<usize> = (0..run.results.len())
        .filter(|&i| !run.results[i].rows.is_empty())
        .collect();
    let set_with_rows = |n: u32| pick(&with_rows, n).copied();
    let any_set = |n: u32, len: usize| (len > 0).then(|| n as usize % len);
    let said = match defect {
        Defect::WrongType { set, row, col } => {
            let s = set_with_rows(*set)?;
            let set = &mut run.results[s];
            let at = *col as usize % set.columns.len().max(1);
            let column = set.columns.get(at)?;
            let wrong = if column.r#type == "int" {
                Kind::Text("7".into())
            } else {
                Kind::Int(7)
            };
            let name = column.name.clone();
            let r = *row as usize % set.rows.len();
            set.rows[r].values[at] = pb::Value { kind: Some(wrong) };
            format!("field run.results[{s}].rows[{r}].{name}: is not of the declared type")
        }
        Defect::ShortRow { set, row } | Defect::LongRow { set, row } => {
            let s = set_with_rows(*set)?;
            let r = *row as usize % run.results[s].rows.len();
            let values = &mut run.results[s].rows[r].values;
            if matches!(defect, Defect::ShortRow { .. }) {
                values.pop();
            } else {
                values.push(pb::Value { kind: None });
            }
            format!(
                "field run.results[{s}].rows[{r}]: has {} values",
                values.len()
            )
        }
        Defect::ColumnRenamed { set, col } | Defect::ColumnRetyped { set, col } => {
            let s = any_set(*set, run.results.len())?;
            let column = pick_mut(&mut run.results[s].columns, *col)?;
            if matches!(defect, Defect::ColumnRenamed { .. }) {
                column.name.push('x');
            } else {
                column.r#type = if column.r#type == "text" {
                    "int".into()
                } else {
                    "text".into()
                };
            }
            format!("field run.results[{s}].columns: do not match")
        }
        Defect::WrongLevel { set } => {
            let s = any_set(*set, run.results.len())?;
            let set = &mut run.results[s];
            set.level = if set.level == "Full" {
                "Basic".into()
            } else {
                "Full".into()
            };
            format!("field run.results[{s}].level: is {:?}", set.level)
        }
        Defect::UnknownQuery { set } => {
            let s = any_set(*set, run.results.len())?;
            let set = &mut run.results[s];
            set.query_id.push_str("-UNKNOWN");
            format!(
                "field run.results[{s}].query_id: {:?} is not in catalog",
                set.query_id
            )
        }
        Defect::FailedWithRows { set } => {
            let s = set_with_rows(*set)?;
            run.results[s].error = "failed".into();
            format!("field run.results[{s}].rows: a failed query carries no rows")
        }
        Defect::SetTwice { set } => {
            let copy = pick(&run.results, *set).cloned()?;
            run.results.push(copy);
            // Sets are checked in query-id order, each id's first on the wire first, so the
            // copy at the end is the one that repeats.
            format!(
                "field run.results[{}].query_id: appears twice",
                run.results.len() - 1
            )
        }
        Defect::RunField { field } => match field % 8 {
            0 => {
                run.site = "p01".into();
                "field run.site: ".into()
            }
            1 => {
                run.period = "2026-W54".into();
                "field run.period: ".into()
            }
            2 => {
                run.level = "Extended".into();
                "field run.level: ".into()
            }
            3 => {
                run.catalog_version = "0.0.0".into();
                "unknown catalog version \"0.0.0\"".into()
            }
            4 => {
                run.hierarchy_id = "not-a-guid".into();
                "field run.hierarchy_id: ".into()
            }
            5 => {
                run.run_id = "not-a-uuid".into();
                "field run.run_id: not a UUID".into()
            }
            6 => {
                run.sequence = 0;
                "field run.sequence: must be at least 1".into()
            }
            _ => {
                run.digest = "0".repeat(64);
                format!("digest mismatch: message says {}", run.digest)
            }
        },
    };
    Some(said)
}

proptest! {
    #![proptest_config(config(96))]

    /// A run with exactly one defect is refused naming the field at fault and the problem,
    /// whatever the order of its sets on the wire.
    #[test]
    fn the_run_check_names_the_one_defect(
        i in 0usize..3,
        defect in defect(),
        reversed in any::<bool>(),
    ) {
        let mut run = corpus().runs[i].clone();
        if reversed {
            run.results.reverse();
        }
        let Some(said) = break_run(&mut run, &defect) else {
            return Err(TestCaseError::reject("the run has no place for this defect"));
        };
        if !matches!(defect, Defect::RunField { field } if field % 8 == 7) {
            run.digest = run_digest(&run);
        }
        let refused = check_run_encoded(&run.encode_to_vec())
            .expect_err("a run with a defect is refused")
            .to_string();
        prop_assert!(refused.starts_with(&said), "{:?} does not start with {:?}", refused, said);
    }
}

// ---------------------------------------------------------------------------------------
// Offline bundles.

proptest! {
    #![proptest_config(config(64))]

    /// An offline bundle (tar) with any bytes changed is refused, or holds the very periods
    /// prepared (the change hit what no check covers: tar padding, a file's time stamp).
    #[test]
    fn an_offline_bundle_changed_on_the_media_is_refused_or_unchanged(
        edits in prop::collection::vec(hrs_fuzz::edit(hrs_fuzz::Form::Bytes), 1..4),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let seed = &corpus().offline_bundles[0];
        let read = |bytes: &[u8]| {
            let path = dir.path().join("bundle.tar");
            std::fs::write(&path, bytes).expect("writes the bundle");
            hrs_connection::offline::read_bundle_file(&path)
        };
        let prepared = read(seed).expect("a seed bundle reads");
        let changed = hrs_fuzz::mutate::apply(seed, &edits, None, &corpus().offline_bundles);
        if let Ok(bundle) = read(&changed) {
            let encoded = |b: &hrs_connection::offline::Bundle| {
                b.periods
                    .iter()
                    .map(|p| hrs_core::bytes::sha256_of(p.as_ref(), 1 << 20).expect("reads"))
                    .collect::<Vec<_>>()
            };
            prop_assert_eq!(encoded(&bundle), encoded(&prepared));
            prop_assert_eq!(bundle.manifest.periods, prepared.manifest.periods.clone());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Configuration files.

/// The seed configurations, each with its role's loader, file name and texts. The loader
/// reads values only: the seeds name a deployment's folders, and the files a role uses are
/// checked by each role's own tests.
type Loader = fn(&Path) -> Result<(), hrs_core::config::ConfigError>;

fn roles() -> Vec<(&'static str, Loader, &'static [String])> {
    let c = corpus();
    vec![
        (
            "agent.toml",
            |p| hrs_agent::AgentConfig::read(p).map(drop),
            &c.agent_configs,
        ),
        (
            "aggregator.toml",
            |p| hrs_aggregator::AggregatorConfig::read(p).map(drop),
            &c.aggregator_configs,
        ),
        (
            "connection-point.toml",
            |p| hrs_connection::ConnectionPointConfig::read(p).map(drop),
            &c.connection_point_configs,
        ),
        (
            "intake.toml",
            |p| hrs_intake::IntakeConfig::read(p).map(drop),
            &c.intake_configs,
        ),
    ]
}

/// Loads a configuration text from a file of that name in a fresh folder that also holds
/// the seed hash key.
fn load(name: &str, loader: Loader, text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hierarchy.key"), seeds::HASH_KEY).expect("writes the key");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("writes the configuration");
    loader(&path).map_err(|e| e.to_string())
}

/// The `key = value` lines of a configuration that are in force (not commented out).
fn key_lines(text: &str) -> Vec<(usize, String, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let (key, value) = line.split_once('=')?;
            let key = key.trim();
            (!line.trim_start().starts_with('#')
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .then(|| (i, key.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

fn replace_line(text: &str, at: usize, with: Option<&str>) -> String {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| if i == at { with } else { Some(line) })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The valid examples in `deploy/` and the seed variants load: they are what operators
/// copy, and every other configuration property starts from them.
#[test]
fn every_seed_configuration_loads() {
    let mut failed = Vec::new();
    for (name, loader, texts) in roles() {
        for (i, text) in texts.iter().enumerate() {
            if let Err(error) = load(name, loader, text) {
                failed.push(format!("{name} #{i}: {error}"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "seed configurations that do not load:\n{}",
        failed.join("\n")
    );
}

/// Every key given a value of the wrong type, left out, or misspelled: the file is refused
/// naming that key (or, left out, loads with its default).
#[test]
fn a_wrong_or_missing_key_is_named() {
    for (name, loader, texts) in roles() {
        // Seeds that do not load are reported by the test above; edits of them say nothing.
        for text in texts.iter().filter(|t| load(name, loader, t).is_ok()) {
            for (at, key, value) in key_lines(text) {
                let wrong = if value.starts_with('"') {
                    "42"
                } else {
                    "\"x\""
                };
                let error = load(
                    name,
                    loader,
                    &replace_line(text, at, Some(&format!("{key} = {wrong}"))),
                )
                .expect_err("a value of the wrong type is refused");
                assert!(
                    error.contains(&key),
                    "{name}: {key} = {wrong} gives: {error}"
                );

                if let Err(error) = load(name, loader, &replace_line(text, at, None)) {
                    assert!(error.contains(&key), "{name} without {key} gives: {error}");
                }

                let misspelled = format!("{key}x = {value}");
                let error = load(name, loader, &replace_line(text, at, Some(&misspelled)))
                    .expect_err("an unknown key is refused");
                assert!(
                    error.contains(&format!("{key}x")),
                    "{name}: {misspelled} gives: {error}"
                );
            }
        }
    }
}

/// An ADO.NET connection string of known keys in any case and spacing, values quoted in
/// any of the three ways, in any order, a password among them.
fn connection_string_with(password: String) -> impl Strategy<Value = String> {
    let key = |names: Vec<&'static str>| {
        (prop::sample::select(names), any::<bool>(), any::<bool>()).prop_map(
            |(k, upper, spaced)| {
                let k = if upper {
                    k.to_uppercase()
                } else {
                    k.to_owned()
                };
                if spaced { format!(" {k} ") } else { k }
            },
        )
    };
    let value = ".{0,10}";
    let quoted = |v: String, how: u8| match how % 4 {
        0 => v,
        1 => format!("'{}'", v.replace('\'', "''")),
        2 => format!("\"{}\"", v.replace('"', "\"\"")),
        _ => format!("{{{}}}", v.replace('}', "")),
    };
    (
        key(vec!["server", "data source"]),
        prop_oneof![
            Just("cm01".to_owned()),
            Just("tcp:cm01,1433".to_owned()),
            value.prop_map(String::from)
        ],
        key(vec!["password", "pwd"]),
        any::<u8>(),
        prop::collection::vec(
            (
                key(vec![
                    "database",
                    "user id",
                    "uid",
                    "encrypt",
                    "trustservercertificate",
                    "connect timeout",
                    "command timeout",
                    "connectretrycount",
                    "connectretryinterval",
                    "applicationintent",
                    "integrated security",
                    "application name",
                    "no such key",
                ]),
                value,
                any::<u8>(),
            ),
            0..5,
        ),
        any::<u32>(),
    )
        .prop_map(move |(server_key, server, password_key, how, others, at)| {
            let mut pairs = vec![
                format!("{server_key}={}", quoted(server, 0)),
                format!("{password_key}={}", quoted(password.clone(), how)),
            ];
            for (k, v, how) in others {
                pairs.push(format!("{k}={}", quoted(v, how)));
            }
            let len = pairs.len();
            pairs.swap(1, at as usize % len);
            pairs.join(";")
        })
}

proptest! {
    #![proptest_config(config(128))]

    /// Whatever else a connection string holds, its password shows in no error, summary,
    /// debug output or public reason of either password source.
    #[test]
    fn a_connection_string_never_shows_its_password(
        text in "[A-Za-z0-9]{10}".prop_flat_map(|p| connection_string_with(format!("Pw-{p}"))),
    ) {
        hrs_fuzz::targets::connection_string(text.as_bytes());
    }

    /// An agent configuration whose site database string carries a password never shows
    /// it, loaded or refused, however the rest of the file is broken.
    #[test]
    fn an_agent_configuration_never_shows_the_site_database_password(
        site_db in "[A-Za-z0-9]{10}".prop_flat_map(|p| connection_string_with(format!("Pw-{p}"))),
        edits in prop::collection::vec(hrs_fuzz::edit(hrs_fuzz::Form::Text), 0..3),
    ) {
        let base = &corpus().agent_configs[0];
        let at = key_lines(base)
            .into_iter()
            .find(|(_, k, _)| k == "site_db")
            .map(|(i, ..)| i)
            .expect("a site_db line");
        // The edits break the rest of the file; the site_db line goes in after them, so the
        // password stays the site database's (moved to another key it is just a value).
        let rest = replace_line(base, at, Some("SITE_DB_LINE"));
        let edited = hrs_fuzz::mutate::apply(rest.as_bytes(), &edits, None, &[]);
        let edited = String::from_utf8_lossy(&edited).into_owned();
        let line = format!("site_db = {}", toml_string(&site_db));
        let text = if edited.contains("SITE_DB_LINE") {
            edited.replacen("SITE_DB_LINE", &line, 1)
        } else {
            format!("{edited}\n{line}\n")
        };
        let password = hrs_fuzz::targets::password_in(&site_db);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, &text).expect("writes");
        let shown = match hrs_agent::AgentConfig::read(&path) {
            Ok(config) => format!("{config:?} {}", config.site_db_summary()),
            Err(error) => error.to_string(),
        };
        if let Some(password) = password {
            prop_assert!(!shown.contains(&password), "shows the password: {}", shown);
        }
    }
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A password holding a character outside ASCII once made the connection string parser's
/// error quote that character ("Invalid character found: ä"); no error shows any of it.
#[test]
fn a_non_ascii_password_character_never_shows() {
    let text = "server=cm01;password=Sécret-Pw";
    let shown = match hrs_sitedb::SiteDbSpec::parse(text, None) {
        Ok(spec) => format!("{spec} {spec:?}"),
        Err(error) => error.to_string(),
    };
    assert!(!shown.contains('é'), "{shown}");
}

// ---------------------------------------------------------------------------------------
// Identifiers.

proptest! {
    #![proptest_config(config(256))]

    /// Every ISO week prints as `YYYY-Www`, parses back to itself and contains its days.
    #[test]
    fn every_iso_week_round_trips(day in 0i32..3_652_059) {
        let date = time::Date::from_julian_day(1_721_426 + day).expect("a day of years 1 to 9999");
        let period = Period::containing(date);
        let text = period.to_string();
        prop_assert_eq!(text.len(), 8);
        prop_assert_eq!(text.parse::<Period>().ok(), Some(period));
        prop_assert!(period.start() <= date && date <= period.end());
    }

    /// A site code is exactly three characters from A-Z and 0-9.
    #[test]
    fn site_codes_are_three_capitals_or_digits(text in "[A-Za-z0-9 _\\-é]{0,5}") {
        let valid = text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        prop_assert_eq!(text.parse::<SiteCode>().is_ok(), valid);
    }

    /// Identifiers of any spelling never panic a parser and print back as they parse.
    #[test]
    fn identifiers_round_trip(
        text in "[+\\-0-9A-Za-z{}]{0,10}|[0-9]{4}-W[+\\-0-9]{1,3}|[+\\-]?[0-9]{1,5}-W[0-9]{2}",
    ) {
        hrs_fuzz::targets::ids(text.as_bytes());
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// A period is compared as text everywhere it is stored and merged, so only its one
    /// spelling may parse; `2026-W+1` and `+026-W48` once did (as 2026-W01 and 0026-W48).
    #[test]
    fn a_period_that_parses_is_spelled_canonically(text in "[+\\-]?[0-9]{1,4}-W[+\\-]?[0-9]{1,2}") {
        if let Ok(period) = text.parse::<Period>() {
            prop_assert_eq!(period.to_string(), text);
        }
    }
}

/// A run whose period reads `2026-W+1` was once accepted, committed as the current run of
/// 2026-W01 (the store keys the parsed period) and then dropped by the merge of 2026-W01
/// (which compares the run's own text), so the site's data never left. It is refused.
#[test]
fn a_run_with_a_non_canonical_period_is_refused() {
    let mut run = corpus().runs[0].clone();
    run.period = "2026-W+1".into();
    run.results.clear();
    run.digest = run_digest(&run);
    eprintln!(
        "reproducer (hex of the encoded run): {}",
        hrs_fuzz::hex(&run.encode_to_vec())
    );
    let catalog = Catalog::builtin().expect("the catalog");
    let header = check_canonical(&run);
    let merged = hrs_aggregator::merge::merge(
        seeds::HIERARCHY_ID.parse().expect("the seed hierarchy"),
        hrs_core::Level::Full,
        &catalog,
        &["P01".parse().expect("a site code")],
        "2026-W01",
        vec![run.clone()],
    );
    assert!(
        header.is_err() || !merged.period.sites.is_empty(),
        "the run check accepts period {:?} as {}, and the merge of that period drops the run",
        run.period,
        header.map(|h| h.period.to_string()).unwrap_or_default()
    );
}

/// The known differences between checking a run's bytes and checking the canonical
/// encoding of what prost decodes from them are what `streaming_gap` says they are: a run
/// with a wire group among its own fields or a set's decodes to a run whose canonical
/// encoding passes, its bytes are refused, and it is recognised; the same run without it
/// agrees.
#[test]
fn the_known_gaps_are_recognised() {
    let run = corpus().runs[0].clone();
    let bytes = run.encode_to_vec();
    assert!(wire::streaming_gap(&bytes).is_none());
    assert!(check_run_encoded(&bytes).is_ok());
    let group = Field {
        number: 99,
        payload: Payload::Group(vec![Field {
            number: 1,
            payload: Payload::Varint(1),
        }]),
    };
    let mut top = wire::parse(&bytes, Some(Schema::Run)).expect("parses");
    top.push(group.clone());
    let mut in_set = wire::parse(&bytes, Some(Schema::Run)).expect("parses");
    wire::for_each_message(&mut in_set, Schema::ResultSet, &mut |set| {
        set.push(group.clone())
    });
    for fields in [top, in_set] {
        let bytes = wire::encode(&fields);
        let decoded = pb::Run::decode(bytes.as_slice()).expect("prost skips the group");
        assert!(
            check_canonical(&decoded).is_ok(),
            "its canonical encoding passes"
        );
        assert!(check_run_encoded(&bytes).is_err(), "its bytes are refused");
        assert!(
            wire::streaming_gap(&bytes).is_some(),
            "and it is recognised"
        );
        hrs_fuzz::targets::run_encoded(&bytes);
    }
}
