//! Runtime metadata variants built from the committed one, for the runtime-shape tests.
#![allow(dead_code)]

use codec::{Decode, Encode};
use frame_metadata::v16::{RuntimeMetadataV16, StorageEntryType};
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

/// The committed metadata with `Incentive` as `Vec<PerU16>` (a one-field struct around u16):
/// the same bytes, another type hash.
pub fn incentive_as_per_u16() -> RuntimeMetadataV16 {
    let mut m = committed();
    let u16_id = primitive(&m, TypeDefPrimitive::U16);
    let per_u16 = add_type(
        &mut m,
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
    );
    let StorageEntryType::Map { value, .. } = &subtensor_entry(&mut m, "Incentive").ty else {
        panic!("Incentive is a map");
    };
    let vec_id = value.id;
    let TypeDef::Sequence(seq) = &mut type_mut(&mut m, vec_id).type_def else {
        panic!("Incentive's value is a Vec");
    };
    seq.type_param = per_u16.into();
    m
}

pub fn encoded(m: RuntimeMetadataV16) -> Vec<u8> {
    RuntimeMetadataPrefixed::from(m).encode()
}
