//! Schema conformance: every typed command and event of this crate is compared
//! with the live `query-qmp-schema` of the installed QEMU. Member names, JSON
//! types and optionality must agree, so a rename or a type change on either side
//! fails here instead of at run time.
//!
//! Our side is read off the serde `Deserialize` impls with a tracing
//! deserializer (which fields, with which types, which are `Option`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use flotilla_qmp::commands::{self, Command};
use flotilla_qmp::events::{self, EventData};
use flotilla_qmp::RunState;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};
use serde_json::Value;

use crate::util::{bounded, Qemu};

/// Members of our types that a newer QEMU removed, and the version that removed them:
/// ours keep them as `Option`s for the older QEMUs that still send them (the crate
/// works with QEMU 7.2 and 10.0).
const REMOVED_MEMBERS: &[(&str, &str)] = &[("query-status(return).singlestep", "8.1")];

/// The shape of one of our types, as serde sees it.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Unknown,
    Bool,
    Int,
    Float,
    Str,
    Any,
    Seq(Box<Shape>),
    Opt(Box<Shape>),
    Struct(Vec<(String, Shape)>),
    Enum(Vec<String>),
}

fn trace<T: DeserializeOwned>() -> Shape {
    let mut shape = Shape::Unknown;
    if let Err(e) = T::deserialize(Tracer { out: &mut shape }) {
        panic!("cannot trace {}: {e}", std::any::type_name::<T>());
    }
    shape
}

#[derive(Debug)]
struct TraceError(String);

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        TraceError(msg.to_string())
    }
}

type Str<'a> = de::value::StrDeserializer<'a, TraceError>;

struct Tracer<'a> {
    out: &'a mut Shape,
}

macro_rules! leaf {
    ($($method:ident => $shape:expr, $visit:ident($($value:expr)?);)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
            *self.out = $shape;
            visitor.$visit($($value)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = TraceError;

    leaf! {
        deserialize_any => Shape::Any, visit_unit();
        deserialize_ignored_any => Shape::Any, visit_unit();
        deserialize_bool => Shape::Bool, visit_bool(false);
        deserialize_i8 => Shape::Int, visit_i64(0);
        deserialize_i16 => Shape::Int, visit_i64(0);
        deserialize_i32 => Shape::Int, visit_i64(0);
        deserialize_i64 => Shape::Int, visit_i64(0);
        deserialize_u8 => Shape::Int, visit_u64(0);
        deserialize_u16 => Shape::Int, visit_u64(0);
        deserialize_u32 => Shape::Int, visit_u64(0);
        deserialize_u64 => Shape::Int, visit_u64(0);
        deserialize_f32 => Shape::Float, visit_f64(0.0);
        deserialize_f64 => Shape::Float, visit_f64(0.0);
        deserialize_char => Shape::Str, visit_char('x');
        deserialize_str => Shape::Str, visit_str("");
        deserialize_string => Shape::Str, visit_str("");
        deserialize_identifier => Shape::Str, visit_str("");
        deserialize_bytes => Shape::Any, visit_bytes(&[]);
        deserialize_byte_buf => Shape::Any, visit_bytes(&[]);
        deserialize_unit => Shape::Struct(Vec::new()), visit_unit();
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let mut inner = Shape::Unknown;
        let value = visitor.visit_some(Tracer { out: &mut inner })?;
        *self.out = Shape::Opt(Box::new(inner));
        Ok(value)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let mut inner = Shape::Unknown;
        let value = visitor.visit_seq(OneElement {
            out: &mut inner,
            done: false,
        })?;
        *self.out = Shape::Seq(Box::new(inner));
        Ok(value)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, TraceError> {
        Err(TraceError("tuples are not QMP".into()))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, TraceError> {
        Err(TraceError("tuple structs are not QMP".into()))
    }

    fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(TraceError(
            "free-form maps (serde flatten) cannot be traced".into(),
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut shapes = vec![Shape::Unknown; fields.len()];
        let value = visitor.visit_map(Fields {
            fields,
            shapes: &mut shapes,
            next: 0,
        })?;
        *self.out = Shape::Struct(fields.iter().map(|f| (*f).to_owned()).zip(shapes).collect());
        Ok(value)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        *self.out = Shape::Enum(variants.iter().map(|v| (*v).to_owned()).collect());
        let first = variants
            .first()
            .ok_or_else(|| TraceError("empty enum".into()))?;
        visitor.visit_enum(UnitVariant(first))
    }
}

struct OneElement<'a> {
    out: &'a mut Shape,
    done: bool,
}

impl<'de> de::SeqAccess<'de> for OneElement<'_> {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        seed.deserialize(Tracer {
            out: &mut *self.out,
        })
        .map(Some)
    }
}

