//! The whole controller (watches, queue, reconciles, requeues) against a FAKE Kubernetes
//! API server held in memory (no kube-apiserver can run on this machine), in simulated time.
//! The fake keeps one TemplarMiner, answers lists and streams watch events, applies objects,
//! bumps resource versions and sends a MODIFIED event for every write, as the real server
//! does, so a controller that reacted to its own status writes would loop here.

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedSender, unbounded};
use futures::future::{BoxFuture, FutureExt};
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use kube::client::Body;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use templar_crds::{NodeRole, NodeStatus};
use templar_operator::controller::{Scope, Stop, run_controllers};
use templar_operator::metrics::{Counts, Metrics};
use templar_operator::probe::{NodeStatusReader, ProbeError};
use templar_operator::reconcile::{Context, Timing};

const NS: &str = "train";
const MINERS: &str = "/apis/templar.tplr.ai/v1alpha1/namespaces/train/templarminers";
const VALIDATORS: &str = "/apis/templar.tplr.ai/v1alpha1/namespaces/train/templarvalidators";
const STATEFULSETS: &str = "/apis/apps/v1/namespaces/train/statefulsets";
const REFRESH: Duration = Duration::from_secs(30);

type FakeBody = BoxBody<Bytes, Infallible>;

/// What the fake API server holds.
#[derive(Default)]
struct State {
    version: u64,
    miner: Value,
    stateful_set: Option<Value>,
    /// Open watches: (collection path, event sink).
    watches: Vec<(String, UnboundedSender<Bytes>)>,
    /// Requests the fake does not know, for the test to fail on.
    unknown: Vec<String>,
    /// (API group, resource, verb) of every request, for the RBAC check.
    calls: std::collections::BTreeSet<(String, String, String)>,
    /// Times (simulated, since start) of each StatefulSet apply and status write.
    applies: Vec<Duration>,
    status_writes: Vec<Duration>,
    /// Signalled when the applies pass [`RUNAWAY`]: a reconcile loop that keeps the
    /// runtime busy would otherwise never let simulated time advance.
    runaway: Arc<tokio::sync::Notify>,
}

/// Far more applies than any correct run makes.
const RUNAWAY: usize = 500;

impl State {
    fn bump(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    fn notify(&mut self, collection: &str, kind: &str, object: &Value) {
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
        line.push(b'\n');
        self.watches.retain(|(path, tx)| {
            path != collection || tx.unbounded_send(line.clone().into()).is_ok()
        });
    }
}

fn full(code: u16, v: &Value) -> Response<FakeBody> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(v).unwrap())).boxed())
        .unwrap()
}

fn not_found() -> Response<FakeBody> {
    full(
        404,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
    )
}

fn list(kind: &str, version: u64, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": "v1", "metadata": {"resourceVersion": version.to_string()}, "items": items})
}

fn ready_pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("alpha-miner-{i}"), "namespace": NS,
                     "creationTimestamp": "2026-11-27T00:00:00Z",
                     "labels": {"controller-revision-hash": "r1"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                          "name": "alpha-miner", "uid": "sts-uid", "controller": true}]},
        "status": {"phase": "Running", "podIP": format!("10.0.0.{i}"), "conditions": [
            {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}
    })
}

