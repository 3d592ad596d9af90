//! Model checkpoints: every parameter as F32 in safetensors, with the window, global step and a
//! SHA-256 of every tensor's bytes (by name) in the metadata, so that a checkpoint
//! damaged on disk or in transit is refused rather than loaded. The `LATEST` pointer is
//! written after the checkpoint itself.

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointPointer {
    pub window: u64,
    pub global_step: u64,
    /// The model sample at this checkpoint (`Engine::model_sample`): every node compares its
    /// own at the same window with it (the sync check) without downloading the checkpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_sample: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a readable checkpoint: {0}")]
    Malformed(String),
    #[error("checkpoint lacks parameter {0:?} or has another shape")]
    Mismatch(String),
    #[error("checkpoint was made with other hyperparameters")]
    Hparams,
    #[error("checkpoint is damaged: its tensors do not match its checksum")]
    Checksum,
}

/// SHA-256 over each named tensor's bytes, taken in name order (a safetensors file keeps no
/// order of its own).
fn tensors_digest<'a>(tensors: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    use sha2::{Digest, Sha256};
    let mut tensors: Vec<(&str, &[u8])> = tensors.collect();
    tensors.sort_unstable_by_key(|(name, _)| *name);
    let mut h = Sha256::new();
    for (name, bytes) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

pub fn encode(
    params: &[(String, Tensor)],
    pointer: &CheckpointPointer,
    hparams_digest: &str,
) -> Vec<u8> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = params
        .iter()
        .map(|(n, t)| {
            let flat = t.to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1);
            let v = Vec::<f32>::try_from(&flat).expect("f32 tensor");
            let shape = t.size().iter().map(|&d| d as usize).collect();
            (
                n.clone(),
                shape,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("view"),
            )
        })
        .collect();
    let digest = tensors_digest(data.iter().map(|(n, _, b)| (n.as_str(), b.as_slice())));
    let meta = HashMap::from([
        ("sha256".to_string(), digest),
        ("window".to_string(), pointer.window.to_string()),
        ("global_step".to_string(), pointer.global_step.to_string()),
        ("hparams_digest".to_string(), hparams_digest.to_string()),
    ]);
    safetensors::serialize(views, Some(meta)).expect("serialisable")
}

/// Copies a checkpoint into `params` (same names and shapes) and returns its pointer.
pub fn load_into(
    bytes: &[u8],
    params: &[(String, Tensor)],
    hparams_digest: &str,
) -> Result<CheckpointPointer, CheckpointError> {
    let bad = |e: String| CheckpointError::Malformed(e);
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("hparams_digest").map(String::as_str) != Some(hparams_digest) {
        return Err(CheckpointError::Hparams);
    }
    let num = |k: &str| -> Result<u64, CheckpointError> {
        meta.get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("metadata {k} missing or invalid")))
    };
    let pointer = CheckpointPointer {
        window: num("window")?,
        global_step: num("global_step")?,
        model_sample: Vec::new(),
    };
    // Checkpoints written before the checksum carry none; any other is checked.
    if let Some(expected) = meta.get("sha256") {
        let tensors = st.tensors();
        let actual = tensors_digest(tensors.iter().map(|(n, v)| (n.as_str(), v.data())));
        if &actual != expected {
            return Err(CheckpointError::Checksum);
        }
    }
    let mut loaded = Vec::with_capacity(params.len());
    for (name, t) in params {
        let v = st
            .tensor(name)
            .map_err(|_| CheckpointError::Mismatch(name.clone()))?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        if v.dtype() != Dtype::F32 || v.shape() != shape.as_slice() {
            return Err(CheckpointError::Mismatch(name.clone()));
        }
        let floats: Vec<f32> = v
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if floats.iter().any(|x| !x.is_finite()) {
            return Err(bad(format!("non-finite values in {name}")));
        }
        loaded.push(Tensor::from_slice(&floats).view(t.size().as_slice()));
    }
    tch::no_grad(|| {
        for ((_, t), src) in params.iter().zip(loaded) {
            let mut t = t.shallow_clone();
            t.copy_(&src.to_device(t.device()));
        }
    });
    Ok(pointer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<(String, Tensor)> {
        vec![
            (
                "a.weight".into(),
                Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]),
            ),
            ("b.bias".into(), Tensor::from_slice(&[0.5f32, -0.5])),
        ]
    }

    fn pointer() -> CheckpointPointer {
        CheckpointPointer {
            window: 7,
            global_step: 3,
            model_sample: Vec::new(),
        }
    }

    #[test]
    fn a_checkpoint_round_trips_and_a_flipped_byte_is_refused_by_its_checksum() {
        let bytes = encode(&params(), &pointer(), "d");
        let target = vec![
            (
                "a.weight".to_string(),
                Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
            ),
            (
                "b.bias".to_string(),
                Tensor::zeros([2], (Kind::Float, Device::Cpu)),
            ),
        ];
        assert_eq!(load_into(&bytes, &target, "d").unwrap().window, 7);
        assert_eq!(target[1].1.double_value(&[1]), -0.5);

        // One bit of a value changed: still a finite float in a well-formed file.
        let mut damaged = bytes.clone();
        let last = damaged.len() - 2;
        damaged[last] ^= 0x01;
        let fresh = vec![
            (
                "a.weight".to_string(),
                Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
            ),
            (
                "b.bias".to_string(),
                Tensor::zeros([2], (Kind::Float, Device::Cpu)),
            ),
        ];
        assert!(matches!(
            load_into(&damaged, &fresh, "d"),
            Err(CheckpointError::Checksum)
        ));
        assert_eq!(fresh[1].1.double_value(&[1]), 0.0, "nothing loaded");
        // Cut short: not a checkpoint at all.
        assert!(matches!(
            load_into(&bytes[..bytes.len() / 2], &fresh, "d"),
            Err(CheckpointError::Malformed(_))
        ));
    }
}
