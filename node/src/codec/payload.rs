//! The payload a miner uploads each window: safetensors with the packed update and metadata.
//!
//! Tensors, per parameter `NAME` (sorted-name order of the model):
//! - `NAME.idx`: U8 [3 * ceil(n / 2)], n = blocks * k indices packed 12 bits each
//!   (block-local positions, block-major).
//! - `NAME.val`: the n values: U8 [ceil(n / 4)] 2-bit codes, U8 [n] 8-bit codes, or F32 [n].
//! - `NAME.qp`: F32 [2 + 2^bits] = [shift, scale, lookup...] (absent for F32 values).
//!
//! Metadata (strings): `format` = "templar-update", `version` = [`FORMAT_VERSION`], `window`,
//! `uid`, `hotkey`, `hparams_digest`, `codec` (JSON of the codec settings), `params` (JSON list
//! of [name, shape]), and `sha256`: hex SHA-256 over the canonical JSON of every other metadata
//! entry followed by, for each tensor in name order, its name, a 0 byte, and its bytes.
//!
//! [`PayloadValidator`] checks all of this against the receiver's own model and codec and
//! returns a reason for every rejection; it never panics on any input.

use super::pack::{
    pack_2bit, pack_indices_12bit, packed_2bit_len, packed_index_len, unpack_2bit,
    unpack_indices_12bit,
};
use super::quant::{Quantized, SCALE_MAX, SCALE_MIN};
use super::{BlockLayout, Codec, Selected};
use crate::hparams::CodecParams;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use tch::{Device, Kind, Tensor};

pub const FORMAT_NAME: &str = "templar-update";
/// Raw tensors by name: dtype, shape, little-endian bytes.
pub type RawTensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;
/// Raw metadata entries by key.
pub type RawMetadata = BTreeMap<String, String>;
pub const FORMAT_VERSION: &str = "1";
/// Room for the safetensors header on top of the tensor bytes in the derived size bound.
const HEADER_ALLOWANCE: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is {size} bytes, over the bound of {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("not a readable safetensors file: {0}")]
    Malformed(String),
    #[error("metadata entry {0:?} is missing")]
    MissingMetadata(&'static str),
    #[error("not a {FORMAT_NAME} payload (format {0:?})")]
    WrongFormat(String),
    #[error("unsupported format version {found:?} (expected {FORMAT_VERSION})")]
    WrongVersion { found: String },
    #[error("metadata entry {key:?} is invalid: {reason}")]
    BadMetadata { key: &'static str, reason: String },
    #[error("codec settings differ: expected {expected}, payload has {found}")]
    CodecMismatch { expected: String, found: String },
    #[error("parameter list differs from the model: {0}")]
    ParamsMismatch(String),
    #[error("hyperparameter digest {found} differs from ours ({expected})")]
    HparamsMismatch { expected: String, found: String },
    #[error("tensor {0:?} is missing")]
    MissingTensor(String),
    #[error("unexpected tensor {0:?}")]
    ExtraTensor(String),
    #[error("tensor {tensor:?} has dtype {found}, expected {expected}")]
    WrongDtype {
        tensor: String,
        expected: String,
        found: String,
    },
    #[error("tensor {tensor:?} has shape {found:?}, expected {expected:?}")]
    WrongShape {
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("parameter {param:?} carries {found} indices, expected {expected} (k per block)")]
    IndexCount {
        param: String,
        expected: usize,
        found: usize,
    },
    #[error("digest mismatch: the tensor bytes or metadata were altered")]
    DigestMismatch,
    #[error("parameter {param:?} block {block}: index {index} out of range (block size {size})")]
    IndexOutOfRange {
        param: String,
        block: usize,
        index: u16,
        size: i64,
    },
    #[error("parameter {param:?} block {block}: index {index} repeated")]
    DuplicateIndex {
        param: String,
        block: usize,
        index: u16,
    },
    #[error("parameter {param:?} has non-finite values")]
    NonFiniteValues { param: String },
    #[error("parameter {param:?} has non-finite quantisation parameters")]
    NonFiniteQuantParams { param: String },
    #[error("parameter {param:?} has scale {scale}, outside ({SCALE_MIN:e}, {SCALE_MAX:e})")]
    ScaleOutOfRange { param: String, scale: f32 },
}

/// Who sent an update, for which window, under which settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadMeta {
    pub window: u64,
    pub uid: u16,
    pub hotkey: String,
    pub hparams_digest: String,
}

