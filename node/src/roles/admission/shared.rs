//! The coordinates two payloads both selected, block by block, and the cosine of their
//! values there: what the copy check (index overlap) and the agreement check (value cosine)
//! are computed on.

use templar_protocol::payload::{BlockLayout, Payload};

/// Calls `f(param, i, j)` for every coordinate that `a` and `b` both selected in the same
/// block of parameter `param` (`i` and `j` its positions in `a`'s and `b`'s lists of that
/// parameter); returns how many coordinates `a` selected in the blocks compared. Indices are
/// block-local, so the same position in another block is another coordinate.
pub fn for_each_shared(
    a: &Payload,
    b: &Payload,
    layouts: &[BlockLayout],
    mut f: impl FnMut(usize, usize, usize),
) -> usize {
    let mut total = 0usize;
    let mut position: Vec<u32> = Vec::new();
    for (param, ((pa, pb), layout)) in a.params.iter().zip(&b.params).zip(layouts).enumerate() {
        let k = (layout.k.max(1)) as usize;
        position.clear();
        position.resize(layout.block_size().max(1) as usize, u32::MAX);
        let blocks = pa.indices.chunks(k).zip(pb.indices.chunks(k)).enumerate();
        for (block, (ba, bb)) in blocks {
            for (j, &i) in ba.iter().enumerate() {
                position[i as usize] = (block * k + j) as u32;
            }
            for (j, &i) in bb.iter().enumerate() {
                let at = position[i as usize];
                if at != u32::MAX && at as usize / k == block {
                    f(param, at as usize, block * k + j);
                }
            }
            total += ba.len();
        }
    }
    total
}

/// Cosine similarity of `a`'s and `b`'s values on the coordinates both selected, block by
/// block (0 when they share none): near 1 for a copy with noise on its values.
pub fn value_similarity(a: &Payload, b: &Payload, layouts: &[BlockLayout]) -> f64 {
    shared_value_similarity(a, b, layouts).0
}

/// [`value_similarity`] and the number of shared coordinates it was computed on.
pub fn shared_value_similarity(a: &Payload, b: &Payload, layouts: &[BlockLayout]) -> (f64, usize) {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    let mut shared = 0usize;
    for_each_shared(a, b, layouts, |param, i, j| {
        let x = a.params[param].values.value(i) as f64;
        let y = b.params[param].values.value(j) as f64;
        dot += x * y;
        na += x * x;
        nb += y * y;
        shared += 1;
    });
    let cosine = if na > 0.0 && nb > 0.0 {
        dot / (na.sqrt() * nb.sqrt())
    } else {
        0.0
    };
    (cosine, shared)
}
