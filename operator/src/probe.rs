//! Reads each ready pod's `/status` (the node's `NodeStatus` document) over plain HTTP, with
//! a timeout per read and a bound on reads in flight.

use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::time::Duration;
use templar_crds::NodeStatus;

/// A status document is a few kilobytes; anything past this is not one.
const MAX_STATUS_BYTES: usize = 1 << 20;

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
    pub async fn read(&self, ip: &str) -> Result<NodeStatus, String> {
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        let uri: hyper::Uri = format!("http://{host}:{}/status", self.port)
            .parse()
            .map_err(|e| format!("bad pod address {ip:?}: {e}"))?;
        let fetch = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| format!("GET /status: {e}"))?;
            let code = resp.status();
            let body = Limited::new(resp.into_body(), MAX_STATUS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading /status: {e}"))?
                .to_bytes();
            if !code.is_success() {
                return Err(format!("GET /status answered {code}"));
            }
            serde_json::from_slice::<NodeStatus>(&body)
                .map_err(|e| format!("/status is not a node status: {e}"))
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .unwrap_or_else(|_| Err(format!("GET /status timed out after {:?}", self.timeout)))
    }

    /// Read every `(pod, ip)` with at most `concurrency` reads in flight.
    pub async fn read_all(
        &self,
        pods: Vec<(String, String)>,
    ) -> BTreeMap<String, Result<NodeStatus, String>> {
        futures::stream::iter(pods)
            .map(|(pod, ip)| async move { (pod, self.read(&ip).await) })
            .buffer_unordered(self.concurrency)
            .collect()
            .await
    }
}
