//! The miner: sync, train on its pages, upload, gather, step.

use super::admission::Admission;
use super::behaviour::{self, Behaviour};
use super::sync::{self, SyncTracker};
use super::{Gathered, NodeError, gather_closed_window};
use crate::compute::Compute;
use crate::data::Pages;
use crate::engine::Engine;
use std::sync::Arc;
use std::time::Duration;
use templar_protocol::network::NodeContext;
use templar_protocol::payload::Payload;
use tokio::task::block_in_place;

pub struct Miner {
    pub ctx: Arc<NodeContext>,
    pub engine: Engine,
    sync: SyncTracker,
    admission: Admission,
    /// Honest unless a test or demo made it cheat.
    behaviour: Behaviour,
    /// The stale miner's one trained update.
    stale: Option<Payload>,
    /// The late miner's upload of a window, held until after the window's time bound.
    held: Option<(u64, Vec<u8>)>,
}

impl Miner {
    /// A miner training on `pages` on `device`.
    pub fn new(
        ctx: Arc<NodeContext>,
        pages: &Pages,
        compute: impl Into<Compute>,
    ) -> Result<Self, NodeError> {
        let engine = Engine::new(&ctx.hp, pages, compute)?;
        Ok(Self {
            ctx,
            engine,
            sync: SyncTracker::default(),
            admission: Admission::default(),
            behaviour: Behaviour::Honest,
            stale: None,
            held: None,
        })
    }

    /// The same miner cheating as `behaviour` says (tests and demos only).
    pub fn with_behaviour(mut self, behaviour: Behaviour) -> Self {
        self.behaviour = behaviour;
        self
    }

    pub fn behaviour(&self) -> Behaviour {
        self.behaviour
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
        let (stats, payload) =
            behaviour::window_payload(self.behaviour, &ctx, &mut self.engine, &mut self.stale, w)
                .await?;
        let tokens_per_sec =
            stats.map(|s| s.tokens as f64 / started.elapsed().as_secs_f64().max(1e-9));
        let signer = ctx.signer.as_deref();
        let bytes = payload.map(|p| block_in_place(|| self.engine.seal(&p, signer)));
        match bytes {
            Some(bytes) if self.behaviour.uploads_late() => self.held = Some((w, bytes)),
            Some(bytes) => self.upload(w, bytes).await?,
            None => tracing::info!(window = w, behaviour = %self.behaviour, "nothing uploaded"),
        }
        ctx.update_status(|s| {
            if let Some(stats) = stats {
                s.last_loss = Some(stats.mean_loss);
            }
            s.tokens_per_sec = tokens_per_sec;
        });
        tracing::info!(
            window = w,
            loss = stats.map(|s| s.mean_loss),
            tokens_per_sec,
            "trained"
        );
        Ok(())
    }

    /// Put window `w`'s payload into the own bucket and drop the one that left retention.
    async fn upload(&self, w: u64, bytes: Vec<u8>) -> Result<(), NodeError> {
        let ctx = &self.ctx;
        ctx.own_store
            .put(&ctx.keys.gradient(w, ctx.uid), bytes)
            .await?;
        if let Some(old) = w.checked_sub(ctx.hp.network.retention_windows)
            && let Err(e) = ctx.own_store.delete(&ctx.keys.gradient(old, ctx.uid)).await
        {
            tracing::warn!(error = %e, "retention delete failed");
        }
        ctx.update_status(|s| s.last_upload_window = Some(w));
        tracing::info!(window = w, "uploaded");
        Ok(())
    }

    /// The late miner's held upload of window `w`, once its time bound has passed.
    async fn upload_late(&mut self, w: u64) -> Result<(), NodeError> {
        let Some((held_w, bytes)) = self.held.take() else {
            return Ok(());
        };
        let n = &self.ctx.hp.network;
        let past_bound = Duration::from_millis(n.upload_grace_ms + n.clock_skew_ms + 200);
        tokio::time::sleep(self.ctx.wait_before_gather(w).max(past_bound)).await;
        self.upload(held_w, bytes).await
    }

    /// After the window closed: gather every peer (own included) and take the outer step.
    pub async fn finish_window(&mut self, w: u64) -> Result<(), NodeError> {
        let ctx = self.ctx.clone();
        self.upload_late(w).await?;
        let gathered = gather_closed_window(&ctx, &self.engine, w).await?;
        let (decision, selected) = self.admission.judge(&ctx.hp, &self.engine, w, &gathered);
        let Gathered {
            payloads, skipped, ..
        } = gathered;
        let admitted = decision.admitted(&payloads, selected);
        block_in_place(|| self.engine.apply_selected(&admitted));
        let gathered_count = payloads.len();
        self.admission.remember(w, payloads);
        let sample = block_in_place(|| self.engine.model_sample());
        self.sync.record(w, sample.clone());
        ctx.update_status(|s| {
            s.global_step = self.engine.global_step();
            s.model_sample = sample;
            s.peers_gathered = gathered_count;
            s.peers_skipped = skipped;
        });
        Ok(())
    }
}
