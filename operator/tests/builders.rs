//! The pure builders, from minimal YAML resources.

mod common;

use common::miner_owner;

use templar_crds::{TemplarMiner, TemplarValidator};
use templar_operator::build::{
    Owner, STATUS_PORT, disruption_budget, headless_service, hparams_configmap, metrics_service,
    statefulset,
};
use templar_operator::validate::render_hparams;
use templar_protocol::node_status::NodeRole;

fn miner(yaml: &str) -> TemplarMiner {
    serde_yaml::from_str(yaml).unwrap()
}

const MINIMAL: &str = r#"
apiVersion: templar.tplr.ai/v1alpha1
kind: TemplarMiner
metadata: {name: alpha, namespace: train, uid: 1111-2222}
spec:
  image: ghcr.io/templar-rs/node:0.1.0
  storage: {bucket: alpha-grads, writeSecret: alpha-s3, readSecret: alpha-s3-read, endpoint: "https://r2.example"}
  walletSecret: alpha-hotkeys
"#;

#[test]
fn minimal_miner_gets_a_gpu_statefulset_with_secrets_and_probes() {
    let cr = miner(MINIMAL);
    let sts = statefulset(&miner_owner(&cr), "hash");
    assert_eq!(sts.metadata.name.as_deref(), Some("alpha-miner"));
    let owner_ref = &sts.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner_ref.kind.as_str(), owner_ref.uid.as_str()),
        ("TemplarMiner", "1111-2222")
    );
    assert_eq!(owner_ref.controller, Some(true));
    let spec = sts.spec;
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.selector.match_labels,
        spec.template.metadata.as_ref().unwrap().labels
    );
    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    let env = c.env.as_ref().unwrap();
    let from_secret = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
            .map(|s| (s.name.clone(), s.key.clone()))
    };
    assert_eq!(
        from_secret("AWS_ACCESS_KEY_ID"),
        Some(("alpha-s3".into(), "accessKeyId".into()))
    );
    assert_eq!(
        from_secret("TEMPLAR_S3_READ_SECRET_ACCESS_KEY"),
        Some(("alpha-s3-read".into(), "secretAccessKey".into()))
    );
    assert!(
        env.iter()
            .all(|e| !e.name.contains("SECRET") || e.value.is_none()),
        "no inline secrets"
    );
    let readiness = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    let liveness = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(liveness.path.as_deref(), Some("/healthz"));
    // The wallet Secret reaches the init container only; the node mounts its own key, in
    // a memory-backed folder the init container filled.
    let volumes = pod.volumes.clone().unwrap();
    let wallets = volumes.iter().find(|v| v.name == "wallets").unwrap();
    assert_eq!(
        wallets.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("alpha-hotkeys")
    );
    let wallet = volumes.iter().find(|v| v.name == "wallet").unwrap();
    assert_eq!(
        wallet.empty_dir.as_ref().unwrap().medium.as_deref(),
        Some("Memory")
    );
    let mounts = |c: &k8s_openapi::api::core::v1::Container| -> Vec<String> {
        let list = c.volume_mounts.iter().flatten();
        list.map(|m| m.name.clone()).collect()
    };
    assert!(
        !mounts(c).contains(&"wallets".to_string()),
        "{:?}",
        mounts(c)
    );
    assert!(mounts(c).contains(&"wallet".to_string()));
    let init = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.image, c.image);
    assert_eq!(
        init.args.as_ref().unwrap()[..],
        [
            "wallet",
            "--wallet",
            "/etc/templar/wallets",
            "--copy-to",
            "/etc/templar/wallet"
        ]
    );
    assert_eq!(mounts(init), ["wallets", "wallet"]);
    assert!(init.env.iter().flatten().any(|e| e.name == "POD_NAME"));
    assert!(spec.volume_claim_templates.is_none(), "no cache asked for");
    assert!(pod.node_selector.is_none() && pod.tolerations.is_none());
}

