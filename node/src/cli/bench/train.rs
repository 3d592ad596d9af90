//! `bench train`: inner AdamW steps (forward, backward, clipping, step: what a miner does
//! per micro-batch) on random tokens, timed after a warm-up with one device sync at the end.
//!
//! Model FLOPs per token (PaLM's convention): 6·N for the matmul parameters N (all but the
//! input embedding table, which is a lookup; a tied table is counted once, as the output
//! matmul) plus 12·layers·hidden·seq for attention scores and values (causal masking not
//! discounted). MFU = achieved FLOP/s over the device's dense bf16 peak.

use super::nvml;
use crate::compute::{ComputeArgs, Precision};
use crate::hparams::{Hparams, ModelConfig, ScheduleParams, SparseLocoParams};
use crate::model::Llama;
use crate::optim::sparseloco::{inner_adamw, inner_step};
use serde::Serialize;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, clap::Args)]
pub struct TrainBenchOptions {
    #[arg(long, default_value = "150M")]
    pub model: String,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 2048)]
    pub seq: i64,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    pub batch: i64,
    /// Timed steps (after the warm-up).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// The device's dense bf16 peak in TFLOP/s, for MFU when the GPU is not in the table.
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

#[derive(Debug, Serialize)]
pub struct TrainBench {
    pub model: String,
    pub device: String,
    /// The GPU's name (NVML), when there is one.
    pub gpu: Option<String>,
    pub precision: Precision,
    pub parameters: i64,
    pub matmul_parameters: i64,
    pub seq: i64,
    pub batch: i64,
    pub steps: usize,
    pub step_ms: f64,
    /// Steps in a window of the default hyperparameters (SparseLoCo's inner steps) and the
    /// time they take at this batch: what the codec's share of a window is measured against.
    pub window_steps: u64,
    pub window_ms: f64,
    pub tokens_per_sec: f64,
    pub flops_per_token: f64,
    pub achieved_tflops: f64,
    /// Dense bf16 peak used for MFU (`--peak-tflops`, else the known-GPU table).
    pub peak_tflops: Option<f64>,
    pub mfu: Option<f64>,
    /// GPU: bytes in use on the device after the run (NVML; libtorch's caching allocator
    /// keeps its high-water mark, plus the CUDA context). CPU: the process's peak RSS.
    pub memory_bytes: Option<u64>,
    pub final_loss: f64,
}

/// Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) by a substring of the NVML
/// name; the first match wins, so the more specific names come first.
const BF16_PEAKS: &[(&str, f64)] = &[
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.2),
    ("RTX 3090", 71.0),
];

pub fn known_peak(gpu_name: &str) -> Option<f64> {
    BF16_PEAKS
        .iter()
        .find(|(name, _)| gpu_name.contains(name))
        .map(|(_, peak)| *peak)
}

/// Parameters that take part in a matmul: all but the input embedding table (unless tied,
/// when the output matmul uses it).
pub fn matmul_parameters(cfg: &ModelConfig, parameters: i64) -> i64 {
    if cfg.tie_embeddings {
        parameters
    } else {
        parameters - cfg.vocab_size * cfg.hidden_size
    }
}

pub fn flops_per_token(cfg: &ModelConfig, matmul_parameters: i64, seq: i64) -> f64 {
    6.0 * matmul_parameters as f64 + 12.0 * (cfg.num_layers * cfg.hidden_size * seq) as f64
}

