//! The payload validator rejects each kind of malformed payload with its own reason and
//! never panics, whatever the bytes. Payloads are built here without torch: the protocol
//! crate checks bytes, not tensors.

mod common;

use common::{codec, shapes, valid_payload};
use proptest::prelude::*;
use safetensors::Dtype;
use std::collections::BTreeMap;
use templar_protocol::hparams::CodecParams;
use templar_protocol::identity::Signer;
use templar_protocol::payload::pack::{pack_indices_12bit, unpack_indices_12bit};
use templar_protocol::payload::{
    CodecSpec, PayloadError, PayloadValidator, RawTensors, deserialize_raw,
};

type Codec = CodecSpec;
type Tensors = RawTensors;

/// Re-serialise `bytes` after `f` changed its metadata or tensors (digest recomputed).
fn mutate(bytes: &[u8], f: impl FnOnce(&mut BTreeMap<String, String>, &mut Tensors)) -> Vec<u8> {
    let (mut meta, mut tensors) = deserialize_raw(bytes).unwrap();
    f(&mut meta, &mut tensors);
    common::reserialize(meta, tensors)
}

fn reject(codec: &Codec, bytes: &[u8]) -> PayloadError {
    PayloadValidator::new(codec).validate(bytes).unwrap_err()
}

#[test]
fn a_valid_payload_round_trips() {
    for bits in [2, 8, 32] {
        let c = codec(bits);
        let (payload, bytes) = valid_payload(&c);
        let got = PayloadValidator::new(&c)
            .with_hparams_digest("abc")
            .validate(&bytes)
            .unwrap();
        assert_eq!(got, payload, "bits {bits}");
        assert_eq!(got.meta.uid, 3);
        assert_eq!(got.meta.window, 7);
    }
}

#[test]
fn wrong_format_or_version_is_rejected() {
    let c = codec(2);
    let (_, bytes) = valid_payload(&c);
    let b = mutate(&bytes, |m, _| {
        m.insert("version".into(), "1".into());
    });
    assert_eq!(
        reject(&c, &b),
        PayloadError::WrongVersion { found: "1".into() }
    );
    let b = mutate(&bytes, |m, _| {
        m.insert("format".into(), "gradient".into());
    });
    assert!(matches!(reject(&c, &b), PayloadError::WrongFormat(_)));
    let b = mutate(&bytes, |m, _| {
        m.remove("uid");
    });
    assert_eq!(reject(&c, &b), PayloadError::MissingMetadata("uid"));
    let b = mutate(&bytes, |m, _| {
        m.insert("window".into(), "-1".into());
    });
    assert!(matches!(
        reject(&c, &b),
        PayloadError::BadMetadata { key: "window", .. }
    ));
    let b = mutate(&bytes, |m, _| {
        m.insert("hotkey".into(), "two words".into());
    });
    assert!(matches!(
        reject(&c, &b),
        PayloadError::BadMetadata { key: "hotkey", .. }
    ));
}

#[test]
fn a_payload_for_another_window_or_uid_is_rejected() {
    let c = codec(2);
    let (payload, bytes) = valid_payload(&c);
    let v = PayloadValidator::new(&c);
    assert_eq!(v.validate_for(&bytes, 3, 7).unwrap(), payload);
    assert_eq!(
        v.validate_for(&bytes, 3, 8).unwrap_err(),
        PayloadError::WrongSlot {
            window: 7,
            uid: 3,
            expected_window: 8,
            expected_uid: 3
        }
    );
    let err = v.validate_for(&bytes, 4, 7).unwrap_err();
    assert_eq!(
        err.to_string(),
        "payload is for window 7 uid 3, expected window 7 uid 4"
    );
}

#[test]
fn other_settings_are_rejected() {
    let c = codec(2);
    let (_, bytes) = valid_payload(&c);
    // Same shapes, other codec: the metadata says so.
    assert!(matches!(
        reject(&codec(8), &bytes),
        PayloadError::CodecMismatch { .. }
    ));
    // Another model.
    let other = Codec::new(&c.params, &[("a.weight".into(), vec![64, 32])]);
    assert!(matches!(
        reject(&other, &bytes),
        PayloadError::ParamsMismatch(_)
    ));
    // Another hyperparameter digest.
    let err = PayloadValidator::new(&c)
        .with_hparams_digest("xyz")
        .validate(&bytes)
        .unwrap_err();
    assert!(matches!(err, PayloadError::HparamsMismatch { .. }));
}

#[test]
fn missing_and_extra_tensors_are_rejected() {
    let c = codec(2);
    let (_, bytes) = valid_payload(&c);
    let b = mutate(&bytes, |_, t| {
        t.remove("b.norm.qp");
    });
    assert_eq!(
        reject(&c, &b),
        PayloadError::MissingTensor("b.norm.qp".into())
    );
    let b = mutate(&bytes, |_, t| {
        t.insert("z.extra".into(), (Dtype::U8, vec![1], vec![0]));
    });
    assert_eq!(reject(&c, &b), PayloadError::ExtraTensor("z.extra".into()));
}

