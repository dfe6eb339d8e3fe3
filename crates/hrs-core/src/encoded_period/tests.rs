use proptest::prelude::*;

use super::*;
use crate::digest::merged_digest;
use crate::fixtures;
use crate::validate::check_merged;

/// A proptest configuration that writes no regression files into the source tree (a
/// failure prints its input instead); `PROPTEST_CASES` is read by the default.
pub(crate) fn config(cases: u32) -> ProptestConfig {
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

/// What `check_merged_encoded` must return for a period `check_merged` accepts.
fn summary_of(period: &pb::MergedPeriod, when: Period, level: Level) -> MergedSummary {
    let sites: Vec<SiteSummary> = period
        .sites
        .iter()
        .map(|site| SiteSummary {
            site: site.site.clone(),
            rows: site.results.iter().map(|set| set.rows.len() as u64).sum(),
        })
        .collect();
    MergedSummary {
        hierarchy_hash: period.hierarchy_hash.clone(),
        period: when,
        level,
        catalog_version: period.catalog_version.clone(),
        digest: period.digest.clone(),
        mode: period.mode.clone(),
        rows: sites.iter().map(|site| site.rows).sum(),
        sites,
        missing_sites: period.missing_sites.clone(),
    }
}

/// True for the refusal by design of a wire group among the walked messages' own fields.
fn is_group_refusal(error: &EncodedError) -> bool {
    error.to_string().contains("is not used by HRS")
}

/// Holds the encoded check to `check_merged` of what prost decodes from the same bytes:
/// both accept (with the same summary) or both refuse with the same error; bytes prost
/// cannot decode are refused.
pub(crate) fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let streamed = check_merged_encoded(&bytes.to_vec());
    let Ok(decoded) = pb::MergedPeriod::decode(bytes) else {
        prop_assert!(streamed.is_err(), "accepted what prost cannot decode");
        return Ok(());
    };
    match (streamed, check_merged(&decoded)) {
        (Err(error), _) if is_group_refusal(&error) => {}
        (Ok(summary), Ok((when, level))) => {
            prop_assert_eq!(summary, summary_of(&decoded, when, level));
        }
        (Err(EncodedError::Invalid(streamed)), Err(decoded)) => {
            prop_assert_eq!(streamed, decoded);
        }
        (streamed, decoded) => {
            prop_assert!(
                false,
                "streamed {:?}, decoded {:?}",
                streamed.map_err(|e| e.to_string()),
                decoded
            );
        }
    }
    Ok(())
}

/// A text for a changed field: one that passes somewhere, or fails in a known way.
#[derive(Debug, Clone)]
enum Text {
    Literal(&'static str),
    /// The current catalog's version.
    Catalog,
    /// The id of a catalog query.
    Query(prop::sample::Index),
    /// Longer than any name may be.
    Long,
}

impl Text {
    fn get(&self) -> String {
        match self {
            Self::Literal(text) => (*text).to_owned(),
            Self::Catalog => fixtures::catalog().version,
            Self::Query(i) => {
                let catalog = fixtures::catalog();
                catalog.queries[i.index(catalog.queries.len())].id.clone()
            }
            Self::Long => "x".repeat(MAX_NAME + 1),
        }
    }
}

const MAX_NAME: usize = crate::validate::MAX_NAME_BYTES;

fn text() -> impl Strategy<Value = Text> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "x",
            "2026-W48",
            "2026-W61",
            "Basic",
            "enhanced",
            "Full",
            "Everything",
            "P01",
            "CAS",
            "2026-11-30T06:00:00Z",
            "1999-12-31T23:00:00Z",
            "yesterday",
            "2026.11.1",
        ])
        .prop_map(Text::Literal),
        Just(Text::Catalog),
        any::<prop::sample::Index>().prop_map(Text::Query),
        Just(Text::Long),
    ]
}