async fn handle(
    state: Arc<Mutex<State>>,
    started: tokio::time::Instant,
    req: Request<Body>,
) -> Response<FakeBody> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let body: Value = {
        let bytes = req.into_body().collect_bytes().await.unwrap();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    let mut s = state.lock().unwrap();
    let at = started.elapsed();
    let watch = query.contains("watch=true");
    let call = rbac_call(&method, &path, watch);
    s.calls.insert(call);
    match (method.as_str(), path.as_str()) {
        ("GET", p) if (p == MINERS || p == VALIDATORS || p == STATEFULSETS) && watch => {
            let (tx, rx) = unbounded::<Bytes>();
            s.watches.push((p.to_string(), tx));
            let stream = rx.map(|b| Ok::<_, Infallible>(Frame::data(b)));
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        ("GET", MINERS) => {
            // Beside the healthy miner, one that no longer parses (an older schema, say): it
            // must not stop the controller for the kind.
            let broken = json!({"apiVersion": "templar.tplr.ai/v1alpha1", "kind": "TemplarMiner",
                                "metadata": {"name": "broken", "namespace": NS, "uid": "b", "generation": 1},
                                "spec": {"image": 5}});
            full(
                200,
                &list("TemplarMiner", s.version, vec![s.miner.clone(), broken]),
            )
        }
        ("GET", VALIDATORS) => full(200, &list("TemplarValidator", s.version, vec![])),
        ("GET", STATEFULSETS) => {
            let items = s.stateful_set.iter().cloned().collect();
            full(200, &list("StatefulSet", s.version, items))
        }
        ("GET", p) if p.starts_with("/api/v1/namespaces/train/secrets/") => {
            let name = p.rsplit('/').next().unwrap();
            let keys = [
                "accessKeyId",
                "secretAccessKey",
                "hotkey-0",
                "hotkey-1",
                "hotkey-2",
            ];
            let data: serde_json::Map<String, Value> = keys
                .iter()
                .map(|k| (k.to_string(), json!("eA==")))
                .collect();
            full(
                200,
                &json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": name, "namespace": NS, "resourceVersion": "11"}, "data": data}),
            )
        }
        ("GET", "/api/v1/namespaces/train/pods") => {
            let pods = (0..3).map(ready_pod).collect();
            full(200, &list("Pod", s.version, pods))
        }
        ("PATCH", p) if p == format!("{MINERS}/alpha/status") => {
            let version = s.bump();
            s.miner["status"] = body["status"].clone();
            s.miner["metadata"]["resourceVersion"] = json!(version);
            s.status_writes.push(at);
            let miner = s.miner.clone();
            s.notify(MINERS, "MODIFIED", &miner);
            full(200, &miner)
        }
        ("PATCH", p) if p == format!("{STATEFULSETS}/alpha-miner") => {
            s.applies.push(at);
            if s.applies.len() > RUNAWAY {
                s.runaway.notify_one();
            }
            let mut sts = body.clone();
            let replicas = sts["spec"]["replicas"].clone();
            sts["metadata"]["uid"] = json!("sts-uid");
            sts["metadata"]["generation"] = json!(1);
            sts["status"] = json!({"replicas": replicas, "readyReplicas": replicas, "observedGeneration": 1,
                                   "updatedReplicas": replicas, "currentRevision": "r1", "updateRevision": "r1"});
            // A no-op apply writes nothing and sends no event, as on a real API server.
            let changed = s
                .stateful_set
                .as_ref()
                .map(|old| old["spec"] != sts["spec"])
                .unwrap_or(true);
            if changed {
                sts["metadata"]["resourceVersion"] = json!(s.bump());
                let kind = if s.stateful_set.is_some() {
                    "MODIFIED"
                } else {
                    "ADDED"
                };
                s.stateful_set = Some(sts.clone());
                s.notify(STATEFULSETS, kind, &sts);
            }
            full(200, s.stateful_set.as_ref().unwrap())
        }
        ("PATCH", p) if p.starts_with("/api/v1/namespaces/train/") => full(200, &body),
        ("DELETE", p) if p.contains("/poddisruptionbudgets/") => not_found(),
        ("POST", "/apis/events.k8s.io/v1/namespaces/train/events") => full(201, &body),
        _ => {
            s.unknown.push(format!("{method} {path}?{query}"));
            not_found()
        }
    }
}

/// The RBAC (group, resource, verb) a request is authorized as.
fn rbac_call(method: &str, path: &str, watch: bool) -> (String, String, String) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/v1/namespaces/NS/RES[/NAME[/SUB]] or /apis/GROUP/VERSION/namespaces/NS/RES[...]
    let (group, rest) = match parts[0] {
        "api" => ("", &parts[4..]),
        _ => (parts[1], &parts[5..]),
    };
    let resource = match rest {
        [res, _name, sub] => format!("{res}/{sub}"),
        [res, ..] => res.to_string(),
        [] => panic!("no resource in {path}"),
    };
    let named = rest.len() > 1;
    let verb = match (method, named, watch) {
        ("GET", _, true) => "watch",
        ("GET", false, _) => "list",
        ("GET", true, _) => "get",
        ("PATCH", ..) => "patch",
        ("POST", ..) => "create",
        ("DELETE", ..) => "delete",
        _ => panic!("{method} {path}"),
    };
    (group.to_string(), resource, verb.to_string())
}

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
    let state = Arc::new(Mutex::new(State {
        version: 1,
        miner: serde_json::to_value(serde_yaml::from_str::<Value>(
            "apiVersion: templar.tplr.ai/v1alpha1\nkind: TemplarMiner\nmetadata: {name: alpha, namespace: train, uid: cr-uid, generation: 1, resourceVersion: \"1\"}\nspec:\n  image: ghcr.io/templar-rs/node:0.1.0\n  replicas: 3\n  storage: {bucket: alpha, writeSecret: s3-write}\n  walletSecret: hotkeys\n  hyperparameters: {inline: \"[model]\\nsize = \\\"tiny\\\"\\n\"}\n",
        ).unwrap())
        .unwrap(),
        ..Default::default()
    }));
    let served = state.clone();
    let service = tower::service_fn(move |req: Request<Body>| {
        let state = served.clone();
        async move { Ok::<_, Infallible>(handle(state, started, req).await) }
    });
    let client = kube::Client::new(service, NS);
    let metrics = Arc::new(Metrics::new());
    let timing = Timing {
        settled: REFRESH,
        ..Timing::default()
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        SteadyNodes,
        timing,
    ));
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    let stop: Stop = async move {
        let _ = rx.await;
    }
    .boxed()
    .shared();
    let controllers = tokio::spawn(run_controllers(
        client,
        Scope::Namespaces(vec![NS.into()]),
        ctx,
        stop,
    ));
    let acting = tokio::spawn(during(state.clone()));
    let runaway = state.lock().unwrap().runaway.clone();
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(minutes * 60)) => {}
        _ = runaway.notified() => panic!(
            "reconcile loop: over {RUNAWAY} applies after {:?} of simulated time",
            started.elapsed()
        ),
    }
    acting.abort();
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
            let mut s = state.lock().unwrap();
            let version = s.bump();
            s.miner["spec"]["replicas"] = json!(2);
            s.miner["metadata"]["generation"] = json!(2);
            s.miner["metadata"]["resourceVersion"] = json!(version);
            let miner = s.miner.clone();
            s.notify(MINERS, "MODIFIED", &miner);
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
