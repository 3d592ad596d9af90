//! The Helm charts, rendered and linted by Helm's own engine (helm-python-sdk), for the
//! default values and every values file under `ci/`: the objects pass
//! `kubernetes-validate --strict`, the templar resources pass the CRD schema and the
//! operator's validation, RBAC grants exactly the calls the operator makes, the CRDs are
//! the generated ones, the versions follow the workspace, and alerts and dashboard read
//! metrics that exist.

mod common;

use common::rbac::{LEASE_NEEDED, NEEDED, assert_exactly, grants, role, set};
use common::{
    documents, helm_lint, helm_render, helm_render_error, helm_value_leaves, is_built_in, kind,
    repo_root, validate_all, validate_built_in, validate_custom_resources,
};
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use templar_crds::TemplarMiner;
use templar_operator::metrics::{Metrics, ResourceState};
use templar_operator::validate::Inputs;

const OPERATOR: &str = "charts/templar-operator";
const NETWORK: &str = "charts/templar-network";

/// The values files a chart is tested with (Helm's `ci/` convention).
fn values_files(chart: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join(chart).join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "{chart}/ci has {} values files",
        files.len()
    );
    files
}

fn name_of(v: &Path) -> String {
    v.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
fn charts_lint_clean_and_render_valid_objects() {
    let mut total = 0;
    for chart in [OPERATOR, NETWORK] {
        for values in values_files(chart) {
            let findings = helm_lint(chart, &values);
            assert!(findings.is_empty(), "{chart} {values:?}: {findings:?}");
            let docs = helm_render(chart, Some(&values), "templar-system");
            let label = format!("{}-{}", chart.replace('/', "_"), name_of(&values));
            total += validate_built_in(&docs, &label);
            let templar = docs
                .iter()
                .filter(|d| kind(d).starts_with("Templar"))
                .count();
            assert_eq!(validate_custom_resources(&docs), templar, "{label}");
            // The rest are the Prometheus Operator's kinds (checked below).
            for d in docs
                .iter()
                .filter(|d| !is_built_in(d) && !kind(d).starts_with("Templar"))
            {
                assert_eq!(
                    d["apiVersion"], "monitoring.coreos.com/v1",
                    "{label}: {d:?}"
                );
            }
        }
    }
    assert!(total >= 30, "{total} built-in objects rendered");
}

#[test]
fn operator_chart_defaults_are_least_privilege_and_restricted() {
    let docs = helm_render(OPERATOR, None, "templar-system");
    let kinds: BTreeSet<&str> = docs.iter().map(kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]),
        "optional objects stay off by default"
    );
    let cluster = grants(role(&docs, "ClusterRole", "templar-templar-operator"));
    assert_exactly(&cluster, &set(NEEDED), "the chart's ClusterRole");
    let lease = grants(role(
        &docs,
        "Role",
        "templar-templar-operator-leader-election",
    ));
    assert_exactly(
        &lease,
        &set(LEASE_NEEDED),
        "the chart's leader-election Role",
    );

    let deployment = role(&docs, "Deployment", "templar-templar-operator");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    // Two replicas: a budget keeps one up through a drain, and they prefer two nodes.
    let pods = &deployment["spec"]["selector"]["matchLabels"];
    let pdb = role(&docs, "PodDisruptionBudget", "templar-templar-operator");
    assert_eq!(
        (
            &pdb["spec"]["maxUnavailable"],
            &pdb["spec"]["selector"]["matchLabels"]
        ),
        (&Value::from(1), pods)
    );
    let anti = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(&anti["labelSelector"]["matchLabels"], pods);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["limits"]["memory"].is_string());
    // Images default to the chart's appVersion; leader election on with two replicas.
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        c["image"],
        format!("ghcr.io/templar-rs/templar-operator:{version}").as_str()
    );
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "run");
    assert!(
        args.contains(&"--lease-name=templar-templar-operator"),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "{args:?}"
    );
}

#[test]
fn a_single_operator_replica_gets_no_budget_and_no_anti_affinity() {
    let values = repo_root()
        .join(OPERATOR)
        .join("ci/single-replica-values.yaml");
    let docs = helm_render(OPERATOR, Some(&values), "templar-system");
    assert!(!docs.iter().any(|d| kind(d) == "PodDisruptionBudget"));
    let deployment = role(&docs, "Deployment", "templar-templar-operator");
    assert!(deployment["spec"]["template"]["spec"]["affinity"].is_null());
}

