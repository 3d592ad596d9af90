//! Which of a window's gathered payloads enter its outer step. Every node (miners,
//! validators, a node replaying the windows it missed) applies this one rule to the same
//! gathered set, so their models stay equal. Left out are:
//! - miners on the top validator's exclusion list for the window (`PeerList::excluded`: a run
//!   of negative or invalid scores), until they score positive again;
//! - a copy of another payload of the window (the later upload) and a repeat of one of the
//!   previous window's payloads ([`find_copies`]);
//! - an amplified update: value norm above `network.norm_outlier` times the lower median of
//!   the window's payload norms (the outer step clips each peer to the median norm anyway;
//!   this makes amplifying a detectable offence instead of a free one);
//! - an update that disagrees with the window: median value agreement with the other payloads
//!   below `network.min_agreement` ([`disagreeing`]: noise, a negated update).
//!
//! A payload left out still reaches the validator's scoring (an excluded miner is evaluated,
//! so it can recover; a copy, an outlier or a payload against the window scores as an
//! invalid submission).

use super::Gathered;
use super::agreement::disagreeing;
use super::duplicates::{Copy, find_copies};
use crate::codec::Selected;
use crate::engine::Engine;
use crate::hparams::Hparams;
use crate::optim::sparseloco::{lower_median, values_norm};
use rayon::prelude::*;
use templar_protocol::payload::{BlockLayout, Payload};
use tokio::task::block_in_place;

/// The payloads of the window before, for the stale-repeat check.
#[derive(Debug, Default)]
pub struct Admission {
    previous: Option<(u64, Vec<(u16, Payload)>)>,
}

/// One window's verdict.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Copies and stale repeats, with the reason.
    pub copies: Vec<Copy>,
    /// Miners on the top validator's exclusion list.
    pub excluded: Vec<u16>,
    /// Amplified updates: uid and its norm over the window's lower-median norm.
    pub outliers: Vec<(u16, f64)>,
    /// Updates against the window: uid and its median agreement with the others.
    pub disagreeing: Vec<(u16, f64)>,
}

impl Decision {
    /// Whether uid's payload enters the outer step.
    pub fn admits(&self, uid: u16) -> bool {
        !self.excluded.contains(&uid)
            && !self.copies.iter().any(|c| c.uid == uid)
            && !self.outliers.iter().any(|(u, _)| *u == uid)
            && !self.disagreeing.iter().any(|(u, _)| *u == uid)
    }

    /// The dequantised payloads (`selected`, in the order of `payloads`) that enter the step.
    pub fn admitted(
        &self,
        payloads: &[(u16, Payload)],
        selected: Vec<Vec<Selected>>,
    ) -> Vec<Vec<Selected>> {
        selected
            .into_iter()
            .zip(payloads)
            .filter(|(_, (uid, _))| self.admits(*uid))
            .map(|(s, _)| s)
            .collect()
    }

    pub fn copied_uids(&self) -> Vec<u16> {
        self.copies.iter().map(|c| c.uid).collect()
    }

    /// The payloads that score as invalid submissions: copies, amplified updates and those
    /// against the window.
    pub fn flagged(&self) -> Vec<u16> {
        let mut uids = self.copied_uids();
        uids.extend(self.outliers.iter().map(|(u, _)| *u));
        uids.extend(self.disagreeing.iter().map(|(u, _)| *u));
        uids.sort_unstable();
        uids.dedup();
        uids
    }
}

impl Admission {
    /// Dequantise window `w`'s gathered payloads (once, for the verdict, the scores and the
    /// step) and decide: the verdict with the dequantised payloads in gathered order.
    pub fn judge(
        &self,
        hp: &Hparams,
        engine: &Engine,
        w: u64,
        gathered: &Gathered,
    ) -> (Decision, Vec<Vec<Selected>>) {
        // One payload per core at a time (unpacking into tensors is memory-bound).
        let (codec, device) = (&engine.codec, engine.device());
        let selected: Vec<Vec<Selected>> = block_in_place(|| {
            gathered
                .payloads
                .par_iter()
                .map(|(_, p)| codec.selected(p, device))
                .collect()
        });
        let layouts = &engine.codec.spec.layouts;
        (self.decide(hp, layouts, w, gathered, &selected), selected)
    }

    /// Window `w`'s verdict on what was gathered, `selected` being its payloads dequantised
    /// (logged with reasons).
    pub fn decide(
        &self,
        hp: &Hparams,
        layouts: &[BlockLayout],
        w: u64,
        gathered: &Gathered,
        selected: &[Vec<Selected>],
    ) -> Decision {
        let current: Vec<_> = gathered
            .payloads
            .iter()
            .zip(&gathered.uploaded)
            .map(|((u, p), t)| (*u, p, *t))
            .collect();
        let previous: Vec<(u16, &Payload)> = match &self.previous {
            Some((pw, list)) if pw + 1 == w => list.iter().map(|(u, p)| (*u, p)).collect(),
            _ => Vec::new(),
        };
        let copies = find_copies(&current, &previous, layouts, hp.network.copy_overlap);
        for c in &copies {
            tracing::warn!(uid = c.uid, window = w, reason = %c.reason, "copied payload left out");
        }
        let excluded: Vec<u16> = gathered
            .payloads
            .iter()
            .map(|(u, _)| *u)
            .filter(|u| gathered.peers.is_excluded(*u))
            .collect();
        if !excluded.is_empty() {
            tracing::info!(window = w, ?excluded, "excluded miners' payloads left out");
        }
        let outliers = norm_outliers(&gathered.payloads, selected, hp.network.norm_outlier);
        for (uid, ratio) in &outliers {
            tracing::warn!(
                uid,
                window = w,
                ratio,
                "amplified payload left out: norm {ratio:.1}x the median"
            );
        }
        let disagreeing = disagreeing(&gathered.payloads, layouts, hp.network.min_agreement);
        for (uid, agreement) in &disagreeing {
            tracing::warn!(
                uid,
                window = w,
                agreement,
                "payload against the window left out"
            );
        }
        Decision {
            copies,
            excluded,
            outliers,
            disagreeing,
        }
    }

