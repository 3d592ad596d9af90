//! A tensor cut into the blocks of its [`BlockLayout`] and put back together (the geometry
//! itself is the protocol's: `templar_protocol::payload::layout`).

use tch::Tensor;
pub use templar_protocol::payload::layout::{BlockLayout, chunk_size, clamp_topk};

/// Block views of tensors for a layout.
pub trait TensorBlocks {
    /// tensor (any shape with this layout's numel) -> blocks [nb, h, w]
    fn split_blocks(&self, t: &Tensor) -> Tensor;
    /// blocks [nb, h, w] (or [nb, h*w]) -> tensor of this layout's shape
    fn join_blocks(&self, b: &Tensor) -> Tensor;
}

impl TensorBlocks for BlockLayout {
    fn split_blocks(&self, t: &Tensor) -> Tensor {
        let (y, x) = (self.rows / self.h, self.cols / self.w);
        t.reshape([y, self.h, x, self.w])
            .permute([0, 2, 1, 3])
            .reshape([y * x, self.h, self.w])
    }

    fn join_blocks(&self, b: &Tensor) -> Tensor {
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
    fn blocks_round_trip_and_are_contiguous_tiles() {
        for shape in [vec![128i64, 192], vec![192], vec![97, 6], vec![4, 3, 8]] {
            let l = BlockLayout::new(&shape, 64, 8);
            let t = Tensor::arange(l.numel(), (Kind::Float, Device::Cpu)).reshape(shape.as_slice());
            let b = l.split_blocks(&t);
            assert_eq!(b.size(), vec![l.num_blocks(), l.h, l.w]);
            assert!(l.join_blocks(&b).equal(&t), "shape {shape:?}");
        }
        // The second block of a 128x192 tensor is the tile rows 0..64, cols 64..128.
        let l = BlockLayout::new(&[128, 192], 64, 8);
        let t = Tensor::arange(128 * 192, (Kind::Float, Device::Cpu)).reshape([128, 192]);
        let tile = t.narrow(0, 0, 64).narrow(1, 64, 64);
        assert!(l.split_blocks(&t).get(1).equal(&tile));
    }
}
