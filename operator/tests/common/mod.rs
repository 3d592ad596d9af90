//! Shared by the operator's test files; each uses a subset.
#![allow(dead_code)]

pub mod mock_api;

use templar_crds::{NodeRole, TemplarMiner};
use templar_operator::build::Owner;

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
