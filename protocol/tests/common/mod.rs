//! Payloads built without torch, shared by the protocol's tests.
#![allow(dead_code)] // each test binary uses a part

use templar_crds::hparams::CodecParams;
use templar_protocol::Hotkey;
use templar_protocol::payload::{CodecSpec, ParamUpdate, Payload, PayloadMeta, Quantized, Values};

type Codec = CodecSpec;

pub fn shapes() -> Vec<(String, Vec<i64>)> {
    // A 2-D weight with 2048-element blocks (so out-of-range indices exist below 4096),
    // a 1-D norm, and a 2-D tensor with a prime dimension.
    vec![
        ("a.weight".into(), vec![64, 32]),
        ("b.norm".into(), vec![48]),
        ("c.weight".into(), vec![13, 8]),
    ]
}

pub fn codec(value_bits: u8) -> Codec {
    let p = CodecParams {
        topk: 8,
        value_bits,
        use_dct: true,
        ..CodecParams::default()
    };
    Codec::new(&p, &shapes())
}

/// A small deterministic generator (the values only need to vary, not to be random).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// A well-formed update: k distinct block-local indices per block, values per the codec.
pub fn valid_payload(codec: &Codec) -> (Payload, Vec<u8>) {
    payload_for(codec, 7, 3)
}

/// A well-formed update of `uid` for `window`.
pub fn payload_for(codec: &Codec, window: u64, uid: u16) -> (Payload, Vec<u8>) {
    payload_by(
        codec,
        window,
        uid,
        "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY",
    )
}

/// A well-formed update of `uid` for `window` that names `hotkey` as its sender.
pub fn payload_by(codec: &Codec, window: u64, uid: u16, hotkey: &str) -> (Payload, Vec<u8>) {
    let mut rng = Lcg(11 + window * 131 + uid as u64);
    let bits = codec.params.value_bits;
    let params = codec
        .layouts
        .iter()
        .map(|l| {
            let size = l.block_size() as u64;
            let mut indices = Vec::new();
            for _ in 0..l.num_blocks() {
                // Consecutive positions from a random start are distinct within the block.
                let start = rng.next() % size;
                indices.extend((0..l.k as u64).map(|j| ((start + j) % size) as u16));
            }
            let n = indices.len();
            let values = match bits {
                32 => Values::F32((0..n).map(|_| rng.next() as f32 / 1e9 - 2.0).collect()),
                b => {
                    let bins = Quantized::bins(b);
                    Values::Quantized(Quantized {
                        bits: b,
                        codes: (0..n).map(|_| (rng.next() % bins as u64) as u8).collect(),
                        shift: 0.01,
                        scale: 0.05,
                        // Bin means a real quantiser could produce from 8 or more values.
                        lookup: (0..bins)
                            .map(|i| (i as f32 - bins as f32 / 2.0) * 0.01)
                            .collect(),
                    })
                }
            };
            ParamUpdate { indices, values }
        })
        .collect();
    let meta = PayloadMeta {
        window,
        uid,
        hotkey: Hotkey::parse(hotkey).unwrap(),
        hparams_digest: "abc".into(),
        model_sample: vec![0.5, -0.25, 1e-3],
    };
    let payload = Payload { meta, params };
    let bytes = payload.to_bytes(codec);
    (payload, bytes)
}