#[test]
fn scheduling_cache_and_suspend_are_honoured() {
    let cr = miner(&format!(
        "{MINIMAL}  replicas: 4\n  suspend: true\n  resources: {{gpus: 2, gpuType: NVIDIA-H100-80GB-HBM3, memory: 64Gi}}\n  nodeSelector: {{pool: gpu}}\n  tolerations: [{{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}]\n  priorityClassName: training\n  schedulerName: volcano\n  cache: {{size: 50Gi, storageClass: fast}}\n  imagePullSecrets: [regcred]\n"
    ));
    let spec = statefulset(&miner_owner(&cr), "hash").spec;
    assert_eq!(spec.replicas, Some(0), "suspend scales to zero");
    let pod = spec.template.spec.as_ref().unwrap();
    let sel = pod.node_selector.as_ref().unwrap();
    assert_eq!(sel["pool"], "gpu");
    assert_eq!(sel["nvidia.com/gpu.product"], "NVIDIA-H100-80GB-HBM3");
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("nvidia.com/gpu")
    );
    assert_eq!(pod.priority_class_name.as_deref(), Some("training"));
    assert_eq!(pod.scheduler_name.as_deref(), Some("volcano"));
    assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
    let limits = pod.containers[0]
        .resources
        .as_ref()
        .unwrap()
        .limits
        .clone()
        .unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "2");
    assert_eq!(limits["memory"].0, "64Gi");
    let claim = &spec.volume_claim_templates.unwrap()[0];
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "50Gi"
    );
    assert!(
        pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.name == "cache")
    );
}

/// Pods given GPUs run the node with `--device cuda` (it fails at start, with the reason,
/// when it cannot use them, instead of training on the CPU); pods without run `--device cpu`.
#[test]
fn the_device_follows_the_gpus_the_pod_asks_for() {
    for (gpus, device) in [(0, "cpu"), (1, "cuda"), (4, "cuda")] {
        let cr = miner(&format!("{MINIMAL}  resources: {{gpus: {gpus}}}\n"));
        let args = statefulset(&miner_owner(&cr), "hash")
            .spec
            .template
            .spec
            .unwrap()
            .containers[0]
            .args
            .clone()
            .unwrap();
        let at = args.iter().position(|a| a == "--device").expect("--device");
        assert_eq!(args[at + 1], device, "gpus {gpus}: {args:?}");
    }
}

/// A pod never runs BestEffort: without cpu or memory in the spec it requests its model
/// preset's (README's table), the memory-backed /dev/shm inside the memory limit, and
/// /tmp's scratch space as ephemeral storage.
#[test]
fn pods_request_their_presets_needs_with_shm_inside_the_memory_limit() {
    for (model, extra, cpu, memory) in [
        ("tiny", "", "1", "4Gi"),
        ("150M", "", "4", "18Gi"),
        ("1B", "", "8", "50Gi"),
        ("150M", ", shmSize: 8Gi", "4", "24Gi"),
        ("150M", ", cpu: 12, memory: 64Gi", "12", "64Gi"),
    ] {
        let cr = miner(&format!(
            "{MINIMAL}  model: {model}\n  resources: {{gpus: 1{extra}}}\n"
        ));
        let pod = statefulset(&miner_owner(&cr), "hash")
            .spec
            .template
            .spec
            .unwrap();
        let r = pod.containers[0].resources.clone().unwrap();
        let (requests, limits) = (r.requests.unwrap(), r.limits.unwrap());
        assert_eq!(requests["cpu"].0, cpu, "{model}{extra}");
        assert_eq!(requests["memory"].0, memory, "{model}{extra}");
        assert_eq!(limits["memory"].0, memory, "{model}{extra}");
        assert_eq!(requests["ephemeral-storage"].0, "10Gi");
        let tmp = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "tmp")
            .unwrap();
        assert_eq!(tmp.empty_dir.unwrap().size_limit.unwrap().0, "10Gi");
    }
}

