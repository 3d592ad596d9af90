//! templar-node: the miner / validator node of templar-rs; everything that touches torch.
//!
//! - [`model`] (LLaMA-style decoder), [`data`] (tokenizer, corpora, page sampler);
//! - [`codec`] (DCT, top-k, quantisation on tensors; payload conversion);
//! - [`optim`] (the update rules, one file each), [`engine`] (model + rule + codec for one
//!   node), [`checkpoint`], [`train`] (one node alone);
//! - [`roles`] (miner and validator state machines, the run loop, the lockstep network);
//! - [`cli`] (the subcommands: launch, devnet runner, report, status server, benches).
//!
//! Chain, storage, the payload byte format and identities are torch-free and live in
//! `templar_protocol`; the settings file in `templar_protocol::hparams`.

pub mod checkpoint;
pub mod cli;
pub mod codec;
pub mod compute;
pub mod cuda_info;
pub mod data;
pub mod engine;
/// Settings live in the torch-free protocol crate so that the operator validates them too.
pub use templar_protocol::hparams;
pub mod model;
pub mod optim;
pub mod roles;
pub mod train;
