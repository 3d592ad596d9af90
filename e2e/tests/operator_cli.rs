//! The `templar-operator` binary as a cluster admin runs it (no cluster here: the commands
//! that need none, and the clear failure of the one that does).

use std::process::Command;
use templar_e2e::{binary, node, repo_root};

fn operator(args: &[&str]) -> std::process::Output {
    Command::new(binary("templar-operator"))
        .args(args)
        .current_dir(repo_root())
        // No in-cluster service account and no kubeconfig.
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("HOME", "/nonexistent")
        .output()
        .expect("templar-operator runs")
}

#[test]
fn crd_prints_the_checked_in_definitions() {
    let out = operator(&["crd"]);
    assert!(out.status.success());
    let checked_in =
        std::fs::read_to_string(repo_root().join("crds/templar.tplr.ai.yaml")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), checked_in);
}

#[test]
fn bench_prints_throughput_and_peak_rss_as_json() {
    let out = operator(&["bench", "--crs", "200", "--passes", "2", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["crs"], 200);
    assert_eq!(report["passes"], 2);
    assert!(report["crs_per_sec"].as_f64().unwrap() > 0.0);
    // 4 objects per resource, each at least a few hundred bytes.
    assert!(report["apply_bytes"].as_u64().unwrap() > 200 * 4 * 300);
    assert!(report["peak_rss_mb"].as_f64().unwrap() > 0.0);
}

#[test]
fn run_without_a_cluster_fails_with_a_reason() {
    let out = operator(&["run", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no Kubernetes configuration"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn node_with_a_wallet_lacking_its_hotkey_fails_with_a_reason() {
    let wallet = tempfile::tempdir().unwrap();
    std::fs::write(wallet.path().join("hotkey-0"), "miner-0\n").unwrap();
    let out = node(&[
        "run",
        "--role",
        "miner",
        "--wallet",
        wallet.path().to_str().unwrap(),
        "--ordinal",
        "3",
        "--devnet",
        "file:///nonexistent",
        "--store",
        "file:///nonexistent",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hotkey-3"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn node_wallet_prints_the_address_of_a_hotkey_made_by_bittensor_wallet() {
    // The Bittensor project's own library makes the wallet (scripts/setup.sh --pytools).
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let made = std::process::Command::new("python3")
        .arg(root.join("scripts/oracles/bittensor_wallet_oracle.py"))
        .args(["make-hotkey", dir.path().to_str().unwrap(), "cold", "hot"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let path = dir.path().to_str().unwrap();
    let out = node(&[
        "wallet",
        "--wallet.path",
        path,
        "--wallet.name",
        "cold",
        "--wallet.hotkey",
        "hot",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), made["ss58"].as_str().unwrap());
    // Nothing secret is printed: not the phrase, seed or private key of the file.
    let file = std::fs::read_to_string(made["file"].as_str().unwrap()).unwrap();
    let keyfile: serde_json::Value = serde_json::from_str(&file).unwrap();
    for secret in ["secretPhrase", "secretSeed", "privateKey"] {
        let s = keyfile[secret].as_str().unwrap();
        assert!(!stdout.contains(s), "{secret} printed");
    }
    // A missing hotkey names the file it looked for.
    let out = node(&[
        "wallet",
        "--wallet.path",
        path,
        "--wallet.name",
        "cold",
        "--wallet.hotkey",
        "absent",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cold/hotkeys/absent"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