#[test]
fn validators_get_their_role_service_and_hyperparameters() {
    let cr: TemplarValidator =
        serde_yaml::from_str(&MINIMAL.replace("TemplarMiner", "TemplarValidator")).unwrap();
    let o = Owner {
        kind: "TemplarValidator",
        role: NodeRole::Validator,
        name: "alpha",
        namespace: "train",
        uid: "u",
        spec: &cr.spec.node,
    };
    let sts = statefulset(&o, "hash");
    assert_eq!(sts.metadata.name.as_deref(), Some("alpha-validator"));
    let args = sts.spec.template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(args[..3], ["run", "--role", "validator"]);
    // The hotkey comes from the wallet entry of the pod's ordinal; validators create the
    // devnet chain with a validator's stake.
    let joined = args.join(" ");
    assert!(joined.contains("--wallet /etc/templar/wallet"), "{joined}");
    assert!(
        joined.contains("--devnet s3") && joined.contains("--store s3"),
        "{joined}"
    );
    assert!(
        !joined.contains("--chain"),
        "devnet is the node's default chain: {joined}"
    );
    assert!(
        joined.contains("--stake 5000 --init-devnet-block-ms"),
        "{joined}"
    );
    let metrics = metrics_service(&o);
    assert_eq!(
        metrics.metadata.name.as_deref(),
        Some("alpha-validator-metrics")
    );
    assert_eq!(metrics.spec.as_ref().unwrap().cluster_ip, None);
    let svc = headless_service(&o).spec.unwrap();
    assert_eq!(svc.cluster_ip.as_deref(), Some("None"));
    assert_eq!(svc.ports.unwrap()[0].port, STATUS_PORT);
    let cm = hparams_configmap(
        &o,
        &render_hparams(o.spec, "[outer]\nmode = \"demo\"\n").unwrap(),
    );
    let text = &cm.data.unwrap()["hparams.toml"];
    assert!(text.starts_with("[model]\nsize = \"150M\""), "{text}");
    assert!(text.contains("mode = \"demo\""));
}

/// Every built object passes `kubernetes-validate --strict` (offline schemas of a current
/// Kubernetes release; installed by `scripts/setup.sh --pytools`).
#[test]
fn built_objects_pass_kubernetes_validate_strict() {
    let cr = miner(&format!(
        "{MINIMAL}  resources: {{gpus: 2, gpuType: NVIDIA-H100-80GB-HBM3, memory: 64Gi}}\n  tolerations: [{{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}]\n  cache: {{size: 50Gi, retention: {{whenScaled: Delete}}}}\n  env: [{{name: RUST_LOG, value: info}}]\n  disruptionBudget: {{maxUnavailable: 25%}}\n  podTemplate: {{runtimeClassName: nvidia, topologySpreadConstraints: [{{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}}]}}\n"
    ));
    let o = miner_owner(&cr);
    let objects = [
        (
            "statefulset.json",
            serde_json::to_string(&statefulset(&o, "hash")).unwrap(),
        ),
        (
            "service.json",
            serde_json::to_string(&headless_service(&o)).unwrap(),
        ),
        (
            "metrics-service.json",
            serde_json::to_string(&metrics_service(&o)).unwrap(),
        ),
        (
            "configmap.json",
            serde_json::to_string(&hparams_configmap(&o, &render_hparams(o.spec, "").unwrap()))
                .unwrap(),
        ),
        (
            "pdb.json",
            serde_json::to_string(&disruption_budget(&o).unwrap()).unwrap(),
        ),
    ];
    for (_, json) in &objects {
        assert!(
            json.contains("\"apiVersion\"") && json.contains("\"kind\""),
            "{json}"
        );
    }
    common::kubernetes_validate_strict(&objects.map(|(n, j)| (n.to_string(), j)));
}

#[test]
fn subtensor_nodes_connect_to_the_endpoint_and_sign_with_their_wallet_entry() {
    let yaml = MINIMAL.replace("TemplarMiner", "TemplarValidator")
        + "  chain: {kind: subtensor, endpoint: \"wss://entrypoint-finney.opentensor.ai:443\", netuid: 3, versionKey: 7}\n";
    let cr: TemplarValidator = serde_yaml::from_str(&yaml).unwrap();
    let o = Owner {
        kind: "TemplarValidator",
        role: NodeRole::Validator,
        name: "sn3",
        namespace: "train",
        uid: "u",
        spec: &cr.spec.node,
    };
    let sts = statefulset(&o, "hash");
    let args = sts.spec.template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    let joined = args.join(" ");
    assert!(
        joined.contains("--chain subtensor --endpoint wss://entrypoint-finney.opentensor.ai:443 --netuid 3 --version-key 7"),
        "{joined}"
    );
    assert!(joined.contains("--wallet /etc/templar/wallet"), "{joined}");
    for devnet_only in ["--devnet", "--stake", "--init-devnet-block-ms"] {
        assert!(
            !joined.contains(devnet_only),
            "{devnet_only} on subtensor: {joined}"
        );
    }
}
