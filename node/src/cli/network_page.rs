//! The network page (`/network`) and the JSON it draws (`/network.json`): served by a node
//! from its own status (a validator's scores, evaluations and left-out peers) and by the
//! devnet runner from every node's. The page and the document are the protocol crate's
//! (`templar_protocol::network_view`), which the operator serves too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use templar_protocol::network_view::{NetworkRecorder, NetworkView, Observed, PAGE};
use templar_protocol::node_status::NodeStatus;

/// The latest view, as the recorder last built it.
pub type SharedView = Arc<Mutex<Option<NetworkView>>>;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `/network` (the page) and `/network.json` (the view; 503 before the first one).
pub fn routes(view: SharedView) -> Router {
    Router::new()
        .route(
            "/network",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
        .route("/network.json", get(view_json))
        .with_state(view)
}

async fn view_json(State(view): State<SharedView>) -> axum::response::Response {
    let current = view.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match current {
        Some(v) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(v)).into_response(),
        None => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "no view yet").into_response(),
    }
}

/// Record the node's own status into `view` each second, for as long as the task runs.
pub async fn record_own(status: Arc<Mutex<NodeStatus>>, view: SharedView) {
    let mut recorder: Option<NetworkRecorder> = None;
    loop {
        let own = status.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let recorder = recorder.get_or_insert_with(|| NetworkRecorder::new(own.hotkey.clone()));
        let observed = [Observed {
            name: format!(
                "{} {}",
                own.role,
                own.uid.map_or("-".into(), |u| u.to_string())
            ),
            status: Some(own),
        }];
        let built = recorder.observe(&observed, now_ms());
        *view.lock().unwrap_or_else(|e| e.into_inner()) = Some(built);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
