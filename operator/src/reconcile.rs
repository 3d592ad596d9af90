//! One reconcile of a TemplarMiner or TemplarValidator, one function per step:
//! [`read_inputs`] (secrets, ConfigMap) -> `validate` (pure) -> [`apply_desired`] (pure
//! builders, server-side apply) -> [`observe`] (pods, each ready pod's `/status`) ->
//! `status::compute` (pure) -> [`write_status`] -> [`publish_events`] for what changed.

use crate::build::{Owner, desired};
use crate::metrics::Metrics;
use crate::nodeset::NodeSet;
use crate::probe::StatusProbe;
use crate::status::{Input, Notice, Observed, compute, pod_condition_true};
use crate::validate::{
    Inputs, Problem, Validated, referenced_config_map, referenced_secrets, validate,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
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
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            settled: Duration::from_secs(30),
            unsettled: Duration::from_secs(10),
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
        }
    }
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub probe: StatusProbe,
    pub timing: Timing,
    /// Consecutive failures per object, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, probe: StatusProbe, timing: Timing) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            probe,
            timing,
            failures: Mutex::default(),
        }
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

async fn apply<T>(client: &Client, ns: &str, obj: &T) -> Result<(), ReconcileError>
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
    })?;
    Ok(())
}

/// Apply what a valid spec asks for. A rejection by the API server itself (422, e.g. a
/// change to an immutable field such as the cache size) is a spec problem, not a retry.
async fn apply_desired(
    ctx: &Context,
    owner: &Owner<'_>,
    valid: &Validated,
) -> Result<Option<Problem>, ReconcileError> {
    let d = desired(owner, valid);
    let ns = owner.namespace;
    let applied = async {
        apply(&ctx.client, ns, &d.config_map).await?;
        apply::<Service>(&ctx.client, ns, &d.headless).await?;
        apply::<Service>(&ctx.client, ns, &d.metrics).await?;
        apply::<StatefulSet>(&ctx.client, ns, &d.stateful_set).await
    };
    match applied.await {
        Ok(()) => Ok(None),
        Err(ReconcileError::Apply {
            what,
            source: kube::Error::Api(status),
        }) if status.code == 422 => Ok(Some(Problem {
            reason: "ApplyRejected",
            message: format!("{what}: {}", status.message),
        })),
        Err(e) => Err(e),
    }
}

/// The resource's pods, and the `/status` of each ready one.
async fn observe(ctx: &Context, owner: &Owner<'_>) -> Result<Observed, ReconcileError> {
    let selector = owner
        .labels()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), owner.namespace);
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(ReconcileError::ListPods)?
        .items;
    let ready_ips: Vec<(String, String)> = pods
        .iter()
        .filter(|p| pod_condition_true(p, "Ready"))
        .filter_map(|p| Some((p.name_any(), p.status.as_ref()?.pod_ip.clone()?)))
        .collect();
    let probes = ctx.probe.read_all(ready_ips).await;
    Ok(Observed { pods, probes })
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

/// One event per notice. An event that cannot be written is not worth failing the
/// reconcile over.
async fn publish_events<K: NodeSet>(ctx: &Context, obj: &K, notices: &[Notice]) {
    let reference = obj.object_ref(&());
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
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(object = %obj.name_any(), reason = %notice.reason, error = %e, "cannot publish event");
        }
    }
}

/// read inputs -> validate -> apply -> observe -> compute status -> write status -> events.
async fn reconcile_once<K: NodeSet>(obj: &K, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = obj.name_any();
    let ns = obj
        .namespace()
        .ok_or_else(|| ReconcileError::NoNamespace(name.clone()))?;
    if obj.meta().deletion_timestamp.is_some() {
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
    let problem = match validate(spec, &inputs) {
        Ok(valid) => apply_desired(ctx, &owner, &valid).await?,
        // A bad spec leaves what runs alone and says why in the status and an event.
        Err(problem) => Some(problem),
    };
    let observed = observe(ctx, &owner).await?;
    let outcome = compute(Input {
        role: K::ROLE,
        spec,
        generation: obj.meta().generation,
        previous: obj.node_status(),
        problem: problem.as_ref(),
        observed: &observed,
        now: Timestamp::now(),
    });
    write_status::<K>(ctx, &owner, &outcome.status).await?;
    publish_events(ctx, obj, &outcome.notices).await;
    Ok(Action::requeue(if outcome.settled {
        ctx.timing.settled
    } else {
        ctx.timing.unsettled
    }))
}
