//! templar-node: the miner / validator node of templar-rs.
//!
//! torch lives only in this crate. Modules: [`hparams`] (settings), [`model`] (LLaMA-style
//! decoder), [`data`] (tokenizer, corpora, deterministic page sampler), [`codec`] (DCT, top-k,
//! packing, quantisation, payloads), [`optim`] (DeMo and SparseLoCo update rules), [`train`]
//! (one node's window loop), [`storage`] (object stores) and [`bench`].

pub mod bench;
pub mod chain;
pub mod codec;
pub mod data;
pub mod demo;
/// Settings live in the light crds crate so that the operator validates them too.
pub use templar_crds::hparams;
pub mod launch;
pub mod model;
pub mod network;
pub mod optim;
pub mod plot;
pub mod status_server;
pub mod storage;
pub mod train;
