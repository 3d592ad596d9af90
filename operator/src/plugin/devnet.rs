//! `kubectl templar devnet -n NS --endpoint URL --bucket B`: a quick-start network (one
//! validator, N miners, one shared S3 bucket) applied with its secrets — the bucket's write
//! key from the environment (never an argument), and a fresh sr25519 hotkey per node as a
//! Bittensor keyfile, so every payload is signed. The objects are those of
//! `manifests/examples/devnet.yaml`, sized for a kind cluster (CPU, the tiny model).

use std::io::Write;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use templar_crds::{TemplarMiner, TemplarValidator};
use templar_protocol::identity::{Signer, Sr25519Signer};
use zeroize::Zeroizing;

use super::PluginError;
use crate::nodeset::NodeSet;

/// Field manager of the plugin's server-side applies.
pub const FIELD_MANAGER: &str = "kubectl-templar";

#[derive(Clone)]
pub struct DevnetOptions {
    /// Name of both resources (and prefix of their Secrets and ConfigMap).
    pub name: String,
    pub namespace: String,
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub miners: i32,
    pub model: String,
    pub image: String,
    /// GPUs per node (0: CPU, as on kind).
    pub gpus: i32,
    pub access_key_id: Zeroizing<String>,
    pub secret_access_key: Zeroizing<String>,
}

impl std::fmt::Debug for DevnetOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevnetOptions")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("miners", &self.miners)
            .finish_non_exhaustive()
    }
}

/// The node image of this release.
pub fn default_image() -> String {
    format!(
        "ghcr.io/templar-rs/templar-node:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// A Secret's entries: key and (secret) value.
type Entries = Vec<(String, Zeroizing<String>)>;

/// `hotkey-0..n` keyfiles of fresh random seeds, and their SS58 addresses.
fn wallet(n: i32) -> Result<(Entries, Vec<String>), PluginError> {
    let mut files = Vec::new();
    let mut addresses = Vec::new();
    for i in 0..n {
        let seed = Zeroizing::new(rand::random::<[u8; 32]>());
        let signer = Sr25519Signer::from_seed(seed.as_ref())
            .map_err(|e| PluginError::Invalid(format!("a fresh hotkey: {e}")))?;
        let keyfile = json!({
            "secretSeed": format!("0x{}", hex::encode(seed.as_ref())),
            "ss58Address": signer.hotkey().as_str(),
        });
        files.push((format!("hotkey-{i}"), Zeroizing::new(keyfile.to_string())));
        addresses.push(signer.hotkey().to_string());
    }
    Ok((files, addresses))
}

fn secret(name: &str, entries: &Entries) -> Result<Secret, PluginError> {
    let data: serde_json::Map<String, Value> = entries
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name}, "type": "Opaque", "stringData": data,
    }))
    .map_err(|e| PluginError::Invalid(format!("Secret {name}: {e}")))
}

fn spec(o: &DevnetOptions, replicas: i32, wallet_secret: &str) -> Value {
    json!({
        "image": o.image,
        "replicas": replicas,
        "storage": {
            "endpoint": o.endpoint, "region": o.region, "bucket": o.bucket,
            "writeSecret": format!("{}-s3-write", o.name),
        },
        "walletSecret": wallet_secret,
        "hyperparameters": {"configMap": {"name": format!("{}-hparams", o.name)}},
        "resources": {"gpus": o.gpus},
    })
}

/// Apply the devnet; returns the hotkeys (validator first). Nothing secret is written to
/// `out`.
pub async fn apply(
    client: &Client,
    o: &DevnetOptions,
    out: &mut impl Write,
) -> Result<Vec<String>, PluginError> {
    if o.miners < 1 {
        return Err(PluginError::Invalid("--miners must be at least 1".into()));
    }
    let ns = o.namespace.as_str();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let (validator_keys, validator_hotkeys) = wallet(1)?;
    let (miner_keys, miner_hotkeys) = wallet(o.miners)?;
    let s3 = vec![
        ("accessKeyId".to_string(), o.access_key_id.clone()),
        ("secretAccessKey".to_string(), o.secret_access_key.clone()),
    ];
    for (name, entries) in [
        (format!("{}-s3-write", o.name), &s3),
        (format!("{}-validator-hotkeys", o.name), &validator_keys),
        (format!("{}-miner-hotkeys", o.name), &miner_keys),
    ] {
        secrets
            .patch(&name, &params, &Patch::Apply(&secret(&name, entries)?))
            .await
            .map_err(PluginError::api(format!("applying Secret {ns}/{name}")))?;
        writeln!(out, "secret/{name} applied")?;
    }
    let hparams = format!(
        "[model]\nsize = \"{}\"\n\n[network]\nblocks_per_window = 5\n",
        o.model
    );
    let config_name = format!("{}-hparams", o.name);
    let config: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": config_name}, "data": {"hparams.toml": hparams},
    }))
    .map_err(|e| PluginError::Invalid(format!("ConfigMap: {e}")))?;
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(&config_name, &params, &Patch::Apply(&config))
        .await
        .map_err(PluginError::api(format!(
            "applying ConfigMap {ns}/{config_name}"
        )))?;
    writeln!(out, "configmap/{config_name} applied")?;

    let validator_wallet = format!("{}-validator-hotkeys", o.name);
    apply_node_set::<TemplarValidator>(client, o, spec(o, 1, &validator_wallet), out).await?;
    let miner_wallet = format!("{}-miner-hotkeys", o.name);
    apply_node_set::<TemplarMiner>(client, o, spec(o, o.miners, &miner_wallet), out).await?;

    let mut hotkeys = validator_hotkeys;
    hotkeys.extend(miner_hotkeys);
    writeln!(out, "\nhotkeys (validator first): {}", hotkeys.join(" "))?;
    writeln!(
        out,
        "watch it:  kubectl templar status -n {ns}\nlogs:      kubectl templar logs {} -n {ns} --kind miner -f",
        o.name
    )?;
    Ok(hotkeys)
}

/// Server-side apply of a TemplarValidator or TemplarMiner named `o.name` with `spec`.
async fn apply_node_set<K: NodeSet>(
    client: &Client,
    o: &DevnetOptions,
    spec: Value,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    let (ns, kind) = (o.namespace.as_str(), K::KIND);
    let object: K = serde_json::from_value(json!({
        "apiVersion": "templar.tplr.ai/v1alpha1", "kind": kind,
        "metadata": {"name": o.name}, "spec": spec,
    }))
    .map_err(|e| PluginError::Invalid(format!("{kind}: {e}")))?;
    Api::<K>::namespaced(client.clone(), ns)
        .patch(
            &o.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .map_err(PluginError::api(format!("applying {kind} {ns}/{}", o.name)))?;
    writeln!(out, "{}/{} applied", kind.to_lowercase(), o.name)?;
    Ok(())
}
