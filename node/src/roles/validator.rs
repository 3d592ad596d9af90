//! The validator: publish the peer list, gather, score each miner by the loss its update
//! removes, keep a moving average, set weights, publish checkpoints.

use super::admission::echo::{Echo, EchoHistory, Sketch, SketchPlan};
use super::admission::{Admission, Decision, Judged};
use super::scoring::{ScoreState, choose_for_eval, score_window, secret_draw, weights_from_scores};
use super::sighting::{DigestWatch, sighted_copies};
use super::sync::{self, SyncTracker};
use super::{NodeError, gather_closed_window};
use crate::checkpoint::CheckpointPointer;
use crate::codec::Selected;
use crate::compute::Compute;
use crate::data::Pages;
use crate::engine::Engine;
use crate::engine::sample_drift;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use templar_protocol::chain::weights::WeightsState;
use templar_protocol::chain::{ChainError, Metagraph};
use templar_protocol::network::{NodeContext, PeerList};
use templar_protocol::node_status::{MinerScore, SkippedPeer};
use templar_protocol::storage::StorageError;
use tokio::task::block_in_place;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidatorState {
    pub scores: BTreeMap<u16, ScoreState>,
    pub last_weights_window: Option<u64>,
    pub last_checkpoint_window: Option<u64>,
    pub last_window: Option<u64>,
}

const STATE_KEY: &str = "state/validator.json";

/// A miner's valid payload of a window as the validator scores it.
struct Submission<'a> {
    uid: u16,
    /// Distance of the model it was trained from to ours.
    drift: f64,
    /// Left out by the admission rule: scores as no valid payload.
    flagged: bool,
    /// Its values, dequantised.
    selected: &'a [Selected],
}

pub struct Validator {
    pub ctx: Arc<NodeContext>,
    pub engine: Engine,
    pub state: ValidatorState,
    /// The block of this process's last weights, for the chain's rate limit.
    last_weights_block: Option<u64>,
    /// The commit block of the unapplied weights last warned about.
    warned_unrevealed: Option<u64>,
    /// Draws the order in which miners are evaluated. Random per process and never stored
    /// (the validator's bucket is readable by peers), so miners cannot predict it.
    eval_secret: u64,
    /// Keys the draw of each evaluation's random pages: per process, never stored.
    random_pages_secret: u64,
    sync: SyncTracker,
    admission: Admission,
    /// Index sketches of the windows in retention, for the echo check.
    echo_history: EchoHistory,
    sketch_plan: SketchPlan,
    /// The running watch of the current window's digest commitments.
    watch: Option<DigestWatch>,
    /// The verdict on the last closed window's payloads.
    pub last_decision: Decision,
}

