//! Wiring one node process: chain, own bucket and commitment, data, status server, role.

use super::identity::NodeIdentity;
use crate::compute::Compute;
use crate::data::{DataSource, Pages};
use crate::hparams::Hparams;
use crate::roles::NodeError;
use crate::roles::miner::Miner;
use crate::roles::run::{Node, run};
use crate::roles::sim::behaviour::{Behaviour, Cheat};
use crate::roles::validator::Validator;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use templar_protocol::chain::devnet::{self, DevnetChain, Genesis};
use templar_protocol::chain::{Chain, ChainError, Commitment, RegisterRequest, SystemClock};
use templar_protocol::network::NodeContext;
use templar_protocol::node_status::{NodeRole, NodeStatus};
use templar_protocol::storage::ObjectStore;
use templar_protocol::storage::fs::FsStore;
use templar_protocol::storage::retry::{RetryPolicy, Retrying, StoreErrors};
use templar_protocol::storage::s3::{S3Config, S3ConfigError, S3Store};

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
    Node(#[from] NodeError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    S3Config(#[from] S3ConfigError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Identity(#[from] super::identity::IdentityError),
    #[error("no devnet chain after waiting {0:?}: start a node with --init-devnet-block-ms")]
    NoChain(Duration),
    #[error(
        "a subtensor node signs extrinsics: give a hotkey keyfile (--wallet.name and --wallet.hotkey, or a --wallet entry), not a bare name"
    )]
    NoKey,
    #[error("cannot serve status on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Which chain the node runs against.
#[derive(Debug, Clone)]
pub enum ChainChoice {
    /// The devnet chain in an object store (`make demo`, clusters without Bittensor).
    Devnet {
        store: StoreSpec,
        /// Create it with this block time (ms) when it does not exist.
        init_block_ms: Option<u64>,
    },
    /// A Bittensor subnet: finney, testnet or a local subtensor.
    Subtensor {
        endpoint: String,
        settings: templar_subtensor::chain::SubtensorSettings,
    },
}

#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub role: NodeRole,
    pub chain: ChainChoice,
    /// The hotkey, and its signer when it has a key (payloads are signed).
    pub identity: NodeIdentity,
    pub uid: Option<u16>,
    pub stake: f64,
    pub hparams: Hparams,
    /// This node's bucket.
    pub store: StoreSpec,
    pub listen: SocketAddr,
    pub windows: Option<u64>,
    /// A miner's attack on the incentive, installed as a hook (`sim-miner` only; None is an
    /// honest node).
    pub cheat: Option<Behaviour>,
    /// Device and precision of the model.
    pub compute: Compute,
    /// The tokens the node trains and evaluates on (every node of a network the same).
    pub data: DataSource,
}

fn open(
    spec: &StoreSpec,
    bucket: &str,
    errors: &Arc<StoreErrors>,
) -> Result<(Arc<dyn ObjectStore>, Commitment), LaunchError> {
    let policy = RetryPolicy::default();
    Ok(match spec {
        StoreSpec::Fs(root) => (
            Arc::new(
                Retrying::new(FsStore::new(root.join(bucket)), policy).counting(errors.clone()),
            ),
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
                Arc::new(Retrying::new(S3Store::new(cfg), policy).counting(errors.clone())),
                commitment,
            )
        }
    })
}

/// How long a node waits for another one to create the devnet chain.
const GENESIS_WAIT: Duration = Duration::from_secs(300);

/// Open the devnet chain, creating it first when asked, else waiting for it (bounded).
async fn open_chain(
    store: Arc<dyn ObjectStore>,
    init_block_ms: Option<u64>,
    blocks_per_window: u64,
) -> Result<DevnetChain, LaunchError> {
    if let Some(block_time_ms) = init_block_ms {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let genesis = Genesis {
            genesis_unix_ms: now_ms,
            block_time_ms,
            min_validator_stake: devnet::MIN_VALIDATOR_STAKE,
            weights_rate_limit_blocks: devnet::weights_rate_limit_for(blocks_per_window),
        };
        DevnetChain::init(store.as_ref(), genesis).await?;
    }
    let started = std::time::Instant::now();
    loop {
        match DevnetChain::open(store.clone(), Arc::new(SystemClock)).await {
            Err(e) if is_no_genesis(&e) && started.elapsed() < GENESIS_WAIT => {
                tracing::info!("waiting for the devnet chain to be created");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) if is_no_genesis(&e) => return Err(LaunchError::NoChain(GENESIS_WAIT)),
            other => return Ok(other?),
        }
    }
}

