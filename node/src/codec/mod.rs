//! The update codec: chunked DCT (optional), top-k per block, 12-bit index packing,
//! value quantisation, error feedback support, a batch decoder, and the payload format.
//!
//! Encoding a tensor: blocks [nb, h, w] -> (DCT) -> flatten [nb, h*w] -> top-k by |x| per block
//! -> [`Selected`] (indices [nb, k] and values [nb, k]). [`payload`] quantises and packs it.
//! Decoding any number of peers: concatenate their indices and values per block, one
//! scatter-add of values and one of counts (the scatter-mean), one inverse DCT.

pub mod dct;
pub mod layout;
pub mod pack;
pub mod payload;
pub mod quant;

use crate::hparams::CodecParams;
use dct::DctCache;
pub use layout::BlockLayout;
use tch::{Kind, Tensor};

/// The coefficients chosen for one tensor: indices (i64) and values (f32), both [nb, k].
#[derive(Debug)]
pub struct Selected {
    pub indices: Tensor,
    pub values: Tensor,
}

impl Selected {
    pub fn shallow_clone(&self) -> Self {
        Self {
            indices: self.indices.shallow_clone(),
            values: self.values.shallow_clone(),
        }
    }
}

/// Encoder/decoder for one model: the codec settings and a block layout per parameter
/// (parameters in their sorted-name order).
pub struct Codec {
    pub params: CodecParams,
    pub names: Vec<String>,
    pub layouts: Vec<BlockLayout>,
    dct: DctCache,
}

impl Codec {
    pub fn new(params: &CodecParams, shapes: &[(String, Vec<i64>)]) -> Self {
        Self {
            params: params.clone(),
            names: shapes.iter().map(|(n, _)| n.clone()).collect(),
            layouts: shapes
                .iter()
                .map(|(_, s)| BlockLayout::new(s, params.chunk, params.topk))
                .collect(),
            dct: DctCache::default(),
        }
    }

    /// Tensor -> coefficient blocks [nb, h*w] (DCT when enabled).
    pub fn transform(&self, layout: &BlockLayout, x: &Tensor) -> Tensor {
        let blocks = layout.to_blocks(&x.to_kind(Kind::Float));
        let blocks = if self.params.use_dct {
            self.dct.forward(&blocks)
        } else {
            blocks
        };
        blocks.reshape([layout.num_blocks(), layout.block_size()])
    }

    /// Coefficient blocks [nb, h*w] -> tensor of the layout's shape.
    pub fn inverse_transform(&self, layout: &BlockLayout, coeffs: &Tensor) -> Tensor {
        let blocks = coeffs.reshape([layout.num_blocks(), layout.h, layout.w]);
        let blocks = if self.params.use_dct {
            self.dct.inverse(&blocks)
        } else {
            blocks
        };
        layout.from_blocks(&blocks)
    }

    /// Top-k by magnitude of each block's coefficients.
    pub fn encode_tensor(&self, layout: &BlockLayout, x: &Tensor) -> Selected {
        let coeffs = self.transform(layout, x);
        let (_, indices) = coeffs.abs().topk(layout.k, -1, true, false);
        let values = coeffs.gather(1, &indices, false);
        Selected { indices, values }
    }

    /// Encode every parameter (in layout order).
    pub fn encode(&self, tensors: &[Tensor]) -> Vec<Selected> {
        assert_eq!(tensors.len(), self.layouts.len(), "one tensor per layout");
        self.layouts
            .iter()
            .zip(tensors)
            .map(|(l, t)| self.encode_tensor(l, t))
            .collect()
    }

    /// Scatter-mean of any number of peers' coefficients into dense [nb, h*w]: a coordinate
    /// chosen by c peers gets the mean of their c values; one nobody chose stays 0.
    pub fn scatter_mean(&self, layout: &BlockLayout, peers: &[&Selected]) -> Tensor {
        let (nb, bs) = (layout.num_blocks(), layout.block_size());
        let Some(first) = peers.first() else {
            return Tensor::zeros([nb, bs], (Kind::Float, tch::Device::Cpu));
        };
        let device = first.values.device();
        let idx = Tensor::cat(&peers.iter().map(|p| &p.indices).collect::<Vec<_>>(), 1);
        let vals = Tensor::cat(&peers.iter().map(|p| &p.values).collect::<Vec<_>>(), 1);
        let zeros = Tensor::zeros([nb, bs], (Kind::Float, device));
        let sums = zeros.scatter_add(1, &idx, &vals);
        let counts = zeros.scatter_add(1, &idx, &Tensor::ones_like(&vals));
        sums / counts.clamp_min(1.0)
    }

    /// Decode and merge peers for one tensor: one scatter-mean, one inverse transform.
    pub fn batch_decode(&self, layout: &BlockLayout, peers: &[&Selected]) -> Tensor {
        self.inverse_transform(layout, &self.scatter_mean(layout, peers))
    }

