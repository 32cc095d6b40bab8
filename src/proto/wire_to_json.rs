//! Protobuf wire bytes → proto3 JSON, written straight from the message descriptors, without
//! building a `DynamicMessage`. A [`Plan`] is prepared once per message type: per
//! field its number, wire type, JSON name (already quoted) and kind, nested messages by index.
//!
//! It writes exactly what prost-reflect's serializer writes with the default options (json
//! names or proto names, defaults skipped, 64-bit integers as strings, enums by name, bytes in
//! standard base64, NaN/Infinity as strings, Timestamp and Duration as strings, fields in
//! number order), and is property-tested against it. Where it could differ it does not guess:
//! a type that reaches another well-known type (Any, Struct, wrappers, FieldMask…) or a group
//! has no plan, and a message whose bytes it would have to merge (a singular message field
//! twice, a map key twice), that is malformed, or holds an out-of-range timestamp makes
//! [`Plan::write`] return `None`: the caller then takes the `DynamicMessage` path, which
//! answers exactly as before.

use std::collections::HashMap;

use base64::Engine;
use prost_reflect::{Cardinality, Kind, MessageDescriptor};

/// How a field's value is written.
#[derive(Debug, Clone)]
enum FieldKind {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    /// Value names by number (a number without a name is written as the number).
    Enum(std::sync::Arc<HashMap<i32, String>>, bool),
    /// A message, by index into the plan's messages.
    Message(usize),
    Timestamp,
    Duration,
}

#[derive(Debug, Clone)]
struct Field {
    number: u32,
    /// `"name":`, quoted and escaped once.
    key: String,
    kind: FieldKind,
    repeated: bool,
    /// Emitted when present even if it holds the default (messages, `optional`, oneofs).
    presence: bool,
    /// A map: the entry's key and value kinds.
    map: Option<(FieldKind, FieldKind)>,
}

#[derive(Debug, Clone)]
struct Message {
    /// In number order (the order prost-reflect writes them).
    fields: Vec<Field>,
    /// Field index by number: a table up to [`DENSE`], a map above.
    dense: Vec<Option<u16>>,
    sparse: HashMap<u32, usize>,
}

/// Field numbers up to this are looked up in a table (most messages number their fields
/// from 1 up).
const DENSE: u32 = 128;

impl Message {
    fn field(&self, number: u32) -> Option<usize> {
        match self.dense.get(number as usize) {
            Some(i) => i.map(usize::from),
            None => self.sparse.get(&number).copied(),
        }
    }
}

/// A prepared writer for one message type and its nested types.
#[derive(Debug, Clone)]
pub struct Plan {
    messages: Vec<Message>,
}

/// One field occurrence on the wire, in wire order.
#[derive(Debug, Clone, Copy)]
struct Occurrence {
    field: usize,
    wire: u8,
    /// A varint's or fixed value's bits, or the span of a length-delimited value.
    value: u64,
    start: usize,
    end: usize,
}

const MAX_DEPTH: usize = 64;

impl Plan {
    /// The plan for `desc` with json names (or proto names); None when a type it reaches is
    /// one it does not write itself.
    pub fn new(desc: &MessageDescriptor, proto_names: bool) -> Option<Plan> {
        // A well-known type as the whole message has a JSON form of its own (a wrapper is its
        // bare value, a Timestamp a string…), not an object of its fields: the serializer
        // writes it. Empty's form is `{}`, which the plan writes too.
        let name = desc.full_name();
        if name.starts_with("google.protobuf.") && name != "google.protobuf.Empty" {
            return None;
        }
        let mut plan = Plan {
            messages: Vec::new(),
        };
        let mut index = HashMap::new();
        plan.add(desc, proto_names, &mut index)?;
        Some(plan)
    }