struct Fields<'a> {
    fields: &'static [&'static str],
    shapes: &'a mut [Shape],
    next: usize,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        match self.fields.get(self.next) {
            Some(name) => seed.deserialize(Str::new(name)).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        let i = self.next;
        self.next += 1;
        seed.deserialize(Tracer {
            out: &mut self.shapes[i],
        })
    }
}

struct UnitVariant(&'static str);

impl<'de> de::EnumAccess<'de> for UnitVariant {
    type Error = TraceError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self), TraceError> {
        Ok((seed.deserialize(Str::new(self.0))?, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value, TraceError> {
        Err(TraceError("only unit enum variants are traced".into()))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, TraceError> {
        Err(TraceError("only unit enum variants are traced".into()))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, TraceError> {
        Err(TraceError("only unit enum variants are traced".into()))
    }
}

/// QEMU's introspection data, by (masked) name.
struct Schema(HashMap<String, Value>);

#[derive(Clone, Copy, PartialEq)]
enum Role {
    /// We send it: every required member must be there, and ours must not be
    /// optional where QEMU requires it.
    Arguments,
    /// We receive it: ours must be optional wherever QEMU's is.
    Reply,
}

impl Schema {
    fn entry(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// Members of an object type: the base and every variant's.
    fn members(&self, object: &Value) -> (Vec<Value>, Vec<Value>) {
        let base = object["members"].as_array().cloned().unwrap_or_default();
        let mut variant = Vec::new();
        for v in object["variants"].as_array().into_iter().flatten() {
            if let Some(t) = v["type"].as_str().and_then(|t| self.entry(t)) {
                variant.extend(t["members"].as_array().cloned().unwrap_or_default());
            }
        }
        (base, variant)
    }

    fn enum_values(entry: &Value) -> Vec<String> {
        let from_values = entry["values"].as_array().into_iter().flatten();
        let from_members = entry["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| &m["name"]);
        let mut values: Vec<String> = from_values
            .chain(from_members)
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        values.sort();
        values.dedup();
        values
    }

    /// Compares `ours` with QEMU's type `theirs`; problems go to `out`.
    fn check(&self, ours: &Shape, theirs: &str, path: &str, role: Role, out: &mut Vec<String>) {
        let Some(entry) = self.entry(theirs) else {
            out.push(format!("{path}: type {theirs} missing from the schema"));
            return;
        };
        let meta = entry["meta-type"].as_str().unwrap_or("");
        let ours = match ours {
            Shape::Opt(inner) => inner,
            other => other,
        };
        match (meta, ours) {
            (_, Shape::Any) | ("alternate", _) => {}
            ("builtin", _) => {
                let json = entry["json-type"].as_str().unwrap_or("");
                let ok = matches!(
                    (json, ours),
                    ("string", Shape::Str)
                        | ("int", Shape::Int)
                        | ("number", Shape::Float | Shape::Int)
                        | ("boolean", Shape::Bool)
                        | ("value", _)
                );
                if !ok {
                    out.push(format!("{path}: ours is {ours:?}, qemu's is {json}"));
                }
            }
            ("enum", Shape::Str) => {}
            ("enum", Shape::Enum(values)) => {
                let theirs = Self::enum_values(entry);
                for v in values {
                    if !theirs.contains(v) {
                        out.push(format!(
                            "{path}: enum value `{v}` unknown to qemu ({theirs:?})"
                        ));
                    }
                }
            }
            ("array", Shape::Seq(inner)) => {
                let element = entry["element-type"].as_str().unwrap_or("");
                self.check(inner, element, &format!("{path}[]"), role, out);
            }
            ("object", Shape::Struct(fields)) => self.check_object(fields, entry, path, role, out),
            (meta, ours) => out.push(format!("{path}: ours is {ours:?}, qemu's is a {meta}")),
        }
    }

    fn check_object(
        &self,
        fields: &[(String, Shape)],
        entry: &Value,
        path: &str,
        role: Role,
        out: &mut Vec<String>,
    ) {
        let (base, variant) = self.members(entry);
        for (name, shape) in fields {
            let member_path = format!("{path}.{name}");
            let Some(member) = base
                .iter()
                .chain(&variant)
                .find(|m| m["name"] == name.as_str())
            else {
                // A member a newer QEMU removed stays in ours, optional, for the older
                // ones that send it.
                let removed = REMOVED_MEMBERS.iter().any(|(p, _)| *p == member_path);
                if !(removed && matches!(shape, Shape::Opt(_))) {
                    out.push(format!("{member_path}: no such member in qemu's schema"));
                }
                continue;
            };
            let their_optional = member.get("default").is_some();
            let our_optional = matches!(shape, Shape::Opt(_));
            match role {
                Role::Reply if their_optional && !our_optional => {
                    out.push(format!("{member_path}: optional in qemu, required in ours"))
                }
                Role::Arguments if !their_optional && our_optional => {
                    out.push(format!("{member_path}: required by qemu, optional in ours"))
                }
                _ => {}
            }
            let ty = member["type"].as_str().unwrap_or("");
            self.check(shape, ty, &member_path, role, out);
        }
        if role == Role::Arguments {
            for member in &base {
                let name = member["name"].as_str().unwrap_or("");
                if member.get("default").is_none() && !fields.iter().any(|(f, _)| f == name) {
                    out.push(format!("{path}.{name}: required by qemu, missing in ours"));
                }
            }
        }
    }

    fn check_command<C: Command + DeserializeOwned>(&self, out: &mut Vec<String>) {
        self.check_command_shapes(C::NAME, &trace::<C>(), &trace::<C::Output>(), out);
    }

    fn check_command_shapes(&self, name: &str, args: &Shape, ret: &Shape, out: &mut Vec<String>) {
        let Some(entry) = self.entry(name).filter(|e| e["meta-type"] == "command") else {
            out.push(format!("command `{name}` missing from qemu's schema"));
            return;
        };
        let arg_type = entry["arg-type"].as_str().unwrap_or("");
        let ret_type = entry["ret-type"].as_str().unwrap_or("");
        self.check(
            args,
            arg_type,
            &format!("{name}(arguments)"),
            Role::Arguments,
            out,
        );
        self.check(ret, ret_type, &format!("{name}(return)"), Role::Reply, out);
    }

    /// For commands whose extra members are flattened: the named ones must exist.
    fn check_named_arguments(&self, name: &str, members: &[&str], out: &mut Vec<String>) {
        let Some(entry) = self.entry(name).filter(|e| e["meta-type"] == "command") else {
            out.push(format!("command `{name}` missing from qemu's schema"));
            return;
        };
        let arg_type = entry["arg-type"].as_str().and_then(|t| self.entry(t));
        let (base, _) = self.members(arg_type.unwrap_or(&Value::Null));
        for m in members {
            if !base.iter().any(|b| b["name"] == *m) {
                out.push(format!(
                    "{name}(arguments).{m}: no such member in qemu's schema"
                ));
            }
        }
    }

    fn check_event<E: EventData>(&self, out: &mut Vec<String>) {
        let Some(entry) = self.entry(E::NAME).filter(|e| e["meta-type"] == "event") else {
            out.push(format!("event `{}` missing from qemu's schema", E::NAME));
            return;
        };
        let arg_type = entry["arg-type"].as_str().unwrap_or("");
        self.check(
            &trace::<E>(),
            arg_type,
            &format!("event {}", E::NAME),
            Role::Reply,
            out,
        );
    }
}

/// The QEMUs to compare with: `qemu-system-x86_64` from `PATH`, and the second QEMU
/// version Flotilla's `scripts/setup` unpacks (`<cache>/qemu/other-amd64`: 10.0 beside
/// bookworm's 7.2, 7.2 beside 10.0), when it is there.
fn qemus() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(crate::bare_qemu::QEMU)];
    let cache = std::env::var_os("FLOTILLA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("flotilla")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/flotilla")));
    if let Some(cache) = cache {
        let other = cache.join("qemu/other-amd64/qemu-system-x86_64");
        if other.is_file() {
            out.push(other);
        }
    }
    out
}

async fn live_schema(program: &Path) -> Schema {
    let qemu = Qemu::start_program(program, &[]);
    let qmp = qemu.connect().await;
    let entries = bounded(
        "query-qmp-schema",
        qmp.execute(&commands::QueryQmpSchema {}),
    )
    .await
    .expect("query-qmp-schema");
    let _ = qmp.quit().await;
    let map = entries
        .into_iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e)))
        .collect();
    Schema(map)
}

