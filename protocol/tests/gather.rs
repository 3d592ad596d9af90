//! Gathering a window without torch: peers found through the devnet chain's commitments,
//! each payload fetched from its owner's bucket and validated, or left out with a reason.

mod common;

use common::{codec, payload_by};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use templar_protocol::Hotkey;
use templar_protocol::chain::devnet::{self, DevnetChain, Genesis};
use templar_protocol::chain::{
    Chain, ChainError, Commitment, ManualClock, Metagraph, RegisterRequest,
};
use templar_protocol::hparams::Hparams;
use templar_protocol::network::{NodeContext, PeerList, SkipReason, gather};
use templar_protocol::node_status::NodeStatus;
use templar_protocol::payload::{PayloadError, PayloadValidator};
use templar_protocol::storage::ObjectStore;
use templar_protocol::storage::fs::FsStore;

struct Network {
    root: tempfile::TempDir,
    chain: Arc<DevnetChain>,
}

impl Network {
    async fn new() -> Network {
        let root = tempfile::tempdir().unwrap();
        let chain_store: Arc<dyn ObjectStore> = Arc::new(FsStore::new(root.path().join("chain")));
        let genesis = Genesis {
            genesis_unix_ms: 1_000,
            block_time_ms: 1_000,
            min_validator_stake: devnet::MIN_VALIDATOR_STAKE,
            weights_rate_limit_blocks: 0,
        };
        DevnetChain::init(chain_store.as_ref(), genesis)
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(100)));
        let chain = Arc::new(
            DevnetChain::open(chain_store, clock)
                .await
                .unwrap()
                .with_claim_settle(Duration::ZERO),
        );
        Network { root, chain }
    }

    /// Register `name` at `uid`; with `commit`, its bucket is a folder under the root.
    async fn node(&self, name: &str, uid: u16, stake: f64, commit: bool) -> Arc<dyn ObjectStore> {
        let hotkey = Hotkey::parse(name).unwrap();
        let request = RegisterRequest {
            stake,
            uid: Some(uid),
        };
        self.chain.register(&hotkey, request).await.unwrap();
        let bucket = format!("bucket-{name}");
        if commit {
            let commitment = Commitment {
                endpoint: format!("file://{}", self.root.path().display()),
                region: "auto".into(),
                bucket: bucket.clone(),
                access_key_id: String::new(),
                secret_access_key: String::new(),
            };
            self.chain.commit(&hotkey, &commitment).await.unwrap();
        }
        Arc::new(FsStore::new(self.root.path().join(bucket)))
    }

    async fn context(&self, name: &str, uid: u16) -> NodeContext {
        self.context_on(name, uid, self.chain.clone()).await
    }

    /// A node's context over `chain` (the devnet chain, or a wrapper of it).
    async fn context_on(&self, name: &str, uid: u16, chain: Arc<dyn Chain>) -> NodeContext {
        let own = self.node(name, uid, devnet::VALIDATOR_STAKE, true).await;
        let hotkey = Hotkey::parse(name).unwrap();
        NodeContext::new(
            Hparams::default(),
            chain,
            own,
            hotkey,
            uid,
            NodeStatus::default(),
        )
    }
}

