//! Drive a miner or validator from the chain's clock until stopped.

use super::NodeError;
use super::miner::Miner;
use super::sync;
use super::validator::Validator;
use std::time::Duration;
use templar_protocol::network::NodeContext;
use tokio::sync::watch;

/// Wait until the chain reaches window `w`; false when asked to stop first.
async fn wait_for_window(
    ctx: &NodeContext,
    w: u64,
    poll: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Result<bool, NodeError> {
    loop {
        if *stop.borrow() {
            return Ok(false);
        }
        match ctx.current_window().await {
            Ok(now) if now >= w => return Ok(true),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "chain unreachable; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        }
    }
}

fn record_error(ctx: &NodeContext, e: &NodeError) {
    tracing::error!(error = %e, "window failed; continuing with the next");
    ctx.update_status(|s| s.last_error = Some(e.to_string()));
}

/// The two roles behind one interface.
pub enum Node {
    Miner(Box<Miner>),
    Validator(Box<Validator>),
}

impl Node {
    fn ctx(&self) -> std::sync::Arc<NodeContext> {
        match self {
            Node::Miner(m) => m.ctx.clone(),
            Node::Validator(v) => v.ctx.clone(),
        }
    }

    fn engine_mut(&mut self) -> &mut crate::engine::Engine {
        match self {
            Node::Miner(m) => &mut m.engine,
            Node::Validator(v) => &mut v.engine,
        }
    }

    async fn begin(&mut self, w: u64) -> Result<(), NodeError> {
        match self {
            Node::Miner(m) => m.begin_window(w).await,
            Node::Validator(v) => v.begin_window(w).await,
        }
    }

    async fn finish(&mut self, w: u64) -> Result<(), NodeError> {
        match self {
            Node::Miner(m) => m.finish_window(w).await,
            Node::Validator(v) => v.finish_window(w).await,
        }
    }
}

/// Run window after window until `stop` turns true or the `max_windows` windows from the
/// start have passed.
/// A failing window is logged, put in the status, and the next window starts.
pub async fn run(
    mut node: Node,
    poll: Duration,
    max_windows: Option<u64>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let ctx = node.ctx();
    let current = ctx.current_window().await?;
    match &mut node {
        Node::Miner(m) => {
            let replayed = m.catch_up(current).await?;
            tracing::info!(window = current, replayed, "miner synced");
        }
        Node::Validator(v) => {
            let replayed = v.resume_model(current).await?;
            tracing::info!(window = current, replayed, "validator synced");
        }
    }
    let mut w = current;
    // Counted in windows, not iterations: a node that fell behind and skipped ahead still
    // stops after the same last window (the devnet runner waits for that window's weights).
    let end = max_windows.map(|m| current + m);
    while end.is_none_or(|end| w < end) {
        if !wait_for_window(&ctx, w, poll, &mut stop).await? {
            break;
        }
        if let Err(e) = node.begin(w).await {
            record_error(&ctx, &e);
        }
        if !wait_for_window(&ctx, w + 1, poll, &mut stop).await? {
            break;
        }
        if let Err(e) = node.finish(w).await {
            record_error(&ctx, &e);
        }
        // A node that fell behind (slow window) replays the windows it missed, then goes on
        // at the chain's present.
        let now = ctx.current_window().await.unwrap_or(w + 1);
        if now > w + 1 {
            tracing::warn!(
                from = w + 1,
                to = now,
                "fell behind; replaying missed windows"
            );
            if let Err(e) = sync::replay(&ctx, node.engine_mut(), w + 1, now).await {
                record_error(&ctx, &e);
            }
        }
        w = (w + 1).max(now);
    }
    Ok(())
}
