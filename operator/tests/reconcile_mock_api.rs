//! Reconcile paths against a MOCK Kubernetes API (kube-rs with a tower-test service: no
//! kube-apiserver can run on this machine). Each scenario plays the API server: it answers
//! the requests one by one and asserts the method, exact URI and body of every one, so an
//! extra, missing or reordered request fails the test. The nodes' `/status` is served by
//! real local HTTP servers.

mod common;

use common::mock_api::*;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use templar_crds::TemplarValidator;
use templar_operator::reconcile::{error_policy, reconcile};
use templar_protocol::node_status::{MinerScore, NodeRole};

/// A fresh resource: inputs read, the four objects applied in order, pods listed (none
/// yet), status written as not ready.
#[tokio::test]
async fn create_applies_the_objects_and_writes_a_pending_status() {
    let (mut api, ctx) = setup(1);
    let cr = miner("  resources: {gpus: 1, gpuType: NVIDIA-H100-80GB-HBM3}\n");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));

    api.secrets_found(&["hotkey-0", "hotkey-1"]).await;
    let [cm, headless, metrics, sts]: [Value; 4] =
        api.objects_applied("alpha-miner").await.try_into().unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert!(
        cm["data"]["hparams.toml"]
            .as_str()
            .unwrap()
            .contains("size = \"tiny\"")
    );
    assert_eq!(cm["metadata"]["ownerReferences"][0]["uid"], "1111-2222");
    assert_eq!(cm["metadata"]["ownerReferences"][0]["kind"], "TemplarMiner");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(metrics["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(sts["spec"]["replicas"], 2);
    let pod_spec = &sts["spec"]["template"]["spec"];
    assert_eq!(
        pod_spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        "1"
    );
    assert_eq!(
        pod_spec["nodeSelector"]["nvidia.com/gpu.product"],
        "NVIDIA-H100-80GB-HBM3"
    );
    assert_eq!(sts["metadata"]["ownerReferences"][0]["controller"], true);
    api.pods(vec![]).await;
    let status = api.status(&cr).await;
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["replicas"], 0);
    assert_eq!(status["ready"], "0/2");
    assert_eq!(condition(&status, "Scheduled")["reason"], "PodsPending");
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Progressing")["reason"], "RollingOut");
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert_eq!(condition(&status, "Ready")["observedGeneration"], 3);

    assert_eq!(finish(task).await, Action::requeue(Duration::from_secs(10)));
    api.done().await;
}

/// Two ready pods, each with its node's `/status` on its own loopback address: the status
/// carries their window, loss and incentive, the resource is Ready, and a Normal event says so.
#[tokio::test]
async fn status_comes_from_the_ready_pods() {
    let port = node_status_server("127.0.0.1:0", node("hk-a", 1, 41, 3.0, 0.25)).await;
    node_status_server(&format!("127.0.0.2:{port}"), node("hk-b", 2, 42, 4.0, 0.75)).await;
    let (mut api, ctx) = setup(port);
    let cr = miner("");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));

    api.secrets_found(&["hotkey-0", "hotkey-1"]).await;
    api.objects_applied("alpha-miner").await;
    api.pods(vec![
        pod("alpha-miner-0", "127.0.0.1", true),
        pod("alpha-miner-1", "127.0.0.2", true),
    ])
    .await;
    let status = api.status(&cr).await;
    assert_eq!(status["readyReplicas"], 2);
    assert_eq!(status["ready"], "2/2");
    assert_eq!(status["window"], 42);
    assert_eq!(status["globalStep"], 420);
    assert_eq!(status["loss"], 3.5);
    assert_eq!(status["score"], 0.5);
    assert_eq!(status["lastCheckpointWindow"], 41);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Ready")["reason"], "AllReplicasReady");
    assert_eq!(condition(&status, "Progressing")["reason"], "Training");
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0]["pod"], "alpha-miner-0");
    assert_eq!(nodes[0]["hotkey"], "hk-a");
    assert_eq!(nodes[1]["uid"], 2);
    assert_eq!(nodes[1]["window"], 42);
    assert!(nodes[1]["lastSeen"].is_string());
    let event = api.event().await;
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["reason"], "AllReplicasReady");
    assert_eq!(event["regarding"]["name"], "alpha");

    assert_eq!(finish(task).await, Action::requeue(Duration::from_secs(30)));
    api.done().await;
}

