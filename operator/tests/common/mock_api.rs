//! A MOCK Kubernetes API for reconcile tests (kube-rs with a tower-test service: no
//! kube-apiserver can run on this machine). Each scenario plays the API server: it answers
//! the requests one by one and asserts the method, exact URI and body of every one, so an
//! extra, missing or reordered request fails the test. The nodes' `/status` is served by
//! real local HTTP servers.

// Each test file uses a subset of these helpers.
#![allow(dead_code)]

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use templar_crds::TemplarMiner;
use templar_operator::metrics::Metrics;
use templar_operator::probe::StatusProbe;
use templar_operator::reconcile::{Context, ReconcileError, Timing};
use templar_protocol::node_status::{NodeRole, NodeStatus};
use tower_test::mock::{Handle, SendResponse};

pub type ApiHandle = Handle<Request<Body>, Response<Body>>;

pub const NS: &str = "train";
pub const APPLY: &str = "?&force=true&fieldManager=templar-operator";
pub const POD_SELECTOR: &str = "labelSelector=app.kubernetes.io%2Fcomponent%3Dminer%2Capp.kubernetes.io%2Finstance%3Dalpha%2Capp.kubernetes.io%2Fmanaged-by%3Dtemplar-operator%2Capp.kubernetes.io%2Fname%3Dtemplar-node";

pub fn miner(extra: &str) -> TemplarMiner {
    let yaml = format!(
        r#"apiVersion: templar.tplr.ai/v1alpha1
kind: TemplarMiner
metadata: {{name: alpha, namespace: {NS}, uid: 1111-2222, generation: 3}}
spec:
  image: ghcr.io/templar-rs/node:0.1.0
  replicas: 2
  storage: {{bucket: alpha, writeSecret: s3-write}}
  walletSecret: hotkeys
  hyperparameters:
    inline: |
      [model]
      size = "tiny"
{extra}"#
    );
    serde_yaml::from_str(&yaml).unwrap()
}

pub struct MockApi {
    pub handle: ApiHandle,
    pub metrics: Arc<Metrics>,
}

pub fn setup(status_port: u16) -> (MockApi, Arc<Context>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let metrics = Arc::new(Metrics::new());
    let probe = StatusProbe::new(status_port, Duration::from_secs(2), 4);
    let ctx = Arc::new(Context::new(
        client,
        metrics.clone(),
        probe,
        Timing::default(),
    ));
    (MockApi { handle, metrics }, ctx)
}

