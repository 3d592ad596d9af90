//! The resource's status from what was observed: its pods, each ready pod's `/status`, and
//! a spec problem if validation found one. Pure (time is an argument), so every path of the
//! conditions is unit-tested without an API server.

use crate::validate::Problem;
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use templar_crds::resources::ReplicaStatus;
use templar_crds::{NodeRole, NodeSetStatus, NodeSpec, NodeStatus};

pub const SCHEDULED: &str = "Scheduled";
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Container waiting reasons that will not fix themselves: Degraded at once.
const BAD_WAITING_REASONS: [&str; 6] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "RunContainerError",
];

/// What the reconcile saw this time.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub pods: Vec<Pod>,
    /// `/status` of ready pods by pod name: the document, or why it could not be read.
    pub probes: BTreeMap<String, Result<NodeStatus, String>>,
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

/// What is wrong with one pod, if anything.
#[derive(Debug, Clone, PartialEq)]
enum PodState {
    Ready,
    /// Waiting for a node: the scheduler's message.
    Unschedulable(String),
    /// A container stuck in a reason from `BAD_WAITING_REASONS`.
    Failing {
        reason: String,
        message: String,
    },
    /// Not ready past the startup deadline.
    Late,
    Starting,
}

/// The pod's condition of `type_` (`Ready`, `PodScheduled`, ...), if reported.
fn pod_condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The pod's condition of `type_` is `True`.
pub fn pod_condition_true(pod: &Pod, type_: &str) -> bool {
    pod_condition(pod, type_).is_some_and(|c| c.status == "True")
}

fn pod_state(pod: &Pod, deadline: SignedDuration, now: Timestamp) -> PodState {
    let Some(st) = pod.status.as_ref() else {
        return PodState::Starting;
    };
    if pod_condition_true(pod, "Ready") {
        return PodState::Ready;
    }
    for cs in st.container_statuses.iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref())
            && let Some(reason) = w.reason.as_deref()
            && BAD_WAITING_REASONS.contains(&reason)
        {
            return PodState::Failing {
                reason: reason.to_string(),
                message: format!(
                    "pod {}: {}",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    w.message.as_deref().unwrap_or(reason)
                ),
            };
        }
    }
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    if created.is_some_and(|c| now.duration_since(c) > deadline) {
        return PodState::Late;
    }
    if let Some(c) = pod_condition(pod, "PodScheduled")
        && c.status == "False"
        && c.reason.as_deref() == Some("Unschedulable")
    {
        return PodState::Unschedulable(c.message.clone().unwrap_or_default());
    }
    PodState::Starting
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    // The transition time moves only when the status flips.
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
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
    let ready = states.iter().filter(|s| **s == PodState::Ready).count() as i32;

    let previous_nodes: BTreeMap<&str, &ReplicaStatus> = previous
        .map(|p| p.nodes.iter().map(|n| (n.pod.as_str(), n)).collect())
        .unwrap_or_default();
    let mut nodes = Vec::new();
    let mut reports = Vec::new();
    for (pod, state) in pods.iter().zip(&states) {
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
            Some(Err(e)) => entry.last_error = Some(e.clone()),
            None => {
                if let PodState::Failing { message, .. } = state {
                    entry.last_error = Some(message.clone());
                }
            }
        }
        nodes.push(entry);
    }

    let prev_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let cond = |t: &str, ok: bool, reason: &str, message: String| {
        condition(t, ok, reason, message, generation, prev_conditions, now)
    };
    let unschedulable = states.iter().find_map(|s| match s {
        PodState::Unschedulable(m) => Some(m.clone()),
        _ => None,
    });
    let failing = states.iter().find_map(|s| match s {
        PodState::Failing { reason, message } => Some((reason.clone(), message.clone())),
        _ => None,
    });
    let late = states.iter().filter(|s| **s == PodState::Late).count();
    let node_error = reports
        .iter()
        .find_map(|r| r.last_error.as_ref().map(|e| format!("{}: {e}", r.hotkey)));

    let scheduled_count = pods
        .iter()
        .filter(|p| pod_condition_true(p, "PodScheduled"))
        .count() as i32;
    let scheduled = if spec.suspend {
        cond(SCHEDULED, false, "Suspended", "spec.suspend is true".into())
    } else if let Some(m) = unschedulable {
        cond(SCHEDULED, false, "Unschedulable", m)
    } else if scheduled_count < desired {
        cond(
            SCHEDULED,
            false,
            "PodsPending",
            format!(
                "{} of {desired} pods exist, {scheduled_count} scheduled",
                pods.len()
            ),
        )
    } else {
        cond(SCHEDULED, true, "AllScheduled", String::new())
    };
    let ready_message = format!("{ready}/{desired} replicas ready");
    let is_ready = desired > 0 && ready >= desired && problem.is_none();
    let ready_cond = if spec.suspend {
        cond(READY, false, "Suspended", "spec.suspend is true".into())
    } else if desired == 0 {
        cond(READY, false, "ScaledToZero", "spec.replicas is 0".into())
    } else if let Some(p) = problem {
        cond(READY, false, p.reason, "see the Degraded condition".into())
    } else if is_ready {
        cond(READY, true, "AllReplicasReady", ready_message.clone())
    } else {
        cond(READY, false, "ReplicasNotReady", ready_message.clone())
    };
    let degraded_why: Option<(String, String)> = if let Some(p) = problem {
        Some((p.reason.to_string(), p.message.clone()))
    } else if let Some(f) = failing {
        Some(f)
    } else if late > 0 {
        Some((
            "StartupDeadlineExceeded".into(),
            format!(
                "{late} pod(s) not ready {}s after creation",
                spec.startup_deadline_seconds
            ),
        ))
    } else {
        node_error.map(|e| ("NodeError".to_string(), e))
    };
    let degraded = match &degraded_why {
        Some((reason, message)) => cond(DEGRADED, true, reason, message.clone()),
        None => cond(DEGRADED, false, "AsExpected", String::new()),
    };
    let progressing = if spec.suspend {
        cond(
            PROGRESSING,
            false,
            "Suspended",
            "spec.suspend is true".into(),
        )
    } else if let Some((reason, _)) = &degraded_why {
        cond(
            PROGRESSING,
            false,
            reason,
            "see the Degraded condition".into(),
        )
    } else if is_ready {
        cond(PROGRESSING, true, "Training", ready_message)
    } else {
        cond(PROGRESSING, true, "RollingOut", ready_message)
    };
    let conditions = vec![scheduled, ready_cond, progressing, degraded];

    // Events only on a change, so a periodic requeue does not repeat them.
    let mut notices = Vec::new();
    for c in &conditions {
        let bad = (c.type_ == SCHEDULED && c.status == "False" && c.reason == "Unschedulable")
            || (c.type_ == DEGRADED && c.status == "True");
        let became_ready = c.type_ == READY && c.status == "True";
        let unchanged = prev_conditions
            .iter()
            .any(|p| p.type_ == c.type_ && p.status == c.status && p.reason == c.reason);
        if (bad || became_ready) && !unchanged {
            notices.push(Notice {
                warning: bad,
                reason: c.reason.clone(),
                message: c.message.clone(),
            });
        }
    }

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
        settled: is_ready && degraded_why.is_none(),
        status,
        notices,
    }
}
