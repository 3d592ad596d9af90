//! The `templar-node` binary as a user runs it.

use templar_e2e::node;

#[test]
fn train_reports_progress_as_json() {
    let out = node(&[
        "train",
        "--hparams",
        "hparams/tiny-sparseloco.toml",
        "--steps",
        "3",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "train failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["windows"], 3);
    assert_eq!(report["window_losses"].as_array().unwrap().len(), 3);
    let (before, after) = (
        report["initial_eval_loss"].as_f64().unwrap(),
        report["final_eval_loss"].as_f64().unwrap(),
    );
    assert!(after < before, "held-out loss {before} -> {after}");
    assert!(report["payload_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn bad_hyperparameters_fail_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[codec]\nvalue_bits = 3\n").unwrap();
    let out = node(&["train", "--hparams", path.to_str().unwrap(), "--steps", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("value_bits"), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");

    let out = node(&[
        "train",
        "--npy",
        dir.path().to_str().unwrap(),
        "--steps",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no usable files"));
}

#[test]
fn codec_bench_prints_figures() {
    let out = node(&[
        "bench", "codec", "--model", "tiny", "--reps", "1", "--peers", "3", "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(r["compression_ratio"].as_f64().unwrap() > 1.0);
    assert!(r["total_decode_n_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(r["peers"], 3);
    assert!(!r["shapes"].as_array().unwrap().is_empty());
}
