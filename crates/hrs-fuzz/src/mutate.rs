//! Mutations of valid inputs: byte edits any fuzzer makes, field edits that keep a
//! protobuf encoding framed (so they reach the validators), and line and token edits that
//! keep a text file mostly readable (so they reach the checks after parsing).
//!
//! Every edit picks its place with a number taken modulo what is there, so any edit applies
//! to any input and a shrunk edit still means something.

use hrs_proto::v1 as pb;
use prost::Message as _;

use crate::wire::{self, Field, Payload, Schema};

/// One change to an input.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Flips one bit.
    FlipBit {
        /// Which byte.
        at: u32,
        /// Which bit of it.
        bit: u8,
    },
    /// Overwrites one byte.
    SetByte {
        /// Which byte.
        at: u32,
        /// Its new value.
        value: u8,
    },
    /// Inserts bytes.
    Insert {
        /// Where.
        at: u32,
        /// What.
        bytes: Vec<u8>,
    },
    /// Removes a range of bytes.
    Remove {
        /// Where the range starts.
        at: u32,
        /// How long it is.
        len: u16,
    },
    /// Repeats a range of bytes right after itself.
    Repeat {
        /// Where the range starts.
        at: u32,
        /// How long it is.
        len: u16,
    },
    /// Cuts the input short.
    Truncate {
        /// Where.
        at: u32,
    },
    /// Inserts a range of another seed of the same kind.
    Splice {
        /// Which seed.
        seed: u32,
        /// Where the range starts in it.
        from: u32,
        /// How long it is.
        len: u16,
        /// Where it goes.
        at: u32,
    },
    /// Removes a protobuf field.
    DropField {
        /// Which field, in pre-order.
        field: u32,
    },
    /// Repeats a protobuf field right after itself.
    RepeatField {
        /// Which field.
        field: u32,
    },
    /// Swaps a protobuf field with the next one of the same message.
    SwapFields {
        /// Which field.
        field: u32,
    },
    /// Gives a protobuf field another number (another field, or another `oneof` arm).
    Renumber {
        /// Which field.
        field: u32,
        /// Its new number.
        number: u32,
    },
    /// Writes a protobuf field with another wire type, its value converted.
    Rewire {
        /// Which field.
        field: u32,
        /// The new wire type (3 makes a group).
        wire: u8,
    },
    /// Replaces a protobuf field's value with a number.
    SetNumber {
        /// Which field.
        field: u32,
        /// The number, written as the field's wire type takes it.
        value: u64,
    },
    /// Replaces a protobuf field's value with bytes (a string, or garbage).
    SetBytes {
        /// Which field.
        field: u32,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Replaces a token of a text (a word, a number, a piece of punctuation).
    ReplaceToken {
        /// Which token.
        token: u32,
        /// Its replacement.
        with: String,
    },
    /// Removes a line of a text.
    DropLine {
        /// Which line.
        line: u32,
    },
    /// Repeats a line of a text right after itself.
    RepeatLine {
        /// Which line.
        line: u32,
    },
    /// Comments a line out, or in if it was commented out.
    ToggleComment {
        /// Which line.
        line: u32,
    },
}

fn pick(n: u32, len: usize) -> usize {
    if len == 0 { 0 } else { n as usize % len }
}

/// Applies `edits` in order to `input`; `schema` (for protobuf inputs) lets field edits
/// descend into the messages HRS defines, `splice` are the seeds of the same kind.
pub fn apply(input: &[u8], edits: &[Edit], schema: Option<Schema>, splice: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for edit in edits {
        bytes = apply_one(bytes, edit, schema, splice);
    }
    bytes
}

