//! The start-up runtime check against metadata variants built from the committed one: what
//! encodes the same passes (a newtype around u16, which changes subxt's type hash), what does
//! not is refused with the call, argument, entry or metagraph field named (u16 -> u32, a call
//! removed, a key hashed another way, a metagraph field gone).

mod common;

use common::metadata_variants::{
    committed, metadata, metagraph_field, metagraph_incentives_as_per_u16, metagraph_struct,
    primitive, subtensor_calls, subtensor_entry,
};
use frame_metadata::v16::{StorageEntryType, StorageHasher};
use scale_info::TypeDefPrimitive;
use subxt::Metadata;
use templar_subtensor::client::runtime_differences;

#[test]
fn the_committed_runtime_has_no_differences() {
    assert_eq!(
        runtime_differences(&metadata(committed())),
        Vec::<String>::new()
    );
}

#[test]
fn a_newtype_around_the_same_bytes_starts_though_its_type_hash_differs() {
    let live = metadata(metagraph_incentives_as_per_u16());
    assert_eq!(runtime_differences(&live), Vec::<String>::new());
    // The structural hash subxt compares does differ: it would have refused.
    let ours = metadata(committed());
    let hash = |md: &Metadata| {
        md.runtime_api_trait_by_name("SubnetInfoRuntimeApi")
            .and_then(|t| t.method_by_name("get_metagraph"))
            .unwrap()
            .hash()
    };
    assert_ne!(hash(&ours), hash(&live));
}

/// The metagraph is decoded by field name: a field the node reads that is gone, or that
/// encodes differently, is named; a field it does not read may change freely.
#[test]
fn a_metagraph_field_gone_or_reshaped_is_refused_by_name() {
    let mut m = committed();
    metagraph_struct(&mut m)
        .fields
        .retain(|f| f.name.as_deref() != Some("total_stake"));
    assert_eq!(
        runtime_differences(&metadata(m)),
        ["runtime API SubnetInfoRuntimeApi.get_metagraph output field total_stake is gone"]
    );

    let mut m = committed();
    let u32_id = primitive(&m, TypeDefPrimitive::U32);
    metagraph_field(&mut m, "block").ty = u32_id.into();
    // A field the node does not read.
    metagraph_field(&mut m, "tempo").ty = u32_id.into();
    let differences = runtime_differences(&metadata(m));
    assert_eq!(differences.len(), 1, "{differences:?}");
    assert!(
        differences[0].starts_with(
            "runtime API SubnetInfoRuntimeApi.get_metagraph output field block encodes as u32 on the chain, Compact<"
        ),
        "{differences:?}"
    );
}

#[test]
fn a_wider_argument_is_refused_naming_the_call_and_the_argument() {
    let mut m = committed();
    let u32_id = primitive(&m, TypeDefPrimitive::U32);
    let calls = subtensor_calls(&mut m);
    let call = calls
        .iter_mut()
        .find(|v| v.name == "set_mechanism_weights")
        .unwrap();
    let netuid = call
        .fields
        .iter_mut()
        .find(|f| f.name.as_deref() == Some("netuid"))
        .unwrap();
    netuid.ty = u32_id.into();
    let differences = runtime_differences(&metadata(m));
    assert_eq!(
        differences,
        [
            "call SubtensorModule.set_mechanism_weights argument netuid encodes as u32 on the chain, u16 here"
        ]
    );
}

#[test]
fn a_removed_call_and_a_rehashed_key_are_refused_by_name() {
    let mut m = committed();
    subtensor_calls(&mut m).retain(|v| v.name != "commit_timelocked_mechanism_weights");
    let StorageEntryType::Map { hashers, .. } = &mut subtensor_entry(&mut m, "Uids").ty else {
        panic!("Uids is a map");
    };
    let before = hashers.clone();
    hashers[0] = if hashers[0] == StorageHasher::Identity {
        StorageHasher::Blake2_128Concat
    } else {
        StorageHasher::Identity
    };
    let differences = runtime_differences(&metadata(m));
    assert!(
        differences.contains(
            &"call SubtensorModule.commit_timelocked_mechanism_weights is gone".to_string()
        ),
        "{differences:?}"
    );
    let keyed = differences
        .iter()
        .find(|d| d.starts_with("storage SubtensorModule.Uids is keyed by"));
    assert!(keyed.is_some(), "{before:?} -> {differences:?}");
    assert_eq!(differences.len(), 2, "{differences:?}");
}
