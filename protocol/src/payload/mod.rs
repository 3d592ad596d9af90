//! The payload a miner uploads each window: safetensors with the packed update and metadata.
//! Byte format and validation only: tensors are plain byte views here, and the node turns a
//! validated [`Payload`] into tensors.
//!
//! Tensors, per parameter `NAME` (sorted-name order of the model):
//! - `NAME.idx`: U8 [3 * ceil(n / 2)], n = blocks * k indices packed 12 bits each
//!   (block-local positions, block-major).
//! - `NAME.val`: the n values: U8 [ceil(n / 4)] 2-bit codes, U8 [n] 8-bit codes, or F32 [n].
//! - `NAME.qp`: F32 [2 + 2^bits] = [shift, scale, lookup...] (absent for F32 values).
//!
//! Metadata (strings): `format` = "templar-update", `version` = [`FORMAT_VERSION`], `window`,
//! `uid`, `hotkey`, `hparams_digest`, `codec` (JSON of the codec settings), `params` (JSON list
//! of [name, shape]), `model_sample` (JSON list of at most [`MODEL_SAMPLE_SIZE`] finite numbers:
//! the sender's parameters at fixed positions when it began the window, for the validator's
//! sync check), `sha256`: hex SHA-256 over the canonical JSON of every other metadata entry
//! (all but `sha256` and `signature`) followed by, for each tensor in name order, its name, a
//! 0 byte, and its bytes; and `signature` (hex, 64 bytes): the sender hotkey's sr25519
//! signature over [`signing_message`] (the digest with the window, uid, hotkey and hparams
//! digest), present when the hotkey is an SS58 address.
//!
//! [`PayloadValidator`] checks all of this against the receiver's own model and codec and
//! returns a reason for every rejection; it never panics on any input.

pub mod layout;
pub mod pack;
pub mod quant;
mod validate;
pub mod wire;

pub use layout::{BlockLayout, CodecSpec};
pub use quant::Quantized;
pub use validate::{PayloadError, PayloadValidator, expected_tensor_bytes};

use crate::hparams::CodecParams;
use crate::identity::{Hotkey, Signer};
use pack::{pack_2bit, pack_indices_12bit};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use wire::key;

pub const FORMAT_NAME: &str = "templar-update";
/// Raw tensors by name: dtype, shape, little-endian bytes.
pub type RawTensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;
/// Raw metadata entries by key.
pub type RawMetadata = BTreeMap<String, String>;
/// 2: `model_sample` added.
pub const FORMAT_VERSION: &str = "2";
pub use crate::node_status::MODEL_SAMPLE_SIZE;

/// Who sent an update, for which window, under which settings, from which model.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadMeta {
    pub window: u64,
    pub uid: u16,
    pub hotkey: Hotkey,
    pub hparams_digest: String,
    /// The sender's model sample (`Engine::model_sample`) when it began training the window.
    pub model_sample: Vec<f64>,
}

/// Transmitted values of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    Quantized(Quantized),
}