#[test]
fn wrong_dtypes_and_shapes_are_rejected() {
    let c = codec(2);
    let (_, bytes) = valid_payload(&c);
    let b = mutate(&bytes, |_, t| {
        let (_, shape, data) = t.remove("a.weight.qp").unwrap();
        t.insert("a.weight.qp".into(), (Dtype::I32, shape, data));
    });
    assert!(matches!(reject(&c, &b), PayloadError::WrongDtype { .. }));
    let b = mutate(&bytes, |_, t| {
        let e = t.get_mut("a.weight.val").unwrap();
        e.1 = vec![e.1[0] / 2, 2];
    });
    assert!(matches!(reject(&c, &b), PayloadError::WrongShape { .. }));
}

#[test]
fn index_count_other_than_k_is_rejected() {
    let c = codec(2);
    let (_, bytes) = valid_payload(&c);
    // a.weight: 1 block of 2048, k = 8 -> 8 indices; send 6.
    let b = mutate(&bytes, |_, t| {
        let e = t.get_mut("a.weight.idx").unwrap();
        e.2.truncate(9);
        e.1 = vec![9];
    });
    assert_eq!(
        reject(&c, &b),
        PayloadError::IndexCount {
            param: "a.weight".into(),
            expected: 8,
            found: 6
        }
    );
}

fn rewrite_indices(bytes: &[u8], param: &str, f: impl FnOnce(&mut Vec<u16>)) -> Vec<u8> {
    mutate(bytes, |_, t| {
        let e = t.get_mut(&format!("{param}.idx")).unwrap();
        let n = e.2.len() / 3 * 2;
        let mut idx = unpack_indices_12bit(&e.2, n).unwrap();
        f(&mut idx);
        e.2 = pack_indices_12bit(&idx);
    })
}

#[test]
fn out_of_range_and_duplicate_indices_are_rejected() {
    let c = codec(2);
    let (_, bytes) = valid_payload(&c);
    let b = rewrite_indices(&bytes, "a.weight", |idx| idx[3] = 3000);
    assert_eq!(
        reject(&c, &b),
        PayloadError::IndexOutOfRange {
            param: "a.weight".into(),
            block: 0,
            index: 3000,
            size: 2048
        }
    );
    let b = rewrite_indices(&bytes, "a.weight", |idx| idx[5] = idx[2]);
    assert!(matches!(
        reject(&c, &b),
        PayloadError::DuplicateIndex { block: 0, .. }
    ));
    // c.weight (13 x 8): blocks of 1 x 8, k = 8; the same index in two blocks is fine,
    // so permuting within a block keeps the payload valid.
    let b = rewrite_indices(&bytes, "c.weight", |idx| idx.swap(0, 1));
    assert!(PayloadValidator::new(&c).validate(&b).is_ok());
}

fn rewrite_f32(bytes: &[u8], tensor: &str, at: usize, value: f32) -> Vec<u8> {
    mutate(bytes, |_, t| {
        let e = t.get_mut(tensor).unwrap();
        e.2[at * 4..at * 4 + 4].copy_from_slice(&value.to_le_bytes());
    })
}

#[test]
fn non_finite_values_and_quant_params_are_rejected() {
    let c32 = codec(32);
    let (_, bytes) = valid_payload(&c32);
    for v in [f32::NAN, f32::INFINITY] {
        let b = rewrite_f32(&bytes, "b.norm.val", 2, v);
        assert_eq!(
            reject(&c32, &b),
            PayloadError::NonFiniteValues {
                param: "b.norm".into()
            }
        );
    }
    let c = codec(2);
    let (_, bytes) = valid_payload(&c);
    let b = rewrite_f32(&bytes, "a.weight.qp", 0, f32::NAN); // shift
    assert_eq!(
        reject(&c, &b),
        PayloadError::NonFiniteQuantParams {
            param: "a.weight".into()
        }
    );
    let b = rewrite_f32(&bytes, "a.weight.qp", 4, f32::NEG_INFINITY); // a lookup entry
    assert_eq!(
        reject(&c, &b),
        PayloadError::NonFiniteQuantParams {
            param: "a.weight".into()
        }
    );
}

#[test]
fn scales_outside_the_bounds_are_rejected() {
    let c = codec(8);
    let (_, bytes) = valid_payload(&c);
    for scale in [0.0, 1e-13, 1e4, 5e6] {
        let b = rewrite_f32(&bytes, "c.weight.qp", 1, scale);
        assert_eq!(
            reject(&c, &b),
            PayloadError::ScaleOutOfRange {
                param: "c.weight".into(),
                scale
            }
        );
    }
}

