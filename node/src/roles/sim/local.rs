//! A whole network in one process, driven in lockstep by a manual clock: the devnet chain
//! and per-node folders of the filesystem store under one root. Used by the integration
//! tests and the convergence benchmark; `templar-node devnet` runs real processes instead.

use crate::data::Pages;
use crate::hparams::Hparams;
use crate::roles::NodeError;
use crate::roles::miner::Miner;
use crate::roles::validator::Validator;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tch::Device;
use templar_protocol::Hotkey;
use templar_protocol::chain::devnet::{self, DevnetChain, Genesis};
use templar_protocol::chain::{Chain, Commitment, ManualClock, RegisterRequest};
use templar_protocol::identity::{Signer, Sr25519Signer};
use templar_protocol::network::NodeContext;
use templar_protocol::node_status::{NodeRole, NodeStatus};
use templar_protocol::storage::ObjectStore;
use templar_protocol::storage::fs::FsStore;
use templar_protocol::storage::retry::RetryPolicy;

pub const BLOCK_MS: u64 = 1000;
const GENESIS_MS: u64 = 1_700_000_000_000;

pub struct LocalNetwork {
    root: PathBuf,
    /// Retry policy and per-peer timeout given to every node's context.
    pub retry: RetryPolicy,
    pub peer_timeout: Duration,
    pub clock: Arc<ManualClock>,
    pub chain: Arc<DevnetChain>,
    pub hp: Hparams,
    pub pages: Pages,
    /// Nodes get sr25519 keys (seeded from their names) and sign their payloads; otherwise
    /// their hotkeys are the plain names.
    pub signed: bool,
}

impl LocalNetwork {
    pub async fn new(root: &Path, mut hp: Hparams, pages: Pages) -> Result<Self, NodeError> {
        // Nodes upload one after another in one process: a copy's digest commitment is
        // later than its source's without a lead (folder stores keep nanoseconds).
        hp.network.digest_lead_ms = 0;
        let chain_store: Arc<dyn ObjectStore> = Arc::new(FsStore::new(root.join("chain")));
        let genesis = Genesis {
            genesis_unix_ms: GENESIS_MS,
            block_time_ms: BLOCK_MS,
            min_validator_stake: devnet::MIN_VALIDATOR_STAKE,
            weights_rate_limit_blocks: devnet::weights_rate_limit_for(hp.network.blocks_per_window),
        };
        DevnetChain::init(chain_store.as_ref(), genesis).await?;
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_millis(GENESIS_MS),
        ));
        // One process registers its nodes one after another: no rival claims to wait for.
        let chain = Arc::new(
            DevnetChain::open(chain_store, clock.clone())
                .await?
                .with_claim_settle(Duration::ZERO),
        );
        Ok(Self {
            root: root.to_path_buf(),
            retry: RetryPolicy::default(),
            peer_timeout: Duration::from_secs(30),
            clock,
            chain,
            hp,
            pages,
            signed: false,
        })
    }

    /// Register a node with its own bucket (a folder under the root) and commit it.
    pub async fn context(
        &self,
        hotkey: &str,
        uid: u16,
        role: NodeRole,
    ) -> Result<Arc<NodeContext>, NodeError> {
        let bucket = format!("bucket-{hotkey}");
        let commitment = Commitment {
            endpoint: format!("file://{}", self.root.display()),
            region: "auto".into(),
            bucket: bucket.clone(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
        };
        let own: Arc<dyn ObjectStore> = Arc::new(FsStore::new(self.root.join(&bucket)));
        self.context_with(hotkey, uid, role, own, commitment).await
    }

    /// Register a node whose bucket is `own`, reachable by peers through `commitment`.
    pub async fn context_with(
        &self,
        hotkey: &str,
        uid: u16,
        role: NodeRole,
        own: Arc<dyn ObjectStore>,
        commitment: Commitment,
    ) -> Result<Arc<NodeContext>, NodeError> {
        let signer = self.signed.then(|| Arc::new(signer_for(hotkey)));
        let hotkey = match &signer {
            Some(s) => s.hotkey().clone(),
            None => Hotkey::parse(hotkey)?,
        };
        let request = RegisterRequest {
            stake: devnet::stake_for(role),
            uid: Some(uid),
        };
        self.chain.register(&hotkey, request).await?;
        self.chain.commit(&hotkey, &commitment).await?;
        let status = NodeStatus {
            role,
            uid: Some(uid),
            hotkey: hotkey.to_string(),
            ..Default::default()
        };
        let mut ctx = NodeContext::new(
            self.hp.clone(),
            self.chain.clone(),
            own,
            hotkey,
            uid,
            status,
        );
        ctx.retry = self.retry.clone();
        ctx.signer = signer.map(|s| s as Arc<dyn Signer>);
        ctx.peer_timeout = self.peer_timeout;
        Ok(Arc::new(ctx))
    }

    pub async fn miner(&self, hotkey: &str, uid: u16) -> Result<Miner, NodeError> {
        let ctx = self.context(hotkey, uid, NodeRole::Miner).await?;
        Miner::new(ctx, &self.pages, Device::Cpu)
    }

    pub async fn validator(&self, hotkey: &str, uid: u16) -> Result<Validator, NodeError> {
        let ctx = self.context(hotkey, uid, NodeRole::Validator).await?;
        Validator::new(ctx, &self.pages, Device::Cpu).await
    }

    /// Move the chain's clock to the first block of window `w`.
    pub fn enter_window(&self, w: u64) {
        let ms = GENESIS_MS + w * self.hp.network.blocks_per_window * BLOCK_MS;
        self.clock
            .set(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
    }

    /// Enter window `w` and let every given node see it begin now, as running nodes
    /// polling the chain would (their upload time bounds start here).
    pub fn enter_window_seen_by(&self, w: u64, nodes: &[&NodeContext]) {
        self.enter_window(w);
        for n in nodes {
            n.observe_window(w);
        }
    }

    /// One lockstep window: the validator publishes the peer list, miners train and
    /// upload, the window closes, everyone gathers and steps.
    pub async fn window(
        &self,
        w: u64,
        miners: &mut [&mut Miner],
        validator: &mut Validator,
    ) -> Result<(), NodeError> {
        self.window_with(w, miners, validator, || async {}).await
    }

    /// [`LocalNetwork::window`], with `between` run after the uploads and before the window
    /// closes (tests rewrite uploads there, as a cheating miner would).
    pub async fn window_with<F, Fut>(
        &self,
        w: u64,
        miners: &mut [&mut Miner],
        validator: &mut Validator,
        between: F,
    ) -> Result<(), NodeError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let ctxs: Vec<Arc<NodeContext>> = miners
            .iter()
            .map(|m| m.ctx.clone())
            .chain([validator.ctx.clone()])
            .collect();
        let seen: Vec<&NodeContext> = ctxs.iter().map(|c| c.as_ref()).collect();
        self.enter_window_seen_by(w, &seen);
        validator.begin_window(w).await?;
        for m in miners.iter_mut() {
            m.begin_window(w).await?;
        }
        between().await;
        self.enter_window_seen_by(w + 1, &seen);
        for m in miners.iter_mut() {
            m.finish_window(w).await?;
        }
        validator.finish_window(w).await
    }
}

/// A node's key in a signed local network: seeded from its name (tests only).
fn signer_for(name: &str) -> Sr25519Signer {
    use sha2::{Digest, Sha256};
    let seed = Sha256::digest(format!("templar-local-network/{name}").as_bytes());
    Sr25519Signer::from_seed(&seed).expect("a 32-byte seed")
}
