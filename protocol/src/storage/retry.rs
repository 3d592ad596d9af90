//! Retries of transient storage failures: exponential backoff with full jitter, a cap on
//! attempts, and a total time budget per call, so one dead peer costs a bounded time.

use super::{ObjectInfo, ObjectStore, StorageError};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No new attempt starts once this much time has passed since the first.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            budget: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `n` (1-based retries): uniform in [0, min(max, base * 2^(n-1))].
    pub fn delay(&self, retry: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_delay);
        cap.mul_f64(rand::random::<f64>())
    }

    /// Run `f` until it succeeds, fails permanently, or attempts / budget run out.
    pub async fn run<T, F, Fut>(&self, mut f: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let start = Instant::now();
        let mut attempt = 1;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_transient() || attempt >= self.max_attempts => return Err(e),
                Err(e) => {
                    let delay = self.delay(attempt);
                    if start.elapsed() + delay >= self.budget {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, attempt, ?delay, "retrying storage call");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// A store whose every call is retried under a policy.
pub struct Retrying<S> {
    pub inner: S,
    pub policy: RetryPolicy,
}

impl<S> Retrying<S> {
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }
}

#[async_trait::async_trait]
impl<S: ObjectStore> ObjectStore for Retrying<S> {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.policy.run(|| self.inner.put(key, bytes.clone())).await
    }
    async fn get(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, StorageError> {
        self.policy.run(|| self.inner.get(key, max_bytes)).await
    }
    async fn head(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        self.policy.run(|| self.inner.head(key)).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.policy.run(|| self.inner.list(prefix)).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.policy.run(|| self.inner.delete(key)).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient() -> StorageError {
        StorageError::Backend {
            op: "get",
            key: "k".into(),
            message: "503".into(),
            transient: true,
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            budget: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let out = fast()
            .run(|| async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(transient()),
                    _ => Ok(7),
                }
            })
            .await;
        assert_eq!(out, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_and_exhausted_attempts_stop() {
        let calls = AtomicU32::new(0);
        let out: Result<(), _> = fast()
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(StorageError::NotFound { key: "k".into() })
            })
            .await;
        assert!(matches!(out, Err(StorageError::NotFound { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let calls = AtomicU32::new(0);
        let out: Result<(), _> = fast()
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(transient())
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn the_budget_bounds_the_total_time() {
        let policy = RetryPolicy {
            max_attempts: 1000,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(40),
            budget: Duration::from_millis(200),
        };
        let start = Instant::now();
        let out: Result<(), _> = policy.run(|| async { Err(transient()) }).await;
        assert!(out.is_err());
        assert!(
            start.elapsed() < Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
    }
}
