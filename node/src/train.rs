//! One node training alone: the full window pipeline (pages of (uid, window), local work,
//! compression into a real payload, validation of that payload, merge, step) with itself as
//! the only peer. The roles (`roles::miner`, `roles::validator`) wrap the same steps with
//! storage and peers.

use crate::compute::Compute;
use crate::data::{PageSampler, Pages};
use crate::engine::{Engine, EngineError};
use crate::hparams::Hparams;
use crate::model::Llama;
use std::time::Instant;
use templar_protocol::Hotkey;
use templar_protocol::payload::PayloadError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("own payload rejected: {0}")]
    OwnPayload(#[from] PayloadError),
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
    compute: impl Into<Compute>,
    mut on_window: impl FnMut(&WindowProgress),
) -> Result<TrainReport, TrainError> {
    let mut engine = Engine::new(hp, pages, compute)?;
    let held_out = eval_pages(hp, pages);
    let initial_eval_loss = eval_loss(&engine.model, pages, &held_out);

    let started = Instant::now();
    let mut tokens = 0u64;
    let mut window_losses = Vec::new();
    let mut payload_bytes = 0;
    let hotkey = Hotkey::parse(&format!("local-{uid}")).expect("a name without spaces");
    for window in 0..windows {
        let (stats, bytes) = engine.train_and_compress(uid, &hotkey, None, window)?;
        // The payload takes the same path as a peer's: bytes, validation, decode.
        let received = engine.decode(&bytes, uid, window)?;
        engine.apply(&[received]);

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
        parameters: engine.model.num_parameters(),
        initial_eval_loss,
        final_eval_loss: eval_loss(&engine.model, pages, &held_out),
        window_losses,
        tokens,
        tokens_per_sec: tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
        payload_bytes,
    })
}
