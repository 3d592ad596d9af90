//! Simulation: networks and miners that exist for tests, demos and benchmarks, never on a
//! real network's honest path.
//!
//! - [`behaviour`]: cheating miners ([`behaviour::Cheat`], a hook installed on a miner);
//! - [`local`]: a whole network in lockstep with a manual clock (tests, benchmarks);
//! - [`integrity`]: the adversarial scenario of `bench integrity`.

pub mod behaviour;
pub mod integrity;
pub mod local;
