//! The network: miners and validators exchanging payloads through object storage, windows
//! from the chain's blocks.
//!
//! Both roles are state machines driven window by window ([`miner::Miner`],
//! [`validator::Validator`]); [`run`] drives them from the chain's clock, and tests drive them
//! in lockstep with a manual clock. Each node notes the wall time at which it saw each window
//! begin; a payload for window w is accepted when its LastModified lies in
//! [start(w) − skew, start(w + 1) + grace] as this node saw them.

pub mod checkpoint;
pub mod engine;
pub mod local;
pub mod miner;
pub mod run;
pub mod validator;

use crate::chain::{Chain, ChainError, Commitment, Metagraph};
use crate::codec::payload::PayloadError;
use crate::data::Pages;
use crate::hparams::Hparams;
use crate::storage::fs::FsStore;
use crate::storage::keys::Keys;
use crate::storage::retry::{RetryPolicy, Retrying};
use crate::storage::s3::{S3Config, S3Store};
use crate::storage::{ObjectStore, StorageError};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tch::Device;
use templar_crds::{NodeStatus, SkippedPeer};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Optim(#[from] crate::optim::OptimError),
    #[error(transparent)]
    Hparams(#[from] crate::hparams::HparamsError),
    #[error("own payload failed validation: {0}")]
    OwnPayload(#[from] PayloadError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("hotkey {0} is not registered on the chain")]
    NotRegistered(String),
    #[error("the data needs a vocabulary of {needed}, the model has {vocab}")]
    Vocab { needed: u32, vocab: i64 },
}

/// Open a peer's bucket from its commitment: `file:///root` (the filesystem store, bucket
/// = subfolder) or an S3 endpoint. Every call is retried within the policy's budget.
pub fn open_store(c: &Commitment, policy: &RetryPolicy) -> Arc<dyn ObjectStore> {
    if let Some(root) = c.endpoint.strip_prefix("file://") {
        let store = FsStore::new(std::path::Path::new(root).join(&c.bucket));
        return Arc::new(Retrying::new(store, policy.clone()));
    }
    let mut cfg = S3Config::new(
        &c.endpoint,
        &c.bucket,
        &c.access_key_id,
        &c.secret_access_key,
    );
    cfg.region = c.region.clone();
    Arc::new(Retrying::new(S3Store::new(cfg), policy.clone()))
}

/// A peer's store and the commitment it was opened from.
type PeerStore = (Commitment, Arc<dyn ObjectStore>);

/// What every node shares: settings, chain, its own bucket, data, status.
pub struct NodeContext {
    pub hp: Hparams,
    pub chain: Arc<dyn Chain>,
    /// This node's bucket (it writes here; peers read it with the committed read key).
    pub own_store: Arc<dyn ObjectStore>,
    pub keys: Keys,
    pub pages: Pages,
    pub device: Device,
    pub hotkey: String,
    pub uid: u16,
    pub retry: RetryPolicy,
    /// Whole-call bound for one peer's download in a gather.
    pub peer_timeout: Duration,
    pub status: Arc<Mutex<NodeStatus>>,
    peer_stores: Mutex<HashMap<u16, PeerStore>>,
    observed: Mutex<BTreeMap<u64, SystemTime>>,
}

impl NodeContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        hp: Hparams,
        chain: Arc<dyn Chain>,
        own_store: Arc<dyn ObjectStore>,
        pages: Pages,
        device: Device,
        hotkey: String,
        uid: u16,
        status: NodeStatus,
    ) -> Self {
        let keys = Keys::new(&hp.network.version);
        Self {
            hp,
            chain,
            own_store,
            keys,
            pages,
            device,
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

    pub async fn current_window(&self) -> Result<u64, NetworkError> {
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
    pub async fn peer_store(&self, uid: u16) -> Result<Option<Arc<dyn ObjectStore>>, NetworkError> {
        let Some(c) = self.chain.commitment(uid).await? else {
            return Ok(None);
        };
        let mut cache = self.peer_stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, store)) = cache.get(&uid)
            && *known == c
        {
            return Ok(Some(store.clone()));
        }
        let store = open_store(&c, &self.retry);
        cache.insert(uid, (c, store.clone()));
        Ok(Some(store))
    }

    /// Uids of the miners training in window `w`: the top validator's published list for
    /// that window, or (none published) the registered miners with a commitment.
    pub async fn peers_for(&self, w: u64) -> Result<Vec<u16>, NetworkError> {
        let mg = self.chain.metagraph().await?;
        if let Some(v) = mg.top_validator()
            && let Some(store) = self.peer_store(v.uid).await?
        {
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
    pub async fn committed_miners(&self, mg: &Metagraph) -> Result<Vec<u16>, NetworkError> {
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

/// One peer's bytes for window `w`, or the reason they are left out.
pub async fn fetch_payload(
    ctx: &NodeContext,
    uid: u16,
    w: u64,
    max_bytes: u64,
    range: Option<(SystemTime, SystemTime)>,
) -> Result<Vec<u8>, SkippedPeer> {
    let skip = |reason: String| SkippedPeer { uid, reason };
    let fetch = async {
        let store = ctx
            .peer_store(uid)
            .await
            .map_err(|e| skip(format!("no bucket: {e}")))?
            .ok_or_else(|| skip("no commitment on chain".into()))?;
        let key = ctx.keys.gradient(w, uid);
        let info = store.head(&key).await.map_err(|e| match e {
            StorageError::NotFound { .. } => skip("missing".into()),
            e => skip(format!("unreachable: {e}")),
        })?;
        if let Some((min, max)) = range {
            if info.last_modified < min {
                return Err(skip("too early".into()));
            }
            if info.last_modified > max {
                return Err(skip("too late".into()));
            }
        }
        store
            .get(&key, max_bytes)
            .await
            .map_err(|e| skip(format!("download failed: {e}")))
    };
    match tokio::time::timeout(ctx.peer_timeout, fetch).await {
        Ok(r) => r,
        Err(_) => Err(skip(format!("timed out after {:?}", ctx.peer_timeout))),
    }
}

/// Gather window `w`: every listed peer's payload, validated; the rest with reasons.
/// Accepted payloads are returned in uid order, so every node merges them identically.
pub async fn gather(
    ctx: &NodeContext,
    engine: &engine::Engine,
    w: u64,
    peers: &[u16],
    range: Option<(SystemTime, SystemTime)>,
) -> (Vec<(u16, crate::codec::payload::Payload)>, Vec<SkippedPeer>) {
    let max_bytes = engine.max_payload_bytes();
    let mut uids = peers.to_vec();
    uids.sort_unstable();
    uids.dedup();
    // Downloads run concurrently, each bounded by the peer timeout; validation follows.
    let downloads = uids
        .iter()
        .map(|&uid| fetch_payload(ctx, uid, w, max_bytes, range));
    let results = futures::future::join_all(downloads).await;
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for (uid, r) in uids.into_iter().zip(results) {
        match r.and_then(|bytes| {
            engine
                .decode(&bytes, uid, w)
                .map_err(|reason| SkippedPeer { uid, reason })
        }) {
            Ok(p) => ok.push((uid, p)),
            Err(s) => {
                tracing::info!(uid = s.uid, window = w, reason = %s.reason, "peer skipped");
                skipped.push(s);
            }
        }
    }
    (ok, skipped)
}
