//! Just enough of the protobuf wire format to mutate an encoding field by field: parse it
//! into a tree that follows the HRS schema (so a row inside a result set inside a run can
//! be dropped, repeated or retyped), and write it back with every length prefix fixed, so
//! a mutation reaches the validators instead of stopping at the framing.
//!
//! It also tells whether a run's encoding uses what the streaming check refuses by design
//! (see [`streaming_gap`]).

/// One field's value as it sits on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1: a double or a fixed 64-bit integer.
    Fixed64(u64),
    /// Wire type 2, not read further: a string, bytes, or a message of unknown schema.
    Bytes(Vec<u8>),
    /// Wire type 2 holding a message whose schema is known, parsed into its fields.
    Message(Schema, Vec<Field>),
    /// Wire types 3 and 4: a group and the fields inside it.
    Group(Vec<Field>),
    /// Wire type 5: a float or a fixed 32-bit integer.
    Fixed32(u32),
}

/// One field: its number and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The field number; 0 and numbers above 2^29 - 1 are invalid but can be written.
    pub number: u32,
    /// The value.
    pub payload: Payload,
}

impl Field {
    /// Returns the wire type the field is written with.
    pub fn wire_type(&self) -> u8 {
        match self.payload {
            Payload::Varint(_) => 0,
            Payload::Fixed64(_) => 1,
            Payload::Bytes(_) | Payload::Message(..) => 2,
            Payload::Group(_) => 3,
            Payload::Fixed32(_) => 5,
        }
    }
}

/// The HRS messages the tree descends into (see `proto/hrs/v1`); any other
/// length-delimited field stays opaque bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// `hrs.v1.Run`.
    Run,
    /// `hrs.v1.ResultSet`.
    ResultSet,
    /// `hrs.v1.Column`.
    Column,
    /// `hrs.v1.Row`.
    Row,
    /// `hrs.v1.Value`.
    Value,
    /// `hrs.v1.MergedPeriod`.
    MergedPeriod,
    /// `hrs.v1.SiteResults`.
    SiteResults,
    /// `hrs.v1.LinkReport`.
    LinkReport,
    /// `hrs.v1.RunOffer`.
    RunOffer,
    /// `hrs.v1.RunChunk`; its `data` is read as the run it carries.
    RunChunk,
    /// `hrs.v1.ResumeRunRequest`.
    ResumeRunRequest,
    /// `hrs.v1.HeartbeatRequest`.
    HeartbeatRequest,
    /// `hrs.v1.PeriodOffer`.
    PeriodOffer,
    /// `hrs.v1.PeriodChunk`; its `data` is read as the merged period it carries.
    PeriodChunk,
    /// `hrs.v1.ResumePeriodRequest`.
    ResumePeriodRequest,
    /// Not an HRS message: the envelope of the aggregator service target, whose field 1,
    /// 2 or 3 holds a `RunChunk` (the run to push), a `ResumeRunRequest` or a
    /// `HeartbeatRequest`.
    AggregatorCall,
    /// Not an HRS message: the envelope of the period receivers' targets (the connection
    /// point and the intake), whose field 1 holds a `PeriodChunk` (the period to send), 2 a
    /// `ResumePeriodRequest`, and 3 the `PeriodChunk`s of one stream sent as they are.
    PeriodCall,
}

impl Schema {
    /// Returns the schema of message field `number`, if it is a message HRS defines.
    pub fn child(self, number: u32) -> Option<Schema> {
        use Schema::*;
        match (self, number) {
            (Run, 10) | (SiteResults, 4) => Some(ResultSet),
            (ResultSet, 3) => Some(Column),
            (ResultSet, 4) => Some(Row),
            (Row, 1) => Some(Value),
            (MergedPeriod, 5) => Some(SiteResults),
            (RunChunk, 4) => Some(Run),
            (RunChunk, 2) | (HeartbeatRequest, 3) => Some(LinkReport),
            (RunChunk, 1) | (ResumeRunRequest, 1) => Some(RunOffer),
            (PeriodChunk, 1) | (ResumePeriodRequest, 1) => Some(PeriodOffer),
            (PeriodChunk, 3) => Some(MergedPeriod),
            (PeriodCall, 1 | 3) => Some(PeriodChunk),
            (PeriodCall, 2) => Some(ResumePeriodRequest),
            (AggregatorCall, 1) => Some(RunChunk),
            (AggregatorCall, 2) => Some(ResumeRunRequest),
            (AggregatorCall, 3) => Some(HeartbeatRequest),
            _ => None,
        }
    }

