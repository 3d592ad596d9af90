//! The plain manifests under `manifests/`: the kustomize install (base and namespaced
//! overlay, built with kubectl's kustomize) passes `kubernetes-validate --strict`, carries
//! the generated CRDs and grants exactly the calls the operator makes; every example passes
//! the CRD schema and the operator's own validation; the GitOps examples point at it.

mod common;

use common::rbac::{LEASE_NEEDED, NEEDED, assert_exactly, grants, role, set};
use common::{documents, kind, kustomize, repo_root, validate_all, validate_built_in};
use serde_yaml::Value;
use std::collections::BTreeMap;
use templar_crds::TemplarMiner;
use templar_operator::build::statefulset;
use templar_operator::validate::Inputs;

const BASE: &str = "manifests/install/base";
const NAMESPACED: &str = "manifests/install/overlays/namespaced";
const EXAMPLES: [&str; 7] = [
    "manifests/examples/devnet.yaml",
    "manifests/examples/gpu-scheduling.yaml",
    "manifests/examples/kueue.yaml",
    "manifests/examples/volcano.yaml",
    "manifests/examples/bittensor.yaml",
    // What the cluster suite applies.
    "e2e/cluster/devnet.yaml",
    "e2e/cluster/minio.yaml",
];

#[test]
fn kustomize_installs_pass_kubernetes_validate_strict() {
    for dir in [BASE, NAMESPACED] {
        let docs = kustomize(dir);
        let built_in = validate_built_in(&docs, &dir.replace('/', "_"));
        assert!(built_in >= 8, "{dir}: {built_in} objects");
        // Everything namespaced lands in a namespace; the operator in templar-system.
        let deployment = role(&docs, "Deployment", "templar-operator");
        assert_eq!(deployment["metadata"]["namespace"], "templar-system");
        // Two replicas: a budget keeps one up through a drain, and they prefer two nodes.
        let pods = &deployment["spec"]["selector"]["matchLabels"];
        let pdb = role(&docs, "PodDisruptionBudget", "templar-operator");
        assert_eq!(&pdb["spec"]["selector"]["matchLabels"], pods, "{dir}");
        let anti = &deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0]["podAffinityTerm"];
        assert_eq!(&anti["labelSelector"]["matchLabels"], pods, "{dir}");
    }
    let mut examples = Vec::new();
    for path in EXAMPLES {
        examples.extend(documents(path));
    }
    assert!(validate_built_in(&examples, "examples") >= 12);
}

/// `v` as JSON with every number as f64 (kustomize writes `3600.0` as `3600`).
fn normalised(v: &Value) -> serde_json::Value {
    fn walk(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value as J;
        match v {
            J::Number(n) => serde_json::json!(n.as_f64().unwrap()),
            J::Array(a) => J::Array(a.into_iter().map(walk).collect()),
            J::Object(o) => J::Object(o.into_iter().map(|(k, v)| (k, walk(v))).collect()),
            other => other,
        }
    }
    walk(serde_json::to_value(v).unwrap())
}

#[test]
fn kustomize_base_carries_the_generated_crds() {
    let docs = kustomize(BASE);
    let crds: Vec<serde_json::Value> = docs
        .iter()
        .filter(|d| kind(d) == "CustomResourceDefinition")
        .map(normalised)
        .collect();
    let generated = documents("crds/templar.tplr.ai.yaml");
    assert_eq!(crds.len(), generated.len());
    for crd in &generated {
        assert!(
            crds.contains(&normalised(crd)),
            "{:?} differs",
            crd["metadata"]["name"]
        );
    }
}

#[test]
fn rbac_grants_exactly_the_calls_the_operator_makes() {
    let docs = kustomize(BASE);
    let cluster = grants(role(&docs, "ClusterRole", "templar-operator"));
    assert_exactly(&cluster, &set(NEEDED), "the ClusterRole");
    let lease = grants(role(&docs, "Role", "templar-operator-leader-election"));
    assert_exactly(&lease, &set(LEASE_NEEDED), "the leader-election Role");
    let deployment = role(&docs, "Deployment", "templar-operator");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0], "run");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(deployment["spec"]["replicas"].as_i64().unwrap() >= 2);

    // Namespaced: no cluster-wide grant, the same rules as a Role in the watched namespace,
    // and the operator told to watch it.
    let docs = kustomize(NAMESPACED);
    assert!(
        docs.iter()
            .all(|d| !["ClusterRole", "ClusterRoleBinding"].contains(&kind(d))),
        "the namespaced install grants nothing cluster-wide"
    );
    let scoped = role(&docs, "Role", "templar-operator");
    assert_eq!(scoped["metadata"]["namespace"], "train");
    assert_exactly(&grants(scoped), &set(NEEDED), "the namespaced Role");
    let binding = role(&docs, "RoleBinding", "templar-operator");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["subjects"][0]["name"], "templar-operator");
    assert_eq!(binding["subjects"][0]["namespace"], "templar-system");
    let deployment = role(&docs, "Deployment", "templar-operator");
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_sequence()
            .unwrap()
            .contains(&Value::from("--namespace=train")),
        "{args:?}"
    );
}

