//! SCALE shapes: what a call's arguments or a storage entry's keys and value encode as, with
//! type names, field names and newtype wrappers set aside. Two runtimes whose shapes are
//! equal encode and decode our calls and reads alike, whatever their type hashes say (a
//! `Vec<PerU16>` is a `Vec<u16>` on the wire); a shape that differs (u16 -> u32, a compact
//! that is no longer one, a key hashed another way) is a real incompatibility, named.

use std::fmt;

use scale_info::{PortableRegistry, TypeDef, TypeDefPrimitive};
use subxt::Metadata;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Primitive(&'static str),
    Compact(Box<Shape>),
    Sequence(Box<Shape>),
    Array(u32, Box<Shape>),
    /// A tuple or struct of other than one field (one field is that field's shape).
    Fields(Vec<Shape>),
    /// An enum: each variant's index and field shapes.
    Variants(Vec<(u8, Vec<Shape>)>),
    BitSequence,
    /// A type met again inside itself.
    Recursive,
    /// A type id the registry lacks.
    Missing(u32),
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Primitive(p) => write!(f, "{p}"),
            Shape::Compact(s) => write!(f, "Compact<{s}>"),
            Shape::Sequence(s) => write!(f, "Vec<{s}>"),
            Shape::Array(n, s) => write!(f, "[{s}; {n}]"),
            Shape::Fields(fields) => {
                let inner: Vec<String> = fields.iter().map(ToString::to_string).collect();
                write!(f, "({})", inner.join(", "))
            }
            Shape::Variants(v) => write!(f, "enum of {} variants", v.len()),
            Shape::BitSequence => write!(f, "BitVec"),
            Shape::Recursive => write!(f, "(recursive)"),
            Shape::Missing(id) => write!(f, "(missing type {id})"),
        }
    }
}

/// The shape of type `id` in `types`.
pub fn of(types: &PortableRegistry, id: u32) -> Shape {
    shape_in(types, id, &mut Vec::new())
}

fn shape_in(types: &PortableRegistry, id: u32, stack: &mut Vec<u32>) -> Shape {
    if stack.contains(&id) {
        return Shape::Recursive;
    }
    let Some(ty) = types.resolve(id) else {
        return Shape::Missing(id);
    };
    stack.push(id);
    let shape = match &ty.type_def {
        TypeDef::Composite(c) => fields(c.fields.iter().map(|f| f.ty.id), types, stack),
        TypeDef::Tuple(t) => fields(t.fields.iter().map(|f| f.id), types, stack),
        TypeDef::Variant(v) => Shape::Variants(
            v.variants
                .iter()
                .map(|var| {
                    let inner = var.fields.iter().map(|f| shape_in(types, f.ty.id, stack));
                    (var.index, inner.collect())
                })
                .collect(),
        ),
        TypeDef::Sequence(s) => Shape::Sequence(Box::new(shape_in(types, s.type_param.id, stack))),
        TypeDef::Array(a) => Shape::Array(a.len, Box::new(shape_in(types, a.type_param.id, stack))),
        TypeDef::Primitive(p) => Shape::Primitive(primitive(p)),
        TypeDef::Compact(c) => Shape::Compact(Box::new(shape_in(types, c.type_param.id, stack))),
        TypeDef::BitSequence(_) => Shape::BitSequence,
    };
    stack.pop();
    shape
}

/// A struct or tuple: a newtype (one field) is its field.
fn fields(ids: impl Iterator<Item = u32>, types: &PortableRegistry, stack: &mut Vec<u32>) -> Shape {
    let mut shapes: Vec<Shape> = ids.map(|id| shape_in(types, id, stack)).collect();
    if shapes.len() == 1 {
        shapes.remove(0)
    } else {
        Shape::Fields(shapes)
    }
}

fn primitive(p: &TypeDefPrimitive) -> &'static str {
    match p {
        TypeDefPrimitive::Bool => "bool",
        TypeDefPrimitive::Char => "char",
        TypeDefPrimitive::Str => "str",
        TypeDefPrimitive::U8 => "u8",
        TypeDefPrimitive::U16 => "u16",
        TypeDefPrimitive::U32 => "u32",
        TypeDefPrimitive::U64 => "u64",
        TypeDefPrimitive::U128 => "u128",
        TypeDefPrimitive::U256 => "u256",
        TypeDefPrimitive::I8 => "i8",
        TypeDefPrimitive::I16 => "i16",
        TypeDefPrimitive::I32 => "i32",
        TypeDefPrimitive::I64 => "i64",
        TypeDefPrimitive::I128 => "i128",
        TypeDefPrimitive::I256 => "i256",
    }
}

/// A call's arguments: (name, shape), in order (they encode by position).
pub fn call(md: &Metadata, pallet: &str, call: &str) -> Option<Vec<(String, Shape)>> {
    let variant = md.pallet_by_name(pallet)?.call_variant_by_name(call)?;
    Some(
        variant
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let name = f.name.clone().unwrap_or_else(|| i.to_string());
                (name, of(md.types(), f.ty.id))
            })
            .collect(),
    )
}

