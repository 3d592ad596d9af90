//! `bench codec`: encode and decode time of the whole model (one payload, as a node sends
//! and receives it), payload size and compression ratio versus fp32.

use super::{sync, time_ms};
use crate::codec::Codec;
use crate::hparams::{CodecParams, ModelConfig};
use crate::model::parameter_shapes;
use rayon::prelude::*;
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

/// The parameters of one shape and their block layout (what the baseline script rebuilds).
#[derive(Debug, Serialize)]
pub struct ShapeGroup {
    pub shape: Vec<i64>,
    /// How many parameters of the model have this shape.
    pub count: usize,
    pub block: [i64; 2],
    pub k: i64,
}

#[derive(Debug, Serialize)]
pub struct CodecBench {
    pub model: String,
    pub device: String,
    pub codec: CodecParams,
    pub parameters: i64,
    pub peers: usize,
    /// Timings are the median of this many repetitions.
    pub reps: usize,
    pub shapes: Vec<ShapeGroup>,
    /// The whole model: transform + top-k + quantise + pack + serialise (digest included).
    pub total_encode_ms: f64,
    /// The whole model, one peer: validate + unpack + dequantise + scatter-mean + inverse
    /// transform, for every parameter.
    pub total_decode_1_ms: f64,
    /// The same for `peers` peers merged at once.
    pub total_decode_n_ms: f64,
    pub decode_n_over_1: f64,
    pub payload_bytes: usize,
    pub fp32_bytes: u64,
    pub compression_ratio: f64,
}

/// One peer's stand-in update: a random tensor per distinct shape, shared by the parameters
/// of that shape (the codec's work does not depend on the values' origin).
fn peer_update(codec: &Codec, device: Device) -> Vec<Tensor> {
    let mut by_shape: BTreeMap<&[i64], Tensor> = BTreeMap::new();
    codec
        .spec
        .layouts
        .iter()
        .map(|l| {
            by_shape
                .entry(&l.shape)
                .or_insert_with(|| Tensor::randn(l.shape.as_slice(), (Kind::Float, device)))
                .shallow_clone()
        })
        .collect()
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
    let codec = Codec::new(codec_params, &parameter_shapes(cfg));
    let validator = PayloadValidator::new(&codec.spec);
    let mut by_shape: BTreeMap<Vec<i64>, (usize, [i64; 2], i64)> = BTreeMap::new();
    for l in &codec.spec.layouts {
        by_shape
            .entry(l.shape.clone())
            .or_insert((0, [l.h, l.w], l.k))
            .0 += 1;
    }
    let shapes = by_shape
        .into_iter()
        .map(|(shape, (count, block, k))| ShapeGroup {
            shape,
            count,
            block,
            k,
        })
        .collect();
    tch::manual_seed(0);
    let encode = |uid: u16, update: &[Tensor]| {
        let selected = codec.encode(update);
        let bytes = codec
            .to_payload(bench_meta(uid), &selected)
            .to_bytes(&codec.spec);
        sync(device);
        bytes
    };
    // Each peer's payload from its own random update; only the first update is kept.
    let first = peer_update(&codec, device);
    let mut payloads = vec![encode(0, &first)];
    for uid in 1..peers {
        payloads.push(encode(uid as u16, &peer_update(&codec, device)));
    }
    let total_encode_ms = time_ms(reps, || {
        let _ = encode(0, &first);
    });
    drop(first);
    // Payloads are validated and unpacked one per core, as a node's gather and admission do.
    let decode = |n: usize| {
        let selected: Vec<_> = payloads[..n]
            .par_iter()
            .map(|b| {
                let payload = validator.validate(b).expect("own payload is valid");
                codec.selected(&payload, device)
            })
            .collect();
        for (i, layout) in codec.spec.layouts.iter().enumerate() {
            let refs: Vec<_> = selected.iter().map(|s| &s[i]).collect();
            let _ = codec.batch_decode(layout, &refs);
        }
        sync(device);
    };
    let total_decode_1_ms = time_ms(reps, || decode(1));
    let total_decode_n_ms = time_ms(reps, || decode(peers));
    let payload_bytes = payloads[0].len();
    let parameters: i64 = codec.spec.layouts.iter().map(|l| l.numel()).sum();
    let fp32_bytes = parameters as u64 * 4;
    CodecBench {
        model: model.into(),
        device: format!("{device:?}"),
        codec: codec_params.clone(),
        parameters,
        peers,
        reps,
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