    fn add(
        &mut self,
        desc: &MessageDescriptor,
        proto_names: bool,
        index: &mut HashMap<String, usize>,
    ) -> Option<usize> {
        if let Some(&i) = index.get(desc.full_name()) {
            return Some(i);
        }
        let i = self.messages.len();
        index.insert(desc.full_name().to_string(), i);
        self.messages.push(Message {
            fields: Vec::new(),
            dense: Vec::new(),
            sparse: HashMap::new(),
        });
        let mut fields = Vec::new();
        for f in desc.fields() {
            let name = if proto_names { f.name() } else { f.json_name() };
            let key = format!("{}:", serde_json::to_string(name).ok()?);
            let (kind, map) = if f.is_map() {
                let entry = f.kind().as_message()?.clone();
                let key_kind =
                    self.kind_of(&entry.map_entry_key_field().kind(), proto_names, index)?;
                let value_kind =
                    self.kind_of(&entry.map_entry_value_field().kind(), proto_names, index)?;
                (FieldKind::Bool, Some((key_kind, value_kind)))
            } else {
                if f.is_group() {
                    return None;
                }
                (self.kind_of(&f.kind(), proto_names, index)?, None)
            };
            fields.push(Field {
                number: f.number(),
                key,
                kind,
                repeated: f.cardinality() == Cardinality::Repeated,
                presence: f.supports_presence(),
                map,
            });
        }
        fields.sort_by_key(|f| f.number);
        let mut dense = vec![None; DENSE as usize];
        let mut sparse = HashMap::new();
        for (k, f) in fields.iter().enumerate() {
            match dense.get_mut(f.number as usize) {
                Some(slot) => *slot = Some(u16::try_from(k).ok()?),
                None => {
                    sparse.insert(f.number, k);
                }
            }
        }
        self.messages[i] = Message {
            fields,
            dense,
            sparse,
        };
        Some(i)
    }

    fn kind_of(
        &mut self,
        kind: &Kind,
        proto_names: bool,
        index: &mut HashMap<String, usize>,
    ) -> Option<FieldKind> {
        Some(match kind {
            Kind::Double => FieldKind::Double,
            Kind::Float => FieldKind::Float,
            Kind::Int32 => FieldKind::Int32,
            Kind::Int64 => FieldKind::Int64,
            Kind::Uint32 => FieldKind::Uint32,
            Kind::Uint64 => FieldKind::Uint64,
            Kind::Sint32 => FieldKind::Sint32,
            Kind::Sint64 => FieldKind::Sint64,
            Kind::Fixed32 => FieldKind::Fixed32,
            Kind::Fixed64 => FieldKind::Fixed64,
            Kind::Sfixed32 => FieldKind::Sfixed32,
            Kind::Sfixed64 => FieldKind::Sfixed64,
            Kind::Bool => FieldKind::Bool,
            Kind::String => FieldKind::String,
            Kind::Bytes => FieldKind::Bytes,
            Kind::Enum(e) => FieldKind::Enum(
                std::sync::Arc::new(
                    e.values()
                        .map(|v| {
                            (
                                v.number(),
                                serde_json::to_string(v.name()).unwrap_or_default(),
                            )
                        })
                        .collect(),
                ),
                e.full_name() == "google.protobuf.NullValue",
            ),
            Kind::Message(m) => match m.full_name() {
                "google.protobuf.Timestamp" => FieldKind::Timestamp,
                "google.protobuf.Duration" => FieldKind::Duration,
                "google.protobuf.Empty" => FieldKind::Message(self.add(m, proto_names, index)?),
                name if name.starts_with("google.protobuf.") => return None,
                _ => FieldKind::Message(self.add(m, proto_names, index)?),
            },
        })
    }

    /// Writes `bytes` (an encoded message of the plan's type) as JSON to `out`; None when the
    /// `DynamicMessage` path must answer instead (`out` may then hold a partial write).
    pub fn write(&self, bytes: &[u8], out: &mut Vec<u8>) -> Option<()> {
        self.message(0, bytes, out, 0)
    }

    fn message(&self, m: usize, bytes: &[u8], out: &mut Vec<u8>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let msg = &self.messages[m];
        let mut seen = scan(msg, bytes)?;
        // Stable: within a field, wire order stays (repeated order, last one wins).
        seen.sort_by_key(|o| o.field);
        out.push(b'{');
        let mut first = true;
        let mut at = 0;
        while at < seen.len() {
            let field = seen[at].field;
            let end = at + seen[at..].iter().take_while(|o| o.field == field).count();
            let f = &msg.fields[field];
            let run = &seen[at..end];
            at = end;
            if f.map.is_some() || f.repeated {
                let mark = out.len();
                if !first {
                    out.push(b',');
                }
                out.extend_from_slice(f.key.as_bytes());
                let wrote = match &f.map {
                    Some((k, v)) => self.map(k, v, run, bytes, out, depth)?,
                    None => self.list(&f.kind, run, bytes, out, depth)?,
                };
                if wrote == 0 {
                    out.truncate(mark); // an empty packed run: nothing to write
                } else {
                    first = false;
                }
                continue;
            }
            // Singular: the last occurrence wins; a message twice would have to be merged.
            let last = run[run.len() - 1];
            if run.len() > 1 && matches!(f.kind, FieldKind::Message(_)) {
                return None;
            }
            if !f.presence && is_default(&f.kind, &last) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(f.key.as_bytes());
            self.value(&f.kind, &last, bytes, out, depth)?;
        }
        out.push(b'}');
        Some(())
    }

