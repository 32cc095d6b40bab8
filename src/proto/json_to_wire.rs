//! proto3 JSON → protobuf wire bytes, written straight from the message descriptors while the
//! JSON is parsed, without building a `DynamicMessage` (the other direction is
//! [`crate::proto::wire_to_json`]). A [`Plan`] is prepared once per request type: per message its fields
//! by JSON and proto name, their numbers, wire types and kinds, nested messages by index.
//!
//! It accepts exactly what prost-reflect's deserializer accepts and writes a message that
//! decodes to what prost-reflect would have built (property-tested against it). Where the two
//! could differ it does not guess but declines, and the caller takes the `DynamicMessage`
//! path, which answers exactly as before (with its own error text when the input is bad):
//! a request type that is itself a well-known type, or reaches a group or the NullValue enum,
//! has no plan; a well-known type inside one (Timestamp, Duration, wrappers, Struct, Value,
//! Any…) is read by prost-reflect itself, from the same parser, and its message written; a
//! field given twice, a second member of a oneof, an enum name it does not know, a key that
//! names an extension and any input error make [`Plan::write`] return `None`.
//!
//! Values from the path and the query are appended as fields after the body: on the wire a
//! later scalar replaces an earlier one and a later message merges into it, which is what
//! setting them on the built message did.

use std::collections::HashMap;
use std::fmt;

use prost::encoding::encode_varint;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// How a value is read from JSON and written to the wire.
#[derive(Debug, Clone, Copy)]
enum K {
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
    /// Value numbers by name, by index into the plan's enums.
    Enum(usize),
    /// By index into the plan's messages.
    Message(usize),
    /// A well-known type (`google.protobuf.*`, by index into the plan's `wkts`): its JSON form
    /// is read by prost-reflect (the one source of its rules), the message written from that.
    Wkt(usize),
}

#[derive(Debug, Clone)]
struct Field {
    number: u32,
    kind: K,
    list: bool,
    /// A map: the entry's key and value kinds (`kind` is unused).
    map: Option<(K, K)>,
    /// Written even when it holds the default (messages, `optional`, oneof members).
    presence: bool,
    packed: bool,
    /// The containing oneof, by index in its message.
    oneof: Option<u8>,
}

#[derive(Debug, Clone)]
struct Message {
    fields: Vec<Field>,
    /// Field index by JSON name and by proto name (JSON name first, as prost-reflect looks).
    names: Names,
}

/// Numbers by name (field indices, enum values): few are found faster by a scan than by
/// hashing.
#[derive(Debug, Clone)]
enum Names {
    Few(Vec<(Box<str>, i32)>),
    Many(HashMap<Box<str>, i32>),
}

const FEW: usize = 16;

impl Names {
    /// From (name, number) pairs; the first of a name wins.
    fn new(pairs: impl Iterator<Item = (String, i32)>) -> Names {
        let mut few: Vec<(Box<str>, i32)> = Vec::new();
        for (n, at) in pairs {
            if !few.iter().any(|(m, _)| **m == *n) {
                few.push((n.into(), at));
            }
        }
        if few.len() <= FEW {
            Names::Few(few)
        } else {
            Names::Many(few.into_iter().collect())
        }
    }

    fn get(&self, key: &str) -> Option<i32> {
        match self {
            Names::Few(v) => v
                .iter()
                .find(|(n, _)| n.len() == key.len() && &**n == key)
                .map(|(_, i)| *i),
            Names::Many(m) => m.get(key).copied(),
        }
    }
}

/// The most fields (and oneofs) a message may have to be planned: which were given is a
/// bit set of this size.
const MAX_FIELDS: usize = 256;

/// A prepared writer for one request type and the types it reaches.
#[derive(Debug, Clone)]
pub struct Plan {
    messages: Vec<Message>,
    /// Each enum's values by name.
    enums: Vec<Names>,
    wkts: Vec<MessageDescriptor>,
}

/// A field path (`a.b.c`) resolved in a plan: per step the message and the field index.
#[derive(Debug, Clone)]
pub struct Path(Vec<(u16, u16)>);

/// The error that sends a request back to the `DynamicMessage` path; its text is not shown.
fn decline<E: serde::de::Error>() -> E {
    E::custom("left to the reference path")
}

impl Plan {
    /// The plan for `desc`; None when a type it reaches is one it does not write itself.
    pub fn new(desc: &MessageDescriptor) -> Option<Plan> {
        let mut plan = Plan {
            messages: Vec::new(),
            enums: Vec::new(),
            wkts: Vec::new(),
        };
        plan.add(desc, &mut HashMap::new(), &mut HashMap::new())?;
        Some(plan)
    }