    /// Keep window `w`'s payloads for the next window's stale-repeat check.
    pub fn remember(&mut self, w: u64, payloads: Vec<(u16, Payload)>) {
        self.previous = Some((w, payloads));
    }
}

/// The payloads whose whole value norm exceeds `ratio` times the lower median of all of them
/// (none when `ratio` is 0), with their norm over that median.
pub fn norm_outliers(
    payloads: &[(u16, Payload)],
    selected: &[Vec<Selected>],
    ratio: f64,
) -> Vec<(u16, f64)> {
    if ratio <= 0.0 {
        return Vec::new();
    }
    let norms: Vec<f64> = selected
        .iter()
        .map(|tensors| {
            tensors
                .iter()
                .map(|s| values_norm(s).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let median = lower_median(norms.iter().copied());
    payloads
        .iter()
        .zip(&norms)
        .filter_map(|((uid, _), &n)| {
            // A non-finite norm is always an outlier; with a zero median (most payloads
            // empty) no finite one is.
            let over = if median > 0.0 { n / median } else { n * 0.0 };
            let outlier = over.is_nan() || over > ratio;
            outlier.then_some((*uid, over))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::test_payloads;
    use std::time::{Duration, SystemTime};
    use tch::Tensor;
    use templar_protocol::network::PeerList;

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

    #[test]
    fn an_amplified_update_is_an_outlier_and_honest_spread_is_not() {
        let payloads: Vec<_> = (1..=4).map(|u| (u, payload(u, vec![0, 1]))).collect();
        // Norms 1, 1.3, 0.8 and 10: the fourth is 10x the lower median (1).
        let selected = vec![
            values(&[0.6, 0.8]),
            values(&[0.0, 1.3]),
            values(&[0.8, 0.0]),
            values(&[6.0, 8.0]),
        ];
        let out = norm_outliers(&payloads, &selected, 5.0);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, 4);
        assert!((out[0].1 - 10.0).abs() < 1e-6);
        assert!(
            norm_outliers(&payloads, &selected, 0.0).is_empty(),
            "0 turns it off"
        );
        assert!(norm_outliers(&payloads, &selected, 11.0).is_empty());
        // Mostly empty updates (free-riders): a zero median flags no finite norm.
        let zeros = vec![
            values(&[0.0, 0.0]),
            values(&[0.0, 0.0]),
            values(&[1.0, 0.0]),
        ];
        assert!(norm_outliers(&payloads[..3], &zeros, 5.0).is_empty());
        // A norm that overflows is always an outlier.
        let inf = vec![values(&[1.0, 0.0]), values(&[f32::MAX, f32::MAX])];
        assert_eq!(norm_outliers(&payloads[..2], &inf, 5.0)[0].0, 2);
    }

    #[test]
    fn excluded_copied_and_amplified_payloads_are_left_out_and_only_the_latter_score_invalid() {
        let d = Decision {
            copies: vec![Copy {
                uid: 3,
                reason: "copies uid 1".into(),
            }],
            excluded: vec![2],
            outliers: vec![(4, 30.0)],
            disagreeing: vec![(6, -0.9)],
        };
        assert!(d.admits(1) && d.admits(5));
        assert!(!d.admits(2) && !d.admits(3) && !d.admits(4) && !d.admits(6));
        assert_eq!(
            d.flagged(),
            vec![3, 4, 6],
            "an excluded miner is still scored"
        );
        let payloads: Vec<_> = (1..=6).map(|u| (u, payload(u, vec![0, 1]))).collect();
        let selected: Vec<_> = (1..=6).map(|u| values(&[u as f32, 0.0])).collect();
        let kept: Vec<f64> = d
            .admitted(&payloads, selected)
            .iter()
            .map(|s| s[0].values.double_value(&[0, 0]))
            .collect();
        assert_eq!(kept, vec![1.0, 5.0]);
    }

    #[test]
    fn a_repeat_of_the_previous_window_is_caught_only_against_that_window() {
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let old = payload(7, vec![0, 1]);
        let current = Gathered {
            peers: PeerList {
                miners: vec![7, 8],
                excluded: vec![8],
            },
            payloads: vec![(7, old.clone()), (8, payload(8, vec![2, 3]))],
            uploaded: vec![at(1), at(1)],
            skipped: Vec::new(),
        };
        let selected = vec![values(&[1.0, 0.0]), values(&[0.0, 1.0])];
        let layouts = vec![BlockLayout::new(&[2, 2], 2, 2)];
        let hp = Hparams::default();
        let mut a = Admission::default();
        a.remember(4, vec![(7, old)]);
        let d = a.decide(&hp, &layouts, 5, &current, &selected);
        assert_eq!(d.copied_uids(), vec![7], "window 5 repeats window 4: {d:?}");
        assert!(d.copies[0].reason.contains("previous window"), "{d:?}");
        assert_eq!(d.excluded, vec![8], "the top validator's list");
        let d = a.decide(&hp, &layouts, 6, &current, &selected);
        assert!(
            d.copies.is_empty(),
            "window 6 does not follow window 4: {d:?}"
        );
    }
}
