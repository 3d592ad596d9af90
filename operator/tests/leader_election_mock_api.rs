//! Leader election and graceful shutdown against a MOCK Kubernetes API (no kube-apiserver
//! can run here): two operator candidates share one FAKE Lease store that keeps the
//! semantics the lease manager relies on (create, get, server-side apply that conflicts
//! when another field manager holds `holderIdentity`, strategic merge). Only the holder
//! starts its controllers; stopping it releases the lease and the standby takes over.

use futures::FutureExt;
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use templar_operator::controller::{Election, RunError, Stop, run_elected};
use templar_operator::metrics::Metrics;
use templar_operator::probe::StatusProbe;
use templar_operator::reconcile::{Context, Timing};
use tower_test::mock::{Handle, SendResponse};

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/templar-system/leases";

#[derive(Default)]
struct FakeLease {
    lease: Option<Value>,
    /// Field manager that set the current `holderIdentity`.
    holder_manager: Option<String>,
    version: u64,
}

impl FakeLease {
    fn holder(&self) -> Option<String> {
        self.lease.as_ref()?["spec"]["holderIdentity"]
            .as_str()
            .map(String::from)
    }

    fn merge(&mut self, patch: &Value, manager: Option<String>) {
        let lease = self.lease.as_mut().expect("patched lease exists");
        if let Some(spec) = patch["spec"].as_object() {
            for (k, v) in spec {
                if v.is_null() {
                    lease["spec"].as_object_mut().unwrap().remove(k);
                } else {
                    lease["spec"][k] = v.clone();
                }
            }
            if spec.contains_key("holderIdentity") {
                self.holder_manager = manager.filter(|_| !spec["holderIdentity"].is_null());
            }
        }
        self.version += 1;
        lease["metadata"]["resourceVersion"] = json!(self.version.to_string());
    }
}

fn respond(send: SendResponse<Response<Body>>, code: u16, v: &Value) {
    send.send_response(
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(v).unwrap()))
            .unwrap(),
    );
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason})
}

/// Serves one candidate's requests; records whether its controllers ever called the API.
async fn serve(
    mut handle: Handle<Request<Body>, Response<Body>>,
    store: Arc<Mutex<FakeLease>>,
    controllers_called: Arc<AtomicBool>,
) {
    let mut watches = Vec::new();
    while let Some((req, send)) = handle.next_request().await {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let method = req.method().as_str().to_string();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        if path.starts_with(LEASE_PATH) {
            let mut s = store.lock().unwrap();
            match method.as_str() {
                "GET" => match &s.lease {
                    Some(l) => respond(send, 200, l),
                    None => respond(send, 404, &status(404, "NotFound")),
                },
                "POST" => {
                    if s.lease.is_some() {
                        respond(send, 409, &status(409, "AlreadyExists"));
                    } else {
                        let mut lease: Value = serde_json::from_slice(&bytes).unwrap();
                        lease["metadata"]["namespace"] = json!("templar-system");
                        lease["metadata"]["resourceVersion"] = json!("1");
                        if lease.get("spec").is_none() {
                            lease["spec"] = json!({});
                        }
                        s.lease = Some(lease.clone());
                        respond(send, 201, &lease);
                    }
                }
                "PATCH" => {
                    let patch: Value = serde_json::from_slice(&bytes).unwrap();
                    let manager = query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("fieldManager="))
                        .map(String::from);
                    let wants_holder = patch["spec"]["holderIdentity"].as_str();
                    let apply = content_type.contains("apply-patch");
                    let conflict = apply
                        && wants_holder.is_some()
                        && s.holder().is_some_and(|h| Some(h.as_str()) != wants_holder)
                        && s.holder_manager != manager;
                    if s.lease.is_none() {
                        respond(send, 404, &status(404, "NotFound"));
                    } else if conflict {
                        respond(send, 409, &status(409, "Conflict"));
                    } else {
                        s.merge(&patch, manager);
                        let lease = s.lease.clone().unwrap();
                        respond(send, 200, &lease);
                    }
                }
                other => panic!("unexpected {other} on the lease"),
            }
            continue;
        }
        // Anything else comes from the controllers: lists answer empty, watches stay open.
        controllers_called.store(true, Ordering::SeqCst);
        if query.contains("watch=true") {
            watches.push(send);
        } else {
            respond(
                send,
                200,
                &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
            );
        }
    }
}

struct Candidate {
    controllers_called: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    run: tokio::task::JoinHandle<Result<(), RunError>>,
}

fn candidate(identity: &str, store: Arc<Mutex<FakeLease>>) -> Candidate {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let controllers_called = Arc::new(AtomicBool::new(false));
    tokio::spawn(serve(handle, store, controllers_called.clone()));
    let metrics = Arc::new(Metrics::new());
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        StatusProbe::new(1, Duration::from_secs(1), 1),
        Timing::default(),
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stop: Stop = async move {
        let _ = rx.await;
    }
    .boxed()
    .shared();
    let election = Election {
        lease_name: "templar-operator".into(),
        lease_namespace: "templar-system".into(),
        identity: identity.into(),
        lease_duration_secs: 3,
    };
    let run = tokio::spawn(run_elected(
        client,
        templar_operator::controller::Scope::AllNamespaces,
        ctx,
        election,
        ready.clone(),
        stop,
    ));
    Candidate {
        controllers_called,
        ready,
        metrics,
        stop: Some(tx),
        run,
    }
}

async fn eventually(what: &str, secs: u64, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let store = Arc::new(Mutex::new(FakeLease::default()));
    let mut a = candidate("operator-a", store.clone());
    eventually("operator-a leads and starts its controllers", 15, || {
        a.controllers_called.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(
        store.lock().unwrap().holder().as_deref(),
        Some("operator-a")
    );
    assert!(a.metrics.encode().contains("templar_operator_leader 1"));

    let mut b = candidate("operator-b", store.clone());
    eventually("operator-b is ready as standby", 10, || {
        b.ready.load(Ordering::SeqCst)
    })
    .await;
    // Longer than the lease: operator-a keeps renewing, operator-b keeps waiting.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !b.controllers_called.load(Ordering::SeqCst),
        "the standby must not reconcile"
    );
    assert_eq!(
        store.lock().unwrap().holder().as_deref(),
        Some("operator-a")
    );
    assert!(b.metrics.encode().contains("templar_operator_leader 0"));

    // Graceful shutdown of the leader: controllers stop, the lease is released.
    a.stop.take().unwrap().send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(15), &mut a.run)
        .await
        .expect("operator-a stops")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(a.metrics.encode().contains("templar_operator_leader 0"));

    assert_eq!(store.lock().unwrap().holder(), None, "released on shutdown");
    eventually("operator-b takes the lease and reconciles", 20, || {
        b.controllers_called.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(
        store.lock().unwrap().holder().as_deref(),
        Some("operator-b")
    );
    b.stop.take().unwrap().send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(15), &mut b.run)
        .await
        .expect("operator-b stops")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}
