//! [`PayloadValidator`]: received bytes checked against this node's codec settings and model,
//! with a reason for every rejection; it never panics on any input.

use super::pack::{packed_2bit_len, packed_index_len, unpack_2bit, unpack_indices_12bit};
use super::quant::{Quantized, SCALE_MAX, SCALE_MIN, dequantize_entry};
use super::wire::{self, key};
use super::{
    BlockLayout, CodecHeader, CodecSpec, FORMAT_NAME, FORMAT_VERSION, MODEL_SAMPLE_SIZE,
    ParamUpdate, Payload, PayloadMeta, Values, digest_views, f32_from, signing_message,
};
use crate::identity::Hotkey;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::{BTreeMap, HashMap};

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
    #[error("unsigned payload from {hotkey}: {why}")]
    MissingSignature { hotkey: String, why: &'static str },
    #[error("bad signature: {0}")]
    BadSignature(String),
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
    #[error(
        "parameter {param:?} has lookup value {value:e}, beyond {bound:e} (what its scale and value count allow)"
    )]
    LookupOutOfRange {
        param: String,
        value: f32,
        bound: f64,
    },
    #[error(
        "parameter {param:?} decodes to {value:e}, beyond {bound:e} (what honest training under these hyperparameters can send)"
    )]
    ValueOutOfRange {
        param: String,
        value: f32,
        bound: f64,
    },
    #[error(
        "payload is for window {window} uid {uid}, expected window {expected_window} uid {expected_uid}"
    )]
    WrongSlot {
        window: u64,
        uid: u16,
        expected_window: u64,
        expected_uid: u16,
    },
}

/// Checks received payloads against this node's model and codec.
pub struct PayloadValidator<'a> {
    codec: &'a CodecSpec,
    max_bytes: u64,
    expected_hparams: Option<String>,
    require_signatures: bool,
}

impl<'a> PayloadValidator<'a> {
    pub fn new(codec: &'a CodecSpec) -> Self {
        let max_bytes = match codec.params.max_payload_bytes {
            0 => expected_tensor_bytes(codec) + HEADER_ALLOWANCE,
            n => n,
        };
        Self {
            codec,
            max_bytes,
            expected_hparams: None,
            require_signatures: false,
        }
    }

    /// Refuse unsigned payloads even from hotkeys that cannot sign (devnet names). Without
    /// it, a payload whose hotkey is an SS58 address must still carry its valid signature.
    pub fn requiring_signatures(mut self) -> Self {
        self.require_signatures = true;
        self
    }

