//! `kubectl templar status [-n NS | -A]`: each validator and the miners beside it, one row per
//! resource and one per node, from the resources' status (what the operator last read from
//! the nodes' `/status`).

use std::collections::BTreeMap;
use std::io::Write;

use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use templar_crds::{NodeSetStatus, TemplarMiner, TemplarValidator};

use super::PluginError;
use crate::nodeset::NodeSet;

/// One resource as the table shows it.
struct Row {
    namespace: String,
    kind: &'static str,
    name: String,
    status: NodeSetStatus,
}

async fn list<K>(client: &Client, namespace: Option<&str>) -> Result<Vec<K>, PluginError>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let kind = K::kind(&());
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(PluginError::api(format!("listing {kind}s")))?
        .items)
}

/// One row per resource of a kind.
fn rows<K: NodeSet>(items: Vec<K>) -> impl Iterator<Item = Row> {
    items.into_iter().map(|r| Row {
        namespace: r.namespace().unwrap_or_default(),
        kind: K::ROLE.as_str(),
        name: r.name_any(),
        status: r.node_status().cloned().unwrap_or_default(),
    })
}

/// The table for `namespace` (`None`: every namespace).
pub async fn status(
    client: &Client,
    namespace: Option<&str>,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    let validators: Vec<TemplarValidator> = list(client, namespace).await?;
    let miners: Vec<TemplarMiner> = list(client, namespace).await?;
    let mut by_namespace: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for row in rows(validators).chain(rows(miners)) {
        by_namespace
            .entry(row.namespace.clone())
            .or_default()
            .push(row);
    }
    if by_namespace.is_empty() {
        let scope = namespace.map_or("any namespace".into(), |ns| format!("namespace {ns}"));
        writeln!(out, "No TemplarValidator or TemplarMiner in {scope}.")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<12} {:<28} {:>5} {:>6} {:>7} {:>9} {:>9} {:>9}  LAST ERROR",
        "NAMESPACE", "RESOURCE / POD", "UID", "READY", "WINDOW", "LOSS", "SCORE", "WEIGHT"
    )?;
    for rows in by_namespace.values() {
        // Validators first: a network reads from its validator down.
        let mut rows: Vec<&Row> = rows.iter().collect();
        rows.sort_by_key(|r| (r.kind != "validator", r.name.clone()));
        for row in rows {
            write_resource(out, row)?;
        }
    }
    Ok(())
}

fn num(v: Option<f64>, precision: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.precision$}"))
}

fn write_resource(out: &mut impl Write, row: &Row) -> Result<(), PluginError> {
    let s = &row.status;
    let problem = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded" && c.status == "True")
        .map(|c| format!("{}: {}", c.reason, c.message));
    // A validator's score is the mean it gives; a miner's is its incentive, the network's
    // weight on it.
    let (score, weight) = match row.kind {
        "validator" => (num(s.score, 5), "-".to_string()),
        _ => ("-".to_string(), num(s.score, 4)),
    };
    writeln!(
        out,
        "{:<12} {:<28} {:>5} {:>6} {:>7} {:>9} {:>9} {:>9}  {}",
        row.namespace,
        format!("{}/{}", row.kind, row.name),
        "",
        s.ready.clone().unwrap_or_else(|| "-".into()),
        s.window.map_or("-".into(), |w| w.to_string()),
        num(s.loss, 4),
        score,
        weight,
        problem.unwrap_or_default()
    )?;
    for node in &s.nodes {
        let ready = if node.window.is_some() && node.last_error.is_none() {
            "yes"
        } else {
            "no"
        };
        let (score, weight) = match row.kind {
            "validator" => (num(node.score, 5), "-".to_string()),
            _ => ("-".to_string(), num(node.score, 4)),
        };
        writeln!(
            out,
            "{:<12} {:<28} {:>5} {:>6} {:>7} {:>9} {:>9} {:>9}  {}",
            "",
            format!("  {}", node.pod),
            node.uid.map_or("-".into(), |u| u.to_string()),
            ready,
            node.window.map_or("-".into(), |w| w.to_string()),
            num(node.loss, 4),
            score,
            weight,
            node.last_error.clone().unwrap_or_default()
        )?;
    }
    Ok(())
}
