//! Wiring one node process: chain, own bucket and commitment, data, status server, role.

use crate::chain::Commitment;
use crate::chain::devnet::DevnetChain;
use crate::chain::{Chain, SystemClock};
use crate::data::{Pages, embedded_tokens};
use crate::hparams::Hparams;
use crate::model::default_device;
use crate::network::miner::Miner;
use crate::network::run::{Node, run};
use crate::network::validator::Validator;
use crate::network::{NetworkError, NodeContext};
use crate::storage::ObjectStore;
use crate::storage::fs::FsStore;
use crate::storage::retry::{RetryPolicy, Retrying};
use crate::storage::s3::{S3Config, S3Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use templar_crds::{NodeRole, NodeStatus};

/// Where a bucket lives: a folder (`file:///path`) or S3 from the environment (`s3`).
#[derive(Debug, Clone, PartialEq)]
pub enum StoreSpec {
    Fs(PathBuf),
    S3,
}

impl std::str::FromStr for StoreSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "s3" {
            return Ok(StoreSpec::S3);
        }
        s.strip_prefix("file://")
            .map(|p| StoreSpec::Fs(PathBuf::from(p)))
            .ok_or_else(|| format!("{s:?}: expected file:///path or s3"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Chain(#[from] crate::chain::ChainError),
    #[error(transparent)]
    S3Config(#[from] crate::storage::s3::S3ConfigError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("cannot serve status on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub role: NodeRole,
    pub hotkey: String,
    pub uid: Option<u16>,
    pub stake: f64,
    pub hparams: Hparams,
    /// The devnet chain's state store.
    pub devnet: StoreSpec,
    /// This node's bucket.
    pub store: StoreSpec,
    pub listen: SocketAddr,
    pub windows: Option<u64>,
}

fn open(spec: &StoreSpec, bucket: &str) -> Result<(Arc<dyn ObjectStore>, Commitment), LaunchError> {
    let policy = RetryPolicy::default();
    Ok(match spec {
        StoreSpec::Fs(root) => (
            Arc::new(Retrying::new(FsStore::new(root.join(bucket)), policy)),
            Commitment {
                endpoint: format!("file://{}", root.display()),
                region: "auto".into(),
                bucket: bucket.into(),
                access_key_id: String::new(),
                secret_access_key: String::new(),
            },
        ),
        StoreSpec::S3 => {
            let cfg = S3Config::from_env()?;
            // Peers get the read key when one is given, else the node's own key.
            let read_id =
                std::env::var("TEMPLAR_S3_READ_ACCESS_KEY_ID").unwrap_or(cfg.access_key_id.clone());
            let read_secret = std::env::var("TEMPLAR_S3_READ_SECRET_ACCESS_KEY")
                .unwrap_or(cfg.secret_access_key.clone());
            let commitment = Commitment {
                endpoint: cfg.endpoint.clone().unwrap_or_default(),
                region: cfg.region.clone(),
                bucket: cfg.bucket.clone(),
                access_key_id: read_id,
                secret_access_key: read_secret,
            };
            (
                Arc::new(Retrying::new(S3Store::new(cfg), policy)),
                commitment,
            )
        }
    })
}

/// Register, commit, serve status and run the role until `windows` are done or Ctrl-C.
pub async fn run_node(opts: NodeOptions) -> Result<(), LaunchError> {
    let (chain_store, _) = open(&opts.devnet, "chain")?;
    let chain = Arc::new(DevnetChain::open(chain_store, Arc::new(SystemClock)).await?);
    let uid = chain.register(&opts.hotkey, opts.stake, opts.uid).await?;
    let (own, commitment) = open(&opts.store, &format!("bucket-{}", opts.hotkey))?;
    chain.commit(&opts.hotkey, &commitment).await?;
    tracing::info!(uid, hotkey = %opts.hotkey, role = ?opts.role, store = %own.describe(), "registered");

    let pages = Pages::new(embedded_tokens()?, opts.hparams.data.seq_len)?;
    let status = NodeStatus {
        role: opts.role,
        uid: Some(uid),
        hotkey: opts.hotkey.clone(),
        ..Default::default()
    };
    let chain_dyn: Arc<dyn Chain> = chain.clone();
    let ctx = Arc::new(NodeContext::new(
        opts.hparams.clone(),
        chain_dyn,
        own,
        pages,
        default_device(),
        opts.hotkey.clone(),
        uid,
        status,
    ));
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| LaunchError::Listen {
            addr: opts.listen,
            source,
        })?;
    let server = tokio::spawn(crate::status_server::serve(listener, ctx.status.clone()));

    let node = match opts.role {
        NodeRole::Miner => Node::Miner(Box::new(Miner::new(ctx.clone())?)),
        NodeRole::Validator => Node::Validator(Box::new(Validator::new(ctx.clone()).await?)),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("stopping at the end of the current step");
            let _ = stop_tx.send(true);
        }
    });
    // Miners show their incentive from the chain in the status.
    let incentive_ctx = ctx.clone();
    let incentive = tokio::spawn(async move {
        loop {
            if let Ok(mg) = incentive_ctx.chain.metagraph().await
                && let Some(n) = mg.by_hotkey(&incentive_ctx.hotkey)
            {
                let x = n.incentive;
                incentive_ctx.update_status(|s| s.incentive = Some(x));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    let poll = Duration::from_millis((chain.genesis().block_time_ms / 4).clamp(50, 1000));
    let result = run(node, poll, opts.windows, stop_rx).await;
    incentive.abort();
    server.abort();
    Ok(result?)
}
