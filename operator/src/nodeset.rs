//! What the reconcile needs of either kind: both share `NodeSpec` and `NodeSetStatus`.

use kube::Resource;
use kube::core::NamespaceResourceScope;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use templar_crds::{NodeSetStatus, NodeSpec, TemplarMiner, TemplarValidator};
use templar_protocol::node_status::NodeRole;

pub trait NodeSet:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    const ROLE: NodeRole;
    fn node_spec(&self) -> &NodeSpec;
    fn node_status(&self) -> Option<&NodeSetStatus>;
}

impl NodeSet for TemplarMiner {
    const KIND: &'static str = "TemplarMiner";
    const ROLE: NodeRole = NodeRole::Miner;
    fn node_spec(&self) -> &NodeSpec {
        &self.spec.node
    }
    fn node_status(&self) -> Option<&NodeSetStatus> {
        self.status.as_ref()
    }
}

impl NodeSet for TemplarValidator {
    const KIND: &'static str = "TemplarValidator";
    const ROLE: NodeRole = NodeRole::Validator;
    fn node_spec(&self) -> &NodeSpec {
        &self.spec.node
    }
    fn node_status(&self) -> Option<&NodeSetStatus> {
        self.status.as_ref()
    }
}
