//! `kubectl templar` against a FAKE Kubernetes API server (no kube-apiserver can run here): an
//! in-memory object store that lists by namespace and label selector, serves pod logs and
//! takes server-side applies, so `status`, `logs` and `devnet` run their real requests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use templar_crds::{TemplarMiner, TemplarValidator};
use templar_operator::plugin::{PluginError, devnet, logs, status};
use templar_protocol::identity::{Signer, Sr25519Signer};
use templar_protocol::node_status::NodeRole;
use templar_testkit::fake_api::{FakeBody, full, not_found, text};

const GROUP: &str = "/apis/templar.tplr.ai/v1alpha1";

/// Objects by their item path (`/api/v1/namespaces/NS/secrets/NAME`), pod logs by pod name,
/// and the applies received.
#[derive(Default)]
struct Store {
    objects: BTreeMap<String, Value>,
    logs: BTreeMap<String, String>,
    applied: Vec<String>,
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        obj["metadata"]["labels"][k] == v
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%2F", "/")
                .replace("%3D", "=")
                .replace("%2C", ",")
        })
    })
}

/// `/apis/G/V/namespaces/NS/RES` or `/apis/G/V/RES` (all namespaces): the items of RES there.
fn list(store: &Store, path: &str, query: &str) -> Value {
    let selector = query_param(query, "labelSelector").unwrap_or_default();
    let resource = path.rsplit('/').next().unwrap();
    let namespaced = path.contains("/namespaces/");
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|(key, _)| {
            let (parent, _) = key.rsplit_once('/').unwrap();
            if namespaced {
                parent == path
            } else {
                parent.ends_with(&format!("/{resource}"))
                    && parent.starts_with(path.trim_end_matches(resource))
            }
        })
        .map(|(_, v)| v.clone())
        .filter(|v| labels_match(v, &selector))
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
}

async fn handle(store: Arc<Mutex<Store>>, req: Request<Body>) -> Response<FakeBody> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let mut s = store.lock().unwrap();
    if let Some(pod) = path
        .strip_suffix("/log")
        .and_then(|p| p.rsplit('/').next())
        .map(String::from)
    {
        return match s.logs.get(&pod) {
            Some(log) => text(200, log),
            None => not_found(),
        };
    }
    match method.as_str() {
        "PATCH" => {
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            s.applied.push(path.clone());
            s.objects.insert(path, body.clone());
            full(200, &body)
        }
        "GET" if s.objects.contains_key(&path) => full(200, &s.objects[&path]),
        "GET" => {
            // A collection: the path's last segment is a resource (plural), not a name.
            let last = path.rsplit('/').next().unwrap_or_default();
            if ["templarvalidators", "templarminers", "pods"].contains(&last) {
                full(200, &list(&s, &path, &query))
            } else {
                not_found()
            }
        }
        _ => not_found(),
    }
}

fn client(store: Arc<Mutex<Store>>) -> kube::Client {
    let service = tower::service_fn(move |req: Request<Body>| {
        let store = store.clone();
        async move { Ok::<_, Infallible>(handle(store, req).await) }
    });
    kube::Client::new(service, "train")
}

fn resource(kind: &str, ns: &str, name: &str, status: Value) -> (String, Value) {
    let plural = format!("{}s", kind.to_lowercase());
    let path = format!("{GROUP}/namespaces/{ns}/{plural}/{name}");
    let obj = json!({
        "apiVersion": "templar.tplr.ai/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": {"image": "ghcr.io/templar-rs/templar-node:0.1.0", "replicas": 2,
                 "storage": {"bucket": "b", "writeSecret": "s3-write"}, "walletSecret": "hotkeys",
                 "hyperparameters": {"inline": "[model]\nsize = \"tiny\"\n"}},
        "status": status,
    });
    (path, obj)
}

fn pod(ns: &str, name: &str, instance: &str, role: &str) -> (String, Value) {
    let labels = json!({
        "app.kubernetes.io/name": "templar-node", "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": role, "app.kubernetes.io/managed-by": "templar-operator",
    });
    (
        format!("/api/v1/namespaces/{ns}/pods/{name}"),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels}}),
    )
}

