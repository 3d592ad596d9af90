//! API types of templar-rs shared by the operator and the nodes.
//!
//! This crate stays light (no torch, no kube runtime) so that the operator and tooling build
//! fast. The `TemplarMiner` / `TemplarValidator` custom resources and the node's `/status`
//! document are added here by the operator and network work.

/// API group of the templar custom resources.
pub const API_GROUP: &str = "templar.tplr.ai";
/// API version of the templar custom resources.
pub const API_VERSION: &str = "v1alpha1";
