//! Both controllers in one process, behind a coordination.k8s.io Lease so that only one
//! operator replica reconciles at a time; graceful shutdown on SIGTERM / Ctrl-C.

use crate::nodeset::NodeSet;
use crate::reconcile::{Context, error_policy, reconcile};
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::Controller;
use kube::runtime::watcher;
use kube::{Api, Client};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use templar_crds::{TemplarMiner, TemplarValidator};

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

async fn run_one<K: NodeSet>(
    client: Client,
    namespace: Option<&str>,
    ctx: Arc<Context>,
    stop: Stop,
) {
    let (api, owned): (Api<K>, Api<StatefulSet>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    Controller::new(api, watcher::Config::default())
        .owns(owned, watcher::Config::default().labels(MANAGED_BY))
        .graceful_shutdown_on(stop)
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(kind = K::KIND, object = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(kind = K::KIND, error = %e, "controller event"),
            }
        })
        .await;
}

/// Run the TemplarMiner and TemplarValidator controllers until `stop`.
pub async fn run_controllers(
    client: Client,
    namespace: Option<String>,
    ctx: Arc<Context>,
    stop: Stop,
) {
    let ns = namespace.as_deref();
    futures::join!(
        run_one::<TemplarMiner>(client.clone(), ns, ctx.clone(), stop.clone()),
        run_one::<TemplarValidator>(client, ns, ctx, stop),
    );
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
    namespace: Option<String>,
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
    run_controllers(client, namespace, ctx.clone(), lost_or_stop).await;
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
