//! Keeping a node's model in step with the network: catch-up from the top validator's
//! latest checkpoint, replay of the windows a node missed (restart, slow window), and the sync
//! check of this node's model against that checkpoint.
//!
//! Replay gathers a past window exactly as the live gather did: the same peer list, the same
//! time bounds from the chain's block times, and not before the gather deadline.

use super::admission::Admission;
use super::{NodeError, gather_window};
use crate::checkpoint::CheckpointPointer;
use crate::engine::{Engine, EngineError, sample_drift};
use std::collections::VecDeque;
use std::sync::Arc;
use templar_protocol::network::NodeContext;
use templar_protocol::node_status::SyncCheck;
use templar_protocol::storage::{ObjectStore, StorageError};
use tokio::task::block_in_place;

/// The top validator's bucket, when there is a top validator with a readable commitment.
async fn top_validator_store(ctx: &NodeContext) -> Result<Option<Arc<dyn ObjectStore>>, NodeError> {
    let mg = ctx.chain.metagraph().await?;
    let Some(validator) = mg.top_validator() else {
        return Ok(None);
    };
    Ok(ctx.peer_store(validator.uid).await?)
}

/// The top validator's latest checkpoint pointer, if it published one.
async fn latest_pointer(
    ctx: &NodeContext,
    store: &dyn ObjectStore,
) -> Result<Option<CheckpointPointer>, NodeError> {
    match store.get(&ctx.keys.checkpoint_pointer(), 1 << 20).await {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(StorageError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Load the top validator's latest checkpoint (when it is ahead of `engine`) and replay the
/// windows after it up to `current` (exclusive). Without a checkpoint, replay from the
/// network's start window. At most `retention_windows` are replayed (older payloads are
/// deleted by their owners). Returns the windows replayed.
pub async fn catch_up(
    ctx: &NodeContext,
    engine: &mut Engine,
    current: u64,
) -> Result<u64, NodeError> {
    let Some(store) = top_validator_store(ctx).await? else {
        return Ok(0);
    };
    let start = async || match store.get(&ctx.keys.start_window(), 1 << 10).await {
        Ok(bytes) => serde_json::from_slice::<u64>(&bytes).unwrap_or(current),
        Err(_) => current,
    };
    let from = match latest_pointer(ctx, store.as_ref()).await? {
        Some(p) if p.global_step > engine.global_step() && p.window < current => {
            let max = engine.checkpoint_max_bytes();
            let bytes = store.get(&ctx.keys.checkpoint(p.window), max).await?;
            match block_in_place(|| engine.load_checkpoint(&bytes)) {
                Ok(loaded) => {
                    tracing::info!(
                        window = loaded.window,
                        step = loaded.global_step,
                        "loaded checkpoint"
                    );
                    loaded.window + 1
                }
                // A damaged checkpoint (its checksum, a cut-short file) is not loaded: a
                // model still at its start replays the windows from the payloads instead.
                Err(EngineError::Checkpoint(e)) if engine.global_step() == 0 => {
                    tracing::warn!(window = p.window, error = %e, "checkpoint not loaded; replaying instead");
                    start().await
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(_) => return Ok(0),
        None => start().await,
    };
    let from = from.max(current.saturating_sub(ctx.hp.network.retention_windows));
    replay(ctx, engine, from, current).await
}

/// Gather and apply windows `from..to` (no training, no scoring), each within its time bounds
/// and after its gather deadline, admitting the payloads every node admits ([`Admission`];
/// the window before `from` is gathered too, for the stale-repeat check). Returns the windows
/// replayed.
pub async fn replay(
    ctx: &NodeContext,
    engine: &mut Engine,
    from: u64,
    to: u64,
) -> Result<u64, NodeError> {
    let mut admission = Admission::default();
    if let Some(before) = from.checked_sub(1)
        && from < to
    {
        let gathered = gather_window(ctx, engine, before).await?;
        admission.remember(before, gathered.payloads);
    }
    for w in from..to {
        let gathered = gather_window(ctx, engine, w).await?;
        let judged = admission.judge(&ctx.hp, engine, w, gathered);
        let admitted = judged.admitted();
        block_in_place(|| engine.apply_selected(&admitted));
        tracing::info!(
            window = w,
            applied = admitted.len(),
            skipped = judged.skipped.len(),
            "replayed"
        );
        admission.remember(w, judged.into_payloads());
    }
    let sample = block_in_place(|| engine.model_sample());
    let replayed = to.saturating_sub(from);
    ctx.update_status(|s| {
        s.global_step = engine.global_step();
        s.model_sample = sample;
        s.faults.windows_replayed += replayed;
    });
    Ok(replayed)
}

/// This node's model samples after its last few outer steps, to compare with the top
/// validator's checkpoints as they appear (a checkpoint can land a little after this node
/// stepped past its window).
#[derive(Debug, Default)]
pub struct SyncTracker {
    recent: VecDeque<(u64, Vec<f64>)>,
}

impl SyncTracker {
    const KEEP: usize = 8;

    /// The model sample after window `w`'s outer step.
    pub fn record(&mut self, w: u64, sample: Vec<f64>) {
        self.recent.push_back((w, sample));
        while self.recent.len() > Self::KEEP {
            self.recent.pop_front();
        }
    }

    /// Compare this node's sample with the top validator's latest checkpoint, when this node
    /// has a sample of that window; the result goes into `/status` (`sync`).
    pub async fn check(&self, ctx: &NodeContext) -> Result<Option<SyncCheck>, NodeError> {
        let Some(store) = top_validator_store(ctx).await? else {
            return Ok(None);
        };
        let Some(pointer) = latest_pointer(ctx, store.as_ref()).await? else {
            return Ok(None);
        };
        let Some((_, ours)) = self.recent.iter().find(|(w, _)| *w == pointer.window) else {
            return Ok(None);
        };
        if pointer.model_sample.is_empty() {
            return Ok(None);
        }
        let drift = sample_drift(ours, &pointer.model_sample);
        let check = SyncCheck {
            window: pointer.window,
            drift,
            in_sync: drift <= ctx.hp.network.sync_tolerance,
        };
        if !check.in_sync {
            tracing::warn!(
                window = check.window,
                drift,
                "model out of sync with the top validator's checkpoint"
            );
        }
        ctx.update_status(|s| s.sync = Some(check.clone()));
        Ok(Some(check))
    }
}