    /// A repeated field's elements (packed runs and single ones, in wire order); how many.
    fn list(
        &self,
        kind: &FieldKind,
        run: &[Occurrence],
        bytes: &[u8],
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Option<usize> {
        let mut n = 0;
        out.push(b'[');
        for o in run {
            if o.wire == 2 && packable(kind) {
                let mut rest = &bytes[o.start..o.end];
                while !rest.is_empty() {
                    let (value, used) = match wire_of(kind) {
                        0 => varint(rest)?,
                        1 => (u64::from_le_bytes(rest.get(..8)?.try_into().ok()?), 8),
                        _ => (
                            u64::from(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?)),
                            4,
                        ),
                    };
                    rest = &rest[used..];
                    if n > 0 {
                        out.push(b',');
                    }
                    let one = Occurrence {
                        wire: wire_of(kind),
                        value,
                        ..*o
                    };
                    self.value(kind, &one, bytes, out, depth)?;
                    n += 1;
                }
            } else {
                if o.wire != wire_of(kind) {
                    return None;
                }
                if n > 0 {
                    out.push(b',');
                }
                self.value(kind, o, bytes, out, depth)?;
                n += 1;
            }
        }
        out.push(b']');
        Some(n)
    }

    /// A map field's entries in wire order; a key twice (which the other path would keep
    /// once) is left to it.
    fn map(
        &self,
        key: &FieldKind,
        value: &FieldKind,
        run: &[Occurrence],
        bytes: &[u8],
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Option<usize> {
        let mut strings: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        let mut ints: std::collections::HashSet<u64> = std::collections::HashSet::new();
        out.push(b'{');
        for (n, o) in run.iter().enumerate() {
            if o.wire != 2 {
                return None;
            }
            let (k, v) = entry(bytes, o, key, value)?;
            if k.wire != wire_of(key) || v.wire != wire_of(value) {
                return None;
            }
            let fresh = match key {
                FieldKind::String => strings.insert(&bytes[k.start..k.end]),
                _ => ints.insert(k.value),
            };
            if !fresh {
                return None;
            }
            if n > 0 {
                out.push(b',');
            }
            // JSON object keys are strings: numbers and booleans are quoted.
            match key {
                FieldKind::String => self.value(key, &k, bytes, out, depth)?,
                _ => {
                    let mut text = Vec::new();
                    self.value(key, &k, bytes, &mut text, depth)?;
                    out.push(b'"');
                    out.extend(text.iter().filter(|c| **c != b'"'));
                    out.push(b'"');
                }
            }
            out.push(b':');
            self.value(value, &v, bytes, out, depth)?;
        }
        out.push(b'}');
        Some(run.len())
    }

    fn value(
        &self,
        kind: &FieldKind,
        o: &Occurrence,
        bytes: &[u8],
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Option<()> {
        if o.wire != wire_of(kind) {
            return None;
        }
        let v = o.value;
        // Integers through `itoa` (serde_json's own): `core::fmt` was a fifth of a large answer's
        // time.
        fn num(out: &mut Vec<u8>, n: impl itoa::Integer) {
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        }
        match kind {
            FieldKind::Double => float(out, f64::from_bits(v)),
            FieldKind::Float => {
                let f = f32::from_bits(v as u32);
                if f.is_finite() {
                    serde_json::to_writer(&mut *out, &f).ok()?;
                } else {
                    float(out, f64::from(f));
                }
            }
            FieldKind::Int32 => num(out, v as i32),
            FieldKind::Uint32 => num(out, v as u32),
            FieldKind::Sint32 => num(out, ((v as u32) >> 1) as i32 ^ -((v & 1) as i32)),
            FieldKind::Fixed32 => num(out, v as u32),
            FieldKind::Sfixed32 => num(out, v as u32 as i32),
            FieldKind::Int64 | FieldKind::Sfixed64 => {
                out.push(b'"');
                num(out, v as i64);
                out.push(b'"');
            }
            FieldKind::Uint64 | FieldKind::Fixed64 => {
                out.push(b'"');
                num(out, v);
                out.push(b'"');
            }
            FieldKind::Sint64 => {
                out.push(b'"');
                num(out, (v >> 1) as i64 ^ -((v & 1) as i64));
                out.push(b'"');
            }
            FieldKind::Bool => out.extend_from_slice(if v != 0 { b"true" } else { b"false" }),
            FieldKind::String => {
                let s = std::str::from_utf8(&bytes[o.start..o.end]).ok()?;
                serde_json::to_writer(&mut *out, s).ok()?;
            }
            FieldKind::Bytes => {
                out.push(b'"');
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(&bytes[o.start..o.end]);
                out.extend_from_slice(encoded.as_bytes());
                out.push(b'"');
            }
            FieldKind::Enum(names, null) => {
                let n = v as i32;
                match names.get(&n) {
                    _ if *null => out.extend_from_slice(b"null"),
                    Some(name) => out.extend_from_slice(name.as_bytes()),
                    None => num(out, n),
                }
            }
            FieldKind::Message(m) => self.message(*m, &bytes[o.start..o.end], out, depth + 1)?,
            FieldKind::Timestamp | FieldKind::Duration => {
                time(
                    matches!(kind, FieldKind::Timestamp),
                    &bytes[o.start..o.end],
                    out,
                )?;
            }
        }
        Some(())
    }
}

/// A Timestamp (RFC 3339) or a Duration (`1.5s`) from its message bytes, as prost-reflect
/// writes them; None outside their ranges (prost-reflect's error then stands).
fn time(timestamp: bool, value: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let (seconds, nanos) = seconds_nanos(value)?;
    let text = if timestamp {
        // prost-reflect's range (years 1 to 9999); outside it, its error stands.
        if !(-62_135_596_800..=253_402_300_799).contains(&seconds) {
            return None;
        }
        if rfc3339(out, seconds, nanos) {
            return Some(());
        }
        prost_types::Timestamp { seconds, nanos }.to_string()
    } else {
        if seconds.unsigned_abs() > 315_576_000_000 || nanos.unsigned_abs() > 999_999_999 {
            return None;
        }
        prost_types::Duration { seconds, nanos }.to_string()
    };
    serde_json::to_writer(&mut *out, &text).ok()?;
    Some(())
}

/// Every field occurrence of `msg` in `bytes`, unknown fields skipped; None when malformed or
/// a known field has a wire type it cannot have.
fn scan(msg: &Message, bytes: &[u8]) -> Option<Vec<Occurrence>> {
    let mut seen = Vec::with_capacity(msg.fields.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        let (tag, used) = varint(rest)?;
        rest = &rest[used..];
        let (number, wire) = (u32::try_from(tag >> 3).ok()?, (tag & 7) as u8);
        if number == 0 {
            return None;
        }
        let at = bytes.len() - rest.len();
        let (value, len) = field_value(wire, rest)?;
        rest = &rest[len..];
        let Some(field) = msg.field(number) else {
            continue;
        };
        let (start, end) = match wire {
            2 => (at + len - value as usize, at + len),
            _ => (0, 0),
        };
        seen.push(Occurrence {
            field,
            wire,
            value,
            start,
            end,
        });
    }
    Some(seen)
}

/// A field's value after its tag: for varints and fixed values the bits, for length-delimited
/// ones the length; and how many bytes it took. Groups are not read (None).
fn field_value(wire: u8, rest: &[u8]) -> Option<(u64, usize)> {
    match wire {
        0 => varint(rest),
        1 => Some((u64::from_le_bytes(rest.get(..8)?.try_into().ok()?), 8)),
        5 => Some((
            u64::from(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?)),
            4,
        )),
        2 => {
            let (len, used) = varint(rest)?;
            let len = usize::try_from(len).ok()?;
            if rest.len() - used < len {
                return None;
            }
            Some((len as u64, used + len))
        }
        _ => None,
    }
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// A map entry's key (field 1) and value (field 2), positions absolute in `bytes`; one that is
/// absent holds its default (encoders leave default keys and values out); None when malformed.
fn entry(
    bytes: &[u8],
    o: &Occurrence,
    key: &FieldKind,
    value: &FieldKind,
) -> Option<(Occurrence, Occurrence)> {
    let (mut k, mut v) = (None, None);
    let mut at = o.start;
    while at < o.end {
        let (tag, used) = varint(&bytes[at..o.end])?;
        at += used;
        let wire = (tag & 7) as u8;
        let (value, len) = field_value(wire, &bytes[at..o.end])?;
        let occ = Occurrence {
            field: 0,
            wire,
            value,
            start: at + len - if wire == 2 { value as usize } else { len },
            end: at + len,
        };
        at += len;
        match tag >> 3 {
            1 => k = Some(occ),
            2 => v = Some(occ),
            _ => {}
        }
    }
    let default = |kind: &FieldKind| Occurrence {
        field: 0,
        wire: wire_of(kind),
        value: 0,
        start: 0,
        end: 0,
    };
    Some((k.unwrap_or(default(key)), v.unwrap_or(default(value))))
}

/// A Timestamp's or Duration's seconds (field 1) and nanos (field 2); last one wins.
fn seconds_nanos(bytes: &[u8]) -> Option<(i64, i32)> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    let mut rest = bytes;
    while !rest.is_empty() {
        let (tag, used) = varint(rest)?;
        rest = &rest[used..];
        let wire = (tag & 7) as u8;
        let (value, len) = field_value(wire, rest)?;
        rest = &rest[len..];
        match (tag >> 3, wire) {
            (1, 0) => seconds = value as i64,
            (2, 0) => nanos = value as i32,
            (1 | 2, _) => return None,
            _ => {}
        }
    }
    Some((seconds, nanos))
}

/// The wire type a value of `kind` has when it is not packed.
fn wire_of(kind: &FieldKind) -> u8 {
    match kind {
        FieldKind::Double | FieldKind::Fixed64 | FieldKind::Sfixed64 => 1,
        FieldKind::Float | FieldKind::Fixed32 | FieldKind::Sfixed32 => 5,
        FieldKind::String
        | FieldKind::Bytes
        | FieldKind::Message(_)
        | FieldKind::Timestamp
        | FieldKind::Duration => 2,
        _ => 0,
    }
}

fn packable(kind: &FieldKind) -> bool {
    wire_of(kind) != 2
}

/// Whether a field without presence holds its default (and is therefore not written).
fn is_default(kind: &FieldKind, o: &Occurrence) -> bool {
    match kind {
        FieldKind::Double => f64::from_bits(o.value) == 0.0,
        FieldKind::Float => f32::from_bits(o.value as u32) == 0.0,
        FieldKind::Int32 | FieldKind::Enum(..) => o.value as i32 == 0,
        FieldKind::Uint32 | FieldKind::Fixed32 | FieldKind::Sfixed32 | FieldKind::Sint32 => {
            o.value as u32 == 0
        }
        FieldKind::String | FieldKind::Bytes => o.end == o.start,
        FieldKind::Message(_) | FieldKind::Timestamp | FieldKind::Duration => false,
        _ => o.value == 0,
    }
}

/// A double as proto3 JSON: a number, or "NaN" / "Infinity" / "-Infinity".
/// A timestamp as prost-types writes it (`"YYYY-MM-DDTHH:MM:SS[.fff|.ffffff|.fffffffff]Z"`,
/// quoted), without `core::fmt`; false, writing nothing, when `nanos` is not normalized
/// (0..1e9) — prost-types normalizes first, the caller takes that path. `seconds` is in years
/// 1 to 9999 (checked by the caller).
fn rfc3339(out: &mut Vec<u8>, seconds: i64, nanos: i32) -> bool {
    let Ok(nanos) = u32::try_from(nanos) else {
        return false;
    };
    if nanos >= 1_000_000_000 {
        return false;
    }
    // Days since 1970-01-01 to a civil date (H. Hinnant's `civil_from_days`).
    let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let digits = |out: &mut Vec<u8>, n: i64, width: u32| {
        for i in (0..width).rev() {
            out.push(b'0' + (n / 10i64.pow(i) % 10) as u8);
        }
    };
    out.push(b'"');
    digits(out, year, 4);
    out.push(b'-');
    digits(out, month, 2);
    out.push(b'-');
    digits(out, day, 2);
    out.push(b'T');
    digits(out, secs / 3_600, 2);
    out.push(b':');
    digits(out, secs / 60 % 60, 2);
    out.push(b':');
    digits(out, secs % 60, 2);
    let nanos = i64::from(nanos);
    if nanos == 0 {
    } else if nanos % 1_000_000 == 0 {
        out.push(b'.');
        digits(out, nanos / 1_000_000, 3);
    } else if nanos % 1_000 == 0 {
        out.push(b'.');
        digits(out, nanos / 1_000, 6);
    } else {
        out.push(b'.');
        digits(out, nanos, 9);
    }
    out.extend_from_slice(b"Z\"");
    true
}

fn float(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        let _ = serde_json::to_writer(&mut *out, &f);
    } else if f.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if f > 0.0 {
        out.extend_from_slice(b"\"Infinity\"");
    } else {
        out.extend_from_slice(b"\"-Infinity\"");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #[test]
    fn timestamps_are_written_as_prost_types_writes_them() {
        let mut cases = vec![
            (-62_135_596_800, 0),
            (253_402_300_799, 999_999_999),
            (0, 0),
            (-1, 0),
            (951_782_400, 1_000),       // 2000-02-29
            (4_107_542_400, 5_000_000), // 2100-03-01
            (1_796_225_000, 123_456_789),
            (1_796_225_000, -1),
            (1_796_225_000, 1_000_000_000),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let seconds = -62_135_596_800 + (x % 315_537_897_600) as i64;
            let nanos = match x % 4 {
                0 => 0,
                1 => ((x >> 20) % 1_000) as i32 * 1_000_000,
                2 => ((x >> 20) % 1_000_000) as i32 * 1_000,
                _ => ((x >> 20) % 1_000_000_000) as i32,
            };
            cases.push((seconds, nanos));
        }
        for (seconds, nanos) in cases {
            let mut out = Vec::new();
            if super::rfc3339(&mut out, seconds, nanos) {
                let want = format!("\"{}\"", prost_types::Timestamp { seconds, nanos });
                assert_eq!(String::from_utf8(out).unwrap(), want, "{seconds} {nanos}");
            } else {
                assert!(!(0..1_000_000_000).contains(&nanos) && out.is_empty());
            }
        }
    }

    use super::*;
    use prost::Message as _;
    use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, SerializeOptions, Value};
    use rand::{Rng, SeedableRng};

