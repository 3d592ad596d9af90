//! One reconcile of a TemplarMiner or TemplarValidator, one function per step:
//! [`read_inputs`] (secrets, ConfigMap) -> `validate` (pure) -> [`apply_desired`] (pure
//! builders, server-side apply; a suspended resource with a bad spec is still scaled to zero)
//! -> [`observe`] (the StatefulSet's pods, each ready pod's `/status`) -> `status::compute`
//! (pure) -> [`write_status`] when more than timestamps changed -> [`publish_events`].

use crate::build::{Owner, desired};
use crate::hotkeys;
use crate::metrics::{Metrics, ResourceState};
use crate::network_views::NetworkViews;
use crate::nodeset::NodeSet;
use crate::probe::NodeStatusReader;
use crate::status::{
    Input, Notice, Observed, compute, controlled_by, host_network, needs_write, pod_condition_true,
};
use crate::validate::{
    Inputs, Problem, ProblemReason, Validated, check_name, referenced_config_map,
    referenced_secrets, validate,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use templar_crds::{API_GROUP, API_VERSION, NodeSetStatus};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "templar-operator";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0} has no namespace")]
    NoNamespace(String),
    #[error("reading {what}: {source}")]
    ReadInput { what: String, source: kube::Error },
    #[error("applying {what}: {source}")]
    Apply { what: String, source: kube::Error },
    #[error("reading the StatefulSet: {0}")]
    ReadStatefulSet(kube::Error),
    #[error("listing pods: {0}")]
    ListPods(kube::Error),
    #[error("writing status: {0}")]
    WriteStatus(kube::Error),
}

impl ReconcileError {
    /// Label of the failures metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoNamespace(_) => "no_namespace",
            Self::ReadInput { .. } => "read_input",
            Self::Apply { .. } => "apply",
            Self::ReadStatefulSet(_) => "read_statefulset",
            Self::ListPods(_) => "list_pods",
            Self::WriteStatus(_) => "write_status",
        }
    }
}

/// Requeue periods.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Everything ready: refresh the status this often.
    pub settled: Duration,
    /// Rolling out, degraded or waiting on a spec problem (e.g. a secret not created yet).
    pub unsettled: Duration,
    /// First retry after an error; doubles per consecutive error up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// An unchanged status is still written this often, so `lastSeen` stays recent.
    pub heartbeat: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            settled: Duration::from_secs(30),
            unsettled: Duration::from_secs(10),
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            heartbeat: Duration::from_secs(600),
        }
    }
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub probe: Box<dyn NodeStatusReader>,
    pub timing: Timing,
    /// The network page of each validator, when served (`--network-view`).
    pub network_views: Option<Arc<NetworkViews>>,
    /// Consecutive failures per object, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        probe: impl NodeStatusReader + 'static,
        timing: Timing,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            probe: Box::new(probe),
            timing,
            network_views: None,
            failures: Mutex::default(),
        }
    }

    /// Record the nodes' `/status` of every reconcile into `views`.
    pub fn with_network_views(mut self, views: Arc<NetworkViews>) -> Self {
        self.network_views = Some(views);
        self
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn object_key<K: NodeSet>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::KIND,
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// The controller's reconcile function: runs the pipeline and records metrics.
pub async fn reconcile<K: NodeSet>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let result = reconcile_once(obj.as_ref(), &ctx).await;
    ctx.metrics.reconciled(
        K::KIND,
        started.elapsed(),
        result.as_ref().err().map(|e| e.kind()),
    );
    if result.is_ok() {
        ctx.failures().remove(&object_key(obj.as_ref()));
    }
    result
}