fn is_no_genesis(e: &ChainError) -> bool {
    e.backend::<devnet::DevnetError>() == Some(&devnet::DevnetError::NoGenesis)
}

/// The chain the options name: the devnet's (created or waited for) or a subtensor's.
async fn connect_chain(opts: &NodeOptions) -> Result<Arc<dyn Chain>, LaunchError> {
    Ok(match &opts.chain {
        ChainChoice::Devnet {
            store,
            init_block_ms,
        } => {
            let (chain_store, _) = open(store, "chain", &Arc::default())?;
            let blocks_per_window = opts.hparams.network.blocks_per_window;
            Arc::new(open_chain(chain_store, *init_block_ms, blocks_per_window).await?)
        }
        ChainChoice::Subtensor { endpoint, settings } => {
            let signer = opts.identity.signer.clone().ok_or(LaunchError::NoKey)?;
            let settings = settings.clone();
            Arc::new(
                templar_subtensor::chain::SubtensorChain::connect(endpoint, settings, signer)
                    .await?,
            )
        }
    })
}

/// Keeps the node's `/status` incentive current from the chain (every 2 s).
fn follow_incentive(ctx: Arc<NodeContext>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok(mg) = ctx.chain.metagraph().await
                && let Some(n) = mg.by_hotkey(&ctx.hotkey)
            {
                let x = n.incentive;
                ctx.update_status(|s| s.incentive = Some(x));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}

/// Register, commit, serve status and run the role until `windows` are done or Ctrl-C.
pub async fn run_node(opts: NodeOptions) -> Result<(), LaunchError> {
    // The data first: a missing folder fails before the node registers anywhere.
    let pages = Pages::new(opts.data.tokens()?, opts.hparams.data.seq_len)?;
    let chain = connect_chain(&opts).await?;
    let request = RegisterRequest {
        stake: opts.stake,
        uid: opts.uid,
    };
    let hotkey = &opts.identity.hotkey;
    let uid = chain.register(hotkey, request).await?;
    let store_errors = Arc::new(StoreErrors::default());
    let (own, commitment) = open(&opts.store, &format!("bucket-{hotkey}"), &store_errors)?;
    chain.commit(hotkey, &commitment).await?;
    let signs = opts.identity.signer.is_some();
    tracing::info!(uid, %hotkey, signs, role = ?opts.role, store = %own.describe(), "registered");

    let status = NodeStatus {
        role: opts.role,
        uid: Some(uid),
        hotkey: hotkey.to_string(),
        compute: Some(opts.compute.report()),
        ..Default::default()
    };
    let mut ctx = NodeContext::new(
        opts.hparams.clone(),
        chain.clone(),
        own,
        hotkey.clone(),
        uid,
        status,
    );
    ctx.store_errors = store_errors;
    ctx.signer = opts
        .identity
        .signer
        .clone()
        .map(|s| s as Arc<dyn templar_protocol::identity::Signer>);
    let ctx = Arc::new(ctx);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| LaunchError::Listen {
            addr: opts.listen,
            source,
        })?;
    let server = tokio::spawn(super::status_server::serve(listener, ctx.status.clone()));

    let device = opts.compute;
    tracing::info!(device = ?device.device, precision = ?device.precision, "compute");
    let node = match opts.role {
        NodeRole::Miner => {
            let miner = Miner::new(ctx.clone(), &pages, device)?;
            Node::Miner(Box::new(match opts.cheat {
                Some(b) => miner.with_hook(Box::new(Cheat::new(b))),
                None => miner,
            }))
        }
        NodeRole::Validator => {
            Node::Validator(Box::new(Validator::new(ctx.clone(), &pages, device).await?))
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("stopping at the end of the current step");
            let _ = stop_tx.send(true);
        }
    });
    let incentive = follow_incentive(ctx.clone());
    let poll =
        (chain.block_interval() / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let result = run(node, poll, opts.windows, stop_rx).await;
    incentive.abort();
    server.abort();
    Ok(result?)
}
