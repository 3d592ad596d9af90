//! Copy detection: a payload whose top-k index sets overlap another's of the same window (a
//! copy, as is, re-signed or with noise on its values) or one of the previous window (a stale
//! re-upload) far beyond what independent training gives, or whose blocks repeat, block by
//! block, those of several earlier uploads of the window (a blend of parts of other payloads,
//! each under the pairwise threshold).
//!
//! Overlap of two payloads = selected coordinates in common / selected coordinates, counted
//! per block (indices are block-local, k per block). Measured between honest miners of the
//! tiny and devnet networks: 0.12 to 0.36 within a window, under 0.06 across windows; a copy
//! is 1.0. Of two overlapping payloads of one window the later upload is the copy. With equal
//! upload times (S3 stores them to the second, and a copier can time its upload) the source
//! cannot be told: both are left out of the step, and neither scores as a copy, so a copier
//! cannot get its victim penalised by tying its upload time.
//!
//! A blend is judged on the blocks where a selection is evidence (k below the block size;
//! where k covers the block every payload selects all of it): a block is repeated when an
//! earlier upload of the window selected at least the copy threshold of its coordinates, and
//! the payload is a blend when the repeated blocks hold at least the copy threshold of its
//! coordinates. Only earlier uploads count, so a victim is never the blend of its copiers.
//!
//! Value similarity (cosine on the shared coordinates, [`super::shared`]) is logged for
//! every pair at debug level but tells no copy: honest miners measured 0.89 to 0.996 (they
//! train one model on one corpus, so where they pick the same coordinate they agree), as
//! close to 1 as a copy with noise.

use super::shared::{for_each_shared, value_similarity};
use std::time::SystemTime;
use templar_protocol::payload::{BlockLayout, Payload};

/// Fraction of `a`'s selected coordinates that `b` selected too, block by block.
pub fn index_overlap(a: &Payload, b: &Payload, layouts: &[BlockLayout]) -> f64 {
    let blocks = Blocks::new(layouts);
    let mut shared = vec![0u32; blocks.len()];
    blocks.overlap(a, b, layouts, &mut shared)
}

/// A payload's blocks in one flat list (parameter by parameter), with the coordinates each
/// selects when that selection is evidence of a copy (0 where k covers the whole block).
struct Blocks {
    /// Where each parameter's blocks start.
    offset: Vec<usize>,
    /// Each parameter's k.
    k: Vec<usize>,
    evidence: Vec<u32>,
}

impl Blocks {
    fn new(layouts: &[BlockLayout]) -> Self {
        let (mut offset, mut k, mut evidence) = (Vec::new(), Vec::new(), Vec::new());
        for l in layouts {
            offset.push(evidence.len());
            k.push(l.k.max(1) as usize);
            let selects = if l.k < l.block_size() { l.k as u32 } else { 0 };
            evidence.extend(std::iter::repeat_n(selects, l.num_blocks().max(0) as usize));
        }
        Self {
            offset,
            k,
            evidence,
        }
    }

    fn len(&self) -> usize {
        self.evidence.len()
    }

    /// Counts into `shared` (one entry per block, zeroed here) the coordinates `a` and `b`
    /// both selected; returns their index overlap over all of `a`'s coordinates.
    fn overlap(
        &self,
        a: &Payload,
        b: &Payload,
        layouts: &[BlockLayout],
        shared: &mut [u32],
    ) -> f64 {
        shared.fill(0);
        let total = for_each_shared(a, b, layouts, |param, i, _| {
            shared[self.offset[param] + i / self.k[param]] += 1;
        });
        let common: u64 = shared.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            0.0
        } else {
            common as f64 / total as f64
        }
    }
}

/// Which of one payload's blocks earlier uploads repeat, and whose.
struct Repeated {
    by: Vec<Option<u16>>,
}

impl Repeated {
    fn new(blocks: usize) -> Self {
        Self {
            by: vec![None; blocks],
        }
    }

    /// Marks the evidence blocks where `source` selected at least `threshold` of the same
    /// coordinates (`shared` per block).
    fn mark(&mut self, blocks: &Blocks, shared: &[u32], threshold: f64, source: u16) {
        for ((by, &common), &selects) in self.by.iter_mut().zip(shared).zip(&blocks.evidence) {
            if by.is_none() && selects > 0 && f64::from(common) >= threshold * f64::from(selects) {
                *by = Some(source);
            }
        }
    }

