//! A validator's bookkeeping of miners: the moving average of each one's loss improvement,
//! which miners to evaluate in a window, and the weights the scores become
//! (formulas: docs/algorithm.md).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use templar_protocol::hparams::NetworkParams;

/// A miner's record, persisted so a restarted validator resumes where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreState {
    #[serde(with = "lossless_f64")]
    pub ema: f64,
    /// Moving average (same alpha) of the own-page improvement beyond the random pages'
    /// (own − random): the part of an update's gain that only training on the assigned pages
    /// gives. A miner that trains on part of its pages gets that part of it.
    #[serde(default, with = "lossless_f64")]
    pub specific: f64,
    #[serde(default, with = "lossless_f64::option")]
    pub last_own: Option<f64>,
    #[serde(default, with = "lossless_f64::option")]
    pub last_random: Option<f64>,
    /// Drift of the model the last valid payload was trained from (`Engine::sample_drift`).
    #[serde(default, with = "lossless_f64::option")]
    pub last_sync_drift: Option<f64>,
    /// Loss on held-out pages after the last evaluated update alone (for `/status`).
    #[serde(default, with = "lossless_f64::option")]
    pub last_held_out: Option<f64>,
    /// Windows in a row without a valid submission; each one's penalty is steeper.
    #[serde(default)]
    pub consecutive_invalid: u32,
    /// Moving average ([`OWN_BEATS_RANDOM_ALPHA`]) of +1 when the update improved the miner's
    /// own pages more than the validator's secret random pages, else -1: near 1 for a miner that trains on its
    /// assigned data, near 0 or below for one that trains on pages of its own choosing (its
    /// update helps both alike). Starts at 1; weights scale by its positive part.
    #[serde(default = "one", with = "lossless_f64")]
    pub own_beats_random: f64,
    /// Scored windows in a row that were invalid or did not lower the loss on the miner's own
    /// pages; at `network.exclude_after` the miner's payloads leave the aggregation (the
    /// top validator's peer list) until it scores positive again.
    #[serde(default)]
    pub consecutive_negative: u32,
}

fn one() -> f64 {
    1.0
}

impl Default for ScoreState {
    fn default() -> Self {
        Self {
            ema: 0.0,
            specific: 0.0,
            last_own: None,
            last_random: None,
            last_sync_drift: None,
            last_held_out: None,
            consecutive_invalid: 0,
            own_beats_random: 1.0,
            consecutive_negative: 0,
        }
    }
}

impl ScoreState {
    /// What the weights are computed from: while the score is positive, the specific gain
    /// (what training on the assigned pages adds over random pages), scaled by the
    /// own-beats-random average; a negative score stays as it is.
    pub fn effective(&self) -> f64 {
        if self.ema > 0.0 {
            self.specific.max(0.0) * self.own_beats_random.max(0.0)
        } else {
            self.ema
        }
    }
}

/// Smoothing of the own-beats-random average: slow, because a few early windows of an honest
/// miner can go either way (general learning helps every page alike; seen on the devnet),
/// while a miner on pages of its own choosing loses about half of all windows.
pub const OWN_BEATS_RANDOM_ALPHA: f64 = 0.1;

/// The most a run of invalid windows escalates the penalty: penalty^MAX per window.
pub const MAX_PENALTY_ESCALATION: u32 = 4;

