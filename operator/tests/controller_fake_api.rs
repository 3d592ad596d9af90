//! The whole controller (watches, queue, reconciles, requeues) against a FAKE Kubernetes
//! API server held in memory (no kube-apiserver can run on this machine), in simulated time.
//! The fake keeps one TemplarMiner, answers lists and streams watch events, applies objects,
//! bumps resource versions and sends a MODIFIED event for every write, as the real server
//! does, so a controller that reacted to its own status writes would loop here.

mod common;

use futures::future::{BoxFuture, FutureExt};
use http::Request;
use kube::client::Body;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use templar_operator::metrics::Counts;
use templar_operator::probe::{NodeStatusReader, ProbeError};
use templar_protocol::node_status::{NodeRole, NodeStatus};
use templar_testkit::fake_api::{self, State, handle};

const NS: &str = fake_api::NS;
const REFRESH: Duration = Duration::from_secs(30);
/// Every ready node answers the same document: a healthy network, nothing changing.
struct SteadyNodes;

impl NodeStatusReader for SteadyNodes {
    fn read_all(
        &self,
        pods: Vec<(String, String)>,
    ) -> BoxFuture<'_, BTreeMap<String, Result<NodeStatus, ProbeError>>> {
        let docs = pods
            .into_iter()
            .enumerate()
            .map(|(i, (pod, _))| {
                let doc = NodeStatus {
                    role: NodeRole::Miner,
                    uid: Some(i as u16 + 1),
                    hotkey: format!("hk-{i}"),
                    window: Some(40),
                    global_step: 400,
                    last_loss: Some(3.0),
                    ..Default::default()
                };
                (pod, Ok(doc))
            })
            .collect();
        async move { docs }.boxed()
    }
}

struct Run {
    counts: Counts,
    state: Arc<Mutex<State>>,
}

/// Run the controllers for `minutes` of simulated time over one healthy TemplarMiner with
/// three ready pods; `during` acts on the fake meanwhile.
async fn run_for(
    minutes: u64,
    during: impl FnOnce(Arc<Mutex<State>>) -> BoxFuture<'static, ()>,
) -> Run {
    let started = tokio::time::Instant::now();
    let state = common::fake_run::alpha_state();
    let served = state.clone();
    let service = tower::service_fn(move |req: Request<Body>| {
        let state = served.clone();
        async move { Ok::<_, Infallible>(handle(state, started, req).await) }
    });
    let client = kube::Client::new(service, NS);
    let acting = tokio::spawn(during(state.clone()));
    let length = Duration::from_secs(minutes * 60);
    let metrics =
        common::fake_run::run_controllers_for(client, SteadyNodes, REFRESH, length, &state).await;
    acting.abort();
    Run {
        counts: metrics.counts("TemplarMiner"),
        state,
    }
}

/// One healthy, unchanged resource over ten simulated minutes: reconciled about once per
/// refresh period (not after each of its own status writes), and its status written only
/// when it changes (the first time, and the heartbeat).
#[tokio::test(start_paused = true)]
async fn a_healthy_unchanged_resource_is_reconciled_on_the_refresh_period_only() {
    let run = run_for(10, |_| async {}.boxed()).await;
    let c = run.counts;
    let expected = 10 * 60 / REFRESH.as_secs();
    println!(
        "{{\"simulated_minutes\": 10, \"refresh_secs\": {}, \"reconciles\": {}, \"reconciles_per_minute\": {:.1}, \"applies\": {}, \"status_writes\": {}, \"status_skips\": {}}}",
        REFRESH.as_secs(),
        c.reconciles,
        c.reconciles as f64 / 10.0,
        c.applies,
        c.status_writes,
        c.status_skips
    );
    assert!(
        c.reconciles >= expected - 2 && c.reconciles <= expected + 3,
        "{} reconciles in 10 min at a {}s refresh: {c:?}",
        c.reconciles,
        REFRESH.as_secs()
    );
    assert!(c.status_writes <= 3, "{c:?}");
    rbac_grants(&run.state.lock().unwrap().calls);
    assert!(c.status_skips >= expected - 5, "{c:?}");
    assert_eq!(c.watch_errors, 0);
    assert_eq!(
        c.invalid_objects, 1,
        "the broken resource is reported once, then skipped"
    );
    // Its owner sees why where they look: an event and the status conditions.
    {
        let s = run.state.lock().unwrap();
        let invalid: Vec<&Value> = s
            .events
            .iter()
            .filter(|e| e["reason"] == "InvalidResource")
            .collect();
        assert_eq!(invalid.len(), 1, "{:?}", s.events);
        assert_eq!(invalid[0]["regarding"]["name"], "broken");
        assert_eq!(invalid[0]["type"], "Warning");
        let status = s
            .broken_status
            .as_ref()
            .expect("a status for the broken miner");
        let conditions = status["status"]["conditions"].as_array().unwrap();
        let degraded = conditions.iter().find(|c| c["type"] == "Degraded").unwrap();
        assert_eq!(degraded["status"], "True");
        assert_eq!(degraded["reason"], "InvalidResource");
        let message = degraded["message"].as_str().unwrap();
        assert!(
            message.contains("does not parse") && message.contains("spec.image: invalid type"),
            "{message}"
        );
        let ready = conditions.iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "False");
    }
    // No apply follows a status write closer than the refresh period (bar the one the
    // StatefulSet's creation triggers right after the first reconcile).
    let s = run.state.lock().unwrap();
    for write in &s.status_writes {
        let next = s.applies.iter().find(|a| *a > write);
        if let Some(next) = next {
            assert!(
                *next - *write >= REFRESH - Duration::from_secs(1)
                    || *write < Duration::from_secs(1),
                "apply {next:?} right after the status write at {write:?}"
            );
        }
    }
}