/// On error: log, and retry with exponential backoff per object.
pub fn error_policy<K: NodeSet>(obj: Arc<K>, err: &ReconcileError, ctx: Arc<Context>) -> Action {
    let key = object_key(obj.as_ref());
    let n = {
        let mut failures = ctx.failures();
        let n = failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = ctx
        .timing
        .backoff
        .saturating_mul(1 << (n - 1).min(16))
        .min(ctx.timing.max_backoff);
    tracing::warn!(object = %key, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn read_inputs(
    client: &Client,
    ns: &str,
    spec: &templar_crds::NodeSpec,
) -> Result<Inputs, ReconcileError> {
    let mut inputs = Inputs::default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for name in referenced_secrets(spec) {
        let found = secrets
            .get_opt(name)
            .await
            .map_err(|source| ReconcileError::ReadInput {
                what: format!("secret {name}"),
                source,
            })?;
        if let Some(secret) = found {
            // Only the key names are kept: values never leave the API response.
            let keys = secret
                .data
                .iter()
                .flat_map(|d| d.keys())
                .chain(secret.string_data.iter().flat_map(|d| d.keys()))
                .cloned()
                .collect();
            inputs.secrets.insert(name.to_string(), keys);
            if name == spec.wallet_secret {
                // Digests only, to restart a pod whose own key changed.
                inputs.hotkey_digests = secret
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), crate::hotkeys::digest(&v.0)))
                    .collect();
            }
            if let Some(version) = secret.metadata.resource_version {
                inputs.secret_versions.insert(name.to_string(), version);
            }
        }
    }
    if let Some(name) = referenced_config_map(spec) {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let found = cms
            .get_opt(name)
            .await
            .map_err(|source| ReconcileError::ReadInput {
                what: format!("ConfigMap {name}"),
                source,
            })?;
        if let Some(cm) = found {
            inputs
                .config_maps
                .insert(name.to_string(), cm.data.unwrap_or_default());
        }
    }
    Ok(inputs)
}

async fn apply<T>(client: &Client, ns: &str, obj: &T) -> Result<T, ReconcileError>
where
    T: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = obj.name_any();
    let api: Api<T> = Api::namespaced(client.clone(), ns);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|source| ReconcileError::Apply {
        what: format!("{} {name}", T::kind(&())),
        source,
    })
}

/// Delete the PodDisruptionBudget a spec no longer asks for, when there is one: a read, not
/// a DELETE per reconcile in the audit log (gone meanwhile is fine).
async fn delete_budget(client: &Client, ns: &str, name: &str) -> Result<(), ReconcileError> {
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    let existing = api
        .get_opt(name)
        .await
        .map_err(|source| ReconcileError::Apply {
            what: format!("PodDisruptionBudget {name} (read)"),
            source,
        })?;
    if existing.is_none() {
        return Ok(());
    }
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(ReconcileError::Apply {
            what: format!("PodDisruptionBudget {name} (delete)"),
            source,
        }),
    }
}

/// A suspended resource whose spec cannot be built (a secret missing, say) still stops:
/// scale the existing StatefulSet to zero without touching the rest of it.
async fn scale_to_zero(
    client: &Client,
    owner: &Owner<'_>,
) -> Result<Option<StatefulSet>, ReconcileError> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), owner.namespace);
    let name = owner.object_name();
    let patch = serde_json::json!({"spec": {"replicas": 0}});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(sts) => Ok(Some(sts)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(source) => Err(ReconcileError::Apply {
            what: format!("StatefulSet {name} (scale to zero)"),
            source,
        }),
    }
}

/// The owned StatefulSet when nothing was applied this time.
async fn read_stateful_set(
    client: &Client,
    owner: &Owner<'_>,
) -> Result<Option<StatefulSet>, ReconcileError> {
    Api::<StatefulSet>::namespaced(client.clone(), owner.namespace)
        .get_opt(&owner.object_name())
        .await
        .map_err(ReconcileError::ReadStatefulSet)
}

/// What applying produced: a spec problem the API server found, the StatefulSet as it
/// answered (with its rollout status), and the pods restarted for a changed key.
struct Applied {
    problem: Option<Problem>,
    stateful_set: Option<StatefulSet>,
    restarted: Vec<String>,
}