    const EVERY_KIND: &str = r#"
syntax = "proto3";
package t;
import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/any.proto";
enum Color { COLOR_UNSPECIFIED = 0; RED = 1; GREEN = 2; }
message Every {
  double d = 1; float f = 2; int32 i32 = 3; int64 i64 = 4; uint32 u32 = 5; uint64 u64 = 6;
  sint32 s32 = 7; sint64 s64 = 8; fixed32 fx32 = 9; fixed64 fx64 = 10; sfixed32 sf32 = 11;
  sfixed64 sf64 = 12; bool b = 13; string s = 14; bytes by = 15; Color color = 16;
  Every child = 17; repeated int32 ri = 18; repeated string rs = 19; repeated Every rm = 20;
  repeated double rd = 21; map<string, int64> ms = 22; map<int32, Every> mi = 23;
  map<bool, string> mb = 24; optional int32 oi = 25; oneof pick { string os = 26; Color oc = 27; }
  google.protobuf.Timestamp at = 28; google.protobuf.Duration took = 29;
  repeated Color rc = 30; map<uint64, bytes> mu = 31; repeated sint64 rs64 = 32;
  int32 snake_case_name = 1000;
}
"#;

    fn pool() -> DescriptorPool {
        compile_one("wirejson", EVERY_KIND)
    }

