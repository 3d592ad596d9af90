//! templar-protocol: what nodes agree on, without torch.
//!
//! - [`chain`]: the [`chain::Chain`] trait (blocks, registration, metagraph, commitments,
//!   weights) and the devnet chain;
//! - [`storage`]: object stores (filesystem, S3), retries, the key layout;
//! - [`payload`]: the update payload's byte format and its strict validator (tensors as plain
//!   byte views);
//! - [`identity`]: [`identity::Hotkey`] and the [`identity::Signer`] trait;
//! - [`network`]: the context a node shares with its roles, and the gather of a window;
//! - [`network_view`]: the network page and the JSON document it draws.
//!
//! The node crate adds the model, the codec's tensor work and the update rules on top; the
//! operator may use this crate (without the `s3` feature) to read what nodes publish.

pub mod chain;
pub mod hparams;
pub mod identity;
pub mod network;
pub mod network_view;
pub mod node_status;
pub mod payload;
pub mod storage;

pub use identity::Hotkey;
