//! The operator's RBAC needs, shared by the plain manifests' and the chart's tests: every
//! grant is checked both ways (nothing missing, nothing more).

use super::kind;
use serde_yaml::Value;
use std::collections::BTreeSet;

/// Every (API group, resource, verb) the operator uses, each with the call that needs it.
/// The manifests must grant exactly these: nothing missing, nothing more.
pub const NEEDED: &[(&str, &str, &str)] = &[
    // The controllers' watches (list + watch) of both kinds.
    ("templar.tplr.ai", "templarminers", "get"),
    ("templar.tplr.ai", "templarvalidators", "get"),
    ("templar.tplr.ai", "templarminers", "list"),
    ("templar.tplr.ai", "templarminers", "watch"),
    ("templar.tplr.ai", "templarvalidators", "list"),
    ("templar.tplr.ai", "templarvalidators", "watch"),
    // write_status: server-side apply of the status subresource.
    ("templar.tplr.ai", "templarminers/status", "patch"),
    ("templar.tplr.ai", "templarvalidators/status", "patch"),
    // blockOwnerDeletion on the owned objects' owner references.
    ("templar.tplr.ai", "templarminers/finalizers", "update"),
    ("templar.tplr.ai", "templarvalidators/finalizers", "update"),
    // apply (create + patch), the suspend scale-down (patch), read_stateful_set (get),
    // the owned-object watch (list + watch).
    ("apps", "statefulsets", "create"),
    ("apps", "statefulsets", "patch"),
    ("apps", "statefulsets", "get"),
    ("apps", "statefulsets", "list"),
    ("apps", "statefulsets", "watch"),
    ("", "services", "create"),
    ("", "services", "patch"),
    ("", "configmaps", "create"),
    ("", "configmaps", "patch"),
    // read_inputs: the hyperparameters ConfigMap and the named secrets.
    ("", "configmaps", "get"),
    ("", "secrets", "get"),
    // observe; a pod whose own hotkey changed is restarted.
    ("", "pods", "list"),
    ("", "pods", "delete"),
    // The disruption budget: applied, or read and deleted when the spec drops it.
    ("policy", "poddisruptionbudgets", "get"),
    ("policy", "poddisruptionbudgets", "create"),
    ("policy", "poddisruptionbudgets", "patch"),
    ("policy", "poddisruptionbudgets", "delete"),
    // The event recorder (a repeated event is patched).
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
];

/// Leader election (kube-lease-manager): read, create and renew the Lease.
pub const LEASE_NEEDED: &[(&str, &str, &str)] = &[
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "patch"),
];

pub type Grants = BTreeSet<(String, String, String)>;

/// (group, resource, verb) granted by the rules of `doc` (a Role or ClusterRole).
pub fn grants(doc: &Value) -> Grants {
    let mut granted = BTreeSet::new();
    for rule in doc["rules"].as_sequence().unwrap() {
        let strings = |k: &str| -> Vec<String> {
            rule[k]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        for g in strings("apiGroups") {
            for r in strings("resources") {
                for v in strings("verbs") {
                    assert_ne!(v, "*", "no wildcard verbs");
                    granted.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    granted
}

pub fn set(list: &[(&str, &str, &str)]) -> Grants {
    list.iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect()
}

/// The object of `kind_` named `name` among `docs`.
pub fn role<'a>(docs: &'a [Value], kind_: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind(d) == kind_ && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind_} {name}"))
}

/// Both directions: every call the operator makes is granted, and nothing else is.
pub fn assert_exactly(granted: &Grants, needed: &Grants, what: &str) {
    let missing: Vec<_> = needed.difference(granted).collect();
    let extra: Vec<_> = granted.difference(needed).collect();
    assert!(missing.is_empty(), "{what} lacks {missing:?}");
    assert!(
        extra.is_empty(),
        "{what} grants more than needed: {extra:?}"
    );
}
