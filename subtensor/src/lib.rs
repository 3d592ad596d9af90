//! templar on Bittensor's subtensor chain.
//!
//! - [`tlock`]: commit-reveal v4, weights timelock-encrypted to a drand quicknet round.
//! - [`reveal`]: which round a commit must target, from the subnet's epoch state.

pub mod api;
pub mod calls;
pub mod chain;
pub mod client;
pub mod commitment;
pub mod errors;
pub mod hash_commit;
pub mod reveal;
pub mod signer;
pub mod tlock;