    fn add(
        &mut self,
        desc: &MessageDescriptor,
        index: &mut HashMap<String, usize>,
        enums: &mut HashMap<String, usize>,
    ) -> Option<usize> {
        if desc.full_name().starts_with("google.protobuf.") {
            return None;
        }
        if let Some(&i) = index.get(desc.full_name()) {
            return Some(i);
        }
        let i = self.messages.len();
        index.insert(desc.full_name().to_string(), i);
        self.messages.push(Message {
            fields: Vec::new(),
            names: Names::Few(Vec::new()),
        });
        let mut fields = Vec::new();
        let (mut json, mut proto) = (Vec::new(), Vec::new());
        let oneofs: Vec<String> = desc.oneofs().map(|o| o.full_name().to_string()).collect();
        if desc.fields().len() > MAX_FIELDS || oneofs.len() > MAX_FIELDS {
            return None;
        }
        for f in desc.fields() {
            if f.is_group() {
                return None;
            }
            let map = if f.is_map() {
                let entry = f.kind().as_message()?.clone();
                Some((
                    self.kind_of(&entry.map_entry_key_field().kind(), index, enums)?,
                    self.kind_of(&entry.map_entry_value_field().kind(), index, enums)?,
                ))
            } else {
                None
            };
            let kind = match map {
                Some(_) => K::Bool,
                None => self.kind_of(&f.kind(), index, enums)?,
            };
            let at = i32::try_from(fields.len()).ok()?;
            json.push((f.json_name().to_string(), at));
            proto.push((f.name().to_string(), at));
            fields.push(Field {
                number: f.number(),
                kind,
                list: f.is_list(),
                map,
                presence: f.supports_presence(),
                packed: f.is_packed(),
                oneof: f.containing_oneof().and_then(|o| {
                    let at = oneofs.iter().position(|n| n == o.full_name())?;
                    u8::try_from(at).ok()
                }),
            });
            if f.containing_oneof().is_some() && fields[fields.len() - 1].oneof.is_none() {
                return None;
            }
        }
        // prost-reflect looks a key up among the JSON names first, then the proto names.
        let names = Names::new(json.into_iter().chain(proto));
        self.messages[i] = Message { fields, names };
        Some(i)
    }

    fn kind_of(
        &mut self,
        kind: &Kind,
        index: &mut HashMap<String, usize>,
        enums: &mut HashMap<String, usize>,
    ) -> Option<K> {
        Some(match kind {
            Kind::Double => K::Double,
            Kind::Float => K::Float,
            Kind::Int32 => K::Int32,
            Kind::Int64 => K::Int64,
            Kind::Uint32 => K::Uint32,
            Kind::Uint64 => K::Uint64,
            Kind::Sint32 => K::Sint32,
            Kind::Sint64 => K::Sint64,
            Kind::Fixed32 => K::Fixed32,
            Kind::Fixed64 => K::Fixed64,
            Kind::Sfixed32 => K::Sfixed32,
            Kind::Sfixed64 => K::Sfixed64,
            Kind::Bool => K::Bool,
            Kind::String => K::String,
            Kind::Bytes => K::Bytes,
            Kind::Enum(e) => {
                if e.full_name().starts_with("google.protobuf.") {
                    return None;
                }
                let at = match enums.get(e.full_name()) {
                    Some(&at) => at,
                    None => {
                        self.enums.push(Names::new(
                            e.values().map(|v| (v.name().to_string(), v.number())),
                        ));
                        enums.insert(e.full_name().to_string(), self.enums.len() - 1);
                        self.enums.len() - 1
                    }
                };
                K::Enum(at)
            }
            Kind::Message(m) if m.full_name().starts_with("google.protobuf.") => {
                match self.wkts.iter().position(|w| w == m) {
                    Some(at) => K::Wkt(at),
                    None => {
                        self.wkts.push(m.clone());
                        K::Wkt(self.wkts.len() - 1)
                    }
                }
            }
            Kind::Message(m) => K::Message(self.add(m, index, enums)?),
        })
    }

    /// Writes the JSON object `json` (a message of the plan's type) as wire bytes to `out`;
    /// None when the `DynamicMessage` path must answer instead (`out` may then hold a
    /// partial write). `deny_unknown`: an unknown field is an error (so declined) rather
    /// than skipped.
    pub fn write(&self, json: &[u8], deny_unknown: bool, out: &mut Vec<u8>) -> Option<()> {
        let mut d = serde_json::Deserializer::from_slice(json);
        MessageSeed {
            cx: Cx {
                plan: self,
                deny_unknown,
            },
            message: 0,
            out,
        }
        .deserialize(&mut d)
        .ok()?;
        d.end().ok()
    }

    /// Writes the JSON value `json` as the field at `path` (the rule's `body: "a.b"`), inside
    /// its parent messages.
    pub fn write_field(
        &self,
        path: &Path,
        json: &[u8],
        deny_unknown: bool,
        out: &mut Vec<u8>,
    ) -> Option<()> {
        let (&(m, f), parents) = path.0.split_last()?;
        let marks = self.open_parents(parents, out);
        let mut d = serde_json::Deserializer::from_slice(json);
        let field = &self.messages[usize::from(m)].fields[usize::from(f)];
        let cx = Cx {
            plan: self,
            deny_unknown,
        };
        FieldSeed { cx, field, out }.deserialize(&mut d).ok()?;
        d.end().ok()?;
        close(out, &marks);
        Some(())
    }

