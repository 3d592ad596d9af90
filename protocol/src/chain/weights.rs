//! Weights as Bittensor's subtensor takes them: u16 values, the largest 65535, zeros dropped,
//! no weight above the subnet's `MaxWeightsLimit` share. The same steps, in the same order and
//! with the same rounding, as the Bittensor SDK's `SetWeights` intent (bittensor 11.3,
//! `intents/weights.py`: `_conform`, `clip_to_max_weight`, `normalize`), so a templar
//! validator sets exactly the weights a Python one would for the same scores
//! (`protocol/tests/weights_against_bittensor.rs` checks it against that package).

use serde::{Deserialize, Serialize};

/// What became of a validator's last weights on chain. Subtensor applies a timelocked commit
/// only at its reveal, where a refusal (no validator permit, too few uids, too little stake)
/// leaves no trace but weights that never apply: the node looks, and says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightsOnChain {
    /// The block the weights, or their commit, went into.
    pub committed_block: u64,
    /// The drand round a timelocked commit opens at; `None` for weights set directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reveal_round: Option<u64>,
    /// The block by which a timelocked commit should have applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_block: Option<u64>,
    /// The last block the chain applied this node's weights at (`LastUpdate` of its uid),
    /// once they applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_block: Option<u64>,
    pub state: WeightsState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WeightsState {
    /// In force on chain.
    Applied,
    /// Committed, the reveal not due yet.
    AwaitingReveal,
    /// Past the block it was due by, and not applied: the chain refused it at the reveal.
    NotRevealed,
}

impl WeightsOnChain {
    /// The state of a commit made at `committed_block` (due by `due_block` when timelocked),
    /// given the uid's `last_update` and the chain's `head`. A reveal that applied moves
    /// `LastUpdate` past the commit's block.
    pub fn judge(
        committed_block: u64,
        reveal_round: Option<u64>,
        due_block: Option<u64>,
        last_update: u64,
        head: u64,
    ) -> Self {
        let (state, applied_block) = match due_block {
            None => (WeightsState::Applied, Some(last_update)),
            Some(_) if last_update > committed_block => (WeightsState::Applied, Some(last_update)),
            Some(due) if head >= due => (WeightsState::NotRevealed, None),
            Some(_) => (WeightsState::AwaitingReveal, None),
        };
        Self {
            committed_block,
            reveal_round,
            due_block,
            applied_block,
            state,
        }
    }
}

/// The chain's weight unit: the largest value of a weights vector.
pub const U16_MAX: u16 = u16::MAX;

/// Why a weights vector cannot go on chain.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeightsError {
    #[error("weights must be finite and non-negative")]
    NotFiniteOrNegative,
    #[error("all weights are zero; nothing to set")]
    AllZero,
}

/// Scale `weights` to sum 1 with none above `limit` (the chain checks max / sum <= limit):
/// weights already within it are only normalised; otherwise everything above a cutoff is
/// clipped to it, the cutoff chosen so that the largest share lands on the limit (mass is
/// redistributed, not dropped). A limit no distribution meets (n · limit <= 1) gives the
/// uniform distribution.
pub fn clip_to_max_weight(weights: &[f64], limit: f64) -> Result<Vec<f64>, WeightsError> {
    let n = weights.len();
    let total: f64 = weights.iter().sum();
    if n == 0 || total <= 0.0 {
        return Err(WeightsError::AllZero);
    }
    if n as f64 * limit <= 1.0 {
        return Ok(vec![1.0 / n as f64; n]);
    }
    let mut estimation: Vec<f64> = weights.iter().map(|w| w / total).collect();
    estimation.sort_by(f64::total_cmp);
    if estimation[n - 1] <= limit {
        return Ok(weights.iter().map(|w| w / total).collect());
    }
    // The SDK's epsilon and cumulative sums, term for term.
    const EPSILON: f64 = 1e-7;
    let cumsum: Vec<f64> = estimation
        .iter()
        .scan(0.0, |acc, e| {
            *acc += e;
            Some(*acc)
        })
        .collect();
    let n_values = estimation
        .iter()
        .enumerate()
        .filter(|&(i, e)| e / ((n - i - 1) as f64 * e + cumsum[i] + EPSILON) < limit)
        .count();
    let cutoff_scale = (limit * cumsum[n_values.saturating_sub(1)] - EPSILON)
        / (1.0 - limit * (n - n_values) as f64);
    let cutoff = cutoff_scale * total;
    let clipped: Vec<f64> = weights.iter().map(|w| w.min(cutoff)).collect();
    let clipped_total: f64 = clipped.iter().sum();
    Ok(clipped.iter().map(|w| w / clipped_total).collect())
}