#[test]
fn lookup_values_beyond_what_the_scale_allows_are_rejected() {
    for bits in [2, 8] {
        let c = codec(bits);
        let (_, bytes) = valid_payload(&c);
        // The attack seen on a devnet: lookup values times 1e15, scale left alone, digest
        // recomputed.
        let b = mutate(&bytes, |_, t| {
            let e = t.get_mut("c.weight.qp").unwrap();
            for at in 2..e.2.len() / 4 {
                let x = f32::from_le_bytes(e.2[at * 4..at * 4 + 4].try_into().unwrap());
                e.2[at * 4..at * 4 + 4].copy_from_slice(&(x * 1e15 + 1e15).to_le_bytes());
            }
        });
        assert!(
            matches!(
                reject(&c, &b),
                PayloadError::LookupOutOfRange { ref param, .. } if param == "c.weight"
            ),
            "bits {bits}"
        );
    }
    // The bound itself: n values at scale s allow |lookup| <= s * bins * sqrt(n - 1) / 6.
    let bound = templar_protocol::payload::Quantized::lookup_bound(0.5, 2, 10);
    assert!((bound - 0.5 * 4.0 * 3.0 / 6.0).abs() < 2e-3, "{bound}");
}

#[test]
fn altered_bytes_or_metadata_fail_the_digest() {
    let c = codec(2);
    let (_, bytes) = valid_payload(&c);
    let (meta, mut tensors) = deserialize_raw(&bytes).unwrap();
    tensors.get_mut("a.weight.val").unwrap().2[0] ^= 0x55;
    // Write without recomputing the digest: keep the old sha256 entry.
    let sha = meta["sha256"].clone();
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let mut m: std::collections::HashMap<String, String> = meta.clone().into_iter().collect();
    m.insert("sha256".into(), sha.clone());
    let b = safetensors::serialize(views, Some(m)).unwrap();
    assert_eq!(reject(&c, &b), PayloadError::DigestMismatch);

    let (_, tensors) = deserialize_raw(&bytes).unwrap();
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let mut m: std::collections::HashMap<String, String> = meta.into_iter().collect();
    m.insert("uid".into(), "4".into()); // claim another sender
    let b = safetensors::serialize(views, Some(m)).unwrap();
    assert_eq!(reject(&c, &b), PayloadError::DigestMismatch);
}

#[test]
fn oversized_truncated_and_arbitrary_bytes_are_rejected() {
    let c = codec(2);
    let (_, bytes) = valid_payload(&c);
    let small = CodecParams {
        max_payload_bytes: 100,
        ..c.params.clone()
    };
    let bounded = Codec::new(&small, &shapes());
    assert!(matches!(
        PayloadValidator::new(&bounded).validate(&bytes),
        Err(PayloadError::TooLarge { max: 100, .. })
    ));
    for cut in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            matches!(reject(&c, &bytes[..cut]), PayloadError::Malformed(_)),
            "cut {cut}"
        );
    }
    assert!(matches!(
        reject(&c, b"not a payload at all"),
        PayloadError::Malformed(_)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let c = codec(2);
        prop_assert!(PayloadValidator::new(&c).validate(&bytes).is_err());
    }

    #[test]
    fn random_mutations_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let c = codec(2);
        let (original, bytes) = valid_payload(&c);
        let mut b = bytes.clone();
        for (at, x) in &flips {
            let i = at.index(b.len());
            b[i] ^= x | 1;
        }
        if truncate {
            b.truncate(cut.index(b.len()));
        }
        // Any outcome but a panic; what is accepted (e.g. a flip inside header whitespace)
        // carries exactly the original content, as the digest guarantees.
        if let Ok(p) = PayloadValidator::new(&c).validate(&b) {
            prop_assert_eq!(p, original);
        }
    }
}

