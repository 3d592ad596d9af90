//! The torch side of a node: model, update rule, codec, sampler. All methods are
//! synchronous; the async roles call them inside `block_in_place`.

use crate::checkpoint::{self, CheckpointError, CheckpointPointer};
use crate::codec::norms::{clip_to_norm, lower_median, values_norm};
use crate::codec::{Codec, Selected};
use crate::compute::Compute;
use crate::data::sampler::{PagesOverlap, secret_subset};
use crate::data::{PageSampler, Pages, window_batches};
use crate::hparams::{Hparams, HparamsError};
use crate::model::Llama;
use crate::optim::{OptimError, WindowOptimizer, WindowStats};
use tch::{Device, Tensor};
use templar_protocol::Hotkey;
use templar_protocol::identity::Signer;
use templar_protocol::node_status::MODEL_SAMPLE_SIZE;
use templar_protocol::payload::{Payload, PayloadError, PayloadMeta, PayloadValidator};

/// What one miner's update did to the validator's model ([`Engine::evaluate`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Loss improvement on the miner's own pages.
    pub own_gain: f64,
    /// Loss improvement on random pages (held out: not the miner's).
    pub random_gain: f64,
    /// Loss on those random pages before and after the update.
    pub held_out_before: f64,
    pub held_out_after: f64,
}

impl Evaluation {
    /// (own, random) improvement, what the score is made of.
    pub fn gains(&self) -> (f64, f64) {
        (self.own_gain, self.random_gain)
    }
}

