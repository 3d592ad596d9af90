//! A scripted subtensor node for the subxt layer's tests (no live chain can run here): it
//! answers the legacy JSON-RPC methods from the committed metadata and a storage map, takes
//! an extrinsic and "includes" it with the events it is given, and serves new-heads
//! subscriptions that drop.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codec::Encode;
use serde_json::{Value, json};
use subxt_rpcs::client::{MockRpcClient, RpcClient};

use super::metagraph_answer::{self, FakeNeuron};

pub const NETUID: u16 = 3;
pub const BLOCK: u64 = 4_321;

pub fn storage_key(pallet: &str, entry: &str, key: &[u8]) -> String {
    let mut k = sp_crypto_hashing::twox_128(pallet.as_bytes()).to_vec();
    k.extend(sp_crypto_hashing::twox_128(entry.as_bytes()));
    k.extend_from_slice(key);
    format!("0x{}", hex::encode(k))
}

/// The storage key of a map entry, each key part hashed as `metadata` says.
pub fn map_key(metadata: &[u8], pallet: &str, entry: &str, parts: &[Vec<u8>]) -> String {
    use subxt::ext::frame_decode::storage::StorageHasher as H;
    let md = subxt_metadata::Metadata::decode_from(metadata).unwrap();
    let e = md
        .pallet_by_name(pallet)
        .and_then(|p| p.storage())
        .and_then(|s| s.entry_by_name(entry))
        .unwrap_or_else(|| panic!("no storage {pallet}.{entry}"));
    let mut key = Vec::new();
    for (k, part) in e.keys().zip(parts) {
        match k.hasher {
            H::Blake2_128 => key.extend(sp_crypto_hashing::blake2_128(part)),
            H::Blake2_256 => key.extend(sp_crypto_hashing::blake2_256(part)),
            H::Blake2_128Concat => {
                key.extend(sp_crypto_hashing::blake2_128(part));
                key.extend(part);
            }
            H::Twox128 => key.extend(sp_crypto_hashing::twox_128(part)),
            H::Twox256 => key.extend(sp_crypto_hashing::twox_256(part)),
            H::Twox64Concat => {
                key.extend(sp_crypto_hashing::twox_64(part));
                key.extend(part);
            }
            H::Identity => key.extend(part),
        }
    }
    storage_key(pallet, entry, &key)
}

/// A scripted node: the metadata it serves, its storage, and whether it answers at all.
pub struct FakeNode {
    pub metadata: Vec<u8>,
    pub storage: HashMap<String, Vec<u8>>,
    pub silent: bool,
    pub calls: Arc<Mutex<Vec<String>>>,
    /// The extrinsic submitted last, to put in the block the node "includes" it in.
    pub submitted: Mutex<Option<String>>,
    /// `System.Events` of that block.
    pub events: Vec<u8>,
    /// The transaction pool refuses every extrinsic with this `CustomTransactionError`
    /// code, as subtensor's transaction extension does (JSON-RPC error 1010).
    pub pool_rejects: Option<u8>,
    /// Aura's slot duration the runtime API answers (None: the call fails).
    pub slot_ms: Option<u64>,
    /// What `system_accountNextIndex` answers (the pool's count; the runtime's
    /// `AccountNonceApi` answers 0, as state that has not seen the pool).
    pub next_index: u64,
    /// Blocks the finalized head lags the best one.
    pub finality_lag: u64,
    /// The subnet's uids as `SubnetInfoRuntimeApi.get_metagraph` answers them.
    pub neurons: Vec<FakeNeuron>,
}

/// The finalized head's hash (the best block's is `hash(0x22)`).
pub const FINALIZED_HASH: u8 = 0x10;

pub fn hash(byte: u8) -> String {
    format!("0x{}", hex::encode([byte; 32]))
}

