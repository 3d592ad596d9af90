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

pub use gather::{
    FETCH_FAN_OUT, Fetched, PeerPayload, SkipReason, Skipped, fetch_payload, gather,
    payload_digest, read_digest,
};

use crate::chain::{Chain, ChainError, Commitment, Metagraph};
use crate::hparams::Hparams;
use crate::identity::{Hotkey, Signer};
use crate::node_status::NodeStatus;
use crate::storage::fs::FsStore;
use crate::storage::keys::Keys;
use crate::storage::retry::{RetryPolicy, Retrying, StoreErrors};
#[cfg(feature = "s3")]
use crate::storage::s3::{S3Config, S3Store};
use crate::storage::{ObjectStore, StorageError};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A peer whose commitment names a kind of store this build cannot open.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("endpoint {0:?} needs the S3 store, which this build leaves out")]
pub struct UnsupportedStore(pub String);

/// Open a peer's bucket from its commitment: `file:///root` (the filesystem store, bucket
/// = subfolder) or an S3 endpoint. Every call is retried within the policy's budget.
pub fn open_store(
    c: &Commitment,
    policy: &RetryPolicy,
    errors: &Arc<StoreErrors>,
) -> Result<Arc<dyn ObjectStore>, UnsupportedStore> {
    if let Some(root) = c.endpoint.strip_prefix("file://") {
        let store = FsStore::new(std::path::Path::new(root).join(&c.bucket));
        let retrying = Retrying::new(store, policy.clone()).counting(errors.clone());
        return Ok(Arc::new(retrying));
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
        let retrying = Retrying::new(S3Store::new(cfg), policy.clone()).counting(errors.clone());
        Ok(Arc::new(retrying))
    }
    #[cfg(not(feature = "s3"))]
    {
        let _ = errors;
        Err(UnsupportedStore(c.endpoint.clone()))
    }
}

/// The top validator's list for a window (`Keys::peers`): the miners expected to train in
/// it, and those of them whose payloads no node aggregates in it (a run of negative or
/// invalid scores, `ScoreState::consecutive_negative` in the node crate). Every node reads the
/// same list, so every node leaves the same payloads out of the outer step.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerList {
    pub miners: Vec<u16>,
    #[serde(default)]
    pub excluded: Vec<u16>,
}

impl PeerList {
    /// The list as published, or the plain uid array of earlier versions (nobody excluded).
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Published {
            List(PeerList),
            Uids(Vec<u16>),
        }
        Ok(match serde_json::from_slice(bytes)? {
            Published::List(l) => l,
            Published::Uids(miners) => PeerList {
                miners,
                excluded: Vec::new(),
            },
        })
    }

    /// Whether uid's payload stays out of this window's outer step.
    pub fn is_excluded(&self, uid: u16) -> bool {
        self.excluded.contains(&uid)
    }
}

/// A peer's store and the commitment it was opened from.
type PeerStore = (Commitment, Arc<dyn ObjectStore>);

/// Every peer's commitment, by uid.
pub type Commitments = Arc<BTreeMap<u16, Commitment>>;

/// What every node shares: settings, chain, its own bucket, status.
pub struct NodeContext {
    pub hp: Hparams,
    pub chain: Arc<dyn Chain>,
    /// This node's bucket (it writes here; peers read it with the committed read key).
    pub own_store: Arc<dyn ObjectStore>,
    pub keys: Keys,
    pub hotkey: Hotkey,
    /// Signs this node's payloads; `None` for a devnet name, which cannot sign.
    pub signer: Option<Arc<dyn Signer>>,
    pub uid: u16,
    pub retry: RetryPolicy,
    /// Whole-call bound for one peer's download in a gather.
    pub peer_timeout: Duration,
    pub status: Arc<Mutex<NodeStatus>>,
    /// Failed store calls of this node's own and its peers' stores.
    pub store_errors: Arc<StoreErrors>,
    peer_stores: Mutex<HashMap<u16, PeerStore>>,
    /// Every peer's commitment and when it was read: a gather asks for each peer's, and
    /// one read serves them all for a block (a commitment changes at most once an epoch).
    commitments: tokio::sync::Mutex<Option<(Instant, Commitments)>>,
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
            signer: None,
            uid,
            retry: RetryPolicy::default(),
            peer_timeout: Duration::from_secs(30),
            status: Arc::new(Mutex::new(status)),
            store_errors: Arc::default(),
            peer_stores: Mutex::new(HashMap::new()),
            commitments: tokio::sync::Mutex::new(None),
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

    /// When window `w` begins: the chain's block time where it fixes one (the same for every
    /// node), else the time this node first saw it.
    pub fn window_start(&self, w: u64) -> Option<SystemTime> {
        let first_block = w.checked_mul(self.hp.network.blocks_per_window)?;
        self.chain.block_start(first_block).or_else(|| {
            let obs = self.observed.lock().unwrap_or_else(|e| e.into_inner());
            obs.get(&w).copied()
        })
    }

    /// Accepted LastModified range for window `w` (from its start less the clock skew to the
    /// next window's start plus the upload grace), once both starts are known.
    pub fn accept_range(&self, w: u64) -> Option<(SystemTime, SystemTime)> {
        let n = &self.hp.network;
        let start = self.window_start(w)?;
        let end = self.window_start(w + 1)?;
        Some((
            start - Duration::from_millis(n.clock_skew_ms),
            end + Duration::from_millis(n.upload_grace_ms),
        ))
    }