    /// Returns the wire type of field `number`, if the message defines it.
    pub fn wire_of(self, number: u32) -> Option<u8> {
        use Schema::*;
        const VARINT: u8 = 0;
        const FIXED64: u8 = 1;
        const LEN: u8 = 2;
        let wire = match (self, number) {
            (Run, 2)
            | (ResultSet, 6)
            | (Value, 1 | 3 | 5)
            | (SiteResults, 3)
            | (LinkReport, 1 | 3 | 4 | 6)
            | (RunOffer, 4)
            | (RunChunk, 3)
            | (PeriodOffer, 4)
            | (PeriodChunk, 2) => VARINT,
            (Value, 4) => FIXED64,
            (Run, 1..=12)
            | (ResultSet, 1..=5)
            | (Column, 1 | 2)
            | (Row | ResumeRunRequest | ResumePeriodRequest, 1)
            | (Value, 2)
            | (MergedPeriod, 1..=8)
            | (SiteResults, 1..=6)
            | (LinkReport, 2 | 5)
            | (RunOffer, 1..=5)
            | (RunChunk, 1..=4)
            | (HeartbeatRequest, 1..=3)
            | (PeriodOffer, 1..=3 | 5 | 6)
            | (PeriodChunk, 1 | 3)
            | (AggregatorCall | PeriodCall, 1..=3) => LEN,
            _ => return None,
        };
        Some(wire)
    }

    /// Returns the number of the field holding the content digest, for messages that
    /// carry one.
    pub fn digest_field(self) -> Option<u32> {
        match self {
            Schema::Run => Some(11),
            Schema::MergedPeriod => Some(7),
            _ => None,
        }
    }
}

/// Reads a varint as prost does: at most ten bytes, the tenth carrying only the top bit.
fn varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        if shift == 63 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Parses a whole encoding of a message of `schema` (or of no known schema), refusing
/// what prost refuses at the framing level. Fields of a known message schema that do not
/// parse as one stay opaque bytes.
pub fn parse(bytes: &[u8], schema: Option<Schema>) -> Option<Vec<Field>> {
    let mut pos = 0;
    let fields = parse_until(bytes, &mut pos, schema, None, 0)?;
    (pos == bytes.len()).then_some(fields)
}

/// Deepest group nesting read, as prost's recursion limit.
const MAX_DEPTH: usize = 100;

fn parse_until(
    bytes: &[u8],
    pos: &mut usize,
    schema: Option<Schema>,
    group: Option<u32>,
    depth: usize,
) -> Option<Vec<Field>> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut fields = Vec::new();
    while *pos < bytes.len() {
        let key = varint(bytes, pos)?;
        if key > u64::from(u32::MAX) || key >> 3 == 0 {
            return None;
        }
        let number = u32::try_from(key >> 3).ok()?;
        let payload = match key & 7 {
            0 => Payload::Varint(varint(bytes, pos)?),
            1 => {
                let raw: [u8; 8] = bytes.get(*pos..*pos + 8)?.try_into().ok()?;
                *pos += 8;
                Payload::Fixed64(u64::from_le_bytes(raw))
            }
            2 => {
                let len = usize::try_from(varint(bytes, pos)?).ok()?;
                let end = pos.checked_add(len).filter(|end| *end <= bytes.len())?;
                let inner = &bytes[*pos..end];
                *pos = end;
                match schema.and_then(|s| s.child(number)) {
                    Some(child) => match parse(inner, Some(child)) {
                        Some(fields) => Payload::Message(child, fields),
                        None => Payload::Bytes(inner.to_vec()),
                    },
                    None => Payload::Bytes(inner.to_vec()),
                }
            }
            3 => Payload::Group(parse_until(bytes, pos, None, Some(number), depth + 1)?),
            4 => {
                return (group == Some(number)).then_some(fields);
            }
            5 => {
                let raw: [u8; 4] = bytes.get(*pos..*pos + 4)?.try_into().ok()?;
                *pos += 4;
                Payload::Fixed32(u32::from_le_bytes(raw))
            }
            _ => return None,
        };
        fields.push(Field { number, payload });
    }
    // A group must end with its end tag, a message at the end of its bytes.
    group.is_none().then_some(fields)
}

/// Appends `value` as a varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_key(out: &mut Vec<u8>, number: u32, wire: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire));
}

/// Writes fields back to their encoding, with minimal varints and fresh length prefixes.
pub fn encode(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, fields);
    out
}