    /// Also require this hyperparameter digest.
    pub fn with_hparams_digest(mut self, digest: impl Into<String>) -> Self {
        self.expected_hparams = Some(digest.into());
        self
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Validate `bytes` as the payload of `uid` for window `window`.
    pub fn validate_for(
        &self,
        bytes: &[u8],
        uid: u16,
        window: u64,
    ) -> Result<Payload, PayloadError> {
        let p = self.validate(bytes)?;
        if p.meta.window != window || p.meta.uid != uid {
            return Err(PayloadError::WrongSlot {
                window: p.meta.window,
                uid: p.meta.uid,
                expected_window: window,
                expected_uid: uid,
            });
        }
        Ok(p)
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
                if let Some(param) = name.strip_suffix(wire::INDICES_SUFFIX)
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
            .remove(key::SHA256)
            .ok_or(PayloadError::MissingMetadata(key::SHA256))?;
        let signature = metadata.remove(key::SIGNATURE);
        let actual = digest_views(
            &metadata,
            names.iter().map(|n| (n.as_str(), views[*n].data())),
        );
        if claimed != actual {
            return Err(PayloadError::DigestMismatch);
        }
        self.check_signature(&actual, &meta, signature.as_deref())?;

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
        let format = get(key::FORMAT)?;
        if format != FORMAT_NAME {
            return Err(PayloadError::WrongFormat(format.clone()));
        }
        let version = get(key::VERSION)?;
        if version != FORMAT_VERSION {
            return Err(PayloadError::WrongVersion {
                found: version.clone(),
            });
        }
        let bad = |key, reason: String| PayloadError::BadMetadata { key, reason };
        let window = get(key::WINDOW)?
            .parse::<u64>()
            .map_err(|e| bad(key::WINDOW, e.to_string()))?;
        let uid = get(key::UID)?
            .parse::<u16>()
            .map_err(|e| bad(key::UID, e.to_string()))?;
        let hotkey =
            Hotkey::parse(get(key::HOTKEY)?).map_err(|e| bad(key::HOTKEY, e.to_string()))?;
        let hparams_digest = get(key::HPARAMS_DIGEST)?.clone();
        let codec: CodecHeader =
            serde_json::from_str(get(key::CODEC)?).map_err(|e| bad(key::CODEC, e.to_string()))?;
        let ours = CodecHeader::from(&self.codec.params);
        if codec != ours {
            return Err(PayloadError::CodecMismatch {
                expected: serde_json::to_string(&ours).unwrap_or_default(),
                found: serde_json::to_string(&codec).unwrap_or_default(),
            });
        }
        let params: Vec<(String, Vec<i64>)> =
            serde_json::from_str(get(key::PARAMS)?).map_err(|e| bad(key::PARAMS, e.to_string()))?;
        let ours = self.codec.shapes();
        if params != ours {
            let reason = match params.iter().zip(&ours).find(|(a, b)| a != b) {
                Some((a, b)) => format!("payload has {a:?} where the model has {b:?}"),
                None => format!("{} parameters, the model has {}", params.len(), ours.len()),
            };
            return Err(PayloadError::ParamsMismatch(reason));
        }
        let model_sample: Vec<f64> = serde_json::from_str(get(key::MODEL_SAMPLE)?)
            .map_err(|e| bad(key::MODEL_SAMPLE, e.to_string()))?;
        if model_sample.len() > MODEL_SAMPLE_SIZE || model_sample.iter().any(|x| !x.is_finite()) {
            return Err(bad(
                key::MODEL_SAMPLE,
                format!("at most {MODEL_SAMPLE_SIZE} finite numbers"),
            ));
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
            model_sample,
        })
    }

    fn check_param(
        &self,
        name: &str,
        layout: &BlockLayout,
        views: &HashMap<String, TensorView<'_>>,
    ) -> Result<ParamUpdate, PayloadError> {
        let indices = check_indices(name, layout, views[&wire::indices(name)].data())?;
        let val = views[&wire::values(name)].data();
        let n = layout.num_selected();
        let values = match self.codec.params.value_bits {
            32 => {
                let v = f32_from(val);
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(PayloadError::NonFiniteValues { param: name.into() });
                }
                self.check_decoded(name, v.iter().copied())?;
                Values::F32(v)
            }
            bits => {
                let qp = f32_from(views[&wire::quant(name)].data());
                let (shift, scale, lookup) = self.check_quant_params(name, bits, n, &qp)?;
                let codes = if bits == 2 {
                    unpack_2bit(val, n).expect("length checked against the shape")
                } else {
                    val.to_vec()
                };
                Values::Quantized(Quantized {
                    bits,
                    codes,
                    shift,
                    scale,
                    lookup,
                })
            }
        };
        debug_assert_eq!(values.len(), n);
        Ok(ParamUpdate { indices, values })
    }

    /// The quantisation parameters `[shift, scale, lookup..]`: finite, a scale in range, a
    /// lookup table within its bound, and every value they can decode to within the value
    /// bounds. Returns (shift, scale, lookup).
    fn check_quant_params(
        &self,
        name: &str,
        bits: u8,
        n: usize,
        qp: &[f32],
    ) -> Result<(f32, f32, Vec<f32>), PayloadError> {
        if qp.iter().any(|x| !x.is_finite()) {
            return Err(PayloadError::NonFiniteQuantParams { param: name.into() });
        }
        let (shift, scale, lookup) = (qp[0], qp[1], &qp[2..]);
        if !(scale.abs() as f64 > SCALE_MIN && (scale.abs() as f64) < SCALE_MAX) {
            return Err(PayloadError::ScaleOutOfRange {
                param: name.into(),
                scale,
            });
        }
        let bound = Quantized::lookup_bound(scale, bits, n);
        if let Some(&value) = lookup.iter().find(|x| x.abs() as f64 > bound) {
            return Err(PayloadError::LookupOutOfRange {
                param: name.into(),
                value,
                bound,
            });
        }
        // Every value dequantisation can produce (and the shift alone, which an empty bin's 0
        // entry yields) is checked as it will be computed.
        let decoded = lookup.iter().map(|&l| dequantize_entry(l, shift));
        self.check_decoded(name, std::iter::once(shift).chain(decoded))?;
        Ok((shift, scale, lookup.to_vec()))
    }
}

