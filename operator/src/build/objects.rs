//! The objects beside the StatefulSet: Services, the hyperparameters ConfigMap and the
//! optional PodDisruptionBudget.

use super::{Owner, STATUS_PORT};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

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

/// The PodDisruptionBudget the spec asks for, if any.
pub fn disruption_budget(o: &Owner) -> Option<PodDisruptionBudget> {
    let budget = o.spec.disruption_budget.as_ref()?;
    Some(PodDisruptionBudget {
        metadata: o.meta(o.object_name()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(budget.max_unavailable.clone()),
            selector: Some(LabelSelector {
                match_labels: Some(o.labels()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}
