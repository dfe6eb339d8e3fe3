//! The one run check: a run straight from its encoding, a window at a time, through the
//! field, set and row checks of [`validate`](crate::validate) and the digest, without ever
//! decoding the run whole, so a receiver's memory stays flat whatever the run's size.
//!
//! The encoding is walked at the protobuf wire level. A run's own fields and each result
//! set's fields other than rows are small and decoded normally; rows are decoded one at a
//! time as they are checked and digested.

use std::collections::HashSet;

use hrs_proto::v1 as pb;
use prost::Message as _;

use crate::bytes::RunBytes;
use crate::digest::RunDigest;
use crate::validate::{Invalid, RunHeader, check_row, check_run_fields, check_set};
use crate::wire::{
    Cursor, MAX_ALL_SET_FIELDS, MAX_SETS, Shape, field, for_each_row, read_set, walk_message,
};

/// Most bytes a run's own fields (everything but its results) may take.
const MAX_RUN_FIELDS: usize = 1 << 20;

/// A run's results field (see `run.proto`).
pub(crate) const RUN_RESULTS: u64 = 10;

/// How a run is walked: its result sets indexed, its other fields kept.
pub(crate) const RUN_SHAPE: Shape<'static> = Shape {
    path: "run",
    nested: RUN_RESULTS,
    nested_name: "results",
    noun: "result sets",
    max_nested: MAX_SETS,
    max_fields: MAX_RUN_FIELDS,
};

/// Why an encoded run or merged period was refused, or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EncodedError {
    /// The encoding is malformed or fails a check.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Its bytes could not be read.
    #[error("cannot read the encoding: {0}")]
    Read(#[from] std::io::Error),
}

/// Checks an encoded run as [`check_run`] does; returns what the run says about itself,
/// and the run's own fields (its results left out).
pub fn check_run_encoded(source: &dyn RunBytes) -> Result<(RunHeader, pb::Run), EncodedError> {
    check_run(source).map(|checked| (checked.header, checked.fields))
}

/// A run that passed [`check_run`].
#[derive(Debug, Clone)]
pub struct CheckedRun {
    /// What the run says about itself.
    pub header: RunHeader,
    /// Its own fields, its results left out.
    pub fields: pb::Run,
    /// Its result sets, one per query it ran.
    pub sets: usize,
    /// The sets that carry an error instead of rows: when every set does, the run holds no
    /// data, and a receiver must not let it replace the site's data.
    pub failed_sets: usize,
}

impl CheckedRun {
    /// True when the run ran queries and every one failed.
    pub fn nothing_collected(&self) -> bool {
        self.sets > 0 && self.failed_sets == self.sets
    }
}

