//! The whole controller run in simulated time against `templar-testkit`'s FAKE API server
//! (one TemplarMiner `alpha` in `train`), shared by the fake-API tests.

use futures::future::FutureExt;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use templar_operator::controller::{Scope, Stop, run_controllers};
use templar_operator::metrics::Metrics;
use templar_operator::probe::NodeStatusReader;
use templar_operator::reconcile::{Context, Timing};
use templar_testkit::fake_api::{self, MINERS, RUNAWAY, State};

/// The fake's state: the healthy TemplarMiner `alpha` (3 replicas, tiny model).
pub fn alpha_state() -> Arc<Mutex<State>> {
    Arc::new(Mutex::new(State {
        version: 1,
        miner: serde_json::to_value(serde_yaml::from_str::<Value>(
            "apiVersion: templar.tplr.ai/v1alpha1\nkind: TemplarMiner\nmetadata: {name: alpha, namespace: train, uid: cr-uid, generation: 1, resourceVersion: \"1\"}\nspec:\n  image: ghcr.io/templar-rs/node:0.1.0\n  replicas: 3\n  storage: {bucket: alpha, writeSecret: s3-write}\n  walletSecret: hotkeys\n  hyperparameters: {inline: \"[model]\\nsize = \\\"tiny\\\"\\n\"}\n",
        ).unwrap())
        .unwrap(),
        ..Default::default()
    }))
}

/// The user scales the miner: a new generation, and the watch event the server sends.
pub fn scale_miner(s: &mut State, replicas: u32) {
    let version = s.bump();
    s.miner["spec"]["replicas"] = json!(replicas);
    s.miner["metadata"]["generation"] = json!(2);
    s.miner["metadata"]["resourceVersion"] = json!(version);
    let miner = s.miner.clone();
    s.notify(MINERS, "MODIFIED", &miner);
}

/// Run both controllers over `client` for `length` of simulated time, the nodes' `/status`
/// read from `nodes`, refreshing settled resources every `refresh`; stops them and checks
/// that the fake knew every request. Returns the operator's metrics.
pub async fn run_controllers_for(
    client: kube::Client,
    nodes: impl NodeStatusReader + 'static,
    refresh: Duration,
    length: Duration,
    state: &Arc<Mutex<State>>,
) -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::new());
    let timing = Timing {
        settled: refresh,
        ..Timing::default()
    };
    let ctx = Arc::new(Context::new(client.clone(), metrics.clone(), nodes, timing));
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    let stop: Stop = async move {
        let _ = rx.await;
    }
    .boxed()
    .shared();
    let controllers = tokio::spawn(run_controllers(
        client,
        Scope::Namespaces(vec![fake_api::NS.into()]),
        ctx,
        stop,
    ));
    let runaway = state.lock().unwrap().runaway.clone();
    let started = tokio::time::Instant::now();
    tokio::select! {
        _ = tokio::time::sleep(length) => {}
        _ = runaway.notified() => panic!(
            "reconcile loop: over {RUNAWAY} applies after {:?} of simulated time",
            started.elapsed()
        ),
    }
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(30), controllers)
        .await
        .expect("controllers stop")
        .unwrap();
    let unknown = state.lock().unwrap().unknown.clone();
    assert!(
        unknown.is_empty(),
        "requests the fake does not know: {unknown:?}"
    );
    metrics
}
