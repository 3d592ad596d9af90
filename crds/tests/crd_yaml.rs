//! The checked-in CRD YAML is what the types generate, and the schema carries what users
//! rely on: validation rules, the scale subresource, printer columns.

use templar_crds::{TemplarMiner, crds_yaml};

const CHECKED_IN: &str = include_str!("../templar.tplr.ai.yaml");

#[test]
fn checked_in_yaml_matches_the_types() {
    assert!(
        CHECKED_IN == crds_yaml(),
        "crds/templar.tplr.ai.yaml is stale: run `templar-operator crd > crds/templar.tplr.ai.yaml`"
    );
}

#[test]
fn schema_has_rules_scale_and_columns() {
    let docs: Vec<serde_json::Value> = CHECKED_IN
        .split("---\n")
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    for crd in &docs {
        let v = &crd["spec"]["versions"][0];
        assert_eq!(v["name"], "v1alpha1");
        assert_eq!(
            v["subresources"]["scale"]["specReplicasPath"],
            ".spec.replicas"
        );
        assert!(v["subresources"]["status"].is_object());
        let columns: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["Ready", "Window", "Loss", "Score", "Age"]);
        assert_eq!(
            v["subresources"]["scale"]["labelSelectorPath"], ".status.selector",
            "HPA and KEDA can target the kinds"
        );
        assert_eq!(crd["spec"]["names"]["categories"][0], "templar");
        let schema = &v["schema"]["openAPIV3Schema"];
        assert!(
            schema["description"]
                .as_str()
                .unwrap()
                .starts_with("A set of templar")
        );
        let rules = schema["x-kubernetes-validations"].as_array().unwrap();
        assert_eq!(rules.len(), 5);
        for rule in rules {
            assert!(rule["message"].as_str().unwrap().len() > 20, "{rule}");
        }
        let immutable: Vec<&str> = rules
            .iter()
            .map(|r| r["rule"].as_str().unwrap())
            .filter(|r| r.contains("oldSelf.spec.cache"))
            .collect();
        assert_eq!(immutable.len(), 2, "cache presence and size are immutable");
        let conditions = &schema["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"][0], "type");
        let resources = &schema["properties"]["spec"]["properties"]["resources"]["properties"];
        for quantity in ["cpu", "memory", "shmSize"] {
            let q = &resources[quantity];
            assert_eq!(q["x-kubernetes-int-or-string"], true, "{quantity}");
            assert!(
                q["x-kubernetes-validations"][0]["rule"]
                    .as_str()
                    .unwrap()
                    .contains("isQuantity"),
                "{quantity}: the API server refuses a bad quantity"
            );
        }
        for part in ["spec", "status"] {
            undocumented(&schema["properties"][part], part);
        }
        let spec = &schema["properties"]["spec"];
        assert!(
            spec["properties"]["wallet_secret"].is_null(),
            "camelCase fields"
        );
        assert!(spec["properties"]["walletSecret"].is_object());
        let required: Vec<&str> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        for field in ["image", "storage", "walletSecret"] {
            assert!(required.contains(&field), "{field} required: {required:?}");
        }
    }
}

#[test]
fn a_minimal_miner_parses_with_defaults() {
    let cr: TemplarMiner = serde_yaml::from_str(
        r#"
apiVersion: templar.tplr.ai/v1alpha1
kind: TemplarMiner
metadata: {name: m, namespace: default}
spec:
  image: ghcr.io/templar-rs/node:0.1.0
  storage: {bucket: b, writeSecret: s3-write}
  walletSecret: hotkeys
"#,
    )
    .unwrap();
    let n = &cr.spec.node;
    assert_eq!(n.replicas, 1);
    assert_eq!(n.resources.gpus, 1);
    assert_eq!(n.model, None);
    assert_eq!(n.startup_deadline_seconds, 900);
    assert!(!n.suspend);
    let missing: Result<TemplarMiner, _> = serde_yaml::from_str(
        "apiVersion: templar.tplr.ai/v1alpha1\nkind: TemplarMiner\nmetadata: {name: m}\nspec: {image: x}\n",
    );
    assert!(missing.unwrap_err().to_string().contains("storage"));
}

/// What the schema admits, the types parse: `maxUnavailable` is nullable (an int-or-string),
/// and `null` means the default as an absent field does; a percentage stays one.
#[test]
fn a_null_or_absent_max_unavailable_is_the_default_budget() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let budget = |yaml: &str| {
        let cr: TemplarMiner = serde_yaml::from_str(&format!(
            "apiVersion: templar.tplr.ai/v1alpha1\nkind: TemplarMiner\nmetadata: {{name: m}}\nspec:\n  image: i\n  storage: {{bucket: b, writeSecret: s}}\n  walletSecret: w\n  disruptionBudget: {yaml}\n"
        ))
        .unwrap();
        cr.spec.node.disruption_budget.unwrap().max_unavailable
    };
    assert_eq!(budget("{maxUnavailable: null}"), IntOrString::Int(1));
    assert_eq!(budget("{}"), IntOrString::Int(1));
    assert_eq!(budget("{maxUnavailable: 2}"), IntOrString::Int(2));
    assert_eq!(
        budget("{maxUnavailable: \"25%\"}"),
        IntOrString::String("25%".into())
    );
}

/// Panics naming the first field of `schema` (recursively) without a description, so that
/// `kubectl explain` documents every field. Objects from Kubernetes itself carry theirs.
fn undocumented(schema: &serde_json::Value, path: &str) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    for (name, field) in props {
        let here = format!("{path}.{name}");
        assert!(
            field["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{here} has no description"
        );
        undocumented(field, &here);
        undocumented(&field["items"], &format!("{here}[]"));
    }
}

/// Every `required` property of every object in `schema` (recursively) that is also
/// `nullable`: a field the types treat as optional that the API server would demand.
fn required_but_optional(schema: &serde_json::Value, path: &str, found: &mut Vec<String>) {
    if !schema.is_object() {
        return;
    }
    if let Some(props) = schema["properties"].as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            if props[name]["nullable"] == true {
                found.push(format!("{path}.{name}"));
            }
        }
        for (name, field) in props {
            required_but_optional(field, &format!("{path}.{name}"), found);
        }
    }
    required_but_optional(&schema["items"], &format!("{path}[]"), found);
}

#[test]
fn optional_fields_are_not_required_by_the_schema() {
    let mut found = Vec::new();
    for doc in CHECKED_IN.split("---\n") {
        let crd: serde_json::Value = serde_yaml::from_str(doc).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        required_but_optional(
            schema,
            crd["spec"]["names"]["kind"].as_str().unwrap(),
            &mut found,
        );
    }
    assert!(
        found.is_empty(),
        "optional in the types, required by the CRD: {found:?}"
    );
}
