//! Which of a window's gathered payloads enter its outer step. Every node (miners,
//! validators, a node replaying the windows it missed) applies this one rule to the same
//! gathered set, so their models stay equal. Left out are:
//! - miners on the top validator's exclusion list for the window (`PeerList::excluded`: a run
//!   of negative or invalid scores), until they score positive again;
//! - a copy of another payload of the window (the later upload; both of a pair uploaded in the
//!   same second), a blend of blocks of earlier uploads of the window, and a repeat of one of
//!   the previous window's payloads ([`find_copies`]);
//! - an update without training signal: zero norm, or under `network.min_signal` times the
//!   lower median of the window's non-zero norms (a free-rider). It is judged, never a voter:
//!   the norm and agreement checks below count only payloads with signal;
//! - an amplified update: value norm above `network.norm_outlier` times the lower median of
//!   the norms of the payloads with signal;
//! - an update that disagrees with the window: median value agreement with the other payloads
//!   with signal below `network.min_agreement` ([`disagreeing`]: noise, a negated update).
//!
//! A validator also finds repeats of older windows still in retention ([`echo`]), from its
//! own history: they count in its scores only.
//!
//! The two relative checks (outliers, disagreement) are votes of the window: one that would
//! leave out half or more of the payloads with signal leaves out none of them on that ground
//! (and logs it), so a minority cannot exclude the rest.
//!
//! A payload left out still reaches the validator's scoring (an excluded miner is evaluated,
//! so it can recover; a copy, a free-rider, an outlier or a payload against the window
//! scores as an invalid submission).

pub mod agreement;
pub mod duplicates;
pub mod echo;
pub mod shared;
#[cfg(test)]
mod test_payloads;

use super::Gathered;
use crate::codec::Selected;
use crate::codec::norms::{lower_median, values_norm};
use crate::engine::Engine;
use crate::hparams::{Hparams, NetworkParams};
use agreement::disagreeing;
use duplicates::{Copy, CopyCheck, CopyOf, CopyPair, find_copies};
use rayon::prelude::*;
use std::time::SystemTime;
use templar_protocol::network::{PeerList, PeerPayload, Skipped};
use templar_protocol::node_status::SkippedPeer;
use templar_protocol::payload::{BlockLayout, Payload};
use tokio::task::block_in_place;

/// The payloads of the window before, for the stale-repeat check.
#[derive(Debug, Default)]
pub struct Admission {
    previous: Option<(u64, Vec<PeerPayload>)>,
}

/// A gathered payload, dequantised once for the verdict, the scores and the step.
pub struct Candidate {
    pub peer: PeerPayload,
    pub selected: Vec<Selected>,
}

impl Candidate {
    pub fn uid(&self) -> u16 {
        self.peer.uid
    }

    /// The L2 norm of all its values.
    pub fn norm(&self) -> f64 {
        self.selected
            .iter()
            .map(|s| values_norm(s).powi(2))
            .sum::<f64>()
            .sqrt()
    }
}

/// A closed window judged: the peer list, every valid payload dequantised, the verdict, and
/// the peers skipped at the gather.
pub struct Judged {
    pub peers: PeerList,
    pub candidates: Vec<Candidate>,
    pub decision: Decision,
    pub skipped: Vec<Skipped>,
}

impl Judged {
    /// The dequantised payloads that enter the step, in uid order.
    pub fn admitted(&self) -> Vec<Vec<Selected>> {
        self.candidates
            .iter()
            .filter(|c| self.decision.admits(c.uid()))
            .map(|c| c.selected.iter().map(Selected::shallow_clone).collect())
            .collect()
    }

    /// The peers skipped at the gather, as the node's `/status` shows them.
    pub fn skipped_status(&self) -> Vec<SkippedPeer> {
        self.skipped.iter().map(Skipped::to_status).collect()
    }

    /// The gathered payloads, for the next window's stale-repeat check.
    pub fn into_payloads(self) -> Vec<PeerPayload> {
        self.candidates.into_iter().map(|c| c.peer).collect()
    }
}

