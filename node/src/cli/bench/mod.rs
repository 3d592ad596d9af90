//! Benchmarks that print figures (JSON with `--json`): [`codec`], [`train`], [`convergence`],
//! and the incentive-integrity scenario; `bench` dispatches them.

pub mod codec;
pub mod convergence;
mod nvml;
pub mod train;

use super::{load_hparams, runtime};
use crate::compute::ComputeArgs;
use crate::data::{self, Pages};
use crate::hparams::{Hparams, ModelConfig};
use crate::roles::sim::behaviour::Behaviour;
use crate::roles::sim::integrity::{integrity_report, scenario_hparams};
use anyhow::bail;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Instant;
use tch::Device;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Encode/decode time per parameter shape, payload size and compression ratio.
    Codec {
        #[arg(long, default_value = "150M")]
        model: String,
        /// Peers merged in the multi-peer decode.
        #[arg(long, default_value_t = 20)]
        peers: usize,
        /// Timing repetitions (the median is reported).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Hyperparameters TOML whose [codec] section is used.
        #[arg(long)]
        hparams: Option<PathBuf>,
        /// Turn the chunked DCT on (DeMo) regardless of the file.
        #[arg(long)]
        dct: bool,
        #[command(flatten)]
        compute: ComputeArgs,
        #[arg(long)]
        json: bool,
    },
    /// Training throughput: tokens/s, step time, device memory and model FLOPs utilisation
    /// of inner AdamW steps on random tokens.
    Train {
        #[command(flatten)]
        options: train::TrainBenchOptions,
        #[arg(long)]
        json: bool,
    },
    /// Same token budget: AdamW in one process vs N miners through the protocol.
    Convergence {
        #[arg(long, default_value_t = 3)]
        miners: u16,
        #[arg(long, default_value_t = 10)]
        windows: u64,
        #[arg(long, default_value = "hparams/tiny-sparseloco.toml")]
        sparseloco: PathBuf,
        #[arg(long, default_value = "hparams/tiny-demo.toml")]
        demo: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Honest miners next to one miner of each attack: final weights by behaviour, the
    /// honest share, windows until every adversary is below every honest miner, and the
    /// held-out loss with and without the adversaries.
    Integrity {
        #[arg(long, default_value_t = 4)]
        honest: u16,
        #[arg(long, default_value_t = 20)]
        windows: u64,
        /// Data seeds (model initialisation and page assignment), one run each.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        seeds: Vec<u64>,
        #[arg(long, default_value = "hparams/tiny-sparseloco.toml")]
        hparams: PathBuf,
        /// The cheating miners (repeatable, e.g. `--cheater free-rider --cheater
        /// free-rider`); default: one of each attack.
        #[arg(long = "cheater")]
        cheaters: Vec<Behaviour>,
        #[arg(long)]
        json: bool,
    },
}

fn print<T: serde::Serialize>(
    json: bool,
    value: &T,
    summary: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    match json {
        true => println!("{}", serde_json::to_string_pretty(value)?),
        false => print!("{}", summary(value)),
    }
    Ok(())
}

pub fn run(which: BenchCommand) -> anyhow::Result<()> {
    match which {
        BenchCommand::Codec {
            model,
            peers,
            reps,
            hparams,
            dct,
            compute,
            json,
        } => {
            if reps == 0 {
                bail!("--reps must be at least 1");
            }
            let hp = load_hparams(hparams.as_deref())?;
            let cfg = ModelConfig::preset(&model)?;
            let mut codec = hp.codec.clone();
            codec.use_dct |= dct;
            let device = compute.resolve()?.device;
            let r = codec::codec_bench(&model, &cfg, &codec, peers, reps, device);
            print(json, &r, |r| format!("{}\n", r.summary()))
        }
        BenchCommand::Train { options, json } => {
            let r = train::train_bench(&options)?;
            print(json, &r, |r| format!("{}\n", r.summary()))
        }
        BenchCommand::Convergence {
            miners,
            windows,
            sparseloco,
            demo,
            json,
        } => {
            let sl = Hparams::load(&sparseloco)?;
            let dm = Hparams::load(&demo)?;
            let pages = Pages::new(data::embedded_tokens()?, sl.data.seq_len)?;
            let run = convergence::convergence_bench(&sl, &dm, &pages, miners, windows);
            let r = runtime()?.block_on(run)?;
            print(json, &r, |r| r.summary())
        }
        BenchCommand::Integrity {
            honest,
            windows,
            seeds,
            hparams,
            cheaters,
            json,
        } => {
            let hp = scenario_hparams(Hparams::load(&hparams)?);
            let adversaries = match cheaters.is_empty() {
                true => Behaviour::adversaries(1),
                false => cheaters,
            };
            let pages = Pages::new(data::embedded_tokens()?, hp.data.seq_len)?;
            let dir = tempfile::tempdir()?;
            let mut reports = Vec::new();
            for seed in seeds {
                let run =
                    integrity_report(dir.path(), &hp, &pages, seed, honest, &adversaries, windows);
                let r = runtime()?.block_on(run)?;
                if !json {
                    print!("{}", r.summary());
                }
                reports.push(r);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            }
            Ok(())
        }
    }
}

/// Median of `reps` timings of `f`, in milliseconds.
fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Wait for the device's queued work, so that timings include it.
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}
