//! The protobuf wire walk shared by the checks of encoded runs and merged periods and by
//! the merged encoding: a cursor reading an encoding a window at a time, messages walked
//! field by field, and result sets read with their rows one at a time.
//!
//! Small fields are gathered as their bytes and decoded with prost, so they read exactly
//! as prost reads them (the last of a repeated scalar wins, a known field with the wrong
//! wire type is refused). Only the fields that make an encoding large (a run's sets, a
//! period's sites and their sets, a set's rows) are walked here.

use hrs_proto::v1 as pb;
use prost::Message as _;

use crate::bytes::RunBytes;
use crate::encoded::EncodedError;
use crate::validate::Invalid;

/// How much of the encoding is read at once while a message is read through.
pub(crate) const WINDOW: usize = 1 << 20;
/// How much is read at once by a walk that jumps from key to key over messages it does not
/// read: enough for a key and a length, so the jumps cost little whatever lies between.
pub(crate) const SKIM_WINDOW: usize = 64;
/// Most bytes a result set's fields other than its rows may take.
pub(crate) const MAX_SET_FIELDS: usize = 1 << 20;
/// Most bytes all result sets' fields other than rows may take together in one run (or one
/// site of a period): their decoded form is held until every set is checked, so it must
/// stay small whatever the run's size.
pub(crate) const MAX_ALL_SET_FIELDS: usize = 4 << 20;
/// Most bytes one row may take.
pub(crate) const MAX_ROW: usize = 4 << 20;
/// Most result sets a run (or one site of a period) may carry: far above any catalog, low
/// enough that a run of millions of tiny sets cannot make the receiver index them all.
pub(crate) const MAX_SETS: usize = 4096;

/// Protobuf field numbers and wire types walked here (see `run.proto`).
pub(crate) const SET_ROWS: u64 = 4;
pub(crate) const WIRE_VARINT: u64 = 0;
pub(crate) const WIRE_I64: u64 = 1;
pub(crate) const WIRE_LEN: u64 = 2;
pub(crate) const WIRE_I32: u64 = 5;

/// An error naming the field at fault.
pub(crate) fn field(field: impl Into<String>, problem: impl Into<String>) -> EncodedError {
    EncodedError::Invalid(Invalid::Field {
        field: field.into(),
        problem: problem.into(),
    })
}

/// A position in the encoding, reading through a window of it.
pub(crate) struct Cursor<'a> {
    source: &'a dyn RunBytes,
    /// The encoding's length.
    pub(crate) size: u64,
    /// The next byte to read.
    pub(crate) pos: u64,
    window: Vec<u8>,
    window_start: u64,
    /// Where the message being read ends: a window stops there, so a walk that visits
    /// messages out of order reads each once instead of a window past each.
    bound: u64,
    /// How much is read at once.
    window_len: usize,
    /// What the encoding is called in errors about its framing: `run` or `period`.
    root: &'static str,
}

impl<'a> Cursor<'a> {
    /// Reads an encoding a [`WINDOW`] at a time.
    pub(crate) fn new(source: &'a dyn RunBytes, root: &'static str) -> Self {
        Self::with_window(source, root, WINDOW)
    }

    /// Reads an encoding a [`SKIM_WINDOW`] at a time, for walks that skip what they pass.
    pub(crate) fn skimming(source: &'a dyn RunBytes, root: &'static str) -> Self {
        Self::with_window(source, root, SKIM_WINDOW)
    }

    fn with_window(source: &'a dyn RunBytes, root: &'static str, window_len: usize) -> Self {
        let size = source.size();
        Self {
            source,
            size,
            pos: 0,
            window: Vec::new(),
            window_start: 0,
            bound: size,
            window_len,
            root,
        }
    }

    /// Moves to `pos`, inside a message that ends at `bound`.
    pub(crate) fn seek(&mut self, pos: u64, bound: u64) {
        self.pos = pos;
        self.bound = bound;
    }