/// The Secrets and ConfigMaps of `docs` as the operator's validation reads them.
fn inputs_of(docs: &[Value]) -> Inputs {
    let mut inputs = Inputs::default();
    for d in docs {
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
    inputs
}

#[test]
fn every_example_passes_the_crd_schema() {
    let mut resources = 0;
    let mut passed = 0;
    for path in EXAMPLES {
        let docs = documents(path);
        resources += docs
            .iter()
            .filter(|d| kind(d).starts_with("Templar"))
            .count();
        passed += common::validate_custom_resources(&docs);
    }
    assert_eq!(resources, 10);
    assert_eq!(
        passed, resources,
        "every example resource passes the schema"
    );
}

#[test]
fn devnet_examples_pass_the_operators_validation() {
    // gpu-scheduling.yaml uses devnet.yaml's Secrets and ConfigMap.
    let devnet = documents("manifests/examples/devnet.yaml");
    let inputs = inputs_of(&devnet);
    let mut checked = 0;
    for path in [
        "manifests/examples/devnet.yaml",
        "manifests/examples/gpu-scheduling.yaml",
        "manifests/examples/kueue.yaml",
        "manifests/examples/volcano.yaml",
    ] {
        for (name, outcome) in validate_all(&documents(path), &inputs) {
            outcome.unwrap_or_else(|p| panic!("{path} {name} does not validate: {p:?}"));
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
    // The cluster suite's devnet, against its own Secrets and ConfigMap.
    let cluster = documents("e2e/cluster/devnet.yaml");
    for (name, outcome) in validate_all(&cluster, &inputs_of(&cluster)) {
        outcome.unwrap_or_else(|p| panic!("e2e/cluster/devnet.yaml {name}: {p:?}"));
    }
}

#[test]
fn bittensor_example_runs_on_the_subtensor_chain() {
    let docs = documents("manifests/examples/bittensor.yaml");
    let mut inputs = Inputs::default();
    for (secret, keys) in [
        ("r2-write", &["accessKeyId", "secretAccessKey"][..]),
        ("r2-read", &["accessKeyId", "secretAccessKey"][..]),
        ("miner-wallet", &["hotkey-0"][..]),
        ("validator-wallet", &["hotkey-0"][..]),
    ] {
        inputs
            .secrets
            .insert(secret.into(), keys.iter().map(|k| k.to_string()).collect());
    }
    let outcomes = validate_all(&docs, &inputs);
    assert_eq!(outcomes.len(), 2);
    for (name, outcome) in outcomes {
        outcome.unwrap_or_else(|p| panic!("manifests/examples/bittensor.yaml {name}: {p:?}"));
    }
}

#[test]
fn gitops_examples_point_at_the_kustomize_base() {
    let argo = documents("manifests/examples/gitops/argocd-application.yaml");
    let flux = documents("manifests/examples/gitops/flux-kustomization.yaml");
    let app = role(&argo, "Application", "templar-operator");
    let path = app["spec"]["source"]["path"].as_str().unwrap();
    assert_eq!(path, BASE);
    assert!(
        app["spec"]["syncPolicy"]["syncOptions"]
            .as_sequence()
            .unwrap()
            .contains(&Value::from("ServerSideApply=true")),
        "the CRDs are too large for client-side apply"
    );
    let ks = role(&flux, "Kustomization", "templar-operator");
    let flux_path = ks["spec"]["path"]
        .as_str()
        .unwrap()
        .trim_start_matches("./");
    assert_eq!(flux_path, BASE);
    let repo = role(&flux, "GitRepository", "templar-rs");
    assert_eq!(repo["spec"]["url"], app["spec"]["source"]["repoURL"]);
    assert_eq!(ks["spec"]["sourceRef"]["name"], "templar-rs");
    // The path they apply builds.
    assert!(repo_root().join(path).join("kustomization.yaml").exists());
    assert!(!kustomize(path).is_empty());
}

/// The scheduler examples reach the objects the schedulers read: Kueue's queue label on the
/// StatefulSet and its pods, Volcano's scheduler name and queue annotation on the pods.
#[test]
fn kueue_and_volcano_examples_reach_what_their_schedulers_read() {
    let built = |path: &str| {
        let doc = documents(path)
            .into_iter()
            .find(|d| kind(d) == "TemplarMiner")
            .unwrap();
        let mut cr: TemplarMiner = serde_yaml::from_value(doc).unwrap();
        cr.metadata.namespace = Some("train".into());
        cr.metadata.uid = Some("1".into());
        serde_json::to_value(statefulset(&common::miner_owner(&cr), "h")).unwrap()
    };
    let kueue = built("manifests/examples/kueue.yaml");
    let queue = "kueue.x-k8s.io/queue-name";
    assert_eq!(kueue["metadata"]["labels"][queue], "gpu");
    assert_eq!(
        kueue["spec"]["template"]["metadata"]["labels"][queue],
        "gpu"
    );
    let local = documents("manifests/examples/kueue.yaml");
    assert_eq!(
        role(&local, "LocalQueue", "gpu")["spec"]["clusterQueue"],
        "training"
    );
    let volcano = built("manifests/examples/volcano.yaml");
    let pod = &volcano["spec"]["template"];
    assert_eq!(pod["spec"]["schedulerName"], "volcano");
    assert_eq!(
        pod["metadata"]["annotations"]["scheduling.volcano.sh/queue-name"],
        "training"
    );
    // Labels of the pod template other than Kueue's stay off the StatefulSet.
    assert!(volcano["metadata"]["labels"].get(queue).is_none());
}
