//! The incentive-integrity scenario: a signed local network of honest miners and one miner
//! of each attack ([`Behaviour::adversaries`]), run in lockstep next to the same network
//! without the cheaters. What the validator's weights and the held-out loss do is the
//! evidence that honest training pays best. Used by the adversarial test and
//! `templar-node bench integrity`.

use super::behaviour::{Behaviour, Cheat};
use super::local::LocalNetwork;
use crate::data::Pages;
use crate::hparams::Hparams;
use crate::roles::NodeError;
use crate::roles::miner::Miner;
use crate::roles::scoring::weights_from_scores;
use crate::train::{eval_loss, eval_pages};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The scenario's settings from a network's: short windows (4 inner steps, an assignment of
/// as many pages as they train on) and tight upload bounds (0.4 s grace and skew: one machine, one clock), so a run takes minutes on a CPU.
pub fn scenario_hparams(mut hp: Hparams) -> Hparams {
    hp.sparseloco.inner_steps = 4;
    // A miner's assignment is exactly its window's work, so that weight can follow work.
    hp.data.pages_per_window = hp.sparseloco.inner_steps * hp.data.batch_size as u64;
    hp.network.blocks_per_window = 5;
    hp.network.upload_grace_ms = 400;
    hp.network.clock_skew_ms = 400;
    hp
}

/// One miner at the end of a run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MinerOutcome {
    pub uid: u16,
    pub behaviour: String,
    pub weight: f64,
    pub score: f64,
    pub own_beats_random: f64,
    /// On the top validator's exclusion list after the last window.
    pub excluded: bool,
}

/// A run of one network: its miners at the end, every window's weights, and the held-out
/// loss before the first window and after each. The validator's secrets come from the data
/// seed and miners' noise from torch's seeded generator, so a seed replays the same run.
#[derive(Debug, Clone)]
pub struct NetworkRun {
    pub miners: Vec<MinerOutcome>,
    pub weights: Vec<Vec<(u16, f64)>>,
    pub held_out_loss: Vec<f64>,
    /// The largest parameter difference between the validator's model and any miner's at the
    /// end: every node admits the same payloads, so all stay equal.
    pub max_model_difference: f64,
    /// Honest payloads scored as copies (any kind, echoes too), over all windows: the copy
    /// checks' false positives.
    pub honest_copy_flags: usize,
    /// The largest share of an honest payload's coordinates in blocks that earlier uploads
    /// repeated (a blend is flagged at `network.copy_overlap`).
    pub max_honest_coverage: f64,
}

