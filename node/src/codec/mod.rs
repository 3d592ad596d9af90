//! The update codec on tensors: chunked DCT (optional), top-k per block, value quantisation,
//! error feedback support, a batch decoder, and the conversion to and from the protocol's
//! [`Payload`] (whose byte format, packing and validator live in `templar_protocol::payload`).
//!
//! Encoding a tensor: blocks [nb, h, w] -> (DCT) -> flatten [nb, h*w] -> top-k by |x| per block
//! -> [`Selected`] (indices [nb, k] and values [nb, k]). [`payload`] quantises and packs it.
//! Decoding any number of peers: concatenate their indices and values per block, one
//! scatter-add of values and one of counts (the scatter-mean), one inverse DCT.
//!
//! Two paths give the same results: fused kernels on host memory for CPU tensors
//! ([`host`]) and tensor ops for any other device. The selection is canonical on both: the k
//! largest |x| of a block, the lower index on a tie, indices ascending within the block.

pub mod dct;
pub mod host;
pub mod layout;
pub mod norms;
pub mod quant;

use crate::hparams::CodecParams;
use dct::DctCache;
use host::Tiles;
pub use layout::{BlockLayout, TensorBlocks};
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};
use templar_protocol::payload::{CodecSpec, ParamUpdate, Payload, PayloadMeta, Values};

/// The coefficients chosen for one tensor: block-local indices and values (f32), both
/// [nb, k]. Indices are i16 on the host (a block holds at most 4096 coefficients; a quarter of
/// the memory traffic of i64 when 20 peers are merged) and i64 on other devices, as libtorch's
/// gather and scatter take them; [`Selected::indices_i64`] gives either as i64.
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

    /// The indices as i64 (what tensor ops index with).
    pub fn indices_i64(&self) -> Tensor {
        self.indices.to_kind(Kind::Int64)
    }

    /// Indices and values as host slices, when both are contiguous CPU tensors of the host
    /// path's kinds.
    fn on_host(&self) -> Option<host::scatter::PeerCoefficients<'_>> {
        (host::on_host(&self.indices, Kind::Int16) && host::on_host(&self.values, Kind::Float))
            .then(|| (host::i16s(&self.indices), host::f32s(&self.values)))
    }
}

/// Encoder/decoder for one model: the protocol's [`CodecSpec`] (settings and a block layout
/// per parameter, in sorted-name order) and the DCT bases it needs.
pub struct Codec {
    pub spec: CodecSpec,
    dct: DctCache,
    /// Tensor ops even for CPU tensors (tests compare the two paths).
    tensor_ops_only: bool,
}

impl Codec {
    pub fn new(params: &CodecParams, shapes: &[(String, Vec<i64>)]) -> Self {
        Self {
            spec: CodecSpec::new(params, shapes),
            dct: DctCache::default(),
            tensor_ops_only: false,
        }
    }

    /// The same codec on tensor ops only: what runs on a GPU, here on any device.
    pub fn with_tensor_ops_only(mut self) -> Self {
        self.tensor_ops_only = true;
        self
    }

    /// Quantise (per the settings) and collect one window's selected coefficients.
    pub fn to_payload(&self, meta: PayloadMeta, selected: &[Selected]) -> Payload {
        let bits = self.spec.params.value_bits;
        // Parameters in parallel (the per-tensor work is short and sequential); handles are
        // moved in because a tensor may be sent to another thread but not shared.
        let handles: Vec<Selected> = selected.iter().map(Selected::shallow_clone).collect();
        let params = handles
            .into_par_iter()
            .map(|s| {
                // Block-local indices fit 16 bits: on a GPU a quarter of the bytes cross the
                // bus.
                let idx = s
                    .indices
                    .flatten(0, -1)
                    .to_kind(Kind::Int16)
                    .to_device(Device::Cpu)
                    .contiguous();
                let indices: Vec<u16> = host::i16s(&idx).iter().map(|&i| i as u16).collect();
                let values = if bits == 32 {
                    let v = s
                        .values
                        .flatten(0, -1)
                        .to_kind(Kind::Float)
                        .to_device(Device::Cpu)
                        .contiguous();
                    Values::F32(host::f32s(&v).to_vec())
                } else {
                    Values::Quantized(quant::quantize(&s.values, bits))
                };
                ParamUpdate { indices, values }
            })
            .collect();
        Payload { meta, params }
    }