/// A spec change (new generation) is reconciled at once, not at the next refresh.
#[tokio::test(start_paused = true)]
async fn a_spec_change_is_reconciled_at_once() {
    let run = run_for(2, |state| {
        async move {
            tokio::time::sleep(Duration::from_secs(45)).await;
            common::fake_run::scale_miner(&mut state.lock().unwrap(), 2);
        }
        .boxed()
    })
    .await;
    let s = run.state.lock().unwrap();
    let after: Vec<&Duration> = s
        .applies
        .iter()
        .filter(|a| **a >= Duration::from_secs(45))
        .collect();
    assert!(
        after.first().is_some_and(|a| **a < Duration::from_secs(46)),
        "applies after the change at 45 s: {after:?}"
    );
    let sts = s.stateful_set.as_ref().unwrap();
    assert_eq!(sts["spec"]["replicas"], 2);
    assert!(run.counts.reconciles <= 2 * 60 / REFRESH.as_secs() + 4);
}

/// Every call of the run is granted by the ClusterRole of the kustomize install.
fn rbac_grants(calls: &std::collections::BTreeSet<(String, String, String)>) {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("manifests/install/base/operator.yaml")).unwrap();
    let role: Value = text
        .split("\n---\n")
        .map(|d| serde_yaml::from_str::<Value>(d).unwrap())
        .find(|d| d["kind"] == "ClusterRole")
        .unwrap();
    let granted = |(g, r, v): &(String, String, String)| {
        role["rules"].as_array().unwrap().iter().any(|rule| {
            let has = |k: &str, x: &str| rule[k].as_array().unwrap().iter().any(|e| e == x);
            has("apiGroups", g) && has("resources", r) && has("verbs", v)
        })
    };
    assert!(calls.len() >= 10, "{calls:?}");
    for call in calls {
        assert!(granted(call), "the ClusterRole does not grant {call:?}");
    }
}

fn wallet(entries: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    // ByteString serialises as base64, as a Secret's data is.
    let b64 = |v: &str| serde_json::to_value(k8s_openapi::ByteString(v.into())).unwrap();
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), b64(v)))
        .collect()
}

const THREE_KEYS: [(&str, &str); 3] = [
    ("hotkey-0", "miner-0"),
    ("hotkey-1", "miner-1"),
    ("hotkey-2", "miner-2"),
];

fn pod_template(state: &Arc<Mutex<State>>) -> Value {
    state.lock().unwrap().stateful_set.as_ref().unwrap()["spec"]["template"].clone()
}

/// Two simulated minutes over a wallet of [`THREE_KEYS`] that becomes `entries` (and the
/// miner `replicas`) at 45 s; returns the run and the pod template before the change.
async fn run_with_wallet_change(
    entries: Vec<(&'static str, &'static str)>,
    replicas: u32,
) -> (Run, Value) {
    let before = Arc::new(Mutex::new(Value::Null));
    let seen = before.clone();
    let run = run_for(2, move |state| {
        async move {
            state.lock().unwrap().wallet = Some((wallet(&THREE_KEYS), "11".into()));
            tokio::time::sleep(Duration::from_secs(40)).await;
            *seen.lock().unwrap() = pod_template(&state);
            tokio::time::sleep(Duration::from_secs(5)).await;
            let mut s = state.lock().unwrap();
            let version = s.bump();
            s.wallet = Some((wallet(&entries), version));
            if s.miner["spec"]["replicas"] != json!(replicas) {
                common::fake_run::scale_miner(&mut s, replicas);
            }
        }
        .boxed()
    })
    .await;
    let template = before.lock().unwrap().clone();
    (run, template)
}

/// Scaling 3 -> 4 adds `hotkey-3` to the wallet Secret: the StatefulSet grows, its pod
/// template (and so every running pod) stays as it was, and no pod is deleted.
#[tokio::test(start_paused = true)]
async fn scaling_up_restarts_no_running_pod() {
    let mut four = THREE_KEYS.to_vec();
    four.push(("hotkey-3", "miner-3"));
    let (run, before) = run_with_wallet_change(four, 4).await;
    let s = run.state.lock().unwrap();
    let sts = s.stateful_set.as_ref().unwrap();
    assert_eq!(sts["spec"]["replicas"], 4);
    assert_eq!(sts["spec"]["template"], before);
    assert!(s.deleted_pods.is_empty(), "{:?}", s.deleted_pods);
    let digests: BTreeMap<String, String> = serde_json::from_str(
        sts["metadata"]["annotations"]["templar.tplr.ai/hotkey-digests"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(digests.len(), 4, "{digests:?}");
    rbac_grants(&s.calls);
}

/// A replica's key replaced in the wallet Secret restarts that replica's pod only, and the
/// pod template stays as it was.
#[tokio::test(start_paused = true)]
async fn a_changed_key_restarts_only_its_own_pod() {
    let mut rotated = THREE_KEYS.to_vec();
    rotated[1] = ("hotkey-1", "miner-1b");
    let (run, before) = run_with_wallet_change(rotated, 3).await;
    let s = run.state.lock().unwrap();
    assert_eq!(s.deleted_pods, ["alpha-miner-1"]);
    assert_eq!(s.stateful_set.as_ref().unwrap()["spec"]["template"], before);
    rbac_grants(&s.calls);
}
