//! Reconcile paths against a MOCK Kubernetes API (kube-rs with a tower-test service: no
//! kube-apiserver can run on this machine). Each scenario plays the API server: it answers
//! the requests one by one and asserts the method, exact URI and body of every one, so an
//! extra, missing or reordered request fails the test. The nodes' `/status` is served by
//! real local HTTP servers.

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use templar_crds::{MinerScore, NodeRole, NodeStatus, TemplarMiner, TemplarValidator};
use templar_operator::metrics::Metrics;
use templar_operator::probe::StatusProbe;
use templar_operator::reconcile::{Context, ReconcileError, Timing, error_policy, reconcile};
use tower_test::mock::{Handle, SendResponse};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

const NS: &str = "train";
const APPLY: &str = "?&force=true&fieldManager=templar-operator";
const POD_SELECTOR: &str = "labelSelector=app.kubernetes.io%2Fcomponent%3Dminer%2Capp.kubernetes.io%2Finstance%3Dalpha%2Capp.kubernetes.io%2Fmanaged-by%3Dtemplar-operator%2Capp.kubernetes.io%2Fname%3Dtemplar-node";

fn miner(extra: &str) -> TemplarMiner {
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

struct MockApi {
    handle: ApiHandle,
    metrics: Arc<Metrics>,
}

fn setup(status_port: u16) -> (MockApi, Arc<Context>) {
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
    async fn expect(&mut self, method: &str, uri: &str) -> (Value, SendResponse<Response<Body>>) {
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
    async fn answer(&mut self, method: &str, uri: &str, reply: Value) -> Value {
        let (body, send) = self.expect(method, uri).await;
        send.send_response(json_response(200, &reply));
        body
    }

    /// Expect a server-side apply and echo the applied object back.
    async fn apply(&mut self, path: &str) -> Value {
        let (body, send) = self.expect("PATCH", &format!("{path}{APPLY}")).await;
        send.send_response(json_response(200, &body));
        body
    }

    async fn secret(&mut self, name: &str, keys: &[&str]) {
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
    async fn secrets_found(&mut self, hotkeys: &[&str]) {
        self.secret("s3-write", &["accessKeyId", "secretAccessKey"])
            .await;
        self.secret("hotkeys", hotkeys).await;
    }

    /// The owned objects of `set` applied in order: ConfigMap, headless Service, metrics
    /// Service, StatefulSet (answered as rolled out), then the PodDisruptionBudget the spec
    /// does not ask for deleted. Returns the applied bodies.
    async fn objects_applied(&mut self, set: &str) -> Vec<Value> {
        let [cm, headless, metrics, sts] = object_paths(set);
        let mut bodies = Vec::new();
        for path in [cm, headless, metrics] {
            bodies.push(self.apply(&path).await);
        }
        bodies.push(self.stateful_set_applied(&sts).await);
        self.budget_deleted(set).await;
        bodies
    }

    /// Expect the StatefulSet's apply; answer it with a uid and a finished rollout.
    async fn stateful_set_applied(&mut self, path: &str) -> Value {
        let (body, send) = self.expect("PATCH", &format!("{path}{APPLY}")).await;
        send.send_response(json_response(200, &rolled_out(&body)));
        body
    }

    async fn budget_deleted(&mut self, set: &str) {
        let (_, send) = self
            .expect(
                "DELETE",
                &format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{set}?"),
            )
            .await;
        send.send_response(not_found_response());
    }

    async fn not_found(&mut self, uri: &str) {
        let (_, send) = self.expect("GET", uri).await;
        send.send_response(not_found_response());
    }

    async fn pods(&mut self, items: Vec<Value>) {
        self.answer(
            "GET",
            &format!("/api/v1/namespaces/{NS}/pods?&{POD_SELECTOR}"),
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}),
        )
        .await;
    }

    /// The applied status of `alpha`.
    async fn status(&mut self, cr: &TemplarMiner) -> Value {
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

    async fn event(&mut self) -> Value {
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
    async fn done(mut self) {
        let next = tokio::time::timeout(Duration::from_secs(2), self.handle.next_request()).await;
        if let Ok(Some((req, _))) = next {
            panic!("unexpected extra request {} {}", req.method(), req.uri());
        }
    }
}

/// Where the owned objects of `set` (e.g. `alpha-miner`) are applied, in order.
fn object_paths(set: &str) -> [String; 4] {
    [
        format!("/api/v1/namespaces/{NS}/configmaps/{set}"),
        format!("/api/v1/namespaces/{NS}/services/{set}"),
        format!("/api/v1/namespaces/{NS}/services/{set}-metrics"),
        format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{set}"),
    ]
}

fn not_found_response() -> Response<Body> {
    json_response(
        404,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

/// Uid of the StatefulSet the mock API server answers with.
const STS_UID: &str = "sts-0001";

/// `applied` as the API server would return it once its rollout is done.
fn rolled_out(applied: &Value) -> Value {
    let mut sts = applied.clone();
    let replicas = sts["spec"]["replicas"].clone();
    sts["metadata"]["uid"] = json!(STS_UID);
    sts["metadata"]["generation"] = json!(4);
    sts["status"] = json!({"replicas": replicas, "observedGeneration": 4, "updatedReplicas": replicas,
                           "currentRevision": "r4", "updateRevision": "r4"});
    sts
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn pod(name: &str, ip: &str, ready: bool) -> Value {
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

async fn finish(task: tokio::task::JoinHandle<Result<Action, ReconcileError>>) -> Action {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("reconcile finished")
        .unwrap()
        .expect("reconcile succeeded")
}

/// A fresh resource: inputs read, the four objects applied in order, pods listed (none
/// yet), status written as not ready.
#[tokio::test]
async fn create_applies_the_objects_and_writes_a_pending_status() {
    let (mut api, ctx) = setup(1);
    let cr = miner("  resources: {gpus: 2, gpuType: NVIDIA-H100-80GB-HBM3}\n");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));

    api.secrets_found(&["hotkey-0", "hotkey-1"]).await;
    let [cm, headless, metrics, sts]: [Value; 4] =
        api.objects_applied("alpha-miner").await.try_into().unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert!(
        cm["data"]["hparams.toml"]
            .as_str()
            .unwrap()
            .contains("size = \"tiny\"")
    );
    assert_eq!(cm["metadata"]["ownerReferences"][0]["uid"], "1111-2222");
    assert_eq!(cm["metadata"]["ownerReferences"][0]["kind"], "TemplarMiner");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(metrics["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(sts["spec"]["replicas"], 2);
    let pod_spec = &sts["spec"]["template"]["spec"];
    assert_eq!(
        pod_spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        "2"
    );
    assert_eq!(
        pod_spec["nodeSelector"]["nvidia.com/gpu.product"],
        "NVIDIA-H100-80GB-HBM3"
    );
    assert_eq!(sts["metadata"]["ownerReferences"][0]["controller"], true);
    api.pods(vec![]).await;
    let status = api.status(&cr).await;
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["replicas"], 0);
    assert_eq!(status["ready"], "0/2");
    assert_eq!(condition(&status, "Scheduled")["reason"], "PodsPending");
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Progressing")["reason"], "RollingOut");
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert_eq!(condition(&status, "Ready")["observedGeneration"], 3);

    assert_eq!(finish(task).await, Action::requeue(Duration::from_secs(10)));
    api.done().await;
}

/// Serves a fixed `/status` document on `addr` until the test ends.
async fn node_status_server(addr: &str, status: NodeStatus) -> u16 {
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

fn node(hotkey: &str, uid: u16, window: u64, loss: f64, incentive: f64) -> NodeStatus {
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

/// Two ready pods, each with its node's `/status` on its own loopback address: the status
/// carries their window, loss and incentive, the resource is Ready, and a Normal event says so.
#[tokio::test]
async fn status_comes_from_the_ready_pods() {
    let port = node_status_server("127.0.0.1:0", node("hk-a", 1, 41, 3.0, 0.25)).await;
    node_status_server(&format!("127.0.0.2:{port}"), node("hk-b", 2, 42, 4.0, 0.75)).await;
    let (mut api, ctx) = setup(port);
    let cr = miner("");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));

    api.secrets_found(&["hotkey-0", "hotkey-1"]).await;
    api.objects_applied("alpha-miner").await;
    api.pods(vec![
        pod("alpha-miner-0", "127.0.0.1", true),
        pod("alpha-miner-1", "127.0.0.2", true),
    ])
    .await;
    let status = api.status(&cr).await;
    assert_eq!(status["readyReplicas"], 2);
    assert_eq!(status["ready"], "2/2");
    assert_eq!(status["window"], 42);
    assert_eq!(status["globalStep"], 420);
    assert_eq!(status["loss"], 3.5);
    assert_eq!(status["score"], 0.5);
    assert_eq!(status["lastCheckpointWindow"], 41);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Ready")["reason"], "AllReplicasReady");
    assert_eq!(condition(&status, "Progressing")["reason"], "Training");
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0]["pod"], "alpha-miner-0");
    assert_eq!(nodes[0]["hotkey"], "hk-a");
    assert_eq!(nodes[1]["uid"], 2);
    assert_eq!(nodes[1]["window"], 42);
    assert!(nodes[1]["lastSeen"].is_string());
    let event = api.event().await;
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["reason"], "AllReplicasReady");
    assert_eq!(event["regarding"]["name"], "alpha");

    assert_eq!(finish(task).await, Action::requeue(Duration::from_secs(30)));
    api.done().await;
}

/// A pod the scheduler cannot place (no free GPU): Scheduled=False/Unschedulable with the
/// scheduler's message, never Ready, and one Warning event.
#[tokio::test]
async fn unschedulable_pod_sets_the_condition_and_a_warning_event() {
    let (mut api, ctx) = setup(1);
    let cr = miner("");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));
    api.secrets_found(&["hotkey-0", "hotkey-1"]).await;
    api.objects_applied("alpha-miner").await;
    let message = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.";
    let created = k8s_openapi::jiff::Timestamp::now().to_string();
    let pending = |name: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "creationTimestamp": created,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "alpha-miner",
                                              "uid": STS_UID, "controller": true}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
            ]}
        })
    };
    api.pods(vec![pending("alpha-miner-0"), pending("alpha-miner-1")])
        .await;
    let status = api.status(&cr).await;
    let scheduled = condition(&status, "Scheduled");
    assert_eq!(scheduled["status"], "False");
    assert_eq!(scheduled["reason"], "Unschedulable");
    assert_eq!(scheduled["message"], message);
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(status["readyReplicas"], 0);
    let event = api.event().await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "Unschedulable");
    assert_eq!(event["note"], message);

    assert_eq!(finish(task).await, Action::requeue(Duration::from_secs(10)));
    api.done().await;
}