    /// Appends `value` (parsed from a path or query parameter) as the field at `path`: a
    /// repeated field gains an element, a singular one is replaced.
    pub fn write_value(&self, path: &Path, value: &Value, out: &mut Vec<u8>) -> Option<()> {
        let (&(m, f), parents) = path.0.split_last()?;
        let field = &self.messages[usize::from(m)].fields[usize::from(f)];
        if field.map.is_some() {
            return None;
        }
        let marks = self.open_parents(parents, out);
        tag(out, field.number, wire_of(field.kind));
        match (field.kind, value) {
            (K::Double, Value::F64(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (K::Float, Value::F32(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (K::Int32 | K::Sint32 | K::Sfixed32, Value::I32(v)) => int32(out, field.kind, *v),
            (K::Int64 | K::Sint64 | K::Sfixed64, Value::I64(v)) => int64(out, field.kind, *v),
            (K::Uint32, Value::U32(v)) => encode_varint(u64::from(*v), out),
            (K::Fixed32, Value::U32(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (K::Uint64, Value::U64(v)) => encode_varint(*v, out),
            (K::Fixed64, Value::U64(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (K::Bool, Value::Bool(v)) => out.push(u8::from(*v)),
            (K::String, Value::String(s)) => {
                encode_varint(s.len() as u64, out);
                out.extend_from_slice(s.as_bytes());
            }
            (K::Bytes, Value::Bytes(b)) => {
                encode_varint(b.len() as u64, out);
                out.extend_from_slice(b);
            }
            (K::Enum(_), Value::EnumNumber(n)) => int32(out, K::Int32, *n),
            (K::Wkt(w), Value::Message(m)) if m.descriptor() == self.wkts[w] => {
                encode_varint(prost::Message::encoded_len(m) as u64, out);
                prost::Message::encode(m, out).ok()?;
            }
            _ => return None,
        }
        close(out, &marks);
        Some(())
    }

    /// `path` (fields from the plan's root type) resolved in the plan; None when a step is
    /// not a singular message (a value cannot be appended through a list or a map) or a
    /// field is not the plan's.
    pub fn path(&self, path: &[FieldDescriptor]) -> Option<Path> {
        let mut m = 0usize;
        let mut out = Vec::with_capacity(path.len());
        for (i, f) in path.iter().enumerate() {
            let msg = &self.messages[m];
            let at = msg.fields.iter().position(|p| p.number == f.number())?;
            out.push((u16::try_from(m).ok()?, u16::try_from(at).ok()?));
            if i + 1 < path.len() {
                let field = &msg.fields[at];
                match field.kind {
                    K::Message(next) if !field.list && field.map.is_none() => m = next,
                    _ => return None,
                }
            }
        }
        Some(Path(out))
    }

    /// Opens the parent messages of a nested field: their tags and length placeholders.
    fn open_parents(&self, parents: &[(u16, u16)], out: &mut Vec<u8>) -> Vec<usize> {
        parents
            .iter()
            .map(|&(m, f)| {
                let field = &self.messages[usize::from(m)].fields[usize::from(f)];
                tag(out, field.number, 2);
                out.push(0);
                out.len() - 1
            })
            .collect()
    }
}

/// Closes the placeholders `open_parents` left, innermost first.
fn close(out: &mut Vec<u8>, marks: &[usize]) {
    for &at in marks.iter().rev() {
        patch_len(out, at);
    }
}

// ===== writing =====

fn tag(out: &mut Vec<u8>, number: u32, wire: u8) {
    encode_varint(u64::from(number) << 3 | u64::from(wire), out);
}

fn wire_of(kind: K) -> u8 {
    match kind {
        K::Double | K::Fixed64 | K::Sfixed64 => 1,
        K::Float | K::Fixed32 | K::Sfixed32 => 5,
        K::String | K::Bytes | K::Message(_) | K::Wkt(_) => 2,
        _ => 0,
    }
}

/// The one-byte length placeholder at `at` becomes the length of what follows it (moving
/// that when the length needs more than one byte).
fn patch_len(out: &mut Vec<u8>, at: usize) {
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        let mut varint = [0u8; 10];
        let mut rest = &mut varint[..];
        encode_varint(len as u64, &mut rest);
        let n = 10 - rest.len();
        out.splice(at..=at, varint[..n].iter().copied());
    }
}

fn int32(out: &mut Vec<u8>, kind: K, v: i32) {
    match kind {
        K::Sint32 => encode_varint(u64::from(((v << 1) ^ (v >> 31)) as u32), out),
        K::Sfixed32 => out.extend_from_slice(&v.to_le_bytes()),
        // int32 and enums: negative numbers sign-extended to ten bytes.
        _ => encode_varint(i64::from(v) as u64, out),
    }
}

fn int64(out: &mut Vec<u8>, kind: K, v: i64) {
    match kind {
        K::Sint64 => encode_varint(((v << 1) ^ (v >> 63)) as u64, out),
        K::Sfixed64 => out.extend_from_slice(&v.to_le_bytes()),
        _ => encode_varint(v as u64, out),
    }
}

// ===== reading =====

#[derive(Clone, Copy)]
struct Cx<'p> {
    plan: &'p Plan,
    deny_unknown: bool,
}

/// A JSON object as the message `message`; writes its fields (no tag, no length).
struct MessageSeed<'p, 'o> {
    cx: Cx<'p>,
    message: usize,
    out: &'o mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let msg = &self.cx.plan.messages[self.message];
        let mut given = [0u64; MAX_FIELDS / 64];
        let mut oneofs = [0u64; MAX_FIELDS / 64];
        let bit = |set: &mut [u64; MAX_FIELDS / 64], i: usize| {
            let (w, b) = (i / 64, 1u64 << (i % 64));
            let was = set[w] & b != 0;
            set[w] |= b;
            was
        };
        while let Some(key) = map.next_key_seed(KeySeed(&msg.names))? {
            let Some(i) = key else {
                if self.cx.deny_unknown {
                    return Err(decline());
                }
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            // prost-reflect keeps the last of a field given twice (a message replaced, not
            // merged; a list replaced, not extended): the reference path's to answer.
            if bit(&mut given, i) {
                return Err(decline());
            }
            let field = &msg.fields[i];
            let set = map.next_value_seed(FieldSeed {
                cx: self.cx,
                field,
                out: self.out,
            })?;
            if set
                && let Some(o) = field.oneof
                && bit(&mut oneofs, usize::from(o))
            {
                return Err(decline()); // two members of one oneof: an error there
            }
        }
        Ok(())
    }
}

/// An object key: the field's index, None for a name the message does not have.
struct KeySeed<'n>(&'n Names);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        match self.0.get(v) {
            Some(i) => Ok(usize::try_from(i).ok()),
            None if v.starts_with('[') => Err(decline()), // an extension's name
            None => Ok(None),
        }
    }
}

/// One field's JSON value (null: not set), written with its tag(s); whether it was set.
struct FieldSeed<'p, 'f, 'o> {
    cx: Cx<'p>,
    field: &'f Field,
    out: &'o mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_, '_, '_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_, '_, '_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field's value or null")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<bool, E> {
        self.visit_none()
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<bool, E> {
        // null leaves a field unset, except a google.protobuf.Value, which it sets to
        // null_value (field 1, NullValue 0), as prost-reflect does.
        match self.field.kind {
            K::Wkt(w)
                if self.field.map.is_none()
                    && self.cx.plan.wkts[w].full_name() == "google.protobuf.Value" =>
            {
                if self.field.list {
                    return Err(decline()); // a list given as null: left to the reference
                }
                tag(self.out, self.field.number, 2);
                self.out.extend_from_slice(&[2, 0x08, 0x00]);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        let FieldSeed { cx, field, out } = self;
        if let Some((key, value)) = field.map {
            d.deserialize_map(MapSeed {
                cx,
                number: field.number,
                key,
                value,
                out,
            })?;
        } else if field.list {
            d.deserialize_seq(ListSeed { cx, field, out })?;
        } else {
            let start = out.len();
            tag(out, field.number, wire_of(field.kind));
            let set = ValueSeed {
                cx,
                kind: field.kind,
                out,
            }
            .deserialize(d)?;
            // proto3 without presence: a default value is not written.
            if !set && !field.presence {
                out.truncate(start);
            }
        }
        Ok(true)
    }
}

/// A repeated field's JSON array: packed in one length-delimited run, or one tag per element.
struct ListSeed<'p, 'f, 'o> {
    cx: Cx<'p>,
    field: &'f Field,
    out: &'o mut Vec<u8>,
}

impl<'de> Visitor<'de> for ListSeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ListSeed { cx, field, out } = self;
        let packed = field.packed && wire_of(field.kind) != 2;
        let start = out.len();
        if packed {
            tag(out, field.number, 2);
            out.push(0);
        }
        let at = out.len().saturating_sub(1);
        let mut n = 0usize;
        while seq
            .next_element_seed(ElementSeed {
                cx,
                number: (!packed).then_some(field.number),
                kind: field.kind,
                out,
            })?
            .is_some()
        {
            n += 1;
        }
        if packed {
            if n == 0 {
                out.truncate(start);
            } else {
                patch_len(out, at);
            }
        }
        Ok(())
    }
}

/// A list element or a map value (null is an error here, as in prost-reflect): with its tag
/// when `number` is given.
struct ElementSeed<'p, 'o> {
    cx: Cx<'p>,
    number: Option<u32>,
    kind: K,
    out: &'o mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let ElementSeed {
            cx,
            number,
            kind,
            out,
        } = self;
        if let Some(n) = number {
            tag(out, n, wire_of(kind));
        }
        ValueSeed { cx, kind, out }.deserialize(d).map(|_| ())
    }
}

