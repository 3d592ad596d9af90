//! The subxt layer against a mock subtensor node (no live chain can run here): a scripted
//! JSON-RPC client that answers the legacy RPC methods from the committed metadata and a few
//! storage values. Covers start-up checks (runtime drift refused, missing subnet refused), a
//! node that never answers (a timeout, not a hang), and storage reads through the generated API.

mod common;

use common::fake_node::{
    BLOCK, FakeNode, NETUID, client, client_of, map_key, node_with_subnet, storage_key,
};
use common::metagraph_answer::FakeNeuron;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use codec::{Decode, Encode};
use frame_metadata::{RuntimeMetadata, RuntimeMetadataPrefixed};
use serde_json::{Value, json};
use templar_protocol::chain::weights::WeightsState;
use templar_protocol::chain::{Chain, ChainError};
use templar_protocol::identity::sr25519::Sr25519Signer;
use templar_subtensor::chain::{SubtensorChain, SubtensorSettings};
use templar_subtensor::errors::SubtensorError;

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
    match err.backend::<SubtensorError>() {
        Some(SubtensorError::RuntimeMismatch {
            spec_version,
            detail,
        }) => {
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
        _ => panic!("expected a runtime mismatch, got {err}"),
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
    let value_ty = common::storage_value_type("Commitments", "CommitmentOf");
    let answers = common::sdk_codec(vec![
        json!({"op": "encode", "type": format!("scale_info::{value_ty}"),
                    "value": {"deposit": 1_000_000, "block": 77,
                              "info": {"fields": [{ format!("Raw{}", raw.len()): {"hex": hex::encode(raw)} }]}}}),
    ]);
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
    // A hotkey that left the subnet keeps its commitment in storage.
    let gone = [7u8; 32];
    node.storage
        .insert(commitment_of(&gone), registration_bytes(raw.as_bytes()));
    node.neurons = [[0u8; 32], account, [1; 32], [2; 32], other]
        .into_iter()
        .map(|hotkey| FakeNeuron {
            hotkey,
            validator_permit: false,
            incentive: 0,
            alpha_stake: 0,
            tao_stake: 0,
            total_stake: 0,
        })
        .collect();
    let calls = node.calls.clone();
    let chain = SubtensorChain::from_rpc(client(node), settings(), signer())
        .await
        .unwrap();

    // All of them at once: the metagraph's hotkeys and one iteration over the subnet's
    // commitments, not a read per uid.
    let before = calls.lock().unwrap().len();
    let all = chain.commitments().await.unwrap();
    let during = calls.lock().unwrap()[before..].to_vec();
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), [1], "{all:?}");
    assert_eq!(all[&1].bucket, bucket);
    let gets = during.iter().filter(|m| *m == "state_getStorage").count();
    assert_eq!(gets, 0, "no read per uid: {during:?}");
    assert!(
        during.iter().any(|m| m == "state_getKeysPaged"),
        "{during:?}"
    );

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
    // A commitment in another format leaves that peer out instead of failing the caller.
    assert_eq!(
        chain.commitment(4).await.unwrap(),
        None,
        "not templar's format"
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
        ("ValidatorPermit", n.clone(), vec![true; 6].encode()),
        ("SubnetworkN", n.clone(), 6u16.encode()),
        ("MinAllowedWeights", n.clone(), 1u16.encode()),
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
    let events_ty = common::storage_value_type("System", "Events");
    let pallet = md.pallet_by_name("SubtensorModule").unwrap().error_index();
    let value = json!([{
        "phase": {"ApplyExtrinsic": 0},
        "event": {"System": {"ExtrinsicFailed": {
            "dispatch_error": {"Module": {"index": pallet, "error": {"hex": hex::encode([error_index, 0, 0, 0])}}},
            "dispatch_info": {"weight": {"ref_time": 1000, "proof_size": 0}, "class": "Normal", "pays_fee": "Yes"}
        }}},
        "topics": []
    }]);
    let answers = common::sdk_codec(vec![
        json!({"op": "encode", "type": format!("scale_info::{events_ty}"), "value": value}),
    ]);
    hex::decode(
        answers[0]["data"]
            .as_str()
            .unwrap_or_else(|| panic!("{}", answers[0])),
    )
    .unwrap()
}