    /// The repeated share of the evidence coordinates, and the sources (sorted).
    fn coverage(&self, blocks: &Blocks) -> (f64, Vec<u16>) {
        let (mut repeated, mut total) = (0u64, 0u64);
        let mut sources = Vec::new();
        for (by, &selects) in self.by.iter().zip(&blocks.evidence) {
            total += u64::from(selects);
            if let Some(uid) = by {
                repeated += u64::from(selects);
                sources.push(*uid);
            }
        }
        sources.sort_unstable();
        sources.dedup();
        let share = if total == 0 {
            0.0
        } else {
            repeated as f64 / total as f64
        };
        (share, sources)
    }
}

/// A flagged payload and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Copy {
    pub uid: u16,
    pub of: CopyOf,
}

impl Copy {
    /// Whether it scores as a copy: not when its upload time ties its source's (which of the
    /// two is the copy is unknown).
    pub fn attributed(&self) -> bool {
        !matches!(self.of, CopyOf::Window { tied: true, .. })
    }
}

/// What a flagged payload copies.
#[derive(Debug, Clone, PartialEq)]
pub enum CopyOf {
    /// `source`'s payload of the same window, uploaded earlier (`tied`: in the same second).
    Window {
        source: u16,
        overlap: f64,
        tied: bool,
    },
    /// `source`'s payload of the previous window.
    Previous { source: u16, overlap: f64 },
    /// Blocks of the `sources`' earlier payloads of the window, `coverage` of its coordinates.
    Blend { sources: Vec<u16>, coverage: f64 },
}

impl std::fmt::Display for CopyOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyOf::Window {
                source,
                overlap,
                tied: false,
            } => write!(f, "copies uid {source} (index overlap {overlap:.2})"),
            CopyOf::Window {
                source,
                overlap,
                tied: true,
            } => write!(
                f,
                "copies or is copied by uid {source}, uploaded in the same second (index overlap {overlap:.2})"
            ),
            CopyOf::Previous { source, overlap } => write!(
                f,
                "repeats uid {source}'s payload of the previous window (index overlap {overlap:.2})"
            ),
            CopyOf::Blend { sources, coverage } => write!(
                f,
                "blends blocks of uids {sources:?}, earlier uploads ({coverage:.2} of its coordinates)"
            ),
        }
    }
}

/// Two payloads of one window whose index sets overlap at the copy threshold: one copies
/// the other, whichever instant says which.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyPair {
    pub a: u16,
    pub b: u16,
    pub overlap: f64,
}

/// The copy check of one window: the flagged payloads, the overlapping pairs of the window,
/// and for every payload the share of its coordinates in blocks that earlier uploads
/// repeat (the blend figure, 0 to 1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopyCheck {
    pub copies: Vec<Copy>,
    pub pairs: Vec<CopyPair>,
    pub coverage: Vec<(u16, f64)>,
}

/// The copy of each pair, when `a_first` tells which of the two came first (`None`: a tie,
/// and no one is taken for the copy).
pub fn attribute(pairs: &[CopyPair], a_first: impl Fn(&CopyPair) -> Option<bool>) -> Vec<Copy> {
    let mut copies: Vec<Copy> = Vec::new();
    for pair in pairs {
        let (uid, source) = match a_first(pair) {
            Some(true) => (pair.b, pair.a),
            Some(false) => (pair.a, pair.b),
            None => continue,
        };
        if !copies.iter().any(|c| c.uid == uid) {
            copies.push(Copy {
                uid,
                of: CopyOf::Window {
                    source,
                    overlap: pair.overlap,
                    tied: false,
                },
            });
        }
    }
    copies.sort_by_key(|c| c.uid);
    copies
}

