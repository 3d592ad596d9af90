//! Every object the CRDs' schema admits parses into the operator's types, and every spec the
//! types serialise passes the schema: objects generated from the schema itself
//! (`scripts/crd_samples.py`: the minimal and the full object, and each field of the spec
//! tree at an edge: null where nullable, every enum value, integer bounds, both forms of an
//! int-or-string, empty and one-item lists and maps), checked against the schema, parsed, and
//! written back.

mod common;

use common::{repo_root, validate_custom_resources};
use serde_yaml::Value;
use std::process::Command;
use templar_crds::{TemplarMiner, TemplarValidator};

fn samples() -> Vec<serde_json::Value> {
    let out = Command::new("python3")
        .args(["scripts/crd_samples.py", "crds/templar.tplr.ai.yaml"])
        .current_dir(repo_root())
        .output()
        .expect("python3 runs (source scripts/setup.sh --pytools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn as_yaml(v: &serde_json::Value) -> Value {
    serde_yaml::to_value(v).unwrap()
}

/// Parse `object` as its kind and serialise it again.
fn round_trip(kind: &str, object: &serde_json::Value) -> Result<serde_json::Value, String> {
    let parsed = match kind {
        "TemplarMiner" => serde_json::from_value::<TemplarMiner>(object.clone())
            .map(|r| serde_json::to_value(r).unwrap()),
        "TemplarValidator" => serde_json::from_value::<TemplarValidator>(object.clone())
            .map(|r| serde_json::to_value(r).unwrap()),
        other => panic!("unknown kind {other}"),
    };
    parsed.map_err(|e| e.to_string())
}

#[test]
fn every_object_the_schema_admits_parses_and_every_parsed_one_passes_the_schema() {
    let samples = samples();
    let nulls = samples
        .iter()
        .filter(|s| s["variant"].as_str().unwrap().ends_with(":null"))
        .count();
    assert!(
        samples.len() >= 300 && nulls >= 40,
        "{} samples, {nulls} nulls",
        samples.len()
    );
    // The generator's objects are ones the schema admits.
    let objects: Vec<Value> = samples.iter().map(|s| as_yaml(&s["object"])).collect();
    assert_eq!(validate_custom_resources(&objects), samples.len());
    // Each parses; each parsed one, written back, passes the schema again.
    let mut failures = Vec::new();
    let mut written = Vec::new();
    for s in &samples {
        match round_trip(s["kind"].as_str().unwrap(), &s["object"]) {
            Ok(back) => written.push(as_yaml(&back)),
            Err(e) => failures.push(format!("{}: {e}", s["variant"])),
        }
    }
    assert!(
        failures.is_empty(),
        "admitted but not parsed:\n{}",
        failures.join("\n")
    );
    assert_eq!(validate_custom_resources(&written), samples.len());
}
