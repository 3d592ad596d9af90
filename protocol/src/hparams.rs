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
    /// Pages assigned to one uid in one window; at least one per sequence trained in the
    /// window (batches per window x batch size), so no page is trained on twice.
    pub pages_per_window: u64,
    /// Network-wide seed of the page sampler.
    pub seed: u64,
}

impl Default for DataParams {
    fn default() -> Self {
        Self {
            seq_len: 64,
            batch_size: 8,
            // inner_steps x batch_size: each page is trained on once per window.
            pages_per_window: 240,
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

/// The inner learning-rate schedule, as the Python network defines it: a linear warm-up from
/// `warmup_start_factor` x peak to the peak over `warmup_steps`, then a cosine over
/// `cosine_steps` (counted from the warm-up's end) down to `min_lr_factor` x peak, held there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleParams {
    pub warmup_steps: u64,
    /// LR at step 0 as a fraction of the peak (torch's `LinearLR` `start_factor`).
    pub warmup_start_factor: f64,
    /// Length of the cosine after the warm-up (torch's `CosineAnnealingLR` `T_max`).
    pub cosine_steps: u64,
    /// Final LR as a fraction of the peak LR at the end of the cosine.
    pub min_lr_factor: f64,
}

impl Default for ScheduleParams {
    fn default() -> Self {
        Self {
            warmup_steps: 20,
            warmup_start_factor: 0.1,
            cosine_steps: 2000,
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
    /// An evaluated update is applied at this fraction of the outer step (the Python
    /// network's `eval_lr_factor`): a measurement near the current model, not a full step.
    pub eval_lr_factor: f64,
    /// A miner whose payload's model sample differs from the validator's by more than this
    /// (relative L2) trained on another model: its window counts as an invalid submission.
    pub sync_tolerance: f64,
    /// Index overlap (shared top-k coordinates per block) at which two payloads count as one
    /// copied from the other (honest miners measured 0.12 to 0.36; a copy is 1).
    pub copy_overlap: f64,
    /// A miner whose last this many scored windows were invalid or raised the loss is left
    /// out of every node's outer step until it scores positive again (0: never).
    pub exclude_after: u32,
    /// A payload whose value norm is above this many times the window's lower-median payload
    /// norm (an amplified update) is left out and scores as invalid (0: never).
    pub norm_outlier: f64,
    /// A payload whose values agree with the window's others less than this (median cosine on
    /// shared coordinates; honest miners measured 0.82 and above, noise near 0, a negated
    /// update near -1) is left out and scores as invalid (-1: never).
    pub min_agreement: f64,
    /// A payload whose value norm is zero or under this fraction of the window's lower-median
    /// non-zero norm carries no training signal (a free-rider): it is left out, scores as
    /// invalid, and takes no part in the window's norm and agreement votes (0: only zeros).
    pub min_signal: f64,
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
    /// A miner commits its payload's digest this long before uploading the payload: at
    /// least the store's time resolution (S3 keeps Last-Modified to the second), so no copy's
    /// commitment can share its source's second.
    pub digest_lead_ms: u64,
}

impl Default for NetworkParams {
    fn default() -> Self {
        Self {
            version: "1".into(),
            blocks_per_window: 5,
            ema_alpha: 0.3,
            missing_penalty: 0.75,
            softmax_temperature: 0.0,
            eval_pages: 16,
            eval_miners: 15,
            eval_lr_factor: 0.2,
            sync_tolerance: 1e-3,
            copy_overlap: 0.6,
            exclude_after: 3,
            norm_outlier: 5.0,
            min_agreement: 0.3,
            min_signal: 0.05,
            weights_every: 1,
            checkpoint_every: 5,
            upload_grace_ms: 2000,
            clock_skew_ms: 2000,
            retention_windows: 100,
            digest_lead_ms: 1000,
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
        let model = self.model_config()?;
        model.validate()?;
        self.validate_data(&model)?;
        self.validate_codec_and_schedule()?;
        self.validate_rules()?;
        self.network.validate()
    }

    /// Sequences fit the model, and no page is trained on twice in a window.
    fn validate_data(&self, model: &ModelConfig) -> Result<(), HparamsError> {
        let bad = |m: String| Err(HparamsError::Invalid(m));
        if self.data.seq_len < 2 || self.data.seq_len > model.max_seq_len {
            return bad(format!(
                "data.seq_len must be in [2, {}] (model.max_seq_len)",
                model.max_seq_len
            ));
        }
        if self.data.batch_size < 1 || self.data.pages_per_window < 1 {
            return bad("data.batch_size and data.pages_per_window must be >= 1".into());
        }
        let sequences = self.batches_per_window() * self.data.batch_size as u64;
        // Fewer pages are trained on twice; more are partly never trained on, and the
        // validator's secret pages, drawn from all of them, then measure mostly noise.
        if self.data.pages_per_window != sequences {
            return bad(format!(
                "data.pages_per_window ({}) must equal the sequences trained per window \
                 ({} batches x batch_size {} = {sequences}): each assigned page is trained on once",
                self.data.pages_per_window,
                self.batches_per_window(),
                self.data.batch_size
            ));
        }
        Ok(())
    }

    fn validate_codec_and_schedule(&self) -> Result<(), HparamsError> {
        let bad = |m: String| Err(HparamsError::Invalid(m));
        if !(1..=64).contains(&self.codec.chunk) {
            return bad("codec.chunk must be in [1, 64] (12-bit indices)".into());
        }
        if self.codec.topk < 1 {
            return bad("codec.topk must be >= 1".into());
        }
        if ![2, 8, 32].contains(&self.codec.value_bits) {
            return bad("codec.value_bits must be 2, 8 or 32".into());
        }
        if self.schedule.cosine_steps == 0 {
            return bad("schedule.cosine_steps must be >= 1".into());
        }
        if !(0.0..=1.0).contains(&self.schedule.warmup_start_factor) {
            return bad("schedule.warmup_start_factor must be in [0, 1]".into());
        }
        if !(0.0..=1.0).contains(&self.schedule.min_lr_factor) {
            return bad("schedule.min_lr_factor must be in [0, 1]".into());
        }
        Ok(())
    }

    /// The update rules' own settings.
    fn validate_rules(&self) -> Result<(), HparamsError> {
        let bad = |m: String| Err(HparamsError::Invalid(m));
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
        Ok(())
    }

    /// Hex SHA-256 of the canonical JSON of these settings; peers must agree on it.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("hyperparameters serialise to JSON");
        hex::encode(Sha256::digest(&json))
    }

    /// The largest |value| an honest payload can carry under these settings, with a wide
    /// margin; the payload validator rejects a payload that decodes beyond it (formula and
    /// margin: docs/algorithm.md, "Value bound").
    /// SparseLoCo: a window's pseudo-gradient moves a coordinate by at most
    /// inner_steps x inner_lr x (Adam's step, ~1 and below 10, + weight decay), the error
    /// buffer sums it with weight 1 / (1 - error_decay), and the outer LR scales it.
    /// DeMo: the momentum sums lr x gradient with weight 1 / (1 - decay); a gradient entry of
    /// an LM is far below 1e2, and a DCT coefficient sums a 64 x 64 chunk (x 64).
    pub fn update_value_bound(&self) -> f64 {
        const ADAM_STEP_MAX: f64 = 10.0;
        const MARGIN: f64 = 10.0;
        match self.outer.mode {
            OuterMode::Sparseloco => {
                let s = &self.sparseloco;
                let memory = 1.0 / (1.0 - s.error_decay).max(0.01);
                MARGIN
                    * s.outer_lr
                    * s.inner_steps as f64
                    * s.inner_lr
                    * (ADAM_STEP_MAX + s.weight_decay)
                    * memory
            }
            OuterMode::Demo => {
                const GRADIENT_MAX: f64 = 1e2;
                let d = &self.demo;
                let memory = 1.0 / (1.0 - d.momentum_decay).max(1e-4);
                let transform = if self.codec.use_dct { 64.0 } else { 1.0 };
                MARGIN * d.lr * GRADIENT_MAX * memory * transform
            }
        }
    }

    /// Micro-batches of training per window under the chosen rule.
    pub fn batches_per_window(&self) -> u64 {
        match self.outer.mode {
            OuterMode::Demo => self.demo.batches_per_window,
            OuterMode::Sparseloco => self.sparseloco.inner_steps,
        }
    }
}

impl NetworkParams {
    /// Every rate, ratio and threshold within its meaningful range.
    pub fn validate(&self) -> Result<(), HparamsError> {
        let bad = |m: String| Err(HparamsError::Invalid(m));
        let n = self;
        if n.blocks_per_window == 0 || n.weights_every == 0 || n.checkpoint_every == 0 {
            return bad(
                "network: blocks_per_window, weights_every, checkpoint_every must be >= 1".into(),
            );
        }
        if !(0.0..=1.0).contains(&n.ema_alpha) || !(0.0..=1.0).contains(&n.missing_penalty) {
            return bad("network: ema_alpha and missing_penalty must be in [0, 1]".into());
        }
        if !(n.eval_lr_factor > 0.0 && n.eval_lr_factor <= 1.0) {
            return bad("network.eval_lr_factor must be in (0, 1]".into());
        }
        if !(n.min_signal >= 0.0 && n.min_signal < 1.0) {
            return bad("network.min_signal must be in [0, 1)".into());
        }
        if !(n.copy_overlap > 0.0 && n.copy_overlap <= 1.0) {
            return bad("network.copy_overlap must be in (0, 1]".into());
        }
        if !(n.norm_outlier == 0.0 || (n.norm_outlier >= 1.0 && n.norm_outlier.is_finite())) {
            return bad("network.norm_outlier must be 0 (off) or a finite number >= 1".into());
        }
        if !(-1.0..=1.0).contains(&n.min_agreement) {
            return bad("network.min_agreement must be in [-1, 1]".into());
        }
        if !(n.sync_tolerance > 0.0 && n.sync_tolerance.is_finite()) {
            return bad("network.sync_tolerance must be a positive number".into());
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
        // A signal floor of the whole median or more would call every payload a free-rider.
        for bad in ["1.0", "-0.1", "nan"] {
            let err = Hparams::from_toml(&format!("[network]\nmin_signal = {bad}"));
            assert!(
                matches!(&err, Err(HparamsError::Invalid(m)) if m.contains("min_signal")),
                "{bad}: {err:?}"
            );
        }
        Hparams::from_toml("[network]\nmin_signal = 0.0").unwrap();
    }

    #[test]
    fn digest_changes_with_any_setting() {
        let a = Hparams::default();
        let mut b = a.clone();
        b.codec.topk = 32;
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), Hparams::default().digest());
    }

    #[test]
    fn pages_per_window_must_be_the_sequences_of_a_window() {
        let text = "[data]\nbatch_size = 8\npages_per_window = 16\n[sparseloco]\ninner_steps = 15";
        let err = Hparams::from_toml(text).unwrap_err().to_string();
        assert!(
            err.contains("pages_per_window (16)") && err.contains("120"),
            "{err}"
        );
        let text = "[data]\nbatch_size = 8\npages_per_window = 121\n[sparseloco]\ninner_steps = 15";
        let err = Hparams::from_toml(text).unwrap_err().to_string();
        assert!(err.contains("pages_per_window (121)"), "{err}");
        let text = "[data]\nbatch_size = 8\npages_per_window = 120\n[sparseloco]\ninner_steps = 15";
        Hparams::from_toml(text).unwrap();
        // DeMo trains batches_per_window batches.
        let text = "[outer]\nmode = \"demo\"\n[data]\nbatch_size = 8\npages_per_window = 16\n[demo]\nbatches_per_window = 2";
        Hparams::from_toml(text).unwrap();
    }

    #[test]
    fn the_value_bound_sits_far_above_an_honest_update_and_follows_the_settings() {
        let hp = Hparams::default();
        // Default SparseLoCo: 30 AdamW steps of at most about lr each, an error buffer of
        // weight 20: an honest value stays below 30 x 1.3e-4 x 20 = 0.078.
        let bound = hp.update_value_bound();
        assert!(bound > 50.0 * 0.078 && bound < 1e3, "{bound}");
        let mut faster = hp.clone();
        faster.sparseloco.inner_lr *= 10.0;
        assert!((faster.update_value_bound() / bound - 10.0).abs() < 1e-9);
        let mut demo = hp.clone();
        demo.outer.mode = OuterMode::Demo;
        assert!(demo.update_value_bound().is_finite() && demo.update_value_bound() > 0.0);
        // Far below what the 1e15 attack sends.
        assert!(demo.update_value_bound() < 1e9);
    }
}
