//! Echoes: a payload that repeats one of a window still in retention but older than the
//! previous one (which [`super::find_copies`] compares whole). Every gathered payload leaves
//! a sketch: the hash of its index set in each of up to [`SKETCH_BLOCKS`] evidence blocks
//! (k below the block size) taken at an even stride. A payload whose sketch equals an older
//! one's in at least `copy_overlap` of the sampled blocks repeats it.
//!
//! A block's whole index set recurs only by repetition: honest payloads of different windows
//! share under 0.06 of their coordinates, so their k-of-block sets never coincide, while an
//! echo with new values (re-signed, noise added) keeps every set. The sketches live on the
//! validator only and count in its scores, not in the step: a node restarted without them
//! would otherwise admit what the others leave out, and the models would part.

use std::collections::VecDeque;
use templar_protocol::payload::{BlockLayout, Payload};

/// The most blocks a sketch samples: 8 bytes each, so a sketch stays under 9 KB whatever
/// the model's size (a 150M model has about 37,000 blocks).
pub const SKETCH_BLOCKS: usize = 1024;

/// Which blocks a sketch samples: (parameter, block) pairs at an even stride over the
/// evidence blocks of the layout.
#[derive(Debug, Clone, PartialEq)]
pub struct SketchPlan {
    blocks: Vec<(usize, usize)>,
}

impl SketchPlan {
    pub fn new(layouts: &[BlockLayout]) -> Self {
        let evidence: Vec<(usize, usize)> = layouts
            .iter()
            .enumerate()
            .filter(|(_, l)| l.k < l.block_size())
            .flat_map(|(p, l)| (0..l.num_blocks().max(0) as usize).map(move |b| (p, b)))
            .collect();
        let stride = evidence.len().div_ceil(SKETCH_BLOCKS).max(1);
        Self {
            blocks: evidence.into_iter().step_by(stride).collect(),
        }
    }

    /// The hash of `p`'s index set in each sampled block (order within a block ignored).
    pub fn sketch(&self, p: &Payload, layouts: &[BlockLayout]) -> Sketch {
        let mut set: Vec<u32> = Vec::new();
        self.blocks
            .iter()
            .map(|&(param, block)| {
                let k = layouts[param].k.max(1) as usize;
                let indices = p.params.get(param).map(|u| &u.indices[..]).unwrap_or(&[]);
                set.clear();
                set.extend(
                    indices
                        .iter()
                        .skip(block * k)
                        .take(k)
                        .map(|&i| u32::from(i)),
                );
                set.sort_unstable();
                fnv1a(&set)
            })
            .collect()
    }
}

fn fnv1a(values: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// An echo found: `uid`'s payload repeats `source`'s of window `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct Echo {
    pub uid: u16,
    pub source: u16,
    pub window: u64,
    /// Share of the sampled blocks with the same index set.
    pub matched: f64,
}

impl std::fmt::Display for Echo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "repeats uid {}'s payload of window {} ({:.2} of sampled blocks)",
            self.source, self.window, self.matched
        )
    }
}

/// A payload's sketch: one hash per sampled block.
pub type Sketch = Vec<u64>;

/// The sketches of the windows in retention (window, then uid and sketch), oldest first.
#[derive(Debug, Default)]
pub struct EchoHistory {
    windows: VecDeque<(u64, Vec<(u16, Sketch)>)>,
}

impl EchoHistory {
    /// The payloads of window `w` (uid, sketch) that repeat one of a window from `w - 2`
    /// back to `w - retention` at `threshold` of the sampled blocks (the earliest source
    /// found per payload).
    pub fn find(&self, w: u64, current: &[(u16, Sketch)], threshold: f64) -> Vec<Echo> {
        let mut echoes = Vec::new();
        for (uid, sketch) in current {
            let older = self
                .windows
                .iter()
                .filter(|(ow, _)| ow + 2 <= w)
                .flat_map(|(ow, list)| list.iter().map(move |(u, s)| (*ow, *u, s)));
            for (ow, source, old) in older {
                let matched = matched_share(sketch, old);
                if matched >= threshold {
                    echoes.push(Echo {
                        uid: *uid,
                        source,
                        window: ow,
                        matched,
                    });
                    break;
                }
            }
        }
        echoes
    }