#[test]
fn operator_chart_namespaced_mode_grants_nothing_cluster_wide() {
    let values = repo_root().join(OPERATOR).join("ci/namespaced-values.yaml");
    let docs = helm_render(OPERATOR, Some(&values), "templar-system");
    assert!(
        docs.iter()
            .all(|d| !["ClusterRole", "ClusterRoleBinding"].contains(&kind(d)))
    );
    for ns in ["train", "research"] {
        let scoped = docs
            .iter()
            .find(|d| kind(d) == "Role" && d["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no Role in {ns}"));
        assert_exactly(&grants(scoped), &set(NEEDED), ns);
        let binding = docs
            .iter()
            .find(|d| kind(d) == "RoleBinding" && d["metadata"]["namespace"] == ns)
            .unwrap();
        assert_eq!(binding["subjects"][0]["namespace"], "templar-system");
    }
    let deployment = role(&docs, "Deployment", "templar-templar-operator");
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    for ns in ["train", "research"] {
        assert!(
            args.as_sequence()
                .unwrap()
                .contains(&Value::from(format!("--namespace={ns}"))),
            "{args:?}"
        );
    }
}

/// The upgrade step README documents applies the CRDs this build generates.
#[test]
fn the_documented_crd_upgrade_applies_the_current_crds() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let command = "kubectl apply --server-side --force-conflicts -f ";
    let path = readme
        .lines()
        .find_map(|l| l.strip_prefix(command))
        .expect("README documents the CRD upgrade command")
        .trim();
    let applied = std::fs::read_to_string(repo_root().join(path)).unwrap();
    assert_eq!(
        applied,
        templar_crds::crds_yaml(),
        "{path} is not the generated CRDs: run `make crds`"
    );
}

#[test]
fn chart_crds_are_the_generated_ones() {
    let generated = std::fs::read(repo_root().join("crds/templar.tplr.ai.yaml")).unwrap();
    let in_chart =
        std::fs::read(repo_root().join(OPERATOR).join("crds/templar.tplr.ai.yaml")).unwrap();
    assert!(
        generated == in_chart,
        "charts/templar-operator/crds is stale: run `make crds`"
    );
}

#[test]
fn chart_versions_follow_the_workspace() {
    let version = env!("CARGO_PKG_VERSION");
    for chart in [OPERATOR, NETWORK] {
        let meta = &documents(&format!("{chart}/Chart.yaml"))[0];
        assert_eq!(meta["version"], version, "{chart}");
        assert_eq!(meta["appVersion"], version, "{chart}");
    }
    let docs = helm_render(
        NETWORK,
        Some(&repo_root().join(NETWORK).join("ci/devnet-values.yaml")),
        "train",
    );
    let miner = docs.iter().find(|d| kind(d) == "TemplarMiner").unwrap();
    assert_eq!(
        miner["spec"]["image"],
        format!("ghcr.io/templar-rs/templar-node:{version}").as_str()
    );
}

#[test]
fn network_chart_makes_resources_the_operator_accepts() {
    for values in values_files(NETWORK) {
        let docs = helm_render(NETWORK, Some(&values), "train");
        // Secrets the chart makes, plus the ones a values file names as existing.
        let mut inputs = Inputs::default();
        for d in docs.iter().filter(|d| kind(d) == "Secret") {
            let keys = d["stringData"]
                .as_mapping()
                .unwrap()
                .keys()
                .map(|k| k.as_str().unwrap().to_string())
                .collect();
            inputs
                .secrets
                .insert(d["metadata"]["name"].as_str().unwrap().into(), keys);
        }
        for d in docs.iter().filter(|d| kind(d).starts_with("Templar")) {
            let replicas = d["spec"]["replicas"].as_i64().unwrap();
            let wallet = d["spec"]["walletSecret"].as_str().unwrap().to_string();
            inputs
                .secrets
                .entry(wallet)
                .or_insert_with(|| (0..replicas).map(|i| format!("hotkey-{i}")).collect());
            for key in ["writeSecret", "readSecret"] {
                if let Some(name) = d["spec"]["storage"][key].as_str() {
                    inputs.secrets.entry(name.into()).or_insert_with(|| {
                        BTreeSet::from(["accessKeyId".into(), "secretAccessKey".into()])
                    });
                }
            }
        }
        let outcomes = validate_all(&docs, &inputs);
        for (name, outcome) in &outcomes {
            outcome
                .as_ref()
                .unwrap_or_else(|p| panic!("{values:?} {name}: {p:?}"));
        }
        let checked = outcomes.len();
        assert!(checked >= 1, "{values:?}");
    }
}