    /// `text` compiled as one .proto file (imports from the bundled well-known types).
    pub(crate) fn compile_one(tag: &str, text: &str) -> DescriptorPool {
        let dir = std::env::temp_dir().join(format!("gwbench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("every.proto"), text).unwrap();
        let pool =
            crate::proto::compile_protos(&[dir.join("every.proto")], std::slice::from_ref(&dir))
                .unwrap();
        let _ = std::fs::remove_dir_all(dir);
        pool
    }

    fn reference(desc: &MessageDescriptor, bytes: &[u8], proto_names: bool) -> Option<String> {
        let msg = DynamicMessage::decode(desc.clone(), bytes).ok()?;
        let mut out = Vec::new();
        let opts = SerializeOptions::new().use_proto_field_name(proto_names);
        msg.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &opts)
            .ok()?;
        String::from_utf8(out).ok()
    }

    pub(crate) fn scalar(kind: &Kind, rng: &mut rand::rngs::StdRng) -> Value {
        let pick = rng.random_range(0..6);
        match kind {
            Kind::Double => Value::F64(
                [
                    0.0,
                    -0.0,
                    f64::NAN,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    rng.random::<f64>() * 1e9 - 5e8,
                ][pick],
            ),
            Kind::Float => Value::F32(
                [
                    0.0,
                    -0.0,
                    f32::NAN,
                    f32::INFINITY,
                    1.5e-7,
                    rng.random::<f32>() * 1e5,
                ][pick],
            ),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                Value::I32([0, -1, i32::MIN, i32::MAX, 7, rng.random()][pick])
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                Value::I64([0, -1, i64::MIN, i64::MAX, 7, rng.random()][pick])
            }
            Kind::Uint32 | Kind::Fixed32 => {
                Value::U32([0, 1, u32::MAX, 9, 300, rng.random()][pick])
            }
            Kind::Uint64 | Kind::Fixed64 => {
                Value::U64([0, 1, u64::MAX, 9, 300, rng.random()][pick])
            }
            Kind::Bool => Value::Bool(rng.random()),
            Kind::String => Value::String(
                [
                    "",
                    "plain",
                    "quote\" back\\slash",
                    "tab\t nl\n ctl\u{1}",
                    "ünïcödé 🦀",
                    "x",
                ][pick]
                    .to_string(),
            ),
            Kind::Bytes => Value::Bytes(
                (0..rng.random_range(0..9))
                    .map(|_| rng.random::<u8>())
                    .collect::<Vec<_>>()
                    .into(),
            ),
            Kind::Enum(_) => Value::EnumNumber([0, 1, 2, 99, -3, 1][pick]),
            Kind::Message(_) => unreachable!("messages are built by `message`"),
        }
    }