/// Checks an encoded run: its own fields, every result set and row against the catalog it
/// names, and its digest, reading it a window at a time. Returns what the run says about
/// itself, its own fields, and how many of its queries failed. A run held decoded is
/// checked through its encoding (`Vec<u8>` is a [`RunBytes`]), so there is one check of a
/// run.
pub fn check_run(source: &dyn RunBytes) -> Result<CheckedRun, EncodedError> {
    let mut cursor = Cursor::new(source, "run");
    let mut spans = Vec::new();
    let mut set_fields = 0usize;
    let own_fields = walk_message(
        &mut cursor,
        0,
        source.size(),
        &RUN_SHAPE,
        |cursor, index, start, end| {
            let span = read_set(cursor, &format!("run.results[{index}]"), start, end)?;
            set_fields += span.fields.encoded_len();
            if set_fields > MAX_ALL_SET_FIELDS {
                return Err(field(
                    "run.results",
                    format!("fields other than rows exceed {MAX_ALL_SET_FIELDS} bytes in all"),
                ));
            }
            spans.push((index, span));
            Ok(())
        },
    )?;
    let run = pb::Run::decode(own_fields.as_slice())
        .map_err(|e| field("run", format!("malformed: {e}")))?;
    let (header, catalog) = check_run_fields(&run)?;

    // Sets are checked and digested in query-id order, which is the digest's order; each
    // row is read once for both.
    spans.sort_by(|(_, a), (_, b)| a.fields.query_id.cmp(&b.fields.query_id));
    let mut digest = RunDigest::new(&run, spans.len() as u64);
    let mut seen = HashSet::new();
    for (index, span) in &spans {
        let here = format!("run.results[{index}]");
        let declared = check_set(
            &here,
            &span.fields,
            span.rows > 0,
            &catalog,
            header.level,
            &mut seen,
        )?;
        digest.set(&span.fields, span.rows);
        for_each_row(&mut cursor, &here, span.start, span.end, |r, row| {
            check_row(&here, r, row, &declared)?;
            digest.row(row);
            Ok::<_, EncodedError>(())
        })?;
    }
    let actual = digest.finish();
    if actual != run.digest {
        return Err(Invalid::Digest {
            claimed: run.digest.clone(),
            actual,
        }
        .into());
    }
    Ok(CheckedRun {
        header,
        fields: run,
        sets: spans.len(),
        failed_sets: spans
            .iter()
            .filter(|(_, span)| !span.fields.error.is_empty())
            .count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks a run held decoded through its encoding, as a receiver checks every run.
    fn check(run: &pb::Run) -> Result<RunHeader, EncodedError> {
        check_run_encoded(&run.encode_to_vec()).map(|(header, _)| header)
    }

    /// A valid run of the built-in catalog, with rows.
    fn run() -> pb::Run {
        let catalog = crate::catalog::Catalog::builtin().expect("catalog");
        let results: Vec<pb::ResultSet> = catalog
            .at_level(crate::Level::Basic)
            .take(3)
            .map(|q| {
                let columns: Vec<pb::Column> = q
                    .output_columns()
                    .into_iter()
                    .map(|(name, ty)| pb::Column {
                        name,
                        r#type: ty.as_str().to_owned(),
                    })
                    .collect();
                let row = pb::Row {
                    values: q
                        .output_columns()
                        .into_iter()
                        .map(|_| pb::Value {
                            kind: Some(pb::value::Kind::Null(true)),
                        })
                        .collect(),
                };
                pb::ResultSet {
                    query_id: q.id.clone(),
                    level: q.level.as_str().to_owned(),
                    columns,
                    rows: vec![row; 3],
                    error: String::new(),
                    duration_ms: 1,
                }
            })
            .collect();
        let mut run = pb::Run {
            run_id: uuid::Uuid::new_v4().to_string(),
            sequence: 1,
            site: "P01".into(),
            hierarchy_id: uuid::Uuid::new_v4().to_string(),
            period: "2026-W48".into(),
            catalog_version: catalog.version.clone(),
            level: "Basic".into(),
            started_at: "2026-11-30T06:00:00Z".into(),
            finished_at: "2026-11-30T06:00:05Z".into(),
            results,
            ..Default::default()
        };
        // Out of query-id order on the wire, as a collector may send them.
        run.results.reverse();
        run.digest = crate::digest::run_digest(&run);
        run
    }

    #[test]
    fn a_valid_run_passes_and_a_defect_is_refused_naming_its_field() {
        let good = run();
        let (header, fields) = check_run_encoded(&good.encode_to_vec()).expect("valid encoded");
        assert_eq!(header.site.as_str(), "P01");
        assert!(fields.results.is_empty());
        assert_eq!(fields.digest, good.digest);

        let mut wrong_digest = good.clone();
        wrong_digest.digest = "0".repeat(64);
        assert!(matches!(
            check_run_encoded(&wrong_digest.encode_to_vec()),
            Err(EncodedError::Invalid(Invalid::Digest { .. }))
        ));

        let mut short_row = good.clone();
        short_row.results[1].rows[2].values.pop();
        short_row.digest = crate::digest::run_digest(&short_row);
        let refused = check_run_encoded(&short_row.encode_to_vec()).expect_err("short row");
        let declared = short_row.results[1].columns.len();
        assert_eq!(
            refused.to_string(),
            format!(
                "field run.results[1].rows[2]: has {} values, {declared} columns are declared",
                declared - 1
            )
        );

        let mut twice = good.clone();
        twice.results.push(twice.results[0].clone());
        twice.digest = crate::digest::run_digest(&twice);
        assert!(
            check_run_encoded(&twice.encode_to_vec())
                .expect_err("a query twice")
                .to_string()
                .contains("appears twice")
        );
    }

    #[test]
    fn the_check_counts_the_queries_that_failed() {
        let good = run();
        let checked = check_run(&good.encode_to_vec()).expect("valid");
        assert_eq!((checked.sets, checked.failed_sets), (3, 0));
        assert!(!checked.nothing_collected());

        let mut failed = good.clone();
        for set in &mut failed.results {
            set.rows.clear();
            set.error = "sqlite: file is not a database".into();
        }
        failed.digest = crate::digest::run_digest(&failed);
        let checked = check_run(&failed.encode_to_vec()).expect("a valid run");
        assert_eq!((checked.sets, checked.failed_sets), (3, 3));
        assert!(checked.nothing_collected());

        failed.results[0] = good.results[0].clone();
        failed.digest = crate::digest::run_digest(&failed);
        let checked = check_run(&failed.encode_to_vec()).expect("a valid run");
        assert_eq!(checked.failed_sets, 2);
        assert!(!checked.nothing_collected());
    }

    #[test]
    fn a_varint_prost_refuses_is_refused_here_too() {
        let good = run().encode_to_vec();
        // The results key 0x52 written in ten bytes, with excess bits in the tenth.
        let at = good.iter().position(|b| *b == 0x52).expect("a results key");
        let mut bad = good[..at].to_vec();
        bad.extend([0xD2, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02]);
        bad.extend(&good[at + 1..]);
        assert!(pb::Run::decode(bad.as_slice()).is_err(), "prost refuses it");
        assert!(check_run_encoded(&bad).is_err());
    }

    #[test]
    fn truncated_and_garbled_encodings_are_refused_never_panic() {
        let bytes = run().encode_to_vec();
        for cut in [1, 7, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                check_run_encoded(&bytes[..cut].to_vec()).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        for at in (0..flipped.len()).step_by(97) {
            flipped[at] ^= 0x5a;
        }
        assert!(check_run_encoded(&flipped).is_err());
    }

    #[test]
    fn sequences_past_i64_and_times_that_are_not_times_are_refused_by_name() {
        let mut huge = run();
        huge.sequence = u64::MAX;
        huge.digest = crate::digest::run_digest(&huge);
        let err = check(&huge).expect_err("clamped when stored");
        assert!(err.to_string().contains("run.sequence"), "{err}");
        let mut vague = run();
        vague.started_at = "yesterday".into();
        vague.digest = crate::digest::run_digest(&vague);
        let err = check(&vague).expect_err("not a time");
        assert!(err.to_string().contains("run.started_at"), "{err}");

        let header = check(&run()).expect("valid");
        let now = time::macros::datetime!(2026-11-30 06:00 UTC);
        assert!(crate::validate::check_run_time(&header, now).is_ok());
        let err = crate::validate::check_run_time(&header, now - time::Duration::days(2))
            .expect_err("two days ahead of the receiver");
        assert!(err.to_string().contains("site's clock"), "{err}");

        let report = pb::LinkReport {
            oldest_pending_at: "not-a-time".into(),
            ..Default::default()
        };
        let err = crate::validate::check_link_report(&report).expect_err("not a time");
        assert!(err.to_string().contains("link.oldest_pending_at"), "{err}");
        let report = pb::LinkReport {
            backlog_runs: u64::MAX,
            ..Default::default()
        };
        let err = crate::validate::check_link_report(&report).expect_err("not storable");
        assert!(err.to_string().contains("link.backlog_runs"), "{err}");
        assert!(crate::validate::check_link_report(&pb::LinkReport::default()).is_ok());
    }
}
