//! Payloads built without torch, shared by the protocol's tests.
#![allow(dead_code)] // each test binary uses a part

use templar_protocol::Hotkey;
use templar_protocol::hparams::CodecParams;
use templar_protocol::identity::{Signer, Sr25519Signer};
use templar_protocol::payload::{
    CodecSpec, ParamUpdate, Payload, PayloadMeta, Quantized, RawMetadata, RawTensors, Values,
    deserialize_raw, serialize, signing_message,
};

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

/// The sr25519 key the tests' signed payloads come from.
pub fn test_signer() -> Sr25519Signer {
    Sr25519Signer::from_seed(&[3; 32]).unwrap()
}

/// A well-formed update of `uid` for `window`, signed by [`test_signer`].
pub fn payload_for(codec: &Codec, window: u64, uid: u16) -> (Payload, Vec<u8>) {
    let signer = test_signer();
    let payload = build(codec, window, uid, signer.hotkey().as_str());
    let bytes = payload.to_signed_bytes(codec, &signer);
    (payload, bytes)
}

/// A well-formed, unsigned update of `uid` for `window` that names `hotkey` (a devnet name)
/// as its sender.
pub fn payload_by(codec: &Codec, window: u64, uid: u16, hotkey: &str) -> (Payload, Vec<u8>) {
    let payload = build(codec, window, uid, hotkey);
    let bytes = payload.to_bytes(codec);
    (payload, bytes)
}

/// Serialise after a change, signing again with [`test_signer`] when the payload was signed
/// (an attacker signs its own crafted payloads; the digest is recomputed either way).
pub fn reserialize(mut meta: RawMetadata, tensors: RawTensors) -> Vec<u8> {
    if meta.remove("signature").is_none() {
        return serialize(meta, tensors);
    }
    let unsigned = serialize(meta.clone(), tensors.clone());
    let (with_digest, _) = deserialize_raw(&unsigned).unwrap();
    let field = |k: &str| meta.get(k).cloned().unwrap_or_default();
    let claims = PayloadMeta {
        window: field("window").parse().unwrap_or_default(),
        uid: field("uid").parse().unwrap_or_default(),
        hotkey: Hotkey::parse(&field("hotkey")).unwrap_or_else(|_| Hotkey::parse("x").unwrap()),
        hparams_digest: field("hparams_digest"),
        model_sample: Vec::new(),
    };
    let signature = test_signer().sign(&signing_message(&with_digest["sha256"], &claims));
    meta.insert("signature".into(), hex::encode(signature));
    serialize(meta, tensors)
}

fn build(codec: &Codec, window: u64, uid: u16, hotkey: &str) -> Payload {
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
    Payload { meta, params }
}