    pub(crate) fn value(kind: &Kind, rng: &mut rand::rngs::StdRng, depth: usize) -> Value {
        match kind {
            Kind::Message(m) => match m.full_name() {
                "google.protobuf.Timestamp" | "google.protobuf.Duration" => {
                    let mut msg = DynamicMessage::new(m.clone());
                    let seconds = rng.random_range(-62_135_596_800i64..253_402_300_799);
                    let seconds = if m.name() == "Duration" {
                        seconds % 315_576_000_000
                    } else {
                        seconds
                    };
                    let nanos = [
                        0,
                        500_000_000,
                        123_000,
                        7,
                        rng.random_range(0..1_000_000_000),
                    ][rng.random_range(0..5)];
                    let nanos = if m.name() == "Duration" && seconds < 0 {
                        -nanos
                    } else {
                        nanos
                    };
                    msg.set_field_by_name("seconds", Value::I64(seconds));
                    msg.set_field_by_name("nanos", Value::I32(nanos));
                    Value::Message(msg)
                }
                _ => Value::Message(message(m, rng, depth + 1)),
            },
            k => scalar(k, rng),
        }
    }

    /// A random message of `desc` (every field kind, nested up to depth 2).
    pub(crate) fn message(
        desc: &MessageDescriptor,
        rng: &mut rand::rngs::StdRng,
        depth: usize,
    ) -> DynamicMessage {
        let mut msg = DynamicMessage::new(desc.clone());
        if depth > 2 {
            return msg;
        }
        for f in desc.fields() {
            if rng.random_range(0..3) == 0 {
                continue;
            }
            let v = if f.is_map() {
                let entry = f.kind().as_message().unwrap().clone();
                let (kf, vf) = (entry.map_entry_key_field(), entry.map_entry_value_field());
                let mut map = std::collections::HashMap::new();
                for _ in 0..rng.random_range(0..4) {
                    let key = match scalar(&kf.kind(), rng) {
                        Value::String(s) => MapKey::String(s),
                        Value::I32(i) => MapKey::I32(i),
                        Value::I64(i) => MapKey::I64(i),
                        Value::U32(i) => MapKey::U32(i),
                        Value::U64(i) => MapKey::U64(i),
                        Value::Bool(b) => MapKey::Bool(b),
                        other => panic!("not a key: {other:?}"),
                    };
                    map.insert(key, value(&vf.kind(), rng, depth));
                }
                Value::Map(map)
            } else if f.is_list() {
                Value::List(
                    (0..rng.random_range(0..4))
                        .map(|_| value(&f.kind(), rng, depth))
                        .collect(),
                )
            } else {
                value(&f.kind(), rng, depth)
            };
            msg.set_field(&f, v);
        }
        msg
    }