impl MockApi {
    /// The next request: asserts method and URI, returns the JSON body (Null when empty).
    pub async fn expect(
        &mut self,
        method: &str,
        uri: &str,
    ) -> (Value, SendResponse<Response<Body>>) {
        let (req, send) = tokio::time::timeout(Duration::from_secs(10), self.handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request came; expected {method} {uri}"))
            .unwrap_or_else(|| panic!("the client went away; expected {method} {uri}"));
        assert_eq!(
            (req.method().as_str(), req.uri().to_string().as_str()),
            (method, uri),
            "unexpected request"
        );
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (body, send)
    }

    /// Expect a request and answer 200 with `reply`.
    pub async fn answer(&mut self, method: &str, uri: &str, reply: Value) -> Value {
        let (body, send) = self.expect(method, uri).await;
        send.send_response(json_response(200, &reply));
        body
    }

    /// Expect a server-side apply and echo the applied object back.
    pub async fn apply(&mut self, path: &str) -> Value {
        let (body, send) = self.expect("PATCH", &format!("{path}{APPLY}")).await;
        send.send_response(json_response(200, &body));
        body
    }

    pub async fn secret(&mut self, name: &str, keys: &[&str]) {
        let data: serde_json::Map<String, Value> = keys
            .iter()
            .map(|k| (k.to_string(), json!("c2VjcmV0")))
            .collect();
        self.answer(
            "GET",
            &format!("/api/v1/namespaces/{NS}/secrets/{name}"),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "data": data}),
        )
        .await;
    }

    /// What every valid scenario starts with: the write secret and the wallet found.
    pub async fn secrets_found(&mut self, hotkeys: &[&str]) {
        self.secret("s3-write", &["accessKeyId", "secretAccessKey"])
            .await;
        self.secret("hotkeys", hotkeys).await;
    }

    /// The owned objects of `set` applied in order: ConfigMap, headless Service, metrics
    /// Service, StatefulSet (answered as rolled out), then the PodDisruptionBudget the spec
    /// does not ask for looked up (none). Returns the applied bodies.
    pub async fn objects_applied(&mut self, set: &str) -> Vec<Value> {
        let [cm, headless, metrics, sts] = object_paths(set);
        let mut bodies = Vec::new();
        for path in [cm, headless, metrics] {
            bodies.push(self.apply(&path).await);
        }
        bodies.push(self.stateful_set_applied(&sts).await);
        self.budget_absent(set).await;
        bodies
    }

    /// Expect the StatefulSet read (none yet: no hotkey digests to compare) and its apply;
    /// answer the apply with a uid and a finished rollout.
    pub async fn stateful_set_applied(&mut self, path: &str) -> Value {
        self.not_found(path).await;
        let (body, send) = self.expect("PATCH", &format!("{path}{APPLY}")).await;
        send.send_response(json_response(200, &rolled_out(&body)));
        body
    }

    /// The budget a spec does not ask for looked up: there is none, so nothing is deleted.
    pub async fn budget_absent(&mut self, set: &str) {
        self.not_found(&format!(
            "/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{set}"
        ))
        .await;
    }

    /// The budget a spec no longer asks for looked up (`found`) and deleted.
    pub async fn budget_deleted(&mut self, set: &str, found: Value) {
        let path = format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{set}");
        self.answer("GET", &path, found).await;
        let (_, send) = self.expect("DELETE", &format!("{path}?")).await;
        send.send_response(json_response(
            200,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ));
    }

    pub async fn not_found(&mut self, uri: &str) {
        let (_, send) = self.expect("GET", uri).await;
        send.send_response(not_found_response());
    }

    pub async fn pods(&mut self, items: Vec<Value>) {
        self.answer(
            "GET",
            &format!("/api/v1/namespaces/{NS}/pods?&{POD_SELECTOR}"),
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}),
        )
        .await;
    }

    /// The applied status of `alpha`.
    pub async fn status(&mut self, cr: &TemplarMiner) -> Value {
        let (body, send) = self
            .expect(
                "PATCH",
                &format!("/apis/templar.tplr.ai/v1alpha1/namespaces/{NS}/templarminers/alpha/status{APPLY}"),
            )
            .await;
        assert_eq!(body["apiVersion"], "templar.tplr.ai/v1alpha1");
        assert_eq!(body["kind"], "TemplarMiner");
        let mut reply = serde_json::to_value(cr).unwrap();
        reply["status"] = body["status"].clone();
        send.send_response(json_response(200, &reply));
        body["status"].clone()
    }

    pub async fn event(&mut self) -> Value {
        let (body, send) = self
            .expect(
                "POST",
                &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events?"),
            )
            .await;
        send.send_response(json_response(201, &body));
        body
    }

    /// After the reconcile ended and dropped the client: no request is left over.
    pub async fn done(mut self) {
        let next = tokio::time::timeout(Duration::from_secs(2), self.handle.next_request()).await;
        if let Ok(Some((req, _))) = next {
            panic!("unexpected extra request {} {}", req.method(), req.uri());
        }
    }
}

/// Where the owned objects of `set` (e.g. `alpha-miner`) are applied, in order.
pub fn object_paths(set: &str) -> [String; 4] {
    [
        format!("/api/v1/namespaces/{NS}/configmaps/{set}"),
        format!("/api/v1/namespaces/{NS}/services/{set}"),
        format!("/api/v1/namespaces/{NS}/services/{set}-metrics"),
        format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{set}"),
    ]
}

pub fn not_found_response() -> Response<Body> {
    json_response(
        404,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

/// Uid of the StatefulSet the mock API server answers with.
pub const STS_UID: &str = "sts-0001";

/// `applied` as the API server would return it once its rollout is done.
pub fn rolled_out(applied: &Value) -> Value {
    let mut sts = applied.clone();
    let replicas = sts["spec"]["replicas"].clone();
    sts["metadata"]["uid"] = json!(STS_UID);
    sts["metadata"]["generation"] = json!(4);
    sts["status"] = json!({"replicas": replicas, "observedGeneration": 4, "updatedReplicas": replicas,
                           "currentRevision": "r4", "updateRevision": "r4"});
    sts
}

pub fn json_response(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

pub fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

pub fn pod(name: &str, ip: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": "2026-11-27T00:00:00Z",
                     "labels": {"controller-revision-hash": "r4"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "alpha-miner",
                                          "uid": STS_UID, "controller": true}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": if ready { "True" } else { "False" }}
            ]
        }
    })
}

pub async fn finish(task: tokio::task::JoinHandle<Result<Action, ReconcileError>>) -> Action {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("reconcile finished")
        .unwrap()
        .expect("reconcile succeeded")
}

/// Serves a fixed `/status` document on `addr` until the test ends.
pub async fn node_status_server(addr: &str, status: NodeStatus) -> u16 {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/status",
        axum::routing::get(move || {
            let s = status.clone();
            async move { axum::Json(s) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

pub fn node(hotkey: &str, uid: u16, window: u64, loss: f64, incentive: f64) -> NodeStatus {
    NodeStatus {
        role: NodeRole::Miner,
        uid: Some(uid),
        hotkey: hotkey.into(),
        window: Some(window),
        global_step: window * 10,
        last_loss: Some(loss),
        incentive: Some(incentive),
        last_checkpoint_window: Some(window - 1),
        ..Default::default()
    }
}