    fn truncated(&self) -> EncodedError {
        field(
            self.root,
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
            // Past the message's end (a framing error about to be found, or a stale
            // bound), the window runs to the end of the encoding.
            let end = if self.pos < self.bound {
                self.bound.min(self.size)
            } else {
                self.size
            };
            let len = usize::try_from(end - self.pos)
                .unwrap_or(usize::MAX)
                .min(self.window_len);
            self.window = self.source.read_at(self.pos, len)?;
            self.window_start = self.pos;
        }
        let at = usize::try_from(self.pos - self.window_start).unwrap_or(usize::MAX);
        let byte = *self.window.get(at).ok_or_else(|| self.truncated())?;
        self.pos += 1;
        Ok(byte)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, EncodedError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            // As prost decodes: the tenth byte may only carry the top bit of a u64, so no
            // encoding passes here that prost would refuse once it is stored.
            if shift == 63 && byte > 1 {
                break;
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(field(
            self.root,
            format!("an invalid varint at byte {}", self.pos),
        ))
    }

    /// Reads a field key: its number and wire type.
    pub(crate) fn key(&mut self) -> Result<(u64, u64), EncodedError> {
        let key = self.varint()?;
        if key >> 3 == 0 || key > u64::from(u32::MAX) {
            return Err(field(
                self.root,
                format!("an invalid field key at byte {}", self.pos),
            ));
        }
        Ok((key >> 3, key & 7))
    }

    pub(crate) fn skip(&mut self, len: u64) -> Result<(), EncodedError> {
        let end = self.pos.checked_add(len).filter(|end| *end <= self.size);
        self.pos = end.ok_or_else(|| self.truncated())?;
        Ok(())
    }

    /// Skips a value of the given wire type. Groups (wire types 3 and 4), which proto3
    /// never writes, are refused: skipping one means reading everything inside it.
    pub(crate) fn skip_value(&mut self, wire: u64) -> Result<(), EncodedError> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_I64 => self.skip(8),
            WIRE_LEN => {
                let len = self.varint()?;
                self.skip(len)
            }
            WIRE_I32 => self.skip(4),
            other => Err(field(
                self.root,
                format!("wire type {other} at byte {} is not used by HRS", self.pos),
            )),
        }
    }

    /// Reads bytes `[start, end)` of the encoding.
    pub(crate) fn range(
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

    /// Skips the value of a field whose key, read already, starts at `key_at`, and appends
    /// the whole field to `fields`, which may not grow past `limit` bytes.
    fn keep_field(
        &mut self,
        key_at: u64,
        wire: u64,
        fields: &mut Vec<u8>,
        limit: usize,
        here: &str,
        other_than: &str,
    ) -> Result<(), EncodedError> {
        self.skip_value(wire)?;
        let len = usize::try_from(self.pos - key_at).unwrap_or(usize::MAX);
        if fields.len().saturating_add(len) > limit {
            return Err(field(
                here,
                format!("fields other than {other_than} exceed {limit} bytes"),
            ));
        }
        fields.extend(self.range(key_at, self.pos, limit, here)?);
        Ok(())
    }
}

/// How a message is walked by [`walk_message`]: which repeated message field is indexed
/// instead of kept, and the limits and names that go with it.
pub(crate) struct Shape<'a> {
    /// The message's path in errors, e.g. `period.sites[2]`.
    pub(crate) path: &'a str,
    /// The number of the repeated message field that is indexed, e.g. 5 for a period's sites.
    pub(crate) nested: u64,
    /// Its name in paths, e.g. `sites`.
    pub(crate) nested_name: &'static str,
    /// What its entries are called in errors, e.g. `result sets`.
    pub(crate) noun: &'static str,
    /// Most entries it may have.
    pub(crate) max_nested: usize,
    /// Most bytes the message's other fields may take.
    pub(crate) max_fields: usize,
}

