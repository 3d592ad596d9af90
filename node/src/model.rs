//! LLaMA-style decoder: RMSNorm, rotary position embeddings, SwiGLU feed-forward,
//! grouped-query attention and optionally tied input/output embeddings.
//!
//! Parameters live in one `VarStore`; [`Llama::named_parameters`] lists them sorted by name,
//! which is the positional order of every payload.

use crate::compute::Precision;
use crate::hparams::ModelConfig;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// `x · wᵀ` in `kind` (a no-op cast in f32).
fn project(x: &Tensor, layer: &nn::Linear, kind: Kind) -> Tensor {
    x.to_kind(kind).matmul(&layer.ws.to_kind(kind).tr())
}

fn init_normal() -> nn::Init {
    nn::Init::Randn {
        mean: 0.0,
        stdev: 0.02,
    }
}

fn linear(p: nn::Path, i: i64, o: i64) -> nn::Linear {
    nn::linear(
        p,
        i,
        o,
        nn::LinearConfig {
            ws_init: init_normal(),
            bs_init: None,
            bias: false,
        },
    )
}

#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(p: nn::Path, dim: i64, eps: f64) -> Self {
        Self {
            weight: p.var("weight", &[dim], nn::Init::Const(1.0)),
            eps,
        }
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        let norm = (x.square().mean_dim(-1, true, Kind::Float) + self.eps).rsqrt();
        x * norm * &self.weight
    }
}

#[derive(Debug)]
struct Attention {
    wq: nn::Linear,
    wk: nn::Linear,
    wv: nn::Linear,
    wo: nn::Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn new(p: nn::Path, cfg: &ModelConfig) -> Self {
        let hd = cfg.head_dim();
        Self {
            wq: linear(&p / "wq", cfg.hidden_size, cfg.num_heads * hd),
            wk: linear(&p / "wk", cfg.hidden_size, cfg.num_kv_heads * hd),
            wv: linear(&p / "wv", cfg.hidden_size, cfg.num_kv_heads * hd),
            wo: linear(&p / "wo", cfg.num_heads * hd, cfg.hidden_size),
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: hd,
        }
    }

    fn forward(&self, x: &Tensor, rope: &Rope, kind: Kind) -> Tensor {
        let (b, t, _) = x.size3().expect("attention input is [batch, time, hidden]");
        let split = |y: Tensor, h: i64| y.view([b, t, h, self.head_dim]).transpose(1, 2);
        let q = rope.apply(&split(project(x, &self.wq, kind), self.heads));
        let k = rope.apply(&split(project(x, &self.wk, kind), self.kv_heads));
        let v = split(project(x, &self.wv, kind), self.kv_heads);
        // Grouped-query attention: each key/value head serves heads / kv_heads query heads.
        let groups = self.heads / self.kv_heads;
        let (k, v) = if groups > 1 {
            (
                k.repeat_interleave_self_int(groups, 1, None),
                v.repeat_interleave_self_int(groups, 1, None),
            )
        } else {
            (k, v)
        };
        let y = Tensor::scaled_dot_product_attention::<Tensor>(
            &q, &k, &v, None, 0.0, true, None, false,
        );
        let y = y
            .transpose(1, 2)
            .contiguous()
            .view([b, t, self.heads * self.head_dim]);
        project(&y, &self.wo, kind)
    }
}

#[derive(Debug)]
struct FeedForward {
    w1: nn::Linear,
    w2: nn::Linear,
    w3: nn::Linear,
}

impl FeedForward {
    fn forward(&self, x: &Tensor, kind: Kind) -> Tensor {
        let gated = project(x, &self.w1, kind).silu() * project(x, &self.w3, kind);
        project(&gated, &self.w2, kind)
    }
}

#[derive(Debug)]
struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    ffn_norm: RmsNorm,
    ffn: FeedForward,
}

/// Rotary embeddings: cos/sin tables for every position up to max_seq_len.
#[derive(Debug)]
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(cfg: &ModelConfig, device: Device) -> Self {
        let half = cfg.head_dim() / 2;
        let inv_freq = Tensor::arange(half, (Kind::Float, device))
            .multiply_scalar(-2.0 * cfg.rope_theta.ln() / cfg.head_dim() as f64)
            .exp();
        let pos = Tensor::arange(cfg.max_seq_len, (Kind::Float, device));
        let angles = pos.outer(&inv_freq); // [T, half]
        Self {
            cos: angles.cos(),
            sin: angles.sin(),
        }
    }

    /// x: [batch, heads, time, head_dim]; rotates the two halves of each head.
    fn apply(&self, x: &Tensor) -> Tensor {
        let t = x.size()[2];
        let half = x.size()[3] / 2;
        let cos = self.cos.narrow(0, 0, t).to_kind(x.kind());
        let sin = self.sin.narrow(0, 0, t).to_kind(x.kind());
        let x1 = x.narrow(3, 0, half);
        let x2 = x.narrow(3, half, half);
        Tensor::cat(&[&x1 * &cos - &x2 * &sin, &x1 * &sin + &x2 * &cos], 3)
    }
}

