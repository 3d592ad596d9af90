//! The roles: miner and validator as window state machines that drive the torch [`Engine`]
//! from the protocol's [`NodeContext`] (chain, buckets, gather).
//!
//! [`run`] drives a role from the chain's clock; [`local`] drives a whole network in lockstep
//! with a manual clock (tests, the convergence benchmark).
//!
//! [`Engine`]: crate::engine::Engine
//! [`NodeContext`]: templar_protocol::network::NodeContext

pub mod local;
pub mod miner;
pub mod run;
pub mod scoring;
pub mod validator;

use crate::engine::EngineError;
use templar_protocol::chain::ChainError;
use templar_protocol::identity::InvalidHotkey;
use templar_protocol::network::PeerError;
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