/// Delete the pods of `ordinals` (their keys changed) so the StatefulSet recreates them with
/// the new key; a pod already gone is fine. Returns the pods deleted.
async fn restart_pods(
    client: &Client,
    owner: &Owner<'_>,
    ordinals: &[u32],
) -> Result<Vec<String>, ReconcileError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), owner.namespace);
    let mut deleted = Vec::new();
    for ordinal in ordinals {
        let name = format!("{}-{ordinal}", owner.object_name());
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(ReconcileError::Apply {
                    what: format!("Pod {name} (restart for its new hotkey)"),
                    source,
                });
            }
        }
    }
    Ok(deleted)
}

/// Apply what a valid spec asks for. A rejection by the API server itself (422, e.g. a
/// change to an immutable field such as the cache size) is a spec problem, not a retry.
async fn apply_desired(
    ctx: &Context,
    owner: &Owner<'_>,
    valid: &Validated,
) -> Result<Applied, ReconcileError> {
    let d = desired(owner, valid);
    let ns = owner.namespace;
    let mut restarted = Vec::new();
    let applied = async {
        apply(&ctx.client, ns, &d.config_map).await?;
        apply::<Service>(&ctx.client, ns, &d.headless).await?;
        apply::<Service>(&ctx.client, ns, &d.metrics).await?;
        let before = hotkeys::applied(read_stateful_set(&ctx.client, owner).await?.as_ref());
        let sts = apply::<StatefulSet>(&ctx.client, ns, &d.stateful_set).await?;
        let rotated = hotkeys::rotated(&before, &valid.hotkey_digests);
        restarted = restart_pods(&ctx.client, owner, &rotated).await?;
        match &d.disruption_budget {
            Some(pdb) => apply(&ctx.client, ns, pdb).await.map(drop)?,
            None => delete_budget(&ctx.client, ns, &owner.object_name()).await?,
        }
        Ok(sts)
    };
    let result = applied.await;
    ctx.metrics.applied(owner.kind);
    match result {
        Ok(sts) => Ok(Applied {
            problem: None,
            stateful_set: Some(sts),
            restarted,
        }),
        Err(ReconcileError::Apply {
            what,
            source: kube::Error::Api(status),
        }) if status.code == 422 => Ok(Applied {
            problem: Some(Problem {
                reason: ProblemReason::ApplyRejected,
                message: format!("{what}: {}", status.message),
            }),
            stateful_set: read_stateful_set(&ctx.client, owner).await?,
            restarted,
        }),
        Err(e) => Err(e),
    }
}

/// The pods the StatefulSet controls, and the `/status` of each ready one (host-network
/// pods are not probed: their IP is the node's).
async fn observe(
    ctx: &Context,
    owner: &Owner<'_>,
    stateful_set: Option<StatefulSet>,
) -> Result<Observed, ReconcileError> {
    let Some(sts) = stateful_set else {
        return Ok(Observed::default());
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), owner.namespace);
    let pods: Vec<Pod> = pods
        .list(&ListParams::default().labels(&owner.selector()))
        .await
        .map_err(ReconcileError::ListPods)?
        .items
        .into_iter()
        .filter(|p| controlled_by(p, &sts))
        .collect();
    let ready_ips: Vec<(String, String)> = pods
        .iter()
        .filter(|p| pod_condition_true(p, "Ready") && !host_network(p))
        .filter_map(|p| Some((p.name_any(), p.status.as_ref()?.pod_ip.clone()?)))
        .collect();
    let probes = ctx.probe.read_all(ready_ips).await;
    Ok(Observed {
        stateful_set: Some(sts),
        pods,
        probes,
    })
}

