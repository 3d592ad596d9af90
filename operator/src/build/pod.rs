//! The StatefulSet and its pod template: the node container, its volumes, and a pod that
//! meets the `restricted` Pod Security Standard.

use super::{Owner, STATUS_PORT, sizing};
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, LocalObjectReference, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use templar_crds::resources::{ChainKind, ChainSpec};
use templar_protocol::chain::devnet;
use templar_protocol::node_status::NodeRole;

/// The hyperparameters ConfigMap is mounted as a folder (no `subPath`), so the kubelet
/// refreshes it; a change also rolls the pods through [`CONFIG_HASH_ANNOTATION`].
const HPARAMS_DIR: &str = "/etc/templar/hparams";
const HPARAMS_FILE: &str = "/etc/templar/hparams/hparams.toml";
/// The node container's wallet: a memory-backed folder holding only its own
/// `hotkey-<ordinal>`, copied there by the `wallet` init container from the wallet Secret
/// (mounted in the init container only, at [`WALLETS_PATH`]).
const WALLET_PATH: &str = "/etc/templar/wallet";
const WALLETS_PATH: &str = "/etc/templar/wallets";
const CACHE_PATH: &str = "/var/cache/templar";

/// Pod template annotation: a digest of the hyperparameters file and the referenced secrets'
/// versions. A change rolls the StatefulSet.
pub const CONFIG_HASH_ANNOTATION: &str = "templar.tplr.ai/config-hash";

/// The unprivileged user and group of the node image (distroless `nonroot`).
const NODE_USER: i64 = 65532;

/// Environment variables the operator sets; a user `env` entry may not redefine them.
pub const OPERATOR_ENV: &[&str] = &[
    "TEMPLAR_S3_BUCKET",
    "TEMPLAR_S3_ENDPOINT",
    "TEMPLAR_S3_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "TEMPLAR_S3_READ_ACCESS_KEY_ID",
    "TEMPLAR_S3_READ_SECRET_ACCESS_KEY",
    "POD_NAME",
    "HOME",
];

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(STATUS_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// Devnet block time used when a validator creates the chain (Bittensor's 12 s).
const DEVNET_BLOCK_MS: &str = "12000";

/// `templar-node run` arguments: the hotkey comes from the wallet secret entry of the pod's
/// ordinal; payloads live in the S3 bucket. On the devnet the chain state lives there too and
/// validators create it when it does not exist yet; on subtensor the node connects to the
/// endpoint and signs with the hotkey keyfile. The device is explicit: a pod given GPUs
/// fails at start when it cannot use them instead of training on the CPU.
fn node_args(role: NodeRole, chain: &ChainSpec, gpus: i32) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--role",
        role.as_str(),
        "--wallet",
        WALLET_PATH,
        "--hparams",
        HPARAMS_FILE,
        "--store",
        "s3",
        "--listen",
    ]
    .map(String::from)
    .into();
    args.push(format!("0.0.0.0:{STATUS_PORT}"));
    let device = if gpus > 0 { "cuda" } else { "cpu" };
    args.extend(["--device".into(), device.into()]);
    if chain.kind == ChainKind::Subtensor {
        args.extend(["--chain".into(), "subtensor".into()]);
        args.extend([
            "--endpoint".into(),
            chain.endpoint.clone().unwrap_or_default(),
        ]);
        args.extend([
            "--netuid".into(),
            chain.netuid.unwrap_or_default().to_string(),
        ]);
        if let Some(key) = chain.version_key {
            args.extend(["--version-key".into(), key.to_string()]);
        }
        return args;
    }
    args.extend(["--devnet".into(), "s3".into()]);
    if role == NodeRole::Validator {
        args.push("--stake".into());
        args.push(devnet::stake_for(role).to_string());
        args.push("--init-devnet-block-ms".into());
        args.push(DEVNET_BLOCK_MS.into());
    }
    args
}

