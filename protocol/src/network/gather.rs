//! Gathering a window: every listed peer's payload fetched (bounded in time, size and
//! fan-out) and validated against the payload format and the metagraph's hotkey, or left out
//! with a reason.

use super::NodeContext;
use crate::identity::Hotkey;
use crate::node_status::SkippedPeer;
use crate::payload::{Payload, PayloadError, PayloadValidator};
use crate::storage::StorageError;
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

/// A peer's valid payload of a window, with its upload time (its store's last-modified
/// time, the same for every reader, which tells a copy from its source).
#[derive(Debug, Clone)]
pub struct PeerPayload {
    pub uid: u16,
    pub payload: Payload,
    pub uploaded: SystemTime,
}

/// Downloads in flight at once: a long peer list cannot open hundreds of connections.
pub const FETCH_FAN_OUT: usize = 16;

/// The whole gather ends this many peer timeouts after it starts, however long the list:
/// peers not fetched by then are skipped.
const GATHER_DEADLINE_PEER_TIMEOUTS: u32 = 3;

/// One peer's bytes for window `w` and when its store says they were uploaded, or the
/// reason they are left out.
pub async fn fetch_payload(
    ctx: &NodeContext,
    uid: u16,
    w: u64,
    max_bytes: u64,
    range: Option<(SystemTime, SystemTime)>,
) -> Result<(Vec<u8>, SystemTime), SkipReason> {
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
        let bytes = store
            .get(&key, max_bytes)
            .await
            .map_err(|e| SkipReason::DownloadFailed(e.to_string()))?;
        Ok((bytes, info.last_modified))
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
    fetched: Vec<Result<(Vec<u8>, SystemTime), SkipReason>>,
) -> Vec<(u16, Result<PeerPayload, SkipReason>)> {
    let check = |uid: u16, bytes: Vec<u8>, uploaded: SystemTime| {
        let payload = validator
            .validate_for(&bytes, uid, w)
            .map_err(SkipReason::Invalid)?;
        match hotkeys.get(&uid) {
            Some(holder) if *holder == payload.meta.hotkey => Ok(PeerPayload {
                uid,
                payload,
                uploaded,
            }),
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
            let r = r.and_then(|(bytes, uploaded)| check(uid, bytes, uploaded));
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
    let results: Vec<Result<(Vec<u8>, SystemTime), SkipReason>> =
        futures::stream::iter(uids.iter().copied())
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
