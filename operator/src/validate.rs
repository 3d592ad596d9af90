//! Validation of a spec against what exists in its namespace (pure: the reconcile reads the
//! inputs first). A problem becomes a Degraded condition and a Warning event with a reason,
//! never an error loop.

use crate::build::OPERATOR_ENV;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use templar_crds::NodeSpec;
use templar_crds::resources::{ChainKind, DEFAULT_MODEL, GpuVendor};
use templar_protocol::hparams::Hparams;

/// What the spec refers to, as read from the API: the secrets and ConfigMaps that exist.
/// Secret values are never kept, only their key names and resource versions.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub secrets: BTreeMap<String, BTreeSet<String>>,
    /// `metadata.resourceVersion` of each secret found: a new version rolls the pods.
    pub secret_versions: BTreeMap<String, String>,
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Digest of each key of the wallet Secret ([`crate::hotkeys::digest`]), never the value.
    pub hotkey_digests: BTreeMap<String, String>,
}

/// Why a spec cannot run; `reason` is the condition and event reason (PascalCase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: ProblemReason,
    pub message: String,
}

impl Problem {
    fn new(reason: ProblemReason, message: String) -> Self {
        Self { reason, message }
    }
}

/// Why a resource cannot be applied: the reason of its Degraded condition and its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemReason {
    /// A referenced Secret does not exist.
    MissingSecret,
    /// A referenced Secret lacks a key the node needs (S3 keys).
    MissingSecretKey,
    /// The wallet Secret lacks `hotkey-<ordinal>` for a replica.
    MissingHotkey,
    /// The spec contradicts itself or what the operator sets.
    InvalidSpec,
    MissingConfigMap,
    MissingConfigMapKey,
    /// The hyperparameters do not parse or validate with the nodes' own parser.
    InvalidHyperparameters,
    /// The API server refused the objects built from the spec (admission, quota, schema).
    ApplyRejected,
}

impl ProblemReason {
    /// The reason as conditions and events spell it (CamelCase, Kubernetes' convention).
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemReason::MissingSecret => "MissingSecret",
            ProblemReason::MissingSecretKey => "MissingSecretKey",
            ProblemReason::MissingHotkey => "MissingHotkey",
            ProblemReason::InvalidSpec => "InvalidSpec",
            ProblemReason::MissingConfigMap => "MissingConfigMap",
            ProblemReason::MissingConfigMapKey => "MissingConfigMapKey",
            ProblemReason::InvalidHyperparameters => "InvalidHyperparameters",
            ProblemReason::ApplyRejected => "ApplyRejected",
        }
    }
}

impl std::fmt::Display for ProblemReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A spec that can run, with what its checks produced for the builders.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// The hyperparameters file the nodes read (the spec's model size added when the text
    /// names none), already parsed by the nodes' own parser.
    pub hparams_file: String,
    /// Digest of the hyperparameters file and the referenced secrets' versions: the pod
    /// template carries it, so a change to any of them rolls the pods.
    pub config_hash: String,
    /// The model size the nodes train: `spec.model`, or the file's `[model]`.
    pub model: String,
    /// Digests of the replicas' hotkeys: a changed one restarts its own pod only.
    pub hotkey_digests: BTreeMap<String, String>,
}

/// Keys of an S3 credentials secret.
pub const ACCESS_KEY_ID: &str = "accessKeyId";
pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";

