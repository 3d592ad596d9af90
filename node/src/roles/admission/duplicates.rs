//! Copy detection: a payload whose top-k index sets overlap another's of the same window (a
//! copy, as is, re-signed or with noise on its values) or one of the previous window (a stale
//! re-upload) far beyond what independent training gives.
//!
//! Overlap of two payloads = selected coordinates in common / selected coordinates, counted
//! per block (indices are block-local, k per block). Measured between honest miners of the
//! tiny and devnet networks: 0.12 to 0.36 within a window, under 0.06 across windows; a copy
//! is 1.0. Of two overlapping payloads of one window the later upload is the copy. With equal
//! upload times (S3 stores them to the second, and a copier can time its upload) the source
//! cannot be told: both are left out of the step, and neither scores as a copy, so a copier
//! cannot get its victim penalised by tying its upload time.
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
    let mut common = 0usize;
    let total = for_each_shared(a, b, layouts, |_, _, _| common += 1);
    if total == 0 {
        0.0
    } else {
        common as f64 / total as f64
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
        }
    }
}

/// The copies among this window's payloads (uid, payload, upload time) and against the
/// previous window's (uid, payload): every pair at or above `threshold`.
pub fn find_copies(
    current: &[(u16, &Payload, SystemTime)],
    previous: &[(u16, &Payload)],
    layouts: &[BlockLayout],
    threshold: f64,
) -> Vec<Copy> {
    let mut flagged: Vec<Copy> = Vec::new();
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
        for (ub, pb, tb) in &current[i + 1..] {
            let overlap = index_overlap(pa, pb, layouts);
            tracing::debug!(
                a = ua,
                b = ub,
                overlap,
                similarity = value_similarity(pa, pb, layouts),
                "payload pair"
            );
            if overlap < threshold {
                continue;
            }
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
            let overlap = index_overlap(pa, pb, layouts);
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
    flagged.sort_by_key(|c| c.uid);
    flagged
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
        let found = find_copies(&current, &[(4, &last_window)], &l, 0.6);
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
        let found = find_copies(&tied, &[], &l, 0.6);
        assert_eq!(found.len(), 2);
        assert!(!found.iter().any(Copy::attributed), "{found:?}");
        // A tie with one payload and an earlier upload of another: the earlier source decides.
        let three = [
            (1, &honest, at(9)),
            (2, &noisy, at(10)),
            (3, &honest, at(10)),
        ];
        let found = find_copies(&three, &[], &l, 0.6);
        assert_eq!(found.iter().map(|c| c.uid).collect::<Vec<_>>(), vec![2, 3]);
        assert!(found.iter().all(Copy::attributed), "{found:?}");
        // Below the threshold nothing is.
        assert!(find_copies(&current[..1], &[], &l, 0.6).is_empty());
    }
}
