//! The chain head, followed through a new-heads subscription that is opened again, with
//! backoff, whenever it drops, errs or goes quiet for longer than a few blocks. Reading the
//! block number then costs no request; a stale follower is never trusted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::client::Client;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Shared {
    block: AtomicU64,
    /// Milliseconds since `started` when `block` last advanced (0: never).
    seen_ms: AtomicU64,
    subscriptions: AtomicU64,
}

pub struct HeadFollower {
    shared: Arc<Shared>,
    started: Instant,
    task: tokio::task::JoinHandle<()>,
}

impl HeadFollower {
    /// Follows the best block; a subscription that yields nothing for `quiet` is replaced.
    pub fn spawn(client: Client, quiet: Duration) -> Self {
        let shared = Arc::new(Shared::default());
        let started = Instant::now();
        let task = tokio::spawn(follow(client, quiet, shared.clone(), started));
        Self {
            shared,
            started,
            task,
        }
    }

    /// The latest block seen within `max_age`, or `None` (then ask the chain).
    pub fn latest(&self, max_age: Duration) -> Option<u64> {
        let seen = self.shared.seen_ms.load(Ordering::Acquire);
        let age = self
            .started
            .elapsed()
            .saturating_sub(Duration::from_millis(seen));
        (seen > 0 && age <= max_age).then(|| self.shared.block.load(Ordering::Acquire))
    }

    /// How many subscriptions were opened (1 while the first one holds).
    pub fn subscriptions(&self) -> u64 {
        self.shared.subscriptions.load(Ordering::Acquire)
    }
}

impl Drop for HeadFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(client: Client, quiet: Duration, shared: Arc<Shared>, started: Instant) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        shared.subscriptions.fetch_add(1, Ordering::AcqRel);
        match tokio::time::timeout(quiet, client.stream_best_blocks()).await {
            Ok(Ok(mut blocks)) => loop {
                match tokio::time::timeout(quiet, blocks.next()).await {
                    Ok(Some(Ok(block))) => {
                        shared.block.fetch_max(block.number(), Ordering::AcqRel);
                        let ms = started.elapsed().as_millis().max(1) as u64;
                        shared.seen_ms.store(ms, Ordering::Release);
                        backoff = FIRST_BACKOFF;
                    }
                    Ok(Some(Err(e))) => {
                        tracing::warn!(error = %e, "block subscription failed; subscribing again");
                        break;
                    }
                    Ok(None) => {
                        tracing::warn!("block subscription ended; subscribing again");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(?quiet, "no new block; subscribing again");
                        break;
                    }
                }
            },
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot subscribe to blocks"),
            Err(_) => tracing::warn!(?quiet, "block subscription did not open"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