fn encode_into(out: &mut Vec<u8>, fields: &[Field]) {
    for field in fields {
        put_key(out, field.number, field.wire_type());
        match &field.payload {
            Payload::Varint(v) => put_varint(out, *v),
            Payload::Fixed64(v) => out.extend(v.to_le_bytes()),
            Payload::Fixed32(v) => out.extend(v.to_le_bytes()),
            Payload::Bytes(bytes) => {
                put_varint(out, bytes.len() as u64);
                out.extend(bytes);
            }
            Payload::Message(_, inner) => {
                let bytes = encode(inner);
                put_varint(out, bytes.len() as u64);
                out.extend(bytes);
            }
            Payload::Group(inner) => {
                encode_into(out, inner);
                put_key(out, field.number, 4);
            }
        }
    }
}

/// Returns every field of the tree in pre-order, as paths of indices from the top.
pub fn paths(fields: &[Field]) -> Vec<Vec<usize>> {
    let mut all = Vec::new();
    collect_paths(fields, &mut Vec::new(), &mut all);
    all
}

fn collect_paths(fields: &[Field], prefix: &mut Vec<usize>, all: &mut Vec<Vec<usize>>) {
    for (i, field) in fields.iter().enumerate() {
        prefix.push(i);
        all.push(prefix.clone());
        if let Payload::Message(_, inner) | Payload::Group(inner) = &field.payload {
            collect_paths(inner, prefix, all);
        }
        prefix.pop();
    }
}

/// Returns the schema of the message at `path` (a message field's path; empty for the
/// top), when the tree knows it.
pub fn schema_at(fields: &[Field], path: &[usize], top: Option<Schema>) -> Option<Schema> {
    let mut schema = top;
    let mut list = fields;
    for &i in path {
        match &list.get(i)?.payload {
            Payload::Message(inner_schema, inner) => {
                schema = Some(*inner_schema);
                list = inner;
            }
            Payload::Group(inner) => {
                schema = None;
                list = inner;
            }
            _ => return None,
        }
    }
    schema
}

/// Returns the list of fields that holds the field at `path`, and its index there.
pub fn parent_mut<'a>(
    fields: &'a mut Vec<Field>,
    path: &[usize],
) -> Option<(&'a mut Vec<Field>, usize)> {
    let (&last, up) = path.split_last()?;
    let mut list = fields;
    for &i in up {
        list = match &mut list.get_mut(i)?.payload {
            Payload::Message(_, inner) | Payload::Group(inner) => inner,
            _ => return None,
        };
    }
    (last < list.len()).then_some((list, last))
}

/// Calls `each` on every message of `schema` in the tree, innermost first, with the
/// message's fields.
pub fn for_each_message(
    fields: &mut [Field],
    schema: Schema,
    each: &mut dyn FnMut(&mut Vec<Field>),
) {
    for field in fields {
        if let Payload::Message(inner_schema, inner) = &mut field.payload {
            for_each_message(inner, schema, each);
            if *inner_schema == schema {
                each(inner);
            }
        }
    }
}

/// Most bytes an input may have for the streaming check's size limits (1 MiB of a run's
/// own fields, 1 MiB of one set's fields, 4 MiB of a row) to be out of reach.
pub const BELOW_STREAMING_LIMITS: usize = 1 << 20;

/// Returns why the run check may refuse an encoding that prost decodes and whose canonical
/// encoding it accepts: the known, deliberate differences, which are not bugs.
///
/// - Wire groups (wire types 3 and 4) among a run's or a result set's own fields: prost
///   skips them as unknown fields (so the canonical encoding has none), the run check
///   refuses them.
/// - Size limits: a run whose own fields exceed 1 MiB, a result set's fields 1 MiB, all
///   sets' fields 4 MiB, a row 4 MiB, or more than 4096 result sets; only an encoding of
///   at least [`BELOW_STREAMING_LIMITS`] bytes can reach one.
pub fn streaming_gap(run: &[u8]) -> Option<&'static str> {
    if run.len() >= BELOW_STREAMING_LIMITS {
        return Some("the encoding is large enough to reach a streaming size limit");
    }
    let Some(fields) = parse(run, None) else {
        // Not even framed as a message: prost refuses it too.
        return None;
    };
    for field in &fields {
        match &field.payload {
            Payload::Group(_) => return Some("a wire group among the run's own fields"),
            Payload::Bytes(set) if field.number == 10 => {
                let groups = parse(set, None)
                    .is_some_and(|set| set.iter().any(|f| matches!(f.payload, Payload::Group(_))));
                if groups {
                    return Some("a wire group among a result set's own fields");
                }
            }
            _ => {}
        }
    }
    None
}