/// A JSON object as a map field: one entry message per key.
struct MapSeed<'p, 'o> {
    cx: Cx<'p>,
    number: u32,
    key: K,
    value: K,
    out: &'o mut Vec<u8>,
}

impl<'de> Visitor<'de> for MapSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let MapSeed {
            cx,
            number,
            key,
            value,
            out,
        } = self;
        loop {
            let start = out.len();
            tag(out, number, 2);
            out.push(0);
            let at = out.len() - 1;
            if map.next_key_seed(MapKeySeed { kind: key, out })?.is_none() {
                out.truncate(start);
                return Ok(());
            }
            // A key twice: the last entry wins on the wire, as in prost-reflect's map.
            map.next_value_seed(ElementSeed {
                cx,
                number: Some(2),
                kind: value,
                out,
            })?;
            patch_len(out, at);
        }
    }
}

/// A map key (always a JSON string) as the entry's field 1.
struct MapKeySeed<'o> {
    kind: K,
    out: &'o mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for MapKeySeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for MapKeySeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        let MapKeySeed { kind, out } = self;
        tag(out, 1, wire_of(kind));
        match kind {
            K::Int32 | K::Sint32 | K::Sfixed32 => int32(out, kind, v.parse().map_err(E::custom)?),
            K::Int64 | K::Sint64 | K::Sfixed64 => int64(out, kind, v.parse().map_err(E::custom)?),
            K::Uint32 => encode_varint(u64::from(v.parse::<u32>().map_err(E::custom)?), out),
            K::Fixed32 => {
                out.extend_from_slice(&v.parse::<u32>().map_err(E::custom)?.to_le_bytes())
            }
            K::Uint64 => encode_varint(v.parse::<u64>().map_err(E::custom)?, out),
            K::Fixed64 => {
                out.extend_from_slice(&v.parse::<u64>().map_err(E::custom)?.to_le_bytes())
            }
            K::Bool => out.push(u8::from(v.parse::<bool>().map_err(E::custom)?)),
            K::String => {
                encode_varint(v.len() as u64, out);
                out.extend_from_slice(v.as_bytes());
            }
            _ => return Err(decline()),
        }
        Ok(())
    }
}