fn leaf_list(report: &serde_json::Value, key: &str) -> BTreeSet<String> {
    match &report[key] {
        serde_json::Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().into()).collect(),
        serde_json::Value::Object(o) => o.keys().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

#[test]
fn every_chart_value_takes_effect_or_is_refused_with_a_reason() {
    // The network chart: every leaf, changed alone over the quick start's values, changes
    // the rendered objects or is refused by the schema or a template's check.
    let values = repo_root().join(NETWORK).join("ci/devnet-values.yaml");
    let report = helm_value_leaves(NETWORK, Some(&values));
    let checked = leaf_list(&report, "checked");
    assert!(
        leaf_list(&report, "ignored").is_empty(),
        "values no template reads: {report}"
    );
    for leaf in [
        "model",
        "validator.maxUnavailable",
        "validator.tolerations",
        "miner.maxUnavailable",
    ] {
        assert!(checked.contains(leaf), "{leaf}: {report}");
    }
    assert!(checked.len() >= 35, "{report}");
    // The operator chart: features are off by default, so a leaf counts when it takes
    // effect under one of the ci/ values files.
    let mut ignored_everywhere: Option<BTreeSet<String>> = None;
    for values in values_files(OPERATOR) {
        let ignored = leaf_list(&helm_value_leaves(OPERATOR, Some(&values)), "ignored");
        ignored_everywhere = Some(match ignored_everywhere {
            None => ignored,
            Some(before) => before.intersection(&ignored).cloned().collect(),
        });
    }
    assert_eq!(ignored_everywhere, Some(BTreeSet::new()));
}

#[test]
fn a_model_set_in_two_places_is_refused() {
    let error = helm_render_error(
        NETWORK,
        "storage: {bucket: b1b, writeSecret: w}\nvalidator: {walletSecret: v}\nminer: {walletSecret: m}\nmodel: tiny\nhyperparameters: \"[model]\\nsize = 'small'\\n\"",
    );
    assert!(error.contains("the model is set in two places"), "{error}");
    // The operator refuses the same in a resource made without the chart.
    let docs = helm_render(
        NETWORK,
        Some(&repo_root().join(NETWORK).join("ci/devnet-values.yaml")),
        "train",
    );
    let mut miner: TemplarMiner = serde_yaml::from_value(
        docs.iter()
            .find(|d| kind(d) == "TemplarMiner")
            .unwrap()
            .clone(),
    )
    .unwrap();
    assert_eq!(miner.spec.node.model.as_deref(), Some("small"));
    let both = "[model]\nsize = \"tiny\"\n";
    miner.spec.node.hyperparameters.inline = Some(both.into());
    let problem = templar_operator::validate::render_hparams(&miner.spec.node, both).unwrap_err();
    assert!(problem.message.contains("two places"), "{problem:?}");
}

#[test]
fn bad_values_are_refused_with_a_reason() {
    for (chart, values, says) in [
        (OPERATOR, "replicas: 0", "minimum"),
        (OPERATOR, "replica: 2", "additional properties"),
        (
            OPERATOR,
            "leaderElection: {enabled: false}",
            "replicas > 1 needs leaderElection.enabled",
        ),
        (OPERATOR, "watchNamespaces: [Train]", "pattern"),
        (NETWORK, "storage: {bucket: ''}", "/storage/bucket"),
        (
            NETWORK,
            "storage: {bucket: b1b, writeSecret: w}\nchain: {kind: subtensor}",
            "netuid",
        ),
        (
            NETWORK,
            "storage: {bucket: b1b}",
            "storage.writeSecret is required",
        ),
        (
            NETWORK,
            "storage: {bucket: b1b}\nsecrets: {create: true, s3: {accessKeyId: a, secretAccessKey: b}}\nminer: {replicas: 4}",
            "miner.hotkeys needs one hotkey per replica",
        ),
    ] {
        let error = helm_render_error(chart, values);
        assert!(error.contains(says), "{chart} with {values:?}: {error}");
    }
}

/// `templar_...` metric names in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("templar_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            into.insert(expr[start..end].to_string());
        }
        i = end;
    }
}

