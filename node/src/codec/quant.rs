//! Value quantisation with a per-tensor lookup table (bins = 2^bits, range = 6 sigmas).
//!
//! shift = mean(v); std = ||v - shift|| / sqrt(n - 1); scale = 6 std / bins;
//! q = clamp(round((v - shift) / scale + bins / 2), 0, bins - 1); lookup[b] = mean of the centred
//! values that fell in bin b (0 for an empty bin); dequantise = lookup[q] + shift.
//! A constant vector (std = 0) uses scale 1, so every value lands in one bin and comes back
//! exactly.
//!
//! Precision, the same on both paths (one pass over host memory for a CPU tensor, tensor ops
//! on any other device): sums in f64; shift and scale rounded to f32; the centred value
//! v - shift, its bin position (v - shift) / scale + bins / 2 and dequantisation in f32;
//! rounding half to even.

use super::host;
use tch::{Device, Kind, Tensor};
pub use templar_protocol::payload::quant::{Quantized, RANGE_SIGMAS, SCALE_MIN, dequantize_entry};

/// The scale for a spread: 6 std / bins, 1 when that is zero or not finite.
fn scale_of(centred_square_sum: f64, n: usize, bins: usize) -> f32 {
    let std = if n > 1 {
        centred_square_sum.sqrt() / ((n - 1) as f64).sqrt()
    } else {
        0.0
    };
    let scale = RANGE_SIGMAS * std / bins as f64;
    if scale.is_nan() || scale <= SCALE_MIN || !scale.is_finite() {
        1.0
    } else {
        scale as f32
    }
}

/// Quantise a tensor of values (any shape, flattened in order).
pub fn quantize(values: &Tensor, bits: u8) -> Quantized {
    assert!(bits == 2 || bits == 8, "quantisation is 2- or 8-bit");
    let v = values.to_kind(Kind::Float).flatten(0, -1).contiguous();
    match v.device() {
        Device::Cpu => quantize_slice(host::f32s(&v), bits),
        _ => quantize_with_tensor_ops(&v, bits),
    }
}

/// [`quantize`] as tensor ops on the values' device (what a GPU runs).
pub fn quantize_with_tensor_ops(values: &Tensor, bits: u8) -> Quantized {
    assert!(bits == 2 || bits == 8, "quantisation is 2- or 8-bit");
    let v = values.to_kind(Kind::Float).flatten(0, -1);
    let bins = Quantized::bins(bits);
    let n = v.numel();
    let shift = if n > 0 {
        v.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]) / n as f64
    } else {
        0.0
    } as f32;
    let centred = &v - shift as f64;
    let square_sum = centred
        .to_kind(Kind::Double)
        .square()
        .sum(Kind::Double)
        .double_value(&[]);
    let scale = scale_of(square_sum, n, bins);
    let q = (&centred / scale as f64 + (bins / 2) as f64)
        .round()
        .clamp(0.0, (bins - 1) as f64)
        .to_kind(Kind::Int64);
    let zeros = Tensor::zeros([bins as i64], (Kind::Double, v.device()));
    let sums = zeros.scatter_add(0, &q, &centred.to_kind(Kind::Double));
    let counts = zeros.scatter_add(0, &q, &Tensor::ones_like(&centred).to_kind(Kind::Double));
    let lookup = (sums / counts.clamp_min(1.0))
        .to_kind(Kind::Float)
        .to_device(Device::Cpu);
    let codes = q.to_kind(Kind::Uint8).to_device(Device::Cpu);
    Quantized {
        bits,
        codes: Vec::<u8>::try_from(&codes).expect("codes are u8"),
        shift,
        scale,
        lookup: Vec::<f32>::try_from(&lookup).expect("lookup is f32"),
    }
}

/// [`quantize`] of host values: three passes (sum, spread, codes with the bins' sums).
pub fn quantize_slice(v: &[f32], bits: u8) -> Quantized {
    assert!(bits == 2 || bits == 8, "quantisation is 2- or 8-bit");
    let bins = Quantized::bins(bits);
    let n = v.len();
    let shift = if n > 0 {
        (v.iter().map(|&x| x as f64).sum::<f64>() / n as f64) as f32
    } else {
        0.0
    };
    let square_sum: f64 = v
        .iter()
        .map(|&x| {
            let c = (x - shift) as f64;
            c * c
        })
        .sum();
    let scale = scale_of(square_sum, n, bins);
    let (half, top) = ((bins / 2) as f32, (bins - 1) as f32);
    let mut sums = vec![0f64; bins];
    let mut counts = vec![0u64; bins];
    let codes = v
        .iter()
        .map(|&x| {
            let c = x - shift;
            let q = (c / scale + half).round_ties_even().clamp(0.0, top) as u8;
            sums[q as usize] += c as f64;
            counts[q as usize] += 1;
            q
        })
        .collect();
    let lookup = sums
        .iter()
        .zip(&counts)
        .map(|(s, &c)| (s / c.max(1) as f64) as f32)
        .collect();
    Quantized {
        bits,
        codes,
        shift,
        scale,
        lookup,
    }
}