/// The copies among this window's payloads (uid, payload, upload time) and against the
/// previous window's (uid, payload): every pair at or above `threshold`, and every payload
/// whose blocks earlier uploads repeat for `threshold` of its coordinates.
pub fn find_copies(
    current: &[(u16, &Payload, SystemTime)],
    previous: &[(u16, &Payload)],
    layouts: &[BlockLayout],
    threshold: f64,
) -> CopyCheck {
    let blocks = Blocks::new(layouts);
    let mut shared = vec![0u32; blocks.len()];
    let mut repeated: Vec<Repeated> = current
        .iter()
        .map(|_| Repeated::new(blocks.len()))
        .collect();
    let mut flagged: Vec<Copy> = Vec::new();
    let mut pairs: Vec<CopyPair> = Vec::new();
    // An attributed verdict replaces a tied one for the same uid.
    let mut flag = |uid: u16, of: CopyOf| {
        let copy = Copy { uid, of };
        match flagged.iter_mut().find(|c| c.uid == uid) {
            None => flagged.push(copy),
            Some(c) if !c.attributed() && copy.attributed() => *c = copy,
            Some(_) => {}
        }
    };
    for (i, (ua, pa, ta)) in current.iter().enumerate() {
        for (j, (ub, pb, tb)) in current.iter().enumerate().skip(i + 1) {
            let overlap = blocks.overlap(pa, pb, layouts, &mut shared);
            tracing::debug!(
                a = ua,
                b = ub,
                overlap,
                similarity = value_similarity(pa, pb, layouts),
                "payload pair"
            );
            // Blocks of the later upload that the earlier one selected too (per block the
            // count is symmetric).
            if ta < tb {
                repeated[j].mark(&blocks, &shared, threshold, *ua);
            } else if tb < ta {
                repeated[i].mark(&blocks, &shared, threshold, *ub);
            }
            if overlap < threshold {
                continue;
            }
            pairs.push(CopyPair {
                a: *ua,
                b: *ub,
                overlap,
            });
            let tied = ta == tb;
            for (uid, source, later) in [(*ua, *ub, ta >= tb), (*ub, *ua, tb >= ta)] {
                if later {
                    flag(
                        uid,
                        CopyOf::Window {
                            source,
                            overlap,
                            tied,
                        },
                    );
                }
            }
        }
        for (ub, pb) in previous {
            let overlap = blocks.overlap(pa, pb, layouts, &mut shared);
            if overlap >= threshold {
                flag(
                    *ua,
                    CopyOf::Previous {
                        source: *ub,
                        overlap,
                    },
                );
            }
        }
    }
    let coverage = blends(current, &repeated, &blocks, threshold, &mut flag);
    flagged.sort_by_key(|c| c.uid);
    CopyCheck {
        copies: flagged,
        pairs,
        coverage,
    }
}

/// Each payload's repeated share (uid order), flagging those at `threshold` as blends.
fn blends(
    current: &[(u16, &Payload, SystemTime)],
    repeated: &[Repeated],
    blocks: &Blocks,
    threshold: f64,
    flag: &mut impl FnMut(u16, CopyOf),
) -> Vec<(u16, f64)> {
    let mut coverage = Vec::with_capacity(current.len());
    for ((uid, _, _), r) in current.iter().zip(repeated) {
        let (share, sources) = r.coverage(blocks);
        coverage.push((*uid, share));
        if share >= threshold {
            let of = CopyOf::Blend {
                sources,
                coverage: share,
            };
            flag(*uid, of);
        }
    }
    coverage.sort_by_key(|c| c.0);
    coverage
}

#[cfg(test)]
mod tests {
    use super::super::test_payloads::{payload, two_block_layout as layout};
    use super::*;
    use std::time::Duration;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn overlap_counts_common_indices_block_by_block() {
        let l = layout();
        let a = payload(1, (0..16).collect(), vec![1.0; 16]);
        // The same positions in the other block do not count: indices are block-local.
        let swapped: Vec<u16> = (8..16).chain(0..8).collect();
        let b = payload(2, swapped, vec![1.0; 16]);
        assert_eq!(index_overlap(&a, &a, &l), 1.0);
        assert_eq!(index_overlap(&a, &b, &l), 0.0);
        let half: Vec<u16> = (0..4).chain(20..24).chain(8..12).chain(30..34).collect();
        assert_eq!(index_overlap(&a, &payload(3, half, vec![0.0; 16]), &l), 0.5);
    }