/// A pod the scheduler cannot place (no free GPU): Scheduled=False/Unschedulable with the
/// scheduler's message, never Ready, and one Warning event.
#[tokio::test]
async fn unschedulable_pod_sets_the_condition_and_a_warning_event() {
    let (mut api, ctx) = setup(1);
    let cr = miner("");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));
    api.secrets_found(&["hotkey-0", "hotkey-1"]).await;
    api.objects_applied("alpha-miner").await;
    let message = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.";
    let created = k8s_openapi::jiff::Timestamp::now().to_string();
    let pending = |name: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "creationTimestamp": created,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "alpha-miner",
                                              "uid": STS_UID, "controller": true}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
            ]}
        })
    };
    api.pods(vec![pending("alpha-miner-0"), pending("alpha-miner-1")])
        .await;
    let status = api.status(&cr).await;
    let scheduled = condition(&status, "Scheduled");
    assert_eq!(scheduled["status"], "False");
    assert_eq!(scheduled["reason"], "Unschedulable");
    assert_eq!(scheduled["message"], message);
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(status["readyReplicas"], 0);
    let event = api.event().await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "Unschedulable");
    assert_eq!(event["note"], message);

    assert_eq!(finish(task).await, Action::requeue(Duration::from_secs(10)));
    api.done().await;
}

/// The write-credentials secret does not exist: nothing is applied, the resource is
/// Degraded with reason MissingSecret, and a Warning event names the secret.
#[tokio::test]
async fn missing_secret_degrades_without_applying_anything() {
    let (mut api, ctx) = setup(1);
    let cr = miner("");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));
    api.not_found(&format!("/api/v1/namespaces/{NS}/secrets/s3-write"))
        .await;
    api.secret("hotkeys", &["hotkey-0", "hotkey-1"]).await;
    // Nothing applied: the StatefulSet is read as it is (none yet, so no pods to list).
    api.not_found(&format!(
        "/apis/apps/v1/namespaces/{NS}/statefulsets/alpha-miner"
    ))
    .await;
    let status = api.status(&cr).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "MissingSecret");
    assert!(degraded["message"].as_str().unwrap().contains("s3-write"));
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Ready")["reason"], "MissingSecret");
    assert_eq!(condition(&status, "Progressing")["status"], "False");
    let event = api.event().await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "MissingSecret");

    // Not an error loop: a plain requeue, so the secret is picked up once created.
    assert_eq!(finish(task).await, Action::requeue(Duration::from_secs(10)));
    api.done().await;
}

/// `suspend: true` applies the StatefulSet with zero replicas and reports Suspended.
#[tokio::test]
async fn suspend_scales_the_statefulset_to_zero() {
    let (mut api, ctx) = setup(1);
    let cr = miner("  suspend: true\n");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));
    api.secrets_found(&["hotkey-0", "hotkey-1"]).await;
    let sts = &api.objects_applied("alpha-miner").await[3];
    assert_eq!(sts["spec"]["replicas"], 0);
    api.pods(vec![]).await;
    let status = api.status(&cr).await;
    assert_eq!(condition(&status, "Ready")["reason"], "Suspended");
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert_eq!(status["ready"], "0/0");

    assert_eq!(finish(task).await, Action::requeue(Duration::from_secs(10)));
    api.done().await;
}

