//! The network as every node sees it, without torch: miners and validators exchange payloads
//! through object storage, windows come from the chain's blocks.
//!
//! [`NodeContext`] is what a node shares with its roles (settings, chain, own bucket, peer
//! buckets from commitments, observed window times, status); [`gather`] fetches and validates
//! a window's payloads. The roles themselves (the node crate's miner and validator) drive
//! their torch engine from these. Each node notes the wall time at which it saw each window
//! begin; a payload for window w is accepted when its LastModified lies in
//! [start(w) − skew, start(w + 1) + grace] as this node saw them.

mod gather;

pub use gather::{fetch_payload, gather};

use crate::chain::{Chain, ChainError, Commitment, Metagraph};
use crate::identity::Hotkey;
use crate::storage::fs::FsStore;
use crate::storage::keys::Keys;
use crate::storage::retry::{RetryPolicy, Retrying};
#[cfg(feature = "s3")]
use crate::storage::s3::{S3Config, S3Store};
use crate::storage::{ObjectStore, StorageError};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use templar_crds::hparams::Hparams;
use templar_crds::node_status::NodeStatus;

/// A peer whose commitment names a kind of store this build cannot open.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("endpoint {0:?} needs the S3 store, which this build leaves out")]
pub struct UnsupportedStore(pub String);

/// Open a peer's bucket from its commitment: `file:///root` (the filesystem store, bucket
/// = subfolder) or an S3 endpoint. Every call is retried within the policy's budget.
pub fn open_store(
    c: &Commitment,
    policy: &RetryPolicy,
) -> Result<Arc<dyn ObjectStore>, UnsupportedStore> {
    if let Some(root) = c.endpoint.strip_prefix("file://") {
        let store = FsStore::new(std::path::Path::new(root).join(&c.bucket));
        return Ok(Arc::new(Retrying::new(store, policy.clone())));
    }
    #[cfg(feature = "s3")]
    {
        let mut cfg = S3Config::new(
            &c.endpoint,
            &c.bucket,
            &c.access_key_id,
            &c.secret_access_key,
        );
        cfg.region = c.region.clone();
        Ok(Arc::new(Retrying::new(S3Store::new(cfg), policy.clone())))
    }
    #[cfg(not(feature = "s3"))]
    Err(UnsupportedStore(c.endpoint.clone()))
}

/// A peer's store and the commitment it was opened from.
type PeerStore = (Commitment, Arc<dyn ObjectStore>);

/// What every node shares: settings, chain, its own bucket, status.
pub struct NodeContext {
    pub hp: Hparams,
    pub chain: Arc<dyn Chain>,
    /// This node's bucket (it writes here; peers read it with the committed read key).
    pub own_store: Arc<dyn ObjectStore>,
    pub keys: Keys,
    pub hotkey: Hotkey,
    pub uid: u16,
    pub retry: RetryPolicy,
    /// Whole-call bound for one peer's download in a gather.
    pub peer_timeout: Duration,
    pub status: Arc<Mutex<NodeStatus>>,
    peer_stores: Mutex<HashMap<u16, PeerStore>>,
    observed: Mutex<BTreeMap<u64, SystemTime>>,
}

impl NodeContext {
    pub fn new(
        hp: Hparams,
        chain: Arc<dyn Chain>,
        own_store: Arc<dyn ObjectStore>,
        hotkey: Hotkey,
        uid: u16,
        status: NodeStatus,
    ) -> Self {
        let keys = Keys::new(&hp.network.version);
        Self {
            hp,
            chain,
            own_store,
            keys,
            hotkey,
            uid,
            retry: RetryPolicy::default(),
            peer_timeout: Duration::from_secs(30),
            status: Arc::new(Mutex::new(status)),
            peer_stores: Mutex::new(HashMap::new()),
            observed: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn window_of_block(&self, block: u64) -> u64 {
        block / self.hp.network.blocks_per_window
    }

    pub async fn current_window(&self) -> Result<u64, ChainError> {
        Ok(self.window_of_block(self.chain.current_block().await?))
    }

    /// Note that window `w` has begun (first sighting wins).
    pub fn observe_window(&self, w: u64) {
        let mut obs = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        obs.entry(w).or_insert_with(SystemTime::now);
        // Keep a bounded history.
        while obs.len() > 64 {
            let first = *obs.keys().next().expect("non-empty");
            obs.remove(&first);
        }
    }

    /// Accepted LastModified range for window `w`, once both ends have been seen.
    pub fn accept_range(&self, w: u64) -> Option<(SystemTime, SystemTime)> {
        let obs = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        let n = &self.hp.network;
        let start = *obs.get(&w)?;
        let end = *obs.get(&(w + 1))?;
        Some((
            start - Duration::from_millis(n.clock_skew_ms),
            end + Duration::from_millis(n.upload_grace_ms),
        ))
    }

    /// A peer's store, from its current commitment (cached while the commitment holds).
    pub async fn peer_store(&self, uid: u16) -> Result<Option<Arc<dyn ObjectStore>>, PeerError> {
        let Some(c) = self.chain.commitment(uid).await? else {
            return Ok(None);
        };
        let mut cache = self.peer_stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, store)) = cache.get(&uid)
            && *known == c
        {
            return Ok(Some(store.clone()));
        }
        let store = open_store(&c, &self.retry)?;
        cache.insert(uid, (c, store.clone()));
        Ok(Some(store))
    }

    /// Uids of the miners training in window `w`: the top validator's published list for
    /// that window, or (none published) the registered miners with a commitment.
    pub async fn peers_for(&self, w: u64) -> Result<Vec<u16>, ChainError> {
        let mg = self.chain.metagraph().await?;
        let top_store = match mg.top_validator() {
            Some(v) => match self.peer_store(v.uid).await {
                Ok(store) => store,
                Err(PeerError::Chain(e)) => return Err(e),
                Err(PeerError::Unsupported(e)) => {
                    tracing::warn!(error = %e, "top validator's bucket unreadable");
                    None
                }
            },
            None => None,
        };
        if let Some(store) = top_store {
            match store.get(&self.keys.peers(w), 1 << 20).await {
                Ok(bytes) => {
                    if let Ok(list) = serde_json::from_slice::<Vec<u16>>(&bytes) {
                        return Ok(list);
                    }
                }
                Err(StorageError::NotFound { .. }) => {}
                Err(e) => tracing::warn!(error = %e, window = w, "peer list unreadable"),
            }
        }
        self.committed_miners(&mg).await
    }

    /// Uids of the metagraph's miners that have committed a bucket.
    pub async fn committed_miners(&self, mg: &Metagraph) -> Result<Vec<u16>, ChainError> {
        let mut out = Vec::new();
        for n in mg.miners() {
            if self.chain.commitment(n.uid).await?.is_some() {
                out.push(n.uid);
            }
        }
        Ok(out)
    }

    pub fn update_status(&self, f: impl FnOnce(&mut NodeStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Why a peer's store could not be opened.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Unsupported(#[from] UnsupportedStore),
}
