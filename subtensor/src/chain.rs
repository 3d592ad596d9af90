//! [`SubtensorChain`]: the network's [`Chain`] on a Bittensor subnet (finney, testnet or a
//! local subtensor). Weights go the way the subnet requires: commit-reveal v4 (timelocked to
//! a drand round) while `CommitRevealWeightsEnabled`, plain `set_mechanism_weights` otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subxt::storage::StorageKeyValue;
use subxt::utils::AccountId32;
use templar_protocol::chain::{Chain, ChainError, Commitment, Metagraph, RegisterRequest};
use templar_protocol::identity::sr25519::Sr25519Signer;
use templar_protocol::identity::{Hotkey, Signer as _, ss58};

use crate::api::runtime;
use crate::calls;
use crate::client::{self, AtBlock, Client, ShapeChecked, bounded};
use crate::commitment;
use crate::extrinsic;
use crate::head::HeadFollower;

mod metagraph;
mod weights;
use crate::reveal::EpochState;

/// The block time: Aura's slot duration, through the runtime API (a SCALE `u64` of
/// milliseconds).
async fn slot_duration(at: &AtBlock, timeout: Duration) -> Result<Duration, ChainError> {
    let bytes = bounded(
        "reading the slot duration",
        timeout,
        at.runtime_apis().call_raw("AuraApi_slot_duration", None),
    )
    .await?;
    let millis = <[u8; 8]>::try_from(bytes.as_slice())
        .map(u64::from_le_bytes)
        .map_err(|_| ChainError::Rpc(format!("slot duration of {} bytes, not 8", bytes.len())))?;
    if millis == 0 {
        return Err(ChainError::Rpc("a slot duration of 0 ms".into()));
    }
    Ok(Duration::from_millis(millis))
}

/// Bittensor's SS58 prefix.
const SS58_PREFIX: u8 = 42;
/// Stake is in rao (1e-9 alpha).
const RAO: f64 = 1e9;

#[derive(Clone, Debug)]
pub struct SubtensorSettings {
    pub netuid: u16,
    /// Sent with weights; the chain refuses it below the subnet's `WeightsVersionKey`.
    pub version_key: u64,
    pub block_time: Duration,
    /// Bound on one RPC request.
    pub rpc_timeout: Duration,
    /// Bound on an extrinsic from submission to inclusion in a block.
    pub inclusion_timeout: Duration,
}

impl SubtensorSettings {
    pub fn new(netuid: u16) -> Self {
        Self {
            netuid,
            version_key: 0,
            block_time: Duration::from_secs(12),
            rpc_timeout: Duration::from_secs(30),
            inclusion_timeout: Duration::from_secs(120),
        }
    }
}

pub struct SubtensorChain {
    client: Client,
    /// The raw connection, for what the client does not ask the node: the best block's hash
    /// and the pool-aware next nonce.
    rpc: subxt::rpcs::RpcClient,
    /// The nonce after our last submitted extrinsic: the pool may not count it yet, and the
    /// lock keeps back-to-back extrinsics in order.
    next_nonce: tokio::sync::Mutex<Option<u64>>,
    settings: SubtensorSettings,
    signer: Arc<Sr25519Signer>,
    head: HeadFollower,
    /// The highest block reported, so that the subscription and a direct read (which may
    /// lag it by a block) never make the chain go backwards for the node.
    highest: AtomicU64,
    /// The block the last weights went into, and what they were, for [`Chain::weights_on_chain`].
    last_weights: std::sync::Mutex<Option<(u64, weights::SentWeights)>>,
}

fn account(hotkey: &Hotkey) -> Result<AccountId32, ChainError> {
    let (public, _) = ss58::decode(hotkey.as_str()).map_err(|e| {
        ChainError::InvalidWeights(format!("hotkey {hotkey} is no SS58 address: {e}"))
    })?;
    Ok(AccountId32(public))
}

fn hotkey_of(account: &AccountId32) -> Hotkey {
    Hotkey::parse(&ss58::encode(&account.0, SS58_PREFIX)).expect("an SS58 address is a hotkey")
}

