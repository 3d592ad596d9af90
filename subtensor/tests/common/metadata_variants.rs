//! Runtime metadata variants built from the committed one, for the runtime-shape tests.
#![allow(dead_code)]

use codec::{Decode, Encode};
use frame_metadata::v16::RuntimeMetadataV16;
use frame_metadata::{RuntimeMetadata, RuntimeMetadataPrefixed};
use scale_info::form::PortableForm;
use scale_info::{Field, Path, PortableType, Type, TypeDef, TypeDefComposite, TypeDefPrimitive};
use subxt::Metadata;

pub fn committed() -> RuntimeMetadataV16 {
    let prefixed = RuntimeMetadataPrefixed::decode(&mut &super::committed_metadata()[..]).unwrap();
    match prefixed.1 {
        RuntimeMetadata::V16(m) => m,
        _ => panic!("the committed metadata is V16"),
    }
}

pub fn metadata(m: RuntimeMetadataV16) -> Metadata {
    Metadata::decode_from(&RuntimeMetadataPrefixed::from(m).encode()).unwrap()
}

pub fn primitive(m: &RuntimeMetadataV16, p: TypeDefPrimitive) -> u32 {
    m.types
        .types
        .iter()
        .find(|t| t.ty.type_def == TypeDef::Primitive(p.clone()))
        .map(|t| t.id)
        .unwrap_or_else(|| panic!("no {p:?} in the registry"))
}

pub fn add_type(m: &mut RuntimeMetadataV16, ty: Type<PortableForm>) -> u32 {
    let id = m.types.types.iter().map(|t| t.id).max().unwrap() + 1;
    m.types.types.push(PortableType { id, ty });
    id
}

pub fn type_mut(m: &mut RuntimeMetadataV16, id: u32) -> &mut Type<PortableForm> {
    &mut m.types.types.iter_mut().find(|t| t.id == id).unwrap().ty
}

pub fn subtensor_entry<'a>(
    m: &'a mut RuntimeMetadataV16,
    entry: &str,
) -> &'a mut frame_metadata::v16::StorageEntryMetadata<PortableForm> {
    let pallet = m
        .pallets
        .iter_mut()
        .find(|p| p.name == "SubtensorModule")
        .unwrap();
    let storage = pallet.storage.as_mut().unwrap();
    storage
        .entries
        .iter_mut()
        .find(|e| e.name == entry)
        .unwrap()
}

pub fn subtensor_calls(m: &mut RuntimeMetadataV16) -> &mut Vec<scale_info::Variant<PortableForm>> {
    let id = m
        .pallets
        .iter()
        .find(|p| p.name == "SubtensorModule")
        .unwrap()
        .calls
        .as_ref()
        .unwrap()
        .ty
        .id;
    match &mut type_mut(m, id).type_def {
        TypeDef::Variant(v) => &mut v.variants,
        _ => panic!("the call type is an enum"),
    }
}

/// `sp_arithmetic::PerU16`, a one-field struct around u16.
fn add_per_u16(m: &mut RuntimeMetadataV16) -> u32 {
    let u16_id = primitive(m, TypeDefPrimitive::U16);
    add_type(
        m,
        Type {
            path: Path::from_segments_unchecked(
                ["sp_arithmetic", "per_things", "PerU16"].map(String::from),
            ),
            type_params: vec![],
            type_def: TypeDef::Composite(TypeDefComposite {
                fields: vec![Field {
                    name: None,
                    ty: u16_id.into(),
                    type_name: Some("u16".into()),
                    docs: vec![],
                }],
            }),
            docs: vec![],
        },
    )
}

/// The committed metadata with the metagraph runtime API's `incentives` as
/// `Vec<Compact<PerU16>>`: the same bytes, another type hash.
pub fn metagraph_incentives_as_per_u16() -> RuntimeMetadataV16 {
    let mut m = committed();
    let per_u16 = add_per_u16(&mut m);
    // A new Compact<PerU16> and a new Vec of it, so that no other Compact<u16> changes.
    let compact = add_type(
        &mut m,
        Type {
            path: Path::default(),
            type_params: vec![],
            type_def: TypeDef::Compact(scale_info::TypeDefCompact {
                type_param: per_u16.into(),
            }),
            docs: vec![],
        },
    );
    let vec = add_type(
        &mut m,
        Type {
            path: Path::default(),
            type_params: vec![],
            type_def: TypeDef::Sequence(scale_info::TypeDefSequence {
                type_param: compact.into(),
            }),
            docs: vec![],
        },
    );
    metagraph_field(&mut m, "incentives").ty = vec.into();
    m
}

/// The runtime's `Metagraph` struct (what `get_metagraph` answers `Some` of).
pub fn metagraph_struct(m: &mut RuntimeMetadataV16) -> &mut TypeDefComposite<PortableForm> {
    let output = m
        .apis
        .iter()
        .find(|a| a.name == "SubnetInfoRuntimeApi")
        .and_then(|a| a.methods.iter().find(|f| f.name == "get_metagraph"))
        .expect("get_metagraph in the committed metadata")
        .output
        .id;
    let TypeDef::Variant(option) = &type_mut(m, output).type_def else {
        panic!("get_metagraph answers an Option");
    };
    let id = option
        .variants
        .iter()
        .find(|v| v.name == "Some")
        .unwrap()
        .fields[0]
        .ty
        .id;
    match &mut type_mut(m, id).type_def {
        TypeDef::Composite(c) => c,
        _ => panic!("the metagraph is a struct"),
    }
}

/// A field of the runtime's `Metagraph`.
pub fn metagraph_field<'a>(
    m: &'a mut RuntimeMetadataV16,
    name: &str,
) -> &'a mut Field<PortableForm> {
    metagraph_struct(m)
        .fields
        .iter_mut()
        .find(|f| f.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no metagraph field {name}"))
}

pub fn encoded(m: RuntimeMetadataV16) -> Vec<u8> {
    RuntimeMetadataPrefixed::from(m).encode()
}