/// Separates the draw of a miner's own evaluation pages from that of its random pages (both
/// keyed by the validator's per-window, per-miner salt).
const OWN_PAGES_DOMAIN: u64 = 0x6f77_6e2d_7061_6765;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Hparams(#[from] HparamsError),
    #[error(transparent)]
    Optim(#[from] OptimError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("the data needs a vocabulary of {needed}, the model has {vocab}")]
    Vocab { needed: u32, vocab: i64 },
    #[error(transparent)]
    Pages(#[from] PagesOverlap),
}

pub struct Engine {
    pub model: Llama,
    pub opt: WindowOptimizer,
    pub codec: Codec,
    pub sampler: PageSampler,
    /// The hyperparameter digest payloads carry: the settings and the corpus identity.
    pub digest: String,
    hp: Hparams,
    pages: Pages,
}

impl Engine {
    /// Every node starts from the same initialisation (seeded by the data seed).
    pub fn new(
        hp: &Hparams,
        pages: &Pages,
        compute: impl Into<Compute>,
    ) -> Result<Self, EngineError> {
        let compute = compute.into();
        let cfg = hp.model_config()?;
        if pages.vocab_needed() as i64 > cfg.vocab_size {
            return Err(EngineError::Vocab {
                needed: pages.vocab_needed(),
                vocab: cfg.vocab_size,
            });
        }
        let mut model = Llama::new(&cfg, compute.device, hp.data.seed as i64);
        model.set_precision(compute.precision);
        let shapes: Vec<(String, Vec<i64>)> = model
            .named_parameters()
            .iter()
            .map(|(n, t)| (n.clone(), t.size()))
            .collect();
        let mut codec = Codec::new(&hp.codec, &shapes);
        codec.spec.value_bound = hp.update_value_bound();
        Ok(Self {
            opt: WindowOptimizer::new(hp, &model)?,
            codec,
            sampler: PageSampler::new(pages.num_pages(), hp.data.pages_per_window, hp.data.seed),
            digest: network_digest(hp, pages),
            model,
            hp: hp.clone(),
            pages: pages.clone(),
        })
    }

    pub fn device(&self) -> Device {
        self.model.device()
    }

    /// Train on uid's pages of window `w` and return the stats and the payload bytes, signed
    /// by `signer` when the hotkey has one (it must be the signer's).
    pub fn train_and_compress(
        &mut self,
        uid: u16,
        hotkey: &Hotkey,
        signer: Option<&dyn Signer>,
        w: u64,
    ) -> Result<(WindowStats, Vec<u8>), EngineError> {
        let (stats, payload) = self.train_on(uid, uid, hotkey, w)?;
        Ok((stats, self.seal(&payload, signer)))
    }

    /// Train on the pages window `w` assigns to `pages_of` (a miner's own uid, unless it
    /// cheats) and compress the result into uid's payload, not yet serialised.
    pub fn train_on(
        &mut self,
        uid: u16,
        pages_of: u16,
        hotkey: &Hotkey,
        w: u64,
    ) -> Result<(WindowStats, Payload), EngineError> {
        let assigned = self.sampler.assigned(pages_of, w)?;
        let steps = self.hp.batches_per_window();
        self.train_on_pages(uid, &assigned, steps, hotkey, w)
    }

    /// `steps` inner steps on `pages` (cycled to fill their batches) and the compressed
    /// update, as uid's payload of window `w`.
    pub fn train_on_pages(
        &mut self,
        uid: u16,
        pages: &[u64],
        steps: u64,
        hotkey: &Hotkey,
        w: u64,
    ) -> Result<(WindowStats, Payload), EngineError> {
        // The model sample of the model the window starts from.
        let meta = self.payload_meta(uid, hotkey, w);
        let batches: Vec<Tensor> = window_batches(pages, steps, self.hp.data.batch_size)
            .iter()
            .map(|b| self.pages.batch(b, self.device()))
            .collect();
        let stats = self.opt.train_window(&self.model, &batches)?;
        Ok((stats, self.opt.compress(&self.codec, meta)))
    }

    /// The metadata of uid's payload for window `w` from this model as it is now.
    pub fn payload_meta(&self, uid: u16, hotkey: &Hotkey, w: u64) -> PayloadMeta {
        PayloadMeta {
            window: w,
            uid,
            hotkey: hotkey.clone(),
            hparams_digest: self.digest.clone(),
            model_sample: self.model_sample(),
        }
    }

    /// A payload's bytes, signed by `signer` when given.
    pub fn seal(&self, payload: &Payload, signer: Option<&dyn Signer>) -> Vec<u8> {
        match signer {
            Some(signer) => payload.to_signed_bytes(&self.codec.spec, signer),
            None => payload.to_bytes(&self.codec.spec),
        }
    }

    /// The payload with each tensor's dequantised values replaced by `rewrite(index, values)`
    /// and quantised again, under `meta`.
    pub fn rewrite_values(
        &self,
        payload: &Payload,
        meta: PayloadMeta,
        mut rewrite: impl FnMut(usize, &Tensor) -> Tensor,
    ) -> Payload {
        let selected: Vec<Selected> = tch::no_grad(|| {
            self.selected(payload)
                .into_iter()
                .enumerate()
                .map(|(i, s)| Selected {
                    values: rewrite(i, &s.values).to_kind(tch::Kind::Float),
                    indices: s.indices,
                })
                .collect()
        });
        self.codec.to_payload(meta, &selected)
    }

    /// The validator for peers' payloads: this model's codec and hyperparameter digest.
    pub fn payload_validator(&self) -> PayloadValidator<'_> {
        PayloadValidator::new(&self.codec.spec).with_hparams_digest(self.digest.clone())
    }

    /// Validate a peer's bytes as the payload of (uid, w).
    pub fn decode(&self, bytes: &[u8], uid: u16, w: u64) -> Result<Payload, PayloadError> {
        self.payload_validator().validate_for(bytes, uid, w)
    }

    pub fn selected(&self, p: &Payload) -> Vec<Selected> {
        self.codec.selected(p, self.device())
    }

    /// The outer step with these peers' payloads (own included, in uid order).
    pub fn apply(&mut self, peers: &[Payload]) {
        let sel: Vec<Vec<Selected>> = peers.iter().map(|p| self.selected(p)).collect();
        self.apply_selected(&sel);
    }

    /// [`Engine::apply`] with payloads already dequantised by [`Engine::selected`].
    pub fn apply_selected(&mut self, peers: &[Vec<Selected>]) {
        self.opt.apply(&self.codec, peers);
    }

    pub fn global_step(&self) -> u64 {
        self.opt.outer_step
    }

    fn loss_on(&self, pages: &[u64]) -> f64 {
        tch::no_grad(|| {
            self.model
                .loss(&self.pages.batch(pages, self.device()))
                .double_value(&[])
        })
    }

    /// Per parameter tensor, the lower median of the gathered peers' value norms: what an
    /// evaluated update is clipped to, so that a miner cannot look better (or break the
    /// evaluation) by scaling its update up. Non-finite norms do not count.
    pub fn peer_norm_medians<'a>(
        &self,
        peers: impl Iterator<Item = &'a [Selected]> + Clone,
    ) -> Vec<f64> {
        (0..self.codec.spec.layouts.len())
            .map(|i| lower_median(peers.clone().map(|p| values_norm(&p[i]))))
            .collect()
    }

    /// Loss improvement from applying one miner's update (dequantised by
    /// [`Engine::selected`]) alone at `eval_lr_factor` of the outer step, its values clipped
    /// per tensor to `medians` (from [`Engine::peer_norm_medians`] of the window), on
    /// `eval_pages` of its own pages of window `w` and on as many random pages, both drawn with
    /// `random_salt` (the validator's secret: miners cannot know which of their pages count,
    /// nor train on the random ones in advance): the [`Evaluation`]. Refused for a uid
    /// whose pages overlap another's. The parameters are restored afterwards
    /// by copying a snapshot back: subtracting the update again would not restore them when
    /// it is huge (θ − d + d loses θ once |d| dwarfs it), so one extreme payload could wipe
    /// the validator's model.
    pub fn evaluate(
        &self,
        uid: u16,
        w: u64,
        update: &[Selected],
        eval_pages: u64,
        medians: &[f64],
        random_salt: u64,
    ) -> Result<Evaluation, EngineError> {
        // Own pages drawn secretly from the whole assignment: a miner that trains on part of
        // its pages cannot know which of them count.
        let assigned = self.sampler.assigned(uid, w)?;
        let own = secret_subset(&assigned, eval_pages, random_salt ^ OWN_PAGES_DOMAIN);
        let random = self.sampler.random_pages(w, random_salt, eval_pages);
        let before = (self.loss_on(&own), self.loss_on(&random));
        let clipped: Vec<Selected> = tch::no_grad(|| {
            update
                .iter()
                .zip(medians)
                .map(|(s, &m)| clip_to_norm(s, values_norm(s), m))
                .collect()
        });
        let factor = self.hp.network.eval_lr_factor;
        let delta: Vec<Tensor> = self
            .opt
            .step_delta(&self.codec, &[clipped])
            .into_iter()
            .map(|d| d * factor)
            .collect();
        let params = self.opt.params();
        let snapshot: Vec<Tensor> = tch::no_grad(|| params.iter().map(|p| p.copy()).collect());
        tch::no_grad(|| {
            for (p, d) in params.iter().zip(&delta) {
                let mut p = p.shallow_clone();
                p -= d;
            }
        });
        let after = (self.loss_on(&own), self.loss_on(&random));
        tch::no_grad(|| {
            for (p, saved) in params.iter().zip(&snapshot) {
                p.shallow_clone().copy_(saved);
            }
        });
        Ok(Evaluation {
            own_gain: before.0 - after.0,
            random_gain: before.1 - after.1,
            held_out_before: before.1,
            held_out_after: after.1,
        })
    }

    /// Bytes a checkpoint of this model takes (every parameter as f32, a header allowance):
    /// a download is refused beyond it.
    pub fn checkpoint_max_bytes(&self) -> u64 {
        let numel: i64 = self.opt.params().iter().map(|p| p.numel() as i64).sum();
        numel as u64 * 4 + (1 << 20)
    }

    pub fn checkpoint_bytes(&self, window: u64) -> Vec<u8> {
        let pointer = CheckpointPointer {
            window,
            global_step: self.global_step(),
            model_sample: Vec::new(),
        };
        checkpoint::encode(&self.model.named_parameters(), &pointer, &self.digest)
    }

    pub fn load_checkpoint(&mut self, bytes: &[u8]) -> Result<CheckpointPointer, EngineError> {
        let pointer = checkpoint::load_into(bytes, &self.model.named_parameters(), &self.digest)?;
        self.opt.outer_step = pointer.global_step;
        Ok(pointer)
    }

    /// [`MODEL_SAMPLE_SIZE`] parameter values at positions fixed by the model's shapes alone
    /// (sample `i`: tensor `i mod n`, a stride through its elements), read in one transfer.
    /// Nodes with the same parameters report the same sample (`/status` `modelSample`).
    pub fn model_sample(&self) -> Vec<f64> {
        let params = self.opt.params();
        if params.is_empty() {
            return Vec::new();
        }
        let picked: Vec<Tensor> = (0..MODEL_SAMPLE_SIZE)
            .map(|i| {
                let t = &params[i % params.len()];
                let numel = t.numel().max(1) as i64;
                // A large odd stride walks each tensor's elements without a pattern tied
                // to its shape.
                let at = (i as i64 / params.len() as i64 * 7_919 + i as i64) % numel;
                t.flatten(0, -1).get(at).to_kind(tch::Kind::Double)
            })
            .collect();
        let values = Tensor::stack(&picked, 0).to_device(Device::Cpu);
        Vec::<f64>::try_from(&values).unwrap_or_default()
    }

    /// Largest absolute difference to another engine's parameters (tests, diagnostics).
    pub fn max_param_diff(&self, other: &Engine) -> f64 {
        self.opt
            .params()
            .iter()
            .zip(other.opt.params())
            .map(|(a, b)| (a - b).abs().max().double_value(&[]))
            .fold(0.0, f64::max)
    }
}

