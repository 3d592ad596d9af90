//! The resource's status from what was observed: its pods, each ready pod's `/status`, and
//! a spec problem if validation found one. Pure (time is an argument), so every path of the
//! conditions is unit-tested without an API server.

mod conditions;
mod pods;

pub use pods::pod_condition_true;

use crate::probe::ProbeError;
use crate::validate::Problem;
use conditions::Findings;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use pods::{PodState, pod_state};
use std::collections::BTreeMap;
use templar_crds::resources::ReplicaStatus;
use templar_crds::{NodeRole, NodeSetStatus, NodeSpec, NodeStatus};

pub const SCHEDULED: &str = "Scheduled";
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// What the reconcile saw this time.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub pods: Vec<Pod>,
    /// `/status` of ready pods by pod name: the document, or why it could not be read.
    pub probes: BTreeMap<String, Result<NodeStatus, ProbeError>>,
}

/// An event to publish: a condition turned bad (Warning) or Ready (Normal).
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: NodeSetStatus,
    pub notices: Vec<Notice>,
    /// Everything desired is ready and healthy: requeue at the slow refresh period.
    pub settled: bool,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// A node's score for the status: its incentive (miners) or the mean score it gives
/// (validators).
fn node_score(role: NodeRole, s: &NodeStatus) -> Option<f64> {
    match role {
        NodeRole::Miner => s.incentive,
        NodeRole::Validator => mean(s.scores.iter().map(|m| m.score)),
    }
}

pub struct Input<'a> {
    pub role: NodeRole,
    pub spec: &'a NodeSpec,
    pub generation: Option<i64>,
    pub previous: Option<&'a NodeSetStatus>,
    pub problem: Option<&'a Problem>,
    pub observed: &'a Observed,
    pub now: Timestamp,
}

/// One entry per pod (from its probe, or its failing container), and the documents of the
/// nodes that answered.
fn replica_entries<'a>(
    role: NodeRole,
    pods: &[&Pod],
    states: &[PodState],
    observed: &'a Observed,
    previous: Option<&NodeSetStatus>,
    now: Timestamp,
) -> (Vec<ReplicaStatus>, Vec<&'a NodeStatus>) {
    let previous_nodes: BTreeMap<&str, &ReplicaStatus> = previous
        .map(|p| p.nodes.iter().map(|n| (n.pod.as_str(), n)).collect())
        .unwrap_or_default();
    let mut nodes = Vec::new();
    let mut reports = Vec::new();
    for (pod, state) in pods.iter().zip(states) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let before = previous_nodes.get(name.as_str());
        let mut entry = ReplicaStatus {
            pod: name.clone(),
            last_seen: before.and_then(|b| b.last_seen.clone()),
            ..Default::default()
        };
        match observed.probes.get(&name) {
            Some(Ok(s)) => {
                entry.uid = s.uid;
                entry.hotkey = Some(s.hotkey.clone());
                entry.window = s.window;
                entry.loss = s.last_loss;
                entry.score = node_score(role, s);
                entry.last_seen = Some(now.to_string());
                entry.last_error = s.last_error.clone();
                reports.push(s);
            }
            Some(Err(e)) => entry.last_error = Some(e.to_string()),
            None => {
                if let PodState::Failing { message, .. } = state {
                    entry.last_error = Some(message.clone());
                }
            }
        }
        nodes.push(entry);
    }
    (nodes, reports)
}

pub fn compute(input: Input) -> Outcome {
    let Input {
        role,
        spec,
        generation,
        previous,
        problem,
        observed,
        now,
    } = input;
    let desired = if spec.suspend { 0 } else { spec.replicas };
    let deadline = SignedDuration::from_secs(spec.startup_deadline_seconds);
    let mut pods: Vec<&Pod> = observed
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    pods.sort_by_key(|p| p.metadata.name.clone());
    let states: Vec<PodState> = pods.iter().map(|p| pod_state(p, deadline, now)).collect();
    let (nodes, reports) = replica_entries(role, &pods, &states, observed, previous, now);

    let findings = Findings {
        spec,
        desired,
        pods: &pods,
        states: &states,
        problem,
        node_error: reports
            .iter()
            .find_map(|r| r.last_error.as_ref().map(|e| format!("{}: {e}", r.hotkey))),
    };
    let prev_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let conditions = conditions::conditions(&findings, generation, prev_conditions, now);
    let notices = conditions::notices(&conditions, prev_conditions);
    let ready = findings.ready_count();
    let status = NodeSetStatus {
        observed_generation: generation,
        conditions,
        replicas: pods.len() as i32,
        ready_replicas: ready,
        ready: Some(format!("{ready}/{desired}")),
        window: reports.iter().filter_map(|r| r.window).max(),
        global_step: reports.iter().map(|r| r.global_step).max(),
        loss: mean(reports.iter().filter_map(|r| r.last_loss)),
        score: mean(reports.iter().filter_map(|r| node_score(role, r))),
        last_weights_window: reports.iter().filter_map(|r| r.last_weights_window).max(),
        last_checkpoint_window: reports
            .iter()
            .filter_map(|r| r.last_checkpoint_window)
            .max(),
        nodes,
    };
    Outcome {
        settled: findings.is_ready() && findings.degraded_why().is_none(),
        status,
        notices,
    }
}