/// Transmitted values of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    Quantized(Quantized),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::Quantized(q) => q.codes.len(),
        }
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
struct CodecHeader {
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

fn params_header(codec: &Codec) -> Vec<(String, Vec<i64>)> {
    codec
        .names
        .iter()
        .zip(&codec.layouts)
        .map(|(n, l)| (n.clone(), l.shape.clone()))
        .collect()
}

fn digest(metadata: &BTreeMap<String, String>, tensors: &RawTensors) -> String {
    digest_views(
        metadata,
        tensors
            .iter()
            .map(|(n, (_, _, d))| (n.as_str(), d.as_slice())),
    )
}

fn digest_views<'a>(
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

fn f32_from(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Payload {
    /// Quantise (per the codec) and collect one window's selected coefficients.
    pub fn from_selected(meta: PayloadMeta, codec: &Codec, selected: &[Selected]) -> Payload {
        let bits = codec.params.value_bits;
        let params = selected
            .iter()
            .map(|s| {
                let idx = s.indices.flatten(0, -1).to_device(Device::Cpu);
                let indices: Vec<u16> = Vec::<i64>::try_from(&idx)
                    .expect("indices are i64")
                    .into_iter()
                    .map(|i| i as u16)
                    .collect();
                let values = if bits == 32 {
                    let v = s
                        .values
                        .flatten(0, -1)
                        .to_kind(Kind::Float)
                        .to_device(Device::Cpu);
                    Values::F32(Vec::<f32>::try_from(&v).expect("values are f32"))
                } else {
                    Values::Quantized(Quantized::quantize(&s.values, bits))
                };
                ParamUpdate { indices, values }
            })
            .collect();
        Payload { meta, params }
    }

    /// The update as tensors on `device` (values dequantised), ready for the batch decoder.
    pub fn selected(&self, codec: &Codec, device: Device) -> Vec<Selected> {
        self.params
            .iter()
            .zip(&codec.layouts)
            .map(|(p, l)| {
                let idx: Vec<i64> = p.indices.iter().map(|&i| i as i64).collect();
                let values = match &p.values {
                    Values::F32(v) => Tensor::from_slice(v).to_device(device),
                    Values::Quantized(q) => q.dequantize(device),
                };
                Selected {
                    indices: Tensor::from_slice(&idx)
                        .view([l.num_blocks(), l.k])
                        .to_device(device),
                    values: values.view([l.num_blocks(), l.k]),
                }
            })
            .collect()
    }

    /// Serialise to safetensors bytes, with the digest in the metadata.
    pub fn to_bytes(&self, codec: &Codec) -> Vec<u8> {
        let mut tensors = RawTensors::new();
        for (name, p) in codec.names.iter().zip(&self.params) {
            let idx = pack_indices_12bit(&p.indices);
            tensors.insert(format!("{name}.idx"), (Dtype::U8, vec![idx.len()], idx));
            match &p.values {
                Values::F32(v) => {
                    tensors.insert(
                        format!("{name}.val"),
                        (Dtype::F32, vec![v.len()], f32_bytes(v)),
                    );
                }
                Values::Quantized(q) => {
                    let codes = if q.bits == 2 {
                        pack_2bit(&q.codes)
                    } else {
                        q.codes.clone()
                    };
                    tensors.insert(format!("{name}.val"), (Dtype::U8, vec![codes.len()], codes));
                    let mut qp = vec![q.shift, q.scale];
                    qp.extend_from_slice(&q.lookup);
                    tensors.insert(
                        format!("{name}.qp"),
                        (Dtype::F32, vec![qp.len()], f32_bytes(&qp)),
                    );
                }
            }
        }
        let metadata = self.metadata(codec);
        serialize(metadata, tensors)
    }

    fn metadata(&self, codec: &Codec) -> BTreeMap<String, String> {
        let m = &self.meta;
        BTreeMap::from([
            ("format".into(), FORMAT_NAME.into()),
            ("version".into(), FORMAT_VERSION.into()),
            ("window".into(), m.window.to_string()),
            ("uid".into(), m.uid.to_string()),
            ("hotkey".into(), m.hotkey.clone()),
            ("hparams_digest".into(), m.hparams_digest.clone()),
            (
                "codec".into(),
                serde_json::to_string(&CodecHeader::from(&codec.params)).expect("JSON"),
            ),
            (
                "params".into(),
                serde_json::to_string(&params_header(codec)).expect("JSON"),
            ),
        ])
    }
}

/// Writes tensors and metadata (digest added) as safetensors. Public for tests that build
/// deliberately malformed payloads.
pub fn serialize(mut metadata: BTreeMap<String, String>, tensors: RawTensors) -> Vec<u8> {
    metadata.remove("sha256");
    let sha = digest(&metadata, &tensors);
    metadata.insert("sha256".into(), sha);
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

/// Checks received payloads against this node's model and codec.
pub struct PayloadValidator<'a> {
    codec: &'a Codec,
    max_bytes: u64,
    expected_hparams: Option<String>,
}

impl<'a> PayloadValidator<'a> {
    pub fn new(codec: &'a Codec) -> Self {
        let max_bytes = match codec.params.max_payload_bytes {
            0 => expected_tensor_bytes(codec) + HEADER_ALLOWANCE,
            n => n,
        };
        Self {
            codec,
            max_bytes,
            expected_hparams: None,
        }
    }

    /// Also require this hyperparameter digest.
    pub fn with_hparams_digest(mut self, digest: impl Into<String>) -> Self {
        self.expected_hparams = Some(digest.into());
        self
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn validate(&self, bytes: &[u8]) -> Result<Payload, PayloadError> {
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Err(PayloadError::TooLarge {
                size,
                max: self.max_bytes,
            });
        }
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| PayloadError::Malformed(e.to_string()))?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| PayloadError::Malformed(e.to_string()))?;
        let mut metadata: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let meta = self.check_metadata(&metadata)?;

        // Exactly the expected tensors, with the expected dtypes and shapes.
        let expected = expected_tensors(self.codec);
        let views: HashMap<String, TensorView<'_>> = st.tensors().into_iter().collect();
        for name in expected.keys() {
            if !views.contains_key(name) {
                return Err(PayloadError::MissingTensor(name.clone()));
            }
        }
        let mut names: Vec<&String> = views.keys().collect();
        names.sort();
        for name in &names {
            let Some((dtype, shape)) = expected.get(*name) else {
                return Err(PayloadError::ExtraTensor((*name).clone()));
            };
            let v = &views[*name];
            if v.dtype() != *dtype {
                return Err(PayloadError::WrongDtype {
                    tensor: (*name).clone(),
                    expected: format!("{dtype:?}"),
                    found: format!("{:?}", v.dtype()),
                });
            }
            if v.shape() != shape.as_slice() {
                if let Some(param) = name.strip_suffix(".idx")
                    && v.shape().len() == 1
                {
                    return Err(PayloadError::IndexCount {
                        param: param.to_string(),
                        expected: shape[0] / 3 * 2,
                        found: v.shape()[0] / 3 * 2,
                    });
                }
                return Err(PayloadError::WrongShape {
                    tensor: (*name).clone(),
                    expected: shape.clone(),
                    found: v.shape().to_vec(),
                });
            }
        }

        let claimed = metadata
            .remove("sha256")
            .ok_or(PayloadError::MissingMetadata("sha256"))?;
        let actual = digest_views(
            &metadata,
            names.iter().map(|n| (n.as_str(), views[*n].data())),
        );
        if claimed != actual {
            return Err(PayloadError::DigestMismatch);
        }

        let params = self
            .codec
            .names
            .iter()
            .zip(&self.codec.layouts)
            .map(|(name, layout)| self.check_param(name, layout, &views))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Payload { meta, params })
    }

    fn check_metadata(&self, m: &BTreeMap<String, String>) -> Result<PayloadMeta, PayloadError> {
        let get = |k: &'static str| m.get(k).ok_or(PayloadError::MissingMetadata(k));
        let format = get("format")?;
        if format != FORMAT_NAME {
            return Err(PayloadError::WrongFormat(format.clone()));
        }
        let version = get("version")?;
        if version != FORMAT_VERSION {
            return Err(PayloadError::WrongVersion {
                found: version.clone(),
            });
        }
        let bad = |key, reason: String| PayloadError::BadMetadata { key, reason };
        let window = get("window")?
            .parse::<u64>()
            .map_err(|e| bad("window", e.to_string()))?;
        let uid = get("uid")?
            .parse::<u16>()
            .map_err(|e| bad("uid", e.to_string()))?;
        let hotkey = get("hotkey")?.clone();
        let hparams_digest = get("hparams_digest")?.clone();
        let codec: CodecHeader =
            serde_json::from_str(get("codec")?).map_err(|e| bad("codec", e.to_string()))?;
        let ours = CodecHeader::from(&self.codec.params);
        if codec != ours {
            return Err(PayloadError::CodecMismatch {
                expected: serde_json::to_string(&ours).unwrap_or_default(),
                found: serde_json::to_string(&codec).unwrap_or_default(),
            });
        }
        let params: Vec<(String, Vec<i64>)> =
            serde_json::from_str(get("params")?).map_err(|e| bad("params", e.to_string()))?;
        let ours = params_header(self.codec);
        if params != ours {
            let reason = match params.iter().zip(&ours).find(|(a, b)| a != b) {
                Some((a, b)) => format!("payload has {a:?} where the model has {b:?}"),
                None => format!("{} parameters, the model has {}", params.len(), ours.len()),
            };
            return Err(PayloadError::ParamsMismatch(reason));
        }
        if let Some(expected) = &self.expected_hparams
            && *expected != hparams_digest
        {
            return Err(PayloadError::HparamsMismatch {
                expected: expected.clone(),
                found: hparams_digest,
            });
        }
        Ok(PayloadMeta {
            window,
            uid,
            hotkey,
            hparams_digest,
        })
    }

    fn check_param(
        &self,
        name: &str,
        layout: &BlockLayout,
        views: &HashMap<String, TensorView<'_>>,
    ) -> Result<ParamUpdate, PayloadError> {
        let n = layout.num_selected();
        let idx_bytes = views[&format!("{name}.idx")].data();
        let indices =
            unpack_indices_12bit(idx_bytes, n).ok_or_else(|| PayloadError::IndexCount {
                param: name.into(),
                expected: n,
                found: idx_bytes.len() / 3 * 2,
            })?;
        let size = layout.block_size();
        let mut seen = vec![u32::MAX; size.max(1) as usize];
        for (i, &index) in indices.iter().enumerate() {
            let block = i / layout.k as usize;
            if index as i64 >= size {
                return Err(PayloadError::IndexOutOfRange {
                    param: name.into(),
                    block,
                    index,
                    size,
                });
            }
            // One stamp per block: a repeated index would count a peer twice in the mean.
            if seen[index as usize] == block as u32 {
                return Err(PayloadError::DuplicateIndex {
                    param: name.into(),
                    block,
                    index,
                });
            }
            seen[index as usize] = block as u32;
        }
        let val = views[&format!("{name}.val")].data();
        let values = match self.codec.params.value_bits {
            32 => {
                let v = f32_from(val);
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(PayloadError::NonFiniteValues { param: name.into() });
                }
                Values::F32(v)
            }
            bits => {
                let qp = f32_from(views[&format!("{name}.qp")].data());
                if qp.iter().any(|x| !x.is_finite()) {
                    return Err(PayloadError::NonFiniteQuantParams { param: name.into() });
                }
                let scale = qp[1];
                if !(scale.abs() as f64 > SCALE_MIN && (scale.abs() as f64) < SCALE_MAX) {
                    return Err(PayloadError::ScaleOutOfRange {
                        param: name.into(),
                        scale,
                    });
                }
                let codes = if bits == 2 {
                    unpack_2bit(val, n).expect("length checked against the shape")
                } else {
                    val.to_vec()
                };
                Values::Quantized(Quantized {
                    bits,
                    codes,
                    shift: qp[0],
                    scale,
                    lookup: qp[2..].to_vec(),
                })
            }
        };
        debug_assert_eq!(values.len(), n);
        Ok(ParamUpdate { indices, values })
    }
}

/// Name -> (dtype, shape) of every tensor a valid payload holds.
fn expected_tensors(codec: &Codec) -> HashMap<String, (Dtype, Vec<usize>)> {
    let bits = codec.params.value_bits;
    let mut out = HashMap::new();
    for (name, l) in codec.names.iter().zip(&codec.layouts) {
        let n = l.num_selected();
        out.insert(
            format!("{name}.idx"),
            (Dtype::U8, vec![packed_index_len(n)]),
        );
        match bits {
            32 => {
                out.insert(format!("{name}.val"), (Dtype::F32, vec![n]));
            }
            b => {
                let len = if b == 2 { packed_2bit_len(n) } else { n };
                out.insert(format!("{name}.val"), (Dtype::U8, vec![len]));
                out.insert(
                    format!("{name}.qp"),
                    (Dtype::F32, vec![2 + Quantized::bins(b)]),
                );
            }
        }
    }
    out
}

/// Bytes of tensor data in a valid payload for this codec.
pub fn expected_tensor_bytes(codec: &Codec) -> u64 {
    expected_tensors(codec)
        .values()
        .map(|(dt, shape)| (dt.bitsize() / 8 * shape.iter().product::<usize>()) as u64)
        .sum()
}
