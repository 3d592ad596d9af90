//! The app layer of `templar-node`: what each subcommand does once its arguments are parsed
//! (`main.rs` only parses and dispatches).
//!
//! | module | subcommand |
//! |---|---|
//! | [`train`] | `train`: one node alone, data source, progress, report |
//! | [`launch`] | `run`: one network node (chain, bucket, commitment, status server, role) |
//! | [`identity`] | the node's hotkey and signer (`--hotkey`, `--wallet`, `--wallet.*`), `wallet` |
//! | [`devnet`] | `devnet` (`make demo`): a local network of processes, live table, report |
//! | [`report`], [`plot`] | the devnet report: rows, CSV, PNG |
//! | [`status_server`] | the node's `/healthz`, `/readyz`, `/status`, `/metrics` |
//! | [`network_page`] | the network page and its JSON (a node's own, the devnet's) |
//! | [`bench`] | `bench codec`, `bench train`, `bench convergence`, `bench integrity` |
//! | [`tokenizer`] | `tokenizer train` |

pub mod bench;
pub mod devnet;
pub mod identity;
pub mod launch;
pub mod network_page;
pub mod plot;
pub mod report;
pub mod status_server;
pub mod tokenizer;
pub mod train;

use crate::hparams::Hparams;
use std::path::Path;

/// The hyperparameters file, or the defaults when none is given.
pub fn load_hparams(path: Option<&Path>) -> anyhow::Result<Hparams> {
    Ok(match path {
        Some(p) => Hparams::load(p)?,
        None => Hparams::default(),
    })
}

/// The async runtime of the network subcommands (two workers: the machine's cores are for
/// torch).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