impl SubtensorChain {
    /// Connects to `endpoint` (`ws://` or `wss://`) through a client that reconnects with
    /// backoff when the connection drops, and checks the runtime and the subnet.
    pub async fn connect(
        endpoint: &str,
        settings: SubtensorSettings,
        signer: Arc<Sr25519Signer>,
    ) -> Result<Self, ChainError> {
        use subxt::rpcs::client::{ReconnectingRpcClient, RpcClient};
        let rpc = bounded(
            &format!("connecting to {endpoint}"),
            settings.rpc_timeout,
            ReconnectingRpcClient::builder().build(endpoint.to_string()),
        )
        .await?;
        Self::from_rpc(RpcClient::new(rpc), settings, signer).await
    }

    /// Over any RPC client (the tests' mock one included).
    pub async fn from_rpc(
        rpc: subxt::rpcs::RpcClient,
        settings: SubtensorSettings,
        signer: Arc<Sr25519Signer>,
    ) -> Result<Self, ChainError> {
        let t = settings.rpc_timeout;
        // The legacy backend (chain_*, state_*, author_* methods), chosen explicitly: every
        // read here is at a block hash we name (the best block, `chain_getBlockHash`), which
        // the new-style chainHead_v1 backend only serves for blocks its follow subscription
        // has pinned, and nonces come from the pool (`system_accountNextIndex`). Subtensor
        // nodes serve both; subxt's default would switch to chainHead_v1 when offered.
        let client = bounded("starting the chain client", t, async {
            let backend = subxt::backend::LegacyBackend::builder().build(rpc.clone());
            Client::from_backend(std::sync::Arc::new(backend)).await
        })
        .await?;
        // The runtime's slot is the block time (a local fast-block subtensor: 250 ms): the
        // reveal round and the head's staleness follow it.
        let mut settings = settings;
        let first = bounded("reading the head block", t, client.at_current_block()).await?;
        match slot_duration(&first, t).await {
            Ok(slot) => settings.block_time = slot,
            Err(e) => tracing::warn!(
                error = %e,
                assumed = ?settings.block_time,
                "the runtime's slot duration is unreadable; assuming the configured block time"
            ),
        }
        // A head older than a few blocks is not trusted; the subscription is replaced then.
        let head = HeadFollower::spawn(client.clone(), settings.block_time * 4);
        let chain = Self {
            client,
            rpc,
            next_nonce: tokio::sync::Mutex::new(None),
            settings,
            signer,
            head,
            highest: AtomicU64::new(0),
            last_weights: std::sync::Mutex::new(None),
        };
        let at = chain.at_head().await?;
        client::check_runtime(&at)?;
        let exists = chain
            .fetch(
                &at,
                "NetworksAdded",
                runtime::storage().subtensor_module().networks_added(),
                (chain.settings.netuid,),
            )
            .await?;
        if !exists {
            return Err(ChainError::Unsupported(format!(
                "subnet {} does not exist on this chain",
                chain.settings.netuid
            )));
        }
        tracing::info!(
            spec_version = at.spec_version(),
            block = at.block_number(),
            netuid = chain.settings.netuid,
            "connected to subtensor"
        );
        Ok(chain)
    }

    /// How many block subscriptions were opened (more than 1: it dropped and was re-opened).
    pub fn head_subscriptions(&self) -> u64 {
        self.head.subscriptions()
    }

    /// State at the best block, not the finalized one (subxt's current block), which lags
    /// by a few blocks and, when finality stalls, by many: reads, the reveal round and an
    /// extrinsic's mortality all count from the head.
    async fn at_head(&self) -> Result<AtBlock, ChainError> {
        let t = self.settings.rpc_timeout;
        let best: subxt::utils::H256 = bounded(
            "reading the best block's hash",
            t,
            self.rpc
                .request("chain_getBlockHash", subxt::rpcs::rpc_params![]),
        )
        .await?;
        bounded(
            "reading the head block",
            t,
            self.client
                .at_block(subxt::backend::BlockRef::from_hash(best)),
        )
        .await
    }

