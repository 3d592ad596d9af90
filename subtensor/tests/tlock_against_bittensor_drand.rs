//! Commit-reveal v4 checked against the Bittensor project's own implementation
//! (`bittensor-drand` 2.0 on PyPI, Rust-backed, the library the Python SDK commits with) and
//! an independent SCALE encoder (`scalecodec`), through `scripts/oracles/drand_oracle.py`.
//! The test vector is quicknet's real round-1000 signature, so decrypting proves the
//! ciphertext is what the chain's Drand pallet decrypts with a published pulse.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use templar_subtensor::reveal::EpochState;
use templar_subtensor::tlock::{
    TlockError, WeightsTlockPayload, decrypt_with_signature, encrypt_to_round,
};

const ROUND: u64 = 1000;
/// Quicknet's signature of round 1000 (also in subtensor's Drand pallet tests).
const ROUND_SIGNATURE: &str = "b44679b9a59af2ec876b1a6b1ad52ea9b1615fc3982b19576350f93447cb1125e342b73a8dd2bacbe47e4b6b63ed5e39";

fn oracle(requests: Vec<Value>) -> Vec<Value> {
    common::oracle("drand_oracle.py", requests)
}

fn payload(i: u16) -> WeightsTlockPayload {
    let n = 1 + usize::from(i % 5) * 7;
    WeightsTlockPayload {
        hotkey: (0..32)
            .map(|b| (b as u8).wrapping_mul(31).wrapping_add(i as u8))
            .collect(),
        uids: (0..n as u16).map(|u| u * 3 + i).collect(),
        values: (0..n as u16)
            .map(|u| u.wrapping_mul(9_973).wrapping_add(i))
            .collect(),
        version_key: u64::from(i) * 1_000_003,
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn the_payload_bytes_equal_an_independent_scale_encoders() {
    let requests = (0..6)
        .map(|i| {
            let p = payload(i);
            json!({"op": "payload", "hotkey": hex::encode(&p.hotkey), "uids": p.uids,
                   "values": p.values, "version_key": p.version_key})
        })
        .collect();
    for (i, answer) in oracle(requests).iter().enumerate() {
        assert_eq!(
            codec::Encode::encode(&payload(i as u16)),
            bytes(&answer["scale"]),
            "payload {i}"
        );
    }
}

#[test]
fn a_rust_commit_decrypts_in_bittensor_drand_and_a_python_commit_in_rust() {
    let payloads: Vec<_> = (0..4).map(payload).collect();
    let sealed: Vec<Vec<u8>> = payloads.iter().map(|p| p.seal(ROUND).unwrap()).collect();
    let mut requests: Vec<Value> = sealed
        .iter()
        .map(|c| json!({"op": "decrypt", "ciphertext": hex::encode(c), "signature": ROUND_SIGNATURE}))
        .collect();
    requests.extend(payloads.iter().map(
        |p| json!({"op": "encrypt", "data": hex::encode(codec::Encode::encode(p)), "round": ROUND}),
    ));
    // A commit to another round must not open with round 1000's signature, in either library.
    let other_round = encrypt_to_round(b"not yet", ROUND + 1).unwrap();
    requests.push(json!({"op": "decrypt", "ciphertext": hex::encode(&other_round), "signature": ROUND_SIGNATURE}));
    let answers = oracle(requests);

    let signature = hex::decode(ROUND_SIGNATURE).unwrap();
    for (i, p) in payloads.iter().enumerate() {
        assert_eq!(
            bytes(&answers[i]["data"]),
            codec::Encode::encode(p),
            "rust -> python {i}"
        );
        let from_python = bytes(&answers[payloads.len() + i]["ciphertext"]);
        assert_eq!(
            &WeightsTlockPayload::open(&from_python, &signature).unwrap(),
            p,
            "python -> rust {i}"
        );
    }
    assert!(
        answers.last().unwrap()["error"].is_string(),
        "{:?}",
        answers.last()
    );
    assert!(decrypt_with_signature(&other_round, &signature).is_err());
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn the_reveal_round_equals_the_sdks_for_the_same_epoch_state() {
    // A long block time (3,000 s, a thousand drand rounds per block) makes one block of error
    // in the reveal-block prediction a thousand rounds off, far beyond the second or two that
    // pass between the two computations.
    let block_secs = 3000.0;
    let mut states = Vec::new();
    for (tempo, since, pending, period) in [
        (10u16, 5u64, 0u64, 1u64),
        (10, 9, 0, 1),
        (10, 0, 0, 2),
        (360, 100, 0, 1),
        (360, 359, 0, 3),
        (100, 5, 150, 1),
        (100, 5, 150, 2),
        (99, 50_401, 0, 1),
    ] {
        let last_epoch_block = 1_000;
        states.push((
            EpochState {
                current_block: last_epoch_block + since.min(5_000),
                tempo,
                last_epoch_block,
                pending_epoch_at: if pending > 0 {
                    last_epoch_block + pending
                } else {
                    0
                },
                subnet_epoch_index: 42,
                blocks_since_last_step: since,
            },
            period,
        ));
    }
    let requests = states
        .iter()
        .map(|(s, period)| {
            json!({"op": "commit_v2", "uids": [1, 2], "values": [65535, 3], "version_key": 1,
                   "state": {"last_epoch_block": s.last_epoch_block, "pending_epoch_at": s.pending_epoch_at,
                             "subnet_epoch_index": s.subnet_epoch_index, "tempo": s.tempo,
                             "blocks_since_last_step": s.blocks_since_last_step,
                             "current_block": s.current_block},
                   "reveal_period": period, "block_time": block_secs, "hotkey": "00".repeat(32)})
        })
        .collect();
    let answers = oracle(requests);
    for ((state, period), answer) in states.iter().zip(&answers) {
        let at = answer["now"].as_f64().unwrap();
        let ours = state.reveal_round(*period, block_secs, at).unwrap();
        let sdk = answer["round"].as_u64().unwrap();
        assert!(
            ours.abs_diff(sdk) <= 1,
            "{state:?} period {period}: ours {ours}, sdk {sdk}"
        );
        // The SDK's commit is a timelock ciphertext this code reads (round 1000's signature
        // is simply the wrong key for it, not unreadable input).
        let commit = bytes(&answer["ciphertext"]);
        let signature = hex::decode(ROUND_SIGNATURE).unwrap();
        let err = decrypt_with_signature(&commit, &signature).unwrap_err();
        assert!(matches!(err, TlockError::Decrypt(_)), "{err}");
    }
    assert!(now() >= answers[0]["now"].as_f64().unwrap());
}

#[test]
fn the_hash_commit_equals_scalecodec_and_blake2b_of_the_same_fields() {
    use templar_subtensor::hash_commit::HashCommit;
    let commits: Vec<HashCommit> = (0..5u16)
        .map(|i| HashCommit {
            hotkey: [i as u8 + 1; 32],
            netuid_index: i * 4096 + 3,
            uids: (0..i * 3).collect(),
            values: (0..i * 3).map(|v| v * 1_000).collect(),
            salt: HashCommit::random_salt(),
            version_key: u64::from(i) << 40,
        })
        .collect();
    let requests = commits
        .iter()
        .map(|c| {
            json!({"op": "hash_commit", "hotkey": hex::encode(c.hotkey), "netuid_index": c.netuid_index,
                   "uids": c.uids, "values": c.values, "salt": c.salt, "version_key": c.version_key})
        })
        .collect();
    for (c, answer) in commits.iter().zip(oracle(requests)) {
        assert_eq!(
            hex::encode(c.hash()),
            answer["hash"].as_str().unwrap(),
            "{c:?}"
        );
    }
    let mut other = commits[1].clone();
    other.salt[0] ^= 1;
    assert_ne!(
        other.hash(),
        commits[1].hash(),
        "the salt is part of the hash"
    );
}
