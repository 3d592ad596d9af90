//! Reads each ready pod's `/status` (the node's `NodeStatus` document) over plain HTTP, with
//! a timeout per read and a bound on reads in flight.

use futures::StreamExt;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::time::Duration;
use templar_protocol::node_status::NodeStatus;

/// A status document is a few kilobytes; anything past this is not one.
const MAX_STATUS_BYTES: usize = 1 << 20;

/// Why a pod's `/status` could not be read (shown as the replica's `lastError`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProbeError {
    #[error("bad pod address {ip:?}: {reason}")]
    BadAddress { ip: String, reason: String },
    #[error("GET /status: {0}")]
    Request(String),
    #[error("reading /status: {0}")]
    Body(String),
    #[error("GET /status answered {0}")]
    Status(String),
    #[error("/status is not a node status: {0}")]
    NotAStatus(String),
    #[error("GET /status timed out after {0:?}")]
    Timeout(Duration),
}

#[derive(Clone)]
pub struct StatusProbe {
    client: Client<HttpConnector, Empty<Bytes>>,
    pub port: u16,
    pub timeout: Duration,
    pub concurrency: usize,
}

impl StatusProbe {
    pub fn new(port: u16, timeout: Duration, concurrency: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            port,
            timeout,
            concurrency: concurrency.max(1),
        }
    }

    /// `/status` of one pod at `ip`, or why it could not be read.
    pub async fn read(&self, ip: &str) -> Result<NodeStatus, ProbeError> {
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        let uri: hyper::Uri = format!("http://{host}:{}/status", self.port)
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| ProbeError::BadAddress {
                ip: ip.to_string(),
                reason: e.to_string(),
            })?;
        let fetch = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| ProbeError::Request(e.to_string()))?;
            let code = resp.status();
            let body = Limited::new(resp.into_body(), MAX_STATUS_BYTES)
                .collect()
                .await
                .map_err(|e| ProbeError::Body(e.to_string()))?
                .to_bytes();
            if !code.is_success() {
                return Err(ProbeError::Status(code.to_string()));
            }
            serde_json::from_slice::<NodeStatus>(&body)
                .map_err(|e| ProbeError::NotAStatus(e.to_string()))
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .unwrap_or(Err(ProbeError::Timeout(self.timeout)))
    }

    /// Read every `(pod, ip)` with at most `concurrency` reads in flight.
    pub async fn read_all(
        &self,
        pods: Vec<(String, String)>,
    ) -> BTreeMap<String, Result<NodeStatus, ProbeError>> {
        futures::stream::iter(pods)
            .map(|(pod, ip)| async move { (pod, self.read(&ip).await) })
            .buffer_unordered(self.concurrency)
            .collect()
            .await
    }
}

/// Where the reconcile reads the nodes' `/status` documents: over HTTP in a cluster
/// ([`StatusProbe`]); tests with simulated time plug in a table.
pub trait NodeStatusReader: Send + Sync {
    /// The document of every `(pod, ip)`, or why it could not be read.
    fn read_all(
        &self,
        pods: Vec<(String, String)>,
    ) -> BoxFuture<'_, BTreeMap<String, Result<NodeStatus, ProbeError>>>;
}

impl NodeStatusReader for StatusProbe {
    fn read_all(
        &self,
        pods: Vec<(String, String)>,
    ) -> BoxFuture<'_, BTreeMap<String, Result<NodeStatus, ProbeError>>> {
        Box::pin(StatusProbe::read_all(self, pods))
    }
}
