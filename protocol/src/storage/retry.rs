//! Retries of transient storage failures: exponential backoff with full jitter, a cap on
//! attempts, and a total time budget per call, so one dead peer costs a bounded time.

use super::{ObjectInfo, ObjectStore, StorageError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed store calls by operation (`get`, `put`, ...), every failed attempt counted whether
/// retried or not; an absent object is an answer, not a failure. One per node, shared by its
/// own and its peers' stores, for `/status` and the metrics.
#[derive(Debug, Default)]
pub struct StoreErrors(Mutex<BTreeMap<&'static str, u64>>);

impl StoreErrors {
    fn count(&self, op: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op)
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }
}

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

/// A store whose every call is retried under a policy (and, with [`Retrying::counting`],
/// whose failed attempts are counted).
pub struct Retrying<S> {
    pub inner: S,
    pub policy: RetryPolicy,
    errors: Option<Arc<StoreErrors>>,
}

impl<S> Retrying<S> {
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Self {
            inner,
            policy,
            errors: None,
        }
    }

    /// Count every failed attempt into `errors`.
    pub fn counting(mut self, errors: Arc<StoreErrors>) -> Self {
        self.errors = Some(errors);
        self
    }

    /// One attempt of `op`, its failure counted.
    async fn attempt<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        let result = call.await;
        if let (Err(e), Some(errors)) = (&result, &self.errors)
            && !matches!(e, StorageError::NotFound { .. })
        {
            errors.count(op);
        }
        result
    }
}

#[async_trait::async_trait]
impl<S: ObjectStore> ObjectStore for Retrying<S> {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let once = || self.attempt("put", self.inner.put(key, bytes.clone()));
        self.policy.run(once).await
    }
    async fn get(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, StorageError> {
        let once = || self.attempt("get", self.inner.get(key, max_bytes));
        self.policy.run(once).await
    }
    async fn head(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        let once = || self.attempt("head", self.inner.head(key));
        self.policy.run(once).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let once = || self.attempt("list", self.inner.list(prefix));
        self.policy.run(once).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let once = || self.attempt("delete", self.inner.delete(key));
        self.policy.run(once).await
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

    /// A store failing every call transiently, or answering "not found".
    struct Failing {
        missing: bool,
    }

    #[async_trait::async_trait]
    impl ObjectStore for Failing {
        async fn put(&self, _: &str, _: Vec<u8>) -> Result<(), StorageError> {
            Err(transient())
        }
        async fn get(&self, key: &str, _: u64) -> Result<Vec<u8>, StorageError> {
            if self.missing {
                return Err(StorageError::NotFound { key: key.into() });
            }
            Err(transient())
        }
        async fn head(&self, _: &str) -> Result<ObjectInfo, StorageError> {
            Err(transient())
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectInfo>, StorageError> {
            Err(transient())
        }
        async fn delete(&self, _: &str) -> Result<(), StorageError> {
            Err(transient())
        }
        fn describe(&self) -> String {
            "failing".into()
        }
    }

    #[tokio::test]
    async fn every_failed_attempt_is_counted_by_operation_and_absent_objects_are_not() {
        let errors = Arc::new(StoreErrors::default());
        let store = Retrying::new(Failing { missing: false }, fast()).counting(errors.clone());
        assert!(store.put("k", vec![1]).await.is_err());
        assert!(store.get("k", 10).await.is_err());
        let missing = Retrying::new(Failing { missing: true }, fast()).counting(errors.clone());
        assert!(missing.get("k", 10).await.is_err());
        let counts = errors.snapshot();
        assert_eq!(counts.get("put"), Some(&5), "all five attempts: {counts:?}");
        assert_eq!(counts.get("get"), Some(&5), "{counts:?}");
        assert_eq!(counts.len(), 2, "{counts:?}");
    }
}