fn env(o: &Owner) -> Vec<EnvVar> {
    let s = o.spec;
    let mut env = vec![
        plain_env("TEMPLAR_S3_BUCKET", &s.storage.bucket),
        // The root is read-only: caches that libraries keep under $HOME (CUDA kernels) go to
        // the writable scratch volume.
        plain_env("HOME", "/tmp"),
        pod_name_env(),
    ];
    // Without a write secret the AWS SDK finds credentials itself (IRSA, workload identity).
    if let Some(write) = &s.storage.write_secret {
        env.push(secret_env("AWS_ACCESS_KEY_ID", write, "accessKeyId"));
        env.push(secret_env(
            "AWS_SECRET_ACCESS_KEY",
            write,
            "secretAccessKey",
        ));
    }
    if let Some(e) = &s.storage.endpoint {
        env.push(plain_env("TEMPLAR_S3_ENDPOINT", e));
    }
    if let Some(r) = &s.storage.region {
        env.push(plain_env("TEMPLAR_S3_REGION", r));
    }
    if let Some(read) = &s.storage.read_secret {
        env.push(secret_env(
            "TEMPLAR_S3_READ_ACCESS_KEY_ID",
            read,
            "accessKeyId",
        ));
        env.push(secret_env(
            "TEMPLAR_S3_READ_SECRET_ACCESS_KEY",
            read,
            "secretAccessKey",
        ));
    }
    env.extend(s.env.iter().cloned());
    env
}

fn resources(o: &Owner) -> ResourceRequirements {
    let r = &o.spec.resources;
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    if r.gpus > 0 {
        limits.insert(
            r.gpu_vendor.resource_name().to_string(),
            Quantity(r.gpus.to_string()),
        );
    }
    // Never BestEffort: the preset's needs where the spec gives none, `/dev/shm` (charged
    // to the container's memory) inside the memory limit, and `/tmp`'s scratch space.
    requests.insert("cpu".to_string(), sizing::cpu_request(o.spec));
    let memory = sizing::memory(o.spec);
    requests.insert("memory".to_string(), memory.clone());
    limits.insert("memory".to_string(), memory);
    requests.insert(
        "ephemeral-storage".to_string(),
        Quantity(sizing::TMP_SIZE.into()),
    );
    ResourceRequirements {
        limits: (!limits.is_empty()).then_some(limits),
        requests: (!requests.is_empty()).then_some(requests),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// The node container: S3 credentials from the secrets, the wallet and hyperparameters
/// mounted read-only, writable paths as volumes, a read-only root, no privileges.
fn container(o: &Owner) -> Container {
    // The slow first model load: the startup probe allows the whole startup deadline before
    // liveness takes over.
    let startup_failures = (o.spec.startup_deadline_seconds / 10).clamp(3, i64::from(i32::MAX));
    Container {
        name: "node".into(),
        image: Some(o.spec.image.clone()),
        image_pull_policy: o.spec.image_pull_policy.clone(),
        args: Some(node_args(o.role, &o.spec.chain, o.spec.resources.gpus)),
        env: Some(env(o)),
        ports: Some(vec![ContainerPort {
            name: Some("status".into()),
            container_port: STATUS_PORT,
            ..Default::default()
        }]),
        resources: Some(resources(o)),
        // A node that exits on a start-up error (no GPU, an old driver) says why in its last
        // log lines: they become the termination message the operator shows.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        startup_probe: Some(probe("/healthz", 10, startup_failures as i32)),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        readiness_probe: Some(probe("/readyz", 10, 3)),
        volume_mounts: Some(vec![
            mount("hparams", HPARAMS_DIR, true),
            mount("wallet", WALLET_PATH, true),
            mount("cache", CACHE_PATH, false),
            mount("tmp", "/tmp", false),
            mount("shm", "/dev/shm", false),
        ]),
        security_context: Some(restricted_container_context()),
        ..Default::default()
    }
}

fn pod_name_env() -> EnvVar {
    EnvVar {
        name: "POD_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn restricted_container_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The init container that gives the node its own key only: it mounts the whole wallet
/// Secret, checks the pod's `hotkey-<ordinal>` entry and copies it into the memory-backed
/// `wallet` volume that the node container mounts (`templar-node wallet --copy-to`).
fn wallet_init_container(o: &Owner) -> Container {
    let memory = Quantity("256Mi".into());
    Container {
        name: "wallet".into(),
        image: Some(o.spec.image.clone()),
        image_pull_policy: o.spec.image_pull_policy.clone(),
        args: Some(
            ["wallet", "--wallet", WALLETS_PATH, "--copy-to", WALLET_PATH]
                .map(String::from)
                .into(),
        ),
        env: Some(vec![pod_name_env()]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("50m".into())),
                ("memory".to_string(), memory.clone()),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), memory)])),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(vec![
            mount("wallets", WALLETS_PATH, true),
            mount("wallet", WALLET_PATH, false),
        ]),
        security_context: Some(restricted_container_context()),
        ..Default::default()
    }
}

