//! A validator's own sightings of the miners' digest commitments during a window: when it
//! first read each digest value. A miner's bucket reports whatever times its server chooses,
//! so a copier that runs its own store can back-date its commitment and its payload to
//! before its victim's; it cannot make the validator read a digest of bytes it has not seen
//! yet. The victim's payload became readable `digest_lead_ms` after its digest, so polling
//! every half lead sees the victim's digest a round before the copy's.
//!
//! Sightings decide which of two overlapping payloads the validator scores as the copy. They
//! do not touch the step, which every node takes alike from the stores' times.

use super::admission::Candidate;
use super::admission::duplicates::{Copy, CopyPair, attribute};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use templar_protocol::network::{NodeContext, read_digest};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The fastest poll: a lead under 100 ms (a test network) still polls at most 20 times a
/// second.
const MIN_POLL: Duration = Duration::from_millis(50);

/// Per miner, each digest value read and the start of the round that first read it.
#[derive(Debug, Default, Clone)]
pub struct Sightings {
    first: BTreeMap<u16, Vec<(String, Instant)>>,
    /// Whether the watch covered the window (false for a validator started mid-window).
    pub complete: bool,
}

impl Sightings {
    fn record(&mut self, uid: u16, digest: String, at: Instant) {
        let seen = self.first.entry(uid).or_default();
        if !seen.iter().any(|(d, _)| *d == digest) {
            seen.push((digest, at));
        }
    }

    /// When `uid`'s commitment to `digest` was first read; `None` when it never was.
    pub fn first_seen(&self, uid: u16, digest: &str) -> Option<Instant> {
        self.first
            .get(&uid)?
            .iter()
            .find(|(d, _)| d == digest)
            .map(|(_, at)| *at)
    }

    /// Which of `a` and `b` (uid, payload digest) committed first as the validator saw it:
    /// `Some(true)` for `a`, `Some(false)` for `b`, `None` for a tie or when the sightings
    /// cannot tell (neither seen, or a watch that missed part of the window). A commitment
    /// never seen during a complete watch appeared after it, so later than any seen one.
    pub fn a_first(&self, a: (u16, &str), b: (u16, &str)) -> Option<bool> {
        let (sa, sb) = (self.first_seen(a.0, a.1), self.first_seen(b.0, b.1));
        match (sa, sb) {
            (Some(x), Some(y)) if x != y => Some(x < y),
            (Some(_), None) if self.complete => Some(true),
            (None, Some(_)) if self.complete => Some(false),
            _ => None,
        }
    }
}

/// The copy of each overlapping pair as the validator saw the commitments, and by the
/// stores' times where its sightings cannot tell.
pub fn sighted_copies(pairs: &[CopyPair], candidates: &[Candidate], seen: &Sightings) -> Vec<Copy> {
    let find = |uid: u16| candidates.iter().find(|c| c.uid() == uid).map(|c| &c.peer);
    attribute(pairs, |pair| {
        let (a, b) = (find(pair.a)?, find(pair.b)?);
        seen.a_first((a.uid, &a.digest), (b.uid, &b.digest))
            .or_else(|| match a.order().cmp(&b.order()) {
                std::cmp::Ordering::Less => Some(true),
                std::cmp::Ordering::Greater => Some(false),
                std::cmp::Ordering::Equal => None,
            })
    })
}

/// A running watch of window `window`'s commitments.
pub struct DigestWatch {
    pub window: u64,
    seen: Arc<Mutex<Sightings>>,
    task: JoinHandle<()>,
}

impl DigestWatch {
    /// Poll the digest commitments of `miners` for window `w` every half `digest_lead_ms`
    /// (each read bounded by the peer timeout) until [`DigestWatch::finish`].
    pub fn start(ctx: Arc<NodeContext>, w: u64, miners: Vec<u16>, complete: bool) -> Self {
        let seen = Arc::new(Mutex::new(Sightings {
            first: BTreeMap::new(),
            complete,
        }));
        let poll = Duration::from_millis(ctx.hp.network.digest_lead_ms / 2).max(MIN_POLL);
        let task = tokio::spawn(watch(ctx, w, miners, poll, seen.clone()));
        Self {
            window: w,
            seen,
            task,
        }
    }

    /// Stop polling; what was seen.
    pub fn finish(self) -> Sightings {
        self.task.abort();
        let seen = self.seen.lock().expect("sightings lock");
        seen.clone()
    }
}

async fn watch(
    ctx: Arc<NodeContext>,
    w: u64,
    miners: Vec<u16>,
    poll: Duration,
    seen: Arc<Mutex<Sightings>>,
) {
    loop {
        let round = Instant::now();
        let reads = futures::stream::iter(miners.iter().copied())
            .map(|uid| {
                let ctx = ctx.clone();
                async move { (uid, read_commitment(&ctx, uid, w).await) }
            })
            .buffer_unordered(templar_protocol::network::FETCH_FAN_OUT);
        let found: Vec<(u16, Option<String>)> = reads.collect().await;
        {
            let mut seen = seen.lock().expect("sightings lock");
            for (uid, digest) in found {
                if let Some(d) = digest {
                    seen.record(uid, d, round);
                }
            }
        }
        tokio::time::sleep_until(round + poll).await;
    }
}

/// `uid`'s commitment for window `w`, if it can be read within the peer timeout.
async fn read_commitment(ctx: &NodeContext, uid: u16, w: u64) -> Option<String> {
    let read = async {
        let store = ctx.peer_store(uid).await.ok()??;
        read_digest(store.as_ref(), &ctx.keys.gradient_digest(w, uid)).await
    };
    tokio::time::timeout(ctx.peer_timeout, read)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sighting_orders_a_pair_and_an_unseen_commitment_comes_after_a_complete_watch() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(500);
        let mut s = Sightings {
            complete: true,
            ..Default::default()
        };
        s.record(1, "aa".into(), t0);
        s.record(2, "bb".into(), t1);
        // A later read of the same value keeps the first sighting.
        s.record(1, "aa".into(), t1);
        assert_eq!(s.first_seen(1, "aa"), Some(t0));
        assert_eq!(s.a_first((1, "aa"), (2, "bb")), Some(true));
        assert_eq!(s.a_first((2, "bb"), (1, "aa")), Some(false));
        // A digest that changed to the copy's bytes counts from when that value appeared.
        s.record(3, "placeholder".into(), t0);
        s.record(3, "cc".into(), t1);
        assert_eq!(s.a_first((1, "aa"), (3, "cc")), Some(true));
        // Same round: a tie. Never seen during a complete watch: after every seen one.
        s.record(4, "dd".into(), t1);
        assert_eq!(s.a_first((2, "bb"), (4, "dd")), None);
        assert_eq!(s.a_first((1, "aa"), (5, "ee")), Some(true));
        assert_eq!(s.a_first((5, "ee"), (6, "ff")), None);
        // A watch that missed part of the window cannot tell a seen one from an unseen one.
        s.complete = false;
        assert_eq!(s.a_first((1, "aa"), (5, "ee")), None);
    }
}
