//! The plain manifests under `manifests/`: the built-in objects pass
//! `kubernetes-validate --strict`, the operator's RBAC grants every call the reconcile and
//! the leader election make, and the example resources validate against their own secrets
//! and ConfigMaps with the operator's validation.

mod common;

use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use templar_crds::{TemplarMiner, TemplarValidator};
use templar_operator::validate::{Inputs, validate};

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(templar_root().join(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn templar_root() -> std::path::PathBuf {
    // The runtime value: a target dir shared between checkouts may hold a build made elsewhere.
    std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .unwrap()
    .to_path_buf()
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

#[test]
fn built_in_objects_pass_kubernetes_validate_strict() {
    let mut objects = Vec::new();
    for path in [
        "manifests/operator.yaml",
        "manifests/namespaced-rbac.yaml",
        "manifests/examples/devnet.yaml",
    ] {
        for (i, doc) in documents(path).iter().enumerate() {
            let api = doc["apiVersion"].as_str().unwrap();
            if api.starts_with("templar.tplr.ai/") {
                continue;
            }
            objects.push((
                format!("{}-{i}-{}.yaml", path.replace('/', "_"), kind(doc)),
                serde_yaml::to_string(doc).unwrap(),
            ));
        }
    }
    assert!(objects.len() >= 12, "{} objects", objects.len());
    common::kubernetes_validate_strict(&objects);
}

/// Every (API group, resource, verb) the operator uses, each with the call that needs it.
/// The manifests must grant exactly these: nothing missing, nothing more.
const NEEDED: &[(&str, &str, &str)] = &[
    // The controllers' watches (list + watch) of both kinds.
    ("templar.tplr.ai", "templarminers", "list"),
    ("templar.tplr.ai", "templarminers", "watch"),
    ("templar.tplr.ai", "templarvalidators", "list"),
    ("templar.tplr.ai", "templarvalidators", "watch"),
    // write_status: server-side apply of the status subresource.
    ("templar.tplr.ai", "templarminers/status", "patch"),
    ("templar.tplr.ai", "templarvalidators/status", "patch"),
    // blockOwnerDeletion on the owned objects' owner references.
    ("templar.tplr.ai", "templarminers/finalizers", "update"),
    ("templar.tplr.ai", "templarvalidators/finalizers", "update"),
    // apply (create + patch), the suspend scale-down (patch), read_stateful_set (get),
    // the owned-object watch (list + watch).
    ("apps", "statefulsets", "create"),
    ("apps", "statefulsets", "patch"),
    ("apps", "statefulsets", "get"),
    ("apps", "statefulsets", "list"),
    ("apps", "statefulsets", "watch"),
    ("", "services", "create"),
    ("", "services", "patch"),
    ("", "configmaps", "create"),
    ("", "configmaps", "patch"),
    // read_inputs: the hyperparameters ConfigMap and the named secrets.
    ("", "configmaps", "get"),
    ("", "secrets", "get"),
    // observe.
    ("", "pods", "list"),
    // The disruption budget: applied, or deleted when the spec drops it.
    ("policy", "poddisruptionbudgets", "create"),
    ("policy", "poddisruptionbudgets", "patch"),
    ("policy", "poddisruptionbudgets", "delete"),
    // The event recorder (a repeated event is patched).
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
];

/// Leader election (kube-lease-manager): read, create and renew the Lease.
const LEASE_NEEDED: &[(&str, &str, &str)] = &[
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "patch"),
];

type Grants = BTreeSet<(String, String, String)>;

/// (group, resource, verb) granted by the rules of `doc` (a Role or ClusterRole).
fn grants(doc: &Value) -> Grants {
    let mut granted = BTreeSet::new();
    for rule in doc["rules"].as_sequence().unwrap() {
        let strings = |k: &str| -> Vec<String> {
            rule[k]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        for g in strings("apiGroups") {
            for r in strings("resources") {
                for v in strings("verbs") {
                    assert_ne!(v, "*", "no wildcard verbs");
                    granted.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    granted
}

fn set(list: &[(&str, &str, &str)]) -> Grants {
    list.iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect()
}

fn role<'a>(docs: &'a [Value], kind_: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind(d) == kind_ && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind_} {name}"))
}

/// Both directions: every call the operator makes is granted, and nothing else is.
fn assert_exactly(granted: &Grants, needed: &Grants, what: &str) {
    let missing: Vec<_> = needed.difference(granted).collect();
    let extra: Vec<_> = granted.difference(needed).collect();
    assert!(missing.is_empty(), "{what} lacks {missing:?}");
    assert!(
        extra.is_empty(),
        "{what} grants more than needed: {extra:?}"
    );
}

#[test]
fn rbac_grants_exactly_the_calls_the_operator_makes() {
    let docs = documents("manifests/operator.yaml");
    let cluster = grants(role(&docs, "ClusterRole", "templar-operator"));
    assert_exactly(&cluster, &set(NEEDED), "the ClusterRole");
    let lease = grants(role(&docs, "Role", "templar-operator-leader-election"));
    assert_exactly(&lease, &set(LEASE_NEEDED), "the leader-election Role");

    let namespaced = documents("manifests/namespaced-rbac.yaml");
    let scoped = grants(role(&namespaced, "Role", "templar-operator"));
    assert_exactly(&scoped, &set(NEEDED), "the namespaced Role");
    let binding = namespaced
        .iter()
        .find(|d| kind(d) == "RoleBinding")
        .unwrap();
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["subjects"][0]["name"], "templar-operator");

    let deployment = docs.iter().find(|d| kind(d) == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0], "run");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(deployment["spec"]["replicas"].as_i64().unwrap() >= 2);
}

#[test]
fn example_resources_validate_against_their_secrets_and_config_maps() {
    let docs = documents("manifests/examples/devnet.yaml");
    let mut inputs = Inputs::default();
    for d in &docs {
        let name = d["metadata"]["name"].as_str().unwrap().to_string();
        let data: BTreeMap<String, String> = serde_yaml::from_value(
            d.get("stringData")
                .or_else(|| d.get("data"))
                .cloned()
                .unwrap_or(Value::Null),
        )
        .unwrap_or_default();
        match kind(d) {
            "Secret" => {
                inputs.secrets.insert(name, data.into_keys().collect());
            }
            "ConfigMap" => {
                inputs.config_maps.insert(name, data);
            }
            _ => {}
        }
    }
    let mut checked = 0;
    for d in &docs {
        let spec = match kind(d) {
            "TemplarMiner" => {
                serde_yaml::from_value::<TemplarMiner>(d.clone())
                    .unwrap()
                    .spec
                    .node
            }
            "TemplarValidator" => {
                serde_yaml::from_value::<TemplarValidator>(d.clone())
                    .unwrap()
                    .spec
                    .node
            }
            _ => continue,
        };
        let hparams = validate(&spec, &inputs)
            .unwrap_or_else(|p| panic!("{} does not validate: {p:?}", kind(d)));
        assert!(hparams.hparams_file.contains("blocks_per_window"));
        checked += 1;
    }
    assert_eq!(checked, 2);
}
