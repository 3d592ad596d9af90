//! The pure parts of the reconcile: spec validation against the inputs, the conditions
//! computed from pods, and the `/status` reader against misbehaving local servers.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use templar_crds::{NodeSetStatus, NodeSpec, TemplarMiner};
use templar_operator::probe::{ProbeError, StatusProbe};
use templar_operator::status::{Input, Observed, Outcome, compute};
use templar_operator::validate::{
    Inputs, ProblemReason, check_name, max_name_len, referenced_secrets, validate,
};
use templar_protocol::node_status::{NodeRole, NodeStatus};

fn spec(extra: &str) -> NodeSpec {
    let yaml = format!(
        "apiVersion: templar.tplr.ai/v1alpha1\nkind: TemplarMiner\nmetadata: {{name: a, namespace: n}}\nspec:\n  image: img\n  replicas: 2\n  storage: {{bucket: b, writeSecret: w, readSecret: r}}\n  walletSecret: wallet\n{extra}"
    );
    serde_yaml::from_str::<TemplarMiner>(&yaml)
        .unwrap()
        .spec
        .node
}

fn inputs() -> Inputs {
    let mut i = Inputs::default();
    let s3 = ["accessKeyId", "secretAccessKey"].map(String::from).into();
    i.secrets.insert("w".into(), s3);
    i.secrets.insert(
        "r".into(),
        ["accessKeyId", "secretAccessKey"].map(String::from).into(),
    );
    i.secrets.insert(
        "wallet".into(),
        ["hotkey-0", "hotkey-1"].map(String::from).into(),
    );
    i
}

#[test]
fn a_complete_spec_validates_to_its_hyperparameters() {
    let text = validate(
        &spec("  hyperparameters: {inline: \"[codec]\\ntopk = 32\\n\"}\n"),
        &inputs(),
    )
    .unwrap()
    .hparams_file;
    assert!(text.contains("topk = 32"));
}

#[test]
fn each_secret_is_read_once() {
    let mut s = spec("");
    assert_eq!(referenced_secrets(&s), ["w", "r", "wallet"]);
    s.wallet_secret = "w".into();
    assert_eq!(referenced_secrets(&s), ["w", "r"]);
}

#[test]
fn each_missing_input_has_its_own_reason() {
    let s = spec("");
    let mut i = inputs();
    i.secrets.remove("r");
    let p = validate(&s, &i).unwrap_err();
    assert_eq!(p.reason, ProblemReason::MissingSecret);
    assert!(
        p.message.contains("\"r\"") && p.message.contains("storage.readSecret"),
        "{}",
        p.message
    );

    let mut i = inputs();
    i.secrets.get_mut("w").unwrap().remove("secretAccessKey");
    let p = validate(&s, &i).unwrap_err();
    assert_eq!(p.reason, ProblemReason::MissingSecretKey);
    assert!(p.message.contains("secretAccessKey"));

    let mut i = inputs();
    i.secrets.get_mut("wallet").unwrap().remove("hotkey-1");
    let p = validate(&s, &i).unwrap_err();
    assert_eq!(p.reason, ProblemReason::MissingHotkey);
    assert!(p.message.contains("hotkey-1"));

    let cm = spec("  hyperparameters: {configMap: {name: hp}}\n");
    assert_eq!(
        validate(&cm, &inputs()).unwrap_err().reason,
        ProblemReason::MissingConfigMap
    );
    let mut i = inputs();
    i.config_maps.insert(
        "hp".into(),
        BTreeMap::from([("other.toml".into(), String::new())]),
    );
    let p = validate(&cm, &i).unwrap_err();
    assert_eq!(p.reason, ProblemReason::MissingConfigMapKey);
    assert!(p.message.contains("hparams.toml"));
    i.config_maps.insert(
        "hp".into(),
        BTreeMap::from([("hparams.toml".into(), "[codec]\ntopk = 16\n".into())]),
    );
    assert!(
        validate(&cm, &i)
            .unwrap()
            .hparams_file
            .contains("topk = 16")
    );
}

