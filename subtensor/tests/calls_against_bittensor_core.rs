//! Call data checked byte for byte against the Bittensor SDK's own SCALE codec
//! (`bittensor_core.Runtime` from `bittensor` 11.3, Rust-backed, independent of subxt),
//! composing the same calls from the same committed metadata.

mod common;

use serde_json::{Value, json};
use subxt::transactions::Payload;
use templar_subtensor::calls::{self, CallError};

struct Case {
    ours: Vec<u8>,
    module: &'static str,
    function: &'static str,
    params: Value,
}

fn hex_arg(bytes: &[u8]) -> Value {
    json!({ "hex": hex::encode(bytes) })
}

fn encode(call: impl Payload, metadata: &subxt::Metadata) -> Vec<u8> {
    calls::call_data(&call, metadata).unwrap()
}

#[test]
fn call_data_equals_the_bittensor_sdks_for_the_same_metadata() {
    let bytes = common::committed_metadata();
    let metadata = subxt::Metadata::decode_from(&bytes).unwrap();

    let commit: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
    let raw128: Vec<u8> = (0..128u8).map(|i| b'a' + i % 26).collect();
    let mut cases = Vec::new();
    for (netuid, uids, values, version) in [
        (3u16, vec![0u16, 1, 5], vec![65535u16, 100, 1], 4u64),
        (277, vec![], vec![], 0),
        (
            65535,
            (0..256).collect(),
            (0..256).map(|v| v * 255).collect(),
            u64::MAX,
        ),
    ] {
        cases.push(Case {
            ours: encode(calls::set_weights(netuid, uids.clone(), values.clone(), version), &metadata),
            module: "SubtensorModule",
            function: "set_mechanism_weights",
            params: json!({"netuid": netuid, "mecid": 0, "dests": uids, "weights": values, "version_key": version}),
        });
        let salt: Vec<u16> = vec![9, 8, 7, 6, 5, 4, 3, 2];
        cases.push(Case {
            ours: encode(
                calls::reveal_weights(netuid, uids.clone(), values.clone(), salt.clone(), version),
                &metadata,
            ),
            module: "SubtensorModule",
            function: "reveal_mechanism_weights",
            params: json!({"netuid": netuid, "mecid": 0, "uids": uids, "values": values, "salt": salt, "version_key": version}),
        });
    }
    cases.push(Case {
        ours: encode(calls::commit_timelocked_weights(9, commit.clone(), 17_200_000), &metadata),
        module: "SubtensorModule",
        function: "commit_timelocked_mechanism_weights",
        params: json!({"netuid": 9, "mecid": 0, "commit": hex_arg(&commit), "reveal_round": 17_200_000u64, "commit_reveal_version": 4}),
    });
    cases.push(Case {
        ours: encode(calls::commit_weights_hash(9, [0xab; 32]), &metadata),
        module: "SubtensorModule",
        function: "commit_mechanism_weights",
        params: json!({"netuid": 9, "mecid": 0, "commit_hash": format!("0x{}", "ab".repeat(32))}),
    });
    for raw in [raw128.clone(), b"short".to_vec(), vec![]] {
        let field = json!({ format!("Raw{}", raw.len()): hex_arg(&raw) });
        cases.push(Case {
            ours: encode(calls::set_commitment(3, &raw).unwrap(), &metadata),
            module: "Commitments",
            function: "set_commitment",
            params: json!({"netuid": 3, "info": {"fields": [field]}}),
        });
    }

    let requests = cases
        .iter()
        .map(|c| {
            json!({"op": "call", "module": c.module, "function": c.function,
                   "params": c.params})
        })
        .collect();
    let answers = common::sdk_codec(requests);
    for (case, answer) in cases.iter().zip(&answers) {
        let sdk = answer["call"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {answer}", case.function));
        assert_eq!(
            hex::encode(&case.ours),
            sdk,
            "{} {}",
            case.function,
            case.params
        );
    }
}

#[test]
fn a_commitment_longer_than_128_bytes_is_refused() {
    assert!(matches!(
        calls::set_commitment(3, &[0; 129]),
        Err(CallError::CommitmentTooLong(129))
    ));
}
