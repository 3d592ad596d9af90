//! Top-k by magnitude of every block, read where the blocks lie.
//!
//! Per block: a threshold from a fixed sample of 256 elements that about 3k elements pass;
//! one pass over the block keeping those (as one u64 each: |x| above, the index below, so
//! that one integer comparison orders them); an exact selection among those few (among all
//! when fewer than k passed); the k chosen sorted by index. The result is exactly "the k
//! largest |x|, the lower index on a tie".

use super::Tiles;
use rayon::prelude::*;

/// Elements sampled per block for the threshold.
const SAMPLES: usize = 256;
/// Candidates the threshold aims at, in multiples of k: enough that falling below k (and
/// taking the slow path) is rare, few enough that the exact selection among them is cheap.
const CANDIDATES_PER_K: usize = 3;

/// |x| as an integer that orders like |x| (NaN above infinity, as libtorch's sort puts it).
#[inline]
fn magnitude(v: f32) -> u32 {
    v.to_bits() & 0x7fff_ffff
}

/// Orders by magnitude, then by the lower index: larger is better.
#[inline]
fn rank_key(magnitude: u32, index: usize) -> u64 {
    ((magnitude as u64) << 32) | (u32::MAX - index as u32) as u64
}

#[inline]
fn index_of(key: u64) -> usize {
    (u32::MAX - key as u32) as usize
}

/// Writes, for each tile of `data` (block-major), the block-local indices of its `k` largest
/// |x| in ascending order to `indices` and their values to `values` (both blocks * k).
pub fn select(data: &[f32], tiles: Tiles, k: usize, indices: &mut [i16], values: &mut [f32]) {
    assert_eq!(data.len(), tiles.len(), "data and tiles agree");
    let blocks = tiles.blocks();
    assert!(
        indices.len() == blocks * k && values.len() == blocks * k,
        "k per block"
    );
    assert!(k <= tiles.block_size(), "k fits a block");
    if blocks == 0 || k == 0 {
        return;
    }
    let (band, out) = (tiles.band_len(), tiles.per_band() * k);
    let per_task = tiles.bands_per_task();
    data.par_chunks(band * per_task)
        .zip(indices.par_chunks_mut(out * per_task))
        .zip(values.par_chunks_mut(out * per_task))
        .for_each_init(Scratch::default, |scratch, ((data, indices), values)| {
            let bands = data
                .chunks(band)
                .zip(indices.chunks_mut(out))
                .zip(values.chunks_mut(out));
            for ((data, indices), values) in bands {
                let tiles_out = indices.chunks_mut(k).zip(values.chunks_mut(k));
                for (x, (indices, values)) in tiles_out.enumerate() {
                    scratch.select_tile(data, &tiles, x, indices, values);
                }
            }
        });
}

#[derive(Default)]
struct Scratch {
    candidates: Vec<u64>,
    sample: Vec<u32>,
}

impl Scratch {
    fn select_tile(
        &mut self,
        band: &[f32],
        tiles: &Tiles,
        x: usize,
        indices: &mut [i16],
        values: &mut [f32],
    ) {
        let (bs, k) = (tiles.block_size(), indices.len());
        let rows = || (0..tiles.h).map(|r| &band[r * tiles.cols + x * tiles.w..][..tiles.w]);
        let threshold = if bs >= SAMPLES && bs >= 8 * k {
            self.sampled_threshold(band, tiles, x, k)
        } else {
            0
        };
        let keep = |threshold: u32, candidates: &mut Vec<u64>| {
            candidates.clear();
            for (r, row) in rows().enumerate() {
                let base = r * tiles.w;
                for (c, &v) in row.iter().enumerate() {
                    let m = magnitude(v);
                    if m >= threshold {
                        candidates.push(rank_key(m, base + c));
                    }
                }
            }
        };
        keep(threshold, &mut self.candidates);
        if self.candidates.len() < k {
            keep(0, &mut self.candidates);
        }
        if self.candidates.len() > k {
            self.candidates
                .select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        }
        let chosen = &mut self.candidates[..k];
        for key in chosen.iter_mut() {
            *key = index_of(*key) as u64;
        }
        chosen.sort_unstable();
        for ((&i, index), value) in chosen.iter().zip(indices).zip(values) {
            *index = i as i16;
            *value = band[tiles.offset(x, i as usize)];
        }
    }