/// A change to a decoded period; indices are taken modulo what is there.
#[derive(Debug, Clone)]
enum Change {
    /// One of the period's own fields.
    Period { field: u8, text: Text },
    /// A missing site changed, or one more.
    Missing { at: prop::sample::Index, text: Text },
    /// One of a site's own fields.
    Site {
        at: prop::sample::Index,
        field: u8,
        text: Text,
    },
    /// A site repeated at the end.
    SiteTwice { at: prop::sample::Index },
    /// One of a set's own fields.
    Set {
        site: prop::sample::Index,
        at: prop::sample::Index,
        field: u8,
        text: Text,
    },
    /// A set's columns changed.
    Columns {
        site: prop::sample::Index,
        at: prop::sample::Index,
        how: u8,
    },
    /// A set repeated, or removed.
    SetTwice {
        site: prop::sample::Index,
        at: prop::sample::Index,
        remove: bool,
    },
    /// Two sites swapped, or two sets of a site: the period's order is then not the
    /// digest's.
    Swap {
        site: prop::sample::Index,
        a: prop::sample::Index,
        b: prop::sample::Index,
        sets: bool,
    },
    /// A row's value changed, dropped or one more.
    Row {
        site: prop::sample::Index,
        set: prop::sample::Index,
        at: prop::sample::Index,
        how: u8,
        column: usize,
    },
}

fn change() -> impl Strategy<Value = Change> {
    let i = any::<prop::sample::Index>;
    prop_oneof![
        1 => (0u8..6, text()).prop_map(|(field, text)| Change::Period { field, text }),
        1 => (i(), text()).prop_map(|(at, text)| Change::Missing { at, text }),
        1 => (i(), 0u8..4, text()).prop_map(|(at, field, text)| Change::Site { at, field, text }),
        1 => i().prop_map(|at| Change::SiteTwice { at }),
        1 => (i(), i(), 0u8..3, text()).prop_map(|(site, at, field, text)| Change::Set {
            site,
            at,
            field,
            text
        }),
        1 => (i(), i(), 0u8..3).prop_map(|(site, at, how)| Change::Columns { site, at, how }),
        1 => (i(), i(), any::<bool>()).prop_map(|(site, at, remove)| Change::SetTwice {
            site,
            at,
            remove
        }),
        2 => (i(), i(), i(), any::<bool>()).prop_map(|(site, a, b, sets)| Change::Swap {
            site,
            a,
            b,
            sets
        }),
        // Most changes reach a row: rows are most of a period, and where the walk's order
        // differs most from check_merged's.
        3 => (i(), i(), i(), 0u8..8, any::<usize>()).prop_map(|(site, set, at, how, column)| {
            Change::Row {
                site,
                set,
                at,
                how,
                column,
            }
        }),
    ]
}

/// The element of a list an index picks, if the list has any.
fn pick<'a, T>(list: &'a mut [T], at: &prop::sample::Index) -> Option<&'a mut T> {
    if list.is_empty() {
        return None;
    }
    let i = at.index(list.len());
    list.get_mut(i)
}

fn swap<T>(list: &mut [T], a: &prop::sample::Index, b: &prop::sample::Index) {
    if !list.is_empty() {
        list.swap(a.index(list.len()), b.index(list.len()));
    }
}