#[test]
fn invalid_hyperparameters_and_unsupported_chains_are_rejected() {
    let p = validate(
        &spec("  hyperparameters: {inline: \"[codec]\\nvalue_bits = 3\\n\"}\n"),
        &inputs(),
    )
    .unwrap_err();
    assert_eq!(p.reason, ProblemReason::InvalidHyperparameters);
    let p = validate(
        &spec("  hyperparameters: {inline: \"[codec\\n\"}\n"),
        &inputs(),
    )
    .unwrap_err();
    assert_eq!(p.reason, ProblemReason::InvalidHyperparameters);
    validate(
        &spec("  chain: {kind: subtensor, endpoint: \"wss://entrypoint-finney.opentensor.ai:443\", netuid: 3}\n"),
        &inputs(),
    )
    .expect("a subtensor chain with endpoint and netuid is accepted");
    let p = validate(
        &spec(
            "  chain: {kind: subtensor, endpoint: \"wss://entrypoint-finney.opentensor.ai:443\"}\n",
        ),
        &inputs(),
    )
    .unwrap_err();
    assert_eq!(p.reason, ProblemReason::InvalidSpec);
    assert!(p.message.contains("netuid"), "{p:?}");
    let p = validate(
        &spec("  chain: {kind: subtensor, endpoint: \"https://example.com\", netuid: 3}\n"),
        &inputs(),
    )
    .unwrap_err();
    assert!(p.message.contains("ws://"), "{p:?}");
}

fn pod(name: &str, created: Timestamp, status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "creationTimestamp": created.to_string()},
        "status": status
    }))
    .unwrap()
}

fn run(
    spec: &NodeSpec,
    pods: Vec<Pod>,
    previous: Option<&NodeSetStatus>,
    now: Timestamp,
) -> Outcome {
    compute(Input {
        role: NodeRole::Miner,
        spec,
        generation: Some(1),
        previous,
        problem: None,
        observed: &Observed {
            stateful_set: Some(rolled_out(spec.replicas)),
            pods,
            probes: BTreeMap::new(),
        },
        selector: "app=a".into(),
        now,
    })
}

/// The owned StatefulSet with every replica at one revision.
fn rolled_out(replicas: i32) -> k8s_openapi::api::apps::v1::StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": "a-miner", "generation": 1, "uid": "sts-uid"},
        "spec": {"selector": {}, "template": {}},
        "status": {"replicas": replicas, "observedGeneration": 1, "updatedReplicas": replicas,
                   "currentRevision": "r1", "updateRevision": "r1"}
    }))
    .unwrap()
}

fn cond<'a>(
    o: &'a Outcome,
    t: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    o.status.conditions.iter().find(|c| c.type_ == t).unwrap()
}

#[test]
fn image_pull_and_crash_loops_degrade_at_once() {
    let now = Timestamp::now();
    for reason in [
        "ImagePullBackOff",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
    ] {
        let p = pod(
            "a-miner-0",
            now,
            json!({"phase": "Pending", "containerStatuses": [{
                "name": "node", "image": "img", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": reason, "message": "back-off pulling image"}}
            }]}),
        );
        let o = run(&spec(""), vec![p], None, now);
        let d = cond(&o, "Degraded");
        assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", reason));
        assert!(d.message.contains("a-miner-0"));
        assert_eq!(cond(&o, "Ready").status, "False");
        // Created but not placed yet: not Scheduled.
        assert_eq!(cond(&o, "Scheduled").reason, "PodsPending");
        assert!(o.notices.iter().any(|n| n.warning && n.reason == reason));
        assert_eq!(
            o.status.nodes[0]
                .last_error
                .as_deref()
                .map(|e| e.contains("back-off")),
            Some(true)
        );
        assert!(!o.settled);
    }
}