/// A network in `train` (a validator and two miners, one of them failing) and one in `other`.
fn network() -> Arc<Mutex<Store>> {
    let mut store = Store::default();
    let entries = [
        resource(
            "TemplarValidator",
            "train",
            "net",
            json!({"replicas": 1, "readyReplicas": 1, "ready": "1/1", "window": 12, "loss": 6.25,
                   "score": 0.0123, "conditions": [],
                   "nodes": [{"pod": "net-validator-0", "uid": 0, "window": 12, "loss": 6.25, "score": 0.0123}]}),
        ),
        resource(
            "TemplarMiner",
            "train",
            "net",
            json!({"replicas": 2, "readyReplicas": 1, "ready": "1/2", "window": 12, "loss": 6.5,
                   "conditions": [{"type": "Degraded", "status": "True", "reason": "NodeErrors",
                                   "message": "net-miner-1: store unreachable", "lastTransitionTime": "2026-12-08T00:00:00Z"}],
                   "nodes": [{"pod": "net-miner-0", "uid": 1, "window": 12, "loss": 6.5, "score": 0.75},
                             {"pod": "net-miner-1", "uid": 2, "lastError": "store unreachable"}]}),
        ),
        resource(
            "TemplarMiner",
            "other",
            "elsewhere",
            json!({"ready": "0/1"}),
        ),
        pod("train", "net-miner-0", "net", "miner"),
        pod("train", "net-miner-1", "net", "miner"),
        pod("train", "net-validator-0", "net", "validator"),
    ];
    store.objects.extend(entries);
    store.logs.insert(
        "net-miner-0".into(),
        "window 12 uploaded\nwindow 13 started\n".into(),
    );
    store
        .logs
        .insert("net-miner-1".into(), "store unreachable\n".into());
    Arc::new(Mutex::new(store))
}

#[tokio::test]
async fn status_prints_each_validator_and_its_miners_from_the_resources_status() {
    let client = client(network());
    let mut out = Vec::new();
    status::status(&client, Some("train"), &mut out)
        .await
        .unwrap();
    let table = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAMESPACE") && lines[0].contains("WEIGHT"),
        "{table}"
    );
    let validator = lines
        .iter()
        .position(|l| l.contains("validator/net"))
        .unwrap();
    let miner = lines.iter().position(|l| l.contains("miner/net")).unwrap();
    assert!(validator < miner, "validators first: {table}");
    let row = |pod: &str| -> Vec<&str> {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(pod))
            .unwrap_or_else(|| panic!("no {pod}: {table}"))
            .split_whitespace()
            .collect()
    };
    assert_eq!(
        row("net-validator-0")[..7],
        [
            "net-validator-0",
            "0",
            "yes",
            "12",
            "6.2500",
            "0.01230",
            "-"
        ]
    );
    assert_eq!(
        row("net-miner-0")[..7],
        ["net-miner-0", "1", "yes", "12", "6.5000", "-", "0.7500"]
    );
    assert_eq!(row("net-miner-1")[..3], ["net-miner-1", "2", "no"]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("net-miner-1") && l.ends_with("store unreachable"))
    );
    assert!(
        table.contains("NodeErrors: net-miner-1: store unreachable"),
        "{table}"
    );
    assert!(!table.contains("elsewhere"), "another namespace: {table}");

    let mut out = Vec::new();
    status::status(&client, None, &mut out).await.unwrap();
    let all = String::from_utf8(out).unwrap();
    assert!(
        all.contains("miner/elsewhere") && all.contains("validator/net"),
        "{all}"
    );

    let mut out = Vec::new();
    status::status(&client, Some("empty"), &mut out)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap().trim(),
        "No TemplarValidator or TemplarMiner in namespace empty."
    );
}

#[tokio::test]
async fn logs_follow_every_pod_of_a_resource_each_line_prefixed() {
    let store = network();
    let client = client(store.clone());
    let mut out = Vec::new();
    let options = logs::LogOptions::default();
    logs::logs(
        &client,
        "train",
        "net",
        Some(NodeRole::Miner),
        &options,
        &mut out,
    )
    .await
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "[net-miner-0] window 12 uploaded",
            "[net-miner-0] window 13 started",
            "[net-miner-1] store unreachable"
        ]
    );
    // Both kinds are named `net`: the plugin asks which.
    let err = logs::logs(&client, "train", "net", None, &options, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Ambiguous(_)), "{err}");
    let err = logs::logs(&client, "train", "gone", None, &options, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no TemplarValidator or TemplarMiner named gone in namespace train"
    );
}