/// The decoder. Owns its `VarStore`; one thread owns a model at a time.
pub struct Llama {
    pub vs: nn::VarStore,
    pub cfg: ModelConfig,
    embed: nn::Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<nn::Linear>,
    rope: Rope,
    precision: Precision,
}

impl Llama {
    /// A freshly initialised model; `seed` makes the initialisation reproducible.
    pub fn new(cfg: &ModelConfig, device: Device, seed: i64) -> Self {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let embed = nn::embedding(
            &root / "embed",
            cfg.vocab_size,
            cfg.hidden_size,
            nn::EmbeddingConfig {
                ws_init: init_normal(),
                ..Default::default()
            },
        );
        let blocks = (0..cfg.num_layers)
            .map(|i| {
                let p = &root / "layers" / i;
                Block {
                    attn_norm: RmsNorm::new(&p / "attn_norm", cfg.hidden_size, cfg.norm_eps),
                    attn: Attention::new(&p / "attn", cfg),
                    ffn_norm: RmsNorm::new(&p / "ffn_norm", cfg.hidden_size, cfg.norm_eps),
                    ffn: FeedForward {
                        w1: linear(&p / "ffn" / "w1", cfg.hidden_size, cfg.ffn_size),
                        w2: linear(&p / "ffn" / "w2", cfg.ffn_size, cfg.hidden_size),
                        w3: linear(&p / "ffn" / "w3", cfg.hidden_size, cfg.ffn_size),
                    },
                }
            })
            .collect();
        let norm = RmsNorm::new(&root / "norm", cfg.hidden_size, cfg.norm_eps);
        let lm_head = (!cfg.tie_embeddings)
            .then(|| linear(&root / "lm_head", cfg.hidden_size, cfg.vocab_size));
        Self {
            rope: Rope::new(cfg, device),
            vs,
            cfg: cfg.clone(),
            embed,
            blocks,
            norm,
            lm_head,
            precision: Precision::Fp32,
        }
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Compute in `precision` from now on (the parameters stay f32).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Logits [batch, time, vocab] for tokens [batch, time].
    /// Logits are f32 whatever the precision (the loss is taken in f32).
    pub fn forward(&self, tokens: &Tensor) -> Tensor {
        let kind = self.precision.kind();
        let mut x = tokens.apply(&self.embed);
        for b in &self.blocks {
            x = &x + b.attn.forward(&b.attn_norm.forward(&x), &self.rope, kind);
            x = &x + b.ffn.forward(&b.ffn_norm.forward(&x), kind);
        }
        let x = self.norm.forward(&x).to_kind(kind);
        let logits = match &self.lm_head {
            Some(head) => project(&x, head, kind),
            None => x.matmul(&self.embed.ws.to_kind(kind).tr()),
        };
        logits.to_kind(Kind::Float)
    }

    /// Mean next-token cross-entropy over a batch of pages [batch, seq_len + 1].
    pub fn loss(&self, pages: &Tensor) -> Tensor {
        let t = pages.size()[1];
        let inputs = pages.narrow(1, 0, t - 1);
        let targets = pages.narrow(1, 1, t - 1);
        let logits = self.forward(&inputs);
        logits
            .view([-1, self.cfg.vocab_size])
            .cross_entropy_for_logits(&targets.reshape([-1]))
    }

    /// All parameters sorted by name: the positional order of payloads.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut vars: Vec<_> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    pub fn num_parameters(&self) -> i64 {
        self.named_parameters()
            .iter()
            .map(|(_, t)| t.numel() as i64)
            .sum()
    }
}

