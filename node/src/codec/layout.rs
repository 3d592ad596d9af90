//! How a parameter tensor is cut into blocks for the transform and top-k.
//!
//! A dimension of size s is cut into chunks of the largest divisor of s that is <= the target
//! chunk (a prime s gives 1). A 2-D tensor (Y*h, X*w) becomes blocks [Y*X, h, w]; a 1-D tensor
//! (X*w) is treated as (1, X*w), i.e. blocks [X, 1, w]. Higher ranks are flattened to
//! (shape[0], rest) first. Blocks are numbered row-major over (Y, X).

use tch::Tensor;

/// Largest divisor of `size` that is <= `target` (1 for a prime larger than the target).
pub fn chunk_size(size: i64, target: i64) -> i64 {
    let target = target.max(1).min(size.max(1));
    (1..=target).rev().find(|d| size % d == 0).unwrap_or(1)
}

/// Coefficients kept per block: k clamped to [2, block size] and even; a block of one
/// element keeps that element.
pub fn clamp_topk(k: i64, block_size: i64) -> i64 {
    if block_size < 2 {
        return 1;
    }
    let k = k.clamp(2, block_size);
    k - (k % 2)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLayout {
    pub shape: Vec<i64>,
    /// Rows and columns of the 2-D view of the tensor.
    pub rows: i64,
    pub cols: i64,
    /// Block height and width.
    pub h: i64,
    pub w: i64,
    /// Coefficients kept per block.
    pub k: i64,
}

impl BlockLayout {
    pub fn new(shape: &[i64], chunk_target: i64, topk: i64) -> Self {
        let (rows, cols) = match shape.len() {
            0 => (1, 1),
            1 => (1, shape[0]),
            _ => (shape[0], shape[1..].iter().product()),
        };
        let h = chunk_size(rows, chunk_target);
        let w = chunk_size(cols, chunk_target);
        Self {
            shape: shape.to_vec(),
            rows,
            cols,
            h,
            w,
            k: clamp_topk(topk, h * w),
        }
    }

    pub fn block_size(&self) -> i64 {
        self.h * self.w
    }

    pub fn num_blocks(&self) -> i64 {
        (self.rows / self.h) * (self.cols / self.w)
    }

    /// Number of (index, value) pairs a payload carries for this tensor.
    pub fn num_selected(&self) -> usize {
        (self.num_blocks() * self.k) as usize
    }

    pub fn numel(&self) -> i64 {
        self.rows * self.cols
    }

    /// tensor (any shape with this layout's numel) -> blocks [nb, h, w]
    pub fn to_blocks(&self, t: &Tensor) -> Tensor {
        let (y, x) = (self.rows / self.h, self.cols / self.w);
        t.reshape([y, self.h, x, self.w])
            .permute([0, 2, 1, 3])
            .reshape([y * x, self.h, self.w])
    }

    /// blocks [nb, h, w] (or [nb, h*w]) -> tensor of this layout's shape
    pub fn from_blocks(&self, b: &Tensor) -> Tensor {
        let (y, x) = (self.rows / self.h, self.cols / self.w);
        b.reshape([y, x, self.h, self.w])
            .permute([0, 2, 1, 3])
            .reshape(self.shape.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn chunk_rule_matches_the_reference() {
        assert_eq!(chunk_size(4096, 64), 64);
        assert_eq!(chunk_size(2688, 64), 64);
        assert_eq!(chunk_size(192, 64), 64);
        assert_eq!(chunk_size(100, 64), 50);
        assert_eq!(chunk_size(97, 64), 1); // prime above the target
        assert_eq!(chunk_size(61, 64), 61); // prime below the target is its own chunk
        assert_eq!(chunk_size(1, 64), 1);
        assert_eq!(chunk_size(12, 64), 12);
    }

    #[test]
    fn topk_is_clamped_and_even() {
        assert_eq!(clamp_topk(64, 4096), 64);
        assert_eq!(clamp_topk(33, 4096), 32);
        assert_eq!(clamp_topk(1, 4096), 2);
        assert_eq!(clamp_topk(64, 50), 50);
        assert_eq!(clamp_topk(64, 61), 60);
        assert_eq!(clamp_topk(64, 1), 1);
    }

    #[test]
    fn layouts_of_1d_2d_and_prime_tensors() {
        let l = BlockLayout::new(&[128, 192], 64, 32);
        assert_eq!((l.h, l.w, l.num_blocks(), l.k), (64, 64, 6, 32));
        let l = BlockLayout::new(&[192], 64, 32);
        assert_eq!((l.h, l.w, l.num_blocks(), l.k), (1, 64, 3, 32));
        let l = BlockLayout::new(&[97, 89], 64, 32);
        assert_eq!((l.h, l.w, l.num_blocks(), l.k), (1, 1, 97 * 89, 1));
        let l = BlockLayout::new(&[7], 64, 32);
        assert_eq!((l.h, l.w, l.num_blocks(), l.k), (1, 7, 1, 6));
    }

    #[test]
    fn blocks_round_trip_and_are_contiguous_tiles() {
        for shape in [vec![128i64, 192], vec![192], vec![97, 6], vec![4, 3, 8]] {
            let l = BlockLayout::new(&shape, 64, 8);
            let t = Tensor::arange(l.numel(), (Kind::Float, Device::Cpu)).reshape(shape.as_slice());
            let b = l.to_blocks(&t);
            assert_eq!(b.size(), vec![l.num_blocks(), l.h, l.w]);
            assert!(l.from_blocks(&b).equal(&t), "shape {shape:?}");
        }
        // The second block of a 128x192 tensor is the tile rows 0..64, cols 64..128.
        let l = BlockLayout::new(&[128, 192], 64, 8);
        let t = Tensor::arange(128 * 192, (Kind::Float, Device::Cpu)).reshape([128, 192]);
        let tile = t.narrow(0, 0, 64).narrow(1, 64, 64);
        assert!(l.to_blocks(&t).get(1).equal(&tile));
    }
}
