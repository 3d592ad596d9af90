//! Status from the StatefulSet's rollout, condition order, strings from nodes, and when a
//! status is worth writing (pure: no API server).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use templar_crds::resources::MAX_NODE_STRING;
use templar_crds::{NodeSetStatus, NodeSpec, TemplarMiner};
use templar_operator::status::{Input, Observed, Outcome, compute, needs_write};
use templar_protocol::node_status::{NodeRole, NodeStatus};

fn spec() -> NodeSpec {
    serde_yaml::from_str::<TemplarMiner>(
        "apiVersion: templar.tplr.ai/v1alpha1\nkind: TemplarMiner\nmetadata: {name: a}\nspec:\n  image: img\n  replicas: 2\n  storage: {bucket: b, writeSecret: w}\n  walletSecret: wallet\n  startupDeadlineSeconds: 600\n",
    )
    .unwrap()
    .spec
    .node
}

fn sts(status: Value) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": "a-miner", "generation": 2, "uid": "sts-uid"},
        "spec": {"selector": {}, "template": {}},
        "status": status
    }))
    .unwrap()
}

fn done() -> StatefulSet {
    sts(
        json!({"replicas": 2, "observedGeneration": 2, "updatedReplicas": 2,
               "currentRevision": "r2", "updateRevision": "r2"}),
    )
}

fn pod(name: &str, revision: &str, conditions: Value, created: Timestamp) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "creationTimestamp": created.to_string(),
                     "labels": {"controller-revision-hash": revision}},
        "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": conditions}
    }))
    .unwrap()
}

