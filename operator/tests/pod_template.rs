//! The node pod as built: the `restricted` Pod Security Standard, hyperparameters that roll
//! the pods when they change, GPU vendors, and the overrides users expect.

mod common;

use common::miner_owner;
use k8s_openapi::api::core::v1::PodSpec;
use templar_crds::TemplarMiner;
use templar_operator::build::{CONFIG_HASH_ANNOTATION, disruption_budget, statefulset};
use templar_operator::validate::{Inputs, ProblemReason, validate};

const MINIMAL: &str = r#"
apiVersion: templar.tplr.ai/v1alpha1
kind: TemplarMiner
metadata: {name: alpha, namespace: train, uid: 1111-2222}
spec:
  image: ghcr.io/templar-rs/node:0.1.0
  replicas: 2
  storage: {bucket: alpha-grads, writeSecret: alpha-s3}
  walletSecret: alpha-hotkeys
  hyperparameters: {inline: "[model]\nsize = \"tiny\"\n"}
"#;

fn miner(extra: &str) -> TemplarMiner {
    serde_yaml::from_str(&format!("{MINIMAL}{extra}")).unwrap()
}

fn pod(cr: &TemplarMiner) -> PodSpec {
    statefulset(&miner_owner(cr), "h")
        .spec
        .template
        .spec
        .unwrap()
}

fn inputs(secret_version: &str) -> Inputs {
    let mut i = Inputs::default();
    i.secrets.insert(
        "alpha-s3".into(),
        ["accessKeyId", "secretAccessKey"].map(String::from).into(),
    );
    i.secrets.insert(
        "alpha-hotkeys".into(),
        ["hotkey-0", "hotkey-1"].map(String::from).into(),
    );
    i.secret_versions
        .insert("alpha-s3".into(), secret_version.into());
    i.secret_versions.insert("alpha-hotkeys".into(), "7".into());
    i
}

/// The checks of the `restricted` profile (Kubernetes Pod Security Standards, v1.34) that a
/// pod spec can fail, each with the field it reads.
#[test]
fn node_pods_meet_the_restricted_pod_security_standard() {
    let p = pod(&miner(""));
    let psc = p.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_ne!(psc.run_as_user, Some(0));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert!(psc.fs_group.is_some(), "fsGroup keeps the wallet readable");
    assert_eq!(p.automount_service_account_token, Some(false));
    assert!(p.host_network.is_none() && p.host_pid.is_none() && p.host_ipc.is_none());
    for v in p.volumes.as_ref().unwrap() {
        assert!(
            v.host_path.is_none(),
            "restricted allows no hostPath: {}",
            v.name
        );
    }
    for c in &p.containers {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, None);
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert!(caps.add.is_none());
        assert!(c.ports.iter().flatten().all(|p| p.host_port.is_none()));
        // A read-only root: every path the node writes is a volume.
        let mounts: Vec<(&str, bool)> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.mount_path.as_str(), m.read_only == Some(true)))
            .collect();
        for writable in ["/tmp", "/dev/shm", "/var/cache/templar"] {
            assert!(
                mounts.contains(&(writable, false)),
                "{writable}: {mounts:?}"
            );
        }
        assert!(mounts.contains(&("/etc/templar/wallet", true)));
    }
    let shm = p
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "shm")
        .unwrap();
    let shm = shm.empty_dir.as_ref().unwrap();
    assert_eq!(shm.medium.as_deref(), Some("Memory"));
    assert_eq!(shm.size_limit.as_ref().unwrap().0, "2Gi");
}

#[test]
fn hyperparameters_are_a_refreshed_folder_and_changes_roll_the_pods() {
    let cr = miner("");
    let c = &pod(&cr).containers[0];
    for m in c.volume_mounts.iter().flatten() {
        assert!(m.sub_path.is_none(), "subPath never refreshes: {}", m.name);
    }
    let hparams = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "hparams")
        .unwrap();
    let args = c.args.as_ref().unwrap();
    let file = &args[args.iter().position(|a| a == "--hparams").unwrap() + 1];
    assert!(
        file.starts_with(&format!("{}/", hparams.mount_path)),
        "{file} inside {}",
        hparams.mount_path
    );

    let hash = |cr: &TemplarMiner, version: &str| {
        let valid = validate(&cr.spec.node, &inputs(version)).unwrap();
        let sts = statefulset(&miner_owner(cr), &valid.config_hash);
        sts.spec.template.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION].clone()
    };
    let base = hash(&cr, "1");
    assert_eq!(base, hash(&cr, "1"), "same inputs, same template");
    assert_ne!(base, hash(&cr, "2"), "a rotated S3 secret rolls the pods");
    let mut retuned = cr.clone();
    retuned.spec.node.hyperparameters.inline =
        Some("[model]\nsize = \"tiny\"\n\n[codec]\ntopk = 16\n".into());
    assert_ne!(
        base,
        hash(&retuned, "1"),
        "new hyperparameters roll the pods"
    );
}

