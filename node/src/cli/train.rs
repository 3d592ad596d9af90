//! `templar-node train`: one node alone on the embedded corpus or the user's data, with a
//! progress bar and a final report (text or JSON).

use crate::compute::Compute;
use crate::data::{DataSource, Pages};
use crate::hparams::Hparams;
use crate::train::train_alone;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

pub struct TrainOptions {
    pub hparams: Hparams,
    pub data: DataSource,
    pub steps: u64,
    pub uid: u16,
    pub json: bool,
    pub compute: Compute,
}

pub fn run_train(opts: TrainOptions) -> anyhow::Result<()> {
    let hp = &opts.hparams;
    let pages = Pages::new(opts.data.tokens()?, hp.data.seq_len)?;
    let compute = opts.compute;
    tracing::info!(
        model = %hp.model.size,
        mode = ?hp.outer.mode,
        pages = pages.num_pages(),
        device = ?compute.device,
        precision = ?compute.precision,
        "training alone"
    );
    let bar = ProgressBar::new(opts.steps);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} window {pos}/{len} {msg} [{elapsed}<{eta}]")
            .context("progress template")?,
    );
    let report = train_alone(hp, &pages, opts.steps, opts.uid, compute, |p| {
        bar.set_position(p.window + 1);
        bar.set_message(format!(
            "loss {:.4}  {:.0} tok/s  payload {} B",
            p.loss, p.tokens_per_sec, p.payload_bytes
        ));
    })?;
    bar.finish();
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} parameters, {} windows: held-out loss {:.4} -> {:.4}, {:.0} tokens/s, payload {} bytes",
            report.parameters,
            report.windows,
            report.initial_eval_loss,
            report.final_eval_loss,
            report.tokens_per_sec,
            report.payload_bytes
        );
    }
    Ok(())
}