    async fn fetch<Addr>(
        &self,
        at: &AtBlock,
        what: &str,
        address: Addr,
        keys: Addr::KeyParts,
    ) -> Result<Addr::Value, ChainError>
    where
        Addr: subxt::storage::Address,
    {
        let value = bounded(
            what,
            self.settings.rpc_timeout,
            at.storage().fetch(ShapeChecked(address), keys),
        )
        .await?;
        value.decode().map_err(corrupt(what))
    }

    /// Every entry of the map at `address` under the key prefix `keys`, each turned into a
    /// `T` by `each`; opening the iteration and each step of it within the timeout.
    async fn each_entry<'at, Addr, Keys, T>(
        &self,
        at: &'at AtBlock,
        what: &str,
        address: Addr,
        keys: Keys,
        mut each: impl FnMut(StorageKeyValue<'at, ShapeChecked<Addr>>) -> Result<T, ChainError>,
    ) -> Result<Vec<T>, ChainError>
    where
        Addr: subxt::storage::Address,
        Keys: subxt::storage::PrefixOf<Addr::KeyParts>,
    {
        let t = self.settings.rpc_timeout;
        let mut entries = bounded(what, t, at.storage().iter(ShapeChecked(address), keys)).await?;
        let mut out = Vec::new();
        while let Some(entry) =
            tokio::time::timeout(t, entries.next())
                .await
                .map_err(|_| ChainError::Timeout {
                    what: what.into(),
                    after: t,
                })?
        {
            let entry = entry.map_err(|e| ChainError::Rpc(format!("{what}: {e}")))?;
            out.push(each(entry)?);
        }
        Ok(out)
    }

    /// A map entry that may be absent (`None`), read and decoded within the timeout.
    async fn try_fetch<Addr>(
        &self,
        at: &AtBlock,
        what: &str,
        address: Addr,
        keys: Addr::KeyParts,
    ) -> Result<Option<Addr::Value>, ChainError>
    where
        Addr: subxt::storage::Address,
    {
        let value = bounded(
            what,
            self.settings.rpc_timeout,
            at.storage().try_fetch(ShapeChecked(address), keys),
        )
        .await?;
        value.map(|v| v.decode()).transpose().map_err(corrupt(what))
    }

    fn own(&self, hotkey: &Hotkey) -> Result<AccountId32, ChainError> {
        if hotkey != self.signer.hotkey() {
            return Err(ChainError::Unsupported(format!(
                "this node signs as {}, not {hotkey}",
                self.signer.hotkey()
            )));
        }
        Ok(AccountId32(self.signer.public()))
    }

    async fn uid_of(&self, at: &AtBlock, account: &AccountId32) -> Result<Option<u16>, ChainError> {
        let address = runtime::storage().subtensor_module().uids();
        self.try_fetch(at, "Uids", address, (self.settings.netuid, *account))
            .await
    }

    /// Sign at the best block with the next nonce: the pool's (`system_accountNextIndex`,
    /// which counts extrinsics still waiting in it), or one past our own last extrinsic when
    /// the pool does not count that one yet.
    async fn submit(&self, call: impl subxt::transactions::Payload) -> Result<(), ChainError> {
        let mut next = self.next_nonce.lock().await;
        let at = self.at_head().await?;
        let address = self.signer.hotkey().to_string();
        let pool: u64 = bounded(
            "reading the account's next nonce",
            self.settings.rpc_timeout,
            self.rpc
                .request("system_accountNextIndex", subxt::rpcs::rpc_params![address]),
        )
        .await?;
        let nonce = next.map_or(pool, |ours| ours.max(pool));
        let sent = extrinsic::submit(&at, call, &self.signer, &self.settings, nonce).await;
        // In a block, the nonce is used whatever the dispatch did; otherwise the pool's count
        // stays the authority (it still counts an extrinsic that waits in it).
        if sent.in_block {
            *next = Some(nonce + 1);
        }
        sent.result
    }

