//! `bench codec`: encode and decode time per parameter shape and for the whole model,
//! payload size and compression ratio versus fp32.

use super::{sync, time_ms};
use crate::codec::Codec;
use crate::hparams::{CodecParams, ModelConfig};
use crate::model::parameter_shapes;
use serde::Serialize;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};
use templar_protocol::Hotkey;
use templar_protocol::payload::{PayloadMeta, PayloadValidator};

fn bench_meta(uid: u16) -> PayloadMeta {
    PayloadMeta {
        window: 0,
        uid,
        hotkey: Hotkey::parse("bench").expect("a valid constant hotkey"),
        hparams_digest: String::new(),
        model_sample: Vec::new(),
    }
}

#[derive(Debug, Serialize)]
pub struct ShapeFigures {
    pub shape: Vec<i64>,
    /// How many parameters of the model have this shape.
    pub count: usize,
    pub block: [i64; 2],
    pub k: i64,
    /// Transform + top-k + quantise + pack + serialise, one tensor.
    pub encode_ms: f64,
    /// Validate + unpack + dequantise + scatter-mean + inverse transform, one peer.
    pub decode_1_ms: f64,
    /// The same for `peers` peers merged at once.
    pub decode_n_ms: f64,
    pub payload_bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct CodecBench {
    pub model: String,
    pub device: String,
    pub codec: CodecParams,
    pub parameters: i64,
    pub peers: usize,
    pub shapes: Vec<ShapeFigures>,
    pub total_encode_ms: f64,
    pub total_decode_1_ms: f64,
    pub total_decode_n_ms: f64,
    pub decode_n_over_1: f64,
    pub payload_bytes: usize,
    pub fp32_bytes: u64,
    pub compression_ratio: f64,
}

/// Encode and decode timings of one parameter shape (`count` parameters have it).
fn measure_shape(
    codec_params: &CodecParams,
    shape: Vec<i64>,
    count: usize,
    peers: usize,
    reps: usize,
    device: Device,
) -> ShapeFigures {
    let codec = Codec::new(codec_params, &[("p".into(), shape.clone())]);
    let validator = PayloadValidator::new(&codec.spec);
    let layout = &codec.spec.layouts[0];
    let encode = |uid: u16, x: &Tensor| {
        let sel = codec.encode(std::slice::from_ref(x));
        codec
            .to_payload(bench_meta(uid), &sel)
            .to_bytes(&codec.spec)
    };
    let inputs: Vec<Tensor> = (0..peers)
        .map(|_| Tensor::randn(shape.as_slice(), (Kind::Float, device)))
        .collect();
    let mut bytes = Vec::new();
    let encode_ms = time_ms(reps, || {
        bytes = encode(0, &inputs[0]);
        sync(device);
    });
    let payloads: Vec<Vec<u8>> = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| encode(i as u16, x))
        .collect();
    let decode = |n: usize| {
        let sel: Vec<_> = payloads[..n]
            .iter()
            .map(|b| {
                let payload = validator.validate(b).expect("own payload is valid");
                codec.selected(&payload, device)
            })
            .collect();
        let refs: Vec<_> = sel.iter().map(|s| &s[0]).collect();
        let out = codec.batch_decode(layout, &refs);
        sync(device);
        out
    };
    let decode_1_ms = time_ms(reps, || {
        let _ = decode(1);
    });
    let decode_n_ms = time_ms(reps, || {
        let _ = decode(peers);
    });
    ShapeFigures {
        block: [layout.h, layout.w],
        k: layout.k,
        shape,
        count,
        encode_ms,
        decode_1_ms,
        decode_n_ms,
        payload_bytes: bytes.len(),
    }
}

/// Bytes of a whole-model payload: one real serialisation, header included (encoded one
/// parameter at a time, so the model's fp32 tensors never all exist at once).
fn model_payload_bytes(cfg: &ModelConfig, codec_params: &CodecParams, device: Device) -> usize {
    let full = Codec::new(codec_params, &parameter_shapes(cfg));
    let selected: Vec<_> = full
        .spec
        .layouts
        .iter()
        .map(|l| full.encode_tensor(l, &Tensor::randn(l.shape.as_slice(), (Kind::Float, device))))
        .collect();
    full.to_payload(bench_meta(0), &selected)
        .to_bytes(&full.spec)
        .len()
}

pub fn codec_bench(
    model: &str,
    cfg: &ModelConfig,
    codec_params: &CodecParams,
    peers: usize,
    reps: usize,
    device: Device,
) -> CodecBench {
    let peers = peers.max(1);
    let mut by_shape: BTreeMap<Vec<i64>, usize> = BTreeMap::new();
    for (_, shape) in parameter_shapes(cfg) {
        *by_shape.entry(shape).or_default() += 1;
    }
    tch::manual_seed(0);
    let shapes: Vec<ShapeFigures> = by_shape
        .into_iter()
        .map(|(shape, count)| measure_shape(codec_params, shape, count, peers, reps, device))
        .collect();
    let sum = |f: &dyn Fn(&ShapeFigures) -> f64| {
        shapes.iter().map(|s| f(s) * s.count as f64).sum::<f64>()
    };
    let total_encode_ms = sum(&|s| s.encode_ms);
    let total_decode_1_ms = sum(&|s| s.decode_1_ms);
    let total_decode_n_ms = sum(&|s| s.decode_n_ms);
    let payload_bytes = model_payload_bytes(cfg, codec_params, device);
    let parameters: i64 = parameter_shapes(cfg)
        .iter()
        .map(|(_, s)| s.iter().product::<i64>())
        .sum();
    let fp32_bytes = parameters as u64 * 4;
    CodecBench {
        model: model.into(),
        device: format!("{device:?}"),
        codec: codec_params.clone(),
        parameters,
        peers,
        shapes,
        total_encode_ms,
        total_decode_1_ms,
        total_decode_n_ms,
        decode_n_over_1: total_decode_n_ms / total_decode_1_ms.max(1e-9),
        payload_bytes,
        fp32_bytes,
        compression_ratio: fp32_bytes as f64 / payload_bytes.max(1) as f64,
    }
}

impl CodecBench {
    /// One line for people; the JSON is for scripts.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} params, encode {:.1} ms, decode 1 peer {:.1} ms, {} peers {:.1} ms ({:.2}x), payload {} B, {:.1}x smaller than fp32",
            self.model,
            self.parameters,
            self.total_encode_ms,
            self.total_decode_1_ms,
            self.peers,
            self.total_decode_n_ms,
            self.decode_n_over_1,
            self.payload_bytes,
            self.compression_ratio
        )
    }
}
