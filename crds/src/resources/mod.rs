//! The `TemplarMiner` and `TemplarValidator` custom resources (group `templar.tplr.ai`,
//! version `v1alpha1`). Both kinds share [`NodeSpec`] and [`NodeSetStatus`]; each replica is
//! one node identity (its hotkey is the wallet secret's `hotkey-<ordinal>` entry).
//!
//! Every field carries a doc comment: it becomes the schema description that
//! `kubectl explain templarminer.spec` prints.

// kube's `printcolumn(...)` entries repeat `type_ = ...` by design; clippy reads that as a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

mod pod;
mod status;

pub use pod::{
    CacheRetention, CacheVolume, DisruptionBudget, GpuVendor, NodeResources, PodOverrides,
    RetentionAction, quantity_schema,
};
pub use status::{MAX_NODE_STRING, NodeSetStatus, ReplicaStatus, truncate_node_string};

use k8s_openapi::api::core::v1::{Affinity, EnvVar, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which chain the nodes register and set weights on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// State in the object store; for development and private clusters.
    #[default]
    Devnet,
    /// Bittensor subtensor.
    Subtensor,
}

/// The chain the nodes use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChainSpec {
    /// `devnet` (state in the bucket) or `subtensor`.
    #[serde(default)]
    pub kind: ChainKind,
    /// Subtensor websocket endpoint (required for subtensor).
    pub endpoint: Option<String>,
    /// Subnet id on subtensor (required for subtensor).
    pub netuid: Option<u16>,
    /// Weights version key validators send (subtensor); the chain refuses one below the
    /// subnet's `WeightsVersionKey`.
    pub version_key: Option<u64>,
}

/// Where the nodes upload their updates and read their peers'.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// S3 endpoint (empty for AWS itself), e.g. `https://<account>.r2.cloudflarestorage.com`.
    pub endpoint: Option<String>,
    /// S3 region.
    pub region: Option<String>,
    /// The bucket of this set of nodes.
    pub bucket: String,
    /// Secret with `accessKeyId` / `secretAccessKey`: the node's write credentials. Leave it
    /// out where the pods get credentials from their service account (IRSA, workload
    /// identity).
    pub write_secret: Option<String>,
    /// Secret with the read credentials committed on chain for peers.
    pub read_secret: Option<String>,
}

/// A key of a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKey {
    /// The ConfigMap, in the resource's namespace.
    pub name: String,
    /// The key holding the TOML text.
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
    /// The TOML text itself.
    pub inline: Option<String>,
    /// A ConfigMap key holding the TOML text; a change to it rolls the pods.
    pub config_map: Option<ConfigMapKey>,
}

/// What both kinds configure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// The node image (`templar-node`).
    pub image: String,
    /// Image pull policy of the node container.
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub image_pull_policy: Option<String>,
    /// Secrets for pulling the image from a private registry.
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
    /// Node identities (one pod each); the scale subresource moves it.
    #[serde(default = "pod::one")]
    #[schemars(range(min = 0, max = 256))]
    pub replicas: i32,
    /// The chain the nodes use.
    #[serde(default)]
    pub chain: ChainSpec,
    /// The object store of updates and devnet state.
    pub storage: StorageSpec,
    /// Secret with `hotkey-<ordinal>` entries, one per replica.
    pub wallet_secret: String,
    /// Hyperparameters TOML, inline or from a ConfigMap.
    #[serde(default)]
    pub hyperparameters: HparamsSource,
    /// Model size: tiny, small, 150M, 1B. Unset: the hyperparameters' `[model]` section
    /// names it, else 150M; set in both places is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["tiny", "small", "150M", "1B"]))]
    pub model: Option<String>,
    /// GPUs, CPU, memory and shared memory per replica.
    #[serde(default)]
    pub resources: NodeResources,
    /// Node labels the pods must match.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods (e.g. for tainted GPU nodes).
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the pods.
    pub affinity: Option<Affinity>,
    /// Priority class of the pods.
    pub priority_class_name: Option<String>,
    /// Scheduler of the pods (e.g. `volcano` for gang scheduling); the cluster's default
    /// scheduler when absent.
    pub scheduler_name: Option<String>,
    /// Service account of the pods (none is mounted unless this names one, e.g. for IRSA).
    pub service_account_name: Option<String>,
    /// A persistent cache volume per replica; immutable once created.
    pub cache: Option<CacheVolume>,
    /// Extra environment of the node container; names the operator sets are refused.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Additions to the pod template: labels, annotations, spread, runtime class.
    #[serde(default)]
    pub pod_template: PodOverrides,
    /// A PodDisruptionBudget over the replicas.
    pub disruption_budget: Option<DisruptionBudget>,
    /// Scale to zero while keeping the resource.
    #[serde(default)]
    pub suspend: bool,
    /// A pod not ready this long after creation (or after it last lost readiness) marks
    /// the resource Degraded.
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 30))]
    pub startup_deadline_seconds: i64,
    /// How long a stopping node has to finish its window's upload before it is killed.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 0, max = 3600))]
    pub termination_grace_period_seconds: i64,
}

