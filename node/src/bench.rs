//! Codec benchmark: encode and decode time per parameter shape and for the whole model,
//! payload size and compression ratio versus fp32.

use crate::codec::Codec;
use crate::codec::payload::{Payload, PayloadMeta, PayloadValidator};
use crate::hparams::{CodecParams, ModelConfig};
use crate::model::parameter_shapes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Serialize)]
pub struct ShapeFigures {
    pub shape: Vec<i64>,
    /// How many parameters of the model have this shape.
    pub count: usize,
    pub block: [i64; 2],
    pub k: i64,
    /// Transform + top-k + quantise + pack + serialise, one tensor.
    pub encode_ms: f64,
    /// Validate + unpack + dequantise + scatter-mean + inverse transform, one peer.
    pub decode_1_ms: f64,
    /// The same for `peers` peers merged at once.
    pub decode_n_ms: f64,
    pub payload_bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct CodecBench {
    pub model: String,
    pub device: String,
    pub codec: CodecParams,
    pub parameters: i64,
    pub peers: usize,
    pub shapes: Vec<ShapeFigures>,
    pub total_encode_ms: f64,
    pub total_decode_1_ms: f64,
    pub total_decode_n_ms: f64,
    pub decode_n_over_1: f64,
    pub payload_bytes: usize,
    pub fp32_bytes: u64,
    pub compression_ratio: f64,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Median of `reps` timings of `f`.
fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            ms(t)
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

pub fn codec_bench(
    model: &str,
    cfg: &ModelConfig,
    codec_params: &CodecParams,
    peers: usize,
    reps: usize,
    device: Device,
) -> CodecBench {
    let peers = peers.max(1);
    let mut by_shape: BTreeMap<Vec<i64>, usize> = BTreeMap::new();
    for (_, shape) in parameter_shapes(cfg) {
        *by_shape.entry(shape).or_default() += 1;
    }
    tch::manual_seed(0);
    let mut shapes = Vec::new();
    for (shape, count) in by_shape {
        let codec = Codec::new(codec_params, &[("p".into(), shape.clone())]);
        let validator = PayloadValidator::new(&codec);
        let layout = &codec.layouts[0];
        let meta = |uid| PayloadMeta {
            window: 0,
            uid,
            hotkey: String::new(),
            hparams_digest: String::new(),
        };
        let encode = |uid: u16, x: &Tensor| {
            let sel = codec.encode(std::slice::from_ref(x));
            Payload::from_selected(meta(uid), &codec, &sel).to_bytes(&codec)
        };
        let inputs: Vec<Tensor> = (0..peers)
            .map(|_| Tensor::randn(shape.as_slice(), (Kind::Float, device)))
            .collect();
        let mut bytes = Vec::new();
        let encode_ms = time_ms(reps, || {
            bytes = encode(0, &inputs[0]);
            sync(device);
        });
        let payloads: Vec<Vec<u8>> = inputs
            .iter()
            .enumerate()
            .map(|(i, x)| encode(i as u16, x))
            .collect();
        let decode = |n: usize| {
            let sel: Vec<_> = payloads[..n]
                .iter()
                .map(|b| {
                    validator
                        .validate(b)
                        .expect("own payload is valid")
                        .selected(&codec, device)
                })
                .collect();
            let refs: Vec<_> = sel.iter().map(|s| &s[0]).collect();
            let out = codec.batch_decode(layout, &refs);
            sync(device);
            out
        };
        let decode_1_ms = time_ms(reps, || {
            let _ = decode(1);
        });
        let decode_n_ms = time_ms(reps, || {
            let _ = decode(peers);
        });
        shapes.push(ShapeFigures {
            block: [layout.h, layout.w],
            k: layout.k,
            shape,
            count,
            encode_ms,
            decode_1_ms,
            decode_n_ms,
            payload_bytes: bytes.len(),
        });
    }
    let sum = |f: &dyn Fn(&ShapeFigures) -> f64| {
        shapes.iter().map(|s| f(s) * s.count as f64).sum::<f64>()
    };
    let total_encode_ms = sum(&|s| s.encode_ms);
    let total_decode_1_ms = sum(&|s| s.decode_1_ms);
    let total_decode_n_ms = sum(&|s| s.decode_n_ms);
    // Whole-model payload: one real serialisation, header included (encoded one parameter
    // at a time, so the model's fp32 tensors never all exist at once).
    let full = Codec::new(codec_params, &parameter_shapes(cfg));
    let selected: Vec<_> = full
        .layouts
        .iter()
        .map(|l| full.encode_tensor(l, &Tensor::randn(l.shape.as_slice(), (Kind::Float, device))))
        .collect();
    let meta = PayloadMeta {
        window: 0,
        uid: 0,
        hotkey: String::new(),
        hparams_digest: String::new(),
    };
    let payload_bytes = Payload::from_selected(meta, &full, &selected)
        .to_bytes(&full)
        .len();
    let parameters: i64 = parameter_shapes(cfg)
        .iter()
        .map(|(_, s)| s.iter().product::<i64>())
        .sum();
    let fp32_bytes = parameters as u64 * 4;
    CodecBench {
        model: model.into(),
        device: format!("{device:?}"),
        codec: codec_params.clone(),
        parameters,
        peers,
        shapes,
        total_encode_ms,
        total_decode_1_ms,
        total_decode_n_ms,
        decode_n_over_1: total_decode_n_ms / total_decode_1_ms.max(1e-9),
        payload_bytes,
        fp32_bytes,
        compression_ratio: fp32_bytes as f64 / payload_bytes.max(1) as f64,
    }
}

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
    sparseloco: &crate::hparams::Hparams,
    demo: &crate::hparams::Hparams,
    pages: &crate::data::Pages,
    miners: u16,
    windows: u64,
) -> anyhow::Result<ConvergenceBench> {
    use crate::data::window_batches;
    use crate::network::local::LocalNetwork;
    use crate::train::{eval_loss, eval_pages};

    let h = sparseloco.sparseloco.inner_steps;
    let mut demo = demo.clone();
    demo.demo.batches_per_window = h; // the same tokens per window in both modes
    let held_out = eval_pages(sparseloco, pages);
    let tokens =
        miners as u64 * windows * h * (sparseloco.data.batch_size * sparseloco.data.seq_len) as u64;

    // (a) AdamW in one process, each step on every miner's micro-batch of that step.
    let started = Instant::now();
    let cfg = sparseloco.model_config()?;
    let model = crate::model::Llama::new(&cfg, Device::Cpu, sparseloco.data.seed as i64);
    let initial_eval_loss = eval_loss(&model, pages, &held_out);
    let s = &sparseloco.sparseloco;
    let mut opt = crate::optim::inner_adamw(s, &model.vs)?;
    let sampler = crate::data::PageSampler::new(
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
            opt.set_lr(crate::optim::schedule::lr_at(
                step,
                s.inner_lr,
                &sparseloco.schedule,
            ));
            opt.zero_grad();
            let loss = model.loss(&pages.batch(&all, Device::Cpu));
            loss.backward();
            opt.clip_grad_norm(s.grad_clip);
            opt.step();
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
            let mut refs: Vec<&mut crate::network::miner::Miner> = ms.iter_mut().collect();
            net.window(w, &mut refs, &mut validator).await?;
        }
        let final_eval_loss = eval_loss(&validator.engine.model, pages, &held_out);
        let uploads = ms[0]
            .ctx
            .own_store
            .list(&ms[0].ctx.keys.gradients_prefix())
            .await?;
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
