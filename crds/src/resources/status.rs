//! What the operator reports in each resource's status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest string taken from a node into the status (hotkey, error): a few chatty pods must
/// not push the resource past the API server's object size limit.
pub const MAX_NODE_STRING: usize = 256;

/// `text` cut to [`MAX_NODE_STRING`] characters (on a character boundary), marked with `…`.
pub fn truncate_node_string(text: &str) -> String {
    if text.chars().count() <= MAX_NODE_STRING {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_NODE_STRING - 1).collect();
    cut.push('…');
    cut
}

/// Conditions keyed by type, so server-side apply merges them entry by entry.
fn conditions_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = g.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), vec!["type"].into());
    schema
}

/// One replica as the operator last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// The replica's pod.
    pub pod: String,
    /// The node's uid on the chain's metagraph, once registered.
    pub uid: Option<u16>,
    /// The node's hotkey (SS58), as the node reports it.
    pub hotkey: Option<String>,
    /// The last window the node worked on.
    pub window: Option<u64>,
    /// The node's last training (miners) or evaluation (validators) loss.
    pub loss: Option<f64>,
    /// Miners: incentive on chain; validators: the mean score they give.
    pub score: Option<f64>,
    /// RFC 3339 time of the last `/status` read that changed what this entry shows.
    pub last_seen: Option<String>,
    /// The node's last error, or why its pod or `/status` could not be read (truncated).
    pub last_error: Option<String>,
}

/// The observed state of a set of nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeSetStatus {
    /// The `metadata.generation` this status describes.
    pub observed_generation: Option<i64>,
    /// Scheduled, Ready, Progressing and Degraded, each with a reason and message.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Pods that exist (the scale subresource reads this).
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready at the current revision.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the pods, for the scale subresource (HPA, KEDA).
    pub selector: Option<String>,
    /// `ready/desired`, for `kubectl get`.
    pub ready: Option<String>,
    /// The newest window any node reports.
    pub window: Option<u64>,
    /// The highest global step any node reports.
    pub global_step: Option<u64>,
    /// Mean loss over the nodes that report one.
    pub loss: Option<f64>,
    /// Miners: mean incentive on chain; validators: mean score they give to miners.
    pub score: Option<f64>,
    /// Validators: the last window whose weights were set on chain.
    pub last_weights_window: Option<u64>,
    /// The last window a checkpoint was written for.
    pub last_checkpoint_window: Option<u64>,
    /// One entry per pod.
    #[serde(default)]
    pub nodes: Vec<ReplicaStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_node_strings_are_cut_on_a_character_boundary() {
        assert_eq!(truncate_node_string("short"), "short");
        let long = "é".repeat(1000);
        let cut = truncate_node_string(&long);
        assert_eq!(cut.chars().count(), MAX_NODE_STRING);
        assert!(cut.ends_with('…'));
        let exact = "x".repeat(MAX_NODE_STRING);
        assert_eq!(truncate_node_string(&exact), exact);
    }
}