/// Run `windows` windows of a network with `honest` honest miners (uids 1..) and one miner
/// per entry of `adversaries` after them, and a validator (uid 0), in a fresh folder under
/// `root`. Every node signs its payloads with its own sr25519 key.
pub async fn run_network(
    root: &Path,
    hp: &Hparams,
    pages: &Pages,
    honest: u16,
    adversaries: &[Behaviour],
    windows: u64,
) -> Result<NetworkRun, NodeError> {
    let mut net = LocalNetwork::new(root, hp.clone(), pages.clone()).await?;
    net.signed = true;
    // Fixed validator secrets: a seed replays exactly.
    let seed = hp.data.seed;
    let mut validator = net
        .validator("validator", 0)
        .await?
        .with_secrets(seed ^ 0x5eed_e7a1, seed ^ 0x5eed_9a9e);
    let behaviours = (0..honest)
        .map(|_| Behaviour::Honest)
        .chain(adversaries.iter().copied());
    let mut miners: Vec<Miner> = Vec::new();
    for (i, b) in behaviours.enumerate() {
        let uid = i as u16 + 1;
        let miner = net.miner(&format!("miner-{uid}"), uid).await?;
        miners.push(match b {
            Behaviour::Honest => miner,
            b => miner.with_hook(Box::new(Cheat::new(b))),
        });
    }
    let held_out = eval_pages(hp, pages);
    let loss =
        |v: &crate::roles::validator::Validator| eval_loss(&v.engine.model, pages, &held_out);
    let mut held_out_loss = vec![loss(&validator)];
    let mut weights = Vec::new();
    let t = hp.network.softmax_temperature;
    let is_honest = |uid: u16| (1..=honest).contains(&uid);
    let (mut honest_copy_flags, mut max_honest_coverage) = (0, 0.0f64);
    for w in 0..windows {
        let mut refs: Vec<&mut Miner> = miners.iter_mut().collect();
        net.window(w, &mut refs, &mut validator).await?;
        weights.push(weights_from_scores(&validator.state.scores, t));
        held_out_loss.push(loss(&validator));
        let decision = &validator.last_decision;
        honest_copy_flags += decision
            .scored_copies()
            .into_iter()
            .filter(|u| is_honest(*u))
            .count();
        // A copied payload is covered by its copy (a framer's back-dated one counts as
        // earlier): the figure is how close independent honest work comes to a blend.
        let copied = |uid: u16| decision.pairs.iter().any(|p| p.a == uid || p.b == uid);
        for (uid, coverage) in &decision.coverage {
            if is_honest(*uid) && !copied(*uid) {
                max_honest_coverage = max_honest_coverage.max(*coverage);
            }
        }
    }
    let last = weights.last().cloned().unwrap_or_default();
    let after = hp.network.exclude_after;
    let outcomes = miners
        .iter()
        .map(|m| {
            let uid = m.ctx.uid;
            let s = validator
                .state
                .scores
                .get(&uid)
                .cloned()
                .unwrap_or_default();
            MinerOutcome {
                uid,
                behaviour: m.behaviour_name(),
                weight: last.iter().find(|(u, _)| *u == uid).map_or(0.0, |x| x.1),
                score: s.ema,
                own_beats_random: s.own_beats_random,
                excluded: after > 0 && s.consecutive_negative >= after,
            }
        })
        .collect();
    let max_model_difference = miners
        .iter()
        .map(|m| m.engine.max_param_diff(&validator.engine))
        .fold(0.0, f64::max);
    Ok(NetworkRun {
        miners: outcomes,
        weights,
        held_out_loss,
        max_model_difference,
        honest_copy_flags,
        max_honest_coverage,
    })
}

/// `bench integrity`'s figures for one seed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrityReport {
    pub seed: u64,
    pub windows: u64,
    pub honest_miners: u16,
    /// Final weight of each miner with its behaviour.
    pub miners: Vec<MinerOutcome>,
    /// The honest miners' share of the total weight after the last window.
    pub honest_share: f64,
    /// The first window from which on every adversary's weight stayed below every honest
    /// miner's (None: not by the end).
    pub windows_until_honest_lead: Option<u64>,
    pub held_out_loss_with_adversaries: Vec<f64>,
    pub held_out_loss_honest_only: Vec<f64>,
    /// Loss fall with adversaries over the fall without them (1: no harm), each fall from the
    /// first value to the mean of the last three windows.
    pub loss_fall_ratio: f64,
    /// Largest parameter difference between the validator and any miner at the end, with
    /// the adversaries (every node applies the same admission rule).
    pub max_model_difference: f64,
    /// Honest payloads the copy checks flagged, of all honest payloads of both runs: the
    /// checks' false positives.
    pub honest_copy_flags: usize,
    pub honest_payloads: u64,
    /// The largest share of an honest payload in blocks earlier uploads repeated (a blend
    /// is flagged at `network.copy_overlap`).
    pub max_honest_coverage: f64,
    pub seconds: f64,
}

impl IntegrityReport {
    pub fn honest(&self) -> impl Iterator<Item = &MinerOutcome> {
        self.miners.iter().filter(|m| m.behaviour == "honest")
    }

    pub fn adversaries(&self) -> impl Iterator<Item = &MinerOutcome> {
        self.miners.iter().filter(|m| m.behaviour != "honest")
    }