/// The secrets the spec names, each once, in the order they are read.
pub fn referenced_secrets(spec: &NodeSpec) -> Vec<&str> {
    let candidates = [
        spec.storage.write_secret.as_deref(),
        spec.storage.read_secret.as_deref(),
        Some(spec.wallet_secret.as_str()),
    ];
    let mut names: Vec<&str> = Vec::new();
    // `dedup` would only drop neighbours: write and wallet may be one secret with the read
    // secret between them.
    for name in candidates.into_iter().flatten() {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The ConfigMap holding the hyperparameters, if the spec names one.
pub fn referenced_config_map(spec: &NodeSpec) -> Option<&str> {
    spec.hyperparameters
        .config_map
        .as_ref()
        .map(|c| c.name.as_str())
}

fn require_keys(
    inputs: &Inputs,
    secret: &str,
    field: &str,
    keys: &[String],
    missing_reason: ProblemReason,
) -> Result<(), Problem> {
    let present = inputs.secrets.get(secret).ok_or_else(|| {
        Problem::new(
            ProblemReason::MissingSecret,
            format!("secret {secret:?} ({field}) does not exist in this namespace"),
        )
    })?;
    if let Some(key) = keys.iter().find(|k| !present.contains(k.as_str())) {
        return Err(Problem::new(
            missing_reason,
            format!("secret {secret:?} ({field}) has no key {key:?}"),
        ));
    }
    Ok(())
}

/// The file the node reads: `text` with the spec's model size added when it names none. A
/// model named in both the spec and the text is refused: neither would silently win.
pub fn render_hparams(spec: &NodeSpec, text: &str) -> Result<String, Problem> {
    // Parsed, not searched: a `[model]` in a comment or a string names no model. Text that
    // does not parse is refused by the validation that follows.
    let names_model = text
        .parse::<toml::Table>()
        .is_ok_and(|t| t.contains_key("model"));
    match (&spec.model, names_model) {
        (Some(model), true) => Err(Problem::new(
            ProblemReason::InvalidSpec,
            format!(
                "the model is set in two places: spec.model ({model}) and the \
                 hyperparameters' [model] section; keep one"
            ),
        )),
        (None, true) => Ok(text.to_string()),
        (model, false) => Ok(format!(
            "[model]\nsize = \"{}\"\n\n{text}",
            model.as_deref().unwrap_or(DEFAULT_MODEL)
        )),
    }
}

/// Check the spec and its inputs; on success, what the builders need (the hyperparameters
/// file, validated by the same code the nodes use).
pub fn validate(spec: &NodeSpec, inputs: &Inputs) -> Result<Validated, Problem> {
    check_spec(spec)?;
    check_secrets(spec, inputs)?;
    let text = hyperparameters_text(spec, inputs)?;
    let hparams_file = render_hparams(spec, &text)?;
    let hp = Hparams::from_toml(&hparams_file)
        .map_err(|e| Problem::new(ProblemReason::InvalidHyperparameters, e.to_string()))?;
    if let Some(why) = crate::build::sizing::memory_problem(spec, &hp.model.size) {
        return Err(Problem::new(ProblemReason::InvalidSpec, why));
    }
    let config_hash = config_hash(&hparams_file, spec, inputs);
    Ok(Validated {
        hparams_file,
        config_hash,
        model: hp.model.size,
        hotkey_digests: crate::hotkeys::for_replicas(&inputs.hotkey_digests, spec.replicas),
    })
}

/// The longest value a label holds.
const MAX_LABEL_VALUE: usize = 63;
/// The StatefulSet's pods carry `controller-revision-hash: <set name>-<hash>`, the hash of
/// up to this many characters.
const REVISION_HASH_CHARS: usize = 10;

/// The longest resource name of `role` whose pods can be created: the StatefulSet is
/// `<name>-<role>`, and its revision label must fit a label value.
pub fn max_name_len(role: &str) -> usize {
    MAX_LABEL_VALUE - REVISION_HASH_CHARS - 1 - (role.len() + 1)
}

/// A name too long for the pods' labels (the CRD's rule refuses it at admission; this
/// catches one made before that rule, or under a CRD without it).
pub fn check_name(role: &str, name: &str) -> Result<(), Problem> {
    let max = max_name_len(role);
    if name.len() > max {
        return Err(Problem::new(
            ProblemReason::InvalidSpec,
            format!(
                "metadata.name has {} characters, at most {max}: the pods' \
                 controller-revision-hash label ({name}-{role}-<hash>) would pass 63",
                name.len()
            ),
        ));
    }
    Ok(())
}

/// What the spec alone can get wrong: the image, the chain, env the operator sets itself.
fn check_spec(spec: &NodeSpec) -> Result<(), Problem> {
    let invalid = |message: String| Err(Problem::new(ProblemReason::InvalidSpec, message));
    if spec.image.trim().is_empty() {
        return invalid("spec.image is empty".into());
    }
    // The node trains on one device: more GPUs in a pod would sit idle, held from others.
    if spec.resources.gpus > 1 {
        return invalid(format!(
            "spec.resources.gpus is {}: a node trains on one GPU (no data parallelism across \
             a pod's GPUs), so the others would sit idle; run {} replicas with gpus: 1",
            spec.resources.gpus,
            i64::from(spec.resources.gpus) * i64::from(spec.replicas.max(1))
        ));
    }
    // The node image is built on CUDA; AMD GPUs need a ROCm build of it.
    if spec.resources.gpus > 0
        && spec.resources.gpu_vendor == GpuVendor::Amd
        && !spec.image.to_ascii_lowercase().contains("rocm")
    {
        return invalid(format!(
            "spec.resources.gpuVendor amd needs a ROCm build of the node image in spec.image \
             (its name or tag says rocm); {:?} is a CUDA image",
            spec.image
        ));
    }
    if spec.chain.kind == ChainKind::Subtensor {
        let endpoint = spec.chain.endpoint.as_deref().unwrap_or("").trim();
        if !(endpoint.starts_with("ws://") || endpoint.starts_with("wss://")) {
            return invalid(format!(
                "spec.chain.endpoint must be a ws:// or wss:// subtensor endpoint for a subtensor chain, got {endpoint:?}"
            ));
        }
        if spec.chain.netuid.is_none() {
            return invalid("spec.chain.netuid is required for a subtensor chain".into());
        }
    }
    if let Some(clash) = spec
        .env
        .iter()
        .find(|e| OPERATOR_ENV.contains(&e.name.as_str()))
    {
        return invalid(format!(
            "spec.env sets {:?}, which the operator sets itself (from spec.storage)",
            clash.name
        ));
    }
    Ok(())
}

/// The S3 secrets hold both keys; the wallet holds `hotkey-<ordinal>` for every replica.
fn check_secrets(spec: &NodeSpec, inputs: &Inputs) -> Result<(), Problem> {
    let s3_keys = [ACCESS_KEY_ID.to_string(), SECRET_ACCESS_KEY.to_string()];
    let storage = [
        (&spec.storage.write_secret, "storage.writeSecret"),
        (&spec.storage.read_secret, "storage.readSecret"),
    ];
    for (secret, field) in storage {
        if let Some(secret) = secret {
            require_keys(
                inputs,
                secret,
                field,
                &s3_keys,
                ProblemReason::MissingSecretKey,
            )?;
        }
    }
    let hotkeys: Vec<String> = (0..spec.replicas).map(|i| format!("hotkey-{i}")).collect();
    require_keys(
        inputs,
        &spec.wallet_secret,
        "walletSecret",
        &hotkeys,
        ProblemReason::MissingHotkey,
    )
}

/// The hyperparameters as written: inline, from the referenced ConfigMap, or none.
fn hyperparameters_text(spec: &NodeSpec, inputs: &Inputs) -> Result<String, Problem> {
    let source = &spec.hyperparameters;
    Ok(match (&source.inline, &source.config_map) {
        (Some(_), Some(_)) => {
            return Err(Problem::new(
                ProblemReason::InvalidSpec,
                "hyperparameters: give inline or configMap, not both".into(),
            ));
        }
        (Some(text), None) => text.clone(),
        (None, Some(cm)) => {
            let data = inputs.config_maps.get(&cm.name).ok_or_else(|| {
                Problem::new(
                    ProblemReason::MissingConfigMap,
                    format!(
                        "ConfigMap {:?} (hyperparameters.configMap) does not exist",
                        cm.name
                    ),
                )
            })?;
            data.get(&cm.key).cloned().ok_or_else(|| {
                Problem::new(
                    ProblemReason::MissingConfigMapKey,
                    format!("ConfigMap {:?} has no key {:?}", cm.name, cm.key),
                )
            })?
        }
        (None, None) => String::new(),
    })
}

/// SHA-256 (first 16 hex digits) of the hyperparameters file and `name=version` of each
/// referenced secret but the wallet: what every pod reads at start that the pod template does
/// not show. The wallet is per pod ([`crate::hotkeys`]): a new replica's key must not roll the
/// running pods.
fn config_hash(hparams_file: &str, spec: &NodeSpec, inputs: &Inputs) -> String {
    let mut hasher = Sha256::new();
    hasher.update(hparams_file.as_bytes());
    let storage = [&spec.storage.write_secret, &spec.storage.read_secret];
    let wallet_only = |name: &str| {
        name == spec.wallet_secret && !storage.iter().any(|s| s.as_deref() == Some(name))
    };
    for name in referenced_secrets(spec)
        .into_iter()
        .filter(|n| !wallet_only(n))
    {
        let version = inputs
            .secret_versions
            .get(name)
            .map(String::as_str)
            .unwrap_or("");
        hasher.update(format!("\0{name}={version}").as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}
