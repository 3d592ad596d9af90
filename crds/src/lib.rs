//! The `TemplarMiner` / `TemplarValidator` custom resources (kube's derive only).
//!
//! A leaf crate used by the operator and the e2e suite: the settings nodes agree on and the
//! `/status` document they publish live in `templar-protocol`, so no torch crate builds kube.

pub mod resources;

pub use resources::{NodeSetStatus, NodeSpec, TemplarMiner, TemplarValidator, crds_yaml};

/// API group of the templar custom resources.
pub const API_GROUP: &str = "templar.tplr.ai";
/// API version of the templar custom resources.
pub const API_VERSION: &str = "v1alpha1";
