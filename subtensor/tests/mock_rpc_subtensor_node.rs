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
    /// The extrinsic submitted last, to put in the block the node "includes" it in.
    submitted: Mutex<Option<String>>,
    /// `System.Events` of that block.
    events: Vec<u8>,
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
        "system_accountNextIndex" => json!(0),
        "chain_getBlock" => json!({
            "block": {
                "header": {"parentHash": hash(0x22), "number": format!("0x{:x}", BLOCK + 1), "stateRoot": hash(0x33),
                           "extrinsicsRoot": hash(0x44), "digest": {"logs": []}},
                "extrinsics": node.submitted.lock().unwrap().iter().cloned().collect::<Vec<_>>()
            },
            "justifications": null
        }),
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
                "AccountNonceApi_account_nonce" => {
                    json!(format!("0x{}", hex::encode(0u32.encode())))
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
            if key == storage_key("System", "Events", &[]) {
                return Some(json!(format!("0x{}", hex::encode(&node.events))));
            }
            match node.storage.get(key) {
                Some(v) => json!(format!("0x{}", hex::encode(v))),
                None => Value::Null,
            }
        }
        _ => return None,
    })
}

fn client(node: FakeNode) -> RpcClient {
    client_of(Arc::new(node))
}

fn client_of(node: Arc<FakeNode>) -> RpcClient {
    let submit_node = node.clone();
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
        .subscription_handler("author_submitAndWatchExtrinsic", move |params, _unsub| {
            let node = submit_node.clone();
            async move {
                let params: Value = params
                    .map(|p| serde_json::from_str(p.get()).unwrap())
                    .unwrap_or(Value::Null);
                *node.submitted.lock().unwrap() =
                    params.get(0).and_then(Value::as_str).map(String::from);
                vec![
                    subxt_rpcs::client::mock_rpc_client::Json(json!("ready")),
                    subxt_rpcs::client::mock_rpc_client::Json(json!({"inBlock": hash(0x55)})),
                ]
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
        submitted: Mutex::new(None),
        events: Vec::new(),
    }
}

fn settings() -> SubtensorSettings {
    let mut s = SubtensorSettings::new(NETUID);
    s.rpc_timeout = Duration::from_secs(5);
    s
}

fn signer_hotkey() -> templar_protocol::identity::Hotkey {
    templar_protocol::identity::Signer::hotkey(signer().as_ref()).clone()
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

const OWN_UID: u16 = 5;

/// A subnet where the signer holds uid 5, without commit-reveal, rate limit 100 blocks.
fn weights_node(version_key: u64, last_update: u64) -> FakeNode {
    let mut node = node_with_subnet(common::committed_metadata());
    let me = signer().public();
    let mut uid_key = NETUID.encode();
    uid_key.extend(sp_crypto_hashing::blake2_128(&me));
    uid_key.extend(me);
    let n = NETUID.encode();
    for (entry, key, value) in [
        ("Uids", uid_key, OWN_UID.encode()),
        ("WeightsVersionKey", n.clone(), version_key.encode()),
        (
            "LastUpdate",
            n.clone(),
            vec![0u64, 0, 0, 0, 0, last_update].encode(),
        ),
        ("MaxWeightsLimit", n.clone(), u16::MAX.encode()),
        ("CommitRevealWeightsEnabled", n.clone(), false.encode()),
    ] {
        node.storage
            .insert(storage_key("SubtensorModule", entry, &key), value);
    }
    node
}

/// `System.Events` holding `ExtrinsicFailed` with `SubtensorModule` error `error_index`,
/// encoded by the Bittensor SDK's codec.
fn failed_events(error_index: u8) -> Vec<u8> {
    let md = subxt_metadata::Metadata::decode_from(&common::committed_metadata()).unwrap();
    let events_ty = md
        .pallet_by_name("System")
        .unwrap()
        .storage()
        .unwrap()
        .entry_by_name("Events")
        .unwrap()
        .value_ty();
    let pallet = md.pallet_by_name("SubtensorModule").unwrap().error_index();
    let dir = tempfile::tempdir().unwrap();
    let v15 = dir.path().join("v15.scale");
    std::fs::write(&v15, common::as_v15(&common::committed_metadata())).unwrap();
    let value = json!([{
        "phase": {"ApplyExtrinsic": 0},
        "event": {"System": {"ExtrinsicFailed": {
            "dispatch_error": {"Module": {"index": pallet, "error": {"hex": hex::encode([error_index, 0, 0, 0])}}},
            "dispatch_info": {"weight": {"ref_time": 1000, "proof_size": 0}, "class": "Normal", "pays_fee": "Yes"}
        }}},
        "topics": []
    }]);
    let answers = common::oracle(
        "scale_calls_oracle.py",
        vec![
            json!({"metadata": v15, "op": "encode", "type": format!("scale_info::{events_ty}"), "value": value}),
        ],
    );
    hex::decode(
        answers[0]["data"]
            .as_str()
            .unwrap_or_else(|| panic!("{}", answers[0])),
    )
    .unwrap()
}

#[tokio::test]
async fn mock_node_weights_below_the_subnets_version_key_are_refused_before_sending() {
    let chain = SubtensorChain::from_rpc(client(weights_node(9, 0)), settings(), signer())
        .await
        .unwrap();
    let me = templar_protocol::identity::Signer::hotkey(signer().as_ref()).clone();
    let err = chain.set_weights(&me, &[(1, 1.0)]).await.unwrap_err();
    assert_eq!(
        err,
        ChainError::VersionKeyTooLow {
            ours: 0,
            required: 9
        }
    );
}

#[tokio::test]
async fn mock_node_weights_inside_the_rate_limit_are_refused_before_sending() {
    let last = BLOCK - 10;
    let chain = SubtensorChain::from_rpc(client(weights_node(0, last)), settings(), signer())
        .await
        .unwrap();
    let me = templar_protocol::identity::Signer::hotkey(signer().as_ref()).clone();
    let err = chain.set_weights(&me, &[(1, 1.0)]).await.unwrap_err();
    assert_eq!(
        err,
        ChainError::WeightsRateLimited {
            last_block: last,
            next_block: last + 100
        }
    );
}

#[tokio::test]
async fn mock_node_a_failed_weights_extrinsic_comes_back_as_the_chains_named_error() {
    let md = subxt_metadata::Metadata::decode_from(&common::committed_metadata()).unwrap();
    let no_permit = md
        .pallet_by_name("SubtensorModule")
        .unwrap()
        .error_variants()
        .unwrap()
        .iter()
        .find(|v| v.name == "NeuronNoValidatorPermit")
        .unwrap()
        .index;
    let mut node = weights_node(0, 0);
    node.events = failed_events(no_permit);
    let calls = node.calls.clone();
    let node = Arc::new(node);
    let chain = SubtensorChain::from_rpc(client_of(node.clone()), settings(), signer())
        .await
        .unwrap();
    let me = templar_protocol::identity::Signer::hotkey(signer().as_ref()).clone();
    let err = chain
        .set_weights(&me, &[(1, 1.0), (2, 0.5)])
        .await
        .unwrap_err();
    assert_eq!(err, ChainError::NoValidatorPermit(me));
    assert!(
        calls.lock().unwrap().iter().any(|m| m == "chain_getBlock"),
        "the block was read"
    );

    // The signed extrinsic as sent, decoded by the Bittensor SDK's codec: signer, call and
    // arguments, with the runtime's own transaction extensions.
    let sent = node.submitted.lock().unwrap().clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let v15 = dir.path().join("v15.scale");
    std::fs::write(&v15, common::as_v15(&common::committed_metadata())).unwrap();
    let answers = common::oracle(
        "scale_calls_oracle.py",
        vec![json!({"metadata": v15, "op": "extrinsic", "data": sent.trim_start_matches("0x")})],
    );
    let x = &answers[0]["value"];
    assert_eq!(x["address"], json!(signer_hotkey().as_str()), "{x}");
    assert_eq!(x["call"]["call_module"], "SubtensorModule", "{x}");
    assert_eq!(x["call"]["call_function"], "set_mechanism_weights", "{x}");
    let args: HashMap<String, Value> = x["call"]["call_args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap().to_string(), a["value"].clone()))
        .collect();
    assert_eq!(args["netuid"], json!(NETUID));
    assert_eq!(args["dests"], json!([1, 2]));
    assert_eq!(
        args["weights"],
        json!([65535, 32768]),
        "max-upscaled, as the SDK sends"
    );
    assert_eq!(x["nonce"], json!(0));
    assert!(x["signature"]["Sr25519"].is_string(), "{x}");
}