/// lookup[q] + shift, as a flat f32 tensor on `device`.
pub fn dequantize(q: &Quantized, device: Device) -> Tensor {
    if device == Device::Cpu {
        let mut out = host::empty(&[q.codes.len() as i64], Kind::Float);
        for (o, &c) in host::f32s_mut(&mut out).iter_mut().zip(&q.codes) {
            *o = dequantize_entry(q.lookup[c as usize], q.shift);
        }
        return out;
    }
    let table = Tensor::from_slice(&q.lookup).to_device(device);
    let codes = Tensor::from_slice(&q.codes)
        .to_device(device)
        .to_kind(Kind::Int64);
    table.index_select(0, &codes) + q.shift as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_error_is_within_the_bin_width() {
        tch::manual_seed(7);
        for bits in [2u8, 8] {
            let v = Tensor::randn([4096], (Kind::Float, Device::Cpu)) * 0.3 + 0.05;
            let q = quantize(&v, bits);
            assert_eq!(q.codes.len(), 4096);
            assert_eq!(q.lookup.len(), Quantized::bins(bits));
            assert!(
                q.codes
                    .iter()
                    .all(|&c| (c as usize) < Quantized::bins(bits))
            );
            let back = dequantize(&q, Device::Cpu);
            // Values inside the covered range [-(bins/2 + 0.5), bins/2 - 0.5] * scale around
            // the shift come back within one bin width.
            let half = (Quantized::bins(bits) / 2) as f64;
            let pos = (&v - q.shift as f64) / q.scale as f64;
            let inside = pos.ge(-(half + 0.5)).logical_and(&pos.lt(half - 0.5));
            let err = (&back - &v).abs().masked_select(&inside);
            assert!(err.numel() > 3000, "most values are in range");
            let max_err = err.max().double_value(&[]);
            assert!(
                max_err <= q.scale as f64 * 1.0001,
                "bits {bits}: {max_err} > {}",
                q.scale
            );
        }
    }

    #[test]
    fn eight_bits_is_much_finer_than_two() {
        tch::manual_seed(8);
        let v = Tensor::randn([2048], (Kind::Float, Device::Cpu));
        let e = |bits| {
            let q = quantize(&v, bits);
            (dequantize(&q, Device::Cpu) - &v)
                .square()
                .mean(Kind::Float)
                .double_value(&[])
        };
        assert!(e(8) * 100.0 < e(2), "8-bit {} vs 2-bit {}", e(8), e(2));
    }

    #[test]
    fn lookup_stays_within_the_validators_bound_even_with_outliers() {
        tch::manual_seed(9);
        for bits in [2u8, 8] {
            for n in [2i64, 8, 100, 4096] {
                // One outlier holds almost all of the norm: the edge bin's mean is that value.
                let v = Tensor::randn([n], (Kind::Float, Device::Cpu)) * 1e-3;
                let _ = v.get(0).fill_(50.0);
                let q = quantize(&v, bits);
                let bound = Quantized::lookup_bound(q.scale, bits, n as usize);
                let worst = q.lookup.iter().fold(0f32, |m, x| m.max(x.abs()));
                assert!(
                    (worst as f64) <= bound,
                    "bits {bits}, n {n}: {worst} > {bound}"
                );
            }
        }
    }

    #[test]
    fn constant_and_empty_vectors() {
        let v = Tensor::full([10], 0.25, (Kind::Float, Device::Cpu));
        let q = quantize(&v, 2);
        assert_eq!(q.scale, 1.0);
        assert!(dequantize(&q, Device::Cpu).allclose(&v, 1e-7, 1e-7, false));
        let q = quantize(&Tensor::zeros([0], (Kind::Float, Device::Cpu)), 2);
        assert!(q.codes.is_empty());
        assert_eq!(dequantize(&q, Device::Cpu).numel(), 0);
    }
}