#[test]
fn alerts_and_dashboard_read_metrics_that_exist() {
    let values = repo_root().join(OPERATOR).join("ci/monitoring-values.yaml");
    let docs = helm_render(OPERATOR, Some(&values), "templar-system");
    let mut used = BTreeSet::new();
    let rule = docs.iter().find(|d| kind(d) == "PrometheusRule").unwrap();
    let alerts: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| {
            metric_names(r["expr"].as_str().unwrap(), &mut used);
            r["alert"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        alerts,
        [
            "TemplarOperatorDown",
            "TemplarResourceDegraded",
            "TemplarWindowNotAdvancing"
        ]
    );
    let dashboard = docs.iter().find(|d| kind(d) == "ConfigMap").unwrap();
    let json: serde_json::Value =
        serde_json::from_str(dashboard["data"]["templar.json"].as_str().unwrap()).unwrap();
    for panel in json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            metric_names(target["expr"].as_str().unwrap(), &mut used);
        }
    }
    assert!(used.len() >= 15, "{used:?}");

    // What the operator exports (every family present once something was recorded) and what
    // the node serves (its gauges are named by string literals in the status server).
    let m = Metrics::new();
    m.reconciled(
        "TemplarMiner",
        std::time::Duration::from_millis(1),
        Some("api"),
    );
    let state = ResourceState {
        ready: true,
        degraded: false,
        window: Some(1),
    };
    m.observe_resource("TemplarMiner", "ns", "a", state);
    for record in [
        Metrics::applied,
        Metrics::watch_error,
        Metrics::invalid_object,
    ] {
        record(&m, "TemplarMiner");
    }
    m.status_written("TemplarMiner", true);
    m.status_written("TemplarMiner", false);
    let exported = m.encode();
    let node_source =
        std::fs::read_to_string(repo_root().join("node/src/cli/status_server.rs")).unwrap();
    for name in &used {
        let found = if name.starts_with("templar_operator_") {
            exported.contains(&format!("\n{name}{{")) || exported.contains(&format!("\n{name} "))
        } else {
            node_source.contains(&format!("\"{name}\""))
        };
        assert!(
            found,
            "{name} is not a metric the operator or the node exports"
        );
    }
    let servicemonitors: Vec<&Value> = docs
        .iter()
        .filter(|d| kind(d) == "ServiceMonitor")
        .collect();
    assert_eq!(servicemonitors.len(), 2);
    // The series keep the resource's own namespace label (without honorLabels Prometheus
    // overwrites it with the operator's namespace), and every alert and panel on a
    // resource's series groups by it.
    for sm in &servicemonitors {
        assert_eq!(sm["spec"]["endpoints"][0]["honorLabels"], true, "{sm:?}");
    }
    let mut exprs: Vec<String> = rule["spec"]["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect();
    for panel in json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for expr in exprs
        .iter()
        .filter(|e| e.contains("templar_operator_resource_"))
    {
        for grouping in expr.split(" by (").skip(1) {
            let labels = grouping.split(')').next().unwrap();
            assert!(
                labels.split(',').any(|l| l.trim() == "namespace"),
                "{expr}: groups resources of different namespaces together"
            );
        }
    }
    // The nodes' ServiceMonitor selects the operator's metrics Services by their labels and
    // port name.
    let nodes = servicemonitors
        .iter()
        .find(|d| d["spec"]["endpoints"][0]["port"] == "metrics")
        .unwrap();
    let cr: TemplarMiner = serde_yaml::from_str(
        "apiVersion: templar.tplr.ai/v1alpha1\nkind: TemplarMiner\nmetadata: {name: m, namespace: ns, uid: u1}\nspec: {image: i, replicas: 1, storage: {bucket: b, writeSecret: w}, walletSecret: k}",
    )
    .unwrap();
    let service = templar_operator::build::metrics_service(&common::miner_owner(&cr));
    let labels = service.metadata.labels.unwrap();
    for (k, v) in nodes["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(
            labels.get(k.as_str().unwrap()).map(String::as_str),
            v.as_str(),
            "{k:?}"
        );
    }
    let port = &service.spec.unwrap().ports.unwrap()[0];
    assert_eq!(port.name.as_deref(), Some("metrics"));
}
