//! Gathering a window: every listed peer's payload fetched (bounded in time and size) and
//! validated, or left out with a reason.

use super::NodeContext;
use crate::payload::{Payload, PayloadValidator};
use crate::storage::StorageError;
use std::time::SystemTime;
use templar_crds::node_status::SkippedPeer;

/// One peer's bytes for window `w`, or the reason they are left out.
pub async fn fetch_payload(
    ctx: &NodeContext,
    uid: u16,
    w: u64,
    max_bytes: u64,
    range: Option<(SystemTime, SystemTime)>,
) -> Result<Vec<u8>, SkippedPeer> {
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
        store
            .get(&key, max_bytes)
            .await
            .map_err(|e| skip(format!("download failed: {e}")))
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
    let max_bytes = validator.max_bytes();
    let mut uids = peers.to_vec();
    uids.sort_unstable();
    uids.dedup();
    // Downloads run concurrently, each bounded by the peer timeout; validation follows.
    let downloads = uids
        .iter()
        .map(|&uid| fetch_payload(ctx, uid, w, max_bytes, range));
    let results = futures::future::join_all(downloads).await;
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for (uid, r) in uids.into_iter().zip(results) {
        match r.and_then(|bytes| {
            validator
                .validate_for(&bytes, uid, w)
                .map_err(|e| SkippedPeer {
                    uid,
                    reason: format!("invalid: {e}"),
                })
        }) {
            Ok(p) => ok.push((uid, p)),
            Err(s) => {
                tracing::info!(uid = s.uid, window = w, reason = %s.reason, "peer skipped");
                skipped.push(s);
            }
        }
    }
    (ok, skipped)
}