    pub fn summary(&self) -> String {
        let mut out = format!(
            "seed {}: honest share {:.3}, adversaries below every honest miner from window {:?}, loss fall ratio {:.2}, honest payloads flagged as copies {} of {} (largest repeated-block share {:.2})\n",
            self.seed,
            self.honest_share,
            self.windows_until_honest_lead,
            self.loss_fall_ratio,
            self.honest_copy_flags,
            self.honest_payloads,
            self.max_honest_coverage
        );
        for m in &self.miners {
            out += &format!(
                "  uid {:>2} {:<16} weight {:.4} score {:+.5} own>random {:+.2}{}\n",
                m.uid,
                m.behaviour,
                m.weight,
                m.score,
                m.own_beats_random,
                if m.excluded { " (excluded)" } else { "" }
            );
        }
        out
    }
}

/// The scenario with `data.seed = seed`: `honest` honest miners with and without the
/// `adversaries` (one miner each; [`Behaviour::adversaries`] has one of each attack),
/// `windows` windows each, in folders under `root`.
pub async fn integrity_report(
    root: &Path,
    hp: &Hparams,
    pages: &Pages,
    seed: u64,
    honest: u16,
    adversaries: &[Behaviour],
    windows: u64,
) -> Result<IntegrityReport, NodeError> {
    let started = Instant::now();
    let mut hp = hp.clone();
    hp.data.seed = seed;
    let with = run_network(
        &root.join(format!("with-{seed}")),
        &hp,
        pages,
        honest,
        adversaries,
        windows,
    )
    .await?;
    let without = run_network(
        &root.join(format!("without-{seed}")),
        &hp,
        pages,
        honest,
        &[],
        windows,
    )
    .await?;
    let honest_uids: Vec<u16> = (1..=honest).collect();
    let is_honest = |uid: &u16| honest_uids.contains(uid);
    let lead = |weights: &[(u16, f64)]| {
        let min_honest = weights
            .iter()
            .filter(|(u, _)| is_honest(u))
            .map(|x| x.1)
            .fold(f64::INFINITY, f64::min);
        let max_adversary = weights
            .iter()
            .filter(|(u, _)| !is_honest(u))
            .map(|x| x.1)
            .fold(0.0, f64::max);
        min_honest > max_adversary
    };
    let windows_until_honest_lead = (0..=with.weights.len())
        .find(|&k| k < with.weights.len() && with.weights[k..].iter().all(|w| lead(w)))
        .map(|k| k as u64);
    let total: f64 = with.miners.iter().map(|m| m.weight).sum();
    let honest_weight: f64 = with
        .miners
        .iter()
        .filter(|m| is_honest(&m.uid))
        .map(|m| m.weight)
        .sum();
    // The curve swings by about 0.1 from window to window: the end is the mean of the last
    // three windows.
    let fall = |curve: &[f64]| {
        let tail = &curve[curve.len().saturating_sub(3).max(1)..];
        curve[0] - tail.iter().sum::<f64>() / tail.len() as f64
    };
    Ok(IntegrityReport {
        seed,
        windows,
        honest_miners: honest,
        miners: with.miners,
        honest_share: if total > 0.0 {
            honest_weight / total
        } else {
            0.0
        },
        windows_until_honest_lead,
        loss_fall_ratio: fall(&with.held_out_loss) / fall(&without.held_out_loss),
        max_model_difference: with.max_model_difference,
        honest_copy_flags: with.honest_copy_flags + without.honest_copy_flags,
        honest_payloads: 2 * u64::from(honest) * windows,
        max_honest_coverage: with.max_honest_coverage.max(without.max_honest_coverage),
        held_out_loss_with_adversaries: with.held_out_loss,
        held_out_loss_honest_only: without.held_out_loss,
        seconds: started.elapsed().as_secs_f64(),
    })
}
