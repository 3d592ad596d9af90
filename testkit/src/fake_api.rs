//! A FAKE Kubernetes API server held in memory (no kube-apiserver can run on this machine):
//! one TemplarMiner `alpha` in namespace `train`, a StatefulSet it owns, its ready pods,
//! secrets with every key; it answers lists, streams watch events, applies objects, bumps
//! resource versions and sends a MODIFIED event for every write, as the real server does; a
//! watch of the miners from a version older than the miner's is answered 410 Gone.
//! Shared by the operator's controller test and the e2e suite (included by path there).
#![allow(dead_code)]

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedSender, unbounded};
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use kube::client::Body;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const NS: &str = "train";
pub const MINERS: &str = "/apis/templar.tplr.ai/v1alpha1/namespaces/train/templarminers";
pub const VALIDATORS: &str = "/apis/templar.tplr.ai/v1alpha1/namespaces/train/templarvalidators";
pub const STATEFULSETS: &str = "/apis/apps/v1/namespaces/train/statefulsets";

pub type FakeBody = BoxBody<Bytes, Infallible>;

/// What the fake API server holds.
#[derive(Default)]
pub struct State {
    pub version: u64,
    pub miner: Value,
    pub stateful_set: Option<Value>,
    /// Open watches: (collection path, event sink).
    pub watches: Vec<(String, UnboundedSender<Bytes>)>,
    /// Requests the fake does not know, for the test to fail on.
    pub unknown: Vec<String>,
    /// (API group, resource, verb) of every request, for the RBAC check.
    pub calls: std::collections::BTreeSet<(String, String, String)>,
    /// Times (simulated, since start) of each StatefulSet apply and status write.
    pub applies: Vec<Duration>,
    pub status_writes: Vec<Duration>,
    /// Signalled when the applies pass [`RUNAWAY`]: a reconcile loop that keeps the
    /// runtime busy would otherwise never let simulated time advance.
    pub runaway: Arc<tokio::sync::Notify>,
    /// The pods' IPs (default: 10.0.0.0 to 10.0.0.2); their /status is read there.
    pub pod_ips: Vec<String>,
    /// The wallet Secret `hotkeys` (key -> base64 value) and its resource version; default:
    /// `hotkey-0..2`, version 11.
    pub wallet: Option<(serde_json::Map<String, Value>, String)>,
    /// Pods deleted, by name, in order.
    pub deleted_pods: Vec<String>,
    /// Events created (bodies), in order.
    pub events: Vec<Value>,
    /// The last status written to the miner `broken` (one that does not parse).
    pub broken_status: Option<Value>,
}

/// Far more applies than any correct run makes.
pub const RUNAWAY: usize = 500;

impl State {
    pub fn bump(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    pub fn notify(&mut self, collection: &str, kind: &str, object: &Value) {
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
        line.push(b'\n');
        self.watches.retain(|(path, tx)| {
            path != collection || tx.unbounded_send(line.clone().into()).is_ok()
        });
    }
}

pub fn full(code: u16, v: &Value) -> Response<FakeBody> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(v).unwrap())).boxed())
        .unwrap()
}

/// A plain-text answer (a pod's log).
pub fn text(code: u16, body: &str) -> Response<FakeBody> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

pub fn not_found() -> Response<FakeBody> {
    full(
        404,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
    )
}

pub fn list(kind: &str, version: u64, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": "v1", "metadata": {"resourceVersion": version.to_string()}, "items": items})
}

pub fn ready_pod(i: usize, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("alpha-miner-{i}"), "namespace": NS,
                     "creationTimestamp": "2026-11-27T00:00:00Z",
                     "labels": {"controller-revision-hash": "r1"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                          "name": "alpha-miner", "uid": "sts-uid", "controller": true}]},
        "status": {"phase": "Running", "podIP": ip, "conditions": [
            {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}
    })
}

/// Beside the healthy miner, one that no longer parses (an older schema, say): it must not
/// stop the controller for the kind, and its owner is told why.
pub fn broken_miner() -> Value {
    json!({"apiVersion": "templar.tplr.ai/v1alpha1", "kind": "TemplarMiner",
           "metadata": {"name": "broken", "namespace": NS, "uid": "b", "generation": 1},
           "spec": {"image": 5}})
}

pub async fn handle(
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
            // The fake keeps no history of events: a watch from before the miner's last
            // change is told its version is too old (a real server does so once its history
            // is compacted), and the watcher lists again.
            let from: Option<u64> = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("resourceVersion="))
                .and_then(|v| v.parse().ok());
            let current: Option<u64> = s.miner["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok());
            if p == MINERS && from.zip(current).is_some_and(|(f, c)| f < c) {
                let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Expired", "code": 410, "message": "too old resource version"}}))
                .unwrap();
                line.push(b'\n');
                let _ = tx.unbounded_send(line.into());
                drop(tx);
            } else {
                s.watches.push((p.to_string(), tx));
            }
            let stream = rx.map(|b| Ok::<_, Infallible>(Frame::data(b)));
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        ("GET", MINERS) => full(
            200,
            &list(
                "TemplarMiner",
                s.version,
                vec![s.miner.clone(), broken_miner()],
            ),
        ),
        ("GET", p) if p == format!("{MINERS}/broken") => full(200, &broken_miner()),
        ("GET", VALIDATORS) => full(200, &list("TemplarValidator", s.version, vec![])),
        ("GET", p) if p == format!("{STATEFULSETS}/alpha-miner") => match &s.stateful_set {
            Some(sts) => full(200, sts),
            None => not_found(),
        },
        ("DELETE", p) if p.starts_with("/api/v1/namespaces/train/pods/") => {
            let name = p.rsplit('/').next().unwrap().to_string();
            s.deleted_pods.push(name.clone());
            full(
                200,
                &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS}}),
            )
        }
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
            let (data, version) = match &s.wallet {
                Some((wallet, version)) if name == "hotkeys" => (wallet.clone(), version.clone()),
                _ => (
                    keys.iter()
                        .map(|k| (k.to_string(), json!("eA==")))
                        .collect(),
                    "11".to_string(),
                ),
            };
            full(
                200,
                &json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": name, "namespace": NS, "resourceVersion": version}, "data": data}),
            )
        }
        ("GET", "/api/v1/namespaces/train/pods") => {
            let ips = if s.pod_ips.is_empty() {
                (0..3).map(|i| format!("10.0.0.{i}")).collect()
            } else {
                s.pod_ips.clone()
            };
            let pods = ips
                .iter()
                .enumerate()
                .map(|(i, ip)| ready_pod(i, ip))
                .collect();
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
                .map(|old| {
                    old["spec"] != sts["spec"]
                        || old["metadata"]["annotations"] != sts["metadata"]["annotations"]
                        || old["metadata"]["labels"] != sts["metadata"]["labels"]
                })
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
        // No budget exists: the operator reads that and deletes nothing.
        ("GET", p) if p.contains("/poddisruptionbudgets/") => not_found(),
        ("PATCH", p) if p == format!("{MINERS}/broken/status") => {
            s.broken_status = Some(body.clone());
            full(200, &body)
        }
        ("POST", "/apis/events.k8s.io/v1/namespaces/train/events") => {
            s.events.push(body.clone());
            full(201, &body)
        }
        _ => {
            s.unknown.push(format!("{method} {path}?{query}"));
            not_found()
        }
    }
}

/// The RBAC (group, resource, verb) a request is authorized as.
pub fn rbac_call(method: &str, path: &str, watch: bool) -> (String, String, String) {
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