    /// The subnet's epoch state for the reveal round: the stateful epoch model where the
    /// runtime has it (`LastEpochBlock` etc.), else the fixed `tempo + 1` schedule.
    async fn epoch_state(&self, at: &AtBlock) -> Result<EpochState, ChainError> {
        let netuid = self.settings.netuid;
        let sm = runtime::storage().subtensor_module();
        let tempo = self.fetch(at, "Tempo", sm.tempo(), (netuid,)).await?;
        let blocks_since_last_step = self
            .fetch(
                at,
                "BlocksSinceLastStep",
                sm.blocks_since_last_step(),
                (netuid,),
            )
            .await?;
        let current_block = at.block_number();
        let has_epoch_model = at
            .metadata_ref()
            .pallet_by_name("SubtensorModule")
            .and_then(|p| p.storage())
            .is_some_and(|s| s.entry_by_name("LastEpochBlock").is_some());
        if has_epoch_model {
            let read = async |name: &str| -> Result<u64, ChainError> {
                let address =
                    subxt::dynamic::storage::<(u16,), u64>("SubtensorModule", name.to_string());
                self.fetch(at, name, address, (netuid,)).await
            };
            return Ok(EpochState {
                current_block,
                tempo,
                last_epoch_block: read("LastEpochBlock").await?,
                pending_epoch_at: read("PendingEpochAt").await?,
                subnet_epoch_index: read("SubnetEpochIndex").await?,
                blocks_since_last_step,
            });
        }
        Ok(EpochState::fixed_schedule(
            current_block,
            tempo,
            netuid,
            blocks_since_last_step,
        ))
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[async_trait::async_trait]
impl Chain for SubtensorChain {
    fn block_interval(&self) -> Duration {
        self.settings.block_time
    }

    async fn current_block(&self) -> Result<u64, ChainError> {
        let block = match self.head.latest(self.settings.block_time * 2) {
            Some(block) => block,
            None => self.at_head().await?.block_number(),
        };
        Ok(self.highest.fetch_max(block, Ordering::AcqRel).max(block))
    }

    /// Registration costs TAO and is done with btcli; this only finds the uid.
    async fn register(
        &self,
        hotkey: &Hotkey,
        _request: RegisterRequest,
    ) -> Result<u16, ChainError> {
        let at = self.at_head().await?;
        self.uid_of(&at, &account(hotkey)?)
            .await?
            .ok_or_else(|| ChainError::NotRegistered(hotkey.clone()))
    }

    async fn metagraph(&self) -> Result<Metagraph, ChainError> {
        self.read_metagraph().await
    }

    /// Writes the commitment only when it differs from what the chain holds (each write
    /// costs and is rate-limited per epoch).
    async fn commit(&self, hotkey: &Hotkey, commitment: &Commitment) -> Result<(), ChainError> {
        let me = self.own(hotkey)?;
        let raw =
            commitment::to_raw(commitment).map_err(|e| ChainError::Unsupported(e.to_string()))?;
        let at = self.at_head().await?;
        if self.raw_commitment(&at, &me).await?.as_deref() == Some(raw.as_slice()) {
            tracing::debug!("commitment unchanged; not written again");
            return Ok(());
        }
        let call = calls::set_commitment(self.settings.netuid, &raw)
            .map_err(|e| ChainError::Unsupported(e.to_string()))?;
        self.submit(call).await
    }

    async fn commitment(&self, uid: u16) -> Result<Option<Commitment>, ChainError> {
        self.read_commitment(uid).await
    }

    async fn commitments(&self) -> Result<BTreeMap<u16, Commitment>, ChainError> {
        self.read_commitments().await
    }

    async fn set_weights(&self, hotkey: &Hotkey, weights: &[(u16, f64)]) -> Result<(), ChainError> {
        self.send_weights(hotkey, weights).await
    }

    async fn weights_on_chain(
        &self,
        hotkey: &Hotkey,
    ) -> Result<Option<templar_protocol::chain::weights::WeightsOnChain>, ChainError> {
        self.weights_report(hotkey).await
    }

    async fn weights_rate_limit(&self) -> Result<u64, ChainError> {
        let at = self.at_head().await?;
        let address = runtime::storage()
            .subtensor_module()
            .weights_set_rate_limit();
        self.fetch(&at, "WeightsSetRateLimit", address, (self.settings.netuid,))
            .await
    }
}

/// Maps a decoding error of storage entry `key` to [`ChainError::Corrupt`].
fn corrupt<E: std::fmt::Display>(key: &str) -> impl FnOnce(E) -> ChainError + '_ {
    move |e| ChainError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    }
}
