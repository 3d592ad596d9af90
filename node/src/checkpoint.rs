//! Model checkpoints: every parameter as F32 in safetensors, with the window and global step
//! in the metadata. The `LATEST` pointer is written after the checkpoint itself.

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
    let meta = HashMap::from([
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