/// Parameter names and shapes of a model configuration, sorted by name, without
/// allocating the model (used to build payload validators and benchmarks).
pub fn parameter_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<i64>)> {
    let h = cfg.hidden_size;
    let hd = cfg.head_dim();
    let mut shapes = vec![
        ("embed.weight".to_string(), vec![cfg.vocab_size, h]),
        ("norm.weight".to_string(), vec![h]),
    ];
    if !cfg.tie_embeddings {
        shapes.push(("lm_head.weight".into(), vec![cfg.vocab_size, h]));
    }
    for i in 0..cfg.num_layers {
        let p = |s: &str| format!("layers.{i}.{s}");
        shapes.push((p("attn_norm.weight"), vec![h]));
        shapes.push((p("ffn_norm.weight"), vec![h]));
        shapes.push((p("attn.wq.weight"), vec![cfg.num_heads * hd, h]));
        shapes.push((p("attn.wk.weight"), vec![cfg.num_kv_heads * hd, h]));
        shapes.push((p("attn.wv.weight"), vec![cfg.num_kv_heads * hd, h]));
        shapes.push((p("attn.wo.weight"), vec![h, cfg.num_heads * hd]));
        shapes.push((p("ffn.w1.weight"), vec![cfg.ffn_size, h]));
        shapes.push((p("ffn.w2.weight"), vec![h, cfg.ffn_size]));
        shapes.push((p("ffn.w3.weight"), vec![cfg.ffn_size, h]));
    }
    shapes.sort_by(|a, b| a.0.cmp(&b.0));
    shapes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_the_model_and_forward_runs() {
        let cfg = ModelConfig::preset("tiny").unwrap();
        let model = Llama::new(&cfg, Device::Cpu, 1);
        let names: Vec<(String, Vec<i64>)> = model
            .named_parameters()
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect();
        assert_eq!(names, parameter_shapes(&cfg));
        let pages = Tensor::randint(cfg.vocab_size, [2, 17], (Kind::Int64, Device::Cpu));
        let logits = model.forward(&pages.narrow(1, 0, 16));
        assert_eq!(logits.size(), vec![2, 16, cfg.vocab_size]);
        // A fresh model predicts close to uniform: loss near ln(vocab).
        let loss = model.loss(&pages).double_value(&[]);
        let uniform = (cfg.vocab_size as f64).ln();
        assert!(
            (loss - uniform).abs() < 0.5,
            "loss {loss} vs ln(V) {uniform}"
        );
    }

    #[test]
    fn untied_and_gqa_variants_have_their_parameters() {
        let mut cfg = ModelConfig::preset("tiny").unwrap();
        cfg.tie_embeddings = false;
        cfg.num_kv_heads = 1;
        let model = Llama::new(&cfg, Device::Cpu, 1);
        let names: Vec<String> = model.named_parameters().into_iter().map(|p| p.0).collect();
        assert!(names.contains(&"lm_head.weight".to_string()));
        let wk = model
            .named_parameters()
            .into_iter()
            .find(|(n, _)| n == "layers.0.attn.wk.weight")
            .unwrap()
            .1;
        assert_eq!(wk.size(), vec![cfg.head_dim(), cfg.hidden_size]);
        let pages = Tensor::randint(cfg.vocab_size, [1, 9], (Kind::Int64, Device::Cpu));
        assert!(model.loss(&pages).double_value(&[]).is_finite());
    }

    #[test]
    fn causal_masking_keeps_the_past_independent_of_the_future() {
        let cfg = ModelConfig::preset("tiny").unwrap();
        let model = Llama::new(&cfg, Device::Cpu, 3);
        let a = Tensor::from_slice(&[5i64, 6, 7, 8]).view([1, 4]);
        let b = Tensor::from_slice(&[5i64, 6, 7, 99]).view([1, 4]);
        let la = model.forward(&a).narrow(1, 0, 3);
        let lb = model.forward(&b).narrow(1, 0, 3);
        assert!(la.allclose(&lb, 1e-5, 1e-5, false));
    }

    /// One bf16 training step against f32 from the same weights and batch: the loss within
    /// 0.02 (bf16 keeps 8 bits of mantissa; the loss is taken in f32), every gradient
    /// pointing the same way (cosine > 0.99) with a norm within 3%. On CUDA too when there
    /// is one.
    #[test]
    fn a_bf16_step_follows_the_f32_step() {
        let mut devices = vec![Device::Cpu];
        if let Device::Cuda(i) = crate::compute::default_device() {
            devices.push(Device::Cuda(i));
        }
        let cfg = ModelConfig::preset("tiny").unwrap();
        for device in devices {
            let pages = Tensor::randint(cfg.vocab_size, [4, 33], (Kind::Int64, Device::Cpu))
                .to_device(device);
            let step = |precision| {
                let mut model = Llama::new(&cfg, device, 5);
                model.set_precision(precision);
                let loss = model.loss(&pages);
                loss.backward();
                let grads: Vec<Tensor> = model
                    .named_parameters()
                    .iter()
                    .map(|(_, p)| p.grad().to_device(Device::Cpu))
                    .collect();
                (loss.double_value(&[]), grads)
            };
            let (loss32, grads32) = step(Precision::Fp32);
            let (loss16, grads16) = step(Precision::Bf16);
            assert!(
                (loss32 - loss16).abs() < 0.02,
                "{device:?}: loss {loss32} vs {loss16}"
            );
            assert_ne!(loss32, loss16, "{device:?}: bf16 computes in bf16");
            for (a, b) in grads32.iter().zip(&grads16) {
                assert_eq!(b.kind(), Kind::Float, "gradients stay f32");
                let (na, nb) = (a.norm().double_value(&[]), b.norm().double_value(&[]));
                let cosine = (a * b).sum(Kind::Double).double_value(&[]) / (na * nb).max(1e-30);
                assert!(cosine > 0.99, "{device:?}: gradient cosine {cosine}");
                assert!(
                    (na - nb).abs() <= 0.03 * na,
                    "{device:?}: norm {na} vs {nb}"
                );
            }
        }
    }
}