    /// Keep window `w`'s sketches and forget windows that left retention.
    pub fn remember(&mut self, w: u64, sketches: Vec<(u16, Sketch)>, retention: u64) {
        self.windows.retain(|(ow, _)| *ow < w);
        self.windows.push_back((w, sketches));
        while self
            .windows
            .front()
            .is_some_and(|(ow, _)| ow + retention < w)
        {
            self.windows.pop_front();
        }
    }

    /// The windows held.
    pub fn windows(&self) -> Vec<u64> {
        self.windows.iter().map(|(w, _)| *w).collect()
    }
}

/// Share of sampled blocks whose index sets are equal (0 for an empty sketch).
fn matched_share(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() || a.len() != b.len() {
        return 0.0;
    }
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::admission::test_payloads;

    /// One 64x64 tensor: 64 blocks of 8x8, k = 8.
    fn layouts() -> Vec<BlockLayout> {
        vec![BlockLayout::new(&[64, 64], 8, 8)]
    }

    /// A payload whose k indices per block are drawn from a generator seeded by (uid, w), as
    /// independent training would pick them.
    fn trained(uid: u16, w: u64) -> Payload {
        let mut state = (u64::from(uid) << 32 | w).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut indices = Vec::new();
        for _ in 0..64 {
            let mut block: Vec<u16> = Vec::new();
            while block.len() < 8 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state % 64) as u16;
                if !block.contains(&i) {
                    block.push(i);
                }
            }
            indices.extend(block);
        }
        let values = vec![0.5; indices.len()];
        test_payloads::payload(uid, indices, values)
    }

    #[test]
    fn an_echo_of_a_window_in_retention_is_found_and_an_unrelated_payload_is_not() {
        let layouts = layouts();
        let plan = SketchPlan::new(&layouts);
        let sketch = |uid, w| plan.sketch(&trained(uid, w), &layouts);
        let mut history = EchoHistory::default();
        for w in 0..4u64 {
            history.remember(w, (1..=3u16).map(|u| (u, sketch(u, w))).collect(), 3);
        }
        assert_eq!(history.windows(), vec![0, 1, 2, 3]);
        // Window 4: uid 9 re-uploads uid 2's payload of window 2; uid 1 trains anew.
        let found = history.find(4, &[(9, sketch(2, 2)), (1, sketch(1, 4))], 0.5);
        assert_eq!(
            found,
            vec![Echo {
                uid: 9,
                source: 2,
                window: 2,
                matched: 1.0
            }]
        );
        // The previous window is the copy check's (it compares whole payloads).
        assert!(history.find(4, &[(9, sketch(2, 3))], 0.5).is_empty());
        // Past retention: window 5 keeps windows 2 to 5; an echo of window 0 is not found.
        history.remember(4, vec![], 3);
        history.remember(5, vec![], 3);
        assert_eq!(history.windows(), vec![2, 3, 4, 5]);
        assert!(history.find(6, &[(9, sketch(2, 0))], 0.5).is_empty());
        assert_eq!(history.find(6, &[(9, sketch(2, 2))], 0.5).len(), 1);
    }

    #[test]
    fn the_sketch_ignores_values_and_order_within_a_block_and_is_bounded() {
        let big = vec![BlockLayout::new(&[4096, 4096], 64, 64)];
        let blocks = SketchPlan::new(&big).blocks.len();
        assert!(
            blocks <= SKETCH_BLOCKS && blocks > SKETCH_BLOCKS / 2,
            "{blocks}"
        );
        let layouts = layouts();
        let plan = SketchPlan::new(&layouts);
        let p = trained(1, 0);
        let mut q = p.clone();
        for u in &mut q.params {
            for block in u.indices.chunks_mut(8) {
                block.reverse();
            }
            u.values = templar_protocol::payload::Values::F32(vec![-1.0; u.indices.len()]);
        }
        assert_eq!(plan.sketch(&p, &layouts), plan.sketch(&q, &layouts));
        // Independent selections share no block's whole set.
        let other = plan.sketch(&trained(1, 1), &layouts);
        assert_eq!(matched_share(&plan.sketch(&p, &layouts), &other), 0.0);
    }
}
