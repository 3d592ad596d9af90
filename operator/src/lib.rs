//! templar-operator: reconciles TemplarMiner / TemplarValidator resources into the objects
//! that run the nodes.
//!
//! Pipeline per resource ([`reconcile`]): read inputs -> [`validate`] (pure) -> [`build`]
//! (pure) -> server-side apply -> [`probe`] the ready pods' `/status` -> [`status`] (pure) ->
//! apply the status and publish events. [`controller`] runs both kinds behind a Lease;
//! [`server`] serves `/metrics`, `/healthz`, `/readyz` (and, with `--network-view`, the
//! network page of each validator: [`network_views`]); [`bench`] measures the pure part.

pub mod bench;
pub mod build;
pub mod controller;
pub mod hotkeys;
pub mod metrics;
pub mod network_views;
pub mod nodeset;
pub mod plugin;
pub mod probe;
pub mod reconcile;
pub mod server;
pub mod status;
pub mod validate;