pub fn train_bench(o: &TrainBenchOptions) -> anyhow::Result<TrainBench> {
    if o.steps == 0 || o.seq < 1 || o.batch < 1 {
        anyhow::bail!("--steps, --seq and --batch must be at least 1");
    }
    let mut cfg = ModelConfig::preset(&o.model)?;
    cfg.max_seq_len = cfg.max_seq_len.max(o.seq);
    let compute = o.compute.resolve()?;
    let device = compute.device;
    let mut model = Llama::new(&cfg, device, 0);
    model.set_precision(compute.precision);
    let params = SparseLocoParams::default();
    let schedule = ScheduleParams {
        warmup_steps: 0,
        ..ScheduleParams::default()
    };
    let mut opt = inner_adamw(&params, &model.vs)?;
    let tokens = Tensor::randint(cfg.vocab_size, [o.batch, o.seq + 1], (Kind::Int64, device));
    let mut loss = Tensor::zeros([], (Kind::Float, device));
    for step in 0..o.warmup {
        loss = inner_step(&mut opt, &model, &tokens, step as u64, &params, &schedule);
    }
    super::sync(device);
    let started = Instant::now();
    for step in 0..o.steps {
        let at = (o.warmup + step) as u64;
        loss = inner_step(&mut opt, &model, &tokens, at, &params, &schedule);
    }
    super::sync(device);
    let seconds = started.elapsed().as_secs_f64();
    let final_loss = loss.double_value(&[]);

    let parameters = model.num_parameters();
    let matmul_parameters = matmul_parameters(&cfg, parameters);
    let flops_per_token = flops_per_token(&cfg, matmul_parameters, o.seq);
    let tokens_per_sec = (o.batch * o.seq) as f64 * o.steps as f64 / seconds;
    let achieved_tflops = flops_per_token * tokens_per_sec / 1e12;
    let gpu = match device {
        Device::Cuda(i) => nvml::gpu_info(i as u32),
        _ => None,
    };
    let peak_tflops = o
        .peak_tflops
        .or_else(|| gpu.as_ref().and_then(|g| known_peak(&g.name)));
    let window_steps = Hparams::default().batches_per_window();
    let memory_bytes = match &gpu {
        Some(g) => Some(g.memory_used),
        None => nvml::peak_rss(),
    };
    Ok(TrainBench {
        model: o.model.clone(),
        device: format!("{device:?}"),
        gpu: gpu.map(|g| g.name),
        precision: compute.precision,
        parameters,
        matmul_parameters,
        seq: o.seq,
        batch: o.batch,
        steps: o.steps,
        step_ms: seconds * 1e3 / o.steps as f64,
        window_steps,
        window_ms: seconds * 1e3 / o.steps as f64 * window_steps as f64,
        tokens_per_sec,
        flops_per_token,
        achieved_tflops,
        peak_tflops,
        mfu: peak_tflops.map(|p| achieved_tflops / p),
        memory_bytes,
        final_loss,
    })
}

impl TrainBench {
    pub fn summary(&self) -> String {
        let mfu = self
            .mfu
            .map(|m| format!("{:.1}% MFU", m * 100.0))
            .unwrap_or_else(|| "MFU unknown (no --peak-tflops)".into());
        format!(
            "{} on {} {:?}: {:.0} tokens/s, {:.1} ms/step, {:.2} TFLOP/s, {mfu}",
            self.model,
            self.gpu.as_deref().unwrap_or(&self.device),
            self.precision,
            self.tokens_per_sec,
            self.step_ms,
            self.achieved_tflops
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_and_peaks() {
        let cfg = ModelConfig::preset("150M").unwrap();
        // 150M: untied, so the 32000 x 1024 input table is not a matmul.
        assert_eq!(
            matmul_parameters(&cfg, 214_983_680),
            214_983_680 - 32_768_000
        );
        let f = flops_per_token(&cfg, 182_215_680, 2048);
        assert_eq!(f, 6.0 * 182_215_680.0 + 12.0 * 12.0 * 1024.0 * 2048.0);
        assert_eq!(known_peak("NVIDIA H100 80GB HBM3"), Some(989.4));
        assert_eq!(known_peak("NVIDIA H100 PCIe"), Some(756.0));
        assert_eq!(known_peak("NVIDIA H200"), Some(989.4));
        assert_eq!(known_peak("NVIDIA A10G"), Some(70.0));
        assert_eq!(known_peak("Some Future GPU"), None);
    }
}