/// What `set_weights` answers on a `weights_node`, for checks made before anything is sent.
async fn weights_refusal(version_key: u64, last_update: u64) -> ChainError {
    weights_refusal_on(weights_node(version_key, last_update), &[(1, 1.0)]).await
}

async fn weights_refusal_on(node: FakeNode, weights: &[(u16, f64)]) -> ChainError {
    let calls = node.calls.clone();
    let chain = SubtensorChain::from_rpc(client(node), settings(), signer())
        .await
        .unwrap();
    let err = chain
        .set_weights(&signer_hotkey(), weights)
        .await
        .unwrap_err();
    let sent = calls
        .lock()
        .unwrap()
        .iter()
        .any(|m| m.starts_with("author_"));
    assert!(!sent, "nothing is submitted when the chain would refuse it");
    err
}

#[tokio::test]
async fn mock_node_weights_below_the_subnets_version_key_are_refused_before_sending() {
    let err = weights_refusal(9, 0).await;
    assert_eq!(
        err,
        ChainError::VersionKeyTooLow {
            ours: 0,
            required: 9
        }
    );
}

/// What the chain checks only when timelocked weights are revealed (a failure there is a
/// silent trace): a validator permit, and at least MinAllowedWeights uids (capped by the
/// subnet's size), both refused before sending, naming the rule.
#[tokio::test]
async fn mock_node_weights_without_a_permit_or_with_too_few_uids_are_refused_before_sending() {
    let n = NETUID.encode();
    let mut no_permit = weights_node(0, 0);
    no_permit.storage.insert(
        storage_key("SubtensorModule", "ValidatorPermit", &n),
        vec![true, true, true, true, true, false].encode(),
    );
    let err = weights_refusal_on(no_permit, &[(1, 1.0)]).await;
    assert_eq!(err, ChainError::NoValidatorPermit(signer_hotkey()));

    let mut min_four = weights_node(0, 0);
    min_four.storage.insert(
        storage_key("SubtensorModule", "MinAllowedWeights", &n),
        4u16.encode(),
    );
    let err = weights_refusal_on(min_four, &[(1, 1.0), (2, 0.5)]).await;
    assert!(
        matches!(&err, ChainError::InvalidWeights(m) if m.contains("MinAllowedWeights needs 4")),
        "{err}"
    );
}

/// A chain on hash commit-reveal (v2), whose reveals this node does not schedule: its
/// weights are refused with the reason before anything is committed.
#[tokio::test]
async fn mock_node_a_chain_on_commit_reveal_v2_is_refused_before_committing() {
    let mut v2 = weights_node(0, 0);
    v2.storage.insert(
        storage_key(
            "SubtensorModule",
            "CommitRevealWeightsEnabled",
            &NETUID.encode(),
        ),
        true.encode(),
    );
    v2.storage.insert(
        storage_key("SubtensorModule", "CommitRevealWeightsVersion", &[]),
        2u16.encode(),
    );
    let err = weights_refusal_on(v2, &[(1, 1.0)]).await;
    assert!(
        matches!(
            err.backend::<SubtensorError>(),
            Some(SubtensorError::CommitReveal(m)) if m.contains("CommitRevealWeightsVersion is 2")
        ),
        "{err}"
    );
}

/// A node on commit-reveal v4 with the epoch settings the reveal round needs; our uid's
/// `LastUpdate` is `last_update` (the mock never moves it: a commit it takes is never seen
/// to apply).
fn commit_reveal_node(tempo: u16, last_update: u64) -> FakeNode {
    let mut node = weights_node(0, last_update);
    let n = NETUID.encode();
    for (entry, key, value) in [
        ("CommitRevealWeightsEnabled", n.clone(), true.encode()),
        ("CommitRevealWeightsVersion", vec![], 4u16.encode()),
        ("Tempo", n.clone(), tempo.encode()),
        ("BlocksSinceLastStep", n.clone(), 3u64.encode()),
        ("RevealPeriodEpochs", n.clone(), 1u64.encode()),
    ] {
        node.storage
            .insert(storage_key("SubtensorModule", entry, &key), value);
    }
    node
}

