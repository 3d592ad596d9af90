//! The chain weight conversion checked against the Bittensor SDK itself (`bittensor` 11.3 on
//! PyPI, installed by `scripts/setup.sh --pytools`), through
//! `scripts/oracles/bittensor_weights_oracle.py`: the same clipped shares and the same u16
//! uids and values, bit for bit, for many score vectors.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use templar_protocol::chain::weights::{clip_to_max_weight, normalize};

/// A small deterministic generator (xorshift), so the cases are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn cases() -> Vec<serde_json::Value> {
    let mut rng = Rng(0x7e3a_1a2b_5eed);
    let mut out = Vec::new();
    for i in 0..300 {
        let n = 1 + (rng.next() % 40) as usize;
        let weights: Vec<f64> = (0..n)
            .map(|_| match rng.next() % 7 {
                0 => 0.0,
                // With 1.0 the largest, 0.5 upscales to 32767.5, a tie (the only one a
                // dyadic share reaches; both roundings give 32768 there).
                1 => 0.5,
                2 => 1.0,
                3 => rng.unit() * 1e-6,
                _ => rng.unit(),
            })
            .collect();
        let uids: Vec<u16> = (0..n as u16).map(|u| u * 3 + (i % 3) as u16).collect();
        let limit = [0.05, 0.1, 0.25, 0.5, 1.0, 0.01][i % 6];
        out.push(serde_json::json!({"uids": uids, "weights": weights, "limit": limit}));
    }
    out.push(serde_json::json!({"uids": [1, 2], "weights": [0.0, 0.0], "limit": 0.5}));
    out
}

fn oracle(cases: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = Command::new("python3")
        .arg(root.join("scripts/oracles/bittensor_weights_oracle.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/setup.sh --pytools puts the venv first on PATH)");
    let input = serde_json::to_vec(&serde_json::json!({ "cases": cases })).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "oracle failed (bittensor installed by setup.sh --pytools?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn u16s(v: &serde_json::Value) -> Vec<u16> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u16)
        .collect()
}

#[test]
fn clipping_and_u16_values_equal_the_bittensor_sdks() {
    let cases = cases();
    let expected = oracle(&cases);
    assert_eq!(expected.len(), cases.len());
    let (mut clipped_cases, mut dropped) = (0, 0);
    for (case, want) in cases.iter().zip(&expected) {
        let weights = floats(&case["weights"]);
        let uids = u16s(&case["uids"]);
        let limit = case["limit"].as_f64().unwrap();
        let ours = clip_to_max_weight(&weights, limit);
        if want.get("error").is_some() {
            assert!(ours.is_err(), "{case}: the SDK refuses, we gave {ours:?}");
            continue;
        }
        let ours = ours.unwrap();
        let theirs = floats(&want["clipped"]);
        // Bit for bit: the same operations in the same order.
        assert_eq!(ours, theirs, "clipped shares of {case}");
        let total: f64 = weights.iter().sum();
        if weights.iter().any(|w| w / total > limit) {
            clipped_cases += 1;
        }
        let (u, v) = normalize(&uids, &ours).unwrap();
        assert_eq!(u, u16s(&want["uids"]), "{case}");
        assert_eq!(v, u16s(&want["values"]), "{case}");
        let (u, v) = normalize(&uids, &weights).unwrap();
        assert_eq!(u, u16s(&want["rawUids"]), "{case}");
        assert_eq!(v, u16s(&want["rawValues"]), "{case}");
        dropped += weights.iter().filter(|w| **w > 0.0).count() - u.len();
    }
    assert!(
        clipped_cases > 50,
        "the limit must bite in many cases: {clipped_cases}"
    );
    assert!(
        dropped > 20,
        "weights that round to 0 must be exercised: {dropped}"
    );
}
