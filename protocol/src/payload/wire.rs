//! The payload's wire names, written by [`super::Payload::to_bytes`] and read back by the
//! validator: one definition for both sides.

/// Metadata keys of the safetensors header.
pub mod key {
    pub const FORMAT: &str = "format";
    pub const VERSION: &str = "version";
    pub const WINDOW: &str = "window";
    pub const UID: &str = "uid";
    pub const HOTKEY: &str = "hotkey";
    pub const HPARAMS_DIGEST: &str = "hparams_digest";
    pub const CODEC: &str = "codec";
    pub const PARAMS: &str = "params";
    pub const MODEL_SAMPLE: &str = "model_sample";
    /// SHA-256 over the other metadata and every tensor's bytes.
    pub const SHA256: &str = "sha256";
    /// The hotkey's sr25519 signature over the signing message.
    pub const SIGNATURE: &str = "signature";
}

/// Suffix of a parameter's packed block-local indices tensor.
pub const INDICES_SUFFIX: &str = ".idx";
/// Suffix of a parameter's values tensor (f32, or quantised codes).
pub const VALUES_SUFFIX: &str = ".val";
/// Suffix of a parameter's quantisation parameters tensor (`[shift, scale, lookup…]`).
pub const QUANT_SUFFIX: &str = ".qp";

/// The indices tensor of parameter `name`.
pub fn indices(name: &str) -> String {
    format!("{name}{INDICES_SUFFIX}")
}

/// The values tensor of parameter `name`.
pub fn values(name: &str) -> String {
    format!("{name}{VALUES_SUFFIX}")
}

/// The quantisation parameters tensor of parameter `name`.
pub fn quant(name: &str) -> String {
    format!("{name}{QUANT_SUFFIX}")
}