#[test]
fn a_pod_past_the_startup_deadline_degrades_the_resource() {
    let now = Timestamp::now();
    let s = spec("  startupDeadlineSeconds: 600\n");
    let starting =
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]});
    let young = run(
        &s,
        vec![pod(
            "a-miner-0",
            now - SignedDuration::from_secs(599),
            starting.clone(),
        )],
        None,
        now,
    );
    assert_eq!(cond(&young, "Degraded").status, "False");
    assert_eq!(cond(&young, "Progressing").reason, "RollingOut");
    let old = run(
        &s,
        vec![pod(
            "a-miner-0",
            now - SignedDuration::from_secs(601),
            starting,
        )],
        None,
        now,
    );
    let d = cond(&old, "Degraded");
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "StartupDeadlineExceeded")
    );
    assert_eq!(cond(&old, "Progressing").status, "False");
}

#[test]
fn transition_times_hold_and_events_are_not_repeated() {
    let t0 = Timestamp::now();
    let s = spec("");
    let pending = |name: &str| {
        pod(
            name,
            t0,
            json!({"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "Insufficient nvidia.com/gpu"}
            ]}),
        )
    };
    let first = run(&s, vec![pending("a-0"), pending("a-1")], None, t0);
    assert_eq!(first.notices.len(), 1);
    assert_eq!(first.notices[0].reason, "Unschedulable");
    let later = t0 + SignedDuration::from_secs(30);
    let second = run(
        &s,
        vec![pending("a-0"), pending("a-1")],
        Some(&first.status),
        later,
    );
    assert!(second.notices.is_empty(), "{:?}", second.notices);
    assert_eq!(
        cond(&second, "Scheduled").last_transition_time,
        cond(&first, "Scheduled").last_transition_time
    );

    let ready = |name: &str| {
        pod(
            name,
            t0,
            json!({"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}
            ]}),
        )
    };
    let third = run(
        &s,
        vec![ready("a-0"), ready("a-1")],
        Some(&second.status),
        later,
    );
    assert_eq!(cond(&third, "Ready").status, "True");
    assert_eq!(cond(&third, "Ready").last_transition_time.0, later);
    assert_eq!(cond(&third, "Scheduled").reason, "AllScheduled");
    assert_eq!(third.notices.len(), 1);
    assert!(!third.notices[0].warning);
    assert!(third.settled);
    // A pod being deleted is not counted.
    let mut leaving = ready("a-1");
    leaving.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(later));
    let fourth = run(&s, vec![ready("a-0"), leaving], Some(&third.status), later);
    assert_eq!(fourth.status.ready.as_deref(), Some("1/2"));
}

#[test]
fn a_node_reporting_an_error_degrades_with_its_message() {
    let now = Timestamp::now();
    let s = spec("");
    let p = pod(
        "a-miner-0",
        now,
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "podIP": "10.0.0.1"}),
    );
    let status = NodeStatus {
        hotkey: "hk".into(),
        last_error: Some("S3 upload failed: 403".into()),
        ..Default::default()
    };
    let o = compute(Input {
        role: NodeRole::Miner,
        spec: &s,
        generation: Some(1),
        previous: None,
        problem: None,
        observed: &Observed {
            stateful_set: Some(rolled_out(2)),
            pods: vec![p],
            probes: BTreeMap::from([("a-miner-0".to_string(), Ok(status))]),
        },
        selector: "app=a".into(),
        now,
    });
    let d = cond(&o, "Degraded");
    assert_eq!(d.reason, "NodeError");
    assert!(d.message.contains("hk: S3 upload failed: 403"));
}

/// The status of a resource of `role` with one ready pod (`a-<role>-0`) whose node answers
/// `status`.
fn with_one_ready_node(role: NodeRole, spec: &NodeSpec, status: NodeStatus) -> Outcome {
    let now = Timestamp::now();
    let name = format!("a-{role}-0");
    let ready = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "podIP": "10.0.0.1"});
    compute(Input {
        role,
        spec,
        generation: Some(1),
        previous: None,
        problem: None,
        observed: &Observed {
            stateful_set: Some(rolled_out(2)),
            pods: vec![pod(&name, now, ready)],
            probes: BTreeMap::from([(name, Ok(status))]),
        },
        selector: "app=a".into(),
        now,
    })
}

