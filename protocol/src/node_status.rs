//! The document a node serves at `/status`; the operator reads it into each CR's status.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    #[default]
    Miner,
    Validator,
}

impl NodeRole {
    /// The role's name as it appears in `/status`, labels, arguments and object names.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Miner => "miner",
            NodeRole::Validator => "validator",
        }
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer left out of a window's aggregate, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedPeer {
    pub uid: u16,
    pub reason: String,
}

/// A validator's view of one miner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MinerScore {
    pub uid: u16,
    /// Moving average of the loss improvement.
    pub score: f64,
    /// Last window's improvement on the miner's own pages and on random pages.
    pub last_improvement: Option<f64>,
    pub last_random_improvement: Option<f64>,
    pub weight: f64,
    /// Relative distance of the model the miner's last evaluated payload was trained from to
    /// the validator's (0 when in sync; above `sync_tolerance` the window counted as invalid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_drift: Option<f64>,
    /// The validator's loss on held-out pages (random, not the miner's) after the miner's
    /// last evaluated update alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_loss: Option<f64>,
}

/// A node's model against the top validator's latest checkpoint at that checkpoint's window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncCheck {
    pub window: u64,
    /// ||own sample - checkpoint sample|| / ||checkpoint sample|| (relative L2).
    pub drift: f64,
    /// drift <= the network's `sync_tolerance`.
    pub in_sync: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub role: NodeRole,
    pub uid: Option<u16>,
    pub hotkey: String,
    /// The window the node is working on.
    pub window: Option<u64>,
    pub global_step: u64,
    pub last_loss: Option<f64>,
    /// Validators: the mean loss of the model on the held-out pages of the window's
    /// evaluations, before any miner's update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_loss: Option<f64>,
    pub tokens_per_sec: Option<f64>,
    pub peers_gathered: usize,
    pub peers_skipped: Vec<SkippedPeer>,
    pub last_upload_window: Option<u64>,
    /// Validators: the latest scores and weights.
    pub scores: Vec<MinerScore>,
    pub last_weights_window: Option<u64>,
    /// Validators: what became of the last weights on chain (committed, revealed, applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<crate::chain::weights::WeightsOnChain>,
    pub last_checkpoint_window: Option<u64>,
    pub last_error: Option<String>,
    /// Incentive of this node on chain (miners), as last read.
    pub incentive: Option<f64>,
    /// A fixed sample of the model's parameters after the outer step `global_step`
    /// ([`MODEL_SAMPLE_SIZE`] values at the same positions on every node): nodes in sync
    /// show the same values at the same step, so a lagging or diverged node is visible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_sample: Vec<f64>,
    /// The last sync check against the top validator's latest checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncCheck>,
    /// Where the node computes, reported from its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<ComputeReport>,
    /// The faults the node met since it started.
    #[serde(default)]
    pub faults: FaultCounts,
}

/// What went wrong around a node since it started (docs/failure-modes.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct FaultCounts {
    /// Failed store calls by operation (`get`, `put`, `head`, `list`, `delete`), each
    /// attempt counted whether retried or not; an absent object is not a failure.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub store_errors: std::collections::BTreeMap<String, u64>,
    /// Gathers that ended at their deadline with peers not yet read.
    #[serde(default)]
    pub gathers_past_deadline: u64,
    /// Windows replayed from the stored payloads (catching up, or after falling behind).
    #[serde(default)]
    pub windows_replayed: u64,
}

/// The device a node trains and evaluates on, as the node itself resolved it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComputeReport {
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// `fp32` or `bf16` (the matmuls' precision).
    pub precision: String,
    /// The GPU's name and memory, as the CUDA driver reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_bytes: Option<u64>,
    /// The newest CUDA version the driver supports, and the CUDA runtime the node was built
    /// with (`13.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_runtime: Option<String>,
}

impl ComputeReport {
    /// Whether the node runs on a GPU.
    pub fn on_gpu(&self) -> bool {
        self.device.starts_with("cuda")
    }
}

/// How many parameter values [`NodeStatus::model_sample`] carries.
pub const MODEL_SAMPLE_SIZE: usize = 64;
