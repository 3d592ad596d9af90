//! How a parameter tensor is cut into blocks for the transform and top-k, and the codec
//! settings and per-parameter layouts a payload is checked against ([`CodecSpec`]).
//!
//! A dimension of size s is cut into chunks of the largest divisor of s that is <= the target
//! chunk (a prime s gives 1). A 2-D tensor (Y*h, X*w) becomes blocks [Y*X, h, w]; a 1-D tensor
//! (X*w) is treated as (1, X*w), i.e. blocks [X, 1, w]. Higher ranks are flattened to
//! (shape[0], rest) first. Blocks are numbered row-major over (Y, X).

use crate::hparams::CodecParams;

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
}

/// What a payload's shape depends on: the codec settings and, per parameter (in the model's
/// sorted-name order), its name and block layout. The node's codec holds one; the payload
/// validator checks received bytes against it.
#[derive(Debug, Clone, PartialEq)]
pub struct CodecSpec {
    pub params: CodecParams,
    pub names: Vec<String>,
    pub layouts: Vec<BlockLayout>,
    /// Largest |value| a payload may decode to (`Hparams::update_value_bound`: what honest
    /// training under these settings cannot reach); infinite when not set.
    pub value_bound: f64,
}

impl CodecSpec {
    pub fn new(params: &CodecParams, shapes: &[(String, Vec<i64>)]) -> Self {
        Self {
            params: params.clone(),
            names: shapes.iter().map(|(n, _)| n.clone()).collect(),
            layouts: shapes
                .iter()
                .map(|(_, s)| BlockLayout::new(s, params.chunk, params.topk))
                .collect(),
            value_bound: f64::INFINITY,
        }
    }

    /// Also reject payloads that decode to a value beyond `bound` in magnitude.
    pub fn with_value_bound(mut self, bound: f64) -> Self {
        self.value_bound = bound;
        self
    }

    /// (name, shape) of every parameter, as the payload metadata lists them.
    pub fn shapes(&self) -> Vec<(String, Vec<i64>)> {
        self.names
            .iter()
            .zip(&self.layouts)
            .map(|(n, l)| (n.clone(), l.shape.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