/// One window's outcome for a chosen miner: `result` is its (own, random) loss improvement
/// when it submitted a valid payload. A finite own improvement moves the average by `alpha`;
/// none (missing, late, invalid) or a non-finite one (an update that breaks the model) is an
/// invalid submission: the average decays by `penalty`, steeper for each invalid window in a
/// row (`penalty^k` for the k-th, k at most [`MAX_PENALTY_ESCALATION`]), so a miner that stops
/// submitting loses its weight in a few windows; it never becomes NaN.
pub fn update_score(entry: &mut ScoreState, result: Option<(f64, f64)>, alpha: f64, penalty: f64) {
    match result {
        Some((own, random)) if own.is_finite() => {
            entry.ema = alpha * own + (1.0 - alpha) * entry.ema;
            if random.is_finite() {
                entry.specific = alpha * (own - random) + (1.0 - alpha) * entry.specific;
                let beat = if own > random { 1.0 } else { -1.0 };
                let a = OWN_BEATS_RANDOM_ALPHA;
                entry.own_beats_random = a * beat + (1.0 - a) * entry.own_beats_random;
            }
            entry.last_own = Some(own);
            entry.last_random = random.is_finite().then_some(random);
            entry.consecutive_invalid = 0;
            entry.consecutive_negative = if own > 0.0 {
                0
            } else {
                entry.consecutive_negative.saturating_add(1)
            };
        }
        _ => {
            count_invalid(entry);
            let k = entry.consecutive_invalid.min(MAX_PENALTY_ESCALATION);
            entry.ema *= penalty.powi(k as i32);
            entry.specific *= penalty.powi(k as i32);
        }
    }
}

/// One more window in a row without a valid submission (and so without an improvement).
fn count_invalid(entry: &mut ScoreState) {
    entry.consecutive_invalid = entry.consecutive_invalid.saturating_add(1);
    entry.consecutive_negative = entry.consecutive_negative.saturating_add(1);
    entry.last_own = None;
    entry.last_random = None;
}

/// A window in which the miner's payload was caught cheating (a copy, an echo, a
/// free-rider, an amplified update, one against the window): it forfeits what it earned, so
/// a cheat that went unseen in a window too small to judge it is not paid on afterwards
/// (a decaying average would keep paying it for many windows).
pub fn forfeit(entry: &mut ScoreState) {
    count_invalid(entry);
    entry.ema = entry.ema.min(0.0);
    entry.specific = entry.specific.min(0.0);
}

/// One window's scores: every listed miner whose payload was `caught` cheating forfeits its
/// average ([`forfeit`]); every chosen miner that submitted a valid payload is evaluated
/// (`evaluate` gives its (own, random) improvement, `None` when it has no payload); every
/// listed miner without a valid payload is penalised, chosen or not, so skipping a window is
/// never free; miners no longer listed stop counting.
pub fn score_window(
    scores: &mut BTreeMap<u16, ScoreState>,
    listed: &[u16],
    chosen: &[u16],
    submitted: &[u16],
    caught: &[u16],
    mut evaluate: impl FnMut(u16) -> Option<(f64, f64)>,
    n: &NetworkParams,
) {
    for &uid in listed {
        if caught.contains(&uid) {
            forfeit(scores.entry(uid).or_default());
            continue;
        }
        let result = if !submitted.contains(&uid) {
            None
        } else if chosen.contains(&uid) {
            evaluate(uid)
        } else {
            continue; // submitted, not evaluated this window: the average stands
        };
        let entry = scores.entry(uid).or_default();
        update_score(entry, result, n.ema_alpha, n.missing_penalty);
    }
    scores.retain(|uid, _| listed.contains(uid));
}

/// Weights from moving-average scores (each scaled by its own-beats-random average,
/// [`ScoreState::effective`]): non-negative scores normalised, or a softmax with temperature
/// `t` when `t > 0`. Only finite scores take part (a non-finite one gets weight
/// 0); all zero when nobody scored above zero.
pub fn weights_from_scores(scores: &BTreeMap<u16, ScoreState>, t: f64) -> Vec<(u16, f64)> {
    if scores.is_empty() {
        return Vec::new();
    }
    let finite = |s: &ScoreState| {
        let e = s.effective();
        e.is_finite().then_some(e)
    };
    let raw: Vec<(u16, f64)> = if t > 0.0 {
        let max = scores
            .values()
            .filter_map(finite)
            .fold(f64::NEG_INFINITY, f64::max);
        scores
            .iter()
            .map(|(&u, s)| (u, finite(s).map_or(0.0, |e| ((e - max) / t).exp())))
            .collect()
    } else {
        let weight = |s: &ScoreState| finite(s).map_or(0.0, |e| e.max(0.0));
        scores.iter().map(|(&u, s)| (u, weight(s))).collect()
    };
    let sum: f64 = raw.iter().map(|(_, w)| w).sum();
    if sum.is_nan() || sum <= 0.0 || !sum.is_finite() {
        return raw.into_iter().map(|(u, _)| (u, 0.0)).collect();
    }
    raw.into_iter().map(|(u, w)| (u, w / sum)).collect()
}

