//! The start-up runtime check against metadata variants built from the committed one: what
//! encodes the same passes (a newtype around u16, which changes subxt's type hash), what does
//! not is refused with the call, argument or entry named (u16 -> u32, a call removed, a key
//! hashed another way).

mod common;

use common::metadata_variants::{
    committed, incentive_as_per_u16, metadata, primitive, subtensor_calls, subtensor_entry,
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
    let m = incentive_as_per_u16();
    let live = metadata(m);
    assert_eq!(runtime_differences(&live), Vec::<String>::new());
    // The structural hash the check used to compare does differ: it would have refused.
    let ours = metadata(committed());
    let hash = |md: &Metadata| {
        md.pallet_by_name("SubtensorModule")
            .unwrap()
            .storage_hash("Incentive")
    };
    assert_ne!(hash(&ours), hash(&live));
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