/// The model a node trains when neither the spec nor the hyperparameters name one.
pub const DEFAULT_MODEL: &str = "150M";

fn default_deadline() -> i64 {
    900
}

fn default_grace() -> i64 {
    300
}

/// Declares one node-set kind: both kinds share the spec, status, subresources, printer
/// columns and CEL rules, and differ only in kind and short name.
macro_rules! node_set_kind {
    ($doc:literal, $spec:ident, $kind:literal, $short:literal, $max_name:literal) => {
        #[doc = $doc]
        #[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
        #[kube(
            group = "templar.tplr.ai",
            version = "v1alpha1",
            kind = $kind,
            doc = $doc,
            namespaced,
            status = "NodeSetStatus",
            shortname = $short,
            category = "templar",
            scale(
                spec_replicas_path = ".spec.replicas",
                status_replicas_path = ".status.replicas",
                label_selector_path = ".status.selector"
            ),
            printcolumn(name = "Ready", type_ = "string", json_path = ".status.ready"),
            printcolumn(name = "Window", type_ = "integer", json_path = ".status.window"),
            printcolumn(name = "Loss", type_ = "number", json_path = ".status.loss"),
            printcolumn(name = "Score", type_ = "number", json_path = ".status.score"),
            printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
            // The StatefulSet "<name>-<role>" labels its pods' revision "<set>-<hash>" (a
            // hash of up to 10 characters), and a label value holds at most 63.
            validation = Rule::new(concat!("size(self.metadata.name) <= ", $max_name))
                .message(concat!("metadata.name: at most ", $max_name, " characters, so that the pods' controller-revision-hash label (<name>-<role>-<hash>) fits 63")),
            validation = Rule::new("self.spec.chain.kind == 'devnet' || (has(self.spec.chain.endpoint) && has(self.spec.chain.netuid))")
                .message("spec.chain.endpoint and spec.chain.netuid are required for a subtensor chain"),
            validation = Rule::new("!has(self.spec.hyperparameters.inline) || !has(self.spec.hyperparameters.configMap)")
                .message("spec.hyperparameters: give inline or configMap, not both"),
            validation = Rule::new("has(self.spec.cache) == has(oldSelf.spec.cache)")
                .message("spec.cache cannot be added or removed: StatefulSet volume claims are immutable; create a new resource"),
            validation = Rule::new("!has(self.spec.cache) || !has(oldSelf.spec.cache) || (self.spec.cache.size == oldSelf.spec.cache.size && (has(self.spec.cache.storageClass) ? self.spec.cache.storageClass : '') == (has(oldSelf.spec.cache.storageClass) ? oldSelf.spec.cache.storageClass : ''))")
                .message("spec.cache.size and storageClass are immutable: StatefulSet volume claims cannot change")
        )]
        #[serde(rename_all = "camelCase")]
        pub struct $spec {
            #[serde(flatten)]
            pub node: NodeSpec,
        }
    };
}

node_set_kind!(
    "A set of templar miners: each replica trains on its assigned pages, uploads its \
     compressed update each window and applies its peers' updates.",
    TemplarMinerSpec,
    "TemplarMiner",
    "tminer",
    "46"
);
node_set_kind!(
    "A set of templar validators: each replica scores the miners' updates on their own \
     data and sets weights on chain.",
    TemplarValidatorSpec,
    "TemplarValidator",
    "tvalidator",
    "42"
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
