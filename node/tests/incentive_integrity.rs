//! Honest training pays best: a signed local network of four honest miners and one miner of
//! each attack (absent, free-rider, noise, copier, amplifier, stale, wrong data, late,
//! poisoner, impersonator), next to the same network without them, for two data seeds; and
//! free-riders in numbers (3 of 7 miners) cannot halt training.

use templar_node::data::{Pages, embedded_tokens};
use templar_node::hparams::Hparams;
use templar_node::roles::sim::behaviour::Behaviour;
use templar_node::roles::sim::integrity::{integrity_report, scenario_hparams};

const HONEST: u16 = 4;
const WINDOWS: u64 = 20;

fn hparams() -> Hparams {
    // The runtime value: a target dir shared between checkouts may hold a build made
    // elsewhere.
    let path = format!(
        "{}/../hparams/tiny-sparseloco.toml",
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
    );
    scenario_hparams(Hparams::load(std::path::Path::new(&path)).unwrap())
}

async fn every_honest_miner_outearns_every_cheater(seed: u64) {
    let hp = hparams();
    let pages = Pages::new(embedded_tokens().unwrap(), hp.data.seq_len).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let adversaries = Behaviour::adversaries(1);
    let r = integrity_report(dir.path(), &hp, &pages, seed, HONEST, &adversaries, WINDOWS)
        .await
        .unwrap();
    let summary = r.summary();
    assert_eq!(r.honest().count(), HONEST as usize);
    assert_eq!(r.adversaries().count(), 10, "{summary}");
    let min_honest = r.honest().map(|m| m.weight).fold(f64::INFINITY, f64::min);
    for a in r.adversaries() {
        assert!(
            a.weight < min_honest,
            "{} (uid {}) earns {} >= the least honest miner's {min_honest}\n{summary}",
            a.behaviour,
            a.uid,
            a.weight
        );
    }
    let adversaries: f64 = r.adversaries().map(|m| m.weight).sum();
    assert!(
        adversaries < 0.1,
        "adversaries' share {adversaries}\n{summary}"
    );
    assert!(r.windows_until_honest_lead.is_some(), "{summary}");
    // Detected attacks never reach the model: the loss falls nearly as without them.
    assert!(
        r.loss_fall_ratio >= 0.8,
        "loss fell {} as much as without adversaries\nwith {:?}\nwithout {:?}",
        r.loss_fall_ratio,
        r.held_out_loss_with_adversaries,
        r.held_out_loss_honest_only
    );
    // The attacks that are caught in the window leave the aggregation by the end.
    for behaviour in [
        "copier:1",
        "amplifier:30",
        "stale",
        "late",
        "poisoner",
        "impersonator:1",
    ] {
        let m = r.adversaries().find(|m| m.behaviour == behaviour).unwrap();
        assert!(m.excluded, "{behaviour} still aggregated\n{summary}");
    }
    assert!(r.honest().all(|m| !m.excluded), "{summary}");
    // Every node, cheaters included, left the same payloads out: the models are equal.
    assert!(
        r.max_model_difference < 1e-5,
        "models differ by {}",
        r.max_model_difference
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_honest_miner_outearns_every_cheater_seed_1() {
    every_honest_miner_outearns_every_cheater(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_honest_miner_outearns_every_cheater_seed_2() {
    every_honest_miner_outearns_every_cheater(2).await;
}

/// Three free-riders beside four honest miners (43% of the miners send all-zero updates): they
/// are judged as free-riders and never vote, so every honest payload enters the step, the
/// honest miners get the weight and the loss falls as without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_riders_in_numbers_cannot_halt_training() {
    let hp = hparams();
    let pages = Pages::new(embedded_tokens().unwrap(), hp.data.seq_len).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sybils = [Behaviour::FreeRider; 3];
    let r = integrity_report(dir.path(), &hp, &pages, 1, HONEST, &sybils, 12)
        .await
        .unwrap();
    let summary = r.summary();
    assert!(r.honest_share >= 0.9, "{summary}");
    let min_honest = r.honest().map(|m| m.weight).fold(f64::INFINITY, f64::min);
    assert!(min_honest > 0.0, "{summary}");
    assert!(r.adversaries().all(|a| a.weight < min_honest), "{summary}");
    assert!(r.honest().all(|m| !m.excluded), "{summary}");
    assert!(
        r.loss_fall_ratio >= 0.9,
        "loss fell {} as much as without free-riders\nwith {:?}\nwithout {:?}",
        r.loss_fall_ratio,
        r.held_out_loss_with_adversaries,
        r.held_out_loss_honest_only
    );
    assert!(r.max_model_difference < 1e-5, "{summary}");
}