#[test]
fn a_shift_or_decoded_value_beyond_the_value_bound_is_rejected() {
    let value_out = |c: &Codec, b: &[u8]| match reject(c, b) {
        PayloadError::ValueOutOfRange { param, value, .. } => (param, value),
        other => panic!("expected ValueOutOfRange, got {other}"),
    };
    let set_shift = |bytes: &[u8], param: &str, shift: f32| rewrite_f32(bytes, param, 0, shift);
    // The 8-bit lookup of the test payloads spans [-1.28, 1.27] around a shift of 0.01.
    let c = codec(8).with_value_bound(2.0);
    let (_, bytes) = valid_payload(&c);
    PayloadValidator::new(&c).validate(&bytes).unwrap();
    // The devnet attack: the shift times 1e15, lookup and scale left alone, digest recomputed.
    // Without a value bound it is finite and well-formed, and would be accepted.
    let huge = 0.01f32 * 1e15;
    let attack = set_shift(&bytes, "a.weight.qp", huge);
    PayloadValidator::new(&codec(8)).validate(&attack).unwrap();
    assert_eq!(value_out(&c, &attack), ("a.weight".into(), huge));
    // A shift inside the bound whose sum with a lookup entry (up to 1.27 + 0.8) is beyond
    // it: the check adds them in f32, as dequantisation does.
    let (param, value) = value_out(&c, &set_shift(&bytes, "c.weight.qp", 0.8));
    assert_eq!(param, "c.weight");
    assert!(value > 2.0 && value <= 1.27 + 0.8 + 1e-6, "{value}");
    PayloadValidator::new(&c)
        .validate(&set_shift(&bytes, "c.weight.qp", 0.7))
        .unwrap();
    // Unquantised values are held to the same bound.
    let c32 = codec(32).with_value_bound(3.0);
    let (_, bytes) = valid_payload(&c32);
    PayloadValidator::new(&c32).validate(&bytes).unwrap();
    let b = rewrite_f32(&bytes, "b.norm.val", 5, -5.0);
    assert_eq!(value_out(&c32, &b), ("b.norm".into(), -5.0));
}

#[test]
fn the_model_sample_must_be_present_finite_and_short() {
    let c = codec(2);
    let (_, bytes) = valid_payload(&c);
    let b = mutate(&bytes, |m, _| {
        m.remove("model_sample");
    });
    assert_eq!(
        reject(&c, &b),
        PayloadError::MissingMetadata("model_sample")
    );
    for bad in [
        "[1.0, null]".to_string(),
        "\"abc\"".to_string(),
        serde_json::to_string(&vec![0.5f64; 65]).unwrap(),
    ] {
        let b = mutate(&bytes, |m, _| {
            m.insert("model_sample".into(), bad.clone());
        });
        assert!(
            matches!(
                reject(&c, &b),
                PayloadError::BadMetadata {
                    key: "model_sample",
                    ..
                }
            ),
            "{bad}"
        );
    }
}

/// Re-serialise with the digest recomputed but the signature left as it was (what a forger
/// without the key can do).
fn forge(bytes: &[u8], f: impl FnOnce(&mut BTreeMap<String, String>)) -> Vec<u8> {
    let (mut meta, tensors) = deserialize_raw(bytes).unwrap();
    f(&mut meta);
    templar_protocol::payload::serialize(meta, tensors)
}

#[test]
fn signed_payloads_verify_and_forged_or_unsigned_ones_are_rejected_with_a_reason() {
    let c = codec(2);
    let (payload, bytes) = valid_payload(&c);
    let got = PayloadValidator::new(&c).validate(&bytes).unwrap();
    assert_eq!(got.meta.hotkey, *common::test_signer().hotkey());
    assert_eq!(got, payload);
    let bad_signature = |b: &[u8]| match reject(&c, b) {
        PayloadError::BadSignature(reason) => reason,
        other => panic!("expected BadSignature, got {other}"),
    };

    // The same signature over another window (the digest recomputed by the forger).
    let moved = forge(&bytes, |m| {
        m.insert("window".into(), "8".into());
    });
    assert!(bad_signature(&moved).contains("does not verify"));
    // One flipped bit of the signature.
    let flipped = forge(&bytes, |m| {
        let mut sig = hex::decode(&m["signature"]).unwrap();
        sig[0] ^= 1;
        m.insert("signature".into(), hex::encode(sig));
    });
    assert!(bad_signature(&flipped).contains("does not verify"));
    assert_eq!(
        bad_signature(&forge(&bytes, |m| {
            m.insert("signature".into(), "zz".into());
        })),
        "not hex"
    );
    // Another miner's address, signed with the forger's own key (impersonation).
    let alice = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    let impersonated = mutate(&bytes, |m, _| {
        m.insert("hotkey".into(), alice.into());
    });
    assert!(bad_signature(&impersonated).contains(alice));
    // An SS58 hotkey without a signature.
    let stripped = forge(&bytes, |m| {
        m.remove("signature");
    });
    assert!(matches!(
        reject(&c, &stripped),
        PayloadError::MissingSignature { ref hotkey, .. } if *hotkey == got.meta.hotkey.to_string()
    ));
    // A devnet name cannot sign: accepted unless signatures are required.
    let (_, named) = common::payload_by(&c, 7, 3, "miner-3");
    PayloadValidator::new(&c).validate(&named).unwrap();
    assert!(matches!(
        PayloadValidator::new(&c)
            .requiring_signatures()
            .validate(&named),
        Err(PayloadError::MissingSignature { .. })
    ));
    PayloadValidator::new(&c)
        .requiring_signatures()
        .validate(&bytes)
        .unwrap();
}
