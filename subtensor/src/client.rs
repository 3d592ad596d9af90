//! The connection to a subtensor node: every RPC bounded by a timeout, and the runtime checked
//! at start against the metadata this build was generated from, so a changed call or storage
//! shape is an error naming it before any extrinsic is sent.

use std::future::Future;
use std::time::Duration;

use subxt::config::SubstrateConfig;
use subxt::{Metadata, OnlineClient};
use templar_protocol::chain::ChainError;

use crate::errors::SubtensorError;
use crate::shape;

pub type Client = OnlineClient<SubstrateConfig>;
pub type AtBlock = subxt::client::OnlineClientAtBlock<SubstrateConfig>;

/// The metadata the generated API was built from.
pub const COMMITTED_METADATA: &[u8] = include_bytes!("../metadata/finney.scale");

/// Calls and storage entries this crate uses (the runtime API: [`METAGRAPH_API`]); each must
/// have the same shape on the live chain.
pub const CALLS: &[(&str, &str)] = &[
    ("SubtensorModule", "set_mechanism_weights"),
    ("SubtensorModule", "commit_timelocked_mechanism_weights"),
    ("SubtensorModule", "commit_mechanism_weights"),
    ("SubtensorModule", "reveal_mechanism_weights"),
    ("Commitments", "set_commitment"),
];
pub const STORAGE: &[(&str, &str)] = &[
    ("SubtensorModule", "Keys"),
    ("SubtensorModule", "Uids"),
    ("SubtensorModule", "NetworksAdded"),
    ("SubtensorModule", "CommitRevealWeightsEnabled"),
    ("SubtensorModule", "WeightsVersionKey"),
    ("SubtensorModule", "WeightsSetRateLimit"),
    ("SubtensorModule", "MaxWeightsLimit"),
    ("SubtensorModule", "Tempo"),
    ("SubtensorModule", "RevealPeriodEpochs"),
    ("SubtensorModule", "BlocksSinceLastStep"),
    ("SubtensorModule", "LastUpdate"),
    ("SubtensorModule", "MinAllowedWeights"),
    ("SubtensorModule", "SubnetworkN"),
    ("SubtensorModule", "CommitRevealWeightsVersion"),
    ("Commitments", "CommitmentOf"),
];

/// The runtime API the metagraph is read through, and the fields of its output read (by
/// name: the runtime's other fields are skipped, so it may grow new ones).
pub const METAGRAPH_API: (&str, &str, &[&str]) = (
    "SubnetInfoRuntimeApi",
    "get_metagraph",
    &[
        "block",
        "hotkeys",
        "validator_permit",
        "incentives",
        "total_stake",
    ],
);

/// Where the live runtime encodes what this crate uses differently from the committed
/// metadata: judged by SCALE shape ([`crate::shape`]), so a renamed type or a newtype
/// wrapper (same bytes) passes and a changed encoding is named.
pub fn runtime_differences(live: &Metadata) -> Vec<String> {
    let committed = Metadata::decode_from(COMMITTED_METADATA).expect("committed metadata decodes");
    let calls = CALLS
        .iter()
        .filter_map(|(pallet, call)| shape::call_difference(&committed, live, pallet, call));
    let storage = STORAGE
        .iter()
        .filter_map(|(pallet, entry)| shape::storage_difference(&committed, live, pallet, entry));
    let (api, method, fields) = METAGRAPH_API;
    let apis = shape::runtime_api_difference(&committed, live, api, method, fields);
    calls.chain(storage).chain(apis).collect()
}

/// Runs one chain request with a deadline; a transport error or a late answer is a
/// `ChainError`, never a hang.
pub async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    after: Duration,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, ChainError> {
    match tokio::time::timeout(after, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(ChainError::Rpc(format!("{what}: {e}"))),
        Err(_) => Err(ChainError::Timeout {
            what: what.to_string(),
            after,
        }),
    }
}

/// Refuses a runtime whose calls or storage this build would misencode.
pub fn check_runtime(at: &AtBlock) -> Result<(), ChainError> {
    let differences = runtime_differences(at.metadata_ref());
    if differences.is_empty() {
        return Ok(());
    }
    Err(SubtensorError::RuntimeMismatch {
        spec_version: at.spec_version(),
        detail: differences.join("; "),
    }
    .into())
}

/// The newest metadata (V16, else V15) a node serves, as `MetadataVersioned` bytes ready to
/// commit: what `templar-node chain metadata` writes.
pub async fn fetch_metadata(endpoint: &str) -> Result<Vec<u8>, ChainError> {
    use codec::{Decode, Encode};
    use subxt::rpcs::client::RpcClient;
    let after = Duration::from_secs(60);
    let rpc = bounded(
        &format!("connecting to {endpoint}"),
        after,
        RpcClient::from_insecure_url(endpoint),
    )
    .await?;
    for version in [16u32, 15] {
        let params = subxt::rpcs::rpc_params![
            "Metadata_metadata_at_version",
            format!("0x{}", hex::encode(version.encode()))
        ];
        let answer: String = bounded(
            "Metadata_metadata_at_version",
            after,
            rpc.request("state_call", params),
        )
        .await?;
        let bytes = hex::decode(answer.trim_start_matches("0x"))
            .map_err(|e| ChainError::Rpc(format!("metadata is not hex: {e}")))?;
        let metadata = Option::<Vec<u8>>::decode(&mut bytes.as_slice())
            .map_err(|e| ChainError::Rpc(format!("metadata answer does not decode: {e}")))?;
        if let Some(metadata) = metadata {
            Metadata::decode_from(&metadata).map_err(|e| {
                ChainError::Rpc(format!("metadata V{version} does not decode: {e}"))
            })?;
            return Ok(metadata);
        }
    }
    Err(ChainError::Unsupported(
        "the node serves neither metadata V16 nor V15".into(),
    ))
}

/// A storage address read without subxt's type-hash check: [`check_runtime`] has judged the
/// entry by its SCALE shape at start, and the value decodes through the live type
/// information, so a runtime that wraps the same bytes in a newtype still reads.
pub struct ShapeChecked<A>(pub A);

impl<A: subxt::storage::Address> subxt::storage::Address for ShapeChecked<A> {
    type KeyParts = A::KeyParts;
    type Value = A::Value;
    type IsPlain = A::IsPlain;

    fn pallet_name(&self) -> &str {
        self.0.pallet_name()
    }

    fn entry_name(&self) -> &str {
        self.0.entry_name()
    }

    fn validation_hash(&self) -> Option<[u8; 32]> {
        None
    }
}
