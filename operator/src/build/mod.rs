//! Pure builders: from a custom resource to what it owns (StatefulSet, headless and metrics
//! Services, hyperparameters ConfigMap, optional PodDisruptionBudget). No I/O, so they are
//! unit-tested from YAML resources.

mod objects;
mod pod;
pub mod sizing;

pub use objects::{disruption_budget, headless_service, hparams_configmap, metrics_service};
pub use pod::{CONFIG_HASH_ANNOTATION, OPERATOR_ENV, statefulset};

use crate::validate::Validated;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;
use templar_crds::{API_GROUP, API_VERSION, NodeSpec};
use templar_protocol::node_status::NodeRole;

/// The node's HTTP port (/healthz, /readyz, /status, /metrics).
pub const STATUS_PORT: i32 = 9100;

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

/// The labels of the pods of resource `name` of `role` (and of no other pods).
pub fn pod_labels(name: &str, role: NodeRole) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "templar-node".into()),
        ("app.kubernetes.io/instance".into(), name.into()),
        ("app.kubernetes.io/component".into(), role.as_str().into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "templar-operator".into(),
        ),
    ])
}

/// [`pod_labels`] as a label selector string (`k=v,...`), sorted by key.
pub fn pod_selector(name: &str, role: NodeRole) -> String {
    pod_labels(name, role)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Owner<'_> {
    /// Name shared by the StatefulSet, Service, ConfigMap and PodDisruptionBudget.
    pub fn object_name(&self) -> String {
        format!("{}-{}", self.name, self.role)
    }

    /// The labels that select this resource's pods (and only them).
    pub fn labels(&self) -> BTreeMap<String, String> {
        pod_labels(self.name, self.role)
    }

    /// [`Self::labels`] as a label selector string (`k=v,...`), sorted by key.
    pub fn selector(&self) -> String {
        pod_selector(self.name, self.role)
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

/// Everything one resource owns, in apply order (the ConfigMap before the pods mount it).
#[derive(Debug, Clone)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub headless: Service,
    pub metrics: Service,
    pub stateful_set: StatefulSet,
    /// `None` when the spec asks for no budget (an existing one is then deleted).
    pub disruption_budget: Option<PodDisruptionBudget>,
}

pub fn desired(o: &Owner, valid: &Validated) -> Desired {
    // The pods are sized for the model the nodes train (the hyperparameters' `[model]`).
    let mut trained = o.spec.clone();
    trained.model = Some(valid.model.clone());
    let sized = Owner {
        spec: &trained,
        ..o.clone()
    };
    let mut stateful_set = statefulset(&sized, &valid.config_hash);
    let digests = serde_json::to_string(&valid.hotkey_digests).unwrap_or_default();
    stateful_set
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(crate::hotkeys::DIGESTS_ANNOTATION.into(), digests);
    Desired {
        config_map: hparams_configmap(o, &valid.hparams_file),
        headless: headless_service(o),
        metrics: metrics_service(o),
        stateful_set,
        disruption_budget: disruption_budget(o),
    }
}