/// Ten unrevealed commits of this hotkey (the chain's most) in `TimelockedWeightCommits`:
/// the eleventh is refused before sending, named.
#[tokio::test]
async fn mock_node_an_eleventh_unrevealed_commit_is_refused_before_sending() {
    let mut node = commit_reveal_node(10, 0);
    let me = signer().public();
    for (epoch, count) in [(7u64, 6), (8u64, 4)] {
        let commits: Vec<([u8; 32], u64, Vec<u8>, u64)> = (0..count)
            .map(|i| (me, 100 + i, vec![1, 2, 3], 9))
            .collect();
        let key = map_key(
            &node.metadata,
            "SubtensorModule",
            "TimelockedWeightCommits",
            &[NETUID.encode(), epoch.encode()],
        );
        node.storage.insert(key, commits.encode());
    }
    let err = weights_refusal_on(node, &[(1, 1.0)]).await;
    assert!(
        matches!(
            err.backend::<SubtensorError>(),
            Some(SubtensorError::CommitReveal(m)) if m.contains("10 unrevealed") && m.contains("TooManyUnrevealedCommits")
        ),
        "{err}"
    );
}

/// After a timelocked commit the node reports it: awaiting its reveal while the reveal is not
/// due, not revealed once the head passes the block it was due by and `LastUpdate` never
/// moved past the commit (the chain refused it at the reveal).
#[tokio::test]
async fn mock_node_a_commit_that_never_applies_is_reported_not_revealed() {
    let commit_block = BLOCK - 300;
    for (tempo, expect) in [
        (10u16, WeightsState::NotRevealed),
        (360, WeightsState::AwaitingReveal),
    ] {
        let node = commit_reveal_node(tempo, commit_block);
        let chain = SubtensorChain::from_rpc(client(node), settings(), signer())
            .await
            .unwrap();
        let me = signer_hotkey();
        assert_eq!(
            chain.weights_on_chain(&me).await.unwrap(),
            None,
            "nothing sent yet"
        );
        chain.set_weights(&me, &[(1, 1.0), (2, 0.5)]).await.unwrap();
        let report = chain.weights_on_chain(&me).await.unwrap().unwrap();
        assert_eq!(report.state, expect, "tempo {tempo}: {report:?}");
        assert_eq!(report.committed_block, commit_block);
        // Due after the reveal epoch's start plus one epoch: more than one epoch after the
        // commit, at most three.
        let epoch = u64::from(tempo) + 1;
        let due_in = report.due_block.unwrap() - commit_block;
        assert!(
            due_in > epoch && due_in <= 3 * epoch,
            "{report:?} tempo {tempo}"
        );
        assert!(report.reveal_round.is_some());
    }
}

