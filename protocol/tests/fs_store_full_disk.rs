//! The filesystem store on a disk that fills up: a 256 KiB tmpfs mounted for the test (it
//! needs root; skipped with a message elsewhere). A put that does not fit fails with the
//! system's reason, leaves no temporary file and never a part of an object — the object it
//! would have replaced stays whole — and puts succeed again once space is freed.

use std::path::Path;
use std::process::Command;

use templar_protocol::storage::fs::FsStore;
use templar_protocol::storage::{ObjectStore, StorageError};

/// A small tmpfs at `dir`, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path) -> Option<SmallDisk> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(dir)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| SmallDisk(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        if name.contains(".tmp-") {
            out.push(name);
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_full_disk_fails_the_put_with_the_reason_and_keeps_the_old_object_whole() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_disk) = SmallDisk::mount(dir.path()) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let store = FsStore::new(dir.path().join("bucket"));
    let state = vec![7u8; 100 << 10];
    store
        .put("v2/state/validator.json", state.clone())
        .await
        .unwrap();

    // A new state that does not fit next to the old one.
    let bigger = vec![9u8; 200 << 10];
    let err = store
        .put("v2/state/validator.json", bigger.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::Backend { message, .. } if message.contains("No space left on device")),
        "{err}"
    );
    assert!(!err.is_transient(), "a full disk is not retried as a blip");
    assert_eq!(
        store
            .get("v2/state/validator.json", u64::MAX)
            .await
            .unwrap(),
        state,
        "the old state is whole"
    );
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    // A new object that does not fit: absent, not partial.
    assert!(store.put("v2/other", bigger.clone()).await.is_err());
    assert!(matches!(
        store.get("v2/other", u64::MAX).await,
        Err(StorageError::NotFound { .. })
    ));

    // Space returns: the write goes through.
    store.delete("v2/state/validator.json").await.unwrap();
    store
        .put("v2/state/validator.json", bigger.clone())
        .await
        .unwrap();
    assert_eq!(
        store
            .get("v2/state/validator.json", u64::MAX)
            .await
            .unwrap(),
        bigger
    );
}