/// One window's verdict.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Copies, blends and stale repeats, with the reason; of two overlapping payloads the
    /// later by the stores' times is the copy left out of the step.
    pub copies: Vec<Copy>,
    /// The window's overlapping pairs.
    pub pairs: Vec<CopyPair>,
    /// Which of the overlapping pairs a validator scores as copies, by its own sightings of
    /// the digest commitments ([`super::sighting`]), which a copier's store cannot back-date;
    /// `None`: by the stores' times, as in `copies`.
    pub sighted_copies: Option<Vec<Copy>>,
    /// Every payload's share of coordinates in blocks that earlier uploads of the window
    /// repeat (a blend at `network.copy_overlap`): how close honest payloads come.
    pub coverage: Vec<(u16, f64)>,
    /// Miners on the top validator's exclusion list.
    pub excluded: Vec<u16>,
    /// Updates without training signal: uid and its norm over the window's median norm.
    pub free_riders: Vec<(u16, f64)>,
    /// Amplified updates: uid and its norm over the window's lower-median norm.
    pub outliers: Vec<(u16, f64)>,
    /// Updates against the window: uid and its median agreement with the others.
    pub disagreeing: Vec<(u16, f64)>,
    /// Repeats of payloads of older windows in retention, found by a validator from its own
    /// history ([`echo`]): they score as invalid but stay in the step, which every node,
    /// restarted or not, must take alike.
    pub echoes: Vec<echo::Echo>,
}

impl Decision {
    /// Whether uid's payload enters the outer step.
    pub fn admits(&self, uid: u16) -> bool {
        let judged = [&self.free_riders, &self.outliers, &self.disagreeing];
        // A copy verdict against an excluded miner's payload (a copier that framed its
        // victim by back-dating its store's times) no longer leaves anyone out.
        let against_excluded = |c: &Copy| match c.of {
            CopyOf::Window { source, .. } => self.excluded.contains(&source),
            _ => false,
        };
        !self.excluded.contains(&uid)
            && !self
                .copies
                .iter()
                .any(|c| c.uid == uid && !against_excluded(c))
            && !judged
                .iter()
                .any(|list| list.iter().any(|(u, _)| *u == uid))
    }

    pub fn copied_uids(&self) -> Vec<u16> {
        self.copies.iter().map(|c| c.uid).collect()
    }

    /// The payloads that score as copies: blends, stale repeats, echoes, and of each
    /// overlapping pair the one the validator's sightings name (else the stores' times); a
    /// tie names no one, since either may be the victim.
    pub fn scored_copies(&self) -> Vec<u16> {
        // The validator's sightings, where it has them, replace the stores' window verdicts.
        let sighted = self.sighted_copies.as_deref();
        let by_stores = |c: &&Copy| sighted.is_none() || !matches!(c.of, CopyOf::Window { .. });
        let mut uids: Vec<u16> = (self.copies.iter().filter(by_stores))
            .chain(sighted.unwrap_or_default())
            .filter(|c| c.attributed())
            .map(|c| c.uid)
            .collect();
        uids.extend(self.echoes.iter().map(|e| e.uid));
        uids.sort_unstable();
        uids.dedup();
        uids
    }

    /// The payloads that score as invalid submissions: copies ([`Decision::scored_copies`]),
    /// free-riders, amplified updates and those against the window.
    pub fn flagged(&self) -> Vec<u16> {
        let mut uids = self.scored_copies();
        for list in [&self.free_riders, &self.outliers, &self.disagreeing] {
            uids.extend(list.iter().map(|(u, _)| *u));
        }
        uids.sort_unstable();
        uids.dedup();
        uids
    }
}

impl Admission {
    /// Dequantise window `w`'s gathered payloads (once, for the verdict, the scores and the
    /// step) and decide.
    pub fn judge(&self, hp: &Hparams, engine: &Engine, w: u64, gathered: Gathered) -> Judged {
        // One payload per core at a time (unpacking into tensors is memory-bound).
        let (codec, device) = (&engine.codec, engine.device());
        let candidates: Vec<Candidate> = block_in_place(|| {
            gathered
                .payloads
                .into_par_iter()
                .map(|peer| {
                    let selected = codec.selected(&peer.payload, device);
                    Candidate { peer, selected }
                })
                .collect()
        });
        let layouts = &engine.codec.spec.layouts;
        let decision = self.decide(&hp.network, layouts, w, &gathered.peers, &candidates);
        Judged {
            peers: gathered.peers,
            candidates,
            decision,
            skipped: gathered.skipped,
        }
    }

