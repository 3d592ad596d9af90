//! The extrinsics templar sends, built with the generated (statically typed) API, and their
//! call data encoded offline against a metadata. Mechanism 0 is the subnet's default
//! mechanism; the mechanism calls are what the Python SDK sends too. Each payload skips
//! subxt's type-hash check: the runtime check at start judged the call by its SCALE shape
//! (`client::check_runtime`), and the arguments encode through the live type information.

use subxt::transactions::Payload;

use crate::api::runtime::{
    self,
    runtime_types::{
        bounded_collections::bounded_vec::BoundedVec,
        pallet_commitments::types::{CommitmentInfo, Data},
    },
};

/// `commit_reveal_version` the chain expects with a timelocked commit (CRv4).
pub const COMMIT_REVEAL_VERSION: u16 = 4;
/// The one mechanism templar uses.
pub const MECHANISM: u8 = 0;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("a commitment field is at most 128 bytes; this one is {0}")]
    CommitmentTooLong(usize),
    #[error("call {call} does not encode against this metadata: {reason}")]
    Encode { call: String, reason: String },
}

pub fn set_weights(
    netuid: u16,
    uids: Vec<u16>,
    values: Vec<u16>,
    version_key: u64,
) -> impl Payload {
    runtime::transactions()
        .subtensor_module()
        .set_mechanism_weights(netuid, MECHANISM, uids, values, version_key)
        .unvalidated()
}

pub fn commit_timelocked_weights(netuid: u16, commit: Vec<u8>, reveal_round: u64) -> impl Payload {
    runtime::transactions()
        .subtensor_module()
        .commit_timelocked_mechanism_weights(
            netuid,
            MECHANISM,
            BoundedVec(commit),
            reveal_round,
            COMMIT_REVEAL_VERSION,
        )
        .unvalidated()
}

pub fn commit_weights_hash(netuid: u16, hash: [u8; 32]) -> impl Payload {
    runtime::transactions()
        .subtensor_module()
        .commit_mechanism_weights(netuid, MECHANISM, subxt::utils::H256(hash))
        .unvalidated()
}

pub fn reveal_weights(
    netuid: u16,
    uids: Vec<u16>,
    values: Vec<u16>,
    salt: Vec<u16>,
    version_key: u64,
) -> impl Payload {
    runtime::transactions()
        .subtensor_module()
        .reveal_mechanism_weights(netuid, MECHANISM, uids, values, salt, version_key)
        .unvalidated()
}

/// `Commitments.set_commitment` with one raw field (`Data::RawN`, N = its length).
pub fn set_commitment(netuid: u16, raw: &[u8]) -> Result<impl Payload, CallError> {
    Ok(runtime::transactions()
        .commitments()
        .set_commitment(
            netuid,
            CommitmentInfo {
                fields: BoundedVec(vec![raw_data(raw)?]),
            },
        )
        .unvalidated())
}

/// `Data::RawN` for N bytes: SCALE variant index N + 1, then the bytes.
pub fn raw_data(raw: &[u8]) -> Result<Data, CallError> {
    if raw.len() > 128 {
        return Err(CallError::CommitmentTooLong(raw.len()));
    }
    let mut encoded = Vec::with_capacity(raw.len() + 1);
    encoded.push(raw.len() as u8 + 1);
    encoded.extend_from_slice(raw);
    Ok(<Data as codec::Decode>::decode(&mut encoded.as_slice()).expect("RawN of N <= 128 bytes"))
}

/// The bytes of a `Data::RawN` field (`None` for the other kinds of field).
pub fn raw_bytes(field: &Data) -> Option<Vec<u8>> {
    let encoded = codec::Encode::encode(field);
    let (&index, bytes) = encoded.split_first()?;
    (1..=129).contains(&index).then(|| bytes.to_vec())
}

/// The SCALE call data (pallet index, call index, arguments) of `call` under `metadata`.
pub fn call_data(call: &impl Payload, metadata: &subxt::Metadata) -> Result<Vec<u8>, CallError> {
    frame_decode::extrinsics::encode_call_data(
        call.pallet_name(),
        call.call_name(),
        call.call_data(),
        metadata,
        metadata.types(),
    )
    .map_err(|e| CallError::Encode {
        call: call.call_name().to_string(),
        reason: e.to_string(),
    })
}