    /// A validated payload as tensors on `device` (values dequantised), ready for the batch
    /// decoder.
    pub fn selected(&self, payload: &Payload, device: Device) -> Vec<Selected> {
        payload
            .params
            .iter()
            .zip(&self.spec.layouts)
            .map(|(p, l)| {
                assert_eq!(p.indices.len(), l.num_selected(), "a validated payload");
                let indices = if device == Device::Cpu {
                    let mut idx = host::empty(&[l.num_blocks(), l.k], Kind::Int16);
                    for (o, &i) in host::i16s_mut(&mut idx).iter_mut().zip(&p.indices) {
                        *o = i as i16;
                    }
                    idx
                } else {
                    // 16-bit across the bus, widened on the device.
                    let idx: Vec<i16> = p.indices.iter().map(|&i| i as i16).collect();
                    Tensor::from_slice(&idx)
                        .to_device(device)
                        .to_kind(Kind::Int64)
                        .view([l.num_blocks(), l.k])
                };
                let values = match &p.values {
                    Values::F32(v) => Tensor::from_slice(v).to_device(device),
                    Values::Quantized(q) => quant::dequantize(q, device),
                };
                Selected {
                    indices,
                    values: values.view([l.num_blocks(), l.k]),
                }
            })
            .collect()
    }

    /// Tensor -> coefficient blocks [nb, h*w] (DCT when enabled).
    pub fn transform(&self, layout: &BlockLayout, x: &Tensor) -> Tensor {
        let blocks = layout.split_blocks(&x.to_kind(Kind::Float));
        let blocks = if self.spec.params.use_dct {
            self.dct.forward(&blocks)
        } else {
            blocks
        };
        blocks.reshape([layout.num_blocks(), layout.block_size()])
    }

    /// Coefficient blocks [nb, h*w] -> tensor of the layout's shape.
    pub fn inverse_transform(&self, layout: &BlockLayout, coeffs: &Tensor) -> Tensor {
        let blocks = coeffs.reshape([layout.num_blocks(), layout.h, layout.w]);
        let blocks = if self.spec.params.use_dct {
            self.dct.inverse(&blocks)
        } else {
            blocks
        };
        layout.join_blocks(&blocks)
    }

    /// Top-k by magnitude of each block's coefficients (canonical: see the module docs).
    pub fn encode_tensor(&self, layout: &BlockLayout, x: &Tensor) -> Selected {
        let x = x.to_kind(Kind::Float);
        let (nb, k) = (layout.num_blocks(), layout.k);
        if x.device() != Device::Cpu || self.tensor_ops_only {
            let coeffs = self.transform(layout, &x);
            let (_, order) = coeffs.abs().sort_stable(true, -1, true);
            let (indices, _) = order.narrow(1, 0, k).sort(-1, false);
            let values = coeffs.gather(1, &indices, false);
            return Selected { indices, values };
        }
        let (source, tiles) = if self.spec.params.use_dct {
            let coeffs = self.transform(layout, &x).contiguous();
            (coeffs, Tiles::of_coefficients(layout))
        } else {
            (x.contiguous(), Tiles::of_tensor(layout))
        };
        let mut indices = host::empty(&[nb, k], Kind::Int16);
        let mut values = host::empty(&[nb, k], Kind::Float);
        host::topk::select(
            host::f32s(&source),
            tiles,
            k as usize,
            host::i16s_mut(&mut indices),
            host::f32s_mut(&mut values),
        );
        Selected { indices, values }
    }

    /// Encode every parameter (in layout order).
    pub fn encode(&self, tensors: &[Tensor]) -> Vec<Selected> {
        assert_eq!(
            tensors.len(),
            self.spec.layouts.len(),
            "one tensor per layout"
        );
        let handles: Vec<Tensor> = tensors.iter().map(Tensor::shallow_clone).collect();
        self.spec
            .layouts
            .par_iter()
            .zip(handles)
            .map(|(l, t)| self.encode_tensor(l, &t))
            .collect()
    }

