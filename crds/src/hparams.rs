//! Hyperparameters: one TOML file holds the model, data, codec and update-rule settings.
//!
//! Every field has a default, so a file only lists what it changes. The SHA-256 digest of the
//! canonical JSON form goes into every payload, so peers with different settings are rejected.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum HparamsError {
    #[error("cannot read hyperparameters file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid hyperparameters TOML: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("unknown model size {0:?} (known: tiny, small, 150M, 1B)")]
    UnknownModel(String),
    #[error("invalid hyperparameters: {0}")]
    Invalid(String),
}

/// Shape of the LLaMA-style decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    pub num_kv_heads: i64,
    pub ffn_size: i64,
    pub max_seq_len: i64,
    pub rope_theta: f64,
    pub norm_eps: f64,
    pub tie_embeddings: bool,
}

impl ModelConfig {
    /// Named sizes. `150M` and `1B` follow the Python network's shapes.
    pub fn preset(name: &str) -> Result<Self, HparamsError> {
        let base = |hidden, layers, heads, kv, ffn, vocab, seq, tie| ModelConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            num_layers: layers,
            num_heads: heads,
            num_kv_heads: kv,
            ffn_size: ffn,
            max_seq_len: seq,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
            tie_embeddings: tie,
        };
        Ok(match name {
            "tiny" => base(64, 2, 4, 2, 192, 4096, 256, true),
            "small" => base(256, 4, 8, 4, 704, 4096, 512, true),
            "150M" => base(1024, 12, 16, 16, 2688, 32000, 2048, false),
            "1B" => base(2048, 16, 8, 8, 8192, 32000, 2048, false),
            other => return Err(HparamsError::UnknownModel(other.to_string())),
        })
    }

    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_heads
    }

    pub fn validate(&self) -> Result<(), HparamsError> {
        let bad = |m: &str| Err(HparamsError::Invalid(format!("model: {m}")));
        if self.vocab_size <= 0 || self.hidden_size <= 0 || self.num_layers <= 0 {
            return bad("vocab_size, hidden_size and num_layers must be positive");
        }
        if self.num_heads <= 0 || self.hidden_size % self.num_heads != 0 {
            return bad("hidden_size must be a multiple of num_heads");
        }
        if self.head_dim() % 2 != 0 {
            return bad("head dimension must be even for RoPE");
        }
        if self.num_kv_heads <= 0 || self.num_heads % self.num_kv_heads != 0 {
            return bad("num_heads must be a multiple of num_kv_heads");
        }
        if self.ffn_size <= 0 || self.max_seq_len <= 1 {
            return bad("ffn_size must be positive and max_seq_len > 1");
        }
        Ok(())
    }
}

/// Which outer update rule the node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OuterMode {
    /// The seed's DeMo rule: momentum, weight decay, compressed momentum, sign-SGD step.
    Demo,
    /// SparseLoCo: H inner AdamW steps, compressed pseudo-gradient with error feedback.
    Sparseloco,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataParams {
    /// Tokens per training sequence (a page holds `seq_len + 1` tokens).
    pub seq_len: i64,
    /// Sequences per micro-batch.
    pub batch_size: i64,
    /// Pages assigned to one uid in one window.
    pub pages_per_window: u64,
    /// Network-wide seed of the page sampler.
    pub seed: u64,
}

