//! Scatter-mean of peers' coefficients straight into the output's memory, and the in-place
//! subtraction of one's own sent coefficients (error feedback).
//!
//! Each band of blocks is written by one thread, once; a coordinate chosen by c peers gets
//! the sum of their values in peer order (as libtorch's CPU scatter_add adds them) divided
//! by c.

use super::Tiles;
use rayon::prelude::*;

/// One peer's coefficients of a tensor: block-local indices and values, k per block.
pub type PeerCoefficients<'a> = (&'a [i16], &'a [f32]);

/// Scratch per thread for the sums and counts of a group of tiles: small enough for L2.
const GROUP_SCRATCH_FLOATS: usize = 32 << 10;

/// Writes every element of `out`: the mean of the peers' values at each chosen coordinate,
/// 0 elsewhere. A few tiles at a time: each peer's coefficients of those tiles (contiguous
/// in its lists, so read as streams) add into a sums-and-counts scratch indexed by the
/// block-local index, then each tile row is written out once. Panics on an index beyond the
/// block (callers pass validated payloads or their own encodings).
pub fn scatter_mean(out: &mut [f32], tiles: Tiles, k: usize, peers: &[PeerCoefficients<'_>]) {
    assert_eq!(out.len(), tiles.len(), "output and tiles agree");
    if tiles.is_empty() {
        return;
    }
    let blocks = tiles.blocks();
    for (idx, val) in peers {
        assert!(
            idx.len() == blocks * k && val.len() == blocks * k,
            "k per block"
        );
    }
    let per_band = tiles.per_band();
    let bs = tiles.block_size();
    let group = (GROUP_SCRATCH_FLOATS / bs).clamp(1, per_band);
    out.par_chunks_mut(tiles.band_len())
        .with_min_len(tiles.bands_per_task())
        .enumerate()
        .for_each_init(
            || (vec![0f32; group * bs], vec![0f32; group * bs]),
            |(sums, counts), (by, out)| {
                for first in (0..per_band).step_by(group) {
                    let n = group.min(per_band - first);
                    let at = (by * per_band + first) * k..(by * per_band + first + n) * k;
                    for (idx, val) in peers {
                        let (idx, val) = (&idx[at.clone()], &val[at.clone()]);
                        for (t, (idx, val)) in
                            idx.chunks_exact(k).zip(val.chunks_exact(k)).enumerate()
                        {
                            let (sums, counts) =
                                (&mut sums[t * bs..][..bs], &mut counts[t * bs..][..bs]);
                            for (&i, &v) in idx.iter().zip(val) {
                                let i = block_index(i, bs);
                                sums[i] += v;
                                counts[i] += 1.0;
                            }
                        }
                    }
                    // sum / max(count, 1), as the tensor path divides; the scratch is left
                    // at zero for the next group.
                    for t in 0..n {
                        for r in 0..tiles.h {
                            let row = &mut out[r * tiles.cols + (first + t) * tiles.w..][..tiles.w];
                            let at = t * bs + r * tiles.w;
                            let sums = &mut sums[at..][..tiles.w];
                            let counts = &mut counts[at..][..tiles.w];
                            for ((o, s), c) in
                                row.iter_mut().zip(sums.iter_mut()).zip(counts.iter_mut())
                            {
                                *o = *s / c.max(1.0);
                                *s = 0.0;
                                *c = 0.0;
                            }
                        }
                    }
                }
            },
        );
}

/// `out[coordinate] -= value` for each of one peer's coefficients (the tensor-op path's
/// `out -= decode(peer)`, without the dense decode).
pub fn subtract(out: &mut [f32], tiles: Tiles, k: usize, (idx, val): PeerCoefficients<'_>) {
    assert_eq!(out.len(), tiles.len(), "output and tiles agree");
    if tiles.is_empty() {
        return;
    }
    let blocks = tiles.blocks();
    assert!(
        idx.len() == blocks * k && val.len() == blocks * k,
        "k per block"
    );
    let (per_band, bs) = (tiles.per_band(), tiles.block_size());
    out.par_chunks_mut(tiles.band_len())
        .with_min_len(tiles.bands_per_task())
        .enumerate()
        .for_each(|(by, out)| {
            for x in 0..per_band {
                let at = (by * per_band + x) * k..(by * per_band + x + 1) * k;
                for (&i, &v) in idx[at.clone()].iter().zip(&val[at]) {
                    out[tiles.offset(x, block_index(i, bs))] -= v;
                }
            }
        });
}

#[inline]
fn block_index(i: i16, block_size: usize) -> usize {
    assert!(
        (0..block_size as i64).contains(&(i as i64)),
        "index {i} outside a block of {block_size}"
    );
    i as usize
}