impl Values {
    /// The value the receiver decodes for the `i`-th transmitted coordinate.
    pub fn value(&self, i: usize) -> f32 {
        match self {
            Values::F32(v) => v[i],
            Values::Quantized(q) => q.value(i),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::Quantized(q) => q.codes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One parameter's update: block-major indices (block-local) and their values.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamUpdate {
    pub indices: Vec<u16>,
    pub values: Values,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub meta: PayloadMeta,
    pub params: Vec<ParamUpdate>,
}

/// The codec settings that travel in the metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CodecHeader {
    use_dct: bool,
    chunk: i64,
    topk: i64,
    value_bits: u8,
}

impl From<&CodecParams> for CodecHeader {
    fn from(p: &CodecParams) -> Self {
        Self {
            use_dct: p.use_dct,
            chunk: p.chunk,
            topk: p.topk,
            value_bits: p.value_bits,
        }
    }
}

fn digest(metadata: &BTreeMap<String, String>, tensors: &RawTensors) -> String {
    digest_views(
        metadata,
        tensors
            .iter()
            .map(|(n, (_, _, d))| (n.as_str(), d.as_slice())),
    )
}

pub(crate) fn digest_views<'a>(
    metadata: &BTreeMap<String, String>,
    tensors: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(metadata).expect("metadata is JSON"));
    for (name, data) in tensors {
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update(data);
    }
    hex::encode(h.finalize())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn f32_from(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// What the sender's hotkey signs: a domain tag, the payload digest, and the slot and settings
/// it claims (also inside the digest; named here so that a signature can never be read as
/// one over another window, uid, hotkey or network).
pub fn signing_message(sha256: &str, meta: &PayloadMeta) -> Vec<u8> {
    let mut m = b"templar-payload-v1\0".to_vec();
    m.extend_from_slice(sha256.as_bytes());
    m.push(0);
    m.extend_from_slice(&meta.window.to_le_bytes());
    m.extend_from_slice(&meta.uid.to_le_bytes());
    m.extend_from_slice(meta.hotkey.as_str().as_bytes());
    m.push(0);
    m.extend_from_slice(meta.hparams_digest.as_bytes());
    m
}

impl Payload {
    /// Serialise to safetensors bytes, with the digest and `signer`'s signature in the
    /// metadata. Receivers verify it against the payload's hotkey: signed by another key (the
    /// impersonator of the adversarial tests), the payload is rejected everywhere.
    pub fn to_signed_bytes(&self, codec: &CodecSpec, signer: &dyn Signer) -> Vec<u8> {
        let tensors = self.tensors(codec);
        let mut metadata = self.metadata(codec);
        let sha = digest(&metadata, &tensors);
        let signature = signer.sign(&signing_message(&sha, &self.meta));
        metadata.insert(key::SIGNATURE.into(), hex::encode(signature));
        serialize(metadata, tensors)
    }

    /// Serialise to safetensors bytes, with the digest in the metadata (unsigned: a devnet
    /// name, or a test).
    pub fn to_bytes(&self, codec: &CodecSpec) -> Vec<u8> {
        let tensors = self.tensors(codec);
        serialize(self.metadata(codec), tensors)
    }

    fn tensors(&self, codec: &CodecSpec) -> RawTensors {
        let mut tensors = RawTensors::new();
        for (name, p) in codec.names.iter().zip(&self.params) {
            let idx = pack_indices_12bit(&p.indices);
            tensors.insert(wire::indices(name), (Dtype::U8, vec![idx.len()], idx));
            match &p.values {
                Values::F32(v) => {
                    tensors.insert(
                        wire::values(name),
                        (Dtype::F32, vec![v.len()], f32_bytes(v)),
                    );
                }
                Values::Quantized(q) => {
                    let codes = if q.bits == 2 {
                        pack_2bit(&q.codes)
                    } else {
                        q.codes.clone()
                    };
                    tensors.insert(wire::values(name), (Dtype::U8, vec![codes.len()], codes));
                    let mut qp = vec![q.shift, q.scale];
                    qp.extend_from_slice(&q.lookup);
                    tensors.insert(
                        wire::quant(name),
                        (Dtype::F32, vec![qp.len()], f32_bytes(&qp)),
                    );
                }
            }
        }
        tensors
    }

    fn metadata(&self, codec: &CodecSpec) -> BTreeMap<String, String> {
        let m = &self.meta;
        BTreeMap::from([
            (key::FORMAT.into(), FORMAT_NAME.into()),
            (key::VERSION.into(), FORMAT_VERSION.into()),
            (key::WINDOW.into(), m.window.to_string()),
            (key::UID.into(), m.uid.to_string()),
            (key::HOTKEY.into(), m.hotkey.to_string()),
            (key::HPARAMS_DIGEST.into(), m.hparams_digest.clone()),
            (
                key::CODEC.into(),
                serde_json::to_string(&CodecHeader::from(&codec.params)).expect("JSON"),
            ),
            (
                key::PARAMS.into(),
                serde_json::to_string(&codec.shapes()).expect("JSON"),
            ),
            (
                key::MODEL_SAMPLE.into(),
                serde_json::to_string(&m.model_sample).expect("JSON"),
            ),
        ])
    }
}

/// Writes tensors and metadata (digest added) as safetensors. Public for tests that build
/// deliberately malformed payloads.
pub fn serialize(mut metadata: BTreeMap<String, String>, tensors: RawTensors) -> Vec<u8> {
    metadata.remove(key::SHA256);
    let signature = metadata.remove(key::SIGNATURE);
    let sha = digest(&metadata, &tensors);
    metadata.insert(key::SHA256.into(), sha);
    if let Some(signature) = signature {
        metadata.insert(key::SIGNATURE.into(), signature);
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, (dt, shape, data))| {
            (
                n.clone(),
                TensorView::new(*dt, shape.clone(), data).expect("consistent tensor"),
            )
        })
        .collect();
    safetensors::serialize(views, Some(metadata.into_iter().collect())).expect("serialisable")
}

/// Reads a payload's metadata and tensors without validating them (tests use it to mutate).
pub fn deserialize_raw(bytes: &[u8]) -> Result<(RawMetadata, RawTensors), PayloadError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| PayloadError::Malformed(e.to_string()))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| PayloadError::Malformed(e.to_string()))?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    Ok((metadata, tensors))
}