fn apply(period: &mut pb::MergedPeriod, change: &Change) {
    use pb::value::Kind;
    match change {
        Change::Period { field, text } => {
            let slot = match field {
                0 => &mut period.hierarchy_hash,
                1 => &mut period.period,
                2 => &mut period.catalog_version,
                3 => &mut period.level,
                4 => &mut period.mode,
                _ => &mut period.digest,
            };
            *slot = text.get();
        }
        Change::Missing { at, text } => match pick(&mut period.missing_sites, at) {
            Some(site) if at.index(2) == 0 => *site = text.get(),
            _ => period.missing_sites.push(text.get()),
        },
        Change::Site { at, field, text } => {
            if let Some(site) = pick(&mut period.sites, at) {
                let slot = match field {
                    0 => &mut site.site,
                    1 => &mut site.run_id,
                    2 => &mut site.started_at,
                    _ => &mut site.finished_at,
                };
                *slot = text.get();
            }
        }
        Change::SiteTwice { at } => {
            if let Some(site) = pick(&mut period.sites, at).cloned() {
                period.sites.push(site);
            }
        }
        Change::Set {
            site,
            at,
            field,
            text,
        } => {
            let Some(site) = pick(&mut period.sites, site) else {
                return;
            };
            if let Some(set) = pick(&mut site.results, at) {
                let slot = match field {
                    0 => &mut set.query_id,
                    1 => &mut set.level,
                    _ => &mut set.error,
                };
                *slot = text.get();
            }
        }
        Change::Columns { site, at, how } => {
            let Some(site) = pick(&mut period.sites, site) else {
                return;
            };
            if let Some(set) = pick(&mut site.results, at) {
                match how {
                    0 => drop(set.columns.pop()),
                    1 => set.columns.iter_mut().for_each(|c| c.r#type = "int".into()),
                    _ => set.columns.reverse(),
                }
            }
        }
        Change::SetTwice { site, at, remove } => {
            let Some(site) = pick(&mut period.sites, site) else {
                return;
            };
            if site.results.is_empty() {
                return;
            }
            let i = at.index(site.results.len());
            if *remove {
                site.results.remove(i);
            } else {
                let twice = site.results[i].clone();
                site.results.push(twice);
            }
        }
        Change::Swap { site, a, b, sets } => {
            if !*sets {
                swap(&mut period.sites, a, b);
            } else if let Some(site) = pick(&mut period.sites, site) {
                swap(&mut site.results, a, b);
            }
        }
        Change::Row {
            site,
            set,
            at,
            how,
            column,
        } => {
            let Some(site) = pick(&mut period.sites, site) else {
                return;
            };
            let Some(set) = pick(&mut site.results, set) else {
                return;
            };
            let Some(row) = pick(&mut set.rows, at) else {
                return;
            };
            let k = column % row.values.len().max(1);
            let kind = match how {
                0 => {
                    row.values.pop();
                    return;
                }
                1 => {
                    row.values.push(pb::Value::default());
                    return;
                }
                2 => Some(Kind::Text("p01-cm01.contoso.example".into())),
                3 => Some(Kind::Int(-1)),
                4 => Some(Kind::Real(0.5)),
                5 => Some(Kind::Bool(true)),
                6 => Some(Kind::Null(false)),
                _ => None,
            };
            if let Some(value) = row.values.get_mut(k) {
                value.kind = kind;
            }
        }
    }
}

/// One edit of an encoding's bytes.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    Flip {
        at: prop::sample::Index,
        bit: u8,
    },
    Set {
        at: prop::sample::Index,
        value: u8,
    },
    Insert {
        at: prop::sample::Index,
        bytes: Vec<u8>,
    },
    Remove {
        at: prop::sample::Index,
        len: usize,
    },
    Truncate {
        at: prop::sample::Index,
    },
}

pub(crate) fn edit() -> impl Strategy<Value = Edit> {
    let i = any::<prop::sample::Index>;
    prop_oneof![
        (i(), 0u8..8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        (i(), any::<u8>()).prop_map(|(at, value)| Edit::Set { at, value }),
        (i(), prop::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (i(), 1usize..12).prop_map(|(at, len)| Edit::Remove { at, len }),
        i().prop_map(|at| Edit::Truncate { at }),
    ]
}

pub(crate) fn edit_bytes(bytes: &mut Vec<u8>, edit: &Edit) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    match edit {
        Edit::Flip { at, bit } => bytes[at.index(len)] ^= 1 << bit,
        Edit::Set { at, value } => bytes[at.index(len)] = *value,
        Edit::Insert { at, bytes: more } => {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, more.iter().copied());
        }
        Edit::Remove { at, len } => {
            let at = at.index(bytes.len());
            bytes.drain(at..(at + len).min(bytes.len()));
        }
        Edit::Truncate { at } => bytes.truncate(at.index(bytes.len())),
    }
}