#[tokio::test]
async fn mock_node_weights_inside_the_rate_limit_are_refused_before_sending() {
    let last = BLOCK - 10;
    let err = weights_refusal(0, last).await;
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
    let me = signer_hotkey();
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
    let answers = common::sdk_codec(vec![
        json!({"op": "extrinsic", "data": sent.trim_start_matches("0x")}),
    ]);
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

/// The signature of an extrinsic as sent is over the payload the Bittensor SDK's codec builds
/// on its own from the same call and extensions (era born at the best block, nonce, tip,
/// genesis hash, the runtime's spec and transaction versions), and the SDK verifies it; the
/// same payload with another nonce does not verify.
#[tokio::test]
async fn mock_node_the_signature_covers_the_payload_the_sdk_builds() {
    let node = Arc::new(weights_node(0, 0));
    let chain = SubtensorChain::from_rpc(client_of(node.clone()), settings(), signer())
        .await
        .unwrap();
    chain
        .set_weights(&signer_hotkey(), &[(1, 1.0), (2, 0.5)])
        .await
        .unwrap();
    let sent = node.submitted.lock().unwrap().clone().unwrap();
    let x = common::sdk_codec(vec![
        json!({"op": "extrinsic", "data": sent.trim_start_matches("0x")}),
    ])[0]["value"]
        .clone();
    let args: serde_json::Map<String, Value> = x["call"]["call_args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap().to_string(), a["value"].clone()))
        .collect();
    // The runtime version the node signs for: System.Version in the served metadata.
    let md = subxt_metadata::Metadata::decode_from(&common::committed_metadata()).unwrap();
    let version = md
        .pallet_by_name("System")
        .unwrap()
        .constant_by_name("Version")
        .unwrap()
        .value()
        .to_vec();
    type Version = (String, String, u32, u32, u32, Vec<([u8; 8], u32)>, u32);
    let (_, _, _, spec_version, _, _, transaction_version) =
        Version::decode(&mut &version[..]).unwrap();
    let (period, phase) = (x["era"][0].as_u64().unwrap(), x["era"][1].as_u64().unwrap());
    assert_eq!(phase, BLOCK % period);
    let signature = x["signature"]["Sr25519"]
        .as_str()
        .unwrap()
        .trim_start_matches("0x")
        .to_string();
    let payload_with = |nonce: u64| {
        json!({"op": "signature_payload", "spec_version": spec_version,
               "transaction_version": transaction_version,
               "call": "", "era": {"period": period, "current": BLOCK}, "nonce": nonce,
               "tip": 0, "genesis_hash": hex::encode([0x11; 32]),
               "era_block_hash": hex::encode([0x22; 32])})
    };
    let call = common::sdk_codec(vec![json!({"op": "call", "module": "SubtensorModule",
        "function": "set_mechanism_weights", "params": args})])[0]["call"]
        .as_str()
        .unwrap()
        .to_string();
    let nonce = x["nonce"].as_u64().unwrap();
    let mut requests = Vec::new();
    for n in [nonce, nonce + 1] {
        let mut r = payload_with(n);
        r["call"] = json!(call);
        requests.push(r);
    }
    let payloads = common::sdk_codec(requests);
    let verify = |payload: &Value| {
        let message = payload["payload"]
            .as_str()
            .unwrap_or_else(|| panic!("{payload}"));
        common::sdk_codec(vec![json!({"op": "verify", "message": message,
            "signature": signature, "ss58": x["address"]})])[0]["valid"]
            .as_bool()
            .unwrap()
    };
    assert!(verify(&payloads[0]), "the SDK's payload verifies: {x}");
    assert!(!verify(&payloads[1]), "another nonce does not");
}

/// The transaction pool refuses the extrinsic before dispatch (subtensor's transaction
/// extension: JSON-RPC error 1010, `Custom error: N` in its data): each code comes back as
/// the named error, not as an opaque RPC failure.
#[tokio::test]
async fn mock_node_pool_rejections_come_back_named() {
    let me = signer_hotkey();
    for (code, expect) in [
        (10, "is not registered"),
        (6, "RateLimitExceeded"),
        (1, "StakeAmountTooLow"),
        (19, "UidNotFound"),
    ] {
        let mut node = weights_node(0, 0);
        node.pool_rejects = Some(code);
        let chain = SubtensorChain::from_rpc(client(node), settings(), signer())
            .await
            .unwrap();
        let err = chain.set_weights(&me, &[(1, 1.0)]).await.unwrap_err();
        assert!(
            !matches!(err, ChainError::Rpc(_)) && err.to_string().contains(expect),
            "custom error {code}: {err}"
        );
        if code == 10 {
            assert_eq!(err, ChainError::NotRegistered(me.clone()));
        }
    }
}

/// The block time is the runtime's Aura slot (a local fast-block subtensor: 250 ms), not a
/// constant; a runtime that cannot say keeps the configured one.
#[tokio::test]
async fn mock_node_block_time_is_the_runtimes_slot_duration() {
    for (slot, expect) in [
        (Some(250), Duration::from_millis(250)),
        (Some(12_000), Duration::from_secs(12)),
        (None, Duration::from_secs(7)),
    ] {
        let mut node = node_with_subnet(common::committed_metadata());
        node.slot_ms = slot;
        let mut s = settings();
        s.block_time = Duration::from_secs(7);
        let chain = SubtensorChain::from_rpc(client(node), s, signer())
            .await
            .unwrap();
        assert_eq!(chain.block_interval(), expect, "slot {slot:?}");
    }
}

/// Reads and signing happen at the best block while finality lags 40 blocks behind, and
/// nonces come from the pool's count (`system_accountNextIndex`: 7, where the state says 0),
/// then from our own count for a back-to-back extrinsic the pool does not count yet.
#[tokio::test]
async fn mock_node_signs_at_the_best_block_with_the_pools_next_nonce() {
    let mut node = weights_node(0, 0);
    node.next_index = 7;
    node.finality_lag = 40;
    let node = Arc::new(node);
    let chain = SubtensorChain::from_rpc(client_of(node.clone()), settings(), signer())
        .await
        .unwrap();
    assert_eq!(chain.current_block().await.unwrap(), BLOCK);
    let me = signer_hotkey();
    let mut sent = Vec::new();
    for _ in 0..2 {
        chain.set_weights(&me, &[(1, 1.0), (2, 0.5)]).await.unwrap();
        let bytes = node.submitted.lock().unwrap().clone().unwrap();
        let answers = common::sdk_codec(vec![
            json!({"op": "extrinsic", "data": bytes.trim_start_matches("0x")}),
        ]);
        sent.push(answers[0]["value"].clone());
    }
    assert_eq!(sent[0]["nonce"], json!(7), "{}", sent[0]);
    assert_eq!(sent[1]["nonce"], json!(8), "{}", sent[1]);
    // Mortal from the best block: the era's phase is the best block's position in its
    // period, not the finalized block's.
    // The SDK's codec gives a mortal era as [period, phase].
    let era = &sent[0]["era"];
    let (period, phase) = (era[0].as_u64().unwrap(), era[1].as_u64().unwrap());
    assert_eq!(phase, BLOCK % period, "{era}");
    assert_ne!(
        phase,
        (BLOCK - 40) % period,
        "{era}: born at the finalized block"
    );
}

/// The node offers the new-style chainHead_v1 / transaction_v1 methods, as a current
/// subtensor node does; the client stays on the legacy methods it is pinned to through start,
/// reads and an extrinsic (this mock answers no new-style method).
#[tokio::test]
async fn mock_node_offering_chain_head_v1_is_still_used_through_the_legacy_methods() {
    let node = Arc::new(weights_node(0, 0));
    let calls = node.calls.clone();
    let chain = SubtensorChain::from_rpc(client_of(node.clone()), settings(), signer())
        .await
        .unwrap();
    chain.metagraph().await.unwrap();
    chain
        .set_weights(&signer_hotkey(), &[(1, 1.0)])
        .await
        .unwrap();
    let calls = calls.lock().unwrap();
    let new_style: Vec<&String> = calls
        .iter()
        .filter(|m| m.starts_with("chainHead_") || m.starts_with("transaction"))
        .collect();
    assert!(new_style.is_empty(), "{new_style:?}");
    assert!(
        calls.iter().any(|m| m == "author_submitAndWatchExtrinsic"),
        "{calls:?}"
    );
}

#[tokio::test]
async fn mock_node_block_subscription_that_drops_is_opened_again() {
    // A fast-block chain: 200 ms slots, so a head goes stale within a second.
    let mut node = node_with_subnet(common::committed_metadata());
    node.slot_ms = Some(200);
    let chain = SubtensorChain::from_rpc(client(node), settings(), signer())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let block = chain.current_block().await.unwrap();
        if block == BLOCK + 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still at block {block} after {} subscriptions",
            chain.head_subscriptions()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        chain.head_subscriptions() >= 3,
        "{} subscriptions",
        chain.head_subscriptions()
    );
}

/// The metagraph in one runtime-API call, decoded by field name; stake is the runtime's total
/// stake, and the Bittensor SDK's own metagraph read of the same bytes agrees on every uid.
#[tokio::test]
async fn mock_node_metagraph_reads_hotkeys_permits_incentive_and_total_stake_as_the_sdk_does() {
    let neurons = fake_neurons();
    let (mg, calls) = metagraph_on(common::committed_metadata(), neurons.clone()).await;
    let runtime_calls: Vec<&String> = calls
        .iter()
        .filter(|m| *m == "state_call SubnetInfoRuntimeApi_get_metagraph")
        .collect();
    let reads: Vec<&String> = calls.iter().filter(|m| is_storage_read(m)).collect();
    assert_eq!(runtime_calls.len(), 1, "one runtime-API call: {calls:?}");
    assert!(reads.is_empty(), "no storage read per uid: {reads:?}");
    assert_eq!(mg.block, BLOCK);
    let uids: Vec<u16> = mg.neurons.iter().map(|n| n.uid).collect();
    assert_eq!(uids, [0, 1, 2]);
    let ours: Vec<(String, bool, f64, f64)> = mg
        .neurons
        .iter()
        .map(|n| {
            let h = n.hotkey.as_str().to_string();
            (h, n.validator_permit, n.incentive, n.stake)
        })
        .collect();
    assert_eq!(
        ours[0],
        (
            templar_protocol::identity::ss58::encode(&[0xaa; 32], 42),
            true,
            0.0,
            2000.0
        )
    );
    assert_eq!((ours[1].1, ours[1].2, ours[1].3), (false, 1.0, 0.0));
    // uid 2 holds more alpha than uid 0 but less total stake: the leader is uid 0.
    assert_eq!(mg.top_validator().map(|n| n.uid), Some(0));

    let bytes = common::metagraph_answer::encode(&common::committed_metadata(), BLOCK, &neurons);
    let sdk = &common::sdk_codec(vec![
        json!({"op": "metagraph", "netuid": NETUID, "data": hex::encode(&bytes)}),
    ])[0];
    assert_eq!(sdk["params"], hex::encode(NETUID.encode()), "{sdk}");
    assert_eq!(sdk["block"], BLOCK);
    let theirs: Vec<(String, bool, f64, f64)> = sdk["neurons"]
        .as_array()
        .unwrap_or_else(|| panic!("{sdk}"))
        .iter()
        .map(|n| {
            (
                n["hotkey"].as_str().unwrap().to_string(),
                n["validator_permit"].as_bool().unwrap(),
                n["incentive"].as_f64().unwrap(),
                n["total_stake"].as_u64().unwrap() as f64 / 1e9,
            )
        })
        .collect();
    assert_eq!(ours, theirs);
}

fn is_storage_read(method: &str) -> bool {
    [
        "state_getStorage",
        "state_queryStorageAt",
        "state_getKeysPaged",
    ]
    .contains(&method)
}

/// uid 0: a validator (1000 alpha, root TAO making 2000 in total); uid 1: a miner with all the
/// incentive; uid 2: a validator with more alpha (1500) but less total stake.
fn fake_neurons() -> Vec<FakeNeuron> {
    let tao = 1_000_000_000u64;
    vec![
        FakeNeuron {
            hotkey: [0xaa; 32],
            validator_permit: true,
            incentive: 0,
            alpha_stake: 1000 * tao,
            tao_stake: 5000 * tao,
            total_stake: 2000 * tao,
        },
        FakeNeuron {
            hotkey: [0xbb; 32],
            validator_permit: false,
            incentive: u16::MAX,
            alpha_stake: 0,
            tao_stake: 0,
            total_stake: 0,
        },
        FakeNeuron {
            hotkey: [0xcc; 32],
            validator_permit: true,
            incentive: 0,
            alpha_stake: 1500 * tao,
            tao_stake: 0,
            total_stake: 1500 * tao,
        },
    ]
}

/// A runtime whose metagraph `incentives` are `Vec<Compact<PerU16>>` (the SDK's type; a
/// newtype, so another type hash): it starts, and the same bytes read as the same metagraph.
#[tokio::test]
async fn mock_node_with_incentives_as_a_newtype_starts_and_reads_the_same_metagraph() {
    let variant = common::metadata_variants::metagraph_incentives_as_per_u16();
    let (mg, _) = metagraph_on(common::metadata_variants::encoded(variant), fake_neurons()).await;
    let (committed, _) = metagraph_on(common::committed_metadata(), fake_neurons()).await;
    assert_eq!(mg, committed);
    assert_eq!(mg.neurons[1].incentive, 1.0);
}

/// The metagraph a mock node serving `metadata` answers with `neurons`, and the RPC methods the
/// read took.
async fn metagraph_on(
    metadata: Vec<u8>,
    neurons: Vec<FakeNeuron>,
) -> (templar_protocol::chain::Metagraph, Vec<String>) {
    let mut node = node_with_subnet(metadata);
    node.neurons = neurons;
    let calls = node.calls.clone();
    let chain = SubtensorChain::from_rpc(client(node), settings(), signer())
        .await
        .unwrap();
    let before = calls.lock().unwrap().len();
    let mg = chain.metagraph().await.unwrap();
    let during = calls.lock().unwrap()[before..].to_vec();
    (mg, during)
}

/// A validator's chain work for one window against the mock, at 8 and at 64 uids: the
/// metagraph, every commitment, weights sent and their fate read back. The requests it takes
/// do not grow with the uids (one runtime-API call, one paged iteration; pages of 64 keys);
/// prints the request counts and the time (the mock answers at once: this is the client's
/// own work, not the network's latency).
#[tokio::test]
async fn mock_node_a_validators_chain_work_per_window_does_not_grow_with_the_uids() {
    let registration = registration_bytes(
        format!(
            "{}{}{}",
            "0123456789abcdef".repeat(2),
            "K".repeat(32),
            "S".repeat(64)
        )
        .as_bytes(),
    );
    let mut counts = Vec::new();
    for uids in [8u16, 64] {
        let mut node = weights_node(0, 0);
        let me = signer().public();
        node.neurons = (0..uids)
            .map(|uid| {
                let mut hotkey = [0u8; 32];
                hotkey[..2].copy_from_slice(&uid.to_le_bytes());
                FakeNeuron {
                    hotkey: if uid == OWN_UID { me } else { hotkey },
                    validator_permit: uid == OWN_UID,
                    incentive: 0,
                    alpha_stake: 0,
                    tao_stake: 0,
                    total_stake: 0,
                }
            })
            .collect();
        for n in &node.neurons {
            let mut key = NETUID.encode();
            key.extend(sp_crypto_hashing::twox_64(&n.hotkey));
            key.extend(n.hotkey);
            node.storage.insert(
                storage_key("Commitments", "CommitmentOf", &key),
                registration.clone(),
            );
        }
        let calls = node.calls.clone();
        let chain = SubtensorChain::from_rpc(client(node), settings(), signer())
            .await
            .unwrap();
        let before = calls.lock().unwrap().len();
        let started = std::time::Instant::now();
        let mg = chain.metagraph().await.unwrap();
        let commitments = chain.commitments().await.unwrap();
        chain
            .set_weights(&signer_hotkey(), &[(1, 1.0)])
            .await
            .unwrap();
        chain.weights_on_chain(&signer_hotkey()).await.unwrap();
        let elapsed = started.elapsed();
        let requests = calls.lock().unwrap().len() - before;
        assert_eq!(mg.neurons.len(), usize::from(uids));
        assert_eq!(commitments.len(), usize::from(uids));
        println!(
            "{{\"uids\": {uids}, \"rpc_requests\": {requests}, \"ms\": {:.1}}}",
            elapsed.as_secs_f64() * 1e3
        );
        counts.push(requests);
    }
    assert!(
        counts[1] <= counts[0] + 2,
        "requests grow with the uids: {counts:?}"
    );
}
