//! The host kernels against the tensor-op path (what a GPU runs): the same coordinates,
//! values, quantisation and decoded tensors; on CUDA too when libtorch sees a GPU.

use crate::codec::quant::{quantize_slice, quantize_with_tensor_ops};
use crate::codec::{Codec, Selected};
use crate::compute::default_device;
use crate::hparams::CodecParams;
use tch::{Device, Kind, Tensor};

const SHAPES: [&[i64]; 4] = [&[128, 192], &[320], &[97, 6], &[64, 2, 32]];

fn codecs(use_dct: bool, value_bits: u8) -> (Codec, Codec) {
    let params = CodecParams {
        use_dct,
        topk: 16,
        value_bits,
        ..CodecParams::default()
    };
    let shapes: Vec<(String, Vec<i64>)> = SHAPES
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("p{i}"), s.to_vec()))
        .collect();
    (
        Codec::new(&params, &shapes),
        Codec::new(&params, &shapes).with_tensor_ops_only(),
    )
}

fn inputs(device: Device, seed: i64) -> Vec<Tensor> {
    tch::manual_seed(seed);
    SHAPES
        .iter()
        .map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu)).to_device(device))
        .collect()
}

/// Equal values (indices compared as i64: the host keeps them as i16).
fn same(a: &Tensor, b: &Tensor) -> bool {
    let cpu = |t: &Tensor| match t.kind() {
        Kind::Int16 => t.to_kind(Kind::Int64).to_device(Device::Cpu),
        _ => t.to_device(Device::Cpu),
    };
    cpu(a).equal(&cpu(b))
}

#[test]
fn host_kernels_equal_the_tensor_ops_on_the_cpu() {
    for use_dct in [false, true] {
        let (host, ops) = codecs(use_dct, 2);
        let peers: Vec<(Vec<Selected>, Vec<Selected>)> = (0..4)
            .map(|seed| {
                let x = inputs(Device::Cpu, seed);
                (host.encode(&x), ops.encode(&x))
            })
            .collect();
        for (a, b) in &peers {
            for (sa, sb) in a.iter().zip(b) {
                assert!(same(&sa.indices, &sb.indices), "dct={use_dct}: indices");
                assert!(same(&sa.values, &sb.values), "dct={use_dct}: values");
            }
        }
        for (i, layout) in host.spec.layouts.iter().enumerate() {
            for n in [1, 4] {
                let of = |s: &Vec<(Vec<Selected>, Vec<Selected>)>, first: bool| -> Vec<Selected> {
                    s[..n]
                        .iter()
                        .map(|(a, b)| if first { &a[i] } else { &b[i] }.shallow_clone())
                        .collect()
                };
                let (a, b) = (of(&peers, true), of(&peers, false));
                let decoded = host.batch_decode(layout, &a.iter().collect::<Vec<_>>());
                let expected = ops.batch_decode(layout, &b.iter().collect::<Vec<_>>());
                assert!(
                    same(&decoded, &expected),
                    "dct={use_dct}, {n} peers, {:?}",
                    layout.shape
                );
            }
            // Error feedback: in place on the host, dense subtraction on tensor ops.
            let x = inputs(Device::Cpu, 9).swap_remove(i);
            let (mut a, mut b) = (x.copy(), x.copy());
            host.subtract_decoded(layout, &mut a, &peers[0].0[i]);
            ops.subtract_decoded(layout, &mut b, &peers[0].1[i]);
            assert!(same(&a, &b), "dct={use_dct}: error feedback");
            assert!(!same(&a, &x), "something was subtracted");
        }
    }
}

#[test]
fn host_quantisation_equals_the_tensor_ops() {
    tch::manual_seed(11);
    for bits in [2u8, 8] {
        for n in [0i64, 1, 2, 1000, 65536] {
            let v = Tensor::randn([n], (Kind::Float, Device::Cpu)) * 0.02 + 0.001;
            let host = quantize_slice(&Vec::<f32>::try_from(&v).unwrap(), bits);
            let ops = quantize_with_tensor_ops(&v, bits);
            assert_eq!(host.codes, ops.codes, "bits {bits}, n {n}");
            assert_eq!((host.shift, host.scale), (ops.shift, ops.scale));
            for (a, b) in host.lookup.iter().zip(&ops.lookup) {
                assert!((a - b).abs() <= 1e-6 * host.scale, "lookup {a} vs {b}");
            }
        }
    }
}

/// On a GPU the tensor-op path runs there; its selection and quantisation equal the host's,
/// its scatter-mean (atomic adds in any order) equals it within f32 rounding.
#[test]
fn cuda_codec_equals_the_host_kernels_or_skips_without_a_gpu() {
    let Device::Cuda(_) = default_device() else {
        eprintln!("skipped: libtorch sees no CUDA device");
        return;
    };
    let cuda = default_device();
    for use_dct in [false, true] {
        let (host, on_gpu) = codecs(use_dct, 2);
        let (x_cpu, x_gpu) = (inputs(Device::Cpu, 5), inputs(cuda, 5));
        let (a, b) = (host.encode(&x_cpu), on_gpu.encode(&x_gpu));
        for ((sa, sb), layout) in a.iter().zip(&b).zip(&host.spec.layouts) {
            assert!(same(&sa.indices, &sb.indices), "dct={use_dct}: indices");
            assert!(
                sa.values
                    .allclose(&sb.values.to_device(Device::Cpu), 1e-5, 1e-6, false),
                "dct={use_dct}: values"
            );
            let qa = quantize_slice(&Vec::<f32>::try_from(&sa.values.flatten(0, -1)).unwrap(), 2);
            let qb = quantize_with_tensor_ops(&sb.values, 2);
            if !use_dct {
                assert_eq!(qa.codes, qb.codes, "codes");
            }
            let da = host.decode_tensor(layout, sa);
            let db = on_gpu.decode_tensor(layout, sb).to_device(Device::Cpu);
            assert!(
                da.allclose(&db, 1e-5, 1e-6, false),
                "dct={use_dct}: decoded"
            );
        }
    }
}