/// A node that trains on the CPU in a pod given GPUs (or on a GPU in one without) degrades
/// the resource with the node's hotkey and device; a matching one does not.
#[test]
fn a_node_on_the_wrong_device_degrades_the_resource() {
    use templar_protocol::node_status::ComputeReport;
    let on = |device: &str| NodeStatus {
        hotkey: "hk".into(),
        compute: Some(ComputeReport {
            device: device.into(),
            precision: "fp32".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let outcome = |s: &NodeSpec, status| with_one_ready_node(NodeRole::Miner, s, status);
    let gpu = spec("  resources: {gpus: 2}\n");
    let o = outcome(&gpu, on("cpu"));
    let d = cond(&o, "Degraded");
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "WrongDevice")
    );
    assert!(d.message.contains("hk computes on cpu") && d.message.contains("2 GPU"));
    assert_eq!(
        cond(&outcome(&gpu, on("cuda:0")), "Degraded").status,
        "False"
    );
    let cpu = spec("  resources: {gpus: 0}\n");
    assert_eq!(
        cond(&outcome(&cpu, on("cuda:0")), "Degraded").reason,
        "WrongDevice"
    );
    assert_eq!(cond(&outcome(&cpu, on("cpu")), "Degraded").status, "False");
}

/// A validator whose weights commit was never applied (refused at the reveal) degrades the
/// resource with the reason; one whose weights applied or still await the reveal does not.
#[test]
fn weights_the_chain_never_applied_degrade_the_validator() {
    use templar_protocol::chain::weights::WeightsOnChain;
    let validator = spec("  resources: {gpus: 0}\n");
    let outcome = |last_update: u64, head: u64| {
        let status = NodeStatus {
            role: NodeRole::Validator,
            hotkey: "vk".into(),
            weights: Some(WeightsOnChain::judge(
                100,
                Some(5),
                Some(200),
                last_update,
                head,
            )),
            ..Default::default()
        };
        with_one_ready_node(NodeRole::Validator, &validator, status)
    };
    let o = outcome(100, 250);
    let d = cond(&o, "Degraded");
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "WeightsNotRevealed")
    );
    assert!(
        d.message
            .contains("vk: weights committed at block 100 were not applied by block 200"),
        "{}",
        d.message
    );
    assert_eq!(
        cond(&outcome(100, 150), "Degraded").status,
        "False",
        "awaiting"
    );
    assert_eq!(
        cond(&outcome(190, 250), "Degraded").status,
        "False",
        "applied"
    );
}

/// A crash loop shows the node's own last words (its termination message) rather than the
/// kubelet's back-off line.
#[test]
fn a_crash_loop_says_why_the_node_exited() {
    let now = Timestamp::now();
    let p = pod(
        "a-miner-0",
        now,
        json!({"phase": "Running", "containerStatuses": [{
            "name": "node", "image": "img", "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                "message": "Error: --device cuda: libtorch sees no CUDA device: the NVIDIA driver supports CUDA up to 12.8\n"}}
        }]}),
    );
    let o = run(&spec("  resources: {gpus: 1}\n"), vec![p], None, now);
    let d = cond(&o, "Degraded");
    assert_eq!(d.reason, "CrashLoopBackOff");
    assert!(
        d.message.contains("supports CUDA up to 12.8"),
        "{}",
        d.message
    );
}

