//! Both controllers in one process, behind a coordination.k8s.io Lease so that only one
//! operator replica reconciles at a time; graceful shutdown on SIGTERM / Ctrl-C.

use crate::nodeset::NodeSet;
use crate::reconcile::{
    Context, FIELD_MANAGER, ReconcileError, error_policy, publish_events, reconcile,
};
use crate::status::Notice;
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Error as ControllerError};
use kube::runtime::utils::Predicate;
use kube::runtime::{Controller, WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use templar_crds::{API_GROUP, API_VERSION, NodeSpec, TemplarMiner, TemplarValidator};

/// A future that completes once, seen by every controller.
pub type Stop = Shared<BoxFuture<'static, ()>>;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; exiting so that another replica takes over")]
    LostLease,
}

/// Label of everything the operator creates; its watches only see those objects.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=templar-operator";

/// Where the controllers look: every namespace (cluster-wide RBAC), or the named ones
/// (a Role and RoleBinding in each, for clusters that forbid cluster-wide secret reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    AllNamespaces,
    Namespaces(Vec<String>),
}

impl Scope {
    /// From `--namespace` values: none means all namespaces.
    pub fn from_namespaces(namespaces: Vec<String>) -> Self {
        let mut names: Vec<String> = namespaces
            .into_iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            Self::AllNamespaces
        } else {
            Self::Namespaces(names)
        }
    }

    fn apis<T>(&self, client: &Client) -> Vec<Api<T>>
    where
        T: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        match self {
            Self::AllNamespaces => vec![Api::all(client.clone())],
            Self::Namespaces(names) => names
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect(),
        }
    }
}

/// Reconcile a resource that may not parse: one that does not is reported (warn, metric)
/// and skipped until it changes, instead of stopping the controller for its whole kind.
async fn reconcile_guarded<K: NodeSet>(
    obj: Arc<DeserializeGuard<K>>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    match &obj.0 {
        Ok(k) => reconcile::<K>(Arc::new(k.clone()), ctx).await,
        Err(invalid) => {
            ctx.metrics.invalid_object(K::KIND);
            tracing::warn!(
                kind = K::KIND,
                namespace = invalid.metadata.namespace.as_deref().unwrap_or_default(),
                object = invalid.metadata.name.as_deref().unwrap_or_default(),
                error = %invalid.error,
                "resource does not parse; skipped until it changes"
            );
            report_invalid::<K>(&ctx, &invalid.metadata, &invalid.error).await;
            Ok(Action::await_change())
        }
    }
}

/// Tell the owner of a resource that does not parse why, where they look: a Warning event
/// and the status conditions (Ready False, Degraded True, reason `InvalidResource`). Best
/// effort: a failure here is logged, the resource is skipped either way.
async fn report_invalid<K: NodeSet>(ctx: &Context, meta: &ObjectMeta, error: &str) {
    let (Some(name), Some(ns)) = (meta.name.as_deref(), meta.namespace.as_deref()) else {
        return;
    };
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &resource);
    // The watch's error names no field: parse the object again, tracking the path.
    let at = match api.get(name).await {
        Ok(raw) => serde_json::to_value(&raw).ok().and_then(parse_error::<K>),
        Err(e) => {
            tracing::warn!(object = name, error = %e, "cannot read the resource that does not parse");
            None
        }
    };
    let message: String = format!(
        "the resource does not parse as a {} {API_GROUP}/{API_VERSION}: {}; fix the spec",
        K::KIND,
        at.as_deref().unwrap_or(error)
    )
    .chars()
    .take(1000)
    .collect();
    let notice = Notice {
        warning: true,
        reason: INVALID_RESOURCE.into(),
        message: message.clone(),
    };
    let reference = ObjectReference {
        api_version: Some(format!("{API_GROUP}/{API_VERSION}")),
        kind: Some(K::KIND.into()),
        name: Some(name.into()),
        namespace: Some(ns.into()),
        uid: meta.uid.clone(),
        ..Default::default()
    };
    publish_events(ctx, &reference, &[notice]).await;
    let now = Timestamp::now().to_string();
    let condition = |type_: &str, status: &str| {
        serde_json::json!({
            "type": type_, "status": status, "reason": INVALID_RESOURCE, "message": message,
            "lastTransitionTime": now, "observedGeneration": meta.generation,
        })
    };
    let patch = serde_json::json!({
        "apiVersion": format!("{API_GROUP}/{API_VERSION}"),
        "kind": K::KIND,
        "status": {
            "observedGeneration": meta.generation,
            "conditions": [condition("Ready", "False"), condition("Degraded", "True")],
        },
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if let Err(e) = api.patch_status(name, &params, &Patch::Apply(&patch)).await {
        tracing::warn!(object = name, error = %e, "cannot write the invalid-resource status");
    }
}

/// Where and why `object` does not parse as `K`. The spec is read on its own first: `K`'s
/// spec flattens the shared `NodeSpec`, and a flattened field loses its path.
fn parse_error<K: NodeSet>(object: serde_json::Value) -> Option<String> {
    let at =
        |e: serde_path_to_error::Error<serde_json::Error>| format!("{}: {}", e.path(), e.inner());
    if let Some(spec) = object.get("spec")
        && let Err(e) = serde_path_to_error::deserialize::<_, NodeSpec>(spec.clone())
    {
        return Some(format!("spec.{}", at(e)));
    }
    serde_path_to_error::deserialize::<_, K>(object)
        .err()
        .map(at)
}

/// Condition and event reason of a resource that does not parse.
pub const INVALID_RESOURCE: &str = "InvalidResource";

fn error_policy_guarded<K: NodeSet>(
    obj: Arc<DeserializeGuard<K>>,
    err: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    match &obj.0 {
        Ok(k) => error_policy::<K>(Arc::new(k.clone()), err, ctx),
        Err(_) => Action::await_change(),
    }
}

/// One controller for kind `K` over `api`. Its own resource triggers a reconcile only when
/// the spec (generation), labels or annotations change: a status write does not come back
/// as work. The owned StatefulSet's changes (rollout progress) do. Nodes are polled on the
/// requeue period.
async fn run_one<K: NodeSet>(
    api: Api<DeserializeGuard<K>>,
    owned: Api<StatefulSet>,
    ctx: Arc<Context>,
    stop: Stop,
) {
    let (reader, writer) = reflector::store();
    let spec_changes = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::labels)
                .combine(predicates::annotations),
            Default::default(),
        );
    let metrics = ctx.metrics.clone();
    Controller::for_stream(spec_changes, reader)
        .owns(owned, watcher::Config::default().labels(MANAGED_BY))
        .graceful_shutdown_on(stop)
        .run(reconcile_guarded::<K>, error_policy_guarded::<K>, ctx)
        .for_each(|result| {
            match result {
                Ok((obj, _)) => tracing::debug!(kind = K::KIND, object = %obj.name, "reconciled"),
                // Logged (with its backoff) by the error policy.
                Err(ControllerError::ReconcilerFailed(..)) => {}
                Err(e) => {
                    metrics.watch_error(K::KIND);
                    tracing::warn!(kind = K::KIND, error = %e, "watch or queue error");
                }
            }
            std::future::ready(())
        })
        .await;
}

