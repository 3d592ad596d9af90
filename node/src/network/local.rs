//! A whole network in one process, driven in lockstep by a manual clock: the devnet chain
//! and per-node folders of the filesystem store under one root. Used by the integration
//! tests and the convergence benchmark; `templar-node devnet` runs real processes instead.

use super::miner::Miner;
use super::validator::Validator;
use super::{NetworkError, NodeContext};
use crate::chain::devnet::{DevnetChain, Genesis};
use crate::chain::{Commitment, ManualClock};
use crate::data::Pages;
use crate::hparams::Hparams;
use crate::storage::ObjectStore;
use crate::storage::fs::FsStore;
use crate::storage::retry::RetryPolicy;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tch::Device;
use templar_crds::{NodeRole, NodeStatus};

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
}

impl LocalNetwork {
    pub async fn new(root: &Path, hp: Hparams, pages: Pages) -> Result<Self, NetworkError> {
        let chain_store: Arc<dyn ObjectStore> = Arc::new(FsStore::new(root.join("chain")));
        let genesis = Genesis {
            genesis_unix_ms: GENESIS_MS,
            block_time_ms: BLOCK_MS,
            min_validator_stake: 1000.0,
        };
        DevnetChain::init(chain_store.as_ref(), genesis).await?;
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_millis(GENESIS_MS),
        ));
        let chain = Arc::new(DevnetChain::open(chain_store, clock.clone()).await?);
        Ok(Self {
            root: root.to_path_buf(),
            retry: RetryPolicy::default(),
            peer_timeout: Duration::from_secs(30),
            clock,
            chain,
            hp,
            pages,
        })
    }

    /// Register a node with its own bucket (a folder under the root) and commit it.
    pub async fn context(
        &self,
        hotkey: &str,
        uid: u16,
        role: NodeRole,
    ) -> Result<Arc<NodeContext>, NetworkError> {
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
    ) -> Result<Arc<NodeContext>, NetworkError> {
        use crate::chain::Chain;
        let stake = if role == NodeRole::Validator {
            5000.0
        } else {
            0.0
        };
        self.chain.register(hotkey, stake, Some(uid)).await?;
        self.chain.commit(hotkey, &commitment).await?;
        let status = NodeStatus {
            role,
            uid: Some(uid),
            hotkey: hotkey.into(),
            ..Default::default()
        };
        let mut ctx = NodeContext::new(
            self.hp.clone(),
            self.chain.clone(),
            own,
            self.pages.clone(),
            Device::Cpu,
            hotkey.into(),
            uid,
            status,
        );
        ctx.retry = self.retry.clone();
        ctx.peer_timeout = self.peer_timeout;
        Ok(Arc::new(ctx))
    }

    pub async fn miner(&self, hotkey: &str, uid: u16) -> Result<Miner, NetworkError> {
        Miner::new(self.context(hotkey, uid, NodeRole::Miner).await?)
    }

    pub async fn validator(&self, hotkey: &str, uid: u16) -> Result<Validator, NetworkError> {
        Validator::new(self.context(hotkey, uid, NodeRole::Validator).await?).await
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
    ) -> Result<(), NetworkError> {
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
        self.enter_window_seen_by(w + 1, &seen);
        for m in miners.iter_mut() {
            m.finish_window(w).await?;
        }
        validator.finish_window(w).await
    }
}
