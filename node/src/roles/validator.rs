//! The validator: publish the peer list, gather, score each miner by the loss its update
//! removes, keep a moving average, set weights, publish checkpoints.

use super::NodeError;
use crate::checkpoint::CheckpointPointer;
use crate::data::Pages;
use crate::engine::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use tch::Device;
use templar_crds::{MinerScore, SkippedPeer};
use templar_protocol::network::{NodeContext, gather};
use templar_protocol::payload::Payload;
use templar_protocol::storage::StorageError;
use tokio::task::block_in_place;

/// A miner's record, persisted so a restarted validator resumes where it stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreState {
    pub ema: f64,
    pub last_own: Option<f64>,
    pub last_random: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidatorState {
    pub scores: BTreeMap<u16, ScoreState>,
    pub last_weights_window: Option<u64>,
    pub last_checkpoint_window: Option<u64>,
    pub last_window: Option<u64>,
}

const STATE_KEY: &str = "state/validator.json";

pub struct Validator {
    pub ctx: Arc<NodeContext>,
    pub engine: Engine,
    pub state: ValidatorState,
}

/// Weights from moving-average scores: non-negative scores normalised, or a softmax with
/// temperature `t` when `t > 0`. All zero when nobody scored above zero.
pub fn weights_from_scores(scores: &BTreeMap<u16, ScoreState>, t: f64) -> Vec<(u16, f64)> {
    if scores.is_empty() {
        return Vec::new();
    }
    let raw: Vec<(u16, f64)> = if t > 0.0 {
        let max = scores
            .values()
            .map(|s| s.ema)
            .fold(f64::NEG_INFINITY, f64::max);
        scores
            .iter()
            .map(|(&u, s)| (u, ((s.ema - max) / t).exp()))
            .collect()
    } else {
        scores.iter().map(|(&u, s)| (u, s.ema.max(0.0))).collect()
    };
    let sum: f64 = raw.iter().map(|(_, w)| w).sum();
    if sum.is_nan() || sum <= 0.0 || !sum.is_finite() {
        return raw.into_iter().map(|(u, _)| (u, 0.0)).collect();
    }
    raw.into_iter().map(|(u, w)| (u, w / sum)).collect()
}

/// The miners to score in window `w`: all when few, else a rotating contiguous slice of
/// the sorted uids, so each miner is scored equally often.
pub fn choose_for_eval(uids: &[u16], w: u64, count: usize) -> Vec<u16> {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    if sorted.len() <= count {
        return sorted;
    }
    let start = (w as usize * count) % sorted.len();
    (0..count)
        .map(|i| sorted[(start + i) % sorted.len()])
        .collect()
}

