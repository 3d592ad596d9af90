//! S3 store through aws-sdk-s3: AWS S3, Cloudflare R2, MinIO and Garage (path-style).
//! The SDK's own retries are off ([`super::retry`] owns retrying); every call has an
//! operation timeout; objects above a threshold are uploaded in parts.

use super::{ObjectInfo, ObjectStore, StorageError, check_key};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Connection settings. `Debug` never prints the secret.
#[derive(Clone)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:3900`; `None` for AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style addressing (MinIO, Garage); virtual-host style otherwise.
    pub path_style: bool,
    pub timeout: Duration,
    /// Objects larger than this are uploaded in parts of `part_size` bytes.
    pub multipart_threshold: usize,
    pub part_size: usize,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum S3ConfigError {
    #[error("missing setting {0} (environment variable or file)")]
    Missing(&'static str),
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

impl S3Config {
    /// Settings from the environment: `TEMPLAR_S3_ENDPOINT`, `TEMPLAR_S3_REGION` (default
    /// `auto`), `TEMPLAR_S3_BUCKET`, `TEMPLAR_S3_PATH_STYLE` (`true`/`false`, default true when
    /// an endpoint is set), and credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
    /// or from the files named by `TEMPLAR_S3_ACCESS_KEY_ID_FILE` /
    /// `TEMPLAR_S3_SECRET_ACCESS_KEY_FILE` (how Kubernetes secrets are mounted).
    pub fn from_env() -> Result<Self, S3ConfigError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let secret = |env: &'static str, file_env: &str| -> Result<String, S3ConfigError> {
            if let Some(v) = var(env) {
                return Ok(v);
            }
            let path = var(file_env).ok_or(S3ConfigError::Missing(env))?;
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|source| S3ConfigError::File { path, source })
        };
        let endpoint = var("TEMPLAR_S3_ENDPOINT");
        Ok(Self {
            path_style: var("TEMPLAR_S3_PATH_STYLE")
                .map(|v| v == "true" || v == "1")
                .unwrap_or(endpoint.is_some()),
            endpoint,
            region: var("TEMPLAR_S3_REGION").unwrap_or_else(|| "auto".into()),
            bucket: var("TEMPLAR_S3_BUCKET").ok_or(S3ConfigError::Missing("TEMPLAR_S3_BUCKET"))?,
            access_key_id: secret("AWS_ACCESS_KEY_ID", "TEMPLAR_S3_ACCESS_KEY_ID_FILE")?,
            secret_access_key: secret(
                "AWS_SECRET_ACCESS_KEY",
                "TEMPLAR_S3_SECRET_ACCESS_KEY_FILE",
            )?,
            ..Self::new("", "", "", "")
        })
    }

    /// Defaults: region `auto`, path-style, 30 s timeout, 8 MiB multipart threshold and parts.
    pub fn new(endpoint: &str, bucket: &str, access_key_id: &str, secret_access_key: &str) -> Self {
        Self {
            endpoint: (!endpoint.is_empty()).then(|| endpoint.to_string()),
            region: "auto".into(),
            bucket: bucket.into(),
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            path_style: true,
            timeout: Duration::from_secs(30),
            multipart_threshold: 8 << 20,
            part_size: 8 << 20,
        }
    }
}

pub struct S3Store {
    client: Client,
    cfg: S3Config,
}

fn to_system_time(t: Option<&DateTime>) -> SystemTime {
    t.and_then(|d| {
        let secs = u64::try_from(d.secs()).ok()?;
        Some(UNIX_EPOCH + Duration::new(secs, d.subsec_nanos()))
    })
    .unwrap_or(UNIX_EPOCH)
}

fn map_err<E>(
    op: &'static str,
    key: &str,
    timeout: Duration,
    e: SdkError<E, HttpResponse>,
) -> StorageError
where
    E: std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    if status == Some(404) {
        return StorageError::NotFound { key: key.into() };
    }
    if matches!(e, SdkError::TimeoutError(_)) {
        return StorageError::Timeout {
            op,
            key: key.into(),
            after: timeout,
        };
    }
    let transient = match &e {
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        _ => status.is_some_and(|s| s >= 500 || s == 429 || s == 408),
    };
    StorageError::Backend {
        op,
        key: key.into(),
        message: format!("{}", DisplayErrorContext(&e)),
        transient,
    }
}

impl S3Store {
    pub fn new(cfg: S3Config) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5).min(cfg.timeout))
            .operation_timeout(cfg.timeout)
            .build();
        let mut b = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .credentials_provider(Credentials::new(
                cfg.access_key_id.clone(),
                cfg.secret_access_key.clone(),
                None,
                None,
                "templar",
            ))
            .force_path_style(cfg.path_style)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(endpoint) = &cfg.endpoint {
            b = b.endpoint_url(endpoint);
        }
        Self {
            client: Client::from_conf(b.build()),
            cfg,
        }
    }

    async fn put_multipart(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let t = self.cfg.timeout;
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_err("put", key, t, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let upload = async {
            let mut parts = Vec::new();
            for (i, chunk) in bytes.chunks(self.cfg.part_size.max(5 << 20)).enumerate() {
                let n = i as i32 + 1;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.cfg.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .body(ByteStream::from(chunk.to_vec()))
                    .send()
                    .await
                    .map_err(|e| map_err("put", key, t, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.cfg.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| map_err("put", key, t, e))?;
            Ok(())
        };
        let result = upload.await;
        if result.is_err() {
            // Leave no orphaned parts behind; failing to abort is not worth hiding the cause.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.cfg.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        check_key(key)?;
        if bytes.len() > self.cfg.multipart_threshold {
            return self.put_multipart(key, bytes).await;
        }
        self.client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| map_err("put", key, self.cfg.timeout, e))?;
        Ok(())
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, StorageError> {
        check_key(key)?;
        let t = self.cfg.timeout;
        let resp = self
            .client
            .get_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_err("get", key, t, e))?;
        let too_large = |size| StorageError::TooLarge {
            key: key.into(),
            size,
            max: max_bytes,
        };
        if let Some(len) = resp.content_length()
            && len as u64 > max_bytes
        {
            return Err(too_large(len as u64));
        }
        // Count while reading: a server may send more than it announced.
        let mut body = resp.body;
        let mut out = Vec::new();
        let read = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| StorageError::Backend {
                    op: "get",
                    key: key.into(),
                    message: e.to_string(),
                    transient: true,
                })?;
                if (out.len() + chunk.len()) as u64 > max_bytes {
                    return Err(too_large((out.len() + chunk.len()) as u64));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(())
        };
        tokio::time::timeout(t, read)
            .await
            .map_err(|_| StorageError::Timeout {
                op: "get",
                key: key.into(),
                after: t,
            })??;
        Ok(out)
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        check_key(key)?;
        let resp = self
            .client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_err("head", key, self.cfg.timeout, e))?;
        Ok(ObjectInfo {
            key: key.into(),
            size: resp.content_length().unwrap_or(0).max(0) as u64,
            last_modified: to_system_time(resp.last_modified()),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(&self.cfg.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| map_err("list", prefix, self.cfg.timeout, e))?;
            for o in resp.contents() {
                out.push(ObjectInfo {
                    key: o.key().unwrap_or_default().to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: to_system_time(o.last_modified()),
                });
            }
            match resp.next_continuation_token() {
                Some(t) if resp.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match map_err("delete", key, self.cfg.timeout, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    fn describe(&self) -> String {
        format!(
            "s3://{}@{}",
            self.cfg.bucket,
            self.cfg.endpoint.as_deref().unwrap_or("aws")
        )
    }
}
