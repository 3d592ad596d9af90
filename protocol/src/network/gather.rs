//! Gathering a window: every listed peer's payload fetched (bounded in time, size and
//! fan-out) and validated against the payload format and the metagraph's hotkey, or left out
//! with a reason.

use super::NodeContext;
use crate::identity::Hotkey;
use crate::payload::{Payload, PayloadValidator};
use crate::storage::StorageError;
use futures::StreamExt;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::time::SystemTime;
use templar_crds::node_status::SkippedPeer;

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
) -> Result<(Vec<u8>, SystemTime), SkippedPeer> {
    let skip = |reason: String| SkippedPeer { uid, reason };
    let fetch = async {
        let store = ctx
            .peer_store(uid)
            .await
            .map_err(|e| skip(format!("no bucket: {e}")))?
            .ok_or_else(|| skip("no commitment on chain".into()))?;
        let key = ctx.keys.gradient(w, uid);
        let info = store.head(&key).await.map_err(|e| match e {
            StorageError::NotFound { .. } => skip("missing".into()),
            e => skip(format!("unreachable: {e}")),
        })?;
        if let Some((min, max)) = range {
            if info.last_modified < min {
                return Err(skip("too early".into()));
            }
            if info.last_modified > max {
                return Err(skip("too late".into()));
            }
        }
        let bytes = store
            .get(&key, max_bytes)
            .await
            .map_err(|e| skip(format!("download failed: {e}")))?;
        Ok((bytes, info.last_modified))
    };
    match tokio::time::timeout(ctx.peer_timeout, fetch).await {
        Ok(r) => r,
        Err(_) => Err(skip(format!("timed out after {:?}", ctx.peer_timeout))),
    }
}

/// Gather window `w`: every listed peer's payload, validated; the rest with reasons.
/// Accepted payloads are returned in uid order, so every node merges them identically.
pub async fn gather(
    ctx: &NodeContext,
    validator: &PayloadValidator<'_>,
    w: u64,
    peers: &[u16],
    range: Option<(SystemTime, SystemTime)>,
) -> (Vec<(u16, Payload)>, Vec<SkippedPeer>) {
    let (ok, skipped) = gather_timed(ctx, validator, w, peers, range).await;
    (ok.into_iter().map(|(u, p, _)| (u, p)).collect(), skipped)
}

/// [`gather`], with each payload's upload time (its store's last-modified time, the same for
/// every reader), which tells a copy from its source.
pub async fn gather_timed(
    ctx: &NodeContext,
    validator: &PayloadValidator<'_>,
    w: u64,
    peers: &[u16],
    range: Option<(SystemTime, SystemTime)>,
) -> (Vec<(u16, Payload, SystemTime)>, Vec<SkippedPeer>) {
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
            let reason = format!("metagraph unavailable: {e}");
            let all = uids.into_iter().map(|uid| SkippedPeer {
                uid,
                reason: reason.clone(),
            });
            return (Vec::new(), all.collect());
        }
    };
    uids.retain(|uid| {
        let registered = hotkeys.contains_key(uid);
        if !registered {
            skipped.push(SkippedPeer {
                uid: *uid,
                reason: "not registered".into(),
            });
        }
        registered
    });
    // Downloads run FETCH_FAN_OUT at a time, each bounded by the peer timeout and all by one
    // deadline; validation follows.
    let deadline = tokio::time::Instant::now() + ctx.peer_timeout * GATHER_DEADLINE_PEER_TIMEOUTS;
    let results: Vec<Result<(Vec<u8>, SystemTime), SkippedPeer>> =
        futures::stream::iter(uids.iter().copied())
            .map(|uid| async move {
                tokio::time::timeout_at(deadline, fetch_payload(ctx, uid, w, max_bytes, range))
                    .await
                    .unwrap_or_else(|_| {
                        Err(SkippedPeer {
                            uid,
                            reason: "the gather's deadline passed".into(),
                        })
                    })
            })
            .buffered(FETCH_FAN_OUT)
            .collect()
            .await;
    // Validation (digest, unpacking, bounds: milliseconds per payload) on all cores.
    let check = |uid: u16, bytes: Vec<u8>, uploaded: SystemTime| {
        let invalid = |reason: String| SkippedPeer { uid, reason };
        let p = validator
            .validate_for(&bytes, uid, w)
            .map_err(|e| invalid(format!("invalid: {e}")))?;
        match hotkeys.get(&uid) {
            Some(holder) if *holder == p.meta.hotkey => Ok((p, uploaded)),
            Some(holder) => Err(invalid(format!(
                "payload names hotkey {}, but uid {uid} is held by {holder}",
                p.meta.hotkey
            ))),
            None => Err(invalid("not registered".into())),
        }
    };
    let checked: Vec<_> = uids
        .into_par_iter()
        .zip(results)
        .map(|(uid, r)| {
            (
                uid,
                r.and_then(|(bytes, uploaded)| check(uid, bytes, uploaded)),
            )
        })
        .collect();
    let mut ok = Vec::new();
    for (uid, r) in checked {
        match r {
            Ok((p, uploaded)) => ok.push((uid, p, uploaded)),
            Err(s) => {
                tracing::info!(uid = s.uid, window = w, reason = %s.reason, "peer skipped");
                skipped.push(s);
            }
        }
    }
    skipped.sort_by_key(|s| s.uid);
    (ok, skipped)
}