/// The values of QEMU's `RunState` (`query-status`'s `status`).
fn run_states(schema: &Schema) -> Vec<String> {
    let status = schema.entry("query-status").expect("query-status");
    let ret = schema
        .entry(status["ret-type"].as_str().unwrap_or(""))
        .expect("StatusInfo");
    let (members, _) = schema.members(ret);
    let member = members
        .iter()
        .find(|m| m["name"] == "status")
        .expect("status member");
    Schema::enum_values(
        schema
            .entry(member["type"].as_str().unwrap_or(""))
            .expect("RunState"),
    )
}

fn problems_with_ours(schema: &Schema) -> Vec<String> {
    use commands::*;
    let mut out = Vec::new();
    schema.check_command::<QueryStatus>(&mut out);
    schema.check_command::<QueryVersion>(&mut out);
    schema.check_command::<Stop>(&mut out);
    schema.check_command::<Cont>(&mut out);
    schema.check_command::<SystemPowerdown>(&mut out);
    schema.check_command::<SystemReset>(&mut out);
    schema.check_command::<Quit>(&mut out);
    schema.check_command::<QueryCommands>(&mut out);
    schema.check_command::<QueryName>(&mut out);
    schema.check_command::<QueryBlock>(&mut out);
    schema.check_command::<QueryChardev>(&mut out);
    schema.check_command::<QueryMigrate>(&mut out);
    schema.check_command::<QueryCpusFast>(&mut out);
    schema.check_command::<QueryQmpSchema>(&mut out);
    schema.check_command::<Screendump>(&mut out);
    schema.check_command::<SendKey>(&mut out);
    schema.check_command::<InputSendEvent>(&mut out);
    schema.check_command::<HumanMonitorCommand>(&mut out);
    schema.check_command::<SetLink>(&mut out);
    schema.check_command::<NetdevDel>(&mut out);
    schema.check_command::<DeviceDel>(&mut out);
    schema.check_command::<ObjectDel>(&mut out);
    schema.check_command::<Migrate>(&mut out);
    schema.check_named_arguments(NetdevAdd::NAME, &["id", "type"], &mut out);
    schema.check_named_arguments(DeviceAdd::NAME, &["driver", "bus", "id"], &mut out);
    schema.check_named_arguments(ObjectAdd::NAME, &["qom-type", "id"], &mut out);

    schema.check_event::<events::Shutdown>(&mut out);
    schema.check_event::<events::Powerdown>(&mut out);
    schema.check_event::<events::Reset>(&mut out);
    schema.check_event::<events::Stop>(&mut out);
    schema.check_event::<events::Resume>(&mut out);
    schema.check_event::<events::GuestPanicked>(&mut out);
    schema.check_event::<events::BlockIoError>(&mut out);
    schema.check_event::<events::DeviceDeleted>(&mut out);
    schema.check_event::<events::NicRxFilterChanged>(&mut out);
    schema.check_event::<events::Migration>(&mut out);
    out
}