/// Max-upscale to u16 (the largest weight becomes 65535; Python's round, ties to even) and
/// drop the uids whose value rounds to 0. All zero gives two empty lists.
pub fn normalize(uids: &[u16], weights: &[f64]) -> Result<(Vec<u16>, Vec<u16>), WeightsError> {
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(WeightsError::NotFiniteOrNegative);
    }
    let top = weights.iter().copied().fold(0.0, f64::max);
    if top == 0.0 {
        return Ok((Vec::new(), Vec::new()));
    }
    Ok(uids
        .iter()
        .zip(weights)
        .filter_map(|(&uid, &w)| {
            let value = ((w / top) * U16_MAX as f64).round_ties_even() as u16;
            (value != 0).then_some((uid, value))
        })
        .unzip())
}

/// What goes into `set_weights` (or a timelocked commit) for `weights` (uid, weight) from
/// validator `own_uid` on a subnet with `MaxWeightsLimit` = `max_weight_limit`: clipped to
/// that limit unless it is the validator's single self-weight or the limit is 65535, then
/// normalised. Refuses an all-zero result.
pub fn weights_for_chain(
    weights: &[(u16, f64)],
    own_uid: u16,
    max_weight_limit: u16,
) -> Result<(Vec<u16>, Vec<u16>), WeightsError> {
    let uids: Vec<u16> = weights.iter().map(|(u, _)| *u).collect();
    let mut floats: Vec<f64> = weights.iter().map(|(_, w)| *w).collect();
    if floats.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(WeightsError::NotFiniteOrNegative);
    }
    let self_weight = uids == [own_uid];
    if !self_weight && max_weight_limit < U16_MAX {
        floats = clip_to_max_weight(&floats, max_weight_limit as f64 / U16_MAX as f64)?;
    }
    let (uids, values) = normalize(&uids, &floats)?;
    if uids.is_empty() {
        return Err(WeightsError::AllZero);
    }
    Ok((uids, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_weight_becomes_65535_and_zeros_are_dropped() {
        let (uids, values) = normalize(&[1, 2, 3, 4], &[0.5, 0.25, 0.0, 1e-9]).unwrap();
        assert_eq!(uids, vec![1, 2]);
        assert_eq!(values, vec![65535, 32768], "32767.5 rounds to even");
        assert_eq!(normalize(&[1], &[0.0]).unwrap(), (vec![], vec![]));
        assert_eq!(
            normalize(&[1], &[f64::NAN]),
            Err(WeightsError::NotFiniteOrNegative)
        );
    }

    #[test]
    fn no_share_ends_above_the_limit_and_the_mass_is_kept() {
        let clipped = clip_to_max_weight(&[10.0, 1.0, 1.0, 1.0, 1.0], 0.5).unwrap();
        let sum: f64 = clipped.iter().sum();
        assert!((sum - 1.0).abs() < 1e-12);
        assert!(clipped[0] <= 0.5 + 1e-6 && clipped[0] > 0.49, "{clipped:?}");
        assert_eq!(
            clip_to_max_weight(&[1.0, 2.0], 0.4).unwrap(),
            vec![0.5, 0.5]
        );
        assert_eq!(
            clip_to_max_weight(&[0.0, 0.0], 0.4),
            Err(WeightsError::AllZero)
        );
        // A single self-weight is exempt from the limit.
        assert_eq!(
            weights_for_chain(&[(0, 1.0)], 0, 100).unwrap(),
            (vec![0], vec![65535])
        );
        assert_eq!(
            weights_for_chain(&[(1, 0.0)], 0, 100),
            Err(WeightsError::AllZero)
        );
    }
}

#[cfg(test)]
mod weights_on_chain_tests {
    use super::*;

    #[test]
    fn a_commit_is_applied_awaited_or_not_revealed_by_last_update_and_head() {
        // Set directly: applied at once.
        let set = WeightsOnChain::judge(100, None, None, 100, 101);
        assert_eq!(
            (set.state, set.applied_block),
            (WeightsState::Applied, Some(100))
        );
        // Timelocked, committed at 100, due by 200.
        let judge =
            |last_update, head| WeightsOnChain::judge(100, Some(7), Some(200), last_update, head);
        assert_eq!(judge(100, 150).state, WeightsState::AwaitingReveal);
        assert_eq!(judge(100, 200).state, WeightsState::NotRevealed);
        let revealed = judge(190, 250);
        assert_eq!(
            (revealed.state, revealed.applied_block),
            (WeightsState::Applied, Some(190))
        );
        let json = serde_json::to_value(judge(100, 200)).unwrap();
        assert_eq!(json["state"], "notRevealed");
        assert_eq!(json["dueBlock"], 200);
    }
}
