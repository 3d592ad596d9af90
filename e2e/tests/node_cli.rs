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
    // The CLI's contract: finite losses in the report. Whether the model learns is asserted
    // by node/tests/training.rs over 30 windows with a 30% margin: after 3 windows, inside
    // the LR warm-up, the held-out loss moves by a few 1e-4 and its sign depends on the CPU.
    for key in ["initial_eval_loss", "final_eval_loss"] {
        let loss = report[key].as_f64().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{key} = {loss}");
    }
    for loss in report["window_losses"].as_array().unwrap() {
        assert!(loss.as_f64().is_some_and(f64::is_finite), "{loss}");
    }
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

#[test]
fn devnet_runs_and_writes_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let out_s = out.to_str().unwrap();
    let run = node(&[
        "devnet",
        "--miners",
        "2",
        "--windows",
        "3",
        "--block-ms",
        "1000",
        "--out",
        out_s,
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "devnet failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let csv = std::fs::read_to_string(out.join("windows.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    for miner in ["miner-1", "miner-2"] {
        let mine: Vec<_> = rows.iter().filter(|r| r[1] == miner).collect();
        assert!(mine.len() >= 3, "{miner} rows: {csv}");
        assert!(
            mine.iter()
                .all(|r| r[4].parse::<f64>().unwrap().is_finite()),
            "losses: {csv}"
        );
    }
    // The validator's last weights reach the report: the miners' shares sum to one. (Who earns
    // them is the integrity tests' subject; after one or two scored windows an honest miner's
    // gain beyond random pages can still be at or under zero, and its weight with it.)
    let last_window = rows
        .iter()
        .map(|r| r[0])
        .max_by_key(|w| w.parse::<u64>().unwrap());
    let weights: Vec<f64> = rows
        .iter()
        .filter(|r| Some(r[0]) == last_window && r[3] == "miner")
        .map(|r| r[6].parse::<f64>().unwrap())
        .collect();
    assert_eq!(weights.len(), 2, "{csv}");
    assert!(weights.iter().all(|w| (0.0..=1.0).contains(w)), "{csv}");
    let sum: f64 = weights.iter().sum();
    assert!((sum - 1.0).abs() < 1e-6, "weights sum to {sum}: {csv}");
    let png = std::fs::read(out.join("report.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // Every node has its own sr25519 hotkey (owner-only keyfile, SS58 address printed), signs
    // its payloads, and the validator's weights above came from payloads that verified.
    use std::os::unix::fs::PermissionsExt;
    for uid in 0..3 {
        let keyfile = out.join("wallet").join(format!("hotkey-{uid}"));
        let mode = std::fs::metadata(&keyfile).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", keyfile.display());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&keyfile).unwrap()).unwrap();
        let address = json["ss58Address"].as_str().unwrap();
        assert!(stdout.contains(address), "address printed: {stdout}");
        let secret = json["secretSeed"].as_str().unwrap();
        assert!(!stdout.contains(secret), "the seed is never printed");
        for log in ["validator", "miner-1", "miner-2"] {
            let text =
                std::fs::read_to_string(out.join("logs").join(format!("{log}.log"))).unwrap();
            assert!(
                !text.contains(&secret[2..]),
                "the seed is never logged ({log})"
            );
        }
    }
    let validator_log = std::fs::read_to_string(out.join("logs/validator.log")).unwrap();
    assert!(validator_log.contains("signs=true"), "{validator_log}");
    assert!(
        !validator_log.contains("signature"),
        "no payload was rejected for its signature: {validator_log}"
    );
    // No node process outlives the devnet runner.
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let leftover = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains(out_s) && l.contains("templar-node run"))
        .count();
    assert_eq!(leftover, 0, "node processes left running");
}

#[test]
fn devnet_runs_against_s3() {
    use templar_testkit::garage::GarageServer;
    let garage = GarageServer::start("templar-devnet").expect("Garage must be installed");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let run = std::process::Command::new(templar_e2e::binary("templar-node"))
        .args(["devnet", "--s3", "--miners", "2", "--windows", "2", "--out"])
        .arg(&out)
        .current_dir(templar_e2e::repo_root())
        .env("TEMPLAR_DEVICE", "cpu")
        .env("TEMPLAR_S3_ENDPOINT", &garage.endpoint)
        .env("TEMPLAR_S3_BUCKET", &garage.bucket)
        .env("TEMPLAR_S3_REGION", "garage")
        .env("AWS_ACCESS_KEY_ID", &garage.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &garage.secret)
        .output()
        .unwrap();
    let logs = std::fs::read_to_string(out.join("logs/validator.log")).unwrap_or_default();
    assert!(
        run.status.success(),
        "{}\n{}\nvalidator log:\n{logs}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let csv = std::fs::read_to_string(out.join("windows.csv")).unwrap();
    assert!(
        csv.lines().filter(|l| l.contains(",miner-")).count() >= 4,
        "{csv}"
    );
    // The secret key never reaches a log.
    for name in ["validator", "miner-1", "miner-2"] {
        let log = std::fs::read_to_string(out.join(format!("logs/{name}.log"))).unwrap();
        assert!(!log.contains(&garage.secret), "{name} logged the secret");
        assert!(log.contains("registered"), "{name}: {log}");
    }
}

#[test]
fn devnet_cheaters_earn_nothing_while_the_honest_miners_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let run = node(&[
        "devnet",
        "--miners",
        "3",
        "--windows",
        "4",
        "--cheater",
        "amplifier:30",
        "--cheater",
        "poisoner",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let validator_log = std::fs::read_to_string(out.join("logs/validator.log")).unwrap_or_default();
    assert!(
        run.status.success(),
        "devnet failed: {stdout}\n{}\n{validator_log}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("cheats: amplifier:30"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("windows.csv")).unwrap();
    let last_weight = |miner: &str| -> f64 {
        let row = csv
            .lines()
            .rfind(|l| l.split(',').nth(1) == Some(miner))
            .unwrap_or_else(|| panic!("no row of {miner}: {csv}"));
        row.split(',').nth(6).unwrap().parse().unwrap()
    };
    // All the weight is the honest miners' (how it splits among them is noisy over 4 windows).
    let honest: f64 = ["miner-1", "miner-2", "miner-3"]
        .iter()
        .map(|m| last_weight(m))
        .sum();
    assert!((honest - 1.0).abs() < 1e-9, "honest weight {honest}: {csv}");
    for cheater in ["miner-4", "miner-5"] {
        assert_eq!(last_weight(cheater), 0.0, "{cheater}: {csv}");
    }
    // The amplified update was seen and kept out of the step on the validator.
    assert!(
        validator_log.contains("payload left out: amplified"),
        "{validator_log}"
    );
}

#[test]
fn only_a_sim_miner_can_cheat_and_a_behaviour_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let common = ["--hotkey", "v", "--devnet", &store, "--store", &store];
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    // The production command has no way to cheat.
    let run = node(&[&["run"], &common[..], &["--behaviour", "poisoner"]].concat());
    assert!(!run.status.success());
    assert!(
        stderr(&run).contains("unexpected argument '--behaviour'"),
        "{}",
        stderr(&run)
    );
    let validator = node(
        &[
            &["sim-miner"],
            &common[..],
            &["--role", "validator", "--behaviour", "poisoner"],
        ]
        .concat(),
    );
    assert!(!validator.status.success());
    assert!(
        stderr(&validator).contains("sim-miner runs a miner"),
        "{}",
        stderr(&validator)
    );
    let unknown = node(
        &[
            &["sim-miner"],
            &common[..],
            &["--role", "miner", "--behaviour", "sleepy"],
        ]
        .concat(),
    );
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("unknown behaviour \"sleepy\""),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn a_network_node_reads_its_data_before_it_registers() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let missing = dir.path().join("no-such-shards");
    let out = node(&[
        "run",
        "--role",
        "miner",
        "--hotkey",
        "m",
        "--devnet",
        &store,
        "--store",
        &store,
        "--npy",
        missing.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot read") && stderr.contains("no-such-shards"),
        "{stderr}"
    );
    // It stopped before it touched the chain (without data it would wait for a devnet).
    assert!(!dir.path().join("chain").exists(), "{stderr}");
}

#[test]
fn subtensor_runs_need_an_endpoint_a_netuid_and_a_hotkey_that_signs() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let base = [
        "run",
        "--role",
        "miner",
        "--store",
        &store,
        "--chain",
        "subtensor",
    ];
    let no_netuid = node(
        &[
            &base[..],
            &["--hotkey", "m", "--endpoint", "ws://127.0.0.1:9"],
        ]
        .concat(),
    );
    assert!(!no_netuid.status.success());
    let stderr = String::from_utf8_lossy(&no_netuid.stderr);
    assert!(stderr.contains("--netuid"), "{stderr}");
    // A bare devnet name cannot sign extrinsics: refused before any connection is tried.
    let bare = node(
        &[
            &base[..],
            &[
                "--hotkey",
                "m",
                "--endpoint",
                "ws://127.0.0.1:9",
                "--netuid",
                "3",
            ],
        ]
        .concat(),
    );
    assert!(!bare.status.success());
    let stderr = String::from_utf8_lossy(&bare.stderr);
    assert!(
        stderr.contains("a subtensor node signs extrinsics"),
        "{stderr}"
    );
}

#[test]
fn bench_integrity_prints_weights_by_behaviour_and_both_loss_curves() {
    let run = node(&[
        "bench",
        "integrity",
        "--honest",
        "2",
        "--windows",
        "2",
        "--seeds",
        "3",
        "--json",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON");
    let r = &r.as_array().unwrap()[0];
    assert_eq!(r["seed"], 3);
    let miners = r["miners"].as_array().unwrap();
    assert_eq!(miners.len(), 18, "2 honest and 16 adversaries");
    let behaviours: Vec<&str> = miners
        .iter()
        .map(|m| m["behaviour"].as_str().unwrap())
        .collect();
    for b in [
        "honest",
        "poisoner",
        "copier:1",
        "impersonator:1",
        "wrong-data",
        "lazy",
        "blender",
        "selective-poisoner",
        "echo:1",
        "framer:1",
    ] {
        assert!(behaviours.contains(&b), "{behaviours:?}");
    }
    assert_eq!(
        r["honestPayloads"],
        2 * 2 * 2,
        "honest miners x windows x two runs"
    );
    assert!(r["honestCopyFlags"].as_u64().is_some(), "{r}");
    let total: f64 = miners.iter().map(|m| m["weight"].as_f64().unwrap()).sum();
    assert!(
        (total - 1.0).abs() < 1e-9 || total == 0.0,
        "weights sum to 1: {total}"
    );
    let share = r["honestShare"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share));
    for curve in ["heldOutLossWithAdversaries", "heldOutLossHonestOnly"] {
        assert_eq!(
            r[curve].as_array().unwrap().len(),
            3,
            "{curve}: before and after each window"
        );
    }
}

#[test]
fn train_bench_reports_throughput_flops_and_mfu_against_a_given_peak() {
    let args = |precision: &str| {
        [
            "bench",
            "train",
            "--model",
            "tiny",
            "--seq",
            "32",
            "--batch",
            "2",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--device",
            "cpu",
            "--precision",
            precision,
            "--peak-tflops",
            "0.5",
            "--json",
        ]
        .map(String::from)
    };
    for precision in ["fp32", "bf16"] {
        let a = args(precision);
        let out = node(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{precision}: {stderr}");
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(r["precision"], precision);
        assert_eq!(r["device"], "Cpu");
        let tokens_per_sec = r["tokens_per_sec"].as_f64().unwrap();
        assert!(tokens_per_sec > 0.0 && r["final_loss"].as_f64().unwrap().is_finite());
        // 6 FLOPs per matmul parameter and token, plus attention; MFU over the given peak.
        let flops = r["flops_per_token"].as_f64().unwrap();
        assert!(flops > 6.0 * r["matmul_parameters"].as_f64().unwrap());
        let mfu = r["mfu"].as_f64().unwrap();
        let expected = flops * tokens_per_sec / 1e12 / 0.5;
        assert!(
            (mfu - expected).abs() <= 1e-9 * expected.max(1.0),
            "{mfu} vs {expected}"
        );
        assert!(
            r["memory_bytes"].as_u64().unwrap() > 0,
            "peak RSS on the CPU"
        );
    }
}

#[test]
fn asking_for_cuda_without_a_gpu_fails_with_the_reason() {
    let out = node(&[
        "bench", "train", "--model", "tiny", "--seq", "8", "--steps", "1", "--device", "cuda",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        eprintln!("this machine has a GPU: nothing to refuse");
        return;
    }
    assert!(stderr.contains("no CUDA device"), "stderr: {stderr}");
    // The reason: no driver at all, a driver too old for the runtime, or no GPU visible.
    assert!(
        [
            "libcuda.so.1",
            "driver supports CUDA up to",
            "CUDA_VISIBLE_DEVICES"
        ]
        .iter()
        .any(|why| stderr.contains(why)),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

/// The side-by-side comparison users run (`make bench-codec`): our codec and the
/// plain-PyTorch baseline on the same shapes, with ratios.
#[test]
fn codec_bench_runs_next_to_the_plain_pytorch_baseline() {
    let out = node(&[
        "bench", "codec", "--model", "tiny", "--reps", "1", "--peers", "2", "--device", "cpu",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut python = std::process::Command::new("python3")
        .arg(templar_e2e::repo_root().join("scripts/bench/codec_plain_pytorch.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (the set-up script's virtualenv has torch)");
    use std::io::Write;
    python.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let done = python.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&done.stdout).expect("JSON");
    assert_eq!(r["plain_pytorch"]["peers"], 2);
    for k in ["encode", "decode_1", "decode_n"] {
        let ratio = r["ratio"][k].as_f64().unwrap();
        assert!(ratio.is_finite() && ratio > 0.0, "{k}: {ratio}");
    }
    // Same shapes on both sides.
    assert_eq!(
        r["ours"]["shapes"].as_array().unwrap().len(),
        r["plain_pytorch"]["shapes"].as_array().unwrap().len()
    );
}