/// Server-side apply of the status subresource.
async fn write_status<K: NodeSet>(
    ctx: &Context,
    owner: &Owner<'_>,
    status: &NodeSetStatus,
) -> Result<(), ReconcileError> {
    let patch = serde_json::json!({
        "apiVersion": format!("{API_GROUP}/{API_VERSION}"),
        "kind": K::KIND,
        "status": status,
    });
    Api::<K>::namespaced(ctx.client.clone(), owner.namespace)
        .patch_status(
            owner.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(ReconcileError::WriteStatus)?;
    Ok(())
}

/// One event per notice about the object `reference` names. An event that cannot be written
/// is not worth failing the reconcile over.
pub(crate) async fn publish_events(ctx: &Context, reference: &ObjectReference, notices: &[Notice]) {
    for notice in notices {
        let event = Event {
            type_: if notice.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: notice.reason.clone(),
            note: Some(notice.message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, reference).await {
            let object = reference.name.as_deref().unwrap_or_default();
            tracing::warn!(object, reason = %notice.reason, error = %e, "cannot publish event");
        }
    }
}

/// read inputs -> validate -> apply -> observe -> compute status -> write status -> events.
/// The per-resource gauges' view of a status.
fn resource_state(status: &NodeSetStatus) -> ResourceState {
    let is_true = |kind: &str| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == kind && c.status == "True")
    };
    ResourceState {
        ready: is_true(crate::status::READY),
        degraded: is_true(crate::status::DEGRADED),
        window: status.window,
    }
}

async fn reconcile_once<K: NodeSet>(obj: &K, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = obj.name_any();
    let ns = obj
        .namespace()
        .ok_or_else(|| ReconcileError::NoNamespace(name.clone()))?;
    if obj.meta().deletion_timestamp.is_some() {
        ctx.metrics.forget_resource(K::KIND, &ns, &name);
        if let Some(views) = &ctx.network_views {
            views.forget(&ns, &name);
        }
        // Owner references hand the StatefulSet, Services and ConfigMap to the garbage
        // collector; nothing of ours outlives the resource.
        return Ok(Action::await_change());
    }
    let (spec, uid) = (obj.node_spec(), obj.uid().unwrap_or_default());
    let owner = Owner {
        kind: K::KIND,
        role: K::ROLE,
        name: &name,
        namespace: &ns,
        uid: &uid,
        spec,
    };

    let inputs = read_inputs(&ctx.client, &ns, spec).await?;
    let valid = check_name(K::ROLE.as_str(), &name).and_then(|()| validate(spec, &inputs));
    let applied = match valid {
        Ok(valid) => apply_desired(ctx, &owner, &valid).await?,
        // A bad spec leaves what runs alone and says why in the status and an event;
        // suspending still stops the pods.
        Err(problem) => Applied {
            problem: Some(problem),
            stateful_set: if spec.suspend {
                scale_to_zero(&ctx.client, &owner).await?
            } else {
                read_stateful_set(&ctx.client, &owner).await?
            },
            restarted: Vec::new(),
        },
    };
    let observed = observe(ctx, &owner, applied.stateful_set).await?;
    let now = Timestamp::now();
    if let Some(views) = &ctx.network_views {
        let now_ms = u64::try_from(now.as_millisecond()).unwrap_or(0);
        views.record(K::ROLE, &ns, &name, &observed.probes, now_ms);
    }
    let mut outcome = compute(Input {
        role: K::ROLE,
        spec,
        generation: obj.meta().generation,
        previous: obj.node_status(),
        problem: applied.problem.as_ref(),
        observed: &observed,
        selector: owner.selector(),
        now,
    });
    let heartbeat = SignedDuration::try_from(ctx.timing.heartbeat).unwrap_or(SignedDuration::MAX);
    let write = needs_write(&outcome.status, obj.node_status(), now, heartbeat);
    if write {
        write_status::<K>(ctx, &owner, &outcome.status).await?;
    }
    ctx.metrics.status_written(K::KIND, write);
    ctx.metrics
        .observe_resource(K::KIND, &ns, &name, resource_state(&outcome.status));
    outcome
        .notices
        .extend(applied.restarted.iter().map(|pod| Notice {
            warning: false,
            reason: "HotkeyChanged".into(),
            message: format!("restarted {pod}: its hotkey changed in the wallet Secret"),
        }));
    publish_events(ctx, &obj.object_ref(&()), &outcome.notices).await;
    Ok(Action::requeue(if outcome.settled {
        ctx.timing.settled
    } else {
        ctx.timing.unsettled
    }))
}
