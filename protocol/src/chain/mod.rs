//! The chain as a node sees it: blocks, the metagraph, commitments of bucket read
//! credentials, and weights. [`devnet::DevnetChain`] keeps its state in the object store (for
//! one machine and private clusters); the `templar-subtensor` crate implements the same trait
//! for Bittensor. [`ChainError`] holds what every chain can answer; an error only one backend
//! has travels whole inside [`BackendError`].

pub mod devnet;
pub mod weights;

use crate::identity::Hotkey;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Source of "now" for block arithmetic; tests inject [`ManualClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
    /// Whether `now` is the wall clock, so that block times can be compared with the
    /// storage's timestamps (a manual clock's cannot).
    fn is_wall_clock(&self) -> bool {
        true
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to.
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        Self(Mutex::new(start))
    }
    pub fn set(&self, t: SystemTime) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }
    pub fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn is_wall_clock(&self) -> bool {
        false
    }
}

/// What a chain call can fail with, whichever chain answers it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChainError {
    #[error("chain state object {key:?} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("hotkey {0} is not registered")]
    NotRegistered(Hotkey),
    #[error("uid {uid} is taken by another hotkey")]
    UidTaken { uid: u16 },
    #[error("hotkey {hotkey} already holds uid {uid}; one hotkey, one uid")]
    HotkeyRegistered { hotkey: Hotkey, uid: u16 },
    #[error("no free uid (all {0} taken)")]
    Full(u16),
    #[error("no uid could be claimed in {0} tries: other nodes kept registering at the same time")]
    RegistrationContended(usize),
    #[error("invalid weights: {0}")]
    InvalidWeights(String),
    #[error(
        "weights were set at block {last_block}; the rate limit allows the next at block {next_block}"
    )]
    WeightsRateLimited { last_block: u64, next_block: u64 },
    #[error("chain RPC failed: {0}")]
    Rpc(String),
    #[error("{what}: no answer from the chain within {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("hotkey {0} has no validator permit on this subnet")]
    NoValidatorPermit(Hotkey),
    #[error("weights version key {ours} is below the subnet's WeightsVersionKey {required}")]
    VersionKeyTooLow { ours: u64, required: u64 },
    #[error("the chain rejected the extrinsic with {error}: {reason}")]
    Rejected { error: String, reason: String },
    #[error("{0}")]
    Unsupported(String),
    /// An error of one backend (the devnet's store, subtensor's runtime).
    #[error(transparent)]
    Backend(BackendError),
}

impl ChainError {
    /// The backend's own error, when it is one of type `E`.
    pub fn backend<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            ChainError::Backend(b) => b.0.downcast_ref::<E>(),
            _ => None,
        }
    }
}

/// A backend-specific error kept whole (its type can be recovered with
/// [`ChainError::backend`]); shared so that [`ChainError`] stays `Clone`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(Arc<dyn std::error::Error + Send + Sync>);

impl BackendError {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }
}

/// Two backend errors are equal when they say the same (their types are erased).
impl PartialEq for BackendError {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

/// One registered node.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Neuron {
    pub uid: u16,
    pub hotkey: Hotkey,
    pub stake: f64,
    pub validator_permit: bool,
    /// Stake-weighted share of the validators' weights, in [0, 1].
    pub incentive: f64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metagraph {
    pub block: u64,
    pub neurons: Vec<Neuron>,
}

impl Metagraph {
    pub fn by_hotkey(&self, hotkey: &Hotkey) -> Option<&Neuron> {
        self.neurons.iter().find(|n| n.hotkey == *hotkey)
    }

    /// The validator with the most stake (ties: lowest uid).
    pub fn top_validator(&self) -> Option<&Neuron> {
        self.neurons
            .iter()
            .filter(|n| n.validator_permit)
            .max_by(|a, b| a.stake.total_cmp(&b.stake).then(b.uid.cmp(&a.uid)))
    }

    pub fn miners(&self) -> impl Iterator<Item = &Neuron> {
        self.neurons.iter().filter(|n| !n.validator_permit)
    }
}

/// What a node commits on chain: where its bucket is and the key that reads it.
/// `Debug` hides the secret.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Commitment {
    /// `file:///path` for the filesystem store, `http(s)://host:port` for S3.
    pub endpoint: String,
    /// S3 signing region (`auto` for R2; Garage and AWS name theirs).
    #[serde(default = "default_region")]
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

fn default_region() -> String {
    "auto".into()
}

impl std::fmt::Debug for Commitment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commitment")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// What a node asks for when it registers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RegisterRequest {
    /// Stake to hold (the devnet sets it; on a public chain stake is added separately).
    pub stake: f64,
    /// A particular uid (the devnet honours it; a public chain assigns uids itself).
    pub uid: Option<u16>,
}

#[async_trait::async_trait]
pub trait Chain: Send + Sync {
    /// Time between blocks, for polling the chain at a useful rate.
    fn block_interval(&self) -> Duration;
    async fn current_block(&self) -> Result<u64, ChainError>;
    /// Wall time at which `block` begins, when the chain fixes it (the devnet: genesis plus
    /// blocks times the block time). Upload deadlines come from it, so that every node
    /// judges an upload against the same bounds; `None` leaves each node to the times it
    /// saw the windows begin.
    fn block_start(&self, _block: u64) -> Option<SystemTime> {
        None
    }
    /// Make sure `hotkey` holds a uid and return it. Registering again is not an error: it
    /// returns the uid the hotkey already holds.
    async fn register(&self, hotkey: &Hotkey, request: RegisterRequest) -> Result<u16, ChainError>;
    async fn metagraph(&self) -> Result<Metagraph, ChainError>;
    async fn commit(&self, hotkey: &Hotkey, commitment: &Commitment) -> Result<(), ChainError>;
    async fn commitment(&self, uid: u16) -> Result<Option<Commitment>, ChainError>;
    /// Every registered uid's commitment in templar's format, read at one block. A chain
    /// that can read them together (subtensor: one storage iteration) overrides this
    /// uid-by-uid read.
    async fn commitments(&self) -> Result<BTreeMap<u16, Commitment>, ChainError> {
        let mut out = BTreeMap::new();
        for n in self.metagraph().await?.neurons {
            if let Some(c) = self.commitment(n.uid).await? {
                out.insert(n.uid, c);
            }
        }
        Ok(out)
    }
    /// Weights by uid from `hotkey` (a validator); they are normalised by the chain. Refused
    /// with [`ChainError::WeightsRateLimited`] sooner than [`Chain::weights_rate_limit`]
    /// blocks after the hotkey's last weights.
    async fn set_weights(&self, hotkey: &Hotkey, weights: &[(u16, f64)]) -> Result<(), ChainError>;
    /// Blocks that must pass between two `set_weights` of one hotkey (0: no limit).
    async fn weights_rate_limit(&self) -> Result<u64, ChainError>;
    /// What became of `hotkey`'s last weights sent through this chain (`None`: none sent, or
    /// a chain that applies them as it takes them).
    async fn weights_on_chain(
        &self,
        _hotkey: &Hotkey,
    ) -> Result<Option<weights::WeightsOnChain>, ChainError> {
        Ok(None)
    }
}
