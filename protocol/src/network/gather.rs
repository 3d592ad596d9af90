//! Gathering a window: every listed peer's payload fetched (bounded in time, size and
//! fan-out) and validated against the payload format and the metagraph's hotkey, or left out
//! with a reason.

use super::NodeContext;
use crate::identity::Hotkey;
use crate::node_status::SkippedPeer;
use crate::payload::{Payload, PayloadError, PayloadValidator};
use crate::storage::{ObjectStore, StorageError};
use futures::StreamExt;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Why a listed peer's payload was left out of a window (rendered to text only in `/status`
/// and the logs).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SkipReason {
    #[error("metagraph unavailable: {0}")]
    MetagraphUnavailable(String),
    #[error("not registered")]
    NotRegistered,
    #[error("no bucket: {0}")]
    NoBucket(String),
    #[error("no commitment on chain")]
    NoCommitment,
    #[error("missing")]
    Missing,
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Uploaded before the window's first accepted instant.
    #[error("too early")]
    TooEarly,
    /// Uploaded after the window's last accepted instant.
    #[error("too late")]
    TooLate,
    #[error("download failed: {0}")]
    DownloadFailed(String),
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    #[error("the gather's deadline passed")]
    DeadlinePassed,
    #[error("invalid: {0}")]
    Invalid(PayloadError),
    /// The payload speaks for another hotkey than the one holding its uid.
    #[error("payload names hotkey {named}, but the uid is held by {holder}")]
    WrongHotkey { named: Hotkey, holder: Hotkey },
}

/// A peer left out of a window and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub uid: u16,
    pub reason: SkipReason,
}

impl Skipped {
    /// The entry of the node's `/status` document.
    pub fn to_status(&self) -> SkippedPeer {
        SkippedPeer {
            uid: self.uid,
            reason: self.reason.to_string(),
        }
    }
}

/// A peer's valid payload of a window, with its upload time and, when the peer committed
/// the payload's digest first, that commitment's time (store last-modified times, the same
/// for every reader).
#[derive(Debug, Clone)]
pub struct PeerPayload {
    pub uid: u16,
    pub payload: Payload,
    pub uploaded: SystemTime,
    pub committed: Option<SystemTime>,
    /// The hex sha256 of its bytes (what its commitment names).
    pub digest: String,
}

impl PeerPayload {
    /// The instant that tells a copy from its source: the digest commitment's, else the
    /// upload's. A copier can only commit to a payload after reading its source, which was
    /// uploaded `digest_lead_ms` (at least the store's time resolution) after its own
    /// commitment, so the copy's instant is strictly later whatever it uploads when.
    pub fn order(&self) -> SystemTime {
        self.committed.unwrap_or(self.uploaded)
    }
}

/// A peer's downloaded payload: its bytes, its upload time, and the digest it committed
/// before (hex sha256 and the commitment's time) when there is one.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub uploaded: SystemTime,
    pub digest: Option<(String, SystemTime)>,
}

impl Fetched {
    /// The commitment's time when it names these bytes' sha256.
    fn committed(&self, bytes_digest: &str) -> Option<SystemTime> {
        let (digest, at) = self.digest.as_ref()?;
        (digest == bytes_digest).then_some(*at)
    }
}

/// What a miner commits before its upload: the hex sha256 of the payload's bytes.
pub fn payload_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// The largest digest commitment read (64 hex characters and some whitespace).
const MAX_DIGEST_BYTES: u64 = 128;

/// The digest commitment at `key` in a peer's `store` (hex, trimmed), or `None` when it
/// cannot be read.
pub async fn read_digest(store: &dyn ObjectStore, key: &str) -> Option<String> {
    let text = store.get(key, MAX_DIGEST_BYTES).await.ok()?;
    Some(String::from_utf8_lossy(&text).trim().to_string())
}

/// Downloads in flight at once: a long peer list cannot open hundreds of connections.
pub const FETCH_FAN_OUT: usize = 16;

/// The whole gather ends this many peer timeouts after it starts, however long the list:
/// peers not fetched by then are skipped.
const GATHER_DEADLINE_PEER_TIMEOUTS: u32 = 3;

/// One peer's bytes for window `w`, when its store says they were uploaded and the digest
/// committed before them, or the reason they are left out.
pub async fn fetch_payload(
    ctx: &NodeContext,
    uid: u16,
    w: u64,
    max_bytes: u64,
    range: Option<(SystemTime, SystemTime)>,
) -> Result<Fetched, SkipReason> {
    let fetch = async {
        let store = ctx
            .peer_store(uid)
            .await
            .map_err(|e| SkipReason::NoBucket(e.to_string()))?
            .ok_or(SkipReason::NoCommitment)?;
        let key = ctx.keys.gradient(w, uid);
        let info = store.head(&key).await.map_err(|e| match e {
            StorageError::NotFound { .. } => SkipReason::Missing,
            e => SkipReason::Unreachable(e.to_string()),
        })?;
        if let Some((min, max)) = range {
            if info.last_modified < min {
                return Err(SkipReason::TooEarly);
            }
            if info.last_modified > max {
                return Err(SkipReason::TooLate);
            }
        }
        let digest_key = ctx.keys.gradient_digest(w, uid);
        let (bytes, digest) = futures::join!(store.get(&key, max_bytes), async {
            // A missing or unreadable commitment only loses the payload its early instant.
            let at = store.head(&digest_key).await.ok()?.last_modified;
            Some((read_digest(store.as_ref(), &digest_key).await?, at))
        });
        let bytes = bytes.map_err(|e| SkipReason::DownloadFailed(e.to_string()))?;
        Ok(Fetched {
            bytes,
            uploaded: info.last_modified,
            digest,
        })
    };
    match tokio::time::timeout(ctx.peer_timeout, fetch).await {
        Ok(r) => r,
        Err(_) => Err(SkipReason::TimedOut(ctx.peer_timeout)),
    }
}