/// The write-credentials secret does not exist: nothing is applied, the resource is
/// Degraded with reason MissingSecret, and a Warning event names the secret.
#[tokio::test]
async fn missing_secret_degrades_without_applying_anything() {
    let (mut api, ctx) = setup(1);
    let cr = miner("");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));
    api.not_found(&format!("/api/v1/namespaces/{NS}/secrets/s3-write"))
        .await;
    api.secret("hotkeys", &["hotkey-0", "hotkey-1"]).await;
    // Nothing applied: the StatefulSet is read as it is (none yet, so no pods to list).
    api.not_found(&format!(
        "/apis/apps/v1/namespaces/{NS}/statefulsets/alpha-miner"
    ))
    .await;
    let status = api.status(&cr).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "MissingSecret");
    assert!(degraded["message"].as_str().unwrap().contains("s3-write"));
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Ready")["reason"], "MissingSecret");
    assert_eq!(condition(&status, "Progressing")["status"], "False");
    let event = api.event().await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "MissingSecret");

    // Not an error loop: a plain requeue, so the secret is picked up once created.
    assert_eq!(finish(task).await, Action::requeue(Duration::from_secs(10)));
    api.done().await;
}

/// `suspend: true` applies the StatefulSet with zero replicas and reports Suspended.
#[tokio::test]
async fn suspend_scales_the_statefulset_to_zero() {
    let (mut api, ctx) = setup(1);
    let cr = miner("  suspend: true\n");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));
    api.secrets_found(&["hotkey-0", "hotkey-1"]).await;
    let sts = &api.objects_applied("alpha-miner").await[3];
    assert_eq!(sts["spec"]["replicas"], 0);
    api.pods(vec![]).await;
    let status = api.status(&cr).await;
    assert_eq!(condition(&status, "Ready")["reason"], "Suspended");
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert_eq!(status["ready"], "0/0");

    assert_eq!(finish(task).await, Action::requeue(Duration::from_secs(10)));
    api.done().await;
}