    fn reaches_map(desc: &MessageDescriptor, seen: &mut Vec<String>) -> bool {
        if seen.iter().any(|s| s == desc.full_name()) {
            return false;
        }
        seen.push(desc.full_name().to_string());
        desc.fields()
            .any(|f| f.is_map() || f.kind().as_message().is_some_and(|m| reaches_map(m, seen)))
    }

    fn check(desc: &MessageDescriptor, bytes: &[u8], proto_names: bool) {
        let plan = Plan::new(desc, proto_names).expect("a plan for this type");
        let want = reference(desc, bytes, proto_names);
        let mut out = Vec::new();
        match (plan.write(bytes, &mut out), want) {
            (Some(()), Some(want)) => {
                let got = String::from_utf8(out).unwrap();
                let (g, w): (serde_json::Value, serde_json::Value) = (
                    serde_json::from_str(&got).unwrap(),
                    serde_json::from_str(&want).unwrap(),
                );
                assert_eq!(g, w, "\n got: {got}\nwant: {want}");
                // Byte for byte where no map (whose order the reference takes from a hash) is.
                if !w.to_string().contains(":{\"") || !reaches_map(desc, &mut Vec::new()) {
                    assert_eq!(got, want);
                }
            }
            // Left to the reference path: fine, it answers (or fails) as before.
            (None, _) => {}
            (Some(()), None) => panic!(
                "written, but the reference refuses: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }

    #[test]
    fn random_messages_render_as_prost_reflect_renders_them() {
        let pool = pool();
        let every = pool.get_message_by_name("t.Every").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6a_73_6f_6e);
        let mut written = 0;
        for round in 0..1000 {
            let msg = message(&every, &mut rng, 0);
            let bytes = msg.encode_to_vec();
            check(&every, &bytes, round % 2 == 1);
            written += usize::from(
                Plan::new(&every, false)
                    .unwrap()
                    .write(&bytes, &mut Vec::new())
                    .is_some(),
            );
        }
        // Not everything left to the reference path: it is the fast path being tested.
        assert!(written > 900, "only {written} of 1000 written by the plan");
        // gwbench's own messages, as the mocks fill them.
        let own = crate::proto::descriptor_pool();
        for name in [
            "gwbench.v1.User",
            "gwbench.v1.ListOrdersResponse",
            "gwbench.v1.SearchProductsResponse",
            "gwbench.v1.Stock",
        ] {
            let desc = own.get_message_by_name(name).unwrap();
            for _ in 0..100 {
                let bytes = message(&desc, &mut rng, 0).encode_to_vec();
                check(&desc, &bytes, false);
            }
        }
    }

    /// A well-known type as the whole message (a StringValue answer) is its JSON form — a bare
    /// string, number, boolean… — which the reference path writes: the plan declines it (it
    /// would write `{"value": …}`) or, for Empty, writes the same `{}`.
    #[test]
    fn whole_well_known_types_render_as_prost_reflect_renders_them() {
        let pool = pool();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x77_6b_74);
        let mut names = 0;
        for desc in pool
            .all_messages()
            .filter(|m| m.full_name().starts_with("google.protobuf."))
        {
            names += 1;
            let plan = Plan::new(&desc, false);
            for round in 0..50 {
                let bytes = message(&desc, &mut rng, 0).encode_to_vec();
                if plan.is_some() {
                    check(&desc, &bytes, round % 2 == 1);
                }
            }
            match desc.full_name() {
                "google.protobuf.Empty" => assert!(plan.is_some()),
                other => assert!(plan.is_none(), "{other} has a plan"),
            }
        }
        assert!(names >= 15, "{names} well-known types in the test pool");
    }

    #[test]
    fn wire_forms_the_encoder_does_not_make_read_as_the_reference_reads_them() {
        let pool = pool();
        let every = pool.get_message_by_name("t.Every").unwrap();
        // i32 = 3 twice (the last wins), ri = 18 unpacked and packed mixed, an unknown field,
        // s = 14 twice.
        let mut b = vec![0x18, 0x05, 0x18, 0x07];
        b.extend([0x90, 0x01, 0x01]); // ri: 1, unpacked
        b.extend([0x92, 0x01, 0x02, 0x02, 0x03]); // ri: [2, 3], packed
        b.extend([0xf8, 0x06, 0x09]); // field 111, unknown varint
        b.extend([0x72, 0x01, b'a', 0x72, 0x01, b'b']);
        check(&every, &b, false);
        let mut out = Vec::new();
        Plan::new(&every, false)
            .unwrap()
            .write(&b, &mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"i32":7,"s":"b","ri":[1,2,3]}"#
        );
        // A singular message twice must be merged: left to the reference path.
        let twice = [0x8a, 0x01, 0x02, 0x18, 0x01, 0x8a, 0x01, 0x02, 0x20, 0x02];
        assert!(
            Plan::new(&every, false)
                .unwrap()
                .write(&twice, &mut Vec::new())
                .is_none()
        );
        check(&every, &twice, false);
        // Truncated and wrongly typed input: never written.
        for bad in [
            &[0x18][..],
            &[0x72, 0x05, b'a'],
            &[0x19, 1, 2, 3, 4, 5, 6, 7, 8],
            &[0x72, 0x01, 0xff],
        ] {
            assert!(
                Plan::new(&every, false)
                    .unwrap()
                    .write(bad, &mut Vec::new())
                    .is_none(),
                "{bad:?}"
            );
        }
        // Types it does not write itself have no plan.
        let wkt = crate::proto::descriptor_pool()
            .get_message_by_name("google.rpc.Status")
            .unwrap();
        assert!(
            Plan::new(&wkt, false).is_none(),
            "Any is the reference path's"
        );
    }
}