proptest! {
    #![proptest_config(config(1024))]

    /// However a valid period is laid out on the wire, it is accepted, with what it says
    /// about itself.
    #[test]
    fn a_merged_period_is_accepted_in_any_layout(
        plan in fixtures::period_plan(),
        layout in fixtures::layout(),
    ) {
        let period = fixtures::period(&plan);
        let bytes = fixtures::lay_out(&period, &layout);
        let summary = check_merged_encoded(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (when, level) = check_merged(&period).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(summary, summary_of(&period, when, level));
    }

    /// However a valid period is laid out, its flat rows read from the encoding are
    /// those of the decoded period, in the same order.
    #[test]
    fn a_periods_flat_rows_are_read_from_its_encoding_as_from_the_period(
        plan in fixtures::period_plan(),
        layout in fixtures::layout(),
    ) {
        let period = fixtures::period(&plan);
        let bytes = fixtures::lay_out(&period, &layout);
        let mut read = Vec::new();
        for_each_flat_row::<EncodedError>(&bytes, |row| {
            read.push(row);
            Ok(())
        })
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(read, crate::report::flatten(&period));
    }

    /// Whatever a period holds and however it is laid out, the encoded check accepts it or
    /// refuses it as `check_merged` does, naming the same field.
    #[test]
    fn the_encoded_check_reads_any_period_as_check_merged_does(
        plan in fixtures::period_plan(),
        changes in prop::collection::vec(change(), 0..6),
        fix in prop::bool::weighted(0.8),
        layout in fixtures::layout(),
    ) {
        let mut period = fixtures::period(&plan);
        for change in &changes {
            apply(&mut period, change);
        }
        if fix {
            period.digest = merged_digest(&period);
        }
        agree(&fixtures::lay_out(&period, &layout))?;
    }

    /// Edited bytes are refused or accepted as `check_merged` does with what prost decodes
    /// from them, and never make the check panic.
    #[test]
    fn edited_bytes_are_read_as_prost_and_check_merged_read_them(
        plan in fixtures::period_plan(),
        edits in prop::collection::vec(edit(), 1..4),
        layout in fixtures::layout(),
    ) {
        let mut bytes = fixtures::lay_out(&fixtures::period(&plan), &layout);
        for edit in &edits {
            edit_bytes(&mut bytes, edit);
        }
        agree(&bytes)?;
    }
}

/// A period of two sites out of code order, each with rows.
fn two_sites() -> pb::MergedPeriod {
    let plan = fixtures::PeriodPlan {
        runs: [3, 0]
            .into_iter()
            .map(|code| fixtures::RunPlan {
                code,
                level: Level::Basic,
                sequence: 4,
                sets: (0..3)
                    .map(|q| fixtures::SetPlan {
                        query: q * 7 + 2,
                        rows: vec![1, 2, 3, 4, 5, 6],
                        failed: false,
                    })
                    .collect(),
            })
            .collect(),
        level: Level::Basic,
    };
    fixtures::period(&plan)
}

#[test]
fn the_first_refused_row_in_the_periods_order_is_reported() {
    let mut period = two_sites();
    // Out of code order on the wire: the digest reads P01 (sites[1]) first.
    period.sites.reverse();
    assert_eq!(period.sites[0].site, "P02");
    let bad = pb::Value {
        kind: Some(pb::value::Kind::Bool(true)),
    };
    period.sites[0].results[2].rows[5].values[1] = bad.clone();
    period.sites[1].results[0].rows[0].values[1] = bad;
    period.digest = merged_digest(&period);
    let column = &period.sites[0].results[2].columns[1].name;
    let refused = check_merged_encoded(&period.encode_to_vec()).expect_err("a bad row");
    assert_eq!(
        refused.to_string(),
        format!(
            "field period.sites[0].results[2].rows[5].{column}: is not of the declared type {}",
            period.sites[0].results[2].columns[1].r#type
        )
    );
    let EncodedError::Invalid(refused) = refused else {
        panic!("not a refusal: {refused}");
    };
    assert_eq!(Err(refused), check_merged(&period).map(drop));

    // Sets in reverse query-id order: the digest reads results[2] first.
    let mut period = two_sites();
    let site = &mut period.sites[0];
    site.results.sort_by(|a, b| b.query_id.cmp(&a.query_id));
    site.results[1].rows[3].values.pop();
    site.results[2].rows[0].values.pop();
    period.digest = merged_digest(&period);
    let refused = check_merged_encoded(&period.encode_to_vec()).expect_err("a short row");
    assert!(
        refused
            .to_string()
            .starts_with("field period.sites[0].results[1].rows[3]: has"),
        "{refused}"
    );

    let mut wrong = two_sites();
    wrong.digest = "0".repeat(64);
    assert!(matches!(
        check_merged_encoded(&wrong.encode_to_vec()),
        Err(EncodedError::Invalid(Invalid::Digest { .. }))
    ));
}

#[test]
fn one_querys_rows_are_read_in_the_periods_order() {
    let period = two_sites();
    let query = period.sites[1].results[1].query_id.clone();
    let mut read = Vec::new();
    for_each_row_of::<EncodedError>(&period.encode_to_vec(), &query, |site, set, row| {
        assert!(
            set.rows.is_empty(),
            "the set's fields come without its rows"
        );
        read.push((site.to_owned(), set.query_id.clone(), row.clone()));
        Ok(())
    })
    .expect("reads");
    let expected: Vec<(String, String, pb::Row)> = period
        .sites
        .iter()
        .flat_map(|site| {
            site.results
                .iter()
                .filter(|set| set.query_id == query)
                .flat_map(|set| {
                    set.rows
                        .iter()
                        .map(|row| (site.site.clone(), set.query_id.clone(), row.clone()))
                })
        })
        .collect();
    assert_eq!(read.len(), 12);
    assert_eq!(read, expected);
}

#[test]
fn a_wire_group_among_a_periods_fields_is_refused_by_design() {
    let period = two_sites();
    let mut bytes = period.encode_to_vec();
    // Field 99 as a group holding one varint: prost skips it, the walk refuses it.
    bytes.extend([0x9b, 0x06, 0x08, 0x01, 0x9c, 0x06]);
    let decoded = pb::MergedPeriod::decode(bytes.as_slice()).expect("prost skips the group");
    assert!(check_merged(&decoded).is_ok());
    let refused = check_merged_encoded(&bytes).expect_err("refused by design");
    assert!(is_group_refusal(&refused), "{refused}");
}

#[test]
fn a_large_period_is_read_a_window_at_a_time_and_about_twice() {
    let catalog = fixtures::catalog();
    let query = catalog
        .at_level(Level::Basic)
        .next()
        .expect("a Basic query");
    let rows: Vec<pb::Row> = (0..40_000).map(|n| fixtures::row(query, n)).collect();
    let mut period = two_sites();
    period.sites[0].results.push(fixtures::set(query, rows, ""));
    period.digest = merged_digest(&period);
    let source = fixtures::Counted::new(period.encode_to_vec());
    assert!(
        source.size() > 3 * crate::wire::WINDOW as u64,
        "{}",
        source.size()
    );
    let summary = check_merged_encoded(&source).expect("valid");
    assert_eq!(summary.rows, 40_000 + 36);
    let reads = source.reads();
    assert!(reads.iter().all(|(_, len)| *len <= crate::wire::WINDOW));
    let read: usize = reads.iter().map(|(_, len)| len).sum();
    assert!(
        read as u64 <= 2 * source.size() + 64 * 1024,
        "read {read} bytes of {}",
        source.size()
    );
}
