//! Shared by the operator's test files; each uses a subset.
#![allow(dead_code)]

pub mod fake_run;
pub mod mock_api;
pub mod rbac;

use serde::Deserialize;
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

use templar_crds::TemplarMiner;
use templar_operator::build::Owner;
use templar_protocol::node_status::NodeRole;

/// What the builders know of a TemplarMiner parsed from YAML (name, namespace and uid set).
pub fn miner_owner(cr: &TemplarMiner) -> Owner<'_> {
    Owner {
        kind: "TemplarMiner",
        role: NodeRole::Miner,
        name: cr.metadata.name.as_deref().unwrap(),
        namespace: cr.metadata.namespace.as_deref().unwrap(),
        uid: cr.metadata.uid.as_deref().unwrap(),
        spec: &cr.spec.node,
    }
}

/// Run `kubernetes-validate --strict` (offline schemas of Kubernetes 1.34; installed by
/// `scripts/setup.sh --pytools`) over `(file name, JSON or YAML text)` objects and assert
/// that every one passed.
pub fn kubernetes_validate_strict(objects: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, text) in objects {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    let out = std::process::Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.34.0"])
        .args(&files)
        .output()
        .expect("kubernetes-validate must be installed: source scripts/setup.sh --pytools");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches(" passed ").count(),
        objects.len(),
        "each object validated: {text}"
    );
}

/// The repository's root. The runtime value of CARGO_MANIFEST_DIR: a target dir shared
/// between checkouts may hold a test binary built from another one.
pub fn repo_root() -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .unwrap()
    .to_path_buf()
}

/// The non-empty YAML documents of `text`.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The documents of a file under the repository root.
pub fn documents(path: &str) -> Vec<Value> {
    let text =
        std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    yaml_documents(&text)
}

pub fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

/// Whether an object is one of Kubernetes' own (kubernetes-validate has its schema).
pub fn is_built_in(v: &Value) -> bool {
    let api = v["apiVersion"].as_str().unwrap_or_default();
    let group = api.rsplit_once('/').map_or("", |(g, _)| g);
    group.is_empty() || group.ends_with(".k8s.io") || ["apps", "policy", "batch"].contains(&group)
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("{what} cannot run ({e}): source scripts/setup.sh --pytools"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kubectl kustomize DIR` (kustomize v5, built into kubectl) as documents.
pub fn kustomize(dir: &str) -> Vec<Value> {
    yaml_documents(&run(
        Command::new("kubectl").args(["kustomize", dir]),
        "kubectl kustomize (kubectl is on the machine image)",
    ))
}

/// A chart rendered by Helm's own engine (`scripts/helm_chart.py`, helm-python-sdk):
/// the YAML documents of every template, in template order.
pub fn helm_render(chart: &str, values: Option<&Path>, namespace: &str) -> Vec<Value> {
    let mut cmd = Command::new("python3");
    cmd.args(["scripts/helm_chart.py", "render", chart]);
    if let Some(v) = values {
        cmd.arg(v);
    }
    cmd.args(["--namespace", namespace, "--name", "templar"]);
    let out: serde_json::Value = serde_json::from_str(&run(&mut cmd, "helm render")).unwrap();
    let manifests = out["manifests"].as_object().unwrap();
    manifests
        .iter()
        .filter(|(path, _)| path.ends_with(".yaml"))
        .flat_map(|(_, text)| yaml_documents(text.as_str().unwrap()))
        .collect()
}

/// Each leaf of a chart's values changed alone (`scripts/helm_chart.py leaves`): which
/// changed the render (`checked`), which did not (`ignored`), which were refused (`refused`,
/// path to Helm's reason).
pub fn helm_value_leaves(chart: &str, values: Option<&Path>) -> serde_json::Value {
    let mut cmd = Command::new("python3");
    cmd.args(["scripts/helm_chart.py", "leaves", chart]);
    if let Some(v) = values {
        cmd.arg(v);
    }
    serde_json::from_str(&run(&mut cmd, "helm leaves")).unwrap()
}

/// The error text of a render that must fail.
pub fn helm_render_error(chart: &str, values_yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, values_yaml).unwrap();
    let out = Command::new("python3")
        .args(["scripts/helm_chart.py", "render", chart])
        .arg(&values)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{values_yaml} rendered");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `helm lint --strict` (Helm's own linter): the messages above info level.
pub fn helm_lint(chart: &str, values: &Path) -> Vec<serde_json::Value> {
    let out = run(
        Command::new("python3")
            .args(["scripts/helm_chart.py", "lint", chart])
            .arg(values),
        "helm lint",
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut findings: Vec<_> = report["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap_or(3) > 1)
        .cloned()
        .collect();
    findings.extend(report["errors"].as_array().unwrap().iter().cloned());
    findings
}

/// Validate TemplarMiner / TemplarValidator documents against the checked-in CRDs' schema,
/// rejecting unknown fields (`scripts/validate_custom_resources.py`); returns how many passed.
pub fn validate_custom_resources(docs: &[Value]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resources.yaml");
    let text: Vec<String> = docs
        .iter()
        .map(|d| serde_yaml::to_string(d).unwrap())
        .collect();
    std::fs::write(&file, text.join("---\n")).unwrap();
    let out = run(
        Command::new("python3")
            .args([
                "scripts/validate_custom_resources.py",
                "crds/templar.tplr.ai.yaml",
            ])
            .arg(&file),
        "the CRD schema check",
    );
    out.matches(" passed").count()
}

/// kubernetes-validate --strict over the built-in objects among `docs`; returns how many.
pub fn validate_built_in(docs: &[Value], label: &str) -> usize {
    let objects: Vec<(String, String)> = docs
        .iter()
        .filter(|d| is_built_in(d))
        .enumerate()
        .map(|(i, d)| {
            (
                format!("{label}-{i}-{}.yaml", kind(d)),
                serde_yaml::to_string(d).unwrap(),
            )
        })
        .collect();
    if !objects.is_empty() {
        kubernetes_validate_strict(&objects);
    }
    objects.len()
}

/// The operator's validation of every TemplarMiner / TemplarValidator in `docs`.
pub fn validate_all(
    docs: &[Value],
    inputs: &templar_operator::validate::Inputs,
) -> Vec<(String, Result<(), templar_operator::validate::Problem>)> {
    docs.iter()
        .filter_map(|d| {
            let spec = match kind(d) {
                "TemplarMiner" => {
                    serde_yaml::from_value::<templar_crds::TemplarMiner>(d.clone())
                        .unwrap()
                        .spec
                        .node
                }
                "TemplarValidator" => {
                    serde_yaml::from_value::<templar_crds::TemplarValidator>(d.clone())
                        .unwrap()
                        .spec
                        .node
                }
                _ => return None,
            };
            let name = format!("{}/{}", kind(d), d["metadata"]["name"].as_str().unwrap());
            Some((
                name,
                templar_operator::validate::validate(&spec, inputs).map(|_| ()),
            ))
        })
        .collect()
}