fn ready(name: &str, revision: &str, now: Timestamp) -> Pod {
    pod(
        name,
        revision,
        json!([{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]),
        now,
    )
}

fn run(
    sts: StatefulSet,
    pods: Vec<Pod>,
    probes: BTreeMap<String, Result<NodeStatus, templar_operator::probe::ProbeError>>,
    previous: Option<&NodeSetStatus>,
    now: Timestamp,
) -> Outcome {
    compute(Input {
        role: NodeRole::Miner,
        spec: &spec(),
        generation: Some(5),
        previous,
        problem: None,
        observed: &Observed {
            stateful_set: Some(sts),
            pods,
            probes,
        },
        selector: "app.kubernetes.io/instance=a".into(),
        now,
    })
}

fn cond<'a>(o: &'a Outcome, t: &str) -> (&'a str, &'a str) {
    let c = o.status.conditions.iter().find(|c| c.type_ == t).unwrap();
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn ready_waits_for_the_rollout_to_finish() {
    let now = Timestamp::now();
    let pods = || vec![ready("a-0", "r2", now), ready("a-1", "r2", now)];
    let finished = run(done(), pods(), BTreeMap::new(), None, now);
    assert_eq!(cond(&finished, "Ready"), ("True", "AllReplicasReady"));
    assert_eq!(
        finished.status.selector.as_deref(),
        Some("app.kubernetes.io/instance=a")
    );

    // The controller has not seen the new spec yet.
    let unseen = sts(
        json!({"replicas": 2, "observedGeneration": 1, "updatedReplicas": 2,
                           "currentRevision": "r2", "updateRevision": "r2"}),
    );
    let o = run(unseen, pods(), BTreeMap::new(), None, now);
    assert_eq!(cond(&o, "Ready"), ("False", "ReplicasNotReady"));
    assert_eq!(cond(&o, "Progressing"), ("True", "RollingOut"));
    assert!(!o.settled);

    // Half rolled: one pod still at the old revision, though ready.
    let rolling = sts(
        json!({"replicas": 2, "observedGeneration": 2, "updatedReplicas": 1,
                            "currentRevision": "r1", "updateRevision": "r2"}),
    );
    let o = run(
        rolling,
        vec![ready("a-0", "r2", now), ready("a-1", "r1", now)],
        BTreeMap::new(),
        None,
        now,
    );
    assert_eq!(cond(&o, "Ready").0, "False");
    assert_eq!(
        o.status.ready_replicas, 1,
        "the old-revision pod does not count"
    );
    let message = &o
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap()
        .message;
    assert!(message.contains("1/2 at the current revision"), "{message}");
}

#[test]
fn unschedulable_wins_over_the_startup_deadline() {
    let now = Timestamp::now();
    let old = now - SignedDuration::from_secs(3600);
    let waiting = pod(
        "a-0",
        "r2",
        json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes: Insufficient nvidia.com/gpu"}]),
        old,
    );
    let o = run(done(), vec![waiting], BTreeMap::new(), None, now);
    assert_eq!(cond(&o, "Scheduled"), ("False", "Unschedulable"));
    assert_ne!(cond(&o, "Degraded").1, "StartupDeadlineExceeded");
}

#[test]
fn a_ready_pod_that_blips_is_not_past_its_startup_deadline() {
    let now = Timestamp::now();
    let created = now - SignedDuration::from_secs(86_400);
    let blip = |since: Timestamp| {
        pod(
            "a-0",
            "r2",
            json!([{"type": "PodScheduled", "status": "True"},
                   {"type": "Ready", "status": "False", "lastTransitionTime": since.to_string()}]),
            created,
        )
    };
    let o = run(
        done(),
        vec![
            blip(now - SignedDuration::from_secs(20)),
            ready("a-1", "r2", now),
        ],
        BTreeMap::new(),
        None,
        now,
    );
    assert_eq!(cond(&o, "Degraded"), ("False", "AsExpected"));
    assert_eq!(cond(&o, "Progressing"), ("True", "RollingOut"));
    // Not ready for longer than the deadline since it lost readiness: that is late.
    let o = run(
        done(),
        vec![
            blip(now - SignedDuration::from_secs(601)),
            ready("a-1", "r2", now),
        ],
        BTreeMap::new(),
        None,
        now,
    );
    assert_eq!(cond(&o, "Degraded"), ("True", "StartupDeadlineExceeded"));
}

#[test]
fn strings_from_nodes_are_truncated() {
    let now = Timestamp::now();
    let chatty = NodeStatus {
        hotkey: "h".repeat(10_000),
        last_error: Some("e".repeat(100_000)),
        ..Default::default()
    };
    let probes = BTreeMap::from([
        ("a-0".to_string(), Ok(chatty)),
        (
            "a-1".to_string(),
            Err(templar_operator::probe::ProbeError::NotAStatus(
                "x".repeat(50_000),
            )),
        ),
    ]);
    let o = run(
        done(),
        vec![ready("a-0", "r2", now), ready("a-1", "r2", now)],
        probes,
        None,
        now,
    );
    for node in &o.status.nodes {
        for s in [&node.hotkey, &node.last_error].into_iter().flatten() {
            assert!(s.chars().count() <= MAX_NODE_STRING, "{} chars", s.len());
        }
    }
    for c in &o.status.conditions {
        assert!(c.message.chars().count() <= MAX_NODE_STRING + 16);
    }
    let size = serde_json::to_vec(&o.status).unwrap().len();
    assert!(size < 4096, "status is {size} bytes");
}

#[test]
fn a_status_that_changed_only_timestamps_is_not_written() {
    let t0 = Timestamp::now();
    let node = |window: u64| NodeStatus {
        hotkey: "hk".into(),
        window: Some(window),
        ..Default::default()
    };
    let pods = || vec![ready("a-0", "r2", t0), ready("a-1", "r2", t0)];
    let probes = |window| {
        BTreeMap::from([
            ("a-0".to_string(), Ok(node(window))),
            ("a-1".to_string(), Ok(node(window))),
        ])
    };
    let heartbeat = SignedDuration::from_secs(600);
    let first = run(done(), pods(), probes(7), None, t0);
    assert!(needs_write(&first.status, None, t0, heartbeat));

    let t1 = t0 + SignedDuration::from_secs(30);
    let same = run(done(), pods(), probes(7), Some(&first.status), t1);
    assert_ne!(same.status, first.status, "lastSeen moved");
    assert!(!needs_write(
        &same.status,
        Some(&first.status),
        t1,
        heartbeat
    ));

    let moved = run(done(), pods(), probes(8), Some(&first.status), t1);
    assert!(needs_write(
        &moved.status,
        Some(&first.status),
        t1,
        heartbeat
    ));

    // Past the heartbeat an unchanged status is written, so lastSeen stays recent.
    let t2 = t0 + SignedDuration::from_secs(601);
    let stale = run(done(), pods(), probes(7), Some(&first.status), t2);
    assert!(needs_write(
        &stale.status,
        Some(&first.status),
        t2,
        heartbeat
    ));
}
