//! The controller against a FAKE Kubernetes API server that misbehaves for three simulated
//! minutes (no kube-apiserver can run on this machine): every watch answered 410 Gone (its
//! open streams dropped first) and status writes 409 Conflict, then the other writes 429
//! with Retry-After, then reads 500 too. The operator backs off (no hot loop), re-lists, and once the
//! API recovers converges on a change the user made during the outage, its status write
//! landing.

mod common;

use futures::future::FutureExt;
use http::Request;
use kube::client::Body;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use templar_operator::probe::{NodeStatusReader, ProbeError};
use templar_protocol::node_status::{NodeRole, NodeStatus};
use templar_testkit::fake_api::{self, FakeBody, full, handle};

const NS: &str = fake_api::NS;
const OUTAGE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(240));

/// Nodes that move on a window each minute, so every refresh has a status to write.
struct AdvancingNodes(tokio::time::Instant);

impl NodeStatusReader for AdvancingNodes {
    fn read_all(
        &self,
        pods: Vec<(String, String)>,
    ) -> futures::future::BoxFuture<'_, BTreeMap<String, Result<NodeStatus, ProbeError>>> {
        let docs = pods
            .into_iter()
            .enumerate()
            .map(|(i, (pod, _))| {
                let doc = NodeStatus {
                    role: NodeRole::Miner,
                    uid: Some(i as u16 + 1),
                    window: Some(40 + self.0.elapsed().as_secs() / 60),
                    last_loss: Some(3.0),
                    ..Default::default()
                };
                (pod, Ok(doc))
            })
            .collect();
        async move { docs }.boxed()
    }
}

/// Requests the API answered with a fault, by kind, and all requests during the outage.
#[derive(Default, Debug)]
struct Injected {
    by_kind: BTreeMap<&'static str, usize>,
    during_outage: usize,
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
           "code": code, "message": format!("injected {reason}")})
}

/// The fault for a request in `phase` of the outage: 0, status writes conflict; 1, every
/// write is refused; 2, reads fail too. Watches are refused throughout.
fn fault(
    method: &str,
    path: &str,
    query: &str,
    phase: u32,
) -> Option<(&'static str, http::Response<FakeBody>)> {
    if query.contains("watch=true") {
        return Some(("watch 410", full(410, &status(410, "Expired"))));
    }
    Some(match method {
        "PATCH" if path.ends_with("/status") => ("status 409", full(409, &status(409, "Conflict"))),
        "PATCH" | "POST" | "DELETE" if phase >= 1 => {
            let mut r = full(429, &status(429, "TooManyRequests"));
            r.headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("2"));
            ("write 429", r)
        }
        "GET" if phase >= 2 => ("read 500", full(500, &status(500, "InternalError"))),
        _ => return None,
    })
}

#[tokio::test(start_paused = true)]
async fn a_misbehaving_api_is_backed_off_from_and_the_operator_converges_once_it_recovers() {
    let started = tokio::time::Instant::now();
    let state = common::fake_run::alpha_state();
    let injected = Arc::new(Mutex::new(Injected::default()));
    let (served, counted) = (state.clone(), injected.clone());
    let service = tower::service_fn(move |req: Request<Body>| {
        let (state, injected) = (served.clone(), counted.clone());
        async move {
            let at = started.elapsed();
            if at >= OUTAGE.0 && at < OUTAGE.1 {
                let (method, path) = (req.method().to_string(), req.uri().path().to_string());
                let query = req.uri().query().unwrap_or_default().to_string();
                let phase =
                    ((at - OUTAGE.0).as_secs() * 3 / (OUTAGE.1 - OUTAGE.0).as_secs()) as u32;
                let mut i = injected.lock().unwrap();
                i.during_outage += 1;
                if let Some((kind, response)) = fault(&method, &path, &query, phase) {
                    *i.by_kind.entry(kind).or_default() += 1;
                    return Ok::<_, Infallible>(response);
                }
            }
            Ok(handle(state, started, req).await)
        }
    });
    let client = kube::Client::new(service, NS);
    // The outage begins: the open watch streams drop. During it the user scales the miner
    // (the change the operator must not lose).
    let acting = {
        let state = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(OUTAGE.0).await;
            state.lock().unwrap().watches.clear();
            tokio::time::sleep(Duration::from_secs(30)).await;
            common::fake_run::scale_miner(&mut state.lock().unwrap(), 2);
        })
    };
    let refresh = Duration::from_secs(30);
    let length = Duration::from_secs(8 * 60);
    let nodes = AdvancingNodes(started);
    let metrics =
        common::fake_run::run_controllers_for(client, nodes, refresh, length, &state).await;
    acting.abort();

    let i = injected.lock().unwrap();
    let c = metrics.counts("TemplarMiner");
    let minutes = (OUTAGE.1 - OUTAGE.0).as_secs_f64() / 60.0;
    println!(
        "{{\"outage_minutes\": {minutes}, \"requests_during_outage\": {}, \"per_minute\": {:.1}, \"faults\": {:?}, \"reconciles\": {}, \"watch_errors\": {}}}",
        i.during_outage,
        i.during_outage as f64 / minutes,
        i.by_kind,
        c.reconciles,
        c.watch_errors
    );
    // Every kind of fault was met, and none was hammered.
    for kind in ["watch 410", "status 409", "write 429", "read 500"] {
        assert!(i.by_kind.get(kind).is_some_and(|n| *n > 0), "{i:?}");
    }
    assert!(
        (i.during_outage as f64 / minutes) < 60.0,
        "no hot loop: {} requests in {minutes} minutes ({i:?})",
        i.during_outage
    );
    assert!(c.watch_errors > 0, "watch errors counted: {c:?}");
    // Recovered: the change made during the outage is applied and its status written.
    let s = state.lock().unwrap();
    let sts = s.stateful_set.as_ref().expect("a StatefulSet");
    assert_eq!(
        sts["spec"]["replicas"], 2,
        "the scale during the outage applied"
    );
    assert_eq!(
        s.miner["status"]["observedGeneration"], 2,
        "{:#}",
        s.miner["status"]
    );
    assert!(
        s.status_writes.iter().any(|t| *t >= OUTAGE.1),
        "a status write after the recovery: {:?}",
        s.status_writes
    );
    let after = s.applies.iter().filter(|t| **t >= OUTAGE.1).count();
    assert!(after <= 10, "{after} applies after the recovery");
}
