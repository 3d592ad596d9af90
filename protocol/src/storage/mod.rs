//! Object storage as the node sees it: one trait, a local-filesystem store (the embedded
//! default) and an S3 store (aws-sdk-s3: AWS S3, Cloudflare R2, MinIO, Garage).
//!
//! Every call is bounded: stores apply a per-call timeout, and [`retry::Retrying`] retries
//! transient failures with exponential backoff and jitter inside a total time budget, so a
//! dead peer costs at most its budget and never stalls a window.

pub mod fs;
pub mod keys;
pub mod retry;
#[cfg(feature = "s3")]
pub mod s3;

use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("object {key:?} not found")]
    NotFound { key: String },
    #[error("object {key:?} is {size} bytes, over the bound of {max}")]
    TooLarge { key: String, size: u64, max: u64 },
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("{op} {key:?} timed out after {after:?}")]
    Timeout {
        op: &'static str,
        key: String,
        after: Duration,
    },
    #[error("{op} {key:?} failed: {message}")]
    Backend {
        op: &'static str,
        key: String,
        message: String,
        /// Worth retrying (connection refused, 5xx, throttling).
        transient: bool,
    },
}

impl StorageError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StorageError::Timeout { .. }
                | StorageError::Backend {
                    transient: true,
                    ..
                }
        )
    }
}

/// What HEAD and LIST report about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: SystemTime,
}

/// Keys are relative, '/'-separated, with no empty segment and none starting with '.'.
pub fn check_key(key: &str) -> Result<(), StorageError> {
    let bad = |reason| {
        Err(StorageError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() || key.len() > 512 {
        return bad("length must be 1..=512");
    }
    // A leading '.' is reserved for the filesystem store's temporary files.
    if key.split('/').any(|s| s.is_empty() || s.starts_with('.')) {
        return bad("empty segment or segment starting with '.'");
    }
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return bad("control character or backslash");
    }
    Ok(())
}

/// The operations every store provides. Implementations apply their own per-call timeout.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync {
    /// Writes the whole object; readers see the old object or the new one, never a part.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError>;
    /// Reads the whole object, refusing objects larger than `max_bytes`.
    async fn get(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, StorageError>;
    async fn head(&self, key: &str) -> Result<ObjectInfo, StorageError>;
    /// Objects whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError>;
    /// Deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// A short description for logs (never credentials).
    fn describe(&self) -> String;
}
