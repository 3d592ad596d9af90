//! `kubectl templar` (the `kubectl-templar` binary; kubectl finds plugins by that name on the
//! PATH, as krew installs them): the network from the resources' status, the nodes' logs, and
//! a devnet applied with fresh secrets. Each command takes a kube client and writes to a
//! writer, so the tests run them against a fake API server.

pub mod devnet;
pub mod logs;
pub mod status;

/// Why a plugin command failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("no TemplarValidator or TemplarMiner named {name} in namespace {namespace}")]
    NotFound { name: String, namespace: String },
    #[error(
        "both a TemplarValidator and a TemplarMiner are named {0}: say which with --kind validator|miner"
    )]
    Ambiguous(String),
    #[error("{0}")]
    Invalid(String),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

impl PluginError {
    fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| PluginError::Api { what, source }
    }
}
