//! The identity code checked against an independent implementation: the Bittensor project's
//! own `bittensor-wallet` (PyPI, installed by `scripts/setup.sh --pytools`), driven through
//! `scripts/oracles/bittensor_wallet_oracle.py`.

use std::path::Path;
use std::process::Command;
use templar_protocol::identity::{Hotkey, Signer, Sr25519Signer, load_hotkey, verify};

fn oracle(args: &[&str]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("python3")
        .arg(root.join("scripts/oracles/bittensor_wallet_oracle.py"))
        .args(args)
        .output()
        .expect("python3 (scripts/setup.sh --pytools puts the venv first on PATH)");
    assert!(
        out.status.success(),
        "oracle {args:?} failed (bittensor-wallet installed by setup.sh --pytools?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_hotkey_file_made_by_bittensor_wallet_loads_with_its_address_from_each_secret_field() {
    let dir = tempfile::tempdir().unwrap();
    let made = oracle(&["make-hotkey", dir.path().to_str().unwrap(), "cold", "hot"]);
    let file = made["file"].as_str().unwrap();
    let expected = made["ss58"].as_str().unwrap();
    let path = templar_protocol::identity::wallet::hotkey_file(
        dir.path().to_str().unwrap(),
        "cold",
        "hot",
    );
    assert_eq!(path, Path::new(file));
    assert_eq!(load_hotkey(&path).unwrap().hotkey().as_str(), expected);

    // The phrase wins; without it the seed, without both the private key: each alone must
    // give the same key.
    let full: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for keep in ["secretPhrase", "secretSeed", "privateKey"] {
        let mut only = full.clone();
        only.retain(|k, _| k == keep || k == "ss58Address");
        let p = dir.path().join(keep);
        std::fs::write(&p, serde_json::to_vec(&only).unwrap()).unwrap();
        assert_eq!(
            load_hotkey(&p).unwrap().hotkey().as_str(),
            expected,
            "from {keep} alone"
        );
    }
}

#[test]
fn signatures_cross_verify_between_rust_and_bittensor_wallet() {
    let seed = "2a".repeat(32);
    let message = b"templar payload digest";
    let message_hex = hex::encode(message);
    let signer = Sr25519Signer::from_seed_hex(&seed).unwrap();

    // Python signs, Rust verifies (same address from the same seed).
    let theirs = oracle(&["sign", &seed, &message_hex]);
    assert_eq!(theirs["ss58"].as_str().unwrap(), signer.hotkey().as_str());
    let their_sig = hex::decode(theirs["signature"].as_str().unwrap()).unwrap();
    verify(signer.hotkey(), message, &their_sig).unwrap();
    assert!(verify(signer.hotkey(), b"another message", &their_sig).is_err());

    // Rust signs, Python verifies; a flipped bit does not verify there either.
    let ours = signer.sign(message);
    let hotkey = signer.hotkey().as_str();
    let check = |sig: &[u8]| oracle(&["verify", hotkey, &message_hex, &hex::encode(sig)]);
    assert_eq!(check(&ours)["valid"], true);
    let mut flipped = ours.clone();
    flipped[5] ^= 0x10;
    assert_eq!(check(&flipped)["valid"], false);

    // Another key's address does not accept the signature.
    let other = Hotkey::parse("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY").unwrap();
    assert!(verify(&other, message, &ours).is_err());
}
