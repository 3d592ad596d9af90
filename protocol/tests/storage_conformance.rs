//! One conformance suite for every object store: the filesystem store and S3 against a real
//! Garage server on loopback. Plus faults: a server that dies, bounded by timeouts and the
//! retry budget.

use std::time::{Duration, Instant, SystemTime};
use templar_protocol::storage::fs::FsStore;
use templar_protocol::storage::retry::{RetryPolicy, Retrying};
use templar_protocol::storage::s3::S3Store;
use templar_protocol::storage::{ObjectStore, StorageError};
use templar_testkit::garage::GarageServer;

async fn conformance(store: &dyn ObjectStore, big_object: usize) {
    let store_name = store.describe();
    // put / get round trip, including an empty object.
    store.put("v1/a/one.bin", b"hello".to_vec()).await.unwrap();
    store.put("v1/a/empty.bin", Vec::new()).await.unwrap();
    assert_eq!(store.get("v1/a/one.bin", 100).await.unwrap(), b"hello");
    assert_eq!(store.get("v1/a/empty.bin", 100).await.unwrap(), b"");
    // Overwrite replaces the whole object.
    store.put("v1/a/one.bin", b"hi".to_vec()).await.unwrap();
    assert_eq!(store.get("v1/a/one.bin", 100).await.unwrap(), b"hi");
    // Size bound.
    assert!(matches!(
        store.get("v1/a/one.bin", 1).await,
        Err(StorageError::TooLarge {
            size: 2,
            max: 1,
            ..
        })
    ));
    // head: size and a plausible LastModified.
    let info = store.head("v1/a/one.bin").await.unwrap();
    assert_eq!(info.size, 2);
    let age = SystemTime::now()
        .duration_since(info.last_modified)
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(60),
        "{store_name}: last modified {age:?} ago"
    );
    // Missing objects.
    assert!(matches!(
        store.get("v1/missing", 10).await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        store.head("v1/missing").await,
        Err(StorageError::NotFound { .. })
    ));
    // list: by prefix, sorted, nothing outside the prefix.
    store.put("v1/b/2", vec![2]).await.unwrap();
    store.put("v1/b/1", vec![1]).await.unwrap();
    store.put("v1/bc/3", vec![3]).await.unwrap();
    let keys: Vec<String> = store
        .list("v1/b/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["v1/b/1", "v1/b/2"], "{store_name}");
    let keys: Vec<String> = store
        .list("v1/b")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["v1/b/1", "v1/b/2", "v1/bc/3"], "{store_name}");
    assert!(store.list("v9/").await.unwrap().is_empty());
    // delete, and deleting again is fine.
    store.delete("v1/b/1").await.unwrap();
    store.delete("v1/b/1").await.unwrap();
    assert!(matches!(
        store.get("v1/b/1", 10).await,
        Err(StorageError::NotFound { .. })
    ));
    // Invalid keys are refused before any I/O.
    for key in ["", "/abs", "v1//x", "v1/../x", "v1/.hidden"] {
        assert!(
            matches!(
                store.put(key, vec![1]).await,
                Err(StorageError::InvalidKey { .. })
            ),
            "{store_name}: key {key:?}"
        );
    }
    // A large object (multipart on S3) comes back byte for byte.
    let big: Vec<u8> = (0..big_object).map(|i| (i * 31 % 251) as u8).collect();
    store.put("v1/big.bin", big.clone()).await.unwrap();
    assert_eq!(
        store.get("v1/big.bin", big.len() as u64).await.unwrap(),
        big
    );
    assert_eq!(
        store.head("v1/big.bin").await.unwrap().size,
        big.len() as u64
    );
}

#[tokio::test]
async fn filesystem_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path());
    conformance(&store, 3 << 20).await;
    // No temporary files are left behind by writes.
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.file_name().to_string_lossy().to_string());
        }
    }
    out
}

fn garage() -> GarageServer {
    GarageServer::start("templar-test").expect("Garage must be installed for the S3 tests")
}

#[tokio::test]
async fn s3_store_conforms_against_garage() {
    let server = garage();
    let mut cfg = server.s3_config();
    cfg.multipart_threshold = 6 << 20; // an 11 MiB object goes up in parts
    cfg.part_size = 5 << 20;
    let store = S3Store::new(cfg);
    conformance(&store, 11 << 20).await;
}

#[tokio::test]
async fn wrong_credentials_fail_permanently_with_a_reason() {
    let server = garage();
    let mut cfg = server.s3_config();
    cfg.secret_access_key = "0".repeat(64);
    let store = Retrying::new(S3Store::new(cfg), RetryPolicy::default());
    let start = Instant::now();
    let err = store.get("v1/x", 10).await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Backend {
                transient: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5), "not retried");
    // The secret never appears in errors or in Debug output.
    assert!(!format!("{err} {:?}", server.s3_config()).contains(&server.secret));
}

#[tokio::test]
async fn a_dead_server_costs_at_most_the_retry_budget() {
    let mut server = garage();
    let mut cfg = server.s3_config();
    cfg.timeout = Duration::from_secs(2);
    let policy = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        budget: Duration::from_secs(3),
    };
    let store = Retrying::new(S3Store::new(cfg), policy);
    store.put("v1/g", vec![1, 2, 3]).await.unwrap();
    server.stop();
    let start = Instant::now();
    let err = store.get("v1/g", 10).await.unwrap_err();
    let took = start.elapsed();
    assert!(
        err.is_transient(),
        "connection failures are transient: {err:?}"
    );
    // Budget (3 s) plus at most one call's timeout (2 s).
    assert!(took < Duration::from_secs(6), "took {took:?}");
}
