//! What shapes each node pod: GPUs and quantities, the cache volume, and the overrides a
//! KubeRay user expects (template labels, spread, runtime class, disruption budget).

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Schema of a Kubernetes quantity field: an int or a string the API server itself checks
/// with the CEL quantity library, so `cpu: 2` is accepted and `memory: lots` is refused at
/// `kubectl apply`, not later by the operator.
pub fn quantity_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "x-kubernetes-validations": [{
            "rule": "isQuantity(string(self))",
            "message": "must be a Kubernetes quantity, e.g. 2, 500m, 16Gi"
        }]
    })
}

fn optional_quantity_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = quantity_schema(g);
    schema.insert("nullable".into(), true.into());
    schema
}

/// Who makes the GPUs: decides the resource name and the node label of the product.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    /// `nvidia.com/gpu`, product label `nvidia.com/gpu.product` (NVIDIA GPU feature discovery).
    #[default]
    Nvidia,
    /// `amd.com/gpu`, product label `amd.com/gpu.product-name` (AMD node labeller).
    Amd,
}

impl GpuVendor {
    /// The extended resource a pod requests GPUs by.
    pub fn resource_name(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "nvidia.com/gpu",
            GpuVendor::Amd => "amd.com/gpu",
        }
    }

    /// The node label that names the GPU product.
    pub fn product_label(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "nvidia.com/gpu.product",
            GpuVendor::Amd => "amd.com/gpu.product-name",
        }
    }
}

/// Compute per replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeResources {
    /// GPUs per replica; 0 runs on CPU.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 16))]
    pub gpus: i32,
    /// GPU vendor: `nvidia` (default) or `amd`.
    #[serde(default)]
    pub gpu_vendor: GpuVendor,
    /// GPU product the pods must land on (the vendor's product node label), e.g.
    /// `NVIDIA-H100-80GB-HBM3`.
    pub gpu_type: Option<String>,
    /// CPU request per replica, a quantity (`2`, `500m`). Default: the model preset's
    /// (README's table).
    // `default` keeps it optional in the schema: `schema_with` hides the Option from schemars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_quantity_schema")]
    pub cpu: Option<Quantity>,
    /// Memory request and limit per replica, a quantity (`64Gi`); it must hold `shmSize` and
    /// the model's working set. Default: the model preset's need plus `shmSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_quantity_schema")]
    pub memory: Option<Quantity>,
    /// Size of the memory-backed `/dev/shm` (libtorch data loaders need more than the
    /// container default of 64 MiB); counts against the memory limit. Default `2Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_quantity_schema")]
    pub shm_size: Option<Quantity>,
}

impl Default for NodeResources {
    fn default() -> Self {
        Self {
            gpus: 1,
            gpu_vendor: GpuVendor::Nvidia,
            gpu_type: None,
            cpu: None,
            memory: None,
            shm_size: None,
        }
    }
}

pub(crate) fn one() -> i32 {
    1
}

/// What happens to a replica's cache volume when the resource is deleted or scaled down.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum RetentionAction {
    /// Keep the volume (the default of Kubernetes).
    #[default]
    Retain,
    /// Delete the volume with the pod's identity.
    Delete,
}

impl RetentionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionAction::Retain => "Retain",
            RetentionAction::Delete => "Delete",
        }
    }
}

/// The StatefulSet's `persistentVolumeClaimRetentionPolicy` for the cache volumes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct CacheRetention {
    /// When the resource (and so its StatefulSet) is deleted.
    #[serde(default)]
    pub when_deleted: RetentionAction,
    /// When the replicas are scaled down.
    #[serde(default)]
    pub when_scaled: RetentionAction,
}

/// A persistent cache volume per replica (dataset pages, checkpoints). Its size and class
/// cannot change once created: StatefulSet volume claims are immutable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheVolume {
    /// Volume size per replica, a quantity (`50Gi`).
    #[schemars(schema_with = "quantity_schema")]
    pub size: Quantity,
    /// Storage class of the volumes (the cluster default when unset).
    pub storage_class: Option<String>,
    /// Keep or delete the volumes when the resource is deleted or scaled down.
    #[serde(default)]
    pub retention: CacheRetention,
}

/// Additions to each node pod's template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra pod labels (the operator's own `app.kubernetes.io/*` labels win on conflict).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations (e.g. for a service mesh or a log shipper).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// How the replicas spread over zones or hosts.
    #[serde(default)]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Runtime class of the pods (e.g. `nvidia` where the GPU runtime is not the default).
    pub runtime_class_name: Option<String>,
}

/// A PodDisruptionBudget over the replicas, so node drains take them down a few at a time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudget {
    /// Replicas a voluntary disruption may take down at once (a number or a percentage).
    #[serde(default = "one_unavailable", deserialize_with = "null_is_one")]
    pub max_unavailable: IntOrString,
}

fn one_unavailable() -> IntOrString {
    IntOrString::Int(1)
}

/// The schema admits `maxUnavailable: null` (int-or-string fields are nullable): it means
/// the default, as an absent field does.
fn null_is_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<IntOrString, D::Error> {
    use serde::Deserialize;
    Ok(Option::<IntOrString>::deserialize(d)?.unwrap_or_else(one_unavailable))
}
