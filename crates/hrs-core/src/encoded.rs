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

/// How much of the encoding is read at once.
const WINDOW: usize = 1 << 20;
/// Most bytes a run's own fields (everything but its results) may take.
const MAX_RUN_FIELDS: usize = 1 << 20;
/// Most bytes a result set's fields other than its rows may take.
const MAX_SET_FIELDS: usize = 1 << 20;
/// Most bytes all result sets' fields other than rows may take together: their decoded
/// form is held until every set is checked, so it must stay small whatever the run's size.
const MAX_ALL_SET_FIELDS: usize = 4 << 20;
/// Most bytes one row may take.
const MAX_ROW: usize = 4 << 20;
/// Most result sets a run may carry: far above any catalog, low enough that a run of
/// millions of tiny sets cannot make the receiver index them all.
const MAX_SETS: usize = 4096;

/// Protobuf field numbers walked here (see `run.proto`).
const RUN_RESULTS: u64 = 10;
const SET_ROWS: u64 = 4;
const WIRE_VARINT: u64 = 0;
const WIRE_I64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_I32: u64 = 5;

/// Why an encoded run was refused, or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EncodedError {
    /// The run is malformed or fails a check.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Its bytes could not be read.
    #[error("cannot read the run: {0}")]
    Read(#[from] std::io::Error),
}

fn field(field: impl Into<String>, problem: impl Into<String>) -> EncodedError {
    EncodedError::Invalid(Invalid::Field {
        field: field.into(),
        problem: problem.into(),
    })
}

/// A position in the encoding, reading through a window of it.
struct Cursor<'a> {
    source: &'a dyn RunBytes,
    size: u64,
    pos: u64,
    window: Vec<u8>,
    window_start: u64,
}

impl<'a> Cursor<'a> {
    fn new(source: &'a dyn RunBytes) -> Self {
        Self {
            source,
            size: source.size(),
            pos: 0,
            window: Vec::new(),
            window_start: 0,
        }
    }

    fn truncated(&self) -> EncodedError {
        field(
            "run",
            format!("truncated at byte {} of {}", self.pos, self.size),
        )
    }

    fn byte(&mut self) -> Result<u8, EncodedError> {
        if self.pos >= self.size {
            return Err(self.truncated());
        }
        let in_window = self.pos >= self.window_start
            && self.pos < self.window_start + self.window.len() as u64;
        if !in_window {
            let len = usize::try_from(self.size - self.pos)
                .unwrap_or(usize::MAX)
                .min(WINDOW);
            self.window = self.source.read_at(self.pos, len)?;
            self.window_start = self.pos;
        }
        let at = usize::try_from(self.pos - self.window_start).unwrap_or(usize::MAX);
        let byte = *self.window.get(at).ok_or_else(|| self.truncated())?;
        self.pos += 1;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<u64, EncodedError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            // As prost decodes: the tenth byte may only carry the top bit of a u64, so no
            // encoding passes here that prost would refuse once the run is stored.
            if shift == 63 && byte > 1 {
                break;
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(field(
            "run",
            format!("an invalid varint at byte {}", self.pos),
        ))
    }

    /// Reads a field key: its number and wire type.
    fn key(&mut self) -> Result<(u64, u64), EncodedError> {
        let key = self.varint()?;
        if key >> 3 == 0 || key > u64::from(u32::MAX) {
            return Err(field(
                "run",
                format!("an invalid field key at byte {}", self.pos),
            ));
        }
        Ok((key >> 3, key & 7))
    }

    fn skip(&mut self, len: u64) -> Result<(), EncodedError> {
        let end = self.pos.checked_add(len).filter(|end| *end <= self.size);
        self.pos = end.ok_or_else(|| self.truncated())?;
        Ok(())
    }

    /// Skips a value of the given wire type.
    fn skip_value(&mut self, wire: u64) -> Result<(), EncodedError> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_I64 => self.skip(8),
            WIRE_LEN => {
                let len = self.varint()?;
                self.skip(len)
            }
            WIRE_I32 => self.skip(4),
            other => Err(field(
                "run",
                format!("wire type {other} at byte {} is not used by HRS", self.pos),
            )),
        }
    }

    /// Reads bytes `[start, end)` of the encoding.
    fn range(
        &self,
        start: u64,
        end: u64,
        limit: usize,
        what: &str,
    ) -> Result<Vec<u8>, EncodedError> {
        let len = usize::try_from(end - start).unwrap_or(usize::MAX);
        if len > limit {
            return Err(field(
                what,
                format!("{len} bytes; at most {limit} are taken"),
            ));
        }
        // Nearly every field and row lies in the window already read.
        let window_end = self.window_start + self.window.len() as u64;
        if start >= self.window_start && end <= window_end {
            let from = usize::try_from(start - self.window_start).unwrap_or(usize::MAX);
            if let Some(bytes) = self.window.get(from..from + len) {
                return Ok(bytes.to_vec());
            }
        }
        Ok(self.source.read_at(start, len)?)
    }
}

/// Where one result set lies in the encoding, with its fields and row count.
struct SetSpan {
    index: usize,
    fields: pb::ResultSet,
    rows: u64,
    start: u64,
    end: u64,
}