fn empty_dir(name: &str, medium: Option<&str>, size: Option<Quantity>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(String::from),
            size_limit: size,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn volumes(o: &Owner) -> Vec<Volume> {
    let s = o.spec;
    let mut volumes = vec![
        Volume {
            name: "hparams".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: o.object_name(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "wallets".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(s.wallet_secret.clone()),
                // Group-readable: the pod's fsGroup owns it, the init container runs in it.
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        },
        // The node's own key only; in memory, never on the node's disk.
        empty_dir("wallet", Some("Memory"), Some(Quantity("1Mi".into()))),
        empty_dir("tmp", None, Some(Quantity(sizing::TMP_SIZE.into()))),
        empty_dir("shm", Some("Memory"), Some(sizing::shm(s))),
    ];
    // Without a persistent cache the cache path is scratch space.
    if s.cache.is_none() {
        volumes.push(empty_dir("cache", None, None));
    }
    volumes
}

fn pod_spec(o: &Owner) -> PodSpec {
    let s = o.spec;
    let mut node_selector = s.node_selector.clone();
    if let Some(t) = &s.resources.gpu_type {
        node_selector.insert(s.resources.gpu_vendor.product_label().into(), t.clone());
    }
    let overrides = &s.pod_template;
    PodSpec {
        init_containers: Some(vec![wallet_init_container(o)]),
        containers: vec![container(o)],
        volumes: Some(volumes(o)),
        node_selector: (!node_selector.is_empty()).then_some(node_selector),
        tolerations: (!s.tolerations.is_empty()).then(|| s.tolerations.clone()),
        affinity: s.affinity.clone(),
        priority_class_name: s.priority_class_name.clone(),
        scheduler_name: s.scheduler_name.clone(),
        service_account_name: s.service_account_name.clone(),
        // The nodes never call the Kubernetes API.
        automount_service_account_token: Some(false),
        runtime_class_name: overrides.runtime_class_name.clone(),
        topology_spread_constraints: (!overrides.topology_spread_constraints.is_empty())
            .then(|| overrides.topology_spread_constraints.clone()),
        termination_grace_period_seconds: Some(s.termination_grace_period_seconds),
        image_pull_secrets: (!s.image_pull_secrets.is_empty()).then(|| {
            s.image_pull_secrets
                .iter()
                .map(|n| LocalObjectReference { name: n.clone() })
                .collect()
        }),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NODE_USER),
            run_as_group: Some(NODE_USER),
            fs_group: Some(NODE_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_metadata(o: &Owner, config_hash: &str) -> ObjectMeta {
    let overrides = &o.spec.pod_template;
    // The operator's labels win: they are the StatefulSet's selector.
    let mut labels = overrides.labels.clone();
    labels.extend(o.labels());
    let mut annotations = overrides.annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.into(), config_hash.into());
    ObjectMeta {
        labels: Some(labels),
        annotations: Some(annotations),
        ..Default::default()
    }
}

fn cache_claims(o: &Owner) -> Option<Vec<PersistentVolumeClaim>> {
    let c = o.spec.cache.as_ref()?;
    Some(vec![PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("cache".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: c.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), c.size.clone())])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }])
}

/// Labels of Kueue (`kueue.x-k8s.io/queue-name`, `.../priority-class`) that the spec's pod
/// template gives: they go on the StatefulSet as well as the pods.
pub const KUEUE_LABEL_PREFIX: &str = "kueue.x-k8s.io/";

/// The StatefulSet: one pod per node identity; `config_hash` rolls it when the
/// hyperparameters or the referenced secrets change.
pub fn statefulset(o: &Owner, config_hash: &str) -> StatefulSet {
    let s = o.spec;
    let mut metadata = o.meta(o.object_name());
    // Kueue admits a StatefulSet by the queue labels on the set itself (its StatefulSet
    // integration gates the pods until the workload is admitted).
    let queue_labels = s
        .pod_template
        .labels
        .iter()
        .filter(|(k, _)| k.starts_with(KUEUE_LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()));
    metadata.labels.get_or_insert_default().extend(queue_labels);
    StatefulSet {
        metadata,
        spec: StatefulSetSpec {
            replicas: Some(if s.suspend { 0 } else { s.replicas }),
            service_name: Some(o.object_name()),
            selector: LabelSelector {
                match_labels: Some(o.labels()),
                ..Default::default()
            },
            // Replicas are independent identities: start and replace them in parallel.
            pod_management_policy: Some("Parallel".into()),
            template: PodTemplateSpec {
                metadata: Some(pod_metadata(o, config_hash)),
                spec: Some(pod_spec(o)),
            },
            volume_claim_templates: cache_claims(o),
            persistent_volume_claim_retention_policy: s.cache.as_ref().map(|c| {
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(c.retention.when_deleted.as_str().into()),
                    when_scaled: Some(c.retention.when_scaled.as_str().into()),
                }
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}