/// Each fetched payload validated (digest, unpacking, bounds: milliseconds per payload, on all
/// cores) and held to the hotkey that holds its uid.
fn validate_all(
    validator: &PayloadValidator<'_>,
    w: u64,
    hotkeys: &BTreeMap<u16, Hotkey>,
    uids: Vec<u16>,
    fetched: Vec<Result<Fetched, SkipReason>>,
) -> Vec<(u16, Result<PeerPayload, SkipReason>)> {
    let check = |uid: u16, fetched: Fetched| {
        let payload = validator
            .validate_for(&fetched.bytes, uid, w)
            .map_err(SkipReason::Invalid)?;
        match hotkeys.get(&uid) {
            Some(holder) if *holder == payload.meta.hotkey => {
                let digest = payload_digest(&fetched.bytes);
                Ok(PeerPayload {
                    uid,
                    payload,
                    uploaded: fetched.uploaded,
                    committed: fetched.committed(&digest),
                    digest,
                })
            }
            Some(holder) => Err(SkipReason::WrongHotkey {
                named: payload.meta.hotkey,
                holder: holder.clone(),
            }),
            None => Err(SkipReason::NotRegistered),
        }
    };
    uids.into_par_iter()
        .zip(fetched)
        .map(|(uid, r)| {
            let r = r.and_then(|fetched| check(uid, fetched));
            (uid, r)
        })
        .collect()
}

/// Gather window `w`: every listed peer's payload, validated, with its upload time; the
/// rest with reasons. Accepted payloads are returned in uid order, so every node merges them
/// identically.
pub async fn gather(
    ctx: &NodeContext,
    validator: &PayloadValidator<'_>,
    w: u64,
    peers: &[u16],
    range: Option<(SystemTime, SystemTime)>,
) -> (Vec<PeerPayload>, Vec<Skipped>) {
    let max_bytes = validator.max_bytes();
    let mut uids = peers.to_vec();
    uids.sort_unstable();
    uids.dedup();
    let mut skipped = Vec::new();
    // A payload speaks for the hotkey that holds its uid now; unregistered uids (a peer list
    // longer than the metagraph) are not fetched at all.
    let hotkeys: BTreeMap<u16, Hotkey> = match ctx.chain.metagraph().await {
        Ok(mg) => mg.neurons.into_iter().map(|n| (n.uid, n.hotkey)).collect(),
        Err(e) => {
            let reason = SkipReason::MetagraphUnavailable(e.to_string());
            let all = uids.into_iter().map(|uid| Skipped {
                uid,
                reason: reason.clone(),
            });
            return (Vec::new(), all.collect());
        }
    };
    uids.retain(|uid| {
        let registered = hotkeys.contains_key(uid);
        if !registered {
            skipped.push(Skipped {
                uid: *uid,
                reason: SkipReason::NotRegistered,
            });
        }
        registered
    });
    // Downloads run FETCH_FAN_OUT at a time, each bounded by the peer timeout and all by one
    // deadline; validation follows.
    let deadline = tokio::time::Instant::now() + ctx.peer_timeout * GATHER_DEADLINE_PEER_TIMEOUTS;
    let results: Vec<Result<Fetched, SkipReason>> = futures::stream::iter(uids.iter().copied())
        .map(|uid| async move {
            tokio::time::timeout_at(deadline, fetch_payload(ctx, uid, w, max_bytes, range))
                .await
                .unwrap_or(Err(SkipReason::DeadlinePassed))
        })
        .buffered(FETCH_FAN_OUT)
        .collect()
        .await;
    let checked = validate_all(validator, w, &hotkeys, uids, results);
    let mut ok = Vec::new();
    for (uid, r) in checked {
        match r {
            Ok(p) => ok.push(p),
            Err(reason) => {
                tracing::info!(uid, window = w, %reason, "peer skipped");
                skipped.push(Skipped { uid, reason });
            }
        }
    }
    skipped.sort_by_key(|s| s.uid);
    (ok, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn a_digest_commitment_counts_only_for_the_bytes_it_names() {
        let (committed, uploaded) = (
            UNIX_EPOCH + Duration::from_secs(10),
            UNIX_EPOCH + Duration::from_secs(11),
        );
        let fetched = Fetched {
            bytes: b"payload".to_vec(),
            uploaded,
            digest: Some((payload_digest(b"payload"), committed)),
        };
        let named = payload_digest(&fetched.bytes);
        assert_eq!(fetched.committed(&named), Some(committed));
        let other = Fetched {
            digest: Some((payload_digest(b"another payload"), committed)),
            ..fetched.clone()
        };
        assert_eq!(other.committed(&named), None);
        let none = Fetched {
            digest: None,
            ..fetched
        };
        assert_eq!(none.committed(&named), None);
        assert_eq!(payload_digest(b"").len(), 64);
    }
}