    /// Decode one peer's tensor (its own coefficients, everything else 0).
    pub fn decode_tensor(&self, layout: &BlockLayout, sel: &Selected) -> Tensor {
        self.batch_decode(layout, &[sel])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn codec(use_dct: bool, topk: i64, shapes: &[(String, Vec<i64>)]) -> Codec {
        let p = CodecParams {
            use_dct,
            topk,
            ..CodecParams::default()
        };
        Codec::new(&p, shapes)
    }

    #[test]
    fn topk_keeps_exactly_the_k_largest_per_block() {
        tch::manual_seed(1);
        let shapes = vec![("w".to_string(), vec![128i64, 64])];
        let c = codec(false, 8, &shapes);
        let l = &c.layouts[0];
        let x = Tensor::randn([128, 64], (Kind::Float, Device::Cpu));
        let sel = c.encode_tensor(l, &x);
        assert_eq!(sel.indices.size(), vec![2, 8]);
        let blocks = l.to_blocks(&x).reshape([2, 4096]).abs();
        for b in 0..2 {
            let kth = blocks.get(b).sort(0, true).0.double_value(&[7]);
            let chosen = blocks.get(b).index_select(0, &sel.indices.get(b));
            // Every chosen |x| is >= the 8th largest, and there are exactly 8 distinct ones.
            assert!(chosen.min().double_value(&[]) >= kth);
            let distinct: std::collections::HashSet<i64> =
                Vec::<i64>::try_from(&sel.indices.get(b))
                    .unwrap()
                    .into_iter()
                    .collect();
            assert_eq!(distinct.len(), 8);
            let vals = sel.values.get(b);
            assert!(
                vals.equal(
                    &l.to_blocks(&x)
                        .reshape([2, 4096])
                        .get(b)
                        .index_select(0, &sel.indices.get(b))
                )
            );
        }
    }

    #[test]
    fn full_topk_with_dct_is_lossless() {
        tch::manual_seed(2);
        let shapes = vec![
            ("w".to_string(), vec![64i64, 128]),
            ("n".to_string(), vec![97]),
        ];
        let c = codec(true, 4096, &shapes);
        for l in &c.layouts {
            let x = Tensor::randn(l.shape.as_slice(), (Kind::Float, Device::Cpu));
            let back = c.decode_tensor(l, &c.encode_tensor(l, &x));
            let err = (&back - &x).abs().max().double_value(&[]);
            assert!(err < 1e-5, "{:?}: {err}", l.shape);
        }
    }

    #[test]
    fn batch_decode_equals_sum_of_single_decodes_over_counts() {
        tch::manual_seed(3);
        for use_dct in [false, true] {
            let shapes = vec![("w".to_string(), vec![64i64, 192])];
            let c = codec(use_dct, 16, &shapes);
            let l = &c.layouts[0];
            let peers: Vec<Selected> = (0..5)
                .map(|_| c.encode_tensor(l, &Tensor::randn([64, 192], (Kind::Float, Device::Cpu))))
                .collect();
            let refs: Vec<&Selected> = peers.iter().collect();
            let merged = c.batch_decode(l, &refs);
            // Reference: per-peer dense coefficients, summed, divided by pick counts.
            let (nb, bs) = (l.num_blocks(), l.block_size());
            let mut sum = Tensor::zeros([nb, bs], (Kind::Float, Device::Cpu));
            let mut count = Tensor::zeros([nb, bs], (Kind::Float, Device::Cpu));
            for p in &peers {
                let single = c.transform(l, &c.decode_tensor(l, p));
                sum += &single;
                count += Tensor::zeros([nb, bs], (Kind::Float, Device::Cpu)).scatter(
                    1,
                    &p.indices,
                    &Tensor::ones_like(&p.values),
                );
            }
            let expected = c.inverse_transform(l, &(sum / count.clamp_min(1.0)));
            assert!(
                merged.allclose(&expected, 1e-5, 1e-5, false),
                "dct={use_dct}"
            );
        }
    }

    #[test]
    fn error_feedback_removes_what_was_sent() {
        tch::manual_seed(4);
        let shapes = vec![("w".to_string(), vec![64i64, 64])];
        let c = codec(true, 32, &shapes);
        let l = &c.layouts[0];
        let mut buffer = Tensor::randn([64, 64], (Kind::Float, Device::Cpu));
        let sent = c.encode_tensor(l, &buffer);
        buffer -= c.decode_tensor(l, &sent);
        // At the sent coordinates the buffer's coefficients are now zero; elsewhere unchanged.
        let coeffs = c.transform(l, &buffer);
        let at_sent = coeffs
            .gather(1, &sent.indices, false)
            .abs()
            .max()
            .double_value(&[]);
        assert!(at_sent < 1e-5, "residual at sent coordinates {at_sent}");
        let norm_left = coeffs.norm().double_value(&[]);
        assert!(norm_left > 1.0, "the unsent mass stays in the buffer");
    }
}