    /// Window `w`'s verdict on its dequantised payloads (logged with reasons).
    pub fn decide(
        &self,
        n: &NetworkParams,
        layouts: &[BlockLayout],
        w: u64,
        peers: &PeerList,
        candidates: &[Candidate],
    ) -> Decision {
        let current: Vec<(u16, &Payload, SystemTime)> = candidates
            .iter()
            .map(|c| (c.uid(), &c.peer.payload, c.peer.order()))
            .collect();
        let previous: Vec<(u16, &Payload)> = match &self.previous {
            Some((pw, list)) if pw + 1 == w => list.iter().map(|p| (p.uid, &p.payload)).collect(),
            _ => Vec::new(),
        };
        let CopyCheck {
            copies,
            pairs,
            coverage,
        } = find_copies(&current, &previous, layouts, n.copy_overlap);
        for c in &copies {
            tracing::warn!(uid = c.uid, window = w, reason = %c.of, "copied payload left out");
        }
        let excluded: Vec<u16> = candidates
            .iter()
            .map(Candidate::uid)
            .filter(|u| peers.is_excluded(*u))
            .collect();
        if !excluded.is_empty() {
            tracing::info!(window = w, ?excluded, "excluded miners' payloads left out");
        }
        let norms: Vec<(u16, f64)> = candidates.iter().map(|c| (c.uid(), c.norm())).collect();
        let free_riders = without_signal(&norms, n.min_signal);
        warn_left_out(
            w,
            &free_riders,
            "without training signal (norm over the median)",
        );
        // Only payloads with signal vote on what the window's norm and direction are.
        let voters = |uid: &u16| !free_riders.iter().any(|(u, _)| u == uid);
        let signal: Vec<(u16, f64)> = norms.iter().copied().filter(|(u, _)| voters(u)).collect();
        let outliers = window_norm_outliers(w, &signal, n.norm_outlier);
        let voting: Vec<(u16, &Payload)> = current
            .iter()
            .filter(|(u, _, _)| voters(u))
            .map(|(u, p, _)| (*u, *p))
            .collect();
        let disagreeing = minority(
            w,
            "payloads against the window",
            voting.len(),
            disagreeing(&voting, layouts, n.min_agreement),
        );
        warn_left_out(w, &disagreeing, "against the window (median agreement)");
        Decision {
            copies,
            pairs,
            sighted_copies: None,
            coverage,
            excluded,
            free_riders,
            outliers,
            disagreeing,
            echoes: Vec::new(),
        }
    }

    /// Keep window `w`'s payloads for the next window's stale-repeat check.
    pub fn remember(&mut self, w: u64, payloads: Vec<PeerPayload>) {
        self.previous = Some((w, payloads));
    }
}

/// The amplified payloads among those with signal (uid, norm): a non-finite norm whatever
/// the others say, the rest by a vote of the window (logged).
fn window_norm_outliers(w: u64, signal: &[(u16, f64)], ratio: f64) -> Vec<(u16, f64)> {
    let (mut outliers, relative): (Vec<_>, Vec<_>) = norm_outliers(signal, ratio)
        .into_iter()
        .partition(|(_, over)| !over.is_finite());
    outliers.extend(minority(w, "norm outliers", signal.len(), relative));
    warn_left_out(w, &outliers, "amplified (norm over the median)");
    outliers
}

/// One warning per payload left out on the ground `why`, with the figure it was judged by.
fn warn_left_out(w: u64, left_out: &[(u16, f64)], why: &str) {
    for (uid, figure) in left_out {
        tracing::warn!(uid, window = w, figure, "payload left out: {why}");
    }
}

/// `flagged` by a vote among `voters` payloads, unless it is half of them or more: then no
/// one is left out on that ground (a minority cannot exclude the rest, and a majority that
/// disagrees with itself is no verdict).
fn minority(w: u64, what: &str, voters: usize, flagged: Vec<(u16, f64)>) -> Vec<(u16, f64)> {
    if !flagged.is_empty() && 2 * flagged.len() >= voters {
        tracing::warn!(
            window = w,
            flagged = flagged.len(),
            voters,
            "{what}: the rule would leave out half the window or more; none left out"
        );
        return Vec::new();
    }
    flagged
}

