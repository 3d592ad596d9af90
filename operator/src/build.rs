//! Pure builders: from a custom resource to its StatefulSet, headless Service and
//! hyperparameters ConfigMap. No I/O, so they are unit-tested from YAML resources.

use crate::validate::Validated;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, LocalObjectReference,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SecretKeySelector, SecretVolumeSource, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use templar_crds::{API_GROUP, API_VERSION, NodeRole, NodeSpec};
use templar_protocol::chain::devnet;

/// The node's HTTP port (/healthz, /readyz, /status, /metrics).
pub const STATUS_PORT: i32 = 9100;
const HPARAMS_PATH: &str = "/etc/templar/hparams.toml";
const WALLET_PATH: &str = "/etc/templar/wallet";
const CACHE_PATH: &str = "/var/cache/templar";

/// What the builders need to know about the resource.
#[derive(Debug, Clone)]
pub struct Owner<'a> {
    /// `TemplarMiner` or `TemplarValidator`.
    pub kind: &'a str,
    pub role: NodeRole,
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub spec: &'a NodeSpec,
}

impl Owner<'_> {
    /// Name shared by the StatefulSet, Service and ConfigMap.
    pub fn object_name(&self) -> String {
        format!("{}-{}", self.name, self.role)
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".into(), "templar-node".into()),
            ("app.kubernetes.io/instance".into(), self.name.into()),
            (
                "app.kubernetes.io/component".into(),
                self.role.as_str().into(),
            ),
            (
                "app.kubernetes.io/managed-by".into(),
                "templar-operator".into(),
            ),
        ])
    }

    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.into()),
            labels: Some(self.labels()),
            owner_references: Some(vec![OwnerReference {
                api_version: format!("{API_GROUP}/{API_VERSION}"),
                kind: self.kind.into(),
                name: self.name.into(),
                uid: self.uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        }
    }
}

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
/// ordinal; chain state and payloads live in the S3 bucket; validators create the devnet
/// chain when it does not exist yet and miners wait for it.
fn node_args(role: NodeRole) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--role",
        role.as_str(),
        "--wallet",
        WALLET_PATH,
        "--hparams",
        HPARAMS_PATH,
        "--devnet",
        "s3",
        "--store",
        "s3",
        "--listen",
    ]
    .map(String::from)
    .into();
    args.push(format!("0.0.0.0:{STATUS_PORT}"));
    if role == NodeRole::Validator {
        args.push("--stake".into());
        args.push(devnet::stake_for(role).to_string());
        args.push("--init-devnet-block-ms".into());
        args.push(DEVNET_BLOCK_MS.into());
    }
    args
}

