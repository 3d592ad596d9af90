//! The resource's status from what was observed: its pods, each ready pod's `/status`, and
//! a spec problem if validation found one. Pure (time is an argument), so every path of the
//! conditions is unit-tested without an API server.

mod conditions;
mod pods;

pub use pods::{controlled_by, host_network, pod_condition_true};

use crate::probe::ProbeError;
use crate::validate::Problem;
use conditions::Findings;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use pods::{PodState, pod_state};
use std::collections::BTreeMap;
use templar_crds::resources::{ReplicaStatus, truncate_node_string};
use templar_crds::{NodeSetStatus, NodeSpec};
use templar_protocol::node_status::{NodeRole, NodeStatus};

pub const SCHEDULED: &str = "Scheduled";
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// What the reconcile saw this time.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The owned StatefulSet as the API server returned it (with its rollout status).
    pub stateful_set: Option<StatefulSet>,
    /// The pods that StatefulSet controls.
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
    /// The pods' label selector, for the scale subresource.
    pub selector: String,
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
                entry.hotkey = Some(truncate_node_string(s.hotkey.as_str()));
                entry.window = s.window;
                entry.loss = s.last_loss;
                entry.score = node_score(role, s);
                entry.last_seen = Some(now.to_string());
                entry.last_error = s.last_error.as_deref().map(truncate_node_string);
                reports.push(s);
            }
            Some(Err(e)) => entry.last_error = Some(truncate_node_string(&e.to_string())),
            None => {
                if let PodState::Failing { message, .. } = state {
                    entry.last_error = Some(truncate_node_string(message));
                }
            }
        }
        nodes.push(entry);
    }
    (nodes, reports)
}

/// Where the owned StatefulSet's rollout stands, from its own status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Rollout {
    /// The controller has seen the current spec, every replica runs the update revision,
    /// and the current revision is the update revision.
    pub done: bool,
    /// Replicas at the update revision.
    pub updated: i32,
    /// The revision new pods get; only pods at it count as ready.
    pub update_revision: Option<String>,
}

impl Rollout {
    fn of(sts: Option<&StatefulSet>, desired: i32) -> Self {
        let Some(sts) = sts else {
            return Self::default();
        };
        let Some(st) = sts.status.as_ref() else {
            return Self::default();
        };
        let observed = match (st.observed_generation, sts.metadata.generation) {
            (Some(seen), Some(generation)) => seen >= generation,
            _ => false,
        };
        let updated = st.updated_replicas.unwrap_or(0);
        let same_revision =
            st.current_revision.is_some() && st.current_revision == st.update_revision;
        Self {
            done: observed && updated >= desired && same_revision,
            updated,
            update_revision: st.update_revision.clone(),
        }
    }
}

/// What is worth writing changed: anything but the `lastSeen` and transition timestamps, or
/// the previous read is older than `heartbeat` (so `lastSeen` never goes stale for long).
/// Skipping the rest keeps a healthy resource from writing its status every refresh.
pub fn needs_write(
    new: &NodeSetStatus,
    previous: Option<&NodeSetStatus>,
    now: Timestamp,
    heartbeat: SignedDuration,
) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    let strip = |s: &NodeSetStatus| {
        let mut s = s.clone();
        s.nodes.iter_mut().for_each(|n| n.last_seen = None);
        s.conditions
            .iter_mut()
            .for_each(|c| c.last_transition_time = Time(Timestamp::UNIX_EPOCH));
        s
    };
    if strip(new) != strip(previous) {
        return true;
    }
    // A node read now whose written `lastSeen` is older than the heartbeat. (A node that
    // stopped answering keeps its old `lastSeen` and does not force writes.)
    let seen = |n: &ReplicaStatus| n.last_seen.as_deref()?.parse::<Timestamp>().ok();
    new.nodes.iter().any(|n| {
        let before = previous
            .nodes
            .iter()
            .find(|p| p.pod == n.pod)
            .and_then(seen);
        matches!((seen(n), before), (Some(read), Some(written))
            if now.duration_since(read) < SignedDuration::from_secs(1)
                && read.duration_since(written) >= heartbeat)
    })
}

pub fn compute(input: Input) -> Outcome {
    let Input {
        role,
        spec,
        generation,
        previous,
        problem,
        observed,
        selector,
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
        rollout: Rollout::of(observed.stateful_set.as_ref(), desired),
        problem,
        node_error: reports.iter().find_map(|r| {
            r.last_error
                .as_ref()
                .map(|e| truncate_node_string(&format!("{}: {e}", r.hotkey)))
        }),
        wrong_device: reports.iter().find_map(|r| wrong_device(spec, r)),
        weights_not_revealed: reports.iter().find_map(|r| weights_not_revealed(r)),
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
        selector: Some(selector),
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

/// A validator whose last weights commit was not applied by the block it was due: the
/// message.
fn weights_not_revealed(node: &NodeStatus) -> Option<String> {
    use templar_protocol::chain::weights::WeightsState;
    let w = node.weights.as_ref()?;
    (w.state == WeightsState::NotRevealed).then(|| {
        truncate_node_string(&format!(
            "{}: weights committed at block {} were not applied by block {} (the chain \
             refused them at the reveal: check the validator permit, the subnet's \
             MinAllowedWeights and the hotkey's stake)",
            node.hotkey,
            w.committed_block,
            w.due_block.unwrap_or(w.committed_block)
        ))
    })
}

/// A node that computes elsewhere than the pod's resources say: the message, or `None`
/// when it matches (or has not said yet).
fn wrong_device(spec: &NodeSpec, node: &NodeStatus) -> Option<String> {
    let compute = node.compute.as_ref()?;
    let gpus = spec.resources.gpus;
    let why = match (gpus > 0, compute.on_gpu()) {
        (true, false) => format!(
            "{} computes on {} though its pod has {gpus} GPU(s)",
            node.hotkey, compute.device
        ),
        (false, true) => format!(
            "{} computes on {} though its pod asks for no GPU",
            node.hotkey, compute.device
        ),
        _ => return None,
    };
    Some(truncate_node_string(&why))
}