/// One value of `kind` (no tag); whether it differs from the default.
struct ValueSeed<'p, 'o> {
    cx: Cx<'p>,
    kind: K,
    out: &'o mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        let ValueSeed { cx, kind, out } = self;
        match kind {
            K::Double => {
                let v = d.deserialize_any(Double)?;
                out.extend_from_slice(&v.to_le_bytes());
                Ok(v.to_bits() != 0)
            }
            K::Float => {
                let v = d.deserialize_any(Float)?;
                out.extend_from_slice(&v.to_le_bytes());
                Ok(v.to_bits() != 0)
            }
            K::Int32 | K::Sint32 | K::Sfixed32 => {
                let v = d.deserialize_any(Int::<i32>(std::marker::PhantomData))?;
                int32(out, kind, v);
                Ok(v != 0)
            }
            K::Int64 | K::Sint64 | K::Sfixed64 => {
                let v = d.deserialize_any(Int::<i64>(std::marker::PhantomData))?;
                int64(out, kind, v);
                Ok(v != 0)
            }
            K::Uint32 | K::Fixed32 => {
                let v = d.deserialize_any(Int::<u32>(std::marker::PhantomData))?;
                match kind {
                    K::Fixed32 => out.extend_from_slice(&v.to_le_bytes()),
                    _ => encode_varint(u64::from(v), out),
                }
                Ok(v != 0)
            }
            K::Uint64 | K::Fixed64 => {
                let v = d.deserialize_any(Int::<u64>(std::marker::PhantomData))?;
                match kind {
                    K::Fixed64 => out.extend_from_slice(&v.to_le_bytes()),
                    _ => encode_varint(v, out),
                }
                Ok(v != 0)
            }
            K::Bool => {
                let v = d.deserialize_any(Bool)?;
                out.push(u8::from(v));
                Ok(v)
            }
            K::String => d.deserialize_str(Text(out)),
            K::Bytes => d.deserialize_str(Base64(out)),
            K::Enum(e) => {
                let v = d.deserialize_any(Enum(&cx.plan.enums[e]))?;
                int32(out, K::Int32, v);
                Ok(v != 0)
            }
            K::Wkt(w) => {
                let opts =
                    prost_reflect::DeserializeOptions::new().deny_unknown_fields(cx.deny_unknown);
                let msg =
                    DynamicMessage::deserialize_with_options(cx.plan.wkts[w].clone(), d, &opts)?;
                out.push(0);
                let at = out.len() - 1;
                prost::Message::encode(&msg, out).map_err(|_| decline())?;
                patch_len(out, at);
                Ok(true)
            }
            K::Message(m) => {
                out.push(0);
                let at = out.len() - 1;
                MessageSeed {
                    cx,
                    message: m,
                    out,
                }
                .deserialize(d)?;
                patch_len(out, at);
                Ok(true)
            }
        }
    }
}