    #[test]
    fn the_later_of_two_copies_and_a_stale_repeat_are_flagged_not_the_source() {
        let l = layout();
        let honest = payload(1, (0..16).collect(), vec![0.5; 16]);
        // A copy with noise on its values: the same indices.
        let noisy = payload(2, (0..16).collect(), vec![0.51; 16]);
        let other: Vec<u16> = (40..48).chain(50..58).collect();
        let independent = payload(3, other.clone(), vec![0.5; 16]);
        let last_window = payload(4, other, vec![0.2; 16]);
        let current = [
            (1, &honest, at(10)),
            (2, &noisy, at(12)),
            (3, &independent, at(11)),
        ];
        let found = find_copies(&current, &[(4, &last_window)], &l, 0.6).copies;
        let uids: Vec<u16> = found.iter().map(|c| c.uid).collect();
        assert_eq!(uids, vec![2, 3], "{found:?}");
        assert!(
            matches!(
                found[0].of,
                CopyOf::Window {
                    source: 1,
                    tied: false,
                    ..
                }
            ),
            "{found:?}"
        );
        assert!(
            matches!(found[1].of, CopyOf::Previous { source: 4, .. }),
            "{found:?}"
        );
        assert!(found.iter().all(Copy::attributed));
        // Same upload second: both of the pair are left out, neither is attributed.
        let tied = [(1, &honest, at(10)), (2, &noisy, at(10))];
        let found = find_copies(&tied, &[], &l, 0.6).copies;
        assert_eq!(found.len(), 2);
        assert!(!found.iter().any(Copy::attributed), "{found:?}");
        // A tie with one payload and an earlier upload of another: the earlier source decides.
        let three = [
            (1, &honest, at(9)),
            (2, &noisy, at(10)),
            (3, &honest, at(10)),
        ];
        let found = find_copies(&three, &[], &l, 0.6).copies;
        assert_eq!(found.iter().map(|c| c.uid).collect::<Vec<_>>(), vec![2, 3]);
        assert!(found.iter().all(Copy::attributed), "{found:?}");
        // Below the threshold nothing is.
        assert!(find_copies(&current[..1], &[], &l, 0.6).copies.is_empty());
    }

    #[test]
    fn a_blend_of_earlier_payloads_blocks_is_flagged_and_its_sources_are_not() {
        let l = layout();
        // Block 0 is indices 0..8 of the first 8 positions, block 1 the next 8 (block-local).
        let a = payload(1, (0..8).chain(0..8).collect(), vec![0.5; 16]);
        let b = payload(2, (20..28).chain(20..28).collect(), vec![0.5; 16]);
        // Block 0 from uid 1, block 1 from uid 2: half of each, under the pairwise threshold.
        let blend = payload(3, (0..8).chain(20..28).collect(), vec![0.5; 16]);
        let own = payload(4, (40..48).chain(40..48).collect(), vec![0.5; 16]);
        let current = [
            (1, &a, at(10)),
            (2, &b, at(11)),
            (3, &blend, at(12)),
            (4, &own, at(12)),
        ];
        let check = find_copies(&current, &[], &l, 0.6);
        assert_eq!(check.copies.len(), 1, "{check:?}");
        assert_eq!(check.copies[0].uid, 3);
        assert_eq!(
            check.copies[0].of,
            CopyOf::Blend {
                sources: vec![1, 2],
                coverage: 1.0
            }
        );
        assert_eq!(check.coverage, vec![(1, 0.0), (2, 0.0), (3, 1.0), (4, 0.0)]);
        // Uploaded before its sources, the same payload repeats nothing earlier, and the
        // sources, later, are not the blend of it (each repeats half).
        let first = [(1, &a, at(10)), (2, &b, at(11)), (3, &blend, at(9))];
        let check = find_copies(&first, &[], &l, 0.6);
        assert!(check.copies.is_empty(), "{check:?}");
        assert_eq!(check.coverage, vec![(1, 0.5), (2, 0.5), (3, 0.0)]);
        // Blocks where k covers the whole block are no evidence: every payload selects all.
        let full = vec![BlockLayout::new(&[2, 4], 8, 8)];
        let x = payload(1, (0..8).collect(), vec![0.5; 8]);
        let y = payload(2, (0..8).collect(), vec![0.4; 8]);
        let check = find_copies(&[(1, &x, at(1)), (2, &y, at(2))], &[], &full, 0.6);
        assert_eq!(check.coverage, vec![(1, 0.0), (2, 0.0)]);
    }
}