impl Default for DataParams {
    fn default() -> Self {
        Self {
            seq_len: 64,
            batch_size: 8,
            pages_per_window: 16,
            seed: 0x7e3a_1a2b,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodecParams {
    /// Chunked DCT-II before top-k (DeMo); off for SparseLoCo.
    pub use_dct: bool,
    /// Target chunk size per dimension (the chunk is the largest divisor <= this).
    pub chunk: i64,
    /// Coefficients kept per block (clamped to the block size and made even).
    pub topk: i64,
    /// Bits per transmitted value: 2, 8, or 32 (unquantised f32).
    pub value_bits: u8,
    /// Upper bound on an accepted payload, in bytes; 0 = derived from the model.
    pub max_payload_bytes: u64,
}

impl Default for CodecParams {
    fn default() -> Self {
        Self {
            use_dct: false,
            chunk: 64,
            topk: 64,
            value_bits: 2,
            max_payload_bytes: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleParams {
    pub warmup_steps: u64,
    pub total_steps: u64,
    /// Final LR as a fraction of the peak LR at the end of the cosine.
    pub min_lr_factor: f64,
}

impl Default for ScheduleParams {
    fn default() -> Self {
        Self {
            warmup_steps: 20,
            total_steps: 2000,
            min_lr_factor: 0.1,
        }
    }
}

/// The seed's rule (DeMo). Defaults follow the DeMo paper, tuned for short runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoParams {
    pub lr: f64,
    pub momentum_decay: f64,
    pub weight_decay: f64,
    /// Micro-batches whose gradients are accumulated in one window.
    pub batches_per_window: u64,
}

impl Default for DemoParams {
    fn default() -> Self {
        Self {
            lr: 4e-4,
            momentum_decay: 0.999,
            weight_decay: 0.1,
            batches_per_window: 2,
        }
    }
}

/// SparseLoCo, the current network's rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SparseLocoParams {
    pub inner_steps: u64,
    pub inner_lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub error_decay: f64,
    pub outer_lr: f64,
}

impl Default for SparseLocoParams {
    fn default() -> Self {
        Self {
            inner_steps: 30,
            inner_lr: 1.3e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 1.0,
            error_decay: 0.95,
            outer_lr: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OuterParams {
    pub mode: OuterMode,
}

impl Default for OuterParams {
    fn default() -> Self {
        Self {
            mode: OuterMode::Sparseloco,
        }
    }
}

/// How the model is chosen in the file: a named size, with optional field overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelParams {
    pub size: String,
    /// Explicit shape; when present it replaces the named size.
    pub config: Option<ModelConfig>,
}

impl Default for ModelParams {
    fn default() -> Self {
        Self {
            size: "tiny".into(),
            config: None,
        }
    }
}

/// Protocol settings of the network: windows, scoring, checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkParams {
    /// Protocol version: the storage key prefix; nodes of other versions never meet.
    pub version: String,
    pub blocks_per_window: u64,
    /// Moving average of scores: s = alpha * s_i + (1 - alpha) * s.
    pub ema_alpha: f64,
    /// Score multiplier for a missing, late or invalid submission.
    pub missing_penalty: f64,
    /// 0: weights are the non-negative scores normalised; > 0: softmax(score / T).
    pub softmax_temperature: f64,
    /// Pages of a miner's own data (and as many random pages) used to score it.
    pub eval_pages: u64,
    /// Miners scored per window (a rotating fair sample when there are more).
    pub eval_miners: usize,
    /// Set weights every N windows.
    pub weights_every: u64,
    /// The top validator publishes a checkpoint every N windows.
    pub checkpoint_every: u64,
    /// Uploads later than the next window's start plus this are too late.
    pub upload_grace_ms: u64,
    /// Tolerated clock difference between nodes and the store.
    pub clock_skew_ms: u64,
    /// Owners delete their gradients older than this many windows.
    pub retention_windows: u64,
}

impl Default for NetworkParams {
    fn default() -> Self {
        Self {
            version: "1".into(),
            blocks_per_window: 5,
            ema_alpha: 0.3,
            missing_penalty: 0.75,
            softmax_temperature: 0.0,
            eval_pages: 4,
            eval_miners: 15,
            weights_every: 1,
            checkpoint_every: 5,
            upload_grace_ms: 2000,
            clock_skew_ms: 2000,
            retention_windows: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hparams {
    pub model: ModelParams,
    pub data: DataParams,
    pub codec: CodecParams,
    pub schedule: ScheduleParams,
    pub outer: OuterParams,
    pub demo: DemoParams,
    pub sparseloco: SparseLocoParams,
    pub network: NetworkParams,
}

impl Hparams {
    pub fn from_toml(text: &str) -> Result<Self, HparamsError> {
        let hp: Hparams = toml::from_str(text)?;
        hp.validate()?;
        Ok(hp)
    }

    pub fn load(path: &Path) -> Result<Self, HparamsError> {
        let text = std::fs::read_to_string(path).map_err(|source| HparamsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The model shape: the explicit config if given, else the named preset.
    pub fn model_config(&self) -> Result<ModelConfig, HparamsError> {
        match &self.model.config {
            Some(c) => Ok(c.clone()),
            None => ModelConfig::preset(&self.model.size),
        }
    }

    pub fn validate(&self) -> Result<(), HparamsError> {
        let bad = |m: String| Err(HparamsError::Invalid(m));
        let model = self.model_config()?;
        model.validate()?;
        if self.data.seq_len < 2 || self.data.seq_len > model.max_seq_len {
            return bad(format!(
                "data.seq_len must be in [2, {}] (model.max_seq_len)",
                model.max_seq_len
            ));
        }
        if self.data.batch_size < 1 || self.data.pages_per_window < 1 {
            return bad("data.batch_size and data.pages_per_window must be >= 1".into());
        }
        if !(1..=64).contains(&self.codec.chunk) {
            return bad("codec.chunk must be in [1, 64] (12-bit indices)".into());
        }
        if self.codec.topk < 1 {
            return bad("codec.topk must be >= 1".into());
        }
        if ![2, 8, 32].contains(&self.codec.value_bits) {
            return bad("codec.value_bits must be 2, 8 or 32".into());
        }
        if self.schedule.total_steps == 0 || self.schedule.warmup_steps > self.schedule.total_steps
        {
            return bad("schedule: need 0 <= warmup_steps <= total_steps, total_steps > 0".into());
        }
        if !(0.0..=1.0).contains(&self.schedule.min_lr_factor) {
            return bad("schedule.min_lr_factor must be in [0, 1]".into());
        }
        let d = &self.demo;
        if d.lr <= 0.0 || !(0.0..1.0).contains(&d.momentum_decay) || d.batches_per_window == 0 {
            return bad(
                "demo: need lr > 0, 0 <= momentum_decay < 1, batches_per_window >= 1".into(),
            );
        }
        let s = &self.sparseloco;
        if s.inner_steps == 0 || s.inner_lr <= 0.0 || s.outer_lr <= 0.0 {
            return bad("sparseloco: need inner_steps >= 1, inner_lr > 0, outer_lr > 0".into());
        }
        if !(0.0..=1.0).contains(&s.error_decay) {
            return bad("sparseloco.error_decay must be in [0, 1]".into());
        }
        let n = &self.network;
        if n.blocks_per_window == 0 || n.weights_every == 0 || n.checkpoint_every == 0 {
            return bad(
                "network: blocks_per_window, weights_every, checkpoint_every must be >= 1".into(),
            );
        }
        if !(0.0..=1.0).contains(&n.ema_alpha) || !(0.0..=1.0).contains(&n.missing_penalty) {
            return bad("network: ema_alpha and missing_penalty must be in [0, 1]".into());
        }
        if n.version.is_empty()
            || !n
                .version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            return bad("network.version must be non-empty letters, digits and dots".into());
        }
        Ok(())
    }

    /// Hex SHA-256 of the canonical JSON of these settings; peers must agree on it.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("hyperparameters serialise to JSON");
        hex::encode(Sha256::digest(&json))
    }

    /// Micro-batches of training per window under the chosen rule.
    pub fn batches_per_window(&self) -> u64 {
        match self.outer.mode {
            OuterMode::Demo => self.demo.batches_per_window,
            OuterMode::Sparseloco => self.sparseloco.inner_steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults_and_presets_validate() {
        let hp = Hparams::from_toml("").unwrap();
        assert_eq!(hp, Hparams::default());
        for name in ["tiny", "small", "150M", "1B"] {
            ModelConfig::preset(name).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected() {
        assert!(matches!(
            Hparams::from_toml("[codec]\ntopk_typo = 3"),
            Err(HparamsError::Parse(_))
        ));
        assert!(matches!(
            Hparams::from_toml("[codec]\nvalue_bits = 3"),
            Err(HparamsError::Invalid(_))
        ));
        assert!(matches!(
            Hparams::from_toml("[model]\nsize = \"7B\""),
            Err(HparamsError::UnknownModel(_))
        ));
    }

    #[test]
    fn digest_changes_with_any_setting() {
        let a = Hparams::default();
        let mut b = a.clone();
        b.codec.topk = 32;
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), Hparams::default().digest());
    }
}
