//! Chunked orthonormal DCT-II by basis matrices (no FFT at run time).
//!
//! One basis per distinct chunk size, built once in f64 and cached per device. The 2-D
//! transform of all blocks of a tensor is two batched matmuls: C = B_h · X · B_wᵀ; the
//! inverse is X = B_hᵀ · C · B_w (orthonormal, so the inverse is the transpose).

use std::collections::HashMap;
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

/// Orthonormal DCT-II matrix: B[k][n] = s_k cos(pi (2n + 1) k / 2N), s_0 = sqrt(1/N),
/// s_k = sqrt(2/N).
pub fn dct_basis(n: i64, device: Device) -> Tensor {
    let nf = n as f64;
    let mut m = Vec::with_capacity((n * n) as usize);
    for k in 0..n {
        let s = if k == 0 {
            (1.0 / nf).sqrt()
        } else {
            (2.0 / nf).sqrt()
        };
        for i in 0..n {
            let angle = std::f64::consts::PI * (2 * i + 1) as f64 * k as f64 / (2.0 * nf);
            m.push(s * angle.cos());
        }
    }
    Tensor::from_slice(&m)
        .view([n, n])
        .to_kind(Kind::Float)
        .to_device(device)
}

/// Cache of bases by (size, device); cheap to share between threads.
#[derive(Default)]
pub struct DctCache {
    bases: Mutex<HashMap<(i64, Device), Tensor>>,
}

impl DctCache {
    pub fn basis(&self, n: i64, device: Device) -> Tensor {
        let mut bases = self.bases.lock().unwrap_or_else(|e| e.into_inner());
        bases
            .entry((n, device))
            .or_insert_with(|| dct_basis(n, device))
            .shallow_clone()
    }

    /// Forward transform of blocks [nb, h, w].
    pub fn forward(&self, blocks: &Tensor) -> Tensor {
        let (_, h, w) = blocks.size3().expect("blocks are [nb, h, w]");
        let bh = self.basis(h, blocks.device());
        let bw = self.basis(w, blocks.device());
        bh.matmul(blocks).matmul(&bw.tr())
    }

    /// Inverse transform of coefficient blocks [nb, h, w].
    pub fn inverse(&self, coeffs: &Tensor) -> Tensor {
        let (_, h, w) = coeffs.size3().expect("blocks are [nb, h, w]");
        let bh = self.basis(h, coeffs.device());
        let bw = self.basis(w, coeffs.device());
        bh.tr().matmul(coeffs).matmul(&bw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basis_is_orthonormal() {
        for n in [1, 2, 7, 50, 64] {
            let b = dct_basis(n, Device::Cpu);
            let eye = Tensor::eye(n, (Kind::Float, Device::Cpu));
            assert!(b.matmul(&b.tr()).allclose(&eye, 1e-5, 1e-5, false), "n={n}");
        }
    }

    #[test]
    fn inverse_of_forward_is_identity() {
        let cache = DctCache::default();
        tch::manual_seed(0);
        for (h, w) in [(64, 64), (1, 64), (3, 50), (1, 1)] {
            let x = Tensor::randn([5, h, w], (Kind::Float, Device::Cpu));
            let back = cache.inverse(&cache.forward(&x));
            let err = (&back - &x).abs().max().double_value(&[]);
            assert!(err < 1e-5, "({h},{w}) error {err}");
        }
    }

    #[test]
    fn constant_block_has_only_a_dc_coefficient() {
        let cache = DctCache::default();
        let x = Tensor::ones([1, 8, 8], (Kind::Float, Device::Cpu));
        let c = cache.forward(&x);
        assert!((c.double_value(&[0, 0, 0]) - 8.0).abs() < 1e-5);
        let rest = c.abs().sum(Kind::Float).double_value(&[]) - 8.0;
        assert!(rest.abs() < 1e-4);
    }
}