#[tokio::test]
async fn devnet_applies_signed_hotkeys_the_s3_secret_and_resources_the_operator_accepts() {
    let store = Arc::new(Mutex::new(Store::default()));
    let client = client(store.clone());
    let options = devnet::DevnetOptions {
        name: "quick".into(),
        namespace: "kind".into(),
        endpoint: "http://garage.storage:3900".into(),
        region: "garage".into(),
        bucket: "templar".into(),
        miners: 2,
        model: "tiny".into(),
        image: devnet::default_image(),
        gpus: 0,
        access_key_id: "GKexample".to_string().into(),
        secret_access_key: "very-secret-value".to_string().into(),
    };
    let mut out = Vec::new();
    let hotkeys = devnet::apply(&client, &options, &mut out).await.unwrap();
    let printed = String::from_utf8(out).unwrap();
    assert!(!printed.contains("very-secret-value"), "{printed}");
    assert!(!printed.contains("secretSeed"), "{printed}");
    assert_eq!(hotkeys.len(), 3);

    let s = store.lock().unwrap();
    assert!(
        s.applied
            .iter()
            .all(|p| p.starts_with("/api/v1/namespaces/kind/")
                || p.starts_with(&format!("{GROUP}/namespaces/kind/")))
    );
    // Each keyfile's seed signs as the hotkey printed for it.
    let wallet = |name: &str| {
        s.objects[&format!("/api/v1/namespaces/kind/secrets/{name}")]["stringData"].clone()
    };
    let seeds = [
        wallet("quick-validator-hotkeys")["hotkey-0"].clone(),
        wallet("quick-miner-hotkeys")["hotkey-0"].clone(),
        wallet("quick-miner-hotkeys")["hotkey-1"].clone(),
    ];
    for (keyfile, hotkey) in seeds.iter().zip(&hotkeys) {
        let keyfile: Value = serde_json::from_str(keyfile.as_str().unwrap()).unwrap();
        let signer = Sr25519Signer::from_seed_hex(keyfile["secretSeed"].as_str().unwrap()).unwrap();
        assert_eq!(signer.hotkey().as_str(), hotkey);
        assert_eq!(keyfile["ss58Address"], hotkey.as_str());
    }
    assert_eq!(
        wallet("quick-s3-write")["secretAccessKey"],
        "very-secret-value"
    );
    let config = &s.objects["/api/v1/namespaces/kind/configmaps/quick-hparams"];
    assert!(
        config["data"]["hparams.toml"]
            .as_str()
            .unwrap()
            .contains("size = \"tiny\"")
    );

    // The resources parse, pass the operator's own checks and name the objects applied.
    let miner: TemplarMiner = serde_json::from_value(
        s.objects[&format!("{GROUP}/namespaces/kind/templarminers/quick")].clone(),
    )
    .unwrap();
    let validator: TemplarValidator = serde_json::from_value(
        s.objects[&format!("{GROUP}/namespaces/kind/templarvalidators/quick")].clone(),
    )
    .unwrap();
    assert_eq!(
        (miner.spec.node.replicas, validator.spec.node.replicas),
        (2, 1)
    );
    assert_eq!(miner.spec.node.resources.gpus, 0);
    assert_eq!(miner.spec.node.wallet_secret, "quick-miner-hotkeys");
    assert_eq!(
        miner.spec.node.storage.write_secret.as_deref(),
        Some("quick-s3-write")
    );
    // What the operator reads before it builds anything: the named Secrets' keys and the
    // ConfigMap.
    let mut inputs = templar_operator::validate::Inputs::default();
    for (key, obj) in &s.objects {
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        if key.contains("/secrets/") {
            let keys = obj["stringData"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            inputs.secrets.insert(name, keys);
        } else if key.contains("/configmaps/") {
            let data = serde_json::from_value(obj["data"].clone()).unwrap();
            inputs.config_maps.insert(name, data);
        }
    }
    for spec in [&miner.spec.node, &validator.spec.node] {
        let valid = templar_operator::validate::validate(spec, &inputs)
            .unwrap_or_else(|p| panic!("the operator refuses the devnet: {p:?}"));
        assert_eq!(valid.model, "tiny");
    }
}