pub fn answer(node: &FakeNode, method: &str, params: &Value) -> Option<Value> {
    Some(match method {
        "rpc_methods" => {
            // A current node offers the new-style methods too (which subxt's default
            // backend would prefer); this mock answers none of them.
            json!({"methods": ["chain_getBlockHash", "chain_getHeader", "state_getRuntimeVersion",
            "state_call", "state_getStorage", "state_getMetadata", "chain_subscribeNewHeads",
            "chainHead_v1_follow", "chainHead_v1_unfollow", "chainHead_v1_header",
            "chainHead_v1_body", "chainHead_v1_storage", "chainHead_v1_call",
            "chainHead_v1_unpin", "chainHead_v1_continue", "chainHead_v1_stopOperation",
            "chainSpec_v1_genesisHash", "chainSpec_v1_chainName", "transaction_v1_broadcast",
            "transaction_v1_stop", "transactionWatch_v1_submitAndWatch",
            "transactionWatch_v1_unwatch"]})
        }
        "chain_getBlockHash" => match params.get(0).and_then(Value::as_u64) {
            Some(0) => json!(hash(0x11)),
            _ => json!(hash(0x22)),
        },
        "chain_getFinalizedHead" => json!(hash(FINALIZED_HASH)),
        "system_accountNextIndex" => json!(node.next_index),
        "chain_getBlock" => json!({
            "block": {
                "header": {"parentHash": hash(0x22), "number": format!("0x{:x}", BLOCK + 1), "stateRoot": hash(0x33),
                           "extrinsicsRoot": hash(0x44), "digest": {"logs": []}},
                "extrinsics": node.submitted.lock().unwrap().iter().cloned().collect::<Vec<_>>()
            },
            "justifications": null
        }),
        "chain_getHeader" => {
            // The finalized block lags the best by `finality_lag` blocks.
            let finalized = params.get(0).and_then(Value::as_str) == Some(&hash(FINALIZED_HASH));
            let number = if finalized {
                BLOCK - node.finality_lag
            } else {
                BLOCK
            };
            json!({
                "parentHash": hash(0x21), "number": format!("0x{number:x}"), "stateRoot": hash(0x33),
                "extrinsicsRoot": hash(0x44), "digest": {"logs": []}
            })
        }
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
                "AuraApi_slot_duration" => {
                    json!(format!("0x{}", hex::encode(node.slot_ms?.encode())))
                }
                "AccountNonceApi_account_nonce" => {
                    json!(format!("0x{}", hex::encode(0u32.encode())))
                }
                // The subnet's metagraph for its own netuid; `None` for any other.
                "SubnetInfoRuntimeApi_get_metagraph" => {
                    let asked = params.get(1)?.as_str()?.trim_start_matches("0x");
                    let answer = if asked == hex::encode(NETUID.encode()) {
                        metagraph_answer::encode(&node.metadata, BLOCK, &node.neurons)
                    } else {
                        vec![0]
                    };
                    json!(format!("0x{}", hex::encode(answer)))
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
        "state_getKeysPaged" => {
            let prefix = params.get(0)?.as_str()?;
            let count = params.get(1)?.as_u64()? as usize;
            let after = params.get(2).and_then(Value::as_str).unwrap_or("");
            let mut keys: Vec<&String> = node
                .storage
                .keys()
                .filter(|k| k.starts_with(prefix) && k.as_str() > after)
                .collect();
            keys.sort();
            json!(keys.into_iter().take(count).collect::<Vec<_>>())
        }
        "state_queryStorageAt" => {
            let keys = params.get(0)?.as_array()?;
            let changes: Vec<Value> = keys
                .iter()
                .map(|k| {
                    let value = node.storage.get(k.as_str().unwrap_or(""));
                    json!([k, value.map(|v| format!("0x{}", hex::encode(v)))])
                })
                .collect();
            json!([{"block": hash(0x22), "changes": changes}])
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

pub fn client(node: FakeNode) -> RpcClient {
    client_of(Arc::new(node))
}

pub fn header(number: u64) -> subxt_rpcs::client::mock_rpc_client::Json<Value> {
    subxt_rpcs::client::mock_rpc_client::Json(json!({
        "parentHash": hash(0x21), "number": format!("0x{number:x}"), "stateRoot": hash(0x33),
        "extrinsicsRoot": hash(0x44), "digest": {"logs": []}
    }))
}

pub fn client_of(node: Arc<FakeNode>) -> RpcClient {
    let submit_node = node.clone();
    let mock = MockRpcClient::builder()
        .method_fallback(move |method: String, params| {
            let node = node.clone();
            async move {
                let params: Value = params
                    .map(|p| serde_json::from_str(p.get()).unwrap())
                    .unwrap_or(Value::Null);
                // A runtime-API call is noted with the function it calls.
                let noted = match (method.as_str(), params.get(0).and_then(Value::as_str)) {
                    ("state_call", Some(function)) => format!("state_call {function}"),
                    _ => method.clone(),
                };
                node.calls.lock().unwrap().push(noted);
                if node.silent {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let out = answer(&node, &method, &params);
                if out.is_none() {
                    eprintln!("mock node: unanswered {method} {params}");
                }
                out.map(subxt_rpcs::client::mock_rpc_client::Json)
            }
        })
        // New heads: the first subscription yields two blocks and drops, the second one
        // block and drops, every later one yields block BLOCK + 20 and stays open.
        .subscription_handler_once("chain_subscribeNewHeads", |_params, _unsub| async move {
            vec![header(BLOCK + 1), header(BLOCK + 2)]
        })
        .subscription_handler_once("chain_subscribeNewHeads", |_params, _unsub| async move {
            vec![header(BLOCK + 3)]
        })
        .subscription_handler("chain_subscribeNewHeads", |_params, _unsub| async move {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tokio::spawn(async move {
                let _ = tx.send(header(BLOCK + 20)).await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(tx);
            });
            rx
        })
        .subscription_handler("author_submitAndWatchExtrinsic", move |params, _unsub| {
            let node = submit_node.clone();
            async move {
                node.calls
                    .lock()
                    .unwrap()
                    .push("author_submitAndWatchExtrinsic".into());
                let params: Value = params
                    .map(|p| serde_json::from_str(p.get()).unwrap())
                    .unwrap_or(Value::Null);
                if let Some(code) = node.pool_rejects {
                    let data =
                        serde_json::value::to_raw_value(&format!("Custom error: {code}")).unwrap();
                    return Err(subxt_rpcs::Error::User(subxt_rpcs::UserError {
                        code: 1010,
                        message: "Invalid Transaction".into(),
                        data: Some(data),
                    }));
                }
                *node.submitted.lock().unwrap() =
                    params.get(0).and_then(Value::as_str).map(String::from);
                Ok(vec![
                    subxt_rpcs::client::mock_rpc_client::Json(json!("ready")),
                    subxt_rpcs::client::mock_rpc_client::Json(json!({"inBlock": hash(0x55)})),
                ])
            }
        })
        .build();
    RpcClient::new(mock)
}

pub fn node_with_subnet(metadata: Vec<u8>) -> FakeNode {
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
        pool_rejects: None,
        slot_ms: Some(12_000),
        next_index: 0,
        finality_lag: 0,
        neurons: Vec::new(),
    }
}
