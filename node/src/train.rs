//! One node training alone: the full window pipeline (pages of (uid, window), local work,
//! compression into a real payload, validation of that payload, merge, step) with itself as
//! the only peer. The network issue wraps the same steps with storage and peers.

use crate::codec::Codec;
use crate::codec::payload::{PayloadError, PayloadMeta, PayloadValidator};
use crate::data::{PageSampler, Pages, window_batches};
use crate::hparams::{Hparams, HparamsError};
use crate::model::Llama;
use crate::optim::{OptimError, WindowOptimizer};
use std::time::Instant;
use tch::{Device, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Hparams(#[from] HparamsError),
    #[error(transparent)]
    Optim(#[from] OptimError),
    #[error("own payload rejected: {0}")]
    Payload(#[from] PayloadError),
    #[error("the data has token ids up to {needed} but the model's vocabulary is {vocab}")]
    VocabTooSmall { needed: u32, vocab: i64 },
}

/// Progress after one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowProgress {
    pub window: u64,
    pub loss: f64,
    pub tokens_per_sec: f64,
    pub payload_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainReport {
    pub windows: u64,
    pub parameters: i64,
    /// Loss on fixed held-out pages before the first and after the last window.
    pub initial_eval_loss: f64,
    pub final_eval_loss: f64,
    /// Training loss of each window.
    pub window_losses: Vec<f64>,
    pub tokens: u64,
    pub tokens_per_sec: f64,
    pub payload_bytes: usize,
}

/// Pages used to measure progress: the same for every run with the same data and seed.
pub fn eval_pages(hp: &Hparams, pages: &Pages) -> Vec<u64> {
    let sampler = PageSampler::new(pages.num_pages(), hp.data.pages_per_window, hp.data.seed);
    sampler.random_pages(u64::MAX, 0, 16)
}

pub fn eval_loss(model: &Llama, pages: &Pages, which: &[u64]) -> f64 {
    tch::no_grad(|| {
        model
            .loss(&pages.batch(which, model.device()))
            .double_value(&[])
    })
}

/// Train `windows` windows as uid `uid`, calling `on_window` after each.
pub fn train_alone(
    hp: &Hparams,
    pages: &Pages,
    windows: u64,
    uid: u16,
    device: Device,
    mut on_window: impl FnMut(&WindowProgress),
) -> Result<TrainReport, TrainError> {
    let cfg = hp.model_config()?;
    if pages.vocab_needed() as i64 > cfg.vocab_size {
        return Err(TrainError::VocabTooSmall {
            needed: pages.vocab_needed(),
            vocab: cfg.vocab_size,
        });
    }
    let model = Llama::new(&cfg, device, hp.data.seed as i64);
    let shapes: Vec<(String, Vec<i64>)> = model
        .named_parameters()
        .iter()
        .map(|(n, t)| (n.clone(), t.size()))
        .collect();
    let codec = Codec::new(&hp.codec, &shapes);
    let digest = hp.digest();
    let validator = PayloadValidator::new(&codec).with_hparams_digest(digest.clone());
    let mut opt = WindowOptimizer::new(hp, &model)?;
    let sampler = PageSampler::new(pages.num_pages(), hp.data.pages_per_window, hp.data.seed);
    let held_out = eval_pages(hp, pages);
    let initial_eval_loss = eval_loss(&model, pages, &held_out);

    let started = Instant::now();
    let mut tokens = 0u64;
    let mut window_losses = Vec::new();
    let mut payload_bytes = 0;
    for window in 0..windows {
        let assigned = sampler.pages(uid, window);
        let batches: Vec<Tensor> =
            window_batches(&assigned, hp.batches_per_window(), hp.data.batch_size)
                .iter()
                .map(|b| pages.batch(b, device))
                .collect();
        let stats = opt.train_window(&model, &batches)?;
        let meta = PayloadMeta {
            window,
            uid,
            hotkey: format!("local-{uid}"),
            hparams_digest: digest.clone(),
        };
        // The payload takes the same path as a peer's: bytes, validation, decode.
        let bytes = opt.compress(&codec, meta).to_bytes(&codec);
        let received = validator.validate(&bytes)?;
        opt.apply(&codec, &[received.selected(&codec, device)]);

        tokens += stats.tokens;
        payload_bytes = bytes.len();
        window_losses.push(stats.mean_loss);
        on_window(&WindowProgress {
            window,
            loss: stats.mean_loss,
            tokens_per_sec: tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
            payload_bytes,
        });
    }
    Ok(TrainReport {
        windows,
        parameters: model.num_parameters(),
        initial_eval_loss,
        final_eval_loss: eval_loss(&model, pages, &held_out),
        window_losses,
        tokens,
        tokens_per_sec: tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
        payload_bytes,
    })
}