/// The payloads (uid, norm) without training signal: a zero norm, or a finite one under `min_signal` times the lower median of the non-zero norms; with their norm
/// over that median.
pub fn without_signal(norms: &[(u16, f64)], min_signal: f64) -> Vec<(u16, f64)> {
    let median = lower_median(norms.iter().map(|(_, n)| *n).filter(|n| *n > 0.0));
    norms
        .iter()
        .filter_map(|&(uid, n)| {
            let ratio = if median > 0.0 { n / median } else { 0.0 };
            (n == 0.0 || (n.is_finite() && ratio < min_signal)).then_some((uid, ratio))
        })
        .collect()
}

/// The payloads (uid, norm) whose norm exceeds `ratio` times the lower median of all of them
/// (none when `ratio` is 0), with their norm over that median.
pub fn norm_outliers(norms: &[(u16, f64)], ratio: f64) -> Vec<(u16, f64)> {
    if ratio <= 0.0 {
        return Vec::new();
    }
    let median = lower_median(norms.iter().map(|(_, n)| *n));
    norms
        .iter()
        .filter_map(|&(uid, n)| {
            // A non-finite norm is always an outlier; with a zero median (most payloads
            // empty) no finite one is.
            let over = if median > 0.0 { n / median } else { n * 0.0 };
            let outlier = over.is_nan() || over > ratio;
            outlier.then_some((uid, over))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::duplicates::CopyOf;
    use super::test_payloads;
    use super::*;
    use std::time::{Duration, SystemTime};
    use tch::Tensor;

    fn payload(uid: u16, indices: Vec<u16>) -> Payload {
        let zeros = vec![0.0; indices.len()];
        test_payloads::payload(uid, indices, zeros)
    }

    fn values(v: &[f32]) -> Vec<Selected> {
        vec![Selected {
            indices: Tensor::from_slice(&[0i64, 1]).view([1, 2]),
            values: Tensor::from_slice(v).view([1, 2]),
        }]
    }

    fn candidate(uid: u16, payload: Payload, uploaded: u64, v: &[f32]) -> Candidate {
        Candidate {
            peer: PeerPayload {
                uid,
                payload,
                uploaded: SystemTime::UNIX_EPOCH + Duration::from_secs(uploaded),
                committed: None,
                digest: format!("digest of {uid}"),
            },
            selected: values(v),
        }
    }

    fn uids(list: &[(u16, f64)]) -> Vec<u16> {
        list.iter().map(|(u, _)| *u).collect()
    }

    #[test]
    fn an_amplified_update_is_an_outlier_and_honest_spread_is_not() {
        // Norms 1, 1.3, 0.8 and 10: the fourth is 10x the lower median (1).
        let norms = [(1, 1.0), (2, 1.3), (3, 0.8), (4, 10.0)];
        let out = norm_outliers(&norms, 5.0);
        assert_eq!(uids(&out), vec![4], "{out:?}");
        assert!((out[0].1 - 10.0).abs() < 1e-9);
        assert!(norm_outliers(&norms, 0.0).is_empty(), "0 turns it off");
        assert!(norm_outliers(&norms, 11.0).is_empty());
        // Mostly empty updates: a zero median flags no finite norm.
        assert!(norm_outliers(&[(1, 0.0), (2, 0.0), (3, 1.0)], 5.0).is_empty());
        // A norm that overflows is always an outlier.
        assert_eq!(
            uids(&norm_outliers(&[(1, 1.0), (2, f64::INFINITY)], 5.0)),
            vec![2]
        );
    }

    #[test]
    fn zero_and_near_zero_updates_carry_no_signal_and_honest_spread_does() {
        let norms = [
            (1, 1.0),
            (2, 0.7),
            (3, 1.4),
            (4, 0.0),
            (5, 0.001),
            (6, f64::INFINITY),
        ];
        let out = without_signal(&norms, 0.05);
        assert_eq!(uids(&out), vec![4, 5], "{out:?}");
        // 0 flags only exact zeros.
        assert_eq!(uids(&without_signal(&norms, 0.0)), vec![4]);
        // All zero: all free-riders.
        assert_eq!(
            uids(&without_signal(&[(1, 0.0), (2, 0.0)], 0.05)),
            vec![1, 2]
        );
    }

    #[test]
    fn excluded_copied_free_and_amplified_payloads_are_left_out_and_only_the_latter_score_invalid()
    {
        let d = Decision {
            copies: vec![
                Copy {
                    uid: 3,
                    of: CopyOf::Window {
                        source: 1,
                        overlap: 1.0,
                        tied: false,
                    },
                },
                Copy {
                    uid: 8,
                    of: CopyOf::Window {
                        source: 1,
                        overlap: 1.0,
                        tied: true,
                    },
                },
            ],
            coverage: Vec::new(),
            excluded: vec![2],
            free_riders: vec![(7, 0.0)],
            outliers: vec![(4, 30.0)],
            disagreeing: vec![(6, -0.9)],
            ..Decision::default()
        };
        assert!(d.admits(1) && d.admits(5));
        for uid in [2, 3, 4, 6, 7, 8] {
            assert!(!d.admits(uid), "{uid}");
        }
        assert_eq!(
            d.flagged(),
            vec![3, 4, 6, 7],
            "an excluded miner is still scored, and so is a copy tied with its source"
        );
        let judged = Judged {
            peers: PeerList::default(),
            candidates: (1..=7)
                .map(|u| candidate(u, payload(u, vec![0, 1]), 1, &[u as f32, 0.0]))
                .collect(),
            decision: d,
            skipped: Vec::new(),
        };
        let kept: Vec<f64> = judged
            .admitted()
            .iter()
            .map(|s| s[0].values.double_value(&[0, 0]))
            .collect();
        assert_eq!(kept, vec![1.0, 5.0]);
    }

    #[test]
    fn free_riders_in_numbers_do_not_vote_and_a_majority_verdict_leaves_out_no_one() {
        // 4 honest payloads with spread norms and 3 all-zero ones (free-riders): the zeros are
        // left out as such and do not drag the median; no honest payload is an outlier.
        let layouts = vec![BlockLayout::new(&[2, 2], 2, 2)];
        let honest = [[0.6f32, 0.8], [0.0, 1.3], [0.8, 0.0], [1.0, 1.0]];
        let mut candidates: Vec<Candidate> = honest
            .iter()
            .enumerate()
            .map(|(i, v)| candidate(i as u16 + 1, payload(i as u16 + 1, vec![0, 1]), 1, v))
            .collect();
        for uid in 5..=7 {
            candidates.push(candidate(uid, payload(uid, vec![0, 1]), 1, &[0.0, 0.0]));
        }
        let n = NetworkParams {
            copy_overlap: 1.0,
            ..Hparams::default().network
        };
        let d = Admission::default().decide(&n, &layouts, 1, &PeerList::default(), &candidates);
        assert_eq!(uids(&d.free_riders), vec![5, 6, 7], "{d:?}");
        assert!(d.outliers.is_empty() && d.disagreeing.is_empty(), "{d:?}");
        // A vote that would leave out half the voters leaves out none.
        assert!(minority(1, "test", 4, vec![(1, 9.0), (2, 9.0)]).is_empty());
        assert_eq!(minority(1, "test", 5, vec![(1, 9.0), (2, 9.0)]).len(), 2);
    }

    #[test]
    fn a_repeat_of_the_previous_window_is_caught_only_against_that_window() {
        let old = payload(7, vec![0, 1]);
        let candidates = vec![
            candidate(7, old.clone(), 1, &[1.0, 0.0]),
            candidate(8, payload(8, vec![2, 3]), 1, &[0.0, 1.0]),
        ];
        let peers = PeerList {
            miners: vec![7, 8],
            excluded: vec![8],
        };
        let layouts = vec![BlockLayout::new(&[2, 2], 2, 2)];
        let n = Hparams::default().network;
        let mut a = Admission::default();
        a.remember(4, vec![candidate(7, old, 0, &[1.0, 0.0]).peer]);
        let d = a.decide(&n, &layouts, 5, &peers, &candidates);
        assert_eq!(d.copied_uids(), vec![7], "window 5 repeats window 4: {d:?}");
        assert!(
            matches!(d.copies[0].of, CopyOf::Previous { source: 7, .. }),
            "{d:?}"
        );
        assert_eq!(d.excluded, vec![8], "the top validator's list");
        let d = a.decide(&n, &layouts, 6, &peers, &candidates);
        assert!(
            d.copies.is_empty(),
            "window 6 does not follow window 4: {d:?}"
        );
    }
}