/// The packed indices of one parameter: the count its layout selects, each inside its block,
/// none repeated within a block (a repeat would count a peer twice in the mean).
fn check_indices(
    name: &str,
    layout: &BlockLayout,
    packed: &[u8],
) -> Result<Vec<u16>, PayloadError> {
    let n = layout.num_selected();
    let indices = unpack_indices_12bit(packed, n).ok_or_else(|| PayloadError::IndexCount {
        param: name.into(),
        expected: n,
        found: packed.len() / 3 * 2,
    })?;
    let size = layout.block_size();
    let mut seen = vec![u32::MAX; size.max(1) as usize];
    for (block, chunk) in indices.chunks(layout.k.max(1) as usize).enumerate() {
        for &index in chunk {
            if index as i64 >= size {
                return Err(PayloadError::IndexOutOfRange {
                    param: name.into(),
                    block,
                    index,
                    size,
                });
            }
            // One stamp per block.
            if seen[index as usize] == block as u32 {
                return Err(PayloadError::DuplicateIndex {
                    param: name.into(),
                    block,
                    index,
                });
            }
            seen[index as usize] = block as u32;
        }
    }
    Ok(indices)
}

impl PayloadValidator<'_> {
    /// A signature, when present or required, by the payload's hotkey over its digest and
    /// claims. An SS58 hotkey must always sign: nobody can write in its name.
    fn check_signature(
        &self,
        digest: &str,
        meta: &PayloadMeta,
        signature: Option<&str>,
    ) -> Result<(), PayloadError> {
        let Some(signature) = signature else {
            if meta.hotkey.is_address() {
                return Err(PayloadError::MissingSignature {
                    hotkey: meta.hotkey.to_string(),
                    why: "an SS58 hotkey signs its payloads",
                });
            }
            if self.require_signatures {
                return Err(PayloadError::MissingSignature {
                    hotkey: meta.hotkey.to_string(),
                    why: "signatures are required and a name cannot sign",
                });
            }
            return Ok(());
        };
        let bytes =
            hex::decode(signature).map_err(|_| PayloadError::BadSignature("not hex".into()))?;
        crate::identity::verify(&meta.hotkey, &signing_message(digest, meta), &bytes)
            .map_err(|e| PayloadError::BadSignature(e.to_string()))
    }

    /// Every decoded value finite and within the codec's value bound.
    fn check_decoded(
        &self,
        name: &str,
        values: impl IntoIterator<Item = f32>,
    ) -> Result<(), PayloadError> {
        let bound = self.codec.value_bound;
        match values
            .into_iter()
            .find(|x| !x.is_finite() || x.abs() as f64 > bound)
        {
            Some(value) if !value.is_finite() => {
                Err(PayloadError::NonFiniteValues { param: name.into() })
            }
            Some(value) => Err(PayloadError::ValueOutOfRange {
                param: name.into(),
                value,
                bound,
            }),
            None => Ok(()),
        }
    }
}

/// Name -> (dtype, shape) of every tensor a valid payload holds.
fn expected_tensors(codec: &CodecSpec) -> HashMap<String, (Dtype, Vec<usize>)> {
    let bits = codec.params.value_bits;
    let mut out = HashMap::new();
    for (name, l) in codec.names.iter().zip(&codec.layouts) {
        let n = l.num_selected();
        out.insert(wire::indices(name), (Dtype::U8, vec![packed_index_len(n)]));
        match bits {
            32 => {
                out.insert(wire::values(name), (Dtype::F32, vec![n]));
            }
            b => {
                let len = if b == 2 { packed_2bit_len(n) } else { n };
                out.insert(wire::values(name), (Dtype::U8, vec![len]));
                out.insert(
                    wire::quant(name),
                    (Dtype::F32, vec![2 + Quantized::bins(b)]),
                );
            }
        }
    }
    out
}

/// Bytes of tensor data in a valid payload for this codec.
pub fn expected_tensor_bytes(codec: &CodecSpec) -> u64 {
    expected_tensors(codec)
        .values()
        .map(|(dt, shape)| (dt.bitsize() / 8 * shape.iter().product::<usize>()) as u64)
        .sum()
}