/// Walks the message in `[start, end)`: its fields other than `shape.nested` are gathered
/// and returned as their bytes (for prost to decode), and each `shape.nested` entry is
/// handed to `nested` with its index and where its content lies.
pub(crate) fn walk_message(
    cursor: &mut Cursor<'_>,
    start: u64,
    end: u64,
    shape: &Shape<'_>,
    mut nested: impl FnMut(&mut Cursor<'_>, usize, u64, u64) -> Result<(), EncodedError>,
) -> Result<Vec<u8>, EncodedError> {
    cursor.seek(start, end);
    let mut fields = Vec::new();
    let mut entries = 0;
    while cursor.pos < end {
        let key_at = cursor.pos;
        let (number, wire) = cursor.key()?;
        if number == shape.nested {
            if wire != WIRE_LEN {
                return Err(field(
                    format!("{}.{}[{entries}]", shape.path, shape.nested_name),
                    "not a message",
                ));
            }
            if entries == shape.max_nested {
                return Err(field(
                    format!("{}.{}", shape.path, shape.nested_name),
                    format!("more than {} {}", shape.max_nested, shape.noun),
                ));
            }
            let len = cursor.varint()?;
            let entry_start = cursor.pos;
            cursor.skip(len)?;
            let entry_end = cursor.pos;
            if entry_end > end {
                return Err(field(shape.path, "a field runs past the end of it"));
            }
            nested(cursor, entries, entry_start, entry_end)?;
            entries += 1;
            cursor.seek(entry_end, end);
        } else {
            cursor.keep_field(
                key_at,
                wire,
                &mut fields,
                shape.max_fields,
                shape.path,
                shape.nested_name,
            )?;
            if cursor.pos > end {
                return Err(field(shape.path, "a field runs past the end of it"));
            }
        }
    }
    Ok(fields)
}

/// Where a result set lies in an encoding, with its fields other than rows and its row
/// count.
pub(crate) struct SetSpan {
    /// The set's fields, its rows left out.
    pub(crate) fields: pb::ResultSet,
    /// How many rows it has.
    pub(crate) rows: u64,
    /// Where its content starts (after its key and length).
    pub(crate) start: u64,
    /// Where its content ends.
    pub(crate) end: u64,
}

/// Reads the fields of the result set in `[start, end)` other than its rows, counting the
/// rows without reading them.
pub(crate) fn read_set(
    cursor: &mut Cursor<'_>,
    here: &str,
    start: u64,
    end: u64,
) -> Result<SetSpan, EncodedError> {
    cursor.seek(start, end);
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
            cursor.keep_field(key_at, wire, &mut fields, MAX_SET_FIELDS, here, "rows")?;
        }
        if cursor.pos > end {
            return Err(field(here, "a field runs past the end of the result set"));
        }
    }
    let fields = pb::ResultSet::decode(fields.as_slice())
        .map_err(|e| field(here, format!("malformed: {e}")))?;
    Ok(SetSpan {
        fields,
        rows,
        start,
        end,
    })
}

/// Decodes the rows of the result set in `[start, end)` one at a time, in order, handing
/// each to `each` with its index. `here` is the set's path, e.g. `run.results[3]`.
pub(crate) fn for_each_row<E: From<EncodedError>>(
    cursor: &mut Cursor<'_>,
    here: &str,
    start: u64,
    end: u64,
    mut each: impl FnMut(usize, &pb::Row) -> Result<(), E>,
) -> Result<(), E> {
    cursor.seek(start, end);
    let mut r = 0;
    while cursor.pos < end {
        let (number, wire) = cursor.key()?;
        if number == SET_ROWS && wire == WIRE_LEN {
            let len = cursor.varint()?;
            let row_start = cursor.pos;
            cursor.skip(len)?;
            let path = format!("{here}.rows[{r}]");
            let bytes = cursor.range(row_start, cursor.pos, MAX_ROW, &path)?;
            let row = pb::Row::decode(bytes.as_slice())
                .map_err(|e| field(&path, format!("malformed: {e}")))?;
            each(r, &row)?;
            r += 1;
        } else {
            cursor.skip_value(wire)?;
        }
    }
    Ok(())
}
