//! The miner: sync, train on its pages, upload, gather, step.

use super::admission::Admission;
use super::sync::{self, SyncTracker};
use super::{NodeError, gather_closed_window};
use crate::compute::Compute;
use crate::data::Pages;
use crate::engine::Engine;
use crate::optim::WindowStats;
use std::sync::Arc;
use std::time::Duration;
use templar_protocol::network::{NodeContext, payload_digest};
use templar_protocol::payload::Payload;
use tokio::task::block_in_place;

/// A miner's window taken over: what the simulation installs to make a miner cheat
/// (`roles::sim`). An honest miner has none and trains through the engine directly.
#[async_trait::async_trait(?Send)]
pub trait MinerHook: Send {
    /// What to upload for window `w` (None: nothing), with the stats of training when it
    /// trained.
    async fn window_payload(
        &mut self,
        ctx: &NodeContext,
        engine: &mut Engine,
        w: u64,
    ) -> Result<(Option<WindowStats>, Option<Payload>), NodeError>;

    /// Upload window `w`'s sealed payload (by default at once, as an honest miner does).
    async fn upload(&mut self, ctx: &NodeContext, w: u64, bytes: Vec<u8>) -> Result<(), NodeError> {
        upload(ctx, w, bytes).await
    }

    /// Window `w` has closed; called before its gather.
    async fn before_gather(&mut self, _ctx: &NodeContext, _w: u64) -> Result<(), NodeError> {
        Ok(())
    }

    /// The name reports show for this miner.
    fn name(&self) -> String;
}

pub struct Miner {
    pub ctx: Arc<NodeContext>,
    pub engine: Engine,
    sync: SyncTracker,
    admission: Admission,
    /// None for an honest miner.
    hook: Option<Box<dyn MinerHook>>,
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
            hook: None,
        })
    }

    /// The same miner with its window taken over by `hook` (the simulation's cheaters).
    pub fn with_hook(mut self, hook: Box<dyn MinerHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// "honest", or the name of the hook that took the miner's window over.
    pub fn behaviour_name(&self) -> String {
        self.hook
            .as_ref()
            .map_or_else(|| "honest".into(), |h| h.name())
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
        let (stats, payload) = match &mut self.hook {
            None => {
                let (uid, hotkey) = (ctx.uid, &ctx.hotkey);
                let (stats, p) = block_in_place(|| self.engine.train_on(uid, uid, hotkey, w))?;
                (Some(stats), Some(p))
            }
            Some(hook) => hook.window_payload(&ctx, &mut self.engine, w).await?,
        };
        let tokens_per_sec =
            stats.map(|s| s.tokens as f64 / started.elapsed().as_secs_f64().max(1e-9));
        let signer = ctx.signer.as_deref();
        let bytes = payload.map(|p| block_in_place(|| self.engine.seal(&p, signer)));
        match (bytes, &mut self.hook) {
            (Some(bytes), None) => upload(&ctx, w, bytes).await?,
            (Some(bytes), Some(hook)) => hook.upload(&ctx, w, bytes).await?,
            (None, _) => tracing::info!(window = w, "nothing uploaded"),
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

    /// After the window closed: gather every peer (own included) and take the outer step.
    pub async fn finish_window(&mut self, w: u64) -> Result<(), NodeError> {
        let ctx = self.ctx.clone();
        if let Some(hook) = &mut self.hook {
            hook.before_gather(&ctx, w).await?;
        }
        let gathered = gather_closed_window(&ctx, &self.engine, w).await?;
        let judged = self.admission.judge(&ctx.hp, &self.engine, w, gathered);
        block_in_place(|| self.engine.apply_selected(&judged.admitted()));
        let gathered_count = judged.candidates.len();
        let skipped = judged.skipped_status();
        self.admission.remember(w, judged.into_payloads());
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

/// Put window `w`'s payload into the own bucket and drop the one that left retention.
pub async fn upload(ctx: &NodeContext, w: u64, bytes: Vec<u8>) -> Result<(), NodeError> {
    // The digest first, and the payload only after the store's time resolution: a copier
    // reads the payload before it can commit to a copy, so its commitment is always later.
    ctx.own_store
        .put(
            &ctx.keys.gradient_digest(w, ctx.uid),
            payload_digest(&bytes).into_bytes(),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(ctx.hp.network.digest_lead_ms)).await;
    ctx.own_store
        .put(&ctx.keys.gradient(w, ctx.uid), bytes)
        .await?;
    if let Some(old) = w.checked_sub(ctx.hp.network.retention_windows) {
        for key in [
            ctx.keys.gradient(old, ctx.uid),
            ctx.keys.gradient_digest(old, ctx.uid),
        ] {
            if let Err(e) = ctx.own_store.delete(&key).await {
                tracing::warn!(error = %e, "retention delete failed");
            }
        }
    }
    ctx.update_status(|s| s.last_upload_window = Some(w));
    tracing::info!(window = w, "uploaded");
    Ok(())
}