/// The miners to score in window `w`: all when few, else `count` of them. The uids are
/// dealt in cycles of `ceil(n / count)` windows, each cycle in an order drawn from `secret`
/// (the validator's own, never published): every miner is scored at least once per cycle
/// (exactly once when `count` divides the number of miners), and no miner can tell in
/// advance in which window, so none can save its effort for that one.
pub fn choose_for_eval(uids: &[u16], w: u64, count: usize, secret: u64) -> Vec<u16> {
    let mut order = uids.to_vec();
    order.sort_unstable();
    order.dedup();
    if order.len() <= count || count == 0 {
        return order;
    }
    let per_cycle = order.len().div_ceil(count) as u64;
    let (cycle, slot) = (w / per_cycle, (w % per_cycle) as usize);
    let rank = |uid: &u16| {
        secret_draw(&[
            &secret.to_le_bytes(),
            &cycle.to_le_bytes(),
            &uid.to_le_bytes(),
        ])
    };
    order.sort_by_cached_key(rank);
    (0..count)
        .map(|i| order[(slot * count + i) % order.len()])
        .collect()
}

/// A number drawn from a secret: the first 8 bytes, little-endian, of SHA-256 over `parts`.
pub fn secret_draw(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// f64 in JSON without loss: finite values as numbers, NaN and the infinities as the strings
/// "NaN", "inf" and "-inf" (serde_json writes them as null, which then fails to load).
mod lossless_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
    }

    fn text(x: f64) -> &'static str {
        if x.is_nan() {
            "NaN"
        } else if x > 0.0 {
            "inf"
        } else {
            "-inf"
        }
    }

    fn from_repr<E: serde::de::Error>(r: Repr) -> Result<f64, E> {
        match r {
            Repr::Number(x) => Ok(x),
            Repr::Text(t) => match t.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                other => Err(E::custom(format!("not a number: {other:?}"))),
            },
        }
    }

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f64(*x)
        } else {
            s.serialize_str(text(*x))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        from_repr(Repr::deserialize(d)?)
    }

    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
            match x {
                Some(v) => super::serialize(v, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
            Option::<super::Repr>::deserialize(d)?
                .map(super::from_repr)
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(v: &[(u16, f64)]) -> BTreeMap<u16, ScoreState> {
        v.iter()
            .map(|&(u, ema)| {
                (
                    u,
                    ScoreState {
                        ema,
                        specific: ema,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn weights_are_non_negative_and_sum_to_one() {
        let w = weights_from_scores(&scores(&[(1, 3.0), (2, 1.0), (3, -2.0)]), 0.0);
        assert_eq!(w, vec![(1, 0.75), (2, 0.25), (3, 0.0)]);
        let w = weights_from_scores(&scores(&[(1, 1.0), (2, 0.0)]), 1.0);
        let e = 1f64.exp();
        assert!((w[0].1 - e / (e + 1.0)).abs() < 1e-12);
        assert!((w.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-12);
        let w = weights_from_scores(&scores(&[(1, -1.0)]), 0.0);
        assert_eq!(w, vec![(1, 0.0)]);
    }

    #[test]
    fn weight_follows_the_gain_specific_to_the_assigned_pages() {
        let mut scores: BTreeMap<u16, ScoreState> = BTreeMap::new();
        for _ in 0..30 {
            // Both improve random pages by 0.02 (general learning); the first trained on all
            // its pages (+0.02 on them beyond that), the second on a quarter (+0.005).
            update_score(scores.entry(1).or_default(), Some((0.04, 0.02)), 0.3, 0.75);
            update_score(scores.entry(2).or_default(), Some((0.025, 0.02)), 0.3, 0.75);
        }
        let w = weights_from_scores(&scores, 0.0);
        let ratio = w[1].1 / w[0].1;
        assert!((ratio - 0.25).abs() < 1e-3, "{w:?}");
    }

    #[test]
    fn non_finite_scores_get_no_weight() {
        let w = weights_from_scores(&scores(&[(1, f64::NAN), (2, 1.0), (3, f64::INFINITY)]), 0.0);
        assert_eq!(w, vec![(1, 0.0), (2, 1.0), (3, 0.0)]);
        let w = weights_from_scores(&scores(&[(1, f64::NAN), (2, 1.0), (3, 1.0)]), 0.5);
        assert_eq!(w, vec![(1, 0.0), (2, 0.5), (3, 0.5)]);
    }

    #[test]
    fn a_miner_whose_update_helps_random_pages_as_much_as_its_own_loses_its_weight() {
        let mut scores: BTreeMap<u16, ScoreState> = BTreeMap::new();
        for w in 0..30 {
            // Honest: its own pages improve more than random ones (34 of 36 windows measured
            // on the tiny model); wrong data: a coin toss, with the same own improvement.
            let honest = if w % 10 == 3 {
                (0.05, 0.06)
            } else {
                (0.05, 0.02)
            };
            let wrong = if w % 2 == 0 {
                (0.05, 0.04)
            } else {
                (0.05, 0.06)
            };
            for (uid, r) in [(1u16, honest), (2, wrong)] {
                update_score(scores.entry(uid).or_default(), Some(r), 0.3, 0.75);
            }
        }
        assert!(
            (scores[&1].ema - scores[&2].ema).abs() < 1e-12,
            "same raw score"
        );
        assert!(scores[&1].own_beats_random > 0.6, "{:?}", scores[&1]);
        assert!(scores[&2].own_beats_random.abs() < 0.35, "{:?}", scores[&2]);
        let w = weights_from_scores(&scores, 0.0);
        assert!(w[0].1 > 0.75, "honest keeps most of the weight: {w:?}");
        // Persisted and restored with the rest of the state; old states start at 1.
        let back: ScoreState =
            serde_json::from_str(&serde_json::to_string(&scores[&2]).unwrap()).unwrap();
        assert_eq!(back, scores[&2]);
        let old: ScoreState = serde_json::from_str(r#"{"ema": 0.5}"#).unwrap();
        assert_eq!(old.own_beats_random, 1.0);
    }

    #[test]
    fn penalties_escalate_with_invalid_windows_in_a_row_and_reset_on_a_valid_one() {
        let mut s = ScoreState {
            ema: 1.0,
            ..Default::default()
        };
        let mut expected = 1.0;
        for k in 1..=6 {
            update_score(&mut s, None, 0.5, 0.5);
            expected *= 0.5f64.powi(k.min(MAX_PENALTY_ESCALATION) as i32);
            assert!((s.ema - expected).abs() < 1e-15, "window {k}: {}", s.ema);
        }
        assert_eq!(s.consecutive_invalid, 6);
        update_score(&mut s, Some((0.2, 0.1)), 0.5, 0.5);
        assert_eq!(s.consecutive_invalid, 0);
        let after_valid = s.ema;
        update_score(&mut s, None, 0.5, 0.5);
        assert!(
            (s.ema - after_valid * 0.5).abs() < 1e-15,
            "the run starts over"
        );
    }

    #[test]
    fn a_non_finite_result_is_an_invalid_submission() {
        let mut s = ScoreState {
            ema: 0.4,
            ..Default::default()
        };
        update_score(&mut s, Some((f64::NAN, 0.1)), 0.5, 0.75);
        assert!((s.ema - 0.3).abs() < 1e-12 && s.last_own.is_none(), "{s:?}");
        update_score(&mut s, Some((f64::NEG_INFINITY, 0.1)), 0.5, 0.75);
        assert!(s.ema.is_finite() && s.last_own.is_none());
        update_score(&mut s, Some((0.2, f64::INFINITY)), 0.5, 0.75);
        assert_eq!(s.last_own, Some(0.2));
        assert_eq!(s.last_random, None);
        update_score(&mut s, None, 0.5, 0.75);
        assert_eq!(s.consecutive_invalid, 1);
        assert_eq!(s.last_own, None);
    }

    #[test]
    fn negative_and_invalid_windows_in_a_row_count_until_a_positive_one() {
        let mut s = ScoreState::default();
        update_score(&mut s, Some((0.5, 0.1)), 0.3, 0.75);
        assert_eq!(s.consecutive_negative, 0);
        update_score(&mut s, Some((-0.2, 0.1)), 0.3, 0.75);
        update_score(&mut s, None, 0.3, 0.75);
        update_score(&mut s, Some((0.0, 0.0)), 0.3, 0.75);
        assert_eq!(s.consecutive_negative, 3, "raised, invalid, no improvement");
        update_score(&mut s, Some((f64::NAN, 0.0)), 0.3, 0.75);
        assert_eq!(
            s.consecutive_negative, 4,
            "a non-finite improvement is invalid"
        );
        update_score(&mut s, Some((1e-3, 0.0)), 0.3, 0.75);
        assert_eq!(s.consecutive_negative, 0, "recovered");
    }

    #[test]
    fn persisted_state_round_trips_every_value() {
        let state: BTreeMap<u16, ScoreState> = [
            (1, 0.25, Some(-0.5)),
            (2, f64::NAN, Some(f64::INFINITY)),
            (3, f64::NEG_INFINITY, None),
        ]
        .into_iter()
        .map(|(u, ema, own)| {
            let s = ScoreState {
                ema,
                specific: ema * 0.5,
                last_own: own,
                last_random: None,
                last_sync_drift: own.map(|x| x * 1e-3),
                last_held_out: own.map(|x| x + 6.0),
                consecutive_invalid: 2,
                own_beats_random: -0.25,
                consecutive_negative: 5,
            };
            (u, s)
        })
        .collect();
        let json = serde_json::to_string(&state).unwrap();
        let back: BTreeMap<u16, ScoreState> = serde_json::from_str(&json).unwrap();
        assert_eq!(back[&1], state[&1]);
        assert!(back[&2].ema.is_nan());
        assert_eq!(back[&2].last_own, Some(f64::INFINITY));
        assert_eq!(back[&3].ema, f64::NEG_INFINITY);
        // State written before this format (plain numbers) still loads.
        let old: ScoreState =
            serde_json::from_str(r#"{"ema":0.5,"last_own":0.1,"last_random":null}"#).unwrap();
        assert_eq!(
            (old.ema, old.last_own, old.last_random),
            (0.5, Some(0.1), None)
        );
        assert!(serde_json::from_str::<ScoreState>(r#"{"ema":"lots"}"#).is_err());
    }

    #[test]
    fn every_listed_miner_without_a_payload_is_penalised_chosen_or_not() {
        let n = NetworkParams {
            ema_alpha: 0.5,
            missing_penalty: 0.5,
            ..NetworkParams::default()
        };
        let mut s = scores(&[(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0), (9, 1.0)]);
        let mut evaluated = Vec::new();
        // Listed 1..=4; chosen 1 and 2; submitted 1 and 3 (4 submitted nothing).
        score_window(
            &mut s,
            &[1, 2, 3, 4],
            &[1, 2],
            &[1, 3],
            &[],
            |uid| {
                evaluated.push(uid);
                Some((3.0, 0.0))
            },
            &n,
        );
        assert_eq!(
            evaluated,
            vec![1],
            "only chosen miners with a payload are evaluated"
        );
        assert_eq!(s[&1].ema, 2.0, "evaluated: 0.5 * 3 + 0.5 * 1");
        assert_eq!(s[&2].ema, 0.5, "chosen, no payload: penalised");
        assert_eq!(s[&3].ema, 1.0, "submitted, not chosen: unchanged");
        assert_eq!(
            s[&4].ema, 0.5,
            "not chosen, no payload: penalised all the same"
        );
        assert!(!s.contains_key(&9), "no longer listed");
    }

    #[test]
    fn a_miner_caught_cheating_forfeits_its_average_at_once_and_earns_no_weight() {
        let n = NetworkParams {
            ema_alpha: 0.5,
            missing_penalty: 0.75,
            ..NetworkParams::default()
        };
        // Both earned in an earlier window; 2 is then caught (not chosen, not evaluated),
        // 3 merely misses a window.
        let mut s = BTreeMap::new();
        for uid in [1, 2, 3] {
            update_score(s.entry(uid).or_default(), Some((0.04, 0.01)), 0.5, 0.75);
        }
        let mut evaluated = Vec::new();
        score_window(
            &mut s,
            &[1, 2, 3],
            &[1, 2],
            &[1, 2],
            &[2],
            |uid| {
                evaluated.push(uid);
                Some((0.04, 0.01))
            },
            &n,
        );
        assert_eq!(evaluated, vec![1], "a caught payload is not evaluated");
        assert_eq!((s[&2].ema, s[&2].specific), (0.0, 0.0));
        assert_eq!(
            (s[&2].consecutive_invalid, s[&2].consecutive_negative),
            (1, 1)
        );
        assert!(
            s[&3].ema > 0.0,
            "a missing window decays, it does not forfeit"
        );
        let w: BTreeMap<u16, f64> = weights_from_scores(&s, 0.0).into_iter().collect();
        assert_eq!(w[&2], 0.0);
        assert!(w[&1] > 0.0 && w[&3] > 0.0, "{w:?}");
        // A negative average stays negative: forfeiting never pays.
        let mut negative = ScoreState {
            ema: -0.2,
            ..ScoreState::default()
        };
        forfeit(&mut negative);
        assert_eq!(negative.ema, -0.2);
    }

    #[test]
    fn evaluation_covers_everyone_each_cycle_in_a_secret_order() {
        let uids: Vec<u16> = (0..12).collect();
        assert_eq!(choose_for_eval(&uids[..3], 5, 4, 7), vec![0, 1, 2]);
        // 12 miners, 3 a window: every cycle of 4 windows scores each exactly once.
        for cycle in 0..5 {
            let mut counts = [0; 12];
            for w in cycle * 4..cycle * 4 + 4 {
                for u in choose_for_eval(&uids, w, 3, 7) {
                    counts[u as usize] += 1;
                }
            }
            assert!(counts.iter().all(|&c| c == 1), "{counts:?}");
        }
        // The same validator is consistent; another secret (another validator, or a restart)
        // deals another order, and the order changes from cycle to cycle.
        let deal = |secret, cycle: u64| -> Vec<u16> {
            (cycle * 4..cycle * 4 + 4)
                .flat_map(|w| choose_for_eval(&uids, w, 3, secret))
                .collect()
        };
        assert_eq!(deal(7, 0), deal(7, 0));
        assert_ne!(deal(7, 0), deal(8, 0));
        assert_ne!(deal(7, 0), deal(7, 1));
        assert_ne!(deal(7, 0), uids, "not the sorted order");
    }
}
