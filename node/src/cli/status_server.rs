//! The node's HTTP endpoints: `/healthz` (the process serves), `/readyz` (it has joined
//! a window), `/status` (the [`NodeStatus`] JSON the operator reads), `/metrics`
//! (Prometheus text) and the network page (`/network`, `/network.json`:
//! [`super::network_page`]).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use templar_protocol::node_status::{MinerScore, NodeStatus};

type Shared = Arc<Mutex<NodeStatus>>;
/// A counter: name, help, and its samples (extra labels, value).
type Counter = (&'static str, &'static str, Vec<(String, u64)>);
/// A gauge with one sample per scored miner: name, help, value.
type PerMinerGauge = (&'static str, &'static str, fn(&MinerScore) -> f64);

fn snapshot(s: &Shared) -> NodeStatus {
    s.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

pub fn router(status: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<Shared>| async move {
                match snapshot(&s).window {
                    Some(w) => (StatusCode::OK, format!("window {w}")),
                    None => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not in a window yet".to_string(),
                    ),
                }
            }),
        )
        .route(
            "/status",
            get(|State(s): State<Shared>| async move { axum::Json(snapshot(&s)) }),
        )
        .route(
            "/metrics",
            get(|State(s): State<Shared>| async move { metrics(&snapshot(&s)) }),
        )
        .with_state(status)
}

/// Prometheus text exposition of the status.
pub fn render_metrics(s: &NodeStatus) -> String {
    let labels = format!(
        "role=\"{}\",uid=\"{}\"",
        s.role,
        s.uid.map_or(-1, |u| u as i64)
    );
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {v}"
            );
        }
    };
    gauge(
        "templar_window",
        "Window the node is working on.",
        s.window.map(|w| w as f64),
    );
    gauge(
        "templar_global_step",
        "Outer steps applied.",
        Some(s.global_step as f64),
    );
    gauge(
        "templar_loss",
        "Mean training loss of the last window.",
        s.last_loss,
    );
    gauge(
        "templar_tokens_per_second",
        "Training throughput of the last window.",
        s.tokens_per_sec,
    );
    gauge(
        "templar_peers_gathered",
        "Peers merged in the last window.",
        Some(s.peers_gathered as f64),
    );
    gauge(
        "templar_peers_skipped",
        "Peers left out of the last window.",
        Some(s.peers_skipped.len() as f64),
    );
    gauge(
        "templar_incentive",
        "This node's incentive on chain.",
        s.incentive,
    );
    if let Some(w) = &s.weights {
        use templar_protocol::chain::weights::WeightsState;
        gauge(
            "templar_weights_not_revealed",
            "1 when the last weights commit passed the block it was due by without applying.",
            Some(f64::from(u8::from(w.state == WeightsState::NotRevealed))),
        );
        gauge(
            "templar_weights_committed_block",
            "Block the last weights (or their commit) went into.",
            Some(w.committed_block as f64),
        );
        gauge(
            "templar_weights_applied_block",
            "Block the chain last applied this node's weights at.",
            w.applied_block.map(|b| b as f64),
        );
    }
    gauge(
        "templar_checkpoint_age_windows",
        "Validators: windows since the last checkpoint.",
        s.window
            .zip(s.last_checkpoint_window)
            .map(|(w, c)| w.saturating_sub(c) as f64),
    );
    let f = &s.faults;
    let store_errors = f.store_errors.iter().map(|(op, n)| {
        let op = op.replace(['"', '\\', '\n'], " ");
        (format!(",op=\"{op}\""), *n)
    });
    let counters: [Counter; 3] = [
        (
            "templar_gathers_past_deadline_total",
            "Gathers that ended at their deadline with peers not yet read.",
            vec![(String::new(), f.gathers_past_deadline)],
        ),
        (
            "templar_windows_replayed_total",
            "Windows replayed from the stored payloads.",
            vec![(String::new(), f.windows_replayed)],
        ),
        (
            "templar_store_errors_total",
            "Failed store calls (each attempt) by operation.",
            store_errors.collect(),
        ),
    ];
    for (name, help, samples) in counters {
        if samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (extra, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}{extra}}} {value}");
        }
    }
    if let Some(c) = &s.compute {
        // An info gauge: 1, with the device in the labels (alerts compare it to the GPUs the
        // pod asked for).
        let gpu = c
            .gpu
            .as_deref()
            .unwrap_or("")
            .replace(['"', '\\', '\n'], " ");
        let _ = writeln!(
            out,
            "# HELP templar_compute_info Where the node computes (1).\n# TYPE templar_compute_info gauge\ntemplar_compute_info{{{labels},device=\"{}\",precision=\"{}\",gpu=\"{gpu}\"}} 1",
            c.device, c.precision
        );
    }
    if !s.scores.is_empty() {
        let per_miner: [PerMinerGauge; 2] = [
            (
                "templar_miner_score",
                "Moving-average score of a miner.",
                |m| m.score,
            ),
            ("templar_miner_weight", "Weight given to a miner.", |m| {
                m.weight
            }),
        ];
        for (name, help, value) in per_miner {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for m in &s.scores {
                let _ = writeln!(out, "{name}{{miner_uid=\"{}\"}} {}", m.uid, value(m));
            }
        }
    }
    out
}

fn metrics(s: &NodeStatus) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render_metrics(s),
    )
        .into_response()
}

