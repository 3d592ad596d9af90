//! The miner: sync, train on its pages, upload, gather, step.

use super::sync::{self, SyncTracker};
use super::{Gathered, NodeError, gather_closed_window};
use crate::data::Pages;
use crate::engine::Engine;
use std::sync::Arc;
use tch::Device;
use templar_protocol::network::NodeContext;
use tokio::task::block_in_place;

pub struct Miner {
    pub ctx: Arc<NodeContext>,
    pub engine: Engine,
    sync: SyncTracker,
}

impl Miner {
    /// A miner training on `pages` on `device`.
    pub fn new(ctx: Arc<NodeContext>, pages: &Pages, device: Device) -> Result<Self, NodeError> {
        let engine = Engine::new(&ctx.hp, pages, device)?;
        Ok(Self {
            ctx,
            engine,
            sync: SyncTracker::default(),
        })
    }

    /// Load the top validator's latest checkpoint and replay the windows after it up to
    /// `current` (exclusive) from the stored payloads. Returns the windows replayed.
    pub async fn catch_up(&mut self, current: u64) -> Result<u64, NodeError> {
        let ctx = self.ctx.clone();
        sync::catch_up(&ctx, &mut self.engine, current).await
    }

    /// Train on this window's pages and upload the payload.
    pub async fn begin_window(&mut self, w: u64) -> Result<(), NodeError> {
        let ctx = self.ctx.clone();
        ctx.observe_window(w);
        ctx.update_status(|s| s.window = Some(w));
        if let Err(e) = self.sync.check(&ctx).await {
            tracing::warn!(error = %e, "sync check failed");
        }
        let started = std::time::Instant::now();
        let signer = ctx.signer.as_deref();
        let (stats, bytes) = block_in_place(|| {
            self.engine
                .train_and_compress(ctx.uid, &ctx.hotkey, signer, w)
        })?;
        let tokens_per_sec = stats.tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
        ctx.own_store
            .put(&ctx.keys.gradient(w, ctx.uid), bytes)
            .await?;
        // Retention: drop own gradients older than the retention window.
        if let Some(old) = w.checked_sub(ctx.hp.network.retention_windows)
            && let Err(e) = ctx.own_store.delete(&ctx.keys.gradient(old, ctx.uid)).await
        {
            tracing::warn!(error = %e, "retention delete failed");
        }
        ctx.update_status(|s| {
            s.last_loss = Some(stats.mean_loss);
            s.tokens_per_sec = Some(tokens_per_sec);
            s.last_upload_window = Some(w);
        });
        tracing::info!(
            window = w,
            loss = stats.mean_loss,
            tokens_per_sec,
            "uploaded"
        );
        Ok(())
    }

    /// After the window closed: gather every peer (own included) and take the outer step.
    pub async fn finish_window(&mut self, w: u64) -> Result<(), NodeError> {
        let ctx = self.ctx.clone();
        let Gathered {
            payloads, skipped, ..
        } = gather_closed_window(&ctx, &self.engine, w).await?;
        let payloads: Vec<_> = payloads.into_iter().map(|(_, p)| p).collect();
        block_in_place(|| self.engine.apply(&payloads));
        let sample = block_in_place(|| self.engine.model_sample());
        self.sync.record(w, sample.clone());
        ctx.update_status(|s| {
            s.global_step = self.engine.global_step();
            s.model_sample = sample;
            s.peers_gathered = payloads.len();
            s.peers_skipped = skipped;
        });
        Ok(())
    }
}
