//! The roles: miner and validator as window state machines that drive the torch [`Engine`]
//! from the protocol's [`NodeContext`] (chain, buckets, gather).
//!
//! [`run`] drives a role from the chain's clock; [`admission`] is the rule every node applies
//! to a window's payloads before its step. [`sim`] holds what exists only for tests, demos
//! and benchmarks: cheating miners (a hook installed on a miner, never a branch of the honest
//! path), a whole network in lockstep with a manual clock, the adversarial scenario.
//!
//! [`Engine`]: crate::engine::Engine
//! [`NodeContext`]: templar_protocol::network::NodeContext

pub mod admission;
pub mod miner;
pub mod run;
pub mod scoring;
pub mod sighting;
pub mod sim;
pub mod sync;
pub mod validator;

use crate::engine::{Engine, EngineError};
use templar_protocol::chain::ChainError;
use templar_protocol::identity::InvalidHotkey;
use templar_protocol::network::{
    NodeContext, PeerError, PeerList, PeerPayload, SkipReason, Skipped, gather,
};
use templar_protocol::storage::StorageError;

/// Why a role's step failed (the run loop records it and goes on with the next window).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Hotkey(#[from] InvalidHotkey),
    #[error(transparent)]
    Peer(#[from] PeerError),
}

/// What a closed window brought: the top validator's peer list (the miners, and those whose
/// payloads no node aggregates in this window), the valid payloads in uid order, and the
/// peers left out with their reasons.
pub struct Gathered {
    pub peers: PeerList,
    pub payloads: Vec<PeerPayload>,
    pub skipped: Vec<Skipped>,
}

/// Window `w` has closed (the next one is seen to begin now): gather its listed peers'
/// payloads within the window's time bounds.
pub async fn gather_closed_window(
    ctx: &NodeContext,
    engine: &Engine,
    w: u64,
) -> Result<Gathered, NodeError> {
    ctx.observe_window(w + 1);
    gather_window(ctx, engine, w).await
}

/// Gather window `w` (closed) once its gather deadline has passed: every node gathers the
/// same uploads, those that landed by the deadline.
pub async fn gather_window(
    ctx: &NodeContext,
    engine: &Engine,
    w: u64,
) -> Result<Gathered, NodeError> {
    tokio::time::sleep(ctx.wait_before_gather(w)).await;
    let peers = ctx.peers_for(w).await?;
    let range = ctx.accept_range(w);
    let (payloads, skipped) =
        gather(ctx, &engine.payload_validator(), w, &peers.miners, range).await;
    let past_deadline = skipped
        .iter()
        .any(|s| matches!(s.reason, SkipReason::DeadlinePassed));
    ctx.update_status(|s| {
        s.faults.gathers_past_deadline += u64::from(past_deadline);
        s.faults.store_errors = ctx.store_errors.snapshot();
    });
    tracing::info!(
        window = w,
        gathered = ?payloads.iter().map(|p| p.uid).collect::<Vec<_>>(),
        skipped = ?skipped.iter().map(|s| format!("{}: {}", s.uid, s.reason)).collect::<Vec<_>>(),
        "gathered"
    );
    Ok(Gathered {
        peers,
        payloads,
        skipped,
    })
}
