//! API types of templar-rs shared by the operator and the nodes.
//!
//! This crate stays light (no torch, no kube runtime) so that the operator and tooling build
//! fast. It holds the `TemplarMiner` / `TemplarValidator` custom resources, the node's
//! `/status` document and the hyperparameters file (parsed by both).

pub mod hparams;
pub mod node_status;
pub mod resources;

pub use node_status::{
    MODEL_SAMPLE_SIZE, MinerScore, NodeRole, NodeStatus, SkippedPeer, SyncCheck,
};
pub use resources::{NodeSetStatus, NodeSpec, TemplarMiner, TemplarValidator, crds_yaml};

/// API group of the templar custom resources.
pub const API_GROUP: &str = "templar.tplr.ai";
/// API version of the templar custom resources.
pub const API_VERSION: &str = "v1alpha1";
