//! `bench convergence`: the same token budget as AdamW in one process and as N miners
//! through the full protocol (SparseLoCo and DeMo).

use crate::data::{PageSampler, Pages, window_batches};
use crate::hparams::Hparams;
use crate::model::Llama;
use crate::optim::sparseloco::{inner_adamw, inner_step};
use crate::roles::miner::Miner;
use crate::roles::sim::local::LocalNetwork;
use crate::train::{eval_loss, eval_pages};
use serde::Serialize;
use std::time::Instant;
use tch::Device;

/// One configuration's outcome in the convergence benchmark.
#[derive(Debug, Serialize)]
pub struct ConvergenceRun {
    pub setup: String,
    pub final_eval_loss: f64,
    /// Average payload bytes one miner uploads per window (0 for the baseline).
    pub bytes_per_miner_per_window: f64,
    pub seconds: f64,
    /// final loss / the AdamW baseline's final loss.
    pub loss_ratio_vs_adamw: f64,
}

#[derive(Debug, Serialize)]
pub struct ConvergenceBench {
    pub model: String,
    pub miners: u16,
    pub windows: u64,
    pub tokens: u64,
    pub initial_eval_loss: f64,
    pub runs: Vec<ConvergenceRun>,
}

/// Same token budget three ways: (a) one process with AdamW on all miners' pages,
/// (b) `miners` miners through the full protocol with SparseLoCo, (c) the same with DeMo.
pub async fn convergence_bench(
    sparseloco: &Hparams,
    demo: &Hparams,
    pages: &Pages,
    miners: u16,
    windows: u64,
) -> anyhow::Result<ConvergenceBench> {
    let h = sparseloco.sparseloco.inner_steps;
    let mut demo = demo.clone();
    demo.demo.batches_per_window = h; // the same tokens per window in both modes
    let held_out = eval_pages(sparseloco, pages);
    let tokens =
        miners as u64 * windows * h * (sparseloco.data.batch_size * sparseloco.data.seq_len) as u64;

    // (a) AdamW in one process, each step on every miner's micro-batch of that step.
    let started = Instant::now();
    let cfg = sparseloco.model_config()?;
    let model = Llama::new(&cfg, Device::Cpu, sparseloco.data.seed as i64);
    let initial_eval_loss = eval_loss(&model, pages, &held_out);
    let s = &sparseloco.sparseloco;
    let mut opt = inner_adamw(s, &model.vs)?;
    let sampler = PageSampler::new(
        pages.num_pages(),
        sparseloco.data.pages_per_window,
        sparseloco.data.seed,
    );
    let mut step = 0;
    for w in 0..windows {
        let per_uid: Vec<Vec<Vec<u64>>> = (1..=miners)
            .map(|uid| window_batches(&sampler.pages(uid, w), h, sparseloco.data.batch_size))
            .collect();
        for i in 0..h as usize {
            let all: Vec<u64> = per_uid.iter().flat_map(|b| b[i].clone()).collect();
            let batch = pages.batch(&all, Device::Cpu);
            let _ = inner_step(&mut opt, &model, &batch, step, s, &sparseloco.schedule);
            step += 1;
        }
    }
    let adamw_loss = eval_loss(&model, pages, &held_out);
    let mut runs = vec![ConvergenceRun {
        setup: "adamw-single-process".into(),
        final_eval_loss: adamw_loss,
        bytes_per_miner_per_window: 0.0,
        seconds: started.elapsed().as_secs_f64(),
        loss_ratio_vs_adamw: 1.0,
    }];

    // (b), (c): the full protocol, miners uids 1..=N, validator uid 0.
    for hp in [sparseloco.clone(), demo] {
        let started = Instant::now();
        let dir = tempfile::tempdir()?;
        let net = LocalNetwork::new(dir.path(), hp.clone(), pages.clone()).await?;
        let mut validator = net.validator("validator", 0).await?;
        let mut ms = Vec::new();
        for uid in 1..=miners {
            ms.push(net.miner(&format!("miner-{uid}"), uid).await?);
        }
        for w in 0..windows {
            let mut refs: Vec<&mut Miner> = ms.iter_mut().collect();
            net.window(w, &mut refs, &mut validator).await?;
        }
        let final_eval_loss = eval_loss(&validator.engine.model, pages, &held_out);
        let keys = &ms[0].ctx.keys;
        let uploads: Vec<_> = ms[0]
            .ctx
            .own_store
            .list(&keys.gradients_prefix())
            .await?
            .into_iter()
            .filter(|o| keys.parse_gradient(&o.key).is_some())
            .collect();
        let bytes =
            uploads.iter().map(|o| o.size as f64).sum::<f64>() / uploads.len().max(1) as f64;
        runs.push(ConvergenceRun {
            setup: format!(
                "{}-{}-miners",
                format!("{:?}", hp.outer.mode).to_lowercase(),
                miners
            ),
            final_eval_loss,
            bytes_per_miner_per_window: bytes,
            seconds: started.elapsed().as_secs_f64(),
            loss_ratio_vs_adamw: final_eval_loss / adamw_loss,
        });
    }
    Ok(ConvergenceBench {
        model: sparseloco.model.size.clone(),
        miners,
        windows,
        tokens,
        initial_eval_loss,
        runs,
    })
}

impl ConvergenceBench {
    /// Lines for people; the JSON is for scripts.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} tokens, held-out loss at start {:.4}\n",
            self.tokens, self.initial_eval_loss
        );
        for run in &self.runs {
            out += &format!(
                "{:<28} loss {:.4}  ratio {:.3}  {:.0} B/miner/window  {:.1}s\n",
                run.setup,
                run.final_eval_loss,
                run.loss_ratio_vs_adamw,
                run.bytes_per_miner_per_window,
                run.seconds
            );
        }
        out
    }
}