fn apply_one(
    mut bytes: Vec<u8>,
    edit: &Edit,
    schema: Option<Schema>,
    splice: &[Vec<u8>],
) -> Vec<u8> {
    let len = bytes.len();
    match edit {
        Edit::FlipBit { at, bit } => {
            if len > 0 {
                bytes[pick(*at, len)] ^= 1 << (bit % 8);
            }
        }
        Edit::SetByte { at, value } => {
            if len > 0 {
                bytes[pick(*at, len)] = *value;
            }
        }
        Edit::Insert { at, bytes: new } => {
            let at = pick(*at, len + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Edit::Remove { at, len: n } => {
            let at = pick(*at, len + 1);
            let end = (at + usize::from(*n)).min(len);
            bytes.drain(at..end);
        }
        Edit::Repeat { at, len: n } => {
            let at = pick(*at, len + 1);
            let end = (at + usize::from(*n)).min(len);
            let copy = bytes[at..end].to_vec();
            bytes.splice(end..end, copy);
        }
        Edit::Truncate { at } => bytes.truncate(pick(*at, len + 1)),
        Edit::Splice {
            seed,
            from,
            len: n,
            at,
        } => {
            if let Some(other) = splice.get(pick(*seed, splice.len())) {
                let from = pick(*from, other.len() + 1);
                let end = (from + usize::from(*n)).min(other.len());
                let at = pick(*at, len + 1);
                bytes.splice(at..at, other[from..end].iter().copied());
            }
        }
        Edit::DropField { .. }
        | Edit::RepeatField { .. }
        | Edit::SwapFields { .. }
        | Edit::Renumber { .. }
        | Edit::Rewire { .. }
        | Edit::SetNumber { .. }
        | Edit::SetBytes { .. } => {
            // A field edit of an input that no longer parses is a no-op: byte edits before
            // it may have broken the framing, which is a mutation of its own.
            if let Some(mut fields) = wire::parse(&bytes, schema) {
                edit_field(&mut fields, edit, schema);
                bytes = wire::encode(&fields);
            }
        }
        Edit::ReplaceToken { .. }
        | Edit::DropLine { .. }
        | Edit::RepeatLine { .. }
        | Edit::ToggleComment { .. } => {
            // Text edits work on text; bytes that are not UTF-8 are read lossily, as the
            // edit makes a different input anyway.
            let text = String::from_utf8_lossy(&bytes).into_owned();
            bytes = edit_text(&text, edit).into_bytes();
        }
    }
    bytes
}

fn edit_field(fields: &mut Vec<Field>, edit: &Edit, schema: Option<Schema>) {
    let paths = wire::paths(fields);
    if paths.is_empty() {
        return;
    }
    let target = match edit {
        Edit::DropField { field }
        | Edit::RepeatField { field }
        | Edit::SwapFields { field }
        | Edit::Renumber { field, .. }
        | Edit::Rewire { field, .. }
        | Edit::SetNumber { field, .. }
        | Edit::SetBytes { field, .. } => *field,
        _ => return,
    };
    let path = &paths[pick(target, paths.len())];
    let parent_schema = wire::schema_at(fields, &path[..path.len() - 1], schema);
    let Some((list, i)) = wire::parent_mut(fields, path) else {
        return;
    };
    match edit {
        Edit::DropField { .. } => {
            list.remove(i);
        }
        Edit::RepeatField { .. } => {
            let copy = list[i].clone();
            list.insert(i + 1, copy);
        }
        Edit::SwapFields { .. } if i + 1 < list.len() => list.swap(i, i + 1),
        Edit::Renumber { number, .. } => {
            // Moved to a field the message defines, the value takes that field's wire type
            // (an int becomes a text of its digits, a text its length), so the message still
            // decodes and a value changes type; to an unknown number it stays as it is.
            let field = &mut list[i];
            field.number = *number;
            if let Some(wire) = parent_schema.and_then(|s| s.wire_of(*number))
                && wire != field.wire_type()
            {
                field.payload = convert(&field.payload, wire);
            }
        }
        Edit::Rewire { wire, .. } => {
            let field = &mut list[i];
            field.payload = convert(&field.payload, wire % 6);
        }
        Edit::SetNumber { value, .. } => {
            let field = &mut list[i];
            field.payload = match field.payload {
                Payload::Fixed64(_) => Payload::Fixed64(*value),
                Payload::Fixed32(_) => Payload::Fixed32(*value as u32),
                Payload::Varint(_) => Payload::Varint(*value),
                // A text gets the number's digits: still a valid string, another value.
                _ => Payload::Bytes(value.to_string().into_bytes()),
            };
        }
        Edit::SetBytes { bytes, .. } => {
            let field = &mut list[i];
            field.payload = match field.payload {
                // A number gets the bytes' length: still a number, another value.
                Payload::Varint(_) => Payload::Varint(bytes.len() as u64),
                _ => Payload::Bytes(bytes.clone()),
            };
        }
        _ => {}
    }
}

/// Converts a value to another wire type: numbers keep their value, texts become their
/// length or, when they spell a number, that number; a group holds whatever fields the old
/// value parses as.
fn convert(payload: &Payload, wire: u8) -> Payload {
    let bytes = match payload {
        Payload::Varint(v) | Payload::Fixed64(v) => v.to_string().into_bytes(),
        Payload::Fixed32(v) => v.to_string().into_bytes(),
        Payload::Bytes(b) => b.clone(),
        Payload::Message(_, f) | Payload::Group(f) => wire::encode(f),
    };
    let number = match payload {
        Payload::Varint(v) | Payload::Fixed64(v) => *v,
        Payload::Fixed32(v) => u64::from(*v),
        Payload::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(b.len() as u64),
        Payload::Message(_, f) | Payload::Group(f) => f.len() as u64,
    };
    match wire {
        0 => Payload::Varint(number),
        1 => Payload::Fixed64(number),
        2 => Payload::Bytes(bytes),
        5 => Payload::Fixed32(number as u32),
        _ => Payload::Group(wire::parse(&bytes, None).unwrap_or_default()),
    }
}

/// Splits text into tokens: runs of word characters, runs of spaces, and single other
/// characters, so replacing one changes a key, a value or a piece of syntax.
fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let class = |c: char| {
        if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' {
            0
        } else if c == ' ' || c == '\t' {
            1
        } else {
            2
        }
    };
    let mut prev: Option<u8> = None;
    for (i, c) in text.char_indices() {
        let k = class(c);
        if i > start && (k == 2 || prev != Some(k)) {
            out.push(&text[start..i]);
            start = i;
        }
        prev = Some(k);
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn edit_text(text: &str, edit: &Edit) -> String {
    match edit {
        Edit::ReplaceToken { token, with } => {
            let tokens = tokens(text);
            let at = pick(*token, tokens.len());
            let mut out = String::with_capacity(text.len() + with.len());
            for (i, t) in tokens.iter().enumerate() {
                out.push_str(if i == at { with } else { t });
            }
            if tokens.is_empty() {
                out.push_str(with);
            }
            out
        }
        Edit::DropLine { line } | Edit::RepeatLine { line } | Edit::ToggleComment { line } => {
            let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
            let at = pick(*line, lines.len());
            match edit {
                Edit::DropLine { .. } => {
                    lines.remove(at);
                }
                Edit::RepeatLine { .. } => {
                    let copy = lines[at].clone();
                    lines.insert(at + 1, copy);
                }
                _ => {
                    let trimmed = lines[at].trim_start();
                    lines[at] = match trimmed.strip_prefix('#') {
                        Some(rest) => rest.trim_start().to_owned(),
                        None => format!("# {}", lines[at]),
                    };
                }
            }
            lines.join("\n")
        }
        _ => text.to_owned(),
    }
}

/// Sets the digest of every run and merged period in a protobuf tree to what its content
/// hashes to now, so a mutated message gets past the digest check to every check before it
/// and to the agreement of the two run checks. The digest is appended as a last field
/// (prost keeps the last of a repeated scalar), so the rest of the encoding stays as it was
/// mutated.
pub fn fix_digests(bytes: &[u8], schema: Schema) -> Vec<u8> {
    let Some(mut fields) = wire::parse(bytes, Some(schema)) else {
        return bytes.to_vec();
    };
    let fix = |fields: &mut Vec<Field>, schema: Schema| {
        let encoded = wire::encode(fields);
        let digest = match schema {
            Schema::Run => pb::Run::decode(encoded.as_slice())
                .ok()
                .map(|run| hrs_core::digest::run_digest(&run)),
            _ => pb::MergedPeriod::decode(encoded.as_slice())
                .ok()
                .map(|period| hrs_core::digest::merged_digest(&period)),
        };
        if let (Some(digest), Some(number)) = (digest, schema.digest_field()) {
            fields.push(Field {
                number,
                payload: Payload::Bytes(digest.into_bytes()),
            });
        }
    };
    for inner in [Schema::Run, Schema::MergedPeriod] {
        if schema == inner {
            fix(&mut fields, inner);
        } else {
            wire::for_each_message(&mut fields, inner, &mut |f| fix(f, inner));
        }
    }
    wire::encode(&fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_cover_the_text() {
        let text = "site = \"P01\"\n# a comment\nsites = [\"CAS\", \"P01\"]";
        assert_eq!(tokens(text).concat(), text);
        assert!(tokens(text).contains(&"site"));
    }

    #[test]
    fn field_edits_keep_the_framing() {
        let run = pb::Run {
            site: "P01".into(),
            results: vec![pb::ResultSet {
                query_id: "Q".into(),
                rows: vec![pb::Row {
                    values: vec![pb::Value {
                        kind: Some(pb::value::Kind::Int(7)),
                    }],
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = run.encode_to_vec();
        let fields = wire::parse(&bytes, Some(Schema::Run)).expect("parses");
        assert_eq!(
            wire::encode(&fields),
            bytes,
            "a minimal encoding round-trips"
        );
        for field in 0..wire::paths(&fields).len() as u32 {
            for edit in [
                Edit::DropField { field },
                Edit::RepeatField { field },
                Edit::SwapFields { field },
            ] {
                let mutated = apply(&bytes, &[edit], Some(Schema::Run), &[]);
                assert!(wire::parse(&mutated, Some(Schema::Run)).is_some());
            }
        }
    }
}