// The scalar readers accept what prost-reflect's do: numbers or decimal strings for integers
// (a float only when it is integral and in range), numbers or strings (with "NaN",
// "Infinity", "-Infinity") for floats, only true/false for bools.

struct Double;

impl Visitor<'_> for Double {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a 64-bit floating point value")
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<f64, E> {
        match v.parse::<f64>() {
            Ok(f) => Ok(f),
            Err(_) if v == "Infinity" => Ok(f64::INFINITY),
            Err(_) if v == "-Infinity" => Ok(f64::NEG_INFINITY),
            Err(_) if v == "NaN" => Ok(f64::NAN),
            Err(e) => Err(E::custom(e)),
        }
    }
}

struct Float;

impl Visitor<'_> for Float {
    type Value = f32;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a 32-bit floating point value")
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f32, E> {
        if v < f64::from(f32::MIN) || v > f64::from(f32::MAX) {
            Err(E::custom("float value out of range"))
        } else {
            Ok(v as f32)
        }
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f32, E> {
        Ok(v as f32)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f32, E> {
        Ok(v as f32)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<f32, E> {
        match v.parse::<f32>() {
            Ok(f) => Ok(f),
            Err(_) if v == "Infinity" => Ok(f32::INFINITY),
            Err(_) if v == "-Infinity" => Ok(f32::NEG_INFINITY),
            Err(_) if v == "NaN" => Ok(f32::NAN),
            Err(e) => Err(E::custom(e)),
        }
    }
}

/// An integer type the JSON mapping reads from numbers and strings.
trait Integer: Sized + std::str::FromStr + TryFrom<i64> + TryFrom<u64> {
    const MIN: f64;
    const MAX: f64;
    fn from_f64(v: f64) -> Self;
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl Integer for $t {
            const MIN: f64 = <$t>::MIN as f64;
            const MAX: f64 = <$t>::MAX as f64;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
        }
    )*};
}
integer!(i32, i64, u32, u64);

struct Int<T>(std::marker::PhantomData<T>);

impl<T: Integer> Visitor<'_> for Int<T>
where
    <T as std::str::FromStr>::Err: fmt::Display,
{
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer or decimal string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom("integer out of range"))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<T, E> {
        if v.fract() != 0.0 {
            return Err(E::custom("expected integer value"));
        }
        if v < T::MIN || v > T::MAX {
            return Err(E::custom("float value out of range"));
        }
        Ok(T::from_f64(v))
    }
}

struct Bool;

impl Visitor<'_> for Bool {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a boolean")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
}

/// An enum by name (a name it does not know is declined: prost-reflect drops or refuses it
/// by option) or by number.
struct Enum<'e>(&'e Names);

impl Visitor<'_> for Enum<'_> {
    type Value = i32;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or integer")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<i32, E> {
        self.0.get(v).ok_or_else(decline)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i32, E> {
        i32::try_from(v).map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i32, E> {
        i32::try_from(v).map_err(E::custom)
    }
}

/// A string, length-prefixed; whether it is not empty.
struct Text<'o>(&'o mut Vec<u8>);

impl Visitor<'_> for Text<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
        encode_varint(v.len() as u64, self.0);
        self.0.extend_from_slice(v.as_bytes());
        Ok(!v.is_empty())
    }
}

/// Bytes in base64 (standard or URL-safe alphabet, padded or not), length-prefixed.
struct Base64<'o>(&'o mut Vec<u8>);

impl Visitor<'_> for Base64<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a base64-encoded string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
        use base64::Engine;
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent);
        const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CONFIG);
        const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CONFIG);
        let out = self.0;
        out.push(0);
        let at = out.len() - 1;
        if let Err(e) = STANDARD.decode_vec(v, out) {
            match e {
                base64::DecodeError::InvalidByte(_, b'-' | b'_') => {
                    out.truncate(at + 1);
                    URL_SAFE.decode_vec(v, out).map_err(E::custom)?;
                }
                e => return Err(E::custom(e)),
            }
        }
        let set = out.len() > at + 1;
        patch_len(out, at);
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
    use rand::{Rng, SeedableRng};

    use crate::proto::wire_to_json::tests::message;

    const EVERY_KIND: &str = r#"