#[tokio::test]
async fn each_peer_is_gathered_or_skipped_with_its_reason() {
    let net = Network::new().await;
    let ctx = net.context("validator", 0).await;
    let spec = codec(2);
    let validator = PayloadValidator::new(&spec);
    let w = 5;
    let key = |uid| ctx.keys.gradient(w, uid);

    let honest = net.node("honest", 1, 0.0, true).await;
    let (expected, bytes) = payload_by(&spec, w, 1, "honest");
    honest.put(&key(1), bytes).await.unwrap();
    // Last window's payload uploaded again under this window's key.
    let stale = net.node("stale", 2, 0.0, true).await;
    stale
        .put(&key(2), payload_by(&spec, w - 1, 2, "stale").1)
        .await
        .unwrap();
    // A well-formed payload for its own slot that names another node's hotkey.
    let impostor = net.node("impostor", 5, 0.0, true).await;
    impostor
        .put(&key(5), payload_by(&spec, w, 5, "honest").1)
        .await
        .unwrap();
    // Registered and committed, uploads nothing.
    net.node("absent", 3, 0.0, true).await;
    let garbage = net.node("garbage", 4, 0.0, true).await;
    garbage
        .put(&key(4), b"not a payload".to_vec())
        .await
        .unwrap();
    // Registered without a commitment: no bucket to read.
    net.node("silent", 9, 0.0, false).await;

    // Listed twice and out of order: gathered once, merged in uid order. Uid 42 is on the
    // list but not on the chain.
    let peers = [42, 9, 5, 4, 3, 2, 1, 1];
    let (ok, skipped) = gather(&ctx, &validator, w, &peers, None).await;
    assert_eq!(ok.len(), 1);
    assert_eq!((ok[0].uid, &ok[0].payload), (1, &expected));
    let reasons: Vec<(u16, &SkipReason)> = skipped.iter().map(|s| (s.uid, &s.reason)).collect();
    assert_eq!(reasons.len(), 6, "{reasons:?}");
    assert!(
        matches!(reasons[3], (5, SkipReason::WrongHotkey { named, holder })
            if named.as_str() == "honest" && holder.as_str() == "impostor"),
        "{reasons:?}"
    );
    assert_eq!(reasons[5], (42, &SkipReason::NotRegistered));
    assert!(
        matches!(
            reasons[0],
            (2, SkipReason::Invalid(PayloadError::WrongSlot { .. }))
        ),
        "{reasons:?}"
    );
    assert_eq!(reasons[1], (3, &SkipReason::Missing));
    assert!(
        matches!(
            reasons[2],
            (4, SkipReason::Invalid(PayloadError::Malformed(_)))
        ),
        "{reasons:?}"
    );
    assert_eq!(reasons[4], (9, &SkipReason::NoCommitment));
    // Rendered to text for /status only.
    assert_eq!(
        skipped[3].to_status().reason,
        "payload names hotkey honest, but the uid is held by impostor"
    );
}

#[tokio::test]
async fn uploads_outside_the_window_bounds_are_too_early_or_too_late() {
    let net = Network::new().await;
    let ctx = net.context("validator", 0).await;
    let spec = codec(8);
    let validator = PayloadValidator::new(&spec);
    let miner = net.node("miner", 1, 0.0, true).await;
    miner
        .put(&ctx.keys.gradient(3, 1), payload_by(&spec, 3, 1, "miner").1)
        .await
        .unwrap();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let cases = [
        (
            Some((now + hour, now + 2 * hour)),
            Some(SkipReason::TooEarly),
        ),
        (
            Some((now - 2 * hour, now - hour)),
            Some(SkipReason::TooLate),
        ),
        (Some((now - hour, now + hour)), None),
        (None, None),
    ];
    for (range, reason) in cases {
        let (ok, skipped) = gather(&ctx, &validator, 3, &[1], range).await;
        match reason {
            Some(r) => {
                assert!(ok.is_empty());
                assert_eq!(skipped[0].reason, r);
            }
            None => assert_eq!((ok.len(), skipped.len()), (1, 0), "{skipped:?}"),
        }
    }
}

/// The devnet chain, counting the reads of commitments made through it.
struct CountingChain {
    inner: Arc<DevnetChain>,
    commitment_reads: AtomicUsize,
}

#[async_trait::async_trait]
impl Chain for CountingChain {
    fn block_interval(&self) -> Duration {
        // Longer than the test: one read serves every peer of it.
        Duration::from_secs(600)
    }
    async fn current_block(&self) -> Result<u64, ChainError> {
        self.inner.current_block().await
    }
    async fn register(&self, hotkey: &Hotkey, request: RegisterRequest) -> Result<u16, ChainError> {
        self.inner.register(hotkey, request).await
    }
    async fn metagraph(&self) -> Result<Metagraph, ChainError> {
        self.inner.metagraph().await
    }
    async fn commit(&self, hotkey: &Hotkey, commitment: &Commitment) -> Result<(), ChainError> {
        self.inner.commit(hotkey, commitment).await
    }
    async fn commitment(&self, uid: u16) -> Result<Option<Commitment>, ChainError> {
        self.commitment_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.commitment(uid).await
    }
    async fn commitments(&self) -> Result<BTreeMap<u16, Commitment>, ChainError> {
        self.commitment_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.commitments().await
    }
    async fn set_weights(&self, hotkey: &Hotkey, weights: &[(u16, f64)]) -> Result<(), ChainError> {
        self.inner.set_weights(hotkey, weights).await
    }
    async fn weights_rate_limit(&self) -> Result<u64, ChainError> {
        self.inner.weights_rate_limit().await
    }
}

