//! `kubectl templar logs NAME [--kind validator|miner] [-f] [--tail N]`: the node logs of every
//! pod of a resource, each line prefixed with its pod, followed together.

use std::io::Write;

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::{Api, Client};
use templar_crds::{TemplarMiner, TemplarValidator};
use templar_protocol::node_status::NodeRole;

use super::PluginError;
use crate::build::pod_selector;

/// How to read the logs.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub tail_lines: Option<i64>,
}

/// The role of the resource called `name`: `kind` when given, else the one kind that has it.
pub async fn resource_role(
    client: &Client,
    namespace: &str,
    name: &str,
    kind: Option<NodeRole>,
) -> Result<NodeRole, PluginError> {
    let validators: Api<TemplarValidator> = Api::namespaced(client.clone(), namespace);
    let miners: Api<TemplarMiner> = Api::namespaced(client.clone(), namespace);
    let what = format!("reading {namespace}/{name}");
    let validator = validators
        .get_opt(name)
        .await
        .map_err(PluginError::api(what.clone()))?
        .is_some();
    let miner = miners
        .get_opt(name)
        .await
        .map_err(PluginError::api(what))?
        .is_some();
    match (kind, validator, miner) {
        (Some(NodeRole::Validator), true, _) => Ok(NodeRole::Validator),
        (Some(NodeRole::Miner), _, true) => Ok(NodeRole::Miner),
        (None, true, false) => Ok(NodeRole::Validator),
        (None, false, true) => Ok(NodeRole::Miner),
        (None, true, true) => Err(PluginError::Ambiguous(name.into())),
        _ => Err(PluginError::NotFound {
            name: name.into(),
            namespace: namespace.into(),
        }),
    }
}

/// Every pod's `node` container log, lines prefixed with `[pod]`, until all end (with
/// `follow`: until the pods stop).
pub async fn logs(
    client: &Client,
    namespace: &str,
    name: &str,
    kind: Option<NodeRole>,
    options: &LogOptions,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    let role = resource_role(client, namespace, name, kind).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut names: Vec<String> = pods
        .list(&ListParams::default().labels(&pod_selector(name, role)))
        .await
        .map_err(PluginError::api(format!(
            "listing the pods of {role} {name}"
        )))?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    if names.is_empty() {
        writeln!(out, "{role} {name} has no pods yet")?;
        return Ok(());
    }
    let params = LogParams {
        container: Some("node".into()),
        follow: options.follow,
        tail_lines: options.tail_lines,
        ..LogParams::default()
    };
    let mut streams = Vec::new();
    for pod in &names {
        let lines = pods
            .log_stream(pod, &params)
            .await
            .map_err(PluginError::api(format!("reading the log of {pod}")))?
            .lines();
        let prefix = format!("[{pod}] ");
        streams.push(lines.map_ok(move |line| format!("{prefix}{line}")).boxed());
    }
    let mut merged = futures::stream::select_all(streams);
    while let Some(line) = merged.next().await {
        writeln!(out, "{}", line?)?;
    }
    Ok(())
}