    /// Peers' coefficients as host slices when the host kernels may take them all.
    fn host_peers<'a>(
        &self,
        peers: &[&'a Selected],
    ) -> Option<Vec<host::scatter::PeerCoefficients<'a>>> {
        if self.tensor_ops_only {
            return None;
        }
        peers.iter().map(|p| p.on_host()).collect()
    }

    /// Scatter-mean of any number of peers' coefficients into dense [nb, h*w]: a coordinate
    /// chosen by c peers gets the mean of their c values; one nobody chose stays 0.
    pub fn scatter_mean(&self, layout: &BlockLayout, peers: &[&Selected]) -> Tensor {
        let (nb, bs) = (layout.num_blocks(), layout.block_size());
        let Some(first) = peers.first() else {
            return Tensor::zeros([nb, bs], (Kind::Float, Device::Cpu));
        };
        if let Some(host_peers) = self.host_peers(peers) {
            let tiles = Tiles::of_coefficients(layout);
            return host_scatter_mean(&[nb, bs], tiles, layout.k, &host_peers);
        }
        let device = first.values.device();
        let idx = Tensor::cat(
            &peers.iter().map(|p| p.indices_i64()).collect::<Vec<_>>(),
            1,
        );
        let vals = Tensor::cat(&peers.iter().map(|p| &p.values).collect::<Vec<_>>(), 1);
        let zeros = Tensor::zeros([nb, bs], (Kind::Float, device));
        let sums = zeros.scatter_add(1, &idx, &vals);
        let counts = zeros.scatter_add(1, &idx, &Tensor::ones_like(&vals));
        sums / counts.clamp_min(1.0)
    }

    /// Decode and merge peers for one tensor: one scatter-mean, one inverse transform (on the
    /// host without DCT: the scatter-mean written straight into the tensor's layout).
    pub fn batch_decode(&self, layout: &BlockLayout, peers: &[&Selected]) -> Tensor {
        if !self.spec.params.use_dct
            && !peers.is_empty()
            && let Some(host_peers) = self.host_peers(peers)
        {
            let tiles = Tiles::of_tensor(layout);
            return host_scatter_mean(&layout.shape, tiles, layout.k, &host_peers);
        }
        self.inverse_transform(layout, &self.scatter_mean(layout, peers))
    }

    /// Decode one peer's tensor (its own coefficients, everything else 0).
    pub fn decode_tensor(&self, layout: &BlockLayout, sel: &Selected) -> Tensor {
        self.batch_decode(layout, &[sel])
    }

    /// `target -= decode(sel)` (error feedback: what was sent leaves the buffer); in place on
    /// the host without DCT.
    pub fn subtract_decoded(&self, layout: &BlockLayout, target: &mut Tensor, sel: &Selected) {
        if !self.spec.params.use_dct
            && !self.tensor_ops_only
            && host::on_host(target, Kind::Float)
            && let Some(coefficients) = sel.on_host()
        {
            let tiles = Tiles::of_tensor(layout);
            host::scatter::subtract(
                host::f32s_mut(target),
                tiles,
                layout.k as usize,
                coefficients,
            );
            return;
        }
        *target -= self.decode_tensor(layout, sel);
    }
}

/// The host kernel's scatter-mean into a new tensor of `shape` laid out as `tiles`.
fn host_scatter_mean(
    shape: &[i64],
    tiles: Tiles,
    k: i64,
    peers: &[host::scatter::PeerCoefficients<'_>],
) -> Tensor {
    let mut out = host::empty(shape, Kind::Float);
    host::scatter::scatter_mean(host::f32s_mut(&mut out), tiles, k as usize, peers);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let l = &c.spec.layouts[0];
        let x = Tensor::randn([128, 64], (Kind::Float, Device::Cpu));
        let sel = c.encode_tensor(l, &x);
        assert_eq!(sel.indices.size(), vec![2, 8]);
        let blocks = l.split_blocks(&x).reshape([2, 4096]).abs();
        for b in 0..2 {
            let kth = blocks.get(b).sort(0, true).0.double_value(&[7]);
            let chosen = blocks.get(b).index_select(0, &sel.indices_i64().get(b));
            // Every chosen |x| is >= the 8th largest, and there are exactly 8 distinct ones.
            assert!(chosen.min().double_value(&[]) >= kth);
            let distinct: std::collections::HashSet<i64> =
                Vec::<i64>::try_from(&sel.indices_i64().get(b))
                    .unwrap()
                    .into_iter()
                    .collect();
            assert_eq!(distinct.len(), 8);
            let vals = sel.values.get(b);
            assert!(
                vals.equal(
                    &l.split_blocks(&x)
                        .reshape([2, 4096])
                        .get(b)
                        .index_select(0, &sel.indices_i64().get(b))
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
        for l in &c.spec.layouts {
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
            let l = &c.spec.layouts[0];
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
                    &p.indices_i64(),
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
        let l = &c.spec.layouts[0];
        let mut buffer = Tensor::randn([64, 64], (Kind::Float, Device::Cpu));
        let sent = c.encode_tensor(l, &buffer);
        buffer -= c.decode_tensor(l, &sent);
        // At the sent coordinates the buffer's coefficients are now zero; elsewhere unchanged.
        let coeffs = c.transform(l, &buffer);
        let at_sent = coeffs
            .gather(1, &sent.indices_i64(), false)
            .abs()
            .max()
            .double_value(&[]);
        assert!(at_sent < 1e-5, "residual at sent coordinates {at_sent}");
        let norm_left = coeffs.norm().double_value(&[]);
        assert!(norm_left > 1.0, "the unsent mass stays in the buffer");
    }
}
