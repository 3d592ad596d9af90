//! Local-filesystem store: one file per object under a root folder. Writes go to a
//! temporary file in the same folder, synced, and are renamed into place (the folder synced
//! too), so readers never see a partial object, and a crash or a full disk leaves the old
//! object whole.

use super::{ObjectInfo, ObjectStore, StorageError, check_key};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub struct FsStore {
    root: PathBuf,
    timeout: Duration,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn backend(op: &'static str, key: &str, e: std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::NotFound {
        return StorageError::NotFound { key: key.into() };
    }
    StorageError::Backend {
        op,
        key: key.into(),
        message: e.to_string(),
        transient: matches!(
            e.kind(),
            std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
        ),
    }
}

impl FsStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            timeout: Duration::from_secs(30),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        key: &str,
        f: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| StorageError::Timeout {
                op,
                key: key.into(),
                after: self.timeout,
            })?
    }
}

fn info(key: String, meta: &std::fs::Metadata) -> ObjectInfo {
    ObjectInfo {
        key,
        size: meta.len(),
        last_modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, std::fs::Metadata)>,
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // temporary files of writes in progress
        }
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let key = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push((key, meta));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl ObjectStore for FsStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let path = self.path(key)?;
        self.bounded("put", key, async {
            let dir = path
                .parent()
                .expect("keys have a parent folder")
                .to_path_buf();
            let name = path
                .file_name()
                .expect("keys name a file")
                .to_string_lossy()
                .to_string();
            let tmp = dir.join(format!(
                ".{name}.tmp-{}-{}",
                std::process::id(),
                TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            // Durable before visible: the bytes reach the disk before the rename makes them
            // the object, and the rename reaches it before the put returns, so a crash or a
            // full disk leaves the old object or the new one, never a part of one.
            let (tmp_file, dir_, path_) = (tmp.clone(), dir.clone(), path.clone());
            let write = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                use std::io::Write;
                std::fs::create_dir_all(&dir_)?;
                let mut file = std::fs::File::create(&tmp_file)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                drop(file);
                std::fs::rename(&tmp_file, &path_)?;
                std::fs::File::open(&dir_)?.sync_all()
            });
            let result = write
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if result.is_err() {
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            result.map_err(|e| backend("put", key, e))
        })
        .await
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, StorageError> {
        let path = self.path(key)?;
        self.bounded("get", key, async {
            let size = tokio::fs::metadata(&path)
                .await
                .map_err(|e| backend("get", key, e))?
                .len();
            if size > max_bytes {
                return Err(StorageError::TooLarge {
                    key: key.into(),
                    size,
                    max: max_bytes,
                });
            }
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| backend("get", key, e))?;
            // The object may have been replaced between the size check and the read.
            if bytes.len() as u64 > max_bytes {
                return Err(StorageError::TooLarge {
                    key: key.into(),
                    size: bytes.len() as u64,
                    max: max_bytes,
                });
            }
            Ok(bytes)
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        let path = self.path(key)?;
        self.bounded("head", key, async {
            let meta = tokio::fs::metadata(&path)
                .await
                .map_err(|e| backend("head", key, e))?;
            if meta.is_dir() {
                return Err(StorageError::NotFound { key: key.into() });
            }
            Ok(info(key.into(), &meta))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let root = self.root.clone();
        // Walk only the folder the prefix names, then filter by the full prefix.
        let start = match prefix.rfind('/') {
            Some(i) => root.join(&prefix[..i]),
            None => root.clone(),
        };
        let prefix_owned = prefix.to_string();
        self.bounded("list", prefix, async move {
            let found = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                walk(&root, &start, &mut out).map(|_| out)
            })
            .await
            .map_err(|e| StorageError::Backend {
                op: "list",
                key: prefix_owned.clone(),
                message: e.to_string(),
                transient: false,
            })?
            .map_err(|e| backend("list", &prefix_owned, e))?;
            let mut objects: Vec<ObjectInfo> = found
                .into_iter()
                .filter(|(k, _)| k.starts_with(&prefix_owned))
                .map(|(k, m)| info(k, &m))
                .collect();
            objects.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(objects)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        self.bounded("delete", key, async {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(backend("delete", key, e)),
            }
        })
        .await
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}