/// The node container: S3 credentials from the secrets, the wallet mounted, the
/// hyperparameters mounted, probes on the status port.
fn container(o: &Owner) -> Container {
    let s = o.spec;
    let mut env = vec![
        plain_env("TEMPLAR_S3_BUCKET", &s.storage.bucket),
        secret_env("AWS_ACCESS_KEY_ID", &s.storage.write_secret, "accessKeyId"),
        secret_env(
            "AWS_SECRET_ACCESS_KEY",
            &s.storage.write_secret,
            "secretAccessKey",
        ),
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
        },
    ];
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

    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    if s.resources.gpus > 0 {
        limits.insert(
            "nvidia.com/gpu".to_string(),
            Quantity(s.resources.gpus.to_string()),
        );
    }
    if let Some(cpu) = &s.resources.cpu {
        requests.insert("cpu".to_string(), Quantity(cpu.clone()));
    }
    if let Some(mem) = &s.resources.memory {
        requests.insert("memory".to_string(), Quantity(mem.clone()));
        limits.insert("memory".to_string(), Quantity(mem.clone()));
    }
    let mut mounts = vec![
        VolumeMount {
            name: "hparams".into(),
            mount_path: HPARAMS_PATH.into(),
            sub_path: Some("hparams.toml".into()),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "wallet".into(),
            mount_path: WALLET_PATH.into(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    if s.cache.is_some() {
        mounts.push(VolumeMount {
            name: "cache".into(),
            mount_path: CACHE_PATH.into(),
            ..Default::default()
        });
    }
    Container {
        name: "node".into(),
        image: Some(s.image.clone()),
        image_pull_policy: s.image_pull_policy.clone(),
        args: Some(node_args(o.role)),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("status".into()),
            container_port: STATUS_PORT,
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            limits: (!limits.is_empty()).then_some(limits),
            requests: (!requests.is_empty()).then_some(requests),
            ..Default::default()
        }),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        readiness_probe: Some(probe("/readyz", 10, 3)),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

pub fn statefulset(o: &Owner) -> StatefulSet {
    let s = o.spec;
    let mut node_selector = s.node_selector.clone();
    if let Some(t) = &s.resources.gpu_type {
        node_selector.insert("nvidia.com/gpu.product".into(), t.clone());
    }
    let volumes = vec![
        Volume {
            name: "hparams".into(),
            config_map: Some(k8s_openapi::api::core::v1::ConfigMapVolumeSource {
                name: o.object_name(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "wallet".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(s.wallet_secret.clone()),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let claims = s.cache.as_ref().map(|c| {
        vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("cache".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: c.storage_class.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".into(),
                        Quantity(c.size.clone()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });
    StatefulSet {
        metadata: o.meta(o.object_name()),
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
                metadata: Some(ObjectMeta {
                    labels: Some(o.labels()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(o)],
                    volumes: Some(volumes),
                    node_selector: (!node_selector.is_empty()).then_some(node_selector),
                    tolerations: (!s.tolerations.is_empty()).then(|| s.tolerations.clone()),
                    affinity: s.affinity.clone(),
                    priority_class_name: s.priority_class_name.clone(),
                    image_pull_secrets: (!s.image_pull_secrets.is_empty()).then(|| {
                        s.image_pull_secrets
                            .iter()
                            .map(|n| LocalObjectReference { name: n.clone() })
                            .collect()
                    }),
                    ..Default::default()
                }),
            },
            volume_claim_templates: claims,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Headless Service: stable DNS per replica, and the status port for scraping.
pub fn headless_service(o: &Owner) -> Service {
    Service {
        metadata: o.meta(o.object_name()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(o.labels()),
            ports: Some(vec![ServicePort {
                name: Some("status".into()),
                port: STATUS_PORT,
                target_port: Some(IntOrString::Int(STATUS_PORT)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Metrics Service: a ClusterIP over the status port, labelled for a Prometheus
/// ServiceMonitor (`app.kubernetes.io/name: templar-node`).
pub fn metrics_service(o: &Owner) -> Service {
    let mut svc = headless_service(o);
    svc.metadata.name = Some(format!("{}-metrics", o.object_name()));
    if let Some(spec) = svc.spec.as_mut() {
        spec.cluster_ip = None;
        if let Some(port) = spec.ports.as_mut().and_then(|p| p.first_mut()) {
            port.name = Some("metrics".into());
        }
    }
    svc
}

/// Everything one resource owns, in apply order (the ConfigMap before the pods mount it).
#[derive(Debug, Clone)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub headless: Service,
    pub metrics: Service,
    pub stateful_set: StatefulSet,
}

pub fn desired(o: &Owner, valid: &Validated) -> Desired {
    Desired {
        config_map: hparams_configmap(o, &valid.hparams_file),
        headless: headless_service(o),
        metrics: metrics_service(o),
        stateful_set: statefulset(o),
    }
}

/// The ConfigMap the pods mount: the hyperparameters file as validation rendered it.
pub fn hparams_configmap(o: &Owner, hparams_file: &str) -> ConfigMap {
    ConfigMap {
        metadata: o.meta(o.object_name()),
        data: Some(BTreeMap::from([(
            "hparams.toml".into(),
            hparams_file.into(),
        )])),
        ..Default::default()
    }
}