#[test]
fn amd_gpus_use_their_resource_and_product_label() {
    let p = pod(&miner(
        "  resources: {gpus: 1, gpuVendor: amd, gpuType: AMD_Instinct_MI300X, cpu: 2}\n",
    ));
    let resources = p.containers[0].resources.as_ref().unwrap();
    assert_eq!(resources.limits.as_ref().unwrap()["amd.com/gpu"].0, "1");
    assert!(
        !resources
            .limits
            .as_ref()
            .unwrap()
            .contains_key("nvidia.com/gpu")
    );
    assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "2");
    assert_eq!(
        p.node_selector.as_ref().unwrap()["amd.com/gpu.product-name"],
        "AMD_Instinct_MI300X"
    );
}

#[test]
fn template_overrides_probes_and_grace_reach_the_pod() {
    let cr = miner(
        "  serviceAccountName: trainer\n  terminationGracePeriodSeconds: 600\n  startupDeadlineSeconds: 1200\n  podTemplate:\n    labels: {team: llm, app.kubernetes.io/name: hijack}\n    annotations: {prometheus.io/scrape: \"true\"}\n    runtimeClassName: nvidia\n    topologySpreadConstraints: [{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule}]\n  cache: {size: 10Gi, retention: {whenDeleted: Delete}}\n  disruptionBudget: {maxUnavailable: 1}\n",
    );
    let sts = statefulset(&miner_owner(&cr), "h");
    let meta = sts.spec.template.metadata.clone().unwrap();
    let labels = meta.labels.unwrap();
    assert_eq!(labels["team"], "llm");
    assert_eq!(
        labels["app.kubernetes.io/name"], "templar-node",
        "the selector labels win"
    );
    assert_eq!(meta.annotations.unwrap()["prometheus.io/scrape"], "true");
    let p = sts.spec.template.spec.clone().unwrap();
    assert_eq!(p.service_account_name.as_deref(), Some("trainer"));
    assert_eq!(p.automount_service_account_token, Some(false));
    assert_eq!(p.runtime_class_name.as_deref(), Some("nvidia"));
    assert_eq!(p.topology_spread_constraints.unwrap()[0].max_skew, 1);
    assert_eq!(p.termination_grace_period_seconds, Some(600));
    let startup = p.containers[0].startup_probe.as_ref().unwrap();
    assert_eq!(
        i64::from(startup.period_seconds.unwrap() * startup.failure_threshold.unwrap()),
        1200,
        "the startup probe allows the whole startup deadline"
    );
    assert!(
        p.volumes.iter().flatten().all(|v| v.name != "cache"),
        "the PVC is the cache"
    );
    let retention = sts.spec.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
    assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    let pdb = disruption_budget(&miner_owner(&cr)).unwrap().spec.unwrap();
    assert_eq!(
        pdb.selector.unwrap().match_labels,
        sts.spec.selector.match_labels
    );
    assert!(disruption_budget(&miner_owner(&miner(""))).is_none());
}

#[test]
fn without_a_write_secret_the_pods_use_their_service_account_credentials() {
    let mut cr = miner("  serviceAccountName: irsa-trainer\n");
    cr.spec.node.storage.write_secret = None;
    let env = pod(&cr).containers[0].env.clone().unwrap();
    assert!(env.iter().all(|e| !e.name.starts_with("AWS_")), "{env:?}");
    let mut i = inputs("1");
    i.secrets.remove("alpha-s3");
    assert!(validate(&cr.spec.node, &i).is_ok());
}

#[test]
fn a_user_env_var_the_operator_sets_is_a_spec_problem() {
    let cr = miner("  env: [{name: AWS_SECRET_ACCESS_KEY, value: oops}]\n");
    let p = validate(&cr.spec.node, &inputs("1")).unwrap_err();
    assert_eq!(p.reason, ProblemReason::InvalidSpec);
    assert!(p.message.contains("AWS_SECRET_ACCESS_KEY"), "{}", p.message);
    let fine = miner("  env: [{name: RUST_LOG, value: debug}]\n");
    assert!(validate(&fine.spec.node, &inputs("1")).is_ok());
}