/// A resource being deleted: the garbage collector removes what it owns through the owner
/// references, so the reconcile makes no request at all and waits for the next change.
#[tokio::test]
async fn deletion_makes_no_requests() {
    let (api, ctx) = setup(1);
    let mut cr = miner("");
    cr.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let action = reconcile(Arc::new(cr), ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    api.done().await;
}

/// An API error fails the reconcile with the error kind counted in the metrics, and the
/// retry backs off exponentially per object.
#[tokio::test]
async fn api_errors_are_counted_and_backed_off() {
    let (mut api, ctx) = setup(1);
    let cr = Arc::new(miner(""));
    let task = tokio::spawn(reconcile(cr.clone(), ctx.clone()));
    let (_, send) = api
        .expect("GET", &format!("/api/v1/namespaces/{NS}/secrets/s3-write"))
        .await;
    send.send_response(json_response(
        500,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd is down"}),
    ));
    let err = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), "read_input");
    assert!(err.to_string().contains("s3-write"), "{err}");
    assert_eq!(
        error_policy(cr.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(cr.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    let text = api.metrics.encode();
    assert!(
        text.contains(
            "templar_operator_reconcile_failures_total{kind=\"TemplarMiner\",error=\"read_input\"} 1"
        ),
        "{text}"
    );
}

/// The validator kind goes through the same pipeline under its own resource path, and its
/// score is the mean score it gives.
#[tokio::test]
async fn validators_report_the_mean_score_they_give() {
    let mut status = node("hk-v", 0, 7, 3.0, 0.0);
    status.role = NodeRole::Validator;
    status.incentive = None;
    status.scores = vec![
        MinerScore {
            uid: 1,
            score: 0.2,
            last_improvement: None,
            last_random_improvement: None,
            weight: 0.25,
            sync_drift: None,
            held_out_loss: None,
        },
        MinerScore {
            uid: 2,
            score: 0.6,
            last_improvement: None,
            last_random_improvement: None,
            weight: 0.75,
            sync_drift: None,
            held_out_loss: None,
        },
    ];
    status.last_weights_window = Some(6);
    let port = node_status_server("127.0.0.1:0", status).await;
    let (mut api, ctx) = setup(port);
    let yaml = serde_yaml::to_string(&miner(""))
        .unwrap()
        .replace("TemplarMiner", "TemplarValidator");
    let mut cr: TemplarValidator = serde_yaml::from_str(&yaml).unwrap();
    cr.spec.node.replicas = 1;
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));
    api.secrets_found(&["hotkey-0"]).await;
    api.objects_applied("alpha-validator").await;
    api.answer(
        "GET",
        &format!(
            "/api/v1/namespaces/{NS}/pods?&{}",
            POD_SELECTOR.replace("3Dminer", "3Dvalidator")
        ),
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod("alpha-validator-0", "127.0.0.1", true)]}),
    )
    .await;
    let (body, send) = api
        .expect(
            "PATCH",
            &format!("/apis/templar.tplr.ai/v1alpha1/namespaces/{NS}/templarvalidators/alpha/status{APPLY}"),
        )
        .await;
    send.send_response(json_response(200, &serde_json::to_value(&cr).unwrap()));
    let status = &body["status"];
    assert_eq!(body["kind"], "TemplarValidator");
    assert!(
        (status["score"].as_f64().unwrap() - 0.4).abs() < 1e-9,
        "{status}"
    );
    assert_eq!(status["lastWeightsWindow"], 6);
    assert_eq!(condition(status, "Ready")["status"], "True");
    api.event().await;
    assert_eq!(finish(task).await, Action::requeue(Duration::from_secs(30)));
    api.done().await;
}

/// The API server refuses the StatefulSet (an immutable field changed, here the cache
/// size): a spec problem in the status and a Warning event, not a retry loop.
#[tokio::test]
async fn a_rejected_apply_is_a_spec_problem_not_an_error_loop() {
    let (mut api, ctx) = setup(1);
    let cr = miner("  cache: {size: 100Gi}\n");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));
    api.secrets_found(&["hotkey-0", "hotkey-1"]).await;
    for path in &object_paths("alpha-miner")[..3] {
        api.apply(path).await;
    }
    let sts = format!("/apis/apps/v1/namespaces/{NS}/statefulsets/alpha-miner");
    api.not_found(&sts).await;
    let (body, send) = api.expect("PATCH", &format!("{sts}{APPLY}")).await;
    assert_eq!(
        body["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "100Gi"
    );
    let message = "StatefulSet.apps \"alpha-miner\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";
    send.send_response(json_response(
        422,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422, "message": message}),
    ));
    // The StatefulSet that runs is read for its pods.
    api.answer(
        "GET",
        &format!("/apis/apps/v1/namespaces/{NS}/statefulsets/alpha-miner"),
        rolled_out(&body),
    )
    .await;
    api.pods(vec![]).await;
    let status = api.status(&cr).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["reason"], "ApplyRejected");
    assert!(degraded["message"].as_str().unwrap().contains("Forbidden"));
    let event = api.event().await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "ApplyRejected");
    assert_eq!(finish(task).await, Action::requeue(Duration::from_secs(10)));
    api.done().await;
}