/// Reads a result set's fields, counting its rows without reading them.
fn read_set(
    cursor: &mut Cursor<'_>,
    index: usize,
    start: u64,
    end: u64,
) -> Result<SetSpan, EncodedError> {
    let here = format!("run.results[{index}]");
    cursor.pos = start;
    let mut fields = Vec::new();
    let mut rows = 0;
    while cursor.pos < end {
        let key_at = cursor.pos;
        let (number, wire) = cursor.key()?;
        if number == SET_ROWS && wire == WIRE_LEN {
            let len = cursor.varint()?;
            cursor.skip(len)?;
            rows += 1;
        } else {
            cursor.skip_value(wire)?;
            if fields.len() + usize::try_from(cursor.pos - key_at).unwrap_or(usize::MAX)
                > MAX_SET_FIELDS
            {
                return Err(field(
                    &here,
                    format!("fields other than rows exceed {MAX_SET_FIELDS} bytes"),
                ));
            }
            fields.extend(cursor.range(key_at, cursor.pos, MAX_SET_FIELDS, &here)?);
        }
        if cursor.pos > end {
            return Err(field(&here, "a field runs past the end of the result set"));
        }
    }
    let fields = pb::ResultSet::decode(fields.as_slice())
        .map_err(|e| field(&here, format!("malformed: {e}")))?;
    Ok(SetSpan {
        index,
        fields,
        rows,
        start,
        end,
    })
}

/// Decodes a result set's rows one at a time, in order.
fn for_each_row(
    cursor: &mut Cursor<'_>,
    span: &SetSpan,
    mut each: impl FnMut(usize, &pb::Row) -> Result<(), EncodedError>,
) -> Result<(), EncodedError> {
    cursor.pos = span.start;
    let mut r = 0;
    while cursor.pos < span.end {
        let (number, wire) = cursor.key()?;
        if number == SET_ROWS && wire == WIRE_LEN {
            let len = cursor.varint()?;
            let start = cursor.pos;
            cursor.skip(len)?;
            let here = format!("run.results[{}].rows[{r}]", span.index);
            let bytes = cursor.range(start, cursor.pos, MAX_ROW, &here)?;
            let row = pb::Row::decode(bytes.as_slice())
                .map_err(|e| field(&here, format!("malformed: {e}")))?;
            each(r, &row)?;
            r += 1;
        } else {
            cursor.skip_value(wire)?;
        }
    }
    Ok(())
}

/// Checks an encoded run: its own fields, every result set and row against the catalog it
/// names, and its digest, reading it a window at a time. Returns what the run says about
/// itself, and the run's own fields (its results left out). A run held decoded is checked
/// through its encoding (`Vec<u8>` is a [`RunBytes`]), so there is one check of a run.
pub fn check_run_encoded(source: &dyn RunBytes) -> Result<(RunHeader, pb::Run), EncodedError> {
    let mut cursor = Cursor::new(source);
    let mut own_fields = Vec::new();
    let mut spans = Vec::new();
    let mut set_fields = 0usize;
    while cursor.pos < cursor.size {
        let key_at = cursor.pos;
        let (number, wire) = cursor.key()?;
        if number == RUN_RESULTS {
            if wire != WIRE_LEN {
                return Err(field(
                    format!("run.results[{}]", spans.len()),
                    "not a message",
                ));
            }
            if spans.len() == MAX_SETS {
                return Err(field(
                    "run.results",
                    format!("more than {MAX_SETS} result sets"),
                ));
            }
            let len = cursor.varint()?;
            let start = cursor.pos;
            cursor.skip(len)?;
            let end = cursor.pos;
            let span = read_set(&mut cursor, spans.len(), start, end)?;
            set_fields += span.fields.encoded_len();
            if set_fields > MAX_ALL_SET_FIELDS {
                return Err(field(
                    "run.results",
                    format!("fields other than rows exceed {MAX_ALL_SET_FIELDS} bytes in all"),
                ));
            }
            spans.push(span);
            cursor.pos = end;
        } else {
            cursor.skip_value(wire)?;
            if own_fields.len() + usize::try_from(cursor.pos - key_at).unwrap_or(usize::MAX)
                > MAX_RUN_FIELDS
            {
                return Err(field(
                    "run",
                    format!("fields other than results exceed {MAX_RUN_FIELDS} bytes"),
                ));
            }
            own_fields.extend(cursor.range(key_at, cursor.pos, MAX_RUN_FIELDS, "run")?);
        }
    }
    let run = pb::Run::decode(own_fields.as_slice())
        .map_err(|e| field("run", format!("malformed: {e}")))?;
    let (header, catalog) = check_run_fields(&run)?;

    // Sets are checked and digested in query-id order, which is the digest's order; each
    // row is read once for both.
    spans.sort_by(|a, b| a.fields.query_id.cmp(&b.fields.query_id));
    let mut digest = RunDigest::new(&run, spans.len() as u64);
    let mut seen = HashSet::new();
    for span in &spans {
        let here = format!("run.results[{}]", span.index);
        let declared = check_set(
            &here,
            &span.fields,
            span.rows > 0,
            &catalog,
            header.level,
            &mut seen,
        )?;
        digest.set(&span.fields, span.rows);
        for_each_row(&mut cursor, span, |r, row| {
            check_row(&here, r, row, &declared)?;
            digest.row(row);
            Ok(())
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
    Ok((header, run))
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
