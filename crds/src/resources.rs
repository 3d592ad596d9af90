//! The `TemplarMiner` and `TemplarValidator` custom resources (group `templar.tplr.ai`,
//! version `v1alpha1`). Both kinds share [`NodeSpec`] and [`NodeSetStatus`]; each replica is
//! one node identity (its hotkey is the wallet secret's `hotkey-<ordinal>` entry).

// kube's `printcolumn(...)` entries repeat `type_ = ...` by design; clippy reads that as a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::{Affinity, EnvVar, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// State in the object store; for development and private clusters.
    #[default]
    Devnet,
    /// Bittensor subtensor.
    Subtensor,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChainSpec {
    #[serde(default)]
    pub kind: ChainKind,
    /// Subtensor websocket endpoint (required for subtensor).
    pub endpoint: Option<String>,
    pub netuid: Option<u16>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// S3 endpoint (empty for AWS itself), e.g. `https://<account>.r2.cloudflarestorage.com`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: String,
    /// Secret with `accessKeyId` / `secretAccessKey`: the node's write credentials.
    pub write_secret: String,
    /// Secret with the read credentials committed on chain for peers.
    pub read_secret: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKey {
    pub name: String,
    #[serde(default = "default_hparams_key")]
    pub key: String,
}

fn default_hparams_key() -> String {
    "hparams.toml".into()
}

/// Hyperparameters TOML, inline or from a ConfigMap (exactly one).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct HparamsSource {
    pub inline: Option<String>,
    pub config_map: Option<ConfigMapKey>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeResources {
    /// GPUs per replica (`nvidia.com/gpu`); 0 runs on CPU.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 16))]
    pub gpus: i32,
    /// GPU product (node label `nvidia.com/gpu.product`), e.g. `NVIDIA-H100-80GB-HBM3`.
    pub gpu_type: Option<String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

impl Default for NodeResources {
    fn default() -> Self {
        Self {
            gpus: 1,
            gpu_type: None,
            cpu: None,
            memory: None,
        }
    }
}

fn one() -> i32 {
    1
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheVolume {
    /// PVC size per replica, e.g. `50Gi`.
    pub size: String,
    pub storage_class: Option<String>,
}

/// What both kinds configure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    pub image: String,
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub image_pull_policy: Option<String>,
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
    /// Node identities (one pod each); the scale subresource moves it.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 256))]
    pub replicas: i32,
    #[serde(default)]
    pub chain: ChainSpec,
    pub storage: StorageSpec,
    /// Secret with `hotkey-<ordinal>` entries, one per replica.
    pub wallet_secret: String,
    #[serde(default)]
    pub hyperparameters: HparamsSource,
    /// Model size: tiny, small, 150M, 1B.
    #[serde(default = "default_model")]
    #[schemars(extend("enum" = ["tiny", "small", "150M", "1B"]))]
    pub model: String,
    #[serde(default)]
    pub resources: NodeResources,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Affinity>,
    pub priority_class_name: Option<String>,
    pub cache: Option<CacheVolume>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Scale to zero while keeping the resource.
    #[serde(default)]
    pub suspend: bool,
    /// A pod not ready this long after creation marks the resource Degraded.
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 30))]
    pub startup_deadline_seconds: i64,
}

fn default_model() -> String {
    "150M".into()
}

fn default_deadline() -> i64 {
    900
}

/// One replica as the operator last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    pub pod: String,
    pub uid: Option<u16>,
    pub hotkey: Option<String>,
    pub window: Option<u64>,
    pub loss: Option<f64>,
    pub score: Option<f64>,
    /// RFC 3339 time of the last successful `/status` read.
    pub last_seen: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeSetStatus {
    pub observed_generation: Option<i64>,
    /// Scheduled, Ready, Progressing, Degraded.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// `ready/desired`, for `kubectl get`.
    pub ready: Option<String>,
    pub window: Option<u64>,
    pub global_step: Option<u64>,
    pub loss: Option<f64>,
    /// Miners: mean incentive on chain; validators: mean score they give to miners.
    pub score: Option<f64>,
    pub last_weights_window: Option<u64>,
    pub last_checkpoint_window: Option<u64>,
    #[serde(default)]
    pub nodes: Vec<ReplicaStatus>,
}

/// Declares one node-set kind: both kinds share the spec, status, subresources, printer
/// columns and CEL rules, and differ only in kind and short name.
macro_rules! node_set_kind {
    ($(#[$doc:meta])* $spec:ident, $kind:literal, $short:literal) => {
        $(#[$doc])*
        #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
        #[kube(
            group = "templar.tplr.ai",
            version = "v1alpha1",
            kind = $kind,
            namespaced,
            status = "NodeSetStatus",
            shortname = $short,
            scale(spec_replicas_path = ".spec.replicas", status_replicas_path = ".status.replicas"),
            printcolumn(name = "Ready", type_ = "string", json_path = ".status.ready"),
            printcolumn(name = "Window", type_ = "integer", json_path = ".status.window"),
            printcolumn(name = "Loss", type_ = "number", json_path = ".status.loss"),
            printcolumn(name = "Score", type_ = "number", json_path = ".status.score"),
            printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
            validation = "self.spec.chain.kind == 'devnet' || has(self.spec.chain.endpoint)",
            validation = "!has(self.spec.hyperparameters.inline) || !has(self.spec.hyperparameters.configMap)"
        )]
        #[serde(rename_all = "camelCase")]
        pub struct $spec {
            #[serde(flatten)]
            pub node: NodeSpec,
        }
    };
}

node_set_kind!(
    /// A set of miners.
    TemplarMinerSpec,
    "TemplarMiner",
    "tminer"
);
node_set_kind!(
    /// A set of validators.
    TemplarValidatorSpec,
    "TemplarValidator",
    "tvalidator"
);

/// Both CRDs as one multi-document YAML (what `templar-operator crd` prints).
pub fn crds_yaml() -> String {
    use kube::CustomResourceExt;
    [TemplarMiner::crd(), TemplarValidator::crd()]
        .iter()
        .map(|c| serde_yaml::to_string(c).expect("CRDs serialise to YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}