/// A resource being deleted: the garbage collector removes what it owns through the owner
/// references, so the reconcile makes no request at all and waits for the next change.
#[tokio::test]
async fn deletion_makes_no_requests() {
    let (api, ctx) = setup(1);
    let mut cr = miner("");
    cr.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let action = reconcile(Arc::new(cr), ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    api.done().await;
}

/// An API error fails the reconcile with the error kind counted in the metrics, and the
/// retry backs off exponentially per object.
#[tokio::test]
async fn api_errors_are_counted_and_backed_off() {
    let (mut api, ctx) = setup(1);
    let cr = Arc::new(miner(""));
    let task = tokio::spawn(reconcile(cr.clone(), ctx.clone()));
    let (_, send) = api
        .expect("GET", &format!("/api/v1/namespaces/{NS}/secrets/s3-write"))
        .await;
    send.send_response(json_response(
        500,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd is down"}),
    ));
    let err = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), "read_input");
    assert!(err.to_string().contains("s3-write"), "{err}");
    assert_eq!(
        error_policy(cr.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(cr.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    let text = api.metrics.encode();
    assert!(
        text.contains(
            "templar_operator_reconcile_failures_total{kind=\"TemplarMiner\",error=\"read_input\"} 1"
        ),
        "{text}"
    );
}

/// The validator kind goes through the same pipeline under its own resource path, and its
/// score is the mean score it gives.
#[tokio::test]
async fn validators_report_the_mean_score_they_give() {
    let mut status = node("hk-v", 0, 7, 3.0, 0.0);
    status.role = NodeRole::Validator;
    status.incentive = None;
    status.scores = vec![
        MinerScore {
            uid: 1,
            score: 0.2,
            last_improvement: None,
            last_random_improvement: None,
            weight: 0.25,
        },
        MinerScore {
            uid: 2,
            score: 0.6,
            last_improvement: None,
            last_random_improvement: None,
            weight: 0.75,
        },
    ];
    status.last_weights_window = Some(6);
    let port = node_status_server("127.0.0.1:0", status).await;
    let (mut api, ctx) = setup(port);
    let yaml = serde_yaml::to_string(&miner(""))
        .unwrap()
        .replace("TemplarMiner", "TemplarValidator");
    let mut cr: TemplarValidator = serde_yaml::from_str(&yaml).unwrap();
    cr.spec.node.replicas = 1;
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));
    api.secrets_found(&["hotkey-0"]).await;
    api.objects_applied("alpha-validator").await;
    api.answer(
        "GET",
        &format!(
            "/api/v1/namespaces/{NS}/pods?&{}",
            POD_SELECTOR.replace("3Dminer", "3Dvalidator")
        ),
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod("alpha-validator-0", "127.0.0.1", true)]}),
    )
    .await;
    let (body, send) = api
        .expect(
            "PATCH",
            &format!("/apis/templar.tplr.ai/v1alpha1/namespaces/{NS}/templarvalidators/alpha/status{APPLY}"),
        )
        .await;
    send.send_response(json_response(200, &serde_json::to_value(&cr).unwrap()));
    let status = &body["status"];
    assert_eq!(body["kind"], "TemplarValidator");
    assert!(
        (status["score"].as_f64().unwrap() - 0.4).abs() < 1e-9,
        "{status}"
    );
    assert_eq!(status["lastWeightsWindow"], 6);
    assert_eq!(condition(status, "Ready")["status"], "True");
    api.event().await;
    assert_eq!(finish(task).await, Action::requeue(Duration::from_secs(30)));
    api.done().await;
}

