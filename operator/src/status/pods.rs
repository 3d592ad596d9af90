//! Each pod's state as the conditions see it: ready, unschedulable, failing, late, starting.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Container waiting reasons that will not fix themselves: Degraded at once.
const BAD_WAITING_REASONS: [&str; 6] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "RunContainerError",
];

/// What is wrong with one pod, if anything.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PodState {
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

pub(super) fn pod_state(pod: &Pod, deadline: SignedDuration, now: Timestamp) -> PodState {
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
            // A crash loop's own reason is the last exit's message (the node's last log
            // lines: the container's terminationMessagePolicy is FallbackToLogsOnError).
            let last_exit = cs
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.message.as_deref())
                .map(str::trim)
                .filter(|m| !m.is_empty());
            let why = last_exit.or(w.message.as_deref()).unwrap_or(reason);
            return PodState::Failing {
                reason: reason.to_string(),
                message: format!(
                    "pod {}: {}",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    why
                ),
            };
        }
    }
    // A pod the scheduler cannot place is unschedulable however long it has waited.
    if let Some(c) = pod_condition(pod, "PodScheduled")
        && c.status == "False"
        && c.reason.as_deref() == Some("Unschedulable")
    {
        return PodState::Unschedulable(c.message.clone().unwrap_or_default());
    }
    // Not ready since the Ready condition last changed (a ready pod that blips starts a
    // new wait), or since creation when the kubelet has not reported it yet.
    let since = pod_condition(pod, "Ready")
        .and_then(|c| c.last_transition_time.as_ref())
        .or(pod.metadata.creation_timestamp.as_ref())
        .map(|t| t.0);
    if since.is_some_and(|c| now.duration_since(c) > deadline) {
        return PodState::Late;
    }
    PodState::Starting
}

/// The pod's controller is this StatefulSet (not a foreign pod that matches the labels).
pub fn controlled_by(pod: &Pod, stateful_set: &StatefulSet) -> bool {
    let Some(uid) = stateful_set.metadata.uid.as_deref() else {
        return false;
    };
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.kind == "StatefulSet" && r.uid == uid)
}

/// The pod shares its node's network: its IP is the node's, so a `/status` read there
/// might reach another process. Such pods are not probed.
pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The StatefulSet revision the pod was created from.
pub(super) fn revision(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get("controller-revision-hash")
        .map(String::as_str)
}