syntax = "proto3";
package j;
import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/any.proto";
enum Color { COLOR_UNSPECIFIED = 0; RED = 1; GREEN = 2; }
message Every {
  double d = 1; float f = 2; int32 i32 = 3; int64 i64 = 4; uint32 u32 = 5; uint64 u64 = 6;
  sint32 s32 = 7; sint64 s64 = 8; fixed32 fx32 = 9; fixed64 fx64 = 10; sfixed32 sf32 = 11;
  sfixed64 sf64 = 12; bool b = 13; string s = 14; bytes by = 15; Color color = 16;
  Every child = 17; repeated int32 ri = 18; repeated string rs = 19; repeated Every rm = 20;
  repeated double rd = 21; map<string, int64> ms = 22; map<int32, Every> mi = 23;
  map<bool, string> mb = 24; optional int32 oi = 25;
  oneof pick { string os = 26; Color oc = 27; Every om = 28; }
  repeated Color rc = 30; map<uint64, bytes> mu = 31; repeated sint64 rs64 = 32;
  repeated fixed32 rf32 = 33; map<sint32, Color> msc = 34;
  int32 snake_case_name = 1000; string custom = 1001 [json_name = "renamed"];
  google.protobuf.Timestamp at = 40; google.protobuf.Duration took = 41;
  google.protobuf.Int64Value w64 = 42; google.protobuf.BoolValue wb = 43;
  google.protobuf.StringValue ws = 44; google.protobuf.Struct st = 45;
  google.protobuf.Value v = 46; repeated google.protobuf.Value rv = 47;
  map<string, google.protobuf.Value> mv = 48; google.protobuf.ListValue lv = 49;
}
message Fixed { google.protobuf.FieldMask mask = 1; google.protobuf.Any any = 2; Every e = 3; }
"#;

    fn pool() -> DescriptorPool {
        crate::proto::wire_to_json::tests::compile_one("jsonwire", EVERY_KIND)
    }

    /// A message as comparable JSON: every field, defaults too, maps as objects (so order
    /// does not matter), NaN as a string (so it equals itself).
    fn canonical(msg: &DynamicMessage) -> serde_json::Value {
        msg.serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().skip_default_fields(false),
        )
        .unwrap()
    }

    /// The contract: what the plan writes decodes to what prost-reflect builds from the same
    /// JSON, and what prost-reflect refuses the plan never writes. Whether it wrote.
    fn check(plan: &Plan, desc: &MessageDescriptor, json: &[u8], deny: bool) -> bool {
        let reference = {
            let mut d = serde_json::Deserializer::from_slice(json);
            DynamicMessage::deserialize_with_options(
                desc.clone(),
                &mut d,
                &DeserializeOptions::new().deny_unknown_fields(deny),
            )
            .and_then(|m| d.end().map(|()| m))
        };
        let mut out = Vec::new();
        match (plan.write(json, deny, &mut out), reference) {
            (Some(()), Ok(want)) => {
                let got = DynamicMessage::decode(desc.clone(), &out[..])
                    .unwrap_or_else(|e| panic!("undecodable ({e}) from {}", show(json)));
                assert_eq!(canonical(&got), canonical(&want), "from {}", show(json));
                true
            }
            (Some(()), Err(e)) => {
                panic!("written, but the reference refuses ({e}): {}", show(json))
            }
            (None, _) => false,
        }
    }

    fn show(json: &[u8]) -> String {
        String::from_utf8_lossy(json).into_owned()
    }

    /// A JSON rendering a client could send: numbers as strings or floats, keys by either
    /// name, nulls, unknown keys.
    fn disguise(v: &mut serde_json::Value, rng: &mut rand::rngs::StdRng) {
        use serde_json::Value as J;
        match v {
            J::Number(n) if rng.random_range(0..4) == 0 => *v = J::String(n.to_string()),
            J::Number(n) if rng.random_range(0..4) == 0 => {
                if let Some(f) = n.as_i64().map(|i| i as f64) {
                    *v = serde_json::json!(f);
                }
            }
            J::Object(map) => {
                for (_, inner) in map.iter_mut() {
                    disguise(inner, rng);
                }
                if rng.random_range(0..8) == 0 {
                    map.insert("unknownKey".into(), serde_json::json!({"x": [1, "y"]}));
                }
                if rng.random_range(0..8) == 0 {
                    map.insert("s".into(), J::Null);
                }
            }
            J::Array(items) => items.iter_mut().for_each(|i| disguise(i, rng)),
            _ => {}
        }
    }

    #[test]
    fn random_json_writes_what_prost_reflect_builds() {
        let pool = pool();
        let every = pool.get_message_by_name("j.Every").unwrap();
        let plan = Plan::new(&every).expect("a plan for this type");
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x77_69_72_65);
        let mut written = 0;
        for round in 0..1000 {
            let msg = message(&every, &mut rng, 0);
            let opts = SerializeOptions::new()
                .use_proto_field_name(round % 2 == 1)
                .skip_default_fields(round % 3 != 0)
                .use_enum_numbers(round % 5 == 0);
            // prost-reflect cannot write some of what it can hold (a NaN in a Value): skipped.
            let Ok(json) = msg.serialize_with_options(serde_json::value::Serializer, &opts) else {
                continue;
            };
            written += usize::from(check(&plan, &every, json.to_string().as_bytes(), false));
            let mut disguised = json.clone();
            disguise(&mut disguised, &mut rng);
            let text = disguised.to_string();
            check(&plan, &every, text.as_bytes(), round % 2 == 0);
            // And broken: a byte dropped, or one changed.
            let mut broken = text.into_bytes();
            let at = rng.random_range(0..broken.len());
            if round % 2 == 0 {
                broken.remove(at);
            } else {
                broken[at] = b"{}[]\",:0a-. n"[rng.random_range(0..13)];
            }
            check(&plan, &every, &broken, false);
        }
        // Not everything left to the reference path: it is the fast path being tested.
        assert!(written > 950, "only {written} of 1000 written by the plan");
        // gwbench's own request types, as a client fills them.
        let own = crate::proto::descriptor_pool();
        for name in [
            "gwbench.v1.CreateUserRequest",
            "gwbench.v1.ListOrdersRequest",
            "gwbench.v1.SearchProductsRequest",
        ] {
            let desc = own.get_message_by_name(name).unwrap();
            let plan = Plan::new(&desc).unwrap();
            for _ in 0..100 {
                let json = serde_json::to_string(&message(&desc, &mut rng, 0)).unwrap();
                assert!(check(&plan, &desc, json.as_bytes(), true), "{json}");
            }
        }
    }

    #[test]
    fn what_prost_reflect_would_treat_otherwise_is_left_to_it() {
        let pool = pool();
        let every = pool.get_message_by_name("j.Every").unwrap();
        let plan = Plan::new(&every).unwrap();
        let declined = |json: &str, deny: bool| {
            assert!(
                plan.write(json.as_bytes(), deny, &mut Vec::new()).is_none(),
                "{json}"
            );
            check(&plan, &every, json.as_bytes(), deny);
        };
        // A field twice: the reference keeps the last (a message replaced, not merged).
        declined(r#"{"child": {"i32": 1}, "child": {"s": "x"}}"#, false);
        declined(r#"{"i32": 1, "i32": 2}"#, false);
        // Two members of a oneof: an error there.
        declined(r#"{"os": "a", "oc": "RED"}"#, false);
        // An enum name it does not know: dropped or refused by option.
        declined(r#"{"color": "PURPLE"}"#, false);
        declined(r#"{"color": "PURPLE"}"#, true);
        // An unknown key when unknown keys are refused; an extension's name.
        declined(r#"{"nope": 1}"#, true);
        declined(r#"{"[j.ext]": 1}"#, false);
        // Accepted on both: the json_name option, proto names, numbers as strings, null.
        for ok in [
            r#"{"renamed": "x", "snake_case_name": 3, "i64": "-9", "d": "NaN", "s": null}"#,
            r#"{"snakeCaseName": 3.0, "u64": 18446744073709551615, "ri": [], "mb": {"true": "t"}}"#,
            r#"{"by": "-_8=", "rf32": [1, "2"], "msc": {"-3": "GREEN"}, "oi": 0, "om": {}}"#,
        ] {
            assert!(check(&plan, &every, ok.as_bytes(), true), "{ok}");
        }
        // Well-known types, read by prost-reflect inside the plan; null sets a Value.
        let fixed = pool.get_message_by_name("j.Fixed").unwrap();
        let fixed_plan = Plan::new(&fixed).unwrap();
        for ok in [
            r#"{"mask": "a.b,cD", "any": {"@type": "type.googleapis.com/j.Every", "i32": 3}}"#,
            r#"{"e": {"v": null, "at": "2026-12-02T10:00:00.5Z", "took": "1.5s", "w64": "7"}}"#,
            r#"{"e": {"st": {"a": [1, null, {"b": "c"}]}, "mv": {"k": null}, "rv": [null, 2]}}"#,
            r#"{"e": {"wb": false, "ws": null, "lv": []}}"#,
        ] {
            assert!(check(&fixed_plan, &fixed, ok.as_bytes(), true), "{ok}");
        }
        for bad in [
            r#"{"e": {"at": "2026-12-02 10:00:00Z"}}"#,
            r#"{"e": {"took": "1.5"}}"#,
            r#"{"any": {"@type": "type.googleapis.com/no.Such"}}"#,
        ] {
            assert!(!check(&fixed_plan, &fixed, bad.as_bytes(), true), "{bad}");
        }
        declined(r#"{"rv": null}"#, false);
        // A request type that is itself a well-known type is the reference path's.
        let own = crate::proto::descriptor_pool();
        let empty = own
            .get_message_by_name("google.protobuf.Timestamp")
            .unwrap();
        assert!(Plan::new(&empty).is_none());
        assert!(Plan::new(&own.get_message_by_name("gwbench.v1.User").unwrap()).is_some());
    }

    #[test]
    fn long_values_get_multi_byte_lengths() {
        let pool = pool();
        let every = pool.get_message_by_name("j.Every").unwrap();
        let plan = Plan::new(&every).unwrap();
        let long = "x".repeat(20_000);
        let json = format!(
            r#"{{"child": {{"s": "{long}", "child": {{"rs": ["{long}"]}}}}, "ri": [{}]}}"#,
            vec!["300"; 100].join(",")
        );
        assert!(check(&plan, &every, json.as_bytes(), true));
    }
}