/// Run the TemplarMiner and TemplarValidator controllers (one pair per watched namespace)
/// until `stop`.
pub async fn run_controllers(client: Client, scope: Scope, ctx: Arc<Context>, stop: Stop) {
    let miners = scope
        .apis::<DeserializeGuard<TemplarMiner>>(&client)
        .into_iter()
        .zip(scope.apis::<StatefulSet>(&client))
        .map(|(api, owned)| run_one(api, owned, ctx.clone(), stop.clone()).boxed());
    let validators = scope
        .apis::<DeserializeGuard<TemplarValidator>>(&client)
        .into_iter()
        .zip(scope.apis::<StatefulSet>(&client))
        .map(|(api, owned)| run_one(api, owned, ctx.clone(), stop.clone()).boxed());
    futures::future::join_all(miners.chain(validators)).await;
}

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct Election {
    pub lease_name: String,
    pub lease_namespace: String,
    /// This replica's identity in the lease (its pod name).
    pub identity: String,
    /// How long the lease holds without renewal; the holder renews a sixth of it early.
    pub lease_duration_secs: u64,
}

/// Wait for the lease (or `stop`), then run the controllers while holding it. Losing the
/// lease stops the controllers and returns [`RunError::LostLease`], so the process exits
/// and restarts as a candidate, as client-go controllers do.
pub async fn run_elected(
    client: Client,
    scope: Scope,
    ctx: Arc<Context>,
    election: Election,
    ready: Arc<AtomicBool>,
    stop: Stop,
) -> Result<(), RunError> {
    let manager =
        kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &election.lease_name)
            .with_namespace(&election.lease_namespace)
            .with_identity(&election.identity)
            .with_duration(election.lease_duration_secs.max(2))
            .with_grace((election.lease_duration_secs / 6).max(1))
            .build()
            .await?;
    let (mut leading, task) = manager.watch().await;
    // A standby replica is healthy and ready: it is waiting its turn.
    ready.store(true, Ordering::Relaxed);
    tracing::info!(lease = %election.lease_name, identity = %election.identity, "waiting for the leader lease");
    while !*leading.borrow_and_update() {
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { return Ok(()) },
            _ = stop.clone() => return Ok(()),
        }
    }
    tracing::info!("leading: starting the controllers");
    ctx.metrics.set_leader(true);
    let mut watch_lease = leading.clone();
    let lost = async move {
        loop {
            if watch_lease.changed().await.is_err() || !*watch_lease.borrow_and_update() {
                return;
            }
        }
    }
    .shared();
    let lost_or_stop: Stop = {
        let lost = lost.clone();
        let stop = stop.clone();
        async move {
            futures::future::select(Box::pin(lost), stop).await;
        }
        .boxed()
        .shared()
    };
    run_controllers(client, scope, ctx.clone(), lost_or_stop).await;
    ctx.metrics.set_leader(false);
    let lost_lease = lost.now_or_never().is_some();
    // Dropping the receivers releases the lease for the next replica.
    drop(leading);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    if lost_lease {
        Err(RunError::LostLease)
    } else {
        Ok(())
    }
}
