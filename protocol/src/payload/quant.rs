//! Quantised values of a payload: per-tensor lookup table (bins = 2^bits, range = 6 sigmas).
//! The tensor code that quantises lives in the node (`codec::quant`); this is the data and
//! the bounds the validator holds it to.
//!
//! shift = mean(v); std = ||v - shift|| / sqrt(n - 1); scale = 6 std / bins;
//! q = clamp(round((v - shift) / scale + bins / 2), 0, bins - 1); lookup[b] = mean of the centred
//! values that fell in bin b (0 for an empty bin); dequantise = lookup[q] + shift.
//! A constant vector (std = 0) uses scale 1, so every value lands in one bin and comes back
//! exactly.

/// Spread covered by the bins, in standard deviations.
pub const RANGE_SIGMAS: f64 = 6.0;
/// Accepted open interval of |scale| (the network's bound).
pub const SCALE_MIN: f64 = 1e-12;
pub const SCALE_MAX: f64 = 1e4;

#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub bits: u8,
    /// One code per value (unpacked), each < 2^bits.
    pub codes: Vec<u8>,
    pub shift: f32,
    pub scale: f32,
    /// 2^bits entries: the mean centred value of each bin.
    pub lookup: Vec<f32>,
}

/// What a receiver decodes for a code whose lookup entry is `entry`: `entry + shift` in f32.
/// The codec, the validator's bounds and the agreement check all decode through this.
pub fn dequantize_entry(entry: f32, shift: f32) -> f32 {
    entry + shift
}

impl Quantized {
    /// The decoded value of the `i`-th transmitted coordinate.
    pub fn value(&self, i: usize) -> f32 {
        dequantize_entry(self.lookup[self.codes[i] as usize], self.shift)
    }

    pub fn bins(bits: u8) -> usize {
        1usize << bits
    }

    /// The largest |lookup| entry the quantiser can produce for `n` values at this `scale`:
    /// a bin's mean is at most the largest centred value, which is at most the centred norm
    /// std·√(n − 1) = scale·bins·√(n − 1)/6 (with slack for f32 rounding). A larger entry
    /// did not come from quantising the values it claims to.
    pub fn lookup_bound(scale: f32, bits: u8, n: usize) -> f64 {
        let bins = Self::bins(bits) as f64;
        let spread = (n.saturating_sub(1) as f64).sqrt();
        scale.abs() as f64 * bins * spread / RANGE_SIGMAS * (1.0 + 1e-3) + 1e-30
    }
}