/// A storage entry: its keys' hashers and shapes, and its value's shape.
pub fn storage(md: &Metadata, pallet: &str, entry: &str) -> Option<(Vec<(String, Shape)>, Shape)> {
    let e = md.pallet_by_name(pallet)?.storage()?.entry_by_name(entry)?;
    let keys = e
        .keys()
        .map(|k| (format!("{:?}", k.hasher), of(md.types(), k.key_id)))
        .collect();
    Some((keys, of(md.types(), e.value_ty())))
}

/// Where call `pallet.name` encodes differently on `live` than on `ours`, named.
pub fn call_difference(
    ours: &Metadata,
    live: &Metadata,
    pallet: &str,
    name: &str,
) -> Option<String> {
    let what = format!("call {pallet}.{name}");
    let theirs = match call(live, pallet, name) {
        None => return Some(format!("{what} is gone")),
        Some(t) => t,
    };
    let mine = call(ours, pallet, name).unwrap_or_default();
    if mine.len() != theirs.len() {
        return Some(format!(
            "{what} takes {} arguments on the chain, {} here",
            theirs.len(),
            mine.len()
        ));
    }
    mine.iter()
        .zip(&theirs)
        .find(|(a, b)| a.1 != b.1)
        .map(|((arg, here), (_, there))| {
            format!("{what} argument {arg} encodes as {there} on the chain, {here} here")
        })
}

/// Where storage `pallet.entry` is keyed or valued differently on `live` than on `ours`.
pub fn storage_difference(
    ours: &Metadata,
    live: &Metadata,
    pallet: &str,
    entry: &str,
) -> Option<String> {
    let what = format!("storage {pallet}.{entry}");
    let Some((their_keys, their_value)) = storage(live, pallet, entry) else {
        return Some(format!("{what} is gone"));
    };
    let (my_keys, my_value) = storage(ours, pallet, entry)?;
    if my_keys != their_keys {
        let show = |keys: &[(String, Shape)]| {
            let k: Vec<String> = keys.iter().map(|(h, s)| format!("{h}({s})")).collect();
            k.join(", ")
        };
        return Some(format!(
            "{what} is keyed by {} on the chain, {} here",
            show(&their_keys),
            show(&my_keys)
        ));
    }
    (my_value != their_value)
        .then(|| format!("{what} value encodes as {their_value} on the chain, {my_value} here"))
}

/// A runtime API method: its inputs' shapes, and the shape of each of `fields` in its output
/// (a struct, or an `Option` of one), `None` for a field the output lacks.
pub fn runtime_api(
    md: &Metadata,
    api: &str,
    method: &str,
    fields: &[&str],
) -> Option<(Vec<Shape>, Vec<Option<Shape>>)> {
    let m = md.runtime_api_trait_by_name(api)?.method_by_name(method)?;
    let types = md.types();
    let inputs = m.inputs().map(|i| of(types, i.id)).collect();
    let output = named_fields(types, unwrap_option(types, m.output_ty()));
    let shapes = fields
        .iter()
        .map(|name| output.get(name).map(|id| of(types, *id)))
        .collect();
    Some((inputs, shapes))
}

/// `Some`'s field of an `Option`, else the type itself.
fn unwrap_option(types: &PortableRegistry, id: u32) -> u32 {
    let Some(ty) = types.resolve(id) else {
        return id;
    };
    match &ty.type_def {
        TypeDef::Variant(v) if ty.path.segments.last().map(String::as_str) == Some("Option") => v
            .variants
            .iter()
            .find(|var| var.name == "Some")
            .and_then(|var| var.fields.first())
            .map_or(id, |f| f.ty.id),
        _ => id,
    }
}

/// A struct's fields by name (empty for any other type).
fn named_fields(types: &PortableRegistry, id: u32) -> std::collections::HashMap<&str, u32> {
    match types.resolve(id).map(|t| &t.type_def) {
        Some(TypeDef::Composite(c)) => c
            .fields
            .iter()
            .filter_map(|f| Some((f.name.as_deref()?, f.ty.id)))
            .collect(),
        _ => Default::default(),
    }
}

/// Where runtime API `api.method` takes other inputs on `live` than on `ours`, or where a field
/// of its output that this crate reads (by name) is gone or encodes differently.
pub fn runtime_api_difference(
    ours: &Metadata,
    live: &Metadata,
    api: &str,
    method: &str,
    fields: &[&str],
) -> Option<String> {
    let what = format!("runtime API {api}.{method}");
    let Some((their_inputs, their_fields)) = runtime_api(live, api, method, fields) else {
        return Some(format!("{what} is gone"));
    };
    let (my_inputs, my_fields) = runtime_api(ours, api, method, fields)?;
    if my_inputs != their_inputs {
        let show = |inputs: &[Shape]| {
            let s: Vec<String> = inputs.iter().map(ToString::to_string).collect();
            s.join(", ")
        };
        return Some(format!(
            "{what} takes ({}) on the chain, ({}) here",
            show(&their_inputs),
            show(&my_inputs)
        ));
    }
    fields
        .iter()
        .zip(my_fields.iter().zip(&their_fields))
        .find(|(_, (mine, theirs))| mine != theirs)
        .map(|(name, (mine, theirs))| match (mine, theirs) {
            (_, None) => format!("{what} output field {name} is gone"),
            (Some(here), Some(there)) => {
                format!("{what} output field {name} encodes as {there} on the chain, {here} here")
            }
            (None, Some(_)) => format!("{what} output field {name} is not in this build"),
        })
}