impl Validator {
    /// A validator, resuming its persisted scores if its bucket has them.
    pub async fn new(
        ctx: Arc<NodeContext>,
        pages: &Pages,
        device: Device,
    ) -> Result<Self, NodeError> {
        let engine = Engine::new(&ctx.hp, pages, device)?;
        let state = match ctx.own_store.get(STATE_KEY, 16 << 20).await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "persisted validator state unreadable; starting fresh");
                ValidatorState::default()
            }),
            Err(StorageError::NotFound { .. }) => ValidatorState::default(),
            Err(e) => return Err(e.into()),
        };
        Ok(Self { ctx, engine, state })
    }

    async fn is_top_validator(&self) -> Result<bool, NodeError> {
        let mg = self.ctx.chain.metagraph().await?;
        Ok(mg
            .top_validator()
            .is_some_and(|v| v.hotkey == self.ctx.hotkey))
    }

    /// Load own latest checkpoint (after a restart) so the model continues in step.
    pub async fn resume_model(&mut self) -> Result<(), NodeError> {
        let ctx = self.ctx.clone();
        let pointer = match ctx
            .own_store
            .get(&ctx.keys.checkpoint_pointer(), 1 << 20)
            .await
        {
            Ok(b) => serde_json::from_slice::<CheckpointPointer>(&b).ok(),
            Err(StorageError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(p) = pointer {
            let bytes = ctx
                .own_store
                .get(&ctx.keys.checkpoint(p.window), 16 << 30)
                .await?;
            block_in_place(|| self.engine.load_checkpoint(&bytes))?;
        }
        Ok(())
    }

    /// Window `w` has begun: publish the miners expected to train in it (top validator).
    pub async fn begin_window(&mut self, w: u64) -> Result<(), NodeError> {
        let ctx = self.ctx.clone();
        ctx.observe_window(w);
        ctx.update_status(|s| s.window = Some(w));
        if !self.is_top_validator().await? {
            return Ok(());
        }
        if let Err(StorageError::NotFound { .. }) =
            ctx.own_store.head(&ctx.keys.start_window()).await
        {
            ctx.own_store
                .put(
                    &ctx.keys.start_window(),
                    serde_json::to_vec(&w).expect("json"),
                )
                .await?;
        }
        let miners = ctx.committed_miners(&ctx.chain.metagraph().await?).await?;
        ctx.own_store
            .put(
                &ctx.keys.peers(w),
                serde_json::to_vec(&miners).expect("json"),
            )
            .await?;
        Ok(())
    }

    /// Window `w` has closed: gather, score, step, set weights, checkpoint, persist.
    pub async fn finish_window(&mut self, w: u64) -> Result<(), NodeError> {
        let ctx = self.ctx.clone();
        ctx.observe_window(w + 1);
        let peers = ctx.peers_for(w).await?;
        let range = ctx.accept_range(w);
        let (ok, skipped) = gather(&ctx, &self.engine.payload_validator(), w, &peers, range).await;
        // Score on the model as it was before this window's step.
        self.score(w, &peers, &ok);
        let submitted = ok.len();
        let payloads: Vec<_> = ok.into_iter().map(|(_, p)| p).collect();
        block_in_place(|| self.engine.apply(&payloads));

        let weights = weights_from_scores(&self.state.scores, ctx.hp.network.softmax_temperature);
        self.publish(w, &weights).await?;
        self.state.last_window = Some(w);
        ctx.own_store
            .put(
                STATE_KEY,
                serde_json::to_vec_pretty(&self.state).expect("json"),
            )
            .await?;
        self.report(submitted, skipped, &weights);
        Ok(())
    }

    /// Update the moving average of each miner chosen for evaluation in window `w`; miners
    /// no longer listed stop counting.
    fn score(&mut self, w: u64, peers: &[u16], ok: &[(u16, Payload)]) {
        let n = &self.ctx.hp.network;
        let chosen = choose_for_eval(peers, w, n.eval_miners);
        for uid in &chosen {
            let entry = self.state.scores.entry(*uid).or_default();
            match ok.iter().find(|(u, _)| u == uid) {
                Some((_, payload)) => {
                    let (own, random) =
                        block_in_place(|| self.engine.evaluate(*uid, w, payload, n.eval_pages));
                    entry.ema = n.ema_alpha * own + (1.0 - n.ema_alpha) * entry.ema;
                    entry.last_own = Some(own);
                    entry.last_random = Some(random);
                    tracing::info!(uid, window = w, own, random, ema = entry.ema, "scored");
                }
                None => {
                    // Missing, late or invalid: the score decays.
                    entry.ema *= n.missing_penalty;
                    entry.last_own = None;
                    entry.last_random = None;
                }
            }
        }
        self.state.scores.retain(|uid, _| peers.contains(uid));
    }

    /// Weights on chain every `weights_every` windows; the top validator's checkpoint (and
    /// then its pointer) every `checkpoint_every` windows.
    async fn publish(&mut self, w: u64, weights: &[(u16, f64)]) -> Result<(), NodeError> {
        let ctx = self.ctx.clone();
        let n = &ctx.hp.network;
        if (w + 1).is_multiple_of(n.weights_every) && !weights.is_empty() {
            match ctx.chain.set_weights(&ctx.hotkey, weights).await {
                Ok(()) => self.state.last_weights_window = Some(w),
                Err(e) => tracing::warn!(error = %e, "set_weights failed"),
            }
        }
        if (w + 1).is_multiple_of(n.checkpoint_every) && self.is_top_validator().await? {
            let bytes = block_in_place(|| self.engine.checkpoint_bytes(w));
            ctx.own_store.put(&ctx.keys.checkpoint(w), bytes).await?;
            let pointer = CheckpointPointer {
                window: w,
                global_step: self.engine.global_step(),
            };
            // The pointer goes last: a reader never follows it to a partial checkpoint.
            ctx.own_store
                .put(
                    &ctx.keys.checkpoint_pointer(),
                    serde_json::to_vec(&pointer).expect("json"),
                )
                .await?;
            self.state.last_checkpoint_window = Some(w);
        }
        Ok(())
    }

    /// The window's scores and weights into the node's `/status`.
    fn report(&self, submitted: usize, skipped: Vec<SkippedPeer>, weights: &[(u16, f64)]) {
        let scores: Vec<MinerScore> = self
            .state
            .scores
            .iter()
            .map(|(&uid, s)| MinerScore {
                uid,
                score: s.ema,
                last_improvement: s.last_own,
                last_random_improvement: s.last_random,
                weight: weights.iter().find(|(u, _)| *u == uid).map_or(0.0, |x| x.1),
            })
            .collect();
        self.ctx.update_status(|s| {
            s.global_step = self.engine.global_step();
            s.peers_gathered = submitted;
            s.peers_skipped = skipped;
            s.scores = scores;
            s.last_weights_window = self.state.last_weights_window;
            s.last_checkpoint_window = self.state.last_checkpoint_window;
        });
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
    fn evaluation_rotates_fairly() {
        let uids: Vec<u16> = (0..10).collect();
        assert_eq!(choose_for_eval(&uids[..3], 5, 4), vec![0, 1, 2]);
        let mut counts = [0; 10];
        for w in 0..10 {
            for u in choose_for_eval(&uids, w, 3) {
                counts[u as usize] += 1;
            }
        }
        assert!(counts.iter().all(|&c| c == 3), "{counts:?}");
    }
}
