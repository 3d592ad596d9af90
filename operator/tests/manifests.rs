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
    for path in ["manifests/operator.yaml", "manifests/examples/devnet.yaml"] {
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

/// Every (API group, resource, verb) the operator uses, with the call that needs it.
const NEEDED: &[(&str, &str, &str)] = &[
    ("templar.tplr.ai", "templarminers", "watch"),
    ("templar.tplr.ai", "templarvalidators", "list"),
    ("templar.tplr.ai", "templarminers/status", "patch"),
    ("templar.tplr.ai", "templarvalidators/status", "patch"),
    ("apps", "statefulsets", "patch"),
    ("apps", "statefulsets", "watch"),
    ("", "services", "patch"),
    ("", "configmaps", "patch"),
    ("", "configmaps", "get"),
    ("", "secrets", "get"),
    ("", "pods", "list"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "patch"),
];

#[test]
fn rbac_grants_every_call_the_operator_makes_and_no_secret_listing() {
    let docs = documents("manifests/operator.yaml");
    let mut granted = BTreeSet::new();
    for doc in docs
        .iter()
        .filter(|d| kind(d) == "ClusterRole" || kind(d) == "Role")
    {
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
                        granted.insert((g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    for (g, r, v) in NEEDED {
        assert!(
            granted.contains(&(g.to_string(), r.to_string(), v.to_string())),
            "RBAC lacks {v} on {r} ({g:?})"
        );
    }
    for verb in ["list", "watch"] {
        assert!(
            !granted.contains(&("".into(), "secrets".into(), verb.into())),
            "the operator reads named secrets only"
        );
    }
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