/// The API server refuses the StatefulSet (an immutable field changed, here the cache
/// size): a spec problem in the status and a Warning event, not a retry loop.
#[tokio::test]
async fn a_rejected_apply_is_a_spec_problem_not_an_error_loop() {
    let (mut api, ctx) = setup(1);
    let cr = miner("  cache: {size: 100Gi}\n");
    let task = tokio::spawn(reconcile(Arc::new(cr.clone()), ctx));
    api.secrets_found(&["hotkey-0", "hotkey-1"]).await;
    for path in &object_paths("alpha-miner")[..3] {
        api.apply(path).await;
    }
    let (body, send) = api
        .expect(
            "PATCH",
            &format!("/apis/apps/v1/namespaces/{NS}/statefulsets/alpha-miner{APPLY}"),
        )
        .await;
    assert_eq!(
        body["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "100Gi"
    );
    let message = "StatefulSet.apps \"alpha-miner\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";
    send.send_response(json_response(
        422,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422, "message": message}),
    ));
    // The StatefulSet that runs is read for its pods.
    api.answer(
        "GET",
        &format!("/apis/apps/v1/namespaces/{NS}/statefulsets/alpha-miner"),
        rolled_out(&body),
    )
    .await;
    api.pods(vec![]).await;
    let status = api.status(&cr).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["reason"], "ApplyRejected");
    assert!(degraded["message"].as_str().unwrap().contains("Forbidden"));
    let event = api.event().await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "ApplyRejected");
    assert_eq!(finish(task).await, Action::requeue(Duration::from_secs(10)));
    api.done().await;
}