/// Serve until the listener fails, with the network page recorded from this node's status;
/// bind errors are returned to the caller.
pub async fn serve(listener: tokio::net::TcpListener, status: Shared) -> std::io::Result<()> {
    let view = super::network_page::SharedView::default();
    let recorder = tokio::spawn(super::network_page::record_own(
        status.clone(),
        view.clone(),
    ));
    let app = router(status).merge(super::network_page::routes(view));
    let served = axum::serve(listener, app).await;
    recorder.abort();
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use templar_protocol::node_status::NodeRole;

    #[tokio::test]
    async fn endpoints_answer() {
        let status: Shared = Arc::new(Mutex::new(NodeStatus {
            role: NodeRole::Validator,
            uid: Some(4),
            ..Default::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, status.clone()));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut buf = String::new();
            s.read_to_string(&mut buf).await.unwrap();
            buf
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        {
            let mut s = status.lock().unwrap();
            s.window = Some(7);
            s.scores = vec![MinerScore {
                uid: 2,
                score: 0.5,
                last_improvement: Some(0.1),
                last_random_improvement: None,
                weight: 1.0,
                sync_drift: None,
                held_out_loss: None,
            }];
            s.compute = Some(templar_protocol::node_status::ComputeReport {
                device: "cuda:0".into(),
                precision: "bf16".into(),
                gpu: Some("NVIDIA H100 80GB HBM3".into()),
                ..Default::default()
            });
        }
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        let body = get("/status").await;
        let json = body.split("\r\n\r\n").nth(1).unwrap();
        let parsed: NodeStatus = serde_json::from_str(json).unwrap();
        assert_eq!(parsed.window, Some(7));
        assert_eq!(parsed.role, NodeRole::Validator);
        let m = get("/metrics").await;
        assert!(
            m.contains("templar_window{role=\"validator\",uid=\"4\"} 7"),
            "{m}"
        );
        assert!(m.contains("templar_miner_weight{miner_uid=\"2\"} 1"), "{m}");
        assert!(
            m.contains("templar_compute_info{role=\"validator\",uid=\"4\",device=\"cuda:0\",precision=\"bf16\",gpu=\"NVIDIA H100 80GB HBM3\"} 1"),
            "{m}"
        );
        assert!(parsed.compute.is_some_and(|c| c.on_gpu()));
        // The network page, and the validator's own view of the miner it scores (recorded
        // each second).
        let page = get("/network").await;
        assert!(page.starts_with("HTTP/1.1 200") && page.contains("<svg id=\"chart-score\""));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let body = get("/network.json").await;
            if let Some(json) = body.split("\r\n\r\n").nth(1)
                && let Ok(view) =
                    serde_json::from_str::<templar_protocol::network_view::NetworkView>(json)
                && view.miners.first().and_then(|m| m.weight) == Some(1.0)
            {
                assert_eq!(view.clock.window, Some(7));
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{body}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    #[test]
    fn faults_are_counters_with_one_header_each() {
        let mut s = NodeStatus {
            role: NodeRole::Miner,
            uid: Some(3),
            ..Default::default()
        };
        s.faults.store_errors.insert("get".into(), 4);
        s.faults.store_errors.insert("put".into(), 1);
        s.faults.gathers_past_deadline = 2;
        s.faults.windows_replayed = 5;
        let m = render_metrics(&s);
        for line in [
            "templar_store_errors_total{role=\"miner\",uid=\"3\",op=\"get\"} 4",
            "templar_store_errors_total{role=\"miner\",uid=\"3\",op=\"put\"} 1",
            "templar_gathers_past_deadline_total{role=\"miner\",uid=\"3\"} 2",
            "templar_windows_replayed_total{role=\"miner\",uid=\"3\"} 5",
            "# TYPE templar_store_errors_total counter",
        ] {
            assert!(m.contains(line), "{line} in {m}");
        }
        assert_eq!(m.matches("# HELP templar_store_errors_total").count(), 1);
        let parsed: NodeStatus = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(parsed.faults, s.faults);
        assert!(
            serde_json::to_string(&s)
                .unwrap()
                .contains("\"storeErrors\":{\"get\":4")
        );
    }

    #[test]
    fn weights_that_never_applied_show_in_the_metrics_and_the_status() {
        use templar_protocol::chain::weights::WeightsOnChain;
        let mut s = NodeStatus {
            role: NodeRole::Validator,
            uid: Some(0),
            weights: Some(WeightsOnChain::judge(100, Some(9), Some(200), 100, 250)),
            ..Default::default()
        };
        let m = render_metrics(&s);
        assert!(
            m.contains("templar_weights_not_revealed{role=\"validator\",uid=\"0\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("templar_weights_committed_block{role=\"validator\",uid=\"0\"} 100"),
            "{m}"
        );
        assert!(!m.contains("templar_weights_applied_block"), "{m}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["weights"]["state"], "notRevealed");
        s.weights = Some(WeightsOnChain::judge(100, Some(9), Some(200), 190, 250));
        let m = render_metrics(&s);
        assert!(
            m.contains("templar_weights_not_revealed{role=\"validator\",uid=\"0\"} 0"),
            "{m}"
        );
        assert!(
            m.contains("templar_weights_applied_block{role=\"validator\",uid=\"0\"} 190"),
            "{m}"
        );
    }
}