impl Validator {
    /// A validator, resuming its persisted scores if its bucket has them.
    pub async fn new(
        ctx: Arc<NodeContext>,
        pages: &Pages,
        compute: impl Into<Compute>,
    ) -> Result<Self, NodeError> {
        let engine = Engine::new(&ctx.hp, pages, compute)?;
        let state = match ctx.own_store.get(STATE_KEY, 16 << 20).await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "persisted validator state unreadable; starting fresh");
                ValidatorState::default()
            }),
            Err(StorageError::NotFound { .. }) => ValidatorState::default(),
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            ctx,
            state,
            last_weights_block: None,
            warned_unrevealed: None,
            // RandomState is keyed from the OS random source, fresh for each instance.
            eval_secret: RandomState::new().hash_one(std::process::id()),
            random_pages_secret: RandomState::new().hash_one(std::process::id()),
            sync: SyncTracker::default(),
            admission: Admission::default(),
            echo_history: EchoHistory::default(),
            sketch_plan: SketchPlan::new(&engine.codec.spec.layouts),
            watch: None,
            last_decision: Decision::default(),
            engine,
        })
    }

    /// The same validator with fixed secrets for the evaluation order and the random pages,
    /// so that a scenario replays exactly (tests and benchmarks only: a running validator's
    /// secrets are drawn from the OS and never leave the process).
    pub fn with_secrets(mut self, eval: u64, random_pages: u64) -> Self {
        self.eval_secret = eval;
        self.random_pages_secret = random_pages;
        self
    }

    async fn is_top_validator(&self) -> Result<bool, NodeError> {
        Ok(self.leads(&self.ctx.chain.metagraph().await?))
    }

    /// Whether this validator is `mg`'s top validator.
    fn leads(&self, mg: &Metagraph) -> bool {
        mg.top_validator()
            .is_some_and(|v| v.hotkey == self.ctx.hotkey)
    }

    /// After a (re)start: load the top validator's latest checkpoint (its own, if it is the
    /// top validator) and replay the windows since, so the model continues in step; show the
    /// persisted scores in `/status` from the start.
    pub async fn resume_model(&mut self, current: u64) -> Result<u64, NodeError> {
        let ctx = self.ctx.clone();
        let replayed = sync::catch_up(&ctx, &mut self.engine, current).await?;
        if !self.state.scores.is_empty() {
            let weights =
                weights_from_scores(&self.state.scores, ctx.hp.network.softmax_temperature);
            let sample = block_in_place(|| self.engine.model_sample());
            self.report(0, Vec::new(), &weights, sample);
        }
        Ok(replayed)
    }

    /// Window `w` has begun: publish the miners expected to train in it (top validator).
    pub async fn begin_window(&mut self, w: u64) -> Result<(), NodeError> {
        let ctx = self.ctx.clone();
        ctx.observe_window(w);
        ctx.update_status(|s| s.window = Some(w));
        if let Err(e) = self.sync.check(&ctx).await {
            tracing::warn!(error = %e, "sync check failed");
        }
        let mg = ctx.chain.metagraph().await?;
        let miners = ctx.committed_miners(&mg).await?;
        self.watch_commitments(w, miners.clone());
        if !self.leads(&mg) {
            return Ok(());
        }
        if let Err(StorageError::NotFound { .. }) =
            ctx.own_store.head(&ctx.keys.start_window()).await
        {
            ctx.own_store
                .put(
                    &ctx.keys.start_window(),
                    serde_json::to_vec(&w).expect("json"),
                )
                .await?;
        }
        let after = ctx.hp.network.exclude_after;
        let excluded: Vec<u16> = miners
            .iter()
            .copied()
            .filter(|uid| {
                self.state
                    .scores
                    .get(uid)
                    .is_some_and(|s| after > 0 && s.consecutive_negative >= after)
            })
            .collect();
        if !excluded.is_empty() {
            tracing::info!(
                window = w,
                ?excluded,
                "excluded from aggregation: negative or invalid scores in a row"
            );
        }
        let list = PeerList { miners, excluded };
        ctx.own_store
            .put(&ctx.keys.peers(w), serde_json::to_vec(&list).expect("json"))
            .await?;
        Ok(())
    }

    /// Window `w` has closed: gather, score, step, set weights, checkpoint, persist.
    pub async fn finish_window(&mut self, w: u64) -> Result<(), NodeError> {
        let ctx = self.ctx.clone();
        let gathered = gather_closed_window(&ctx, &self.engine, w).await?;
        // Score on the model as it was before this window's step.
        let mut judged = self.admission.judge(&ctx.hp, &self.engine, w, gathered);
        judged.decision.echoes = self.find_echoes(w, &judged);
        if let Some(watch) = self.watch.take().filter(|watch| watch.window == w) {
            let seen = watch.finish();
            let d = &judged.decision;
            judged.decision.sighted_copies =
                Some(sighted_copies(&d.pairs, &judged.candidates, &seen));
        }
        let ours = block_in_place(|| self.engine.model_sample());
        let flagged = judged.decision.flagged();
        let submissions: Vec<Submission> = judged
            .candidates
            .iter()
            .map(|c| Submission {
                uid: c.uid(),
                drift: sample_drift(&c.peer.payload.meta.model_sample, &ours),
                flagged: flagged.contains(&c.uid()),
                selected: &c.selected,
            })
            .collect();
        self.score(w, &judged.peers.miners, &submissions);
        block_in_place(|| self.engine.apply_selected(&judged.admitted()));
        let sample = block_in_place(|| self.engine.model_sample());
        self.sync.record(w, sample.clone());
        let submitted = judged.candidates.len();
        let skipped = judged.skipped_status();
        self.last_decision = judged.decision.clone();
        self.admission.remember(w, judged.into_payloads());

        let weights = weights_from_scores(&self.state.scores, ctx.hp.network.softmax_temperature);
        self.publish(w, &weights, &sample).await?;
        self.check_weights_on_chain().await;
        self.state.last_window = Some(w);
        ctx.own_store
            .put(
                STATE_KEY,
                serde_json::to_vec_pretty(&self.state).expect("json"),
            )
            .await?;
        self.report(submitted, skipped, &weights, sample);
        Ok(())
    }

    /// Watch window `w`'s digest commitments until it is finished; the watch covers the
    /// window when it starts within a digest lead of the window's start.
    fn watch_commitments(&mut self, w: u64, miners: Vec<u16>) {
        if let Some(old) = self.watch.take() {
            old.finish();
        }
        let lead =
            Duration::from_millis(self.ctx.hp.network.digest_lead_ms).max(Duration::from_secs(1));
        let complete = self.ctx.window_start(w).is_some_and(|start| {
            SystemTime::now()
                .duration_since(start)
                .map_or(true, |since| since <= lead)
        });
        self.watch = Some(DigestWatch::start(self.ctx.clone(), w, miners, complete));
    }

    /// The payloads of window `w` that repeat one of an older window in retention; keeps
    /// their sketches for the windows to come.
    fn find_echoes(&mut self, w: u64, judged: &Judged) -> Vec<Echo> {
        let layouts = &self.engine.codec.spec.layouts;
        let sketches: Vec<(u16, Sketch)> = block_in_place(|| {
            judged
                .candidates
                .iter()
                .map(|c| (c.uid(), self.sketch_plan.sketch(&c.peer.payload, layouts)))
                .collect()
        });
        let n = &self.ctx.hp.network;
        let echoes = self.echo_history.find(w, &sketches, n.copy_overlap);
        for e in &echoes {
            tracing::warn!(uid = e.uid, window = w, reason = %e, "echo of an older window");
        }
        self.echo_history.remember(w, sketches, n.retention_windows);
        echoes
    }

    /// Update the moving average of each miner chosen for evaluation in window `w`; miners
    /// no longer listed stop counting.
    /// A payload trained from another model (drift beyond `sync_tolerance`: a miner that
    /// missed outer steps or diverged) counts as no valid payload, evaluated or not; it still
    /// takes part in the outer step, which every node must take alike. A payload the admission
    /// rule flagged (a copy, a free-rider, an amplified update, one against the window)
    /// forfeits the miner's average (and every node leaves it out of the step).
    fn score(&mut self, w: u64, peers: &[u16], submissions: &[Submission]) {
        let n = &self.ctx.hp.network;
        let in_sync: Vec<u16> = submissions
            .iter()
            .filter(|s| !s.flagged)
            .filter(|s| {
                let ok = s.drift <= n.sync_tolerance;
                if !ok {
                    let (uid, drift) = (s.uid, s.drift);
                    tracing::warn!(uid, window = w, drift, "payload from an out-of-sync model");
                }
                ok
            })
            .map(|s| s.uid)
            .collect();
        let chosen = choose_for_eval(peers, w, n.eval_miners, self.eval_secret);
        let engine = &self.engine;
        let secret = self.random_pages_secret;
        let medians =
            block_in_place(|| engine.peer_norm_medians(submissions.iter().map(|s| s.selected)));
        // Held-out losses (before, after) of each miner evaluated, for /status.
        let mut held_out: BTreeMap<u16, (f64, f64)> = BTreeMap::new();
        let evaluate = |uid: u16| {
            let submission = submissions.iter().find(|s| s.uid == uid)?;
            // Random pages from the secret: a miner cannot know them before its upload.
            let salt = random_pages_salt(secret, w, uid);
            let result = block_in_place(|| {
                engine.evaluate(uid, w, submission.selected, n.eval_pages, &medians, salt)
            });
            tracing::info!(uid, window = w, ?result, "evaluated");
            let evaluation = result
                .map_err(|e| tracing::warn!(uid, window = w, error = %e, "not evaluated"))
                .ok()?;
            held_out.insert(uid, (evaluation.held_out_before, evaluation.held_out_after));
            Some(evaluation.gains())
        };
        let caught: Vec<u16> = submissions
            .iter()
            .filter(|s| s.flagged)
            .map(|s| s.uid)
            .collect();
        score_window(
            &mut self.state.scores,
            peers,
            &chosen,
            &in_sync,
            &caught,
            evaluate,
            n,
        );
        for s in submissions {
            if let Some(entry) = self.state.scores.get_mut(&s.uid) {
                entry.last_sync_drift = Some(s.drift);
            }
        }
        for (uid, entry) in self.state.scores.iter_mut() {
            entry.last_held_out = held_out
                .get(uid)
                .map(|(_, after)| *after)
                .filter(|l| l.is_finite());
        }
        let before: Vec<f64> = held_out
            .values()
            .map(|(b, _)| *b)
            .filter(|b| b.is_finite())
            .collect();
        let mean = (!before.is_empty()).then(|| before.iter().sum::<f64>() / before.len() as f64);
        self.ctx.update_status(|s| s.held_out_loss = mean);
    }

    /// Weights on chain every `weights_every` windows; the top validator's checkpoint (and
    /// then its pointer, with `sample`: the model sample after this window's step) every
    /// `checkpoint_every` windows.
    async fn publish(
        &mut self,
        w: u64,
        weights: &[(u16, f64)],
        sample: &[f64],
    ) -> Result<(), NodeError> {
        let ctx = self.ctx.clone();
        let n = &ctx.hp.network;
        if (w + 1).is_multiple_of(n.weights_every) && !weights.is_empty() {
            self.set_weights(w, weights).await?;
        }
        if (w + 1).is_multiple_of(n.checkpoint_every) && self.is_top_validator().await? {
            let bytes = block_in_place(|| self.engine.checkpoint_bytes(w));
            ctx.own_store.put(&ctx.keys.checkpoint(w), bytes).await?;
            let pointer = CheckpointPointer {
                window: w,
                global_step: self.engine.global_step(),
                model_sample: sample.to_vec(),
            };
            // The pointer goes last: a reader never follows it to a partial checkpoint.
            ctx.own_store
                .put(
                    &ctx.keys.checkpoint_pointer(),
                    serde_json::to_vec(&pointer).expect("json"),
                )
                .await?;
            self.state.last_checkpoint_window = Some(w);
        }
        Ok(())
    }

    /// Weights on chain, unless the chain's rate limit would refuse them: a refusal (say,
    /// after a restart lost the last block) is expected and skipped, other errors are warned.
    pub async fn set_weights(&mut self, w: u64, weights: &[(u16, f64)]) -> Result<(), NodeError> {
        let chain = self.ctx.chain.clone();
        let (block, limit) = (
            chain.current_block().await?,
            chain.weights_rate_limit().await?,
        );
        if let Some(last) = self.last_weights_block
            && block < last.saturating_add(limit)
        {
            tracing::debug!(
                window = w,
                block,
                last,
                limit,
                "weights rate limit: not yet"
            );
            return Ok(());
        }
        match chain.set_weights(&self.ctx.hotkey, weights).await {
            Ok(()) => {
                self.state.last_weights_window = Some(w);
                self.last_weights_block = Some(block);
            }
            Err(e @ ChainError::WeightsRateLimited { .. }) => {
                tracing::info!(window = w, reason = %e, "weights skipped");
            }
            Err(e) => tracing::warn!(error = %e, "set_weights failed"),
        }
        Ok(())
    }

    /// What became of the last weights on chain, into `/status` (and its metrics); a commit
    /// the chain never applied is a warning, once per commit.
    async fn check_weights_on_chain(&mut self) {
        let report = match self.ctx.chain.weights_on_chain(&self.ctx.hotkey).await {
            Ok(report) => report,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read what became of the weights");
                return;
            }
        };
        if let Some(r) = &report
            && r.state == WeightsState::NotRevealed
            && self.warned_unrevealed != Some(r.committed_block)
        {
            self.warned_unrevealed = Some(r.committed_block);
            tracing::warn!(
                committed_block = r.committed_block,
                due_block = r.due_block,
                "weights committed but never applied: the chain refused them at the reveal \
                 (a validator permit, too few uids or too little stake at that block)"
            );
        }
        self.ctx.update_status(|s| s.weights = report);
    }

    /// The window's scores and weights into the node's `/status`.
    /// `sample` is the model sample after the last outer step.
    fn report(
        &self,
        submitted: usize,
        skipped: Vec<SkippedPeer>,
        weights: &[(u16, f64)],
        sample: Vec<f64>,
    ) {
        let scores: Vec<MinerScore> = self
            .state
            .scores
            .iter()
            .map(|(&uid, s)| MinerScore {
                uid,
                score: s.ema,
                last_improvement: s.last_own,
                last_random_improvement: s.last_random,
                weight: weights.iter().find(|(u, _)| *u == uid).map_or(0.0, |x| x.1),
                sync_drift: s.last_sync_drift,
                held_out_loss: s.last_held_out,
            })
            .collect();
        self.ctx.update_status(|s| {
            s.global_step = self.engine.global_step();
            s.model_sample = sample;
            s.peers_gathered = submitted;
            s.peers_skipped = skipped;
            s.scores = scores;
            s.last_weights_window = self.state.last_weights_window;
            s.last_checkpoint_window = self.state.last_checkpoint_window;
        });
    }
}

/// The salt of miner uid's random evaluation pages in window `w`: SHA-256 of the validator's
/// secret with the window and uid.
fn random_pages_salt(secret: u64, w: u64, uid: u16) -> u64 {
    secret_draw(&[
        b"templar-random-pages",
        &secret.to_le_bytes(),
        &w.to_le_bytes(),
        &uid.to_le_bytes(),
    ])
}
