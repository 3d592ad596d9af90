//! Against a live subtensor, only when `TEMPLAR_SUBTENSOR_URL` is set (finney, testnet or a
//! local node): `cargo test -p templar-subtensor --test live_subtensor -- --ignored`.
//! `TEMPLAR_SUBTENSOR_NETUID` (default 3) and, for the weights and commitment calls, a hotkey
//! file in `TEMPLAR_SUBTENSOR_HOTKEY` registered on that subnet.

use std::sync::Arc;

use templar_protocol::chain::Chain;
use templar_protocol::identity::sr25519::Sr25519Signer;
use templar_protocol::identity::{Signer, wallet::load_hotkey};
use templar_subtensor::chain::{SubtensorChain, SubtensorSettings};

#[tokio::test]
#[ignore = "needs a live subtensor: set TEMPLAR_SUBTENSOR_URL"]
async fn live_subtensor_head_metagraph_and_own_uid() {
    let Ok(url) = std::env::var("TEMPLAR_SUBTENSOR_URL") else {
        eprintln!("TEMPLAR_SUBTENSOR_URL is not set; nothing to check");
        return;
    };
    let netuid = std::env::var("TEMPLAR_SUBTENSOR_NETUID")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let signer = match std::env::var("TEMPLAR_SUBTENSOR_HOTKEY") {
        Ok(path) => load_hotkey(path.as_ref()).unwrap(),
        Err(_) => Sr25519Signer::from_seed(&[1; 32]).unwrap(),
    };
    let signer = Arc::new(signer);
    let chain = SubtensorChain::connect(&url, SubtensorSettings::new(netuid), signer.clone())
        .await
        .unwrap();
    let block = chain.current_block().await.unwrap();
    assert!(block > 0);
    let metagraph = chain.metagraph().await.unwrap();
    assert!(!metagraph.neurons.is_empty(), "subnet {netuid} has neurons");
    assert!(metagraph.block >= block);
    println!(
        "block {block}, {} neurons, top validator {:?}",
        metagraph.neurons.len(),
        metagraph.top_validator().map(|n| n.uid)
    );
    if std::env::var("TEMPLAR_SUBTENSOR_HOTKEY").is_ok() {
        let uid = chain
            .register(signer.hotkey(), Default::default())
            .await
            .unwrap();
        let own = chain.commitment(uid).await.unwrap();
        println!("own uid {uid}; commitment {own:?}");
        // The one-iteration read of every commitment agrees with the read by uid.
        let all = chain.commitments().await.unwrap();
        assert_eq!(all.get(&uid), own.as_ref());
    }
}

/// The whole weights path on a live chain: the bucket commitment written and read back, the
/// validator's weights sent (a timelocked commit where the subnet has commit-reveal on), then
/// waited for until the chain applied them, bounded by the block they were due by. Needs a
/// registered hotkey in `TEMPLAR_SUBTENSOR_HOTKEY`; weights on itself alone need no permit.
/// On a local fast-block subtensor (docs/subtensor.md) it takes about a minute.
#[tokio::test]
#[ignore = "needs a live subtensor and a registered hotkey"]
async fn live_subtensor_commitment_and_weights_apply() {
    use std::time::{Duration, Instant};
    use templar_protocol::chain::Commitment;
    use templar_protocol::chain::weights::WeightsState;
    let (Ok(url), Ok(path)) = (
        std::env::var("TEMPLAR_SUBTENSOR_URL"),
        std::env::var("TEMPLAR_SUBTENSOR_HOTKEY"),
    ) else {
        eprintln!(
            "TEMPLAR_SUBTENSOR_URL and TEMPLAR_SUBTENSOR_HOTKEY are needed; nothing to check"
        );
        return;
    };
    let netuid = std::env::var("TEMPLAR_SUBTENSOR_NETUID")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let signer = Arc::new(load_hotkey(path.as_ref()).unwrap());
    let chain = SubtensorChain::connect(&url, SubtensorSettings::new(netuid), signer.clone())
        .await
        .unwrap();
    let me = signer.hotkey().clone();
    let uid = chain.register(&me, Default::default()).await.unwrap();
    // A commitment in templar's format (an R2 bucket and read key), written and read back.
    let account = "a".repeat(32);
    let commitment = Commitment {
        endpoint: format!("https://{account}.r2.cloudflarestorage.com"),
        region: "auto".into(),
        bucket: account.clone(),
        access_key_id: "k".repeat(32),
        secret_access_key: "s".repeat(64),
    };
    chain.commit(&me, &commitment).await.unwrap();
    assert_eq!(chain.commitment(uid).await.unwrap(), Some(commitment));
    // Weights, then what the chain made of them.
    chain.set_weights(&me, &[(uid, 1.0)]).await.unwrap();
    let first = chain.weights_on_chain(&me).await.unwrap().unwrap();
    println!("sent: {first:?}");
    let head = chain.current_block().await.unwrap();
    let blocks_left = first.due_block.unwrap_or(head).saturating_sub(head) + 5;
    let deadline =
        Instant::now() + chain.block_interval() * blocks_left as u32 + Duration::from_secs(60);
    let report = loop {
        let r = chain.weights_on_chain(&me).await.unwrap().unwrap();
        if r.state != WeightsState::AwaitingReveal || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(chain.block_interval()).await;
    };
    println!("now: {report:?}");
    assert_eq!(report.state, WeightsState::Applied, "{report:?}");
}
