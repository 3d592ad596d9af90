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
        println!(
            "own uid {uid}; commitment {:?}",
            chain.commitment(uid).await.unwrap()
        );
    }
}