#[tokio::test]
async fn typed_commands_and_events_match_qemus_schema() {
    let mut problems = Vec::new();
    let mut schemas = Vec::new();
    for qemu in qemus() {
        let schema = live_schema(&qemu).await;
        problems.extend(
            problems_with_ours(&schema)
                .into_iter()
                .map(|p| format!("{}: {p}", qemu.display())),
        );
        schemas.push((qemu, schema));
    }
    assert!(
        problems.is_empty(),
        "drift from qemu's schema:\n  {}",
        problems.join("\n  ")
    );

    // RunState has a fallback, but a state a QEMU knows and we do not is drift, and so
    // is one of ours that no QEMU knows.
    let mut known: Vec<String> = RunState::KNOWN.iter().map(|s| (*s).to_owned()).collect();
    known.sort();
    let mut anyone_knows = std::collections::BTreeSet::new();
    for (qemu, schema) in &schemas {
        let states = run_states(schema);
        let unknown: Vec<&String> = states.iter().filter(|s| !known.contains(s)).collect();
        assert!(
            unknown.is_empty(),
            "{}: RunState lacks {unknown:?}",
            qemu.display()
        );
        anyone_knows.extend(states);
    }
    let nobodys: Vec<&String> = known
        .iter()
        .filter(|s| !anyone_knows.contains(*s))
        .collect();
    assert!(
        nobodys.is_empty(),
        "RunState has {nobodys:?}, which no QEMU knows"
    );
    let schema = &schemas[0].1;

    // The checker itself catches drift: a wrong type, a renamed member, a
    // member QEMU may omit but ours requires, an unknown command and enum value.
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct DriftedStatus {
        running: String,
        state: String,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct DriftedName {
        name: String,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    #[serde(rename_all = "lowercase")]
    enum DriftedFormat {
        Png,
        Gif,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct DriftedScreendump {
        format: DriftedFormat,
    }
    let mut out = Vec::new();
    let empty = Shape::Struct(Vec::new());
    schema.check_command_shapes("query-status", &empty, &trace::<DriftedStatus>(), &mut out);
    schema.check_command_shapes("query-name", &empty, &trace::<DriftedName>(), &mut out);
    schema.check_command_shapes(
        "screendump",
        &trace::<DriftedScreendump>(),
        &empty,
        &mut out,
    );
    schema.check_command_shapes("no-such-command", &empty, &empty, &mut out);
    let text = out.join("\n");
    for want in [
        "query-status(return).running: ours is Str, qemu's is boolean",
        "query-status(return).state: no such member",
        "query-name(return).name: optional in qemu, required in ours",
        "enum value `gif` unknown",
        "screendump(arguments).filename: required by qemu, missing in ours",
        "command `no-such-command` missing",
    ] {
        assert!(text.contains(want), "checker missed `{want}` in:\n{text}");
    }
}
