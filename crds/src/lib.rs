//! API types of templar-rs shared by the operator and the nodes.
//!
//! This crate stays light (no torch, no kube runtime) so that the operator and tooling build
//! fast. It holds the node's `/status` document; the `TemplarMiner` / `TemplarValidator`
//! custom resources are added by the operator work.

pub mod status;

pub use status::{MinerScore, NodeRole, NodeStatus, SkippedPeer};

/// API group of the templar custom resources.
pub const API_GROUP: &str = "templar.tplr.ai";
/// API version of the templar custom resources.
pub const API_VERSION: &str = "v1alpha1";
