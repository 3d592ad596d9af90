//! Reconcile edge cases against the MOCK Kubernetes API (see `common/mock_api.rs`): suspend
//! with a broken spec, pods the StatefulSet does not control, host-network pods, a status
//! that does not change, and a disruption budget the spec dropped.

mod common;

use common::mock_api::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use templar_operator::reconcile::reconcile;

/// `suspend: true` while a secret is missing: validation fails, yet the StatefulSet that
/// runs is scaled to zero (a merge patch of `replicas` only) and the status says why.
#[tokio::test]
async fn suspend_stops_the_pods_even_when_the_spec_is_broken() {
    let (mut api, ctx) = setup(1);
    let cr = miner("  suspend: true\n");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));
    api.not_found(&format!("/api/v1/namespaces/{NS}/secrets/s3-write"))
        .await;
    api.secret("hotkeys", &["hotkey-0", "hotkey-1"]).await;
    let (body, send) = api
        .expect(
            "PATCH",
            &format!("/apis/apps/v1/namespaces/{NS}/statefulsets/alpha-miner?"),
        )
        .await;
    assert_eq!(body, json!({"spec": {"replicas": 0}}));
    let scaled = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "alpha-miner", "namespace": NS, "uid": STS_UID, "generation": 5},
        "spec": {"replicas": 0, "selector": {}, "template": {}, "serviceName": "alpha-miner"},
        "status": {"replicas": 1, "observedGeneration": 4}
    });
    send.send_response(json_response(200, &scaled));
    api.pods(vec![pod("alpha-miner-0", "10.0.0.9", false)])
        .await;
    let status = api.status(&cr).await;
    assert_eq!(condition(&status, "Ready")["reason"], "Suspended");
    assert_eq!(condition(&status, "Degraded")["reason"], "MissingSecret");
    api.event().await;
    finish(task).await;
    api.done().await;
}

/// A pod with the resource's labels that the StatefulSet does not control (someone's
/// debugging copy) is neither probed nor listed; a host-network pod is listed but not probed.
#[tokio::test]
async fn only_the_statefulsets_own_pods_are_counted_and_probed() {
    let port = node_status_server("127.0.0.1:0", node("hk-a", 1, 41, 3.0, 0.25)).await;
    let (mut api, ctx) = setup(port);
    let cr = miner("");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));
    api.secrets_found(&["hotkey-0", "hotkey-1"]).await;
    api.objects_applied("alpha-miner").await;
    let mut foreign = pod("alpha-miner-debug", "127.0.0.1", true);
    foreign["metadata"]["ownerReferences"] = json!([]);
    let mut host = pod("alpha-miner-1", "127.0.0.1", true);
    host["spec"] = json!({"hostNetwork": true, "containers": []});
    api.pods(vec![pod("alpha-miner-0", "127.0.0.1", true), foreign, host])
        .await;
    let status = api.status(&cr).await;
    let nodes = status["nodes"].as_array().unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n["pod"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha-miner-0", "alpha-miner-1"]);
    assert_eq!(nodes[0]["hotkey"], "hk-a");
    assert!(nodes[1]["hotkey"].is_null(), "host-network pod not probed");
    assert_eq!(status["replicas"], 2);
    api.event().await;
    finish(task).await;
    api.done().await;
}

/// A second reconcile that sees the same pods and node documents writes no status: only
/// `lastSeen` would change. No event is repeated either.
#[tokio::test]
async fn an_unchanged_status_is_not_written_again() {
    let port = node_status_server("127.0.0.1:0", node("hk-a", 1, 41, 3.0, 0.25)).await;
    node_status_server(&format!("127.0.0.2:{port}"), node("hk-b", 2, 41, 3.0, 0.25)).await;
    let (mut api, ctx) = setup(port);
    let mut cr = miner("");
    let pods = || {
        vec![
            pod("alpha-miner-0", "127.0.0.1", true),
            pod("alpha-miner-1", "127.0.0.2", true),
        ]
    };
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx.clone()));
    api.secrets_found(&["hotkey-0", "hotkey-1"]).await;
    api.objects_applied("alpha-miner").await;
    api.pods(pods()).await;
    let status = api.status(&cr).await;
    assert_eq!(condition(&status, "Ready")["status"], "True");
    api.event().await;
    finish(task).await;

    cr.status = Some(serde_json::from_value(status).unwrap());
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx.clone()));
    api.secrets_found(&["hotkey-0", "hotkey-1"]).await;
    api.objects_applied("alpha-miner").await;
    api.pods(pods()).await;
    assert_eq!(
        finish(task).await,
        kube::runtime::controller::Action::requeue(Duration::from_secs(30))
    );
    let counts = api.metrics.counts("TemplarMiner");
    assert_eq!((counts.status_writes, counts.status_skips), (1, 1));
    api.done().await;
}

/// A spec without a budget: the reconcile only reads whether one exists (every reconcile
/// of `objects_applied` answers "none", and no DELETE follows); when one does, left from a
/// spec that asked for it, it is deleted once.
#[tokio::test]
async fn a_budget_the_spec_dropped_is_deleted_and_a_missing_one_is_not() {
    let (mut api, ctx) = setup(1);
    let cr = miner("");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));
    api.secrets_found(&["hotkey-0", "hotkey-1"]).await;
    let [cm, headless, metrics, sts] = object_paths("alpha-miner");
    for path in [cm, headless, metrics] {
        api.apply(&path).await;
    }
    api.stateful_set_applied(&sts).await;
    let left = json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "alpha-miner", "namespace": NS},
        "spec": {"maxUnavailable": 1}
    });
    api.budget_deleted("alpha-miner", left).await;
    api.pods(vec![]).await;
    api.status(&cr).await;
    finish(task).await;
    api.done().await;
}
