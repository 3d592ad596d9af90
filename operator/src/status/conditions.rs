//! The four conditions (Scheduled, Ready, Progressing, Degraded) from what the pods and nodes
//! show, and the events a change of them publishes.

use super::pods::revision;
use super::pods::{PodState, pod_condition_true};
use super::{DEGRADED, Notice, PROGRESSING, READY, Rollout, SCHEDULED};
use crate::validate::Problem;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use templar_crds::NodeSpec;

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

/// What the conditions are computed from.
pub(super) struct Findings<'a> {
    pub spec: &'a NodeSpec,
    pub desired: i32,
    pub pods: &'a [&'a Pod],
    pub states: &'a [PodState],
    /// The StatefulSet's rollout: only a finished one is Ready.
    pub rollout: Rollout,
    pub problem: Option<&'a Problem>,
    /// The first error a node reports, prefixed with its hotkey.
    pub node_error: Option<String>,
    /// The first node that computes elsewhere than its pod's resources say (on the CPU with
    /// GPUs requested, or the reverse).
    pub wrong_device: Option<String>,
    /// The first validator whose last weights commit passed the block it was due by without
    /// applying (the chain refused it at the reveal).
    pub weights_not_revealed: Option<String>,
}

impl Findings<'_> {
    /// Ready pods of the update revision (a ready pod of the old revision is on its way out).
    pub fn ready_count(&self) -> i32 {
        let current = |p: &Pod| match (&self.rollout.update_revision, revision(p)) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        };
        self.pods
            .iter()
            .zip(self.states)
            .filter(|(p, s)| **s == PodState::Ready && current(p))
            .count() as i32
    }

    pub fn is_ready(&self) -> bool {
        self.desired > 0
            && self.rollout.done
            && self.ready_count() >= self.desired
            && self.problem.is_none()
    }

    /// Why the resource is degraded, if it is: a spec problem first, then a failing
    /// container, pods past the startup deadline, a node on the wrong device, weights the
    /// chain never applied, a node's own error.
    pub fn degraded_why(&self) -> Option<(String, String)> {
        if let Some(p) = self.problem {
            return Some((p.reason.as_str().to_string(), p.message.clone()));
        }
        let failing = self.states.iter().find_map(|s| match s {
            PodState::Failing { reason, message } => Some((reason.clone(), message.clone())),
            _ => None,
        });
        if failing.is_some() {
            return failing;
        }
        let late = self.states.iter().filter(|s| **s == PodState::Late).count();
        if late > 0 {
            return Some((
                "StartupDeadlineExceeded".into(),
                format!(
                    "{late} pod(s) not ready {}s after creation",
                    self.spec.startup_deadline_seconds
                ),
            ));
        }
        if let Some(why) = &self.wrong_device {
            return Some(("WrongDevice".into(), why.clone()));
        }
        if let Some(why) = &self.weights_not_revealed {
            return Some(("WeightsNotRevealed".into(), why.clone()));
        }
        self.node_error
            .clone()
            .map(|e| ("NodeError".to_string(), e))
    }
}

/// Scheduled, Ready, Progressing, Degraded, with transition times kept from `previous`.
pub(super) fn conditions(
    f: &Findings,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Vec<Condition> {
    let cond = |t: &str, ok: bool, reason: &str, message: String| {
        condition(t, ok, reason, message, generation, previous, now)
    };
    let suspended = "spec.suspend is true";
    let desired = f.desired;
    let unschedulable = f.states.iter().find_map(|s| match s {
        PodState::Unschedulable(m) => Some(m.clone()),
        _ => None,
    });
    let scheduled_count = f
        .pods
        .iter()
        .filter(|p| pod_condition_true(p, "PodScheduled"))
        .count() as i32;
    let scheduled = if f.spec.suspend {
        cond(SCHEDULED, false, "Suspended", suspended.into())
    } else if let Some(m) = unschedulable {
        cond(SCHEDULED, false, "Unschedulable", m)
    } else if scheduled_count < desired {
        let message = format!(
            "{} of {desired} pods exist, {scheduled_count} scheduled",
            f.pods.len()
        );
        cond(SCHEDULED, false, "PodsPending", message)
    } else {
        cond(SCHEDULED, true, "AllScheduled", String::new())
    };
    let ready_message = format!(
        "{}/{desired} replicas ready, {}/{desired} at the current revision",
        f.ready_count(),
        f.rollout.updated.min(desired)
    );
    let is_ready = f.is_ready();
    let ready = if f.spec.suspend {
        cond(READY, false, "Suspended", suspended.into())
    } else if desired == 0 {
        cond(READY, false, "ScaledToZero", "spec.replicas is 0".into())
    } else if let Some(p) = f.problem {
        cond(
            READY,
            false,
            p.reason.as_str(),
            "see the Degraded condition".into(),
        )
    } else if is_ready {
        cond(READY, true, "AllReplicasReady", ready_message.clone())
    } else {
        cond(READY, false, "ReplicasNotReady", ready_message.clone())
    };
    let degraded_why = f.degraded_why();
    let degraded = match &degraded_why {
        Some((reason, message)) => cond(DEGRADED, true, reason, message.clone()),
        None => cond(DEGRADED, false, "AsExpected", String::new()),
    };
    let progressing = if f.spec.suspend {
        cond(PROGRESSING, false, "Suspended", suspended.into())
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
    vec![scheduled, ready, progressing, degraded]
}

/// Events only on a change, so a periodic requeue does not repeat them: a condition that
/// turned bad (Warning) or Ready (Normal).
pub(super) fn notices(conditions: &[Condition], previous: &[Condition]) -> Vec<Notice> {
    let mut notices = Vec::new();
    for c in conditions {
        let bad = (c.type_ == SCHEDULED && c.status == "False" && c.reason == "Unschedulable")
            || (c.type_ == DEGRADED && c.status == "True");
        let became_ready = c.type_ == READY && c.status == "True";
        let unchanged = previous
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
    notices
}