    /// A magnitude about `CANDIDATES_PER_K * k` of the block's elements reach: that rank of
    /// an evenly spaced sample.
    fn sampled_threshold(&mut self, band: &[f32], tiles: &Tiles, x: usize, k: usize) -> u32 {
        let bs = tiles.block_size();
        let step = bs / SAMPLES;
        self.sample.clear();
        self.sample
            .extend((0..SAMPLES).map(|s| magnitude(band[tiles.offset(x, s * step)])));
        let rank = (CANDIDATES_PER_K * k * SAMPLES)
            .div_ceil(bs)
            .clamp(1, SAMPLES);
        *self
            .sample
            .select_nth_unstable_by(rank - 1, |a, b| b.cmp(a))
            .1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, by full sort.
    fn reference(data: &[f32], tiles: Tiles, k: usize) -> (Vec<i16>, Vec<f32>) {
        let (mut idx, mut val) = (Vec::new(), Vec::new());
        for by in 0..tiles.rows / tiles.h {
            for x in 0..tiles.per_band() {
                let band = &data[by * tiles.band_len()..];
                let mut order: Vec<usize> = (0..tiles.block_size()).collect();
                let key = |i: usize| magnitude(band[tiles.offset(x, i)]);
                order.sort_by(|&a, &b| key(b).cmp(&key(a)).then(a.cmp(&b)));
                let mut chosen = order[..k].to_vec();
                chosen.sort();
                idx.extend(chosen.iter().map(|&i| i as i16));
                val.extend(chosen.iter().map(|&i| band[tiles.offset(x, i)]));
            }
        }
        (idx, val)
    }

    fn check(data: &[f32], tiles: Tiles, k: usize) {
        let blocks = tiles.blocks();
        let (mut idx, mut val) = (vec![0; blocks * k], vec![0.0; blocks * k]);
        select(data, tiles, k, &mut idx, &mut val);
        let (ri, rv) = reference(data, tiles, k);
        assert_eq!(idx, ri, "{tiles:?} k={k}");
        assert_eq!(
            val.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            rv.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    #[test]
    fn equals_a_full_sort_on_random_and_tied_data() {
        let tiles = Tiles {
            rows: 128,
            cols: 192,
            h: 64,
            w: 64,
        };
        for k in [1, 2, 8, 64, 512, 4096] {
            check(&pseudo_random(tiles.len(), k as u64), tiles, k);
        }
        // Mostly zeros: fewer than k non-zero per block, ties decided by index.
        let mut sparse = vec![0.0f32; tiles.len()];
        for i in (0..sparse.len()).step_by(97) {
            sparse[i] = i as f32;
        }
        check(&sparse, tiles, 64);
        // Every |x| equal, signs mixed; NaN and infinities rank first.
        let mut equal: Vec<f32> = (0..tiles.len())
            .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        equal[5] = f32::NAN;
        equal[700] = f32::NEG_INFINITY;
        check(&equal, tiles, 64);
        // Coefficient rows (h = 1), odd shapes, one-element blocks.
        check(
            &pseudo_random(7 * 50, 3),
            Tiles {
                rows: 7,
                cols: 50,
                h: 1,
                w: 50,
            },
            6,
        );
        check(
            &pseudo_random(97, 4),
            Tiles {
                rows: 1,
                cols: 97,
                h: 1,
                w: 1,
            },
            1,
        );
        check(
            &pseudo_random(3 * 50, 5),
            Tiles {
                rows: 3,
                cols: 50,
                h: 3,
                w: 50,
            },
            150,
        );
    }

    #[test]
    fn an_empty_tensor_selects_nothing() {
        select(
            &[],
            Tiles {
                rows: 1,
                cols: 0,
                h: 1,
                w: 1,
            },
            1,
            &mut [],
            &mut [],
        );
    }
}
