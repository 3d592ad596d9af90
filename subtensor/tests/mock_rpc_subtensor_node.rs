//! The subxt layer against a mock subtensor node (no live chain can run here): a scripted
//! JSON-RPC client that answers the legacy RPC methods from the committed metadata and a few
//! storage values. Covers start-up checks (runtime drift refused, missing subnet refused), a
//! node that never answers (a timeout, not a hang), and storage reads through the generated API.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codec::{Decode, Encode};
use frame_metadata::{RuntimeMetadata, RuntimeMetadataPrefixed};
use serde_json::{Value, json};
use subxt_rpcs::client::{MockRpcClient, RpcClient};
use templar_protocol::chain::{Chain, ChainError};
use templar_protocol::identity::sr25519::Sr25519Signer;
use templar_subtensor::chain::{SubtensorChain, SubtensorSettings};

const NETUID: u16 = 3;
const BLOCK: u64 = 4_321;

fn storage_key(pallet: &str, entry: &str, key: &[u8]) -> String {
    let mut k = sp_crypto_hashing::twox_128(pallet.as_bytes()).to_vec();
    k.extend(sp_crypto_hashing::twox_128(entry.as_bytes()));
    k.extend_from_slice(key);
    format!("0x{}", hex::encode(k))
}

/// A scripted node: the metadata it serves, its storage, and whether it answers at all.
struct FakeNode {
    metadata: Vec<u8>,
    storage: HashMap<String, Vec<u8>>,
    silent: bool,
    calls: Arc<Mutex<Vec<String>>>,
}

fn hash(byte: u8) -> String {
    format!("0x{}", hex::encode([byte; 32]))
}

fn answer(node: &FakeNode, method: &str, params: &Value) -> Option<Value> {
    Some(match method {
        "rpc_methods" => {
            json!({"methods": ["chain_getBlockHash", "chain_getHeader", "state_getRuntimeVersion",
            "state_call", "state_getStorage", "state_getMetadata", "chain_subscribeNewHeads"]})
        }
        "chain_getBlockHash" => match params.get(0).and_then(Value::as_u64) {
            Some(0) => json!(hash(0x11)),
            _ => json!(hash(0x22)),
        },
        "chain_getFinalizedHead" => json!(hash(0x22)),
        "chain_getHeader" => json!({
            "parentHash": hash(0x21), "number": format!("0x{BLOCK:x}"), "stateRoot": hash(0x33),
            "extrinsicsRoot": hash(0x44), "digest": {"logs": []}
        }),
        "state_getRuntimeVersion" => json!({
            "specName": "node-subtensor", "implName": "node-subtensor", "authoringVersion": 1,
            "specVersion": 365, "implVersion": 1, "apis": [], "transactionVersion": 1, "stateVersion": 1
        }),
        "state_getMetadata" => json!(format!("0x{}", hex::encode(&node.metadata))),
        "state_call" => {
            let function = params.get(0)?.as_str()?;
            match function {
                // The runtime's own SCALE RuntimeVersion is System.Version in its metadata.
                "Core_version" => {
                    let md = subxt_metadata::Metadata::decode_from(&node.metadata).unwrap();
                    let version = md
                        .pallet_by_name("System")?
                        .constant_by_name("Version")?
                        .value()
                        .to_vec();
                    json!(format!("0x{}", hex::encode(version)))
                }
                "Metadata_metadata_versions" => {
                    json!(format!("0x{}", hex::encode(vec![16u32].encode())))
                }
                "Metadata_metadata_at_version" => json!(format!(
                    "0x{}",
                    hex::encode(Some(node.metadata.clone()).encode())
                )),
                _ => return None,
            }
        }
        "state_getStorage" => {
            let key = params.get(0)?.as_str()?;
            match node.storage.get(key) {
                Some(v) => json!(format!("0x{}", hex::encode(v))),
                None => Value::Null,
            }
        }
        _ => return None,
    })
}

fn client(node: FakeNode) -> RpcClient {
    let node = Arc::new(node);
    let mock = MockRpcClient::builder()
        .method_fallback(move |method: String, params| {
            let node = node.clone();
            async move {
                node.calls.lock().unwrap().push(method.clone());
                if node.silent {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let params: Value = params
                    .map(|p| serde_json::from_str(p.get()).unwrap())
                    .unwrap_or(Value::Null);
                let out = answer(&node, &method, &params);
                if out.is_none() {
                    eprintln!("mock node: unanswered {method} {params}");
                }
                out.map(subxt_rpcs::client::mock_rpc_client::Json)
            }
        })
        .build();
    RpcClient::new(mock)
}

fn node_with_subnet(metadata: Vec<u8>) -> FakeNode {
    let mut storage = HashMap::new();
    storage.insert(
        storage_key("SubtensorModule", "NetworksAdded", &NETUID.encode()),
        true.encode(),
    );
    storage.insert(
        storage_key("SubtensorModule", "WeightsSetRateLimit", &NETUID.encode()),
        100u64.encode(),
    );
    FakeNode {
        metadata,
        storage,
        silent: false,
        calls: Default::default(),
    }
}

fn settings() -> SubtensorSettings {
    let mut s = SubtensorSettings::new(NETUID);
    s.rpc_timeout = Duration::from_secs(5);
    s
}

fn signer() -> Arc<Sr25519Signer> {
    Arc::new(Sr25519Signer::from_seed(&[7; 32]).unwrap())
}

#[tokio::test]
async fn mock_node_start_reads_the_head_and_storage_through_the_generated_api() {
    let node = node_with_subnet(common::committed_metadata());
    let chain = SubtensorChain::from_rpc(client(node), settings(), signer())
        .await
        .unwrap();
    assert_eq!(chain.current_block().await.unwrap(), BLOCK);
    assert_eq!(chain.weights_rate_limit().await.unwrap(), 100);
}

#[tokio::test]
async fn mock_node_without_the_subnet_is_refused_at_start() {
    let mut node = node_with_subnet(common::committed_metadata());
    node.storage.clear();
    let err = SubtensorChain::from_rpc(client(node), settings(), signer())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, ChainError::Unsupported(m) if m.contains("subnet 3 does not exist")),
        "{err}"
    );
}