/// A window's peers, the committed miners and every peer's bucket come from one read of
/// all commitments (one storage iteration on subtensor), not one chain read per peer.
#[tokio::test]
async fn a_gather_reads_every_peers_commitment_in_one_chain_read() {
    let net = Network::new().await;
    let chain = Arc::new(CountingChain {
        inner: net.chain.clone(),
        commitment_reads: AtomicUsize::new(0),
    });
    let ctx = net.context_on("validator", 0, chain.clone()).await;
    let spec = codec(2);
    let w = 5;
    let peers: Vec<u16> = (1..=8).collect();
    for uid in &peers {
        let name = format!("m{uid}");
        let store = net.node(&name, *uid, 0.0, true).await;
        let bytes = payload_by(&spec, w, *uid, &name).1;
        store.put(&ctx.keys.gradient(w, *uid), bytes).await.unwrap();
    }
    let listed = ctx.peers_for(w).await.unwrap().miners;
    assert_eq!(listed, peers);
    let (ok, skipped) = gather(&ctx, &PayloadValidator::new(&spec), w, &listed, None).await;
    assert_eq!((ok.len(), skipped.len()), (8, 0), "{skipped:?}");
    assert_eq!(chain.commitment_reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_peer_list_comes_from_the_top_validator_or_the_committed_miners() {
    let net = Network::new().await;
    let ctx = net.context("validator", 0).await;
    net.node("m1", 1, 0.0, true).await;
    net.node("m2", 2, 0.0, true).await;
    net.node("uncommitted", 3, 0.0, false).await;
    // Nothing published: the registered miners with a commitment.
    assert_eq!(ctx.peers_for(8).await.unwrap().miners, vec![1, 2]);
    // Published by the top validator (this node): that list.
    ctx.own_store
        .put(&ctx.keys.peers(8), b"[2]".to_vec())
        .await
        .unwrap();
    assert_eq!(
        ctx.peers_for(8).await.unwrap(),
        PeerList {
            miners: vec![2],
            excluded: vec![]
        },
        "the plain uid array of earlier versions"
    );
    let list = PeerList {
        miners: vec![1, 2],
        excluded: vec![2],
    };
    ctx.own_store
        .put(&ctx.keys.peers(10), serde_json::to_vec(&list).unwrap())
        .await
        .unwrap();
    let read = ctx.peers_for(10).await.unwrap();
    assert_eq!(read, list);
    assert!(read.is_excluded(2) && !read.is_excluded(1));
    // Unreadable list: back to the committed miners.
    ctx.own_store
        .put(&ctx.keys.peers(9), b"{not json".to_vec())
        .await
        .unwrap();
    assert_eq!(ctx.peers_for(9).await.unwrap().miners, vec![1, 2]);
}

/// Fifty peers whose S3 endpoint accepts connections and never answers: downloads run
/// `FETCH_FAN_OUT` at a time, each ends at the peer timeout, and the whole gather ends at its
/// deadline (three peer timeouts) with the peers not reached skipped for that reason.
#[tokio::test]
async fn a_long_list_of_silent_peers_is_bounded_by_fan_out_and_one_deadline() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let net = Network::new().await;
    let mut ctx = net.context("validator", 0).await;
    ctx.peer_timeout = Duration::from_millis(300);
    let peers: Vec<u16> = (1..=50).collect();
    for &uid in &peers {
        let hotkey = Hotkey::parse(&format!("silent-{uid}")).unwrap();
        let request = RegisterRequest {
            stake: 0.0,
            uid: Some(uid),
        };
        net.chain.register(&hotkey, request).await.unwrap();
        let commitment = Commitment {
            endpoint: format!("http://127.0.0.1:{port}"),
            region: "garage".into(),
            bucket: format!("b{uid}"),
            access_key_id: "GK0123456789abcdef01234567".into(),
            secret_access_key: "0".repeat(64),
        };
        net.chain.commit(&hotkey, &commitment).await.unwrap();
    }
    let spec = codec(2);
    let validator = PayloadValidator::new(&spec);
    let started = std::time::Instant::now();
    let (ok, skipped) = gather(&ctx, &validator, 3, &peers, None).await;
    let took = started.elapsed();
    assert!(ok.is_empty());
    assert_eq!(skipped.len(), 50);
    assert!(
        took < Duration::from_millis(300 * 3 + 2000),
        "the gather took {took:?}"
    );
    let late = skipped
        .iter()
        .filter(|s| s.reason == SkipReason::DeadlinePassed)
        .count();
    // 50 peers at 16 a time need 4 rounds of 300 ms; the deadline allows 3.
    assert!(late >= 2, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .any(|s| matches!(s.reason, SkipReason::TimedOut(_)))
    );
}