    /// How long to wait before gathering window `w`, so that every upload the range accepts
    /// has landed and is seen by every node alike: until the range's end plus the clock
    /// skew (storage and node clocks differ by up to that). Zero when the chain gives no
    /// block times (the range then comes from this node's own sightings).
    pub fn wait_before_gather(&self, w: u64) -> Duration {
        let first_block = (w + 1).saturating_mul(self.hp.network.blocks_per_window);
        let Some(end) = self.chain.block_start(first_block) else {
            return Duration::ZERO;
        };
        let n = &self.hp.network;
        let margin = Duration::from_millis(n.upload_grace_ms + n.clock_skew_ms);
        (end + margin)
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            // Never more than a window's worth, whatever the clocks say.
            .min(margin + self.chain.block_interval() * n.blocks_per_window as u32)
    }

    /// A peer's store, from its current commitment (cached while the commitment holds).
    pub async fn peer_store(&self, uid: u16) -> Result<Option<Arc<dyn ObjectStore>>, PeerError> {
        let commitments = self.commitments().await?;
        let Some(c) = commitments.get(&uid).cloned() else {
            return Ok(None);
        };
        let mut cache = self.peer_stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, store)) = cache.get(&uid)
            && *known == c
        {
            return Ok(Some(store.clone()));
        }
        let store = open_store(&c, &self.retry, &self.store_errors)?;
        cache.insert(uid, (c, store.clone()));
        Ok(Some(store))
    }

    /// Uids of the miners training in window `w`: the top validator's published list for
    /// that window, or (none published) the registered miners with a commitment.
    pub async fn peers_for(&self, w: u64) -> Result<PeerList, ChainError> {
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
                Ok(bytes) => match PeerList::from_json(&bytes) {
                    Ok(list) => return Ok(list),
                    Err(e) => tracing::warn!(error = %e, window = w, "peer list malformed"),
                },
                Err(StorageError::NotFound { .. }) => {}
                Err(e) => tracing::warn!(error = %e, window = w, "peer list unreadable"),
            }
        }
        Ok(PeerList {
            miners: self.committed_miners(&mg).await?,
            excluded: Vec::new(),
        })
    }

    /// Uids of the metagraph's miners that have committed a bucket.
    pub async fn committed_miners(&self, mg: &Metagraph) -> Result<Vec<u16>, ChainError> {
        let commitments = self.commitments().await?;
        Ok(mg
            .miners()
            .map(|n| n.uid)
            .filter(|uid| commitments.contains_key(uid))
            .collect())
    }

    /// Every peer's commitment, read from the chain at most once per block.
    pub async fn commitments(&self) -> Result<Commitments, ChainError> {
        let mut cached = self.commitments.lock().await;
        if let Some((read_at, commitments)) = cached.as_ref()
            && read_at.elapsed() < self.chain.block_interval()
        {
            return Ok(commitments.clone());
        }
        let commitments = Arc::new(self.chain.commitments().await?);
        *cached = Some((Instant::now(), commitments.clone()));
        Ok(commitments)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::devnet::{DevnetChain, Genesis};
    use crate::chain::{Clock, ManualClock, SystemClock};
    use std::time::UNIX_EPOCH;

    async fn context(clock: Arc<dyn Clock>) -> (tempfile::TempDir, NodeContext) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(FsStore::new(dir.path()));
        let genesis = Genesis {
            genesis_unix_ms: 1_000_000,
            block_time_ms: 1_000,
            min_validator_stake: 0.0,
            weights_rate_limit_blocks: 0,
        };
        DevnetChain::init(store.as_ref(), genesis).await.unwrap();
        let chain = Arc::new(DevnetChain::open(store.clone(), clock).await.unwrap());
        let mut hp = Hparams::default();
        hp.network.blocks_per_window = 5;
        hp.network.upload_grace_ms = 700;
        hp.network.clock_skew_ms = 300;
        let hotkey = Hotkey::parse("n").unwrap();
        let ctx = NodeContext::new(hp, chain, store, hotkey, 1, NodeStatus::default());
        (dir, ctx)
    }

    #[tokio::test]
    async fn uploads_are_judged_by_the_chains_block_times_when_it_has_them() {
        // Wall-clock chain: the bounds come from genesis + blocks, whenever this node first
        // saw the windows (a node that joined late judges like every other).
        let (_d, ctx) = context(Arc::new(SystemClock)).await;
        ctx.observe_window(3);
        ctx.observe_window(4);
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(
            ctx.accept_range(3),
            Some((at(1_000_000 + 15_000 - 300), at(1_000_000 + 20_000 + 700)))
        );
        assert_eq!(
            ctx.accept_range(7),
            ctx.accept_range(7),
            "defined without sightings"
        );
        assert!(ctx.accept_range(7).is_some());
        // Window 3 ended in 1970: nothing left to wait for.
        assert_eq!(ctx.wait_before_gather(3), Duration::ZERO);

        // A manual clock's blocks are not wall time: the node's own sightings count.
        let (_d, ctx) = context(Arc::new(ManualClock::new(at(1_000_000)))).await;
        assert_eq!(ctx.accept_range(3), None);
        ctx.observe_window(3);
        ctx.observe_window(4);
        let (start, end) = ctx.accept_range(3).unwrap();
        assert!(start < end && end > SystemTime::now() - Duration::from_secs(60));
        assert_eq!(ctx.wait_before_gather(3), Duration::ZERO);
    }
}