#[tokio::test]
async fn mock_node_with_a_changed_runtime_is_refused_at_start_naming_what_changed() {
    // The live runtime lost the Commitments pallet: every call and storage entry of it is gone.
    let prefixed = RuntimeMetadataPrefixed::decode(&mut &common::committed_metadata()[..]).unwrap();
    let RuntimeMetadata::V16(mut m) = prefixed.1 else {
        panic!("V16")
    };
    m.pallets.retain(|p| p.name != "Commitments");
    let changed = RuntimeMetadataPrefixed::from(m).encode();
    let err = SubtensorChain::from_rpc(client(node_with_subnet(changed)), settings(), signer())
        .await
        .err()
        .unwrap();
    match &err {
        ChainError::RuntimeMismatch {
            spec_version,
            detail,
        } => {
            assert_eq!(*spec_version, 365);
            assert!(
                detail.contains("call Commitments.set_commitment is gone"),
                "{detail}"
            );
            assert!(
                detail.contains("storage Commitments.CommitmentOf is gone"),
                "{detail}"
            );
        }
        other => panic!("expected a runtime mismatch, got {other}"),
    }
    assert!(
        err.to_string().contains("templar-node chain metadata"),
        "{err}"
    );
}

#[tokio::test]
async fn mock_node_that_never_answers_times_out_instead_of_hanging() {
    let mut node = node_with_subnet(common::committed_metadata());
    node.silent = true;
    let mut s = settings();
    s.rpc_timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = SubtensorChain::from_rpc(client(node), s, signer())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ChainError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// `Commitments.CommitmentOf` value bytes encoded by the Bittensor SDK's codec (not ours).
fn registration_bytes(raw: &[u8]) -> Vec<u8> {
    let md = subxt_metadata::Metadata::decode_from(&common::committed_metadata()).unwrap();
    let entry = md
        .pallet_by_name("Commitments")
        .unwrap()
        .storage()
        .unwrap()
        .entry_by_name("CommitmentOf")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let v15 = dir.path().join("v15.scale");
    std::fs::write(&v15, common::as_v15(&common::committed_metadata())).unwrap();
    let answers = common::oracle(
        "scale_calls_oracle.py",
        vec![
            json!({"metadata": v15, "op": "encode", "type": format!("scale_info::{}", entry.value_ty()),
                    "value": {"deposit": 1_000_000, "block": 77,
                              "info": {"fields": [{ format!("Raw{}", raw.len()): {"hex": hex::encode(raw)} }]}}}),
        ],
    );
    hex::decode(answers[0]["data"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn mock_node_commitments_decode_from_the_sdks_bytes_into_the_bucket() {
    let account = [9u8; 32];
    let other = [8u8; 32];
    let bucket = "0123456789abcdef0123456789abcdef";
    let raw = format!("{bucket}{}{}", "K".repeat(32), "S".repeat(64));
    let mut node = node_with_subnet(common::committed_metadata());
    let keys = |uid: u16| {
        storage_key(
            "SubtensorModule",
            "Keys",
            &[NETUID.encode(), uid.encode()].concat(),
        )
    };
    let commitment_of = |who: &[u8; 32]| {
        let mut key = NETUID.encode();
        key.extend(sp_crypto_hashing::twox_64(who));
        key.extend(who);
        storage_key("Commitments", "CommitmentOf", &key)
    };
    node.storage.insert(keys(1), account.to_vec());
    node.storage
        .insert(commitment_of(&account), registration_bytes(raw.as_bytes()));
    node.storage.insert(keys(4), other.to_vec());
    node.storage
        .insert(commitment_of(&other), registration_bytes(b"not templar"));
    let chain = SubtensorChain::from_rpc(client(node), settings(), signer())
        .await
        .unwrap();

    let c = chain.commitment(1).await.unwrap().expect("uid 1 committed");
    assert_eq!(c.bucket, bucket);
    assert_eq!(
        c.endpoint,
        format!("https://{bucket}.r2.cloudflarestorage.com")
    );
    assert_eq!(
        (c.access_key_id.as_str(), c.secret_access_key.len()),
        ("K".repeat(32).as_str(), 64)
    );
    assert_eq!(
        chain.commitment(2).await.unwrap(),
        None,
        "no hotkey at uid 2"
    );
    let err = chain.commitment(4).await.unwrap_err();
    assert!(
        matches!(&err, ChainError::Corrupt { key, .. } if key.contains("uid 4")),
        "{err}"
    );
}