#[tokio::test]
async fn status_reads_time_out_and_reject_what_is_not_a_status() {
    // A server that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let probe = StatusProbe::new(port, Duration::from_millis(300), 2);
    let started = std::time::Instant::now();
    let err = probe.read("127.0.0.1").await.unwrap_err();
    assert!(matches!(err, ProbeError::Timeout(_)), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A server answering something else.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/status",
        axum::routing::get(|| async { "<html>hello</html>" }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let probe = StatusProbe::new(port, Duration::from_secs(2), 2);
    let err = probe.read("127.0.0.1").await.unwrap_err();
    assert!(matches!(err, ProbeError::NotAStatus(_)), "{err}");
    assert!(err.to_string().contains("not a node status"), "{err}");

    // Nobody listening: refused, reported per pod by read_all.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let probe = StatusProbe::new(closed, Duration::from_secs(2), 2);
    let all = probe
        .read_all(vec![
            ("p0".into(), "127.0.0.1".into()),
            ("p1".into(), "not an ip".into()),
        ])
        .await;
    assert_eq!(all.len(), 2);
    assert!(all["p0"].is_err() && all["p1"].is_err());
}

/// A name whose StatefulSet's revision label would pass 63 characters is refused, by the
/// CRD's rule at admission and by the operator's own check; the longest allowed one fits.
#[test]
fn a_name_too_long_for_the_pods_labels_is_refused_at_admission_and_in_validation() {
    use kube::CustomResourceExt;
    for (role, crd) in [
        (NodeRole::Miner, TemplarMiner::crd()),
        (NodeRole::Validator, templar_crds::TemplarValidator::crd()),
    ] {
        let role = role.as_str();
        let max = max_name_len(role);
        // The longest: "<name>-<role>-<10-character hash>" is exactly a label's 63.
        let longest = "a".repeat(max);
        assert_eq!(format!("{longest}-{role}-{}", "h".repeat(10)).len(), 63);
        check_name(role, &longest).unwrap();
        let problem = check_name(role, &format!("{longest}b")).unwrap_err();
        assert_eq!(problem.reason, ProblemReason::InvalidSpec);
        assert!(
            problem.message.contains(&format!("at most {max}")),
            "{problem:?}"
        );
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let rules = schema["openAPIV3Schema"]["x-kubernetes-validations"]
            .as_array()
            .unwrap();
        let rule = format!("size(self.metadata.name) <= {max}");
        assert!(
            rules.iter().any(|r| r["rule"] == rule.as_str()),
            "{role}: the CRD lacks {rule:?}: {rules:?}"
        );
    }
}

/// AMD GPUs with the CUDA node image are refused with the reason; a ROCm build is accepted.
#[test]
fn amd_gpus_need_a_rocm_image() {
    let amd = spec("  resources: {gpus: 1, gpuVendor: amd}\n");
    let problem = validate(&amd, &inputs()).unwrap_err();
    assert_eq!(problem.reason, ProblemReason::InvalidSpec);
    assert!(problem.message.contains("ROCm"), "{problem:?}");
    let mut rocm = spec("  resources: {gpus: 1, gpuVendor: amd}\n");
    rocm.image = "ghcr.io/templar-rs/node:0.1.0-rocm".into();
    validate(&rocm, &inputs()).unwrap();
    validate(&spec("  resources: {gpus: 1}\n"), &inputs()).unwrap();
}

/// A node trains on one device: a pod asking for more GPUs is refused with the reason and
/// what to ask for instead, never left holding idle GPUs.
#[test]
fn more_than_one_gpu_per_pod_is_refused_with_the_alternative() {
    let eight = spec("  resources: {gpus: 8}\n");
    let inputs = inputs();
    let problem = validate(&eight, &inputs).unwrap_err();
    assert_eq!(problem.reason, ProblemReason::InvalidSpec);
    assert!(
        problem.message.contains("one GPU") && problem.message.contains("run 16 replicas"),
        "{problem:?}"
    );
    validate(&spec("  resources: {gpus: 1}\n"), &inputs).unwrap();
    validate(&spec("  resources: {gpus: 0}\n"), &inputs).unwrap();
}

/// A memory limit that cannot hold /dev/shm (charged to it) and the trained model's working
/// set is refused with the reason; one that can is accepted.
#[test]
fn a_memory_limit_below_shm_and_the_models_needs_is_refused() {
    let small = spec("  model: 150M\n  resources: {gpus: 1, memory: 8Gi, shmSize: 2Gi}\n");
    let problem = validate(&small, &inputs()).unwrap_err();
    assert_eq!(problem.reason, ProblemReason::InvalidSpec);
    assert!(
        problem.message.contains("/dev/shm") && problem.message.contains("150M"),
        "{problem:?}"
    );
    validate(
        &spec("  model: 150M\n  resources: {gpus: 1, memory: 24Gi, shmSize: 2Gi}\n"),
        &inputs(),
    )
    .unwrap();
}