/// The digest payloads and checkpoints carry: the hyperparameters' digest and the corpus
/// identity, hashed together.
pub fn network_digest(hp: &Hparams, pages: &Pages) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(hp.digest().as_bytes());
    h.update(b"\0corpus\0");
    h.update(pages.identity().as_bytes());
    hex::encode(h.finalize())
}

/// ||theirs - ours|| / ||ours|| over two model samples; infinite when their lengths differ.
pub fn sample_drift(theirs: &[f64], ours: &[f64]) -> f64 {
    if theirs.len() != ours.len() || ours.is_empty() {
        return f64::INFINITY;
    }
    let diff: f64 = theirs.iter().zip(ours).map(|(a, b)| (a - b).powi(2)).sum();
    let norm: f64 = ours.iter().map(|b| b * b).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::embedded_tokens;
    use templar_protocol::payload::Values;

    fn engine() -> Engine {
        let path = format!(
            "{}/../hparams/tiny-sparseloco.toml",
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
        );
        let mut hp = Hparams::load(std::path::Path::new(&path)).unwrap();
        hp.sparseloco.inner_steps = 2;
        let pages = Pages::new(embedded_tokens().unwrap(), hp.data.seq_len).unwrap();
        Engine::new(&hp, &pages, Device::Cpu).unwrap()
    }

    #[test]
    fn evaluating_an_extreme_update_leaves_the_parameters_exactly_as_they_were() {
        let mut e = engine();
        let hotkey = Hotkey::parse("m1").unwrap();
        let (_, bytes) = e.train_and_compress(1, &hotkey, None, 0).unwrap();
        let mut payload = e.decode(&bytes, 1, 0).unwrap();
        // Well-formed but extreme: every dequantised value about 1e15.
        for p in &mut payload.params {
            match &mut p.values {
                Values::Quantized(q) => {
                    q.shift *= 1e15;
                    q.lookup.iter_mut().for_each(|x| *x = *x * 1e15 + 1e15);
                }
                Values::F32(v) => v.iter_mut().for_each(|x| *x = *x * 1e15 + 1e15),
            }
        }
        let before: Vec<Tensor> = e.opt.params().iter().map(|p| p.copy()).collect();
        // No clipping (infinite medians): the extreme update reaches the parameters.
        let unclipped = vec![f64::INFINITY; payload.params.len()];
        let _ = e
            .evaluate(1, 0, &e.selected(&payload), 2, &unclipped, 9)
            .unwrap();
        for (p, b) in e.opt.params().iter().zip(&before) {
            assert!(p.equal(b), "a parameter changed after evaluation");
        }
    }

    #[test]
    fn a_scaled_up_update_is_evaluated_at_the_windows_median_norm() {
        let mut e = engine();
        let hotkey = Hotkey::parse("m1").unwrap();
        let (_, bytes) = e.train_and_compress(1, &hotkey, None, 0).unwrap();
        let honest = e.decode(&bytes, 1, 0).unwrap();
        let mut scaled = honest.clone();
        for p in &mut scaled.params {
            match &mut p.values {
                Values::Quantized(q) => {
                    q.shift *= 1000.0;
                    q.lookup.iter_mut().for_each(|x| *x *= 1000.0);
                }
                Values::F32(v) => v.iter_mut().for_each(|x| *x *= 1000.0),
            }
        }
        let (honest, scaled) = (e.selected(&honest), e.selected(&scaled));
        let medians = e.peer_norm_medians(std::iter::once(honest.as_slice()));
        let fair = e.evaluate(1, 0, &honest, 2, &medians, 9).unwrap().gains();
        let gamed = e.evaluate(1, 0, &scaled, 2, &medians, 9).unwrap().gains();
        assert!(fair.0.is_finite() && fair.0.abs() > 0.0, "{fair:?}");
        let tolerance = 1e-2 * fair.0.abs() + 1e-4;
        assert!(
            (gamed.0 - fair.0).abs() <= tolerance,
            "clipped to the honest norm, the scaled update scores as the honest one: {gamed:?} vs {fair:?}"
        );
        let unclipped = vec![f64::INFINITY; medians.len()];
        let raw = e.evaluate(1, 0, &scaled, 2, &unclipped, 9).unwrap().gains();
        assert!(
            (raw.0 - fair.0).abs() > 10.0 * tolerance,
            "unclipped it scores differently: {raw:?} vs {fair:?}"
        );
    }

    #[test]
    fn nodes_on_different_data_carry_different_digests_and_reject_each_other() {
        let e = engine();
        let tokens = embedded_tokens().unwrap();
        let mut other: Vec<u32> = tokens.as_ref().clone();
        other.truncate(other.len() - 1000);
        let hp = e.hp.clone();
        let pages = Pages::new(std::sync::Arc::new(other), hp.data.seq_len).unwrap();
        let mut f = Engine::new(&hp, &pages, Device::Cpu).unwrap();
        assert_ne!(e.digest, f.digest, "same settings, other corpus");
        assert_eq!(e.digest, engine().digest, "same settings, same corpus");
        let (_, bytes) = f
            .train_and_compress(1, &Hotkey::parse("m1").unwrap(), None, 0)
            .unwrap();
        assert!(matches!(
            e.decode(&bytes, 1, 0),
            Err(PayloadError::HparamsMismatch { .. })
        ));
    }

    #[test]
    fn a_checkpoint_fits_its_size_bound_and_payloads_carry_the_model_sample() {
        let mut e = engine();
        let bytes = e.checkpoint_bytes(3);
        assert!((bytes.len() as u64) <= e.checkpoint_max_bytes());
        assert!(e.checkpoint_max_bytes() < bytes.len() as u64 + (2 << 20));
        let sample = e.model_sample();
        let (_, payload) = e
            .train_and_compress(1, &Hotkey::parse("m1").unwrap(), None, 0)
            .unwrap();
        let p = e.decode(&payload, 1, 0).unwrap();
        assert_eq!(
            p.meta.model_sample, sample,
            "the model the window started from"
        );
        assert_eq!(sample_drift(&sample, &e.model_sample()), 0.0);
        assert!(sample_drift(&sample[1..], &sample).is_infinite());
    }

    #[test]
    fn the_model_sample_is_equal_for_equal_models_and_moves_with_an_outer_step() {
        let (mut a, b) = (engine(), engine());
        let sample = a.model_sample();
        assert_eq!(sample.len(), MODEL_SAMPLE_SIZE);
        assert_eq!(sample, b.model_sample(), "same initialisation, same sample");
        assert!(sample.iter().all(|x| x.is_finite()));
        let distinct: std::collections::BTreeSet<u64> =
            sample.iter().map(|x| x.to_bits()).collect();
        assert!(
            distinct.len() > MODEL_SAMPLE_SIZE / 2,
            "spread over many values: {sample:?}"
        );

        let hotkey = Hotkey::parse("m1").unwrap();
        let (_, bytes) = a.train_and_compress(1, &hotkey, None, 0).unwrap();
        let payload = a.decode(&bytes, 1, 0).unwrap();
        a.apply(std::slice::from_ref(&payload));
        let moved = a.model_sample();
        let changed = moved.iter().zip(&sample).filter(|(x, y)| x != y).count();
        assert!(changed > 0, "an outer step shows in the sample");
        // Only a top-k of each block moves, so not every sampled value does.
        assert_eq!(moved.len(), MODEL_SAMPLE_SIZE);
    }
}
