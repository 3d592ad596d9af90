//! The network page for each `TemplarValidator` (`--network-view`, off by default): the
//! view is built from the `/status` documents the reconcile reads anyway — the validator's
//! pods and every `TemplarMiner`'s pods in its namespace — and served read-only beside
//! `/metrics` at `/network/NAMESPACE/NAME` (page) and `/network/NAMESPACE/NAME.json`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use templar_protocol::network_view::{NetworkRecorder, NetworkView, Observed, PAGE};
use templar_protocol::node_status::{NodeRole, NodeStatus};

use crate::probe::ProbeError;

/// (namespace, resource name).
type Key = (String, String);

#[derive(Default)]
pub struct NetworkViews {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Per `TemplarValidator`: its recorder (the window history) and the latest view.
    recorders: BTreeMap<Key, NetworkRecorder>,
    views: BTreeMap<Key, NetworkView>,
    /// Per `TemplarMiner`: its pods as last read.
    miners: BTreeMap<Key, Vec<Observed>>,
}

impl NetworkViews {
    /// What one reconcile of `namespace/name` read from its pods: a miner resource's pods are
    /// kept for the namespace's validators; a validator's pods, with them, make its view.
    pub fn record(
        &self,
        role: NodeRole,
        namespace: &str,
        name: &str,
        probes: &BTreeMap<String, Result<NodeStatus, ProbeError>>,
        now_ms: u64,
    ) {
        let pods: Vec<Observed> = probes
            .iter()
            .map(|(pod, status)| Observed {
                name: pod.clone(),
                status: status.as_ref().ok().cloned(),
            })
            .collect();
        let key = (namespace.to_string(), name.to_string());
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match role {
            NodeRole::Miner => {
                inner.miners.insert(key, pods);
            }
            NodeRole::Validator => {
                let mut nodes = pods;
                for ((ns, _), miners) in &inner.miners {
                    if ns == namespace {
                        nodes.extend(miners.iter().cloned());
                    }
                }
                let recorder = inner
                    .recorders
                    .entry(key.clone())
                    .or_insert_with(|| NetworkRecorder::new(format!("{namespace}/{name}")));
                let view = recorder.observe(&nodes, now_ms);
                inner.views.insert(key, view);
            }
        }
    }

    /// A deleted resource's view and pods are dropped.
    pub fn forget(&self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.recorders.remove(&key);
        inner.views.remove(&key);
        inner.miners.remove(&key);
    }

    pub fn view(&self, namespace: &str, name: &str) -> Option<NetworkView> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .views
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// `/network/NAMESPACE/NAME` and `/network/NAMESPACE/NAME.json`.
    pub fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route("/network/{namespace}/{name}", get(serve))
            .with_state(self)
    }
}

async fn serve(
    State(views): State<Arc<NetworkViews>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let (name, json) = match name.strip_suffix(".json") {
        Some(n) => (n.to_string(), true),
        None => (name, false),
    };
    let Some(view) = views.view(&namespace, &name) else {
        let text = format!("no TemplarValidator {namespace}/{name} seen by this operator");
        return (StatusCode::NOT_FOUND, text).into_response();
    };
    if json {
        ([(header::CACHE_CONTROL, "no-store")], axum::Json(view)).into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use templar_protocol::node_status::MinerScore;

    fn status(role: NodeRole, uid: u16, window: u64) -> NodeStatus {
        NodeStatus {
            role,
            uid: Some(uid),
            window: Some(window),
            last_loss: Some(7.0),
            ..Default::default()
        }
    }

    #[test]
    fn a_validators_view_holds_the_miners_of_its_namespace_only() {
        let views = NetworkViews::default();
        let probes = |entries: Vec<(&str, Result<NodeStatus, ProbeError>)>| {
            entries
                .into_iter()
                .map(|(pod, s)| (pod.to_string(), s))
                .collect::<BTreeMap<_, _>>()
        };
        views.record(
            NodeRole::Miner,
            "net",
            "alpha",
            &probes(vec![
                ("alpha-miner-0", Ok(status(NodeRole::Miner, 1, 4))),
                (
                    "alpha-miner-1",
                    Err(ProbeError::Timeout(std::time::Duration::from_secs(2))),
                ),
            ]),
            0,
        );
        views.record(
            NodeRole::Miner,
            "other",
            "beta",
            &probes(vec![("beta-miner-0", Ok(status(NodeRole::Miner, 9, 4)))]),
            0,
        );
        let mut validator = status(NodeRole::Validator, 0, 4);
        validator.scores = vec![MinerScore {
            uid: 1,
            score: 0.5,
            last_improvement: None,
            last_random_improvement: None,
            weight: 1.0,
            sync_drift: None,
            held_out_loss: Some(6.0),
        }];
        views.record(
            NodeRole::Validator,
            "net",
            "main",
            &probes(vec![("main-validator-0", Ok(validator))]),
            1_000,
        );
        let view = views.view("net", "main").expect("a view for the validator");
        assert_eq!(view.name, "net/main");
        let uids: Vec<u16> = view.miners.iter().map(|m| m.uid).collect();
        assert_eq!(uids, [1], "only net's answering miners, not other's");
        assert_eq!(view.miners[0].name, "alpha-miner-0");
        assert_eq!(view.miners[0].weight, Some(1.0));
        assert_eq!(view.windows.len(), 1);
        assert!(
            views.view("net", "alpha").is_none(),
            "no view for a miner resource"
        );
        views.forget("net", "main");
        assert!(views.view("net", "main").is_none());
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: op\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        let read = s.read_to_string(&mut out);
        tokio::time::timeout(std::time::Duration::from_secs(5), read)
            .await
            .unwrap()
            .unwrap();
        out
    }

    #[tokio::test]
    async fn the_page_and_its_json_are_served_per_validator_and_unknown_ones_are_404() {
        let views = Arc::new(NetworkViews::default());
        let probes = BTreeMap::from([(
            "main-validator-0".to_string(),
            Ok(status(NodeRole::Validator, 0, 7)),
        )]);
        views.record(NodeRole::Validator, "net", "main", &probes, 5);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, views.routes()).await });

        let page = get(addr, "/network/net/main").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("text/html") && page.contains("<svg id=\"chart-training-loss\""));
        let json = get(addr, "/network/net/main.json").await;
        assert!(json.starts_with("HTTP/1.1 200"), "{json}");
        let body = json.split("\r\n\r\n").nth(1).unwrap();
        let view: NetworkView = serde_json::from_str(body).unwrap();
        assert_eq!(
            (view.name.as_str(), view.clock.window),
            ("net/main", Some(7))
        );
        let missing = get(addr, "/network/net/other.json").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    }
}
