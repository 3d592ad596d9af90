//! Devnet chain: state as JSON objects in an object store, blocks from the clock.
//!
//! Objects under `devnet/`: `genesis.json` (start time, block time, validator stake
//! threshold), `neurons/{uid}.json` (hotkey, stake), `commitments/{uid}.json`,
//! `weights/{uid}.json` (a validator's latest weights and the block they were set at).
//! Incentive of uid j = Σ_v stake_v · w_vj / Σ_v stake_v over validators v that set weights,
//! each validator's weights normalised to sum 1. For development and private clusters: any
//! writer of the store can write chain state, so it is not a trust boundary.

use super::{
    BackendError, Chain, ChainError, Clock, Commitment, Metagraph, Neuron, RegisterRequest,
};
use crate::identity::Hotkey;
use crate::node_status::NodeRole;
use crate::storage::{ObjectStore, StorageError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAX_STATE_BYTES: u64 = 1 << 20;
/// Uids available on the devnet.
pub const MAX_UIDS: u16 = 256;
/// Stake that earns a validator permit on every devnet this project creates.
pub const MIN_VALIDATOR_STAKE: f64 = 1000.0;
/// Stake the devnet runner, the operator and the test networks give a validator (above
/// [`MIN_VALIDATOR_STAKE`]); miners register with [`MINER_STAKE`].
pub const VALIDATOR_STAKE: f64 = 5000.0;
pub const MINER_STAKE: f64 = 0.0;

/// The stake a node of `role` registers with on the devnet.
pub fn stake_for(role: NodeRole) -> f64 {
    match role {
        NodeRole::Validator => VALIDATOR_STAKE,
        NodeRole::Miner => MINER_STAKE,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Genesis {
    pub genesis_unix_ms: u64,
    pub block_time_ms: u64,
    /// Neurons with at least this stake hold a validator permit.
    pub min_validator_stake: f64,
    /// Blocks between two weight settings of one hotkey (Bittensor's `weights_rate_limit`);
    /// 0 (and chains created before it existed) means no limit.
    #[serde(default)]
    pub weights_rate_limit_blocks: u64,
}

/// The devnet's weights rate limit for windows of `blocks_per_window`: twice a window at
/// most, so a validator that sets weights once a window is never refused for jitter.
pub fn weights_rate_limit_for(blocks_per_window: u64) -> u64 {
    (blocks_per_window / 2).max(1)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Registration {
    uid: u16,
    hotkey: Hotkey,
    stake: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WeightsRecord {
    block: u64,
    hotkey: Hotkey,
    weights: Vec<(u16, f64)>,
}

pub struct DevnetChain {
    store: Arc<dyn ObjectStore>,
    clock: Arc<dyn Clock>,
    genesis: Genesis,
    claim_settle: Duration,
}

/// How long a node waits after writing its uid claim before reading it back. Object stores
/// have no compare-and-swap that every S3 server honours (Garage ignores `If-None-Match`),
/// so nodes that start together may claim the same free uid: the last write wins, and each
/// claimant that reads another hotkey back tries the next free uid. The wait must exceed
/// the time between a rival's read of the free uid and its write (milliseconds).
pub const CLAIM_SETTLE: Duration = Duration::from_millis(1500);

/// Claims a node tries before giving up (each loses only to a node that then holds a uid).
const CLAIM_ATTEMPTS: usize = 32;

fn key(kind: &str, uid: u16) -> String {
    format!("devnet/{kind}/{uid:05}.json")
}

const GENESIS: &str = "devnet/genesis.json";

/// What only the devnet can fail with: its state lives in the object store.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DevnetError {
    #[error("devnet storage: {0}")]
    Storage(#[from] StorageError),
    #[error("the devnet has no genesis object ({GENESIS}); `templar-node devnet` writes it")]
    NoGenesis,
}

impl From<DevnetError> for ChainError {
    fn from(e: DevnetError) -> Self {
        ChainError::Backend(BackendError::new(e))
    }
}

impl From<StorageError> for ChainError {
    fn from(e: StorageError) -> Self {
        DevnetError::from(e).into()
    }
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<Option<T>, ChainError> {
    match store.get(key, MAX_STATE_BYTES).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ChainError::Corrupt {
                key: key.into(),
                reason: e.to_string(),
            }),
        Err(StorageError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn write_json<T: Serialize>(
    store: &dyn ObjectStore,
    key: &str,
    v: &T,
) -> Result<(), ChainError> {
    let bytes = serde_json::to_vec_pretty(v).expect("state serialises");
    Ok(store.put(key, bytes).await?)
}

impl DevnetChain {
    /// Write the genesis if there is none; either way return the chain's genesis.
    pub async fn init(store: &dyn ObjectStore, genesis: Genesis) -> Result<Genesis, ChainError> {
        if let Some(existing) = read_json::<Genesis>(store, GENESIS).await? {
            return Ok(existing);
        }
        write_json(store, GENESIS, &genesis).await?;
        Ok(genesis)
    }

    pub async fn open(
        store: Arc<dyn ObjectStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ChainError> {
        let genesis = read_json::<Genesis>(store.as_ref(), GENESIS)
            .await?
            .ok_or(DevnetError::NoGenesis)?;
        Ok(Self {
            store,
            clock,
            genesis,
            claim_settle: CLAIM_SETTLE,
        })
    }

    /// The wait between a uid claim and its read-back ([`CLAIM_SETTLE`]); zero where one
    /// process registers its nodes one after another (in-process networks, tests).
    pub fn with_claim_settle(mut self, settle: Duration) -> Self {
        self.claim_settle = settle;
        self
    }

    /// Write a claim on `uid` for `reg.hotkey` and read it back after the settle time:
    /// whether the claim held against nodes claiming the same uid at the same time.
    async fn claim(&self, reg: &Registration) -> Result<bool, ChainError> {
        let at = key("neurons", reg.uid);
        write_json(self.store.as_ref(), &at, reg).await?;
        if self.claim_settle.is_zero() {
            return Ok(true);
        }
        tokio::time::sleep(self.claim_settle).await;
        let holder = read_json::<Registration>(self.store.as_ref(), &at).await?;
        Ok(holder.is_some_and(|h| h.hotkey == reg.hotkey))
    }

    /// Wall time at which `block` starts.
    pub fn block_time(&self, block: u64) -> std::time::SystemTime {
        UNIX_EPOCH
            + Duration::from_millis(self.genesis.genesis_unix_ms)
            + Duration::from_millis(self.genesis.block_time_ms.saturating_mul(block))
    }

    async fn registrations(&self) -> Result<BTreeMap<u16, Registration>, ChainError> {
        let mut out = BTreeMap::new();
        for obj in self.store.list("devnet/neurons/").await? {
            if let Some(r) = read_json::<Registration>(self.store.as_ref(), &obj.key).await? {
                out.insert(r.uid, r);
            }
        }
        Ok(out)
    }

    async fn uid_of(&self, hotkey: &Hotkey) -> Result<u16, ChainError> {
        self.registrations()
            .await?
            .values()
            .find(|r| r.hotkey == *hotkey)
            .map(|r| r.uid)
            .ok_or_else(|| ChainError::NotRegistered(hotkey.clone()))
    }
}

#[async_trait::async_trait]
impl Chain for DevnetChain {
    fn block_interval(&self) -> Duration {
        Duration::from_millis(self.genesis.block_time_ms)
    }

    /// At `request.uid` if given, else at the lowest free uid, with `request.stake`.
    /// Registering again with the same hotkey returns its uid (and updates its stake).
    async fn register(&self, hotkey: &Hotkey, request: RegisterRequest) -> Result<u16, ChainError> {
        let RegisterRequest { stake, uid } = request;
        for attempt in 0..CLAIM_ATTEMPTS {
            let existing = self.registrations().await?;
            if let Some(r) = existing.values().find(|r| r.hotkey == *hotkey) {
                if uid.is_some_and(|u| u != r.uid) {
                    return Err(ChainError::HotkeyRegistered {
                        hotkey: hotkey.clone(),
                        uid: r.uid,
                    });
                }
                let updated = Registration { stake, ..r.clone() };
                write_json(self.store.as_ref(), &key("neurons", r.uid), &updated).await?;
                return Ok(r.uid);
            }
            let chosen = match uid {
                Some(u) => {
                    if existing.get(&u).is_some_and(|r| r.hotkey != *hotkey) {
                        return Err(ChainError::UidTaken { uid: u });
                    }
                    u
                }
                None => (0..MAX_UIDS)
                    .find(|u| !existing.contains_key(u))
                    .ok_or(ChainError::Full(MAX_UIDS))?,
            };
            let reg = Registration {
                uid: chosen,
                hotkey: hotkey.clone(),
                stake,
            };
            if self.claim(&reg).await? {
                return Ok(chosen);
            }
            if uid.is_some() {
                return Err(ChainError::UidTaken { uid: chosen });
            }
            // Lost the uid to a node that claimed it at the same time: spread the retries so
            // that the losers do not collide again on the next free uid.
            let jitter = RandomState::new().hash_one((hotkey.as_str(), attempt)) % 500;
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        Err(ChainError::RegistrationContended(CLAIM_ATTEMPTS))
    }

    fn block_start(&self, block: u64) -> Option<SystemTime> {
        self.clock.is_wall_clock().then(|| self.block_time(block))
    }

    async fn current_block(&self) -> Result<u64, ChainError> {
        let now_ms = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        Ok(now_ms.saturating_sub(self.genesis.genesis_unix_ms) / self.genesis.block_time_ms.max(1))
    }

    async fn metagraph(&self) -> Result<Metagraph, ChainError> {
        let regs = self.registrations().await?;
        let permit = |r: &Registration| r.stake >= self.genesis.min_validator_stake;
        let mut incentive: BTreeMap<u16, f64> = BTreeMap::new();
        let mut stake_total = 0.0;
        for r in regs.values().filter(|r| permit(r)) {
            let Some(w) =
                read_json::<WeightsRecord>(self.store.as_ref(), &key("weights", r.uid)).await?
            else {
                continue;
            };
            if w.hotkey != r.hotkey {
                continue; // weights of a previous holder of this uid
            }
            let sum: f64 = w.weights.iter().map(|(_, x)| x.max(0.0)).sum();
            if sum <= 0.0 {
                continue;
            }
            stake_total += r.stake;
            for (uid, x) in &w.weights {
                *incentive.entry(*uid).or_default() += r.stake * x.max(0.0) / sum;
            }
        }
        let neurons = regs
            .values()
            .map(|r| Neuron {
                uid: r.uid,
                hotkey: r.hotkey.clone(),
                stake: r.stake,
                validator_permit: permit(r),
                incentive: if stake_total > 0.0 {
                    incentive.get(&r.uid).copied().unwrap_or(0.0) / stake_total
                } else {
                    0.0
                },
            })
            .collect();
        Ok(Metagraph {
            block: self.current_block().await?,
            neurons,
        })
    }

    async fn commit(&self, hotkey: &Hotkey, commitment: &Commitment) -> Result<(), ChainError> {
        let uid = self.uid_of(hotkey).await?;
        write_json(self.store.as_ref(), &key("commitments", uid), commitment).await
    }

    async fn commitment(&self, uid: u16) -> Result<Option<Commitment>, ChainError> {
        read_json(self.store.as_ref(), &key("commitments", uid)).await
    }

    async fn set_weights(&self, hotkey: &Hotkey, weights: &[(u16, f64)]) -> Result<(), ChainError> {
        if weights.iter().any(|(_, w)| !w.is_finite() || *w < 0.0) {
            return Err(ChainError::InvalidWeights(
                "weights must be finite and >= 0".into(),
            ));
        }
        let uid = self.uid_of(hotkey).await?;
        let block = self.current_block().await?;
        let limit = self.genesis.weights_rate_limit_blocks;
        if let Some(last) = read_json::<WeightsRecord>(self.store.as_ref(), &key("weights", uid))
            .await?
            .filter(|last| last.hotkey == *hotkey)
        {
            let next_block = last.block.saturating_add(limit);
            if limit > 0 && block < next_block {
                return Err(ChainError::WeightsRateLimited {
                    last_block: last.block,
                    next_block,
                });
            }
        }
        let record = WeightsRecord {
            block,
            hotkey: hotkey.clone(),
            weights: weights.to_vec(),
        };
        write_json(self.store.as_ref(), &key("weights", uid), &record).await
    }

    async fn weights_rate_limit(&self) -> Result<u64, ChainError> {
        Ok(self.genesis.weights_rate_limit_blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ManualClock;
    use crate::storage::fs::FsStore;

    fn hk(name: &str) -> Hotkey {
        Hotkey::parse(name).unwrap()
    }

    fn stake(stake: f64, uid: Option<u16>) -> RegisterRequest {
        RegisterRequest { stake, uid }
    }

    async fn chain() -> (tempfile::TempDir, DevnetChain, Arc<ManualClock>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(FsStore::new(dir.path()));
        let genesis = Genesis {
            genesis_unix_ms: 1_000_000,
            block_time_ms: 100,
            min_validator_stake: MIN_VALIDATOR_STAKE,
            weights_rate_limit_blocks: 10,
        };
        DevnetChain::init(store.as_ref(), genesis).await.unwrap();
        let clock = Arc::new(ManualClock::new(
            UNIX_EPOCH + Duration::from_millis(1_000_000),
        ));
        let c = DevnetChain::open(store, clock.clone())
            .await
            .unwrap()
            .with_claim_settle(Duration::ZERO);
        (dir, c, clock)
    }

    /// Nodes that start together (a StatefulSet, `templar-node devnet`), each with its own
    /// handle on the shared store, all claim the lowest free uid at once: every one ends
    /// with its own uid, and the metagraph agrees.
    #[tokio::test]
    async fn nodes_registering_at_once_get_distinct_uids() {
        let (dir, _, clock) = chain().await;
        let store: Arc<dyn ObjectStore> = Arc::new(FsStore::new(dir.path()));
        let mut nodes = Vec::new();
        for _ in 0..8 {
            let handle = DevnetChain::open(store.clone(), clock.clone())
                .await
                .unwrap()
                .with_claim_settle(Duration::from_millis(100));
            nodes.push(handle);
        }
        let names: Vec<Hotkey> = (0..8).map(|i| hk(&format!("node-{i}"))).collect();
        let uids: Vec<u16> = futures::future::join_all(
            nodes
                .iter()
                .zip(&names)
                .map(|(c, h)| c.register(h, stake(0.0, None))),
        )
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
        let distinct: std::collections::BTreeSet<u16> = uids.iter().copied().collect();
        assert_eq!(distinct.len(), 8, "uids {uids:?}");
        let mg = nodes[0].metagraph().await.unwrap();
        for (h, uid) in names.iter().zip(&uids) {
            assert_eq!(mg.by_hotkey(h).map(|n| n.uid), Some(*uid), "{h}");
        }
    }

    #[tokio::test]
    async fn a_store_without_genesis_is_the_devnets_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(FsStore::new(dir.path()));
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH));
        let err = DevnetChain::open(store, clock).await.err().unwrap();
        assert_eq!(err.backend::<DevnetError>(), Some(&DevnetError::NoGenesis));
        assert!(err.to_string().contains("templar-node devnet"), "{err}");
    }

    #[tokio::test]
    async fn blocks_follow_the_clock() {
        let (_d, c, clock) = chain().await;
        assert_eq!(c.current_block().await.unwrap(), 0);
        clock.advance(Duration::from_millis(250));
        assert_eq!(c.current_block().await.unwrap(), 2);
        assert_eq!(c.block_interval(), Duration::from_millis(100));
        assert_eq!(
            c.block_time(2),
            UNIX_EPOCH + Duration::from_millis(1_000_200)
        );
    }

    #[tokio::test]
    async fn registration_commitments_and_incentive() {
        let (_d, c, _) = chain().await;
        let v1 = c.register(&hk("val-a"), stake(3000.0, None)).await.unwrap();
        let v2 = c.register(&hk("val-b"), stake(1000.0, None)).await.unwrap();
        let m1 = c
            .register(&hk("miner-a"), stake(0.0, Some(10)))
            .await
            .unwrap();
        let m2 = c.register(&hk("miner-b"), stake(0.0, None)).await.unwrap();
        assert_eq!((v1, v2, m1, m2), (0, 1, 10, 2));
        assert_eq!(
            c.register(&hk("miner-a"), stake(0.0, None)).await.unwrap(),
            10,
            "idempotent"
        );
        assert_eq!(
            c.register(&hk("other"), stake(0.0, Some(10))).await,
            Err(ChainError::UidTaken { uid: 10 })
        );
        // One hotkey, one uid: asking for a second one is refused.
        assert_eq!(
            c.register(&hk("miner-a"), stake(0.0, Some(11))).await,
            Err(ChainError::HotkeyRegistered {
                hotkey: hk("miner-a"),
                uid: 10
            })
        );
        assert_eq!(c.metagraph().await.unwrap().neurons.len(), 4);

        let commit = Commitment {
            endpoint: "file:///tmp/x".into(),
            region: "auto".into(),
            bucket: "b".into(),
            access_key_id: "id".into(),
            secret_access_key: "s3cret".into(),
        };
        c.commit(&hk("miner-a"), &commit).await.unwrap();
        assert_eq!(c.commitment(10).await.unwrap(), Some(commit.clone()));
        assert!(!format!("{commit:?}").contains("s3cret"));
        assert!(matches!(
            c.commit(&hk("nobody"), &commit).await,
            Err(ChainError::NotRegistered(_))
        ));

        c.set_weights(&hk("val-a"), &[(10, 3.0), (2, 1.0)])
            .await
            .unwrap();
        c.set_weights(&hk("val-b"), &[(10, 0.0), (2, 1.0)])
            .await
            .unwrap();
        let mg = c.metagraph().await.unwrap();
        let inc = |uid| mg.neurons.iter().find(|n| n.uid == uid).unwrap().incentive;
        // (3000 * 0.75 + 1000 * 0) / 4000 and (3000 * 0.25 + 1000 * 1) / 4000
        assert!((inc(10) - 0.5625).abs() < 1e-12);
        assert!((inc(2) - 0.4375).abs() < 1e-12);
        assert_eq!(mg.top_validator().unwrap().hotkey, "val-a");
        assert_eq!(mg.miners().count(), 2);
        assert!(c.set_weights(&hk("val-a"), &[(1, f64::NAN)]).await.is_err());
    }

    #[tokio::test]
    async fn weights_are_rate_limited_per_hotkey() {
        let (_d, c, clock) = chain().await;
        c.register(&hk("val-a"), stake(3000.0, None)).await.unwrap();
        c.register(&hk("val-b"), stake(3000.0, None)).await.unwrap();
        assert_eq!(c.weights_rate_limit().await.unwrap(), 10);
        c.set_weights(&hk("val-a"), &[(1, 1.0)]).await.unwrap();
        // Nine blocks later: refused, with the block it is allowed again.
        clock.advance(Duration::from_millis(900));
        let refused = c.set_weights(&hk("val-a"), &[(1, 1.0)]).await.unwrap_err();
        assert_eq!(
            refused,
            ChainError::WeightsRateLimited {
                last_block: 0,
                next_block: 10
            }
        );
        // Another validator has its own limit.
        c.set_weights(&hk("val-b"), &[(1, 1.0)]).await.unwrap();
        clock.advance(Duration::from_millis(100));
        c.set_weights(&hk("val-a"), &[(1, 1.0)]).await.unwrap();
    }
}
