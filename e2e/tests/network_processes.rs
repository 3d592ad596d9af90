//! The local end-to-end suite: `templar-node run` processes (one validator, three miners)
//! on Garage (a real S3 server on loopback) and the devnet chain, as a cluster runs them,
//! each node on its own loopback address. One scenario, in order (the phases share the
//! network because four training processes already fill two cores):
//!   1. windows advance, every miner's /status reports a loss, the validator's weights
//!      reach the chain (every miner's incentive on chain is positive);
//!   2. `templar-operator`'s controllers, run in-process against the FAKE API server of the
//!      operator's tests (no kube-apiserver can run here), read the nodes' real /status and
//!      write their windows and losses into the TemplarMiner's status;
//!   3. a miner killed with SIGKILL mid-window comes back, catches up and holds the same
//!      model as the others (its modelSample within 1e-4 at the same outer step);
//!   4. the validator killed with SIGKILL and restarted shows the scores it had.

use templar_operator::network_views::NetworkViews;
use templar_testkit::fake_api;

use futures::FutureExt;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use templar_e2e::{binary, repo_root};
use templar_operator::controller::{Scope, Stop, run_controllers};
use templar_operator::metrics::Metrics;
use templar_operator::probe::StatusProbe;
use templar_operator::reconcile::{Context, Timing};
use templar_protocol::chain::devnet;
use templar_protocol::node_status::{NodeRole, NodeStatus};
use templar_testkit::garage::GarageServer;

const HPARAMS: &str = "hparams/devnet.toml";

struct Node {
    name: String,
    role: NodeRole,
    ip: String,
    child: Option<Child>,
    log: PathBuf,
    restarts: u32,
}

/// The network's processes; all killed (and reaped) on drop, so none outlives the test.
struct Network {
    nodes: Vec<Node>,
    port: u16,
    garage: GarageServer,
    logs: tempfile::TempDir,
    probe: StatusProbe,
}

impl Drop for Network {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A port free on every one of `ips` (each node listens on its own loopback address and
/// the same port, as pods do; the operator reads `<pod ip>:<port>`).
fn common_free_port(ips: &[String]) -> u16 {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind((ips[0].as_str(), 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        if ips[1..]
            .iter()
            .all(|ip| std::net::TcpListener::bind((ip.as_str(), port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

impl Network {
    fn start() -> Self {
        let garage = GarageServer::start("templar-e2e").expect("Garage must be installed");
        let mut nodes = vec![Node {
            name: "validator".into(),
            role: NodeRole::Validator,
            ip: "127.0.0.10".into(),
            child: None,
            log: PathBuf::new(),
            restarts: 0,
        }];
        for i in 1..=3 {
            nodes.push(Node {
                name: format!("miner-{i}"),
                role: NodeRole::Miner,
                ip: format!("127.0.0.{}", 10 + i),
                child: None,
                log: PathBuf::new(),
                restarts: 0,
            });
        }
        let ips: Vec<String> = nodes.iter().map(|n| n.ip.clone()).collect();
        let port = common_free_port(&ips);
        let mut net = Self {
            nodes,
            port,
            garage,
            logs: tempfile::tempdir().unwrap(),
            probe: StatusProbe::new(port, Duration::from_secs(2), 4),
        };
        for i in 0..net.nodes.len() {
            net.spawn(i);
        }
        net
    }

    /// Start node `i` (again): `templar-node run` as the operator's pods run it, the keys in
    /// the environment, never in the arguments.
    fn spawn(&mut self, i: usize) {
        let port = self.port;
        let n = &mut self.nodes[i];
        n.log = self
            .logs
            .path()
            .join(format!("{}-{}.log", n.name, n.restarts));
        n.restarts += 1;
        let log = std::fs::File::create(&n.log).unwrap();
        let mut cmd = Command::new(binary("templar-node"));
        cmd.args(["run", "--role", n.role.as_str(), "--hotkey", &n.name])
            .args(["--hparams", HPARAMS, "--devnet", "s3", "--store", "s3"])
            .args(["--listen", &format!("{}:{port}", n.ip)])
            .args(["--stake", &devnet::stake_for(n.role).to_string()]);
        if n.role == NodeRole::Validator {
            cmd.args(["--init-devnet-block-ms", "1000"]);
        }
        let child = cmd
            .current_dir(repo_root())
            .env("TEMPLAR_DEVICE", "cpu")
            .env("OMP_NUM_THREADS", "1")
            .env("NO_COLOR", "1")
            .env("TEMPLAR_S3_ENDPOINT", &self.garage.endpoint)
            .env("TEMPLAR_S3_BUCKET", &self.garage.bucket)
            .env("TEMPLAR_S3_REGION", "garage")
            .env("AWS_ACCESS_KEY_ID", &self.garage.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.garage.secret)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        n.child = Some(child);
    }

    /// SIGKILL node `i` (no chance to finish its window or flush anything).
    fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Every node's log lines (all its runs) that contain one of `needles`.
    fn log_lines(&self, needles: &[&str]) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            for run in 0..n.restarts {
                let path = self.logs.path().join(format!("{}-{run}.log", n.name));
                let text = std::fs::read_to_string(path).unwrap_or_default();
                out += &format!("--- {} (run {run})\n", n.name);
                for l in text
                    .lines()
                    .filter(|l| needles.iter().any(|x| l.contains(x)))
                {
                    out += l;
                    out.push('\n');
                }
            }
        }
        out
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out += &format!("--- {} (last lines)\n", n.name);
            for l in tail.iter().rev() {
                out += l;
                out.push('\n');
            }
        }
        out
    }

    /// Every node's /status (None for one that does not answer), failing on a node that
    /// exited by itself.
    async fn statuses(&mut self) -> Vec<Option<NodeStatus>> {
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut()
                && let Ok(Some(code)) = c.try_wait()
            {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                panic!("{} exited by itself ({code}):\n{log}", n.name);
            }
        }
        let mut out = Vec::new();
        for n in &self.nodes {
            out.push(self.probe.read(&n.ip).await.ok());
        }
        out
    }

    /// Poll every 250 ms until `done` holds (recording model samples on the way), or fail
    /// after `limit` with the nodes' last log lines.
    async fn until(
        &mut self,
        what: &str,
        limit: Duration,
        samples: &mut Samples,
        mut done: impl FnMut(&[Option<NodeStatus>], &Samples) -> bool,
    ) -> Vec<Option<NodeStatus>> {
        let started = Instant::now();
        loop {
            let statuses = self.statuses().await;
            samples.record(&self.nodes, &statuses);
            if done(&statuses, samples) {
                return statuses;
            }
            if started.elapsed() > limit {
                panic!(
                    "{what}: not within {limit:?}\nstatuses: {statuses:#?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// modelSample per (node name, process start, global step).
#[derive(Default)]
struct Samples(BTreeMap<(String, u32, u64), Vec<f64>>);

impl Samples {
    fn record(&mut self, nodes: &[Node], statuses: &[Option<NodeStatus>]) {
        for (n, s) in nodes.iter().zip(statuses) {
            if let Some(s) = s
                && !s.model_sample.is_empty()
            {
                self.0
                    .entry((n.name.clone(), n.restarts, s.global_step))
                    .or_insert_with(|| s.model_sample.clone());
            }
        }
    }

    fn at(&self, name: &str, start: u32, step: u64) -> Option<&Vec<f64>> {
        self.0.get(&(name.to_string(), start, step))
    }
}

fn miners(statuses: &[Option<NodeStatus>]) -> impl Iterator<Item = Option<&NodeStatus>> {
    statuses[1..].iter().map(Option::as_ref)
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Phase 2: the operator's controllers over a TemplarMiner whose three pods are the running
/// miners; returns the status they wrote.
async fn operator_status_of_running_miners(net: &Network) -> serde_json::Value {
    let state = Arc::new(Mutex::new(fake_api::State {
        version: 1,
        miner: serde_json::to_value(serde_yaml::from_str::<serde_json::Value>(
            "apiVersion: templar.tplr.ai/v1alpha1\nkind: TemplarMiner\nmetadata: {name: alpha, namespace: train, uid: cr-uid, generation: 1, resourceVersion: \"1\"}\nspec:\n  image: ghcr.io/templar-rs/templar-node:0.1.0\n  replicas: 3\n  storage: {bucket: alpha, writeSecret: s3-write}\n  walletSecret: hotkeys\n  hyperparameters: {inline: \"[model]\\nsize = \\\"tiny\\\"\\n\"}\n",
        ).unwrap())
        .unwrap(),
        pod_ips: net.nodes[1..].iter().map(|n| n.ip.clone()).collect(),
        ..Default::default()
    }));
    let started = tokio::time::Instant::now();
    let served = state.clone();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let state = served.clone();
        async move { Ok::<_, Infallible>(fake_api::handle(state, started, req).await) }
    });
    let client = kube::Client::new(service, fake_api::NS);
    let timing = Timing {
        settled: Duration::from_secs(2),
        unsettled: Duration::from_secs(1),
        ..Timing::default()
    };
    let probe = StatusProbe::new(net.port, Duration::from_secs(2), 16);
    let views = Arc::new(NetworkViews::default());
    let ctx = Arc::new(
        Context::new(client.clone(), Arc::new(Metrics::new()), probe, timing)
            .with_network_views(views.clone()),
    );
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    let stop: Stop = async move {
        let _ = rx.await;
    }
    .boxed()
    .shared();
    let controllers = tokio::spawn(run_controllers(
        client,
        Scope::Namespaces(vec![fake_api::NS.into()]),
        ctx,
        stop,
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = state.lock().unwrap().miner["status"].clone();
        let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
        let reported = nodes
            .iter()
            .filter(|n| n["window"].is_u64() && n["loss"].is_f64())
            .count();
        if reported == 3 {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the operator did not report the nodes: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(30), controllers)
        .await
        .expect("controllers stop")
        .unwrap();
    let unknown = state.lock().unwrap().unknown.clone();
    assert!(
        unknown.is_empty(),
        "requests the fake does not know: {unknown:?}"
    );
    // The network page of a validator in the namespace draws the running miners, as the
    // reconciles read them from their /status.
    views.record(
        templar_protocol::node_status::NodeRole::Validator,
        fake_api::NS,
        "main",
        &Default::default(),
        1,
    );
    let view = views.view(fake_api::NS, "main").expect("a view");
    let drawn = view
        .miners
        .iter()
        .filter(|m| m.training_loss.is_some_and(f64::is_finite) && m.ready == Some(true))
        .count();
    assert_eq!(drawn, 3, "{view:?}");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_of_processes_trains_reports_and_survives_kills() {
    let mut net = Network::start();
    let mut samples = Samples::default();
    let (w0, validator) = windows_advance_and_weights_land(&mut net, &mut samples).await;
    the_operator_reports_the_running_miners(&mut net, w0).await;
    a_miner_killed_mid_window_catches_up(&mut net, &mut samples).await;
    a_killed_validator_resumes_its_scores(&mut net, &mut samples, &validator).await;
}

/// Windows advance; every miner reports a loss; the weights reach the chain. Returns the
/// first window seen and the validator's status once they have.
async fn windows_advance_and_weights_land(
    net: &mut Network,
    samples: &mut Samples,
) -> (u64, NodeStatus) {
    let first = net
        .until(
            "the validator reports a window",
            Duration::from_secs(120),
            samples,
            |s, _| s[0].as_ref().and_then(|v| v.window).is_some(),
        )
        .await;
    let w0 = first[0].as_ref().unwrap().window.unwrap();
    let settled = net
        .until(
            "every miner reports a loss and earns incentive from the validator's weights",
            Duration::from_secs(150),
            samples,
            |s, _| {
                s[0].as_ref()
                    .and_then(|v| v.window)
                    .is_some_and(|w| w >= w0 + 2)
                    && miners(s).all(|m| {
                        m.is_some_and(|m| {
                            m.last_loss.is_some_and(f64::is_finite)
                                && m.incentive.is_some_and(|x| x > 0.0)
                        })
                    })
            },
        )
        .await;
    let validator = settled[0].as_ref().unwrap();
    for m in &validator.scores {
        eprintln!(
            "uid {}: score {:.4e}, last own improvement {:?}, weight {:.3}",
            m.uid, m.score, m.last_improvement, m.weight
        );
    }
    assert!(validator.last_weights_window.is_some());
    // Each miner reads its incentive every 2 s, so they may come from different weight
    // sets: each is a share (the in-process network test checks that they sum to one).
    for m in miners(&settled) {
        let x = m.unwrap().incentive.unwrap();
        assert!(x > 0.0 && x <= 1.0, "incentive {x}");
    }

    (w0, validator.clone())
}

/// The operator reports the running nodes' windows and losses in the CR status.
async fn the_operator_reports_the_running_miners(net: &mut Network, w0: u64) {
    let status = operator_status_of_running_miners(net).await;
    let now = net.statuses().await;
    let newest = miners(&now).filter_map(|m| m?.window).max().unwrap();
    let reported = status["window"].as_u64().expect("status.window");
    assert!(
        reported >= w0 && reported <= newest,
        "status.window {reported} among the miners' windows (first {w0}, now {newest})"
    );
    assert!(
        status["loss"].as_f64().is_some_and(f64::is_finite),
        "{status:#}"
    );
    assert_eq!(status["readyReplicas"], 3, "{status:#}");
    eprintln!(
        "first window {w0}; the operator reported window {reported}, loss {}",
        status["loss"]
    );
}

/// SIGKILL a miner mid-window (right after its upload, before the window closes); restarted
/// a window later, it catches up and holds the others' model.
async fn a_miner_killed_mid_window_catches_up(net: &mut Network, samples: &mut Samples) {
    let killed = 2;
    let busy = net
        .until(
            "miner-2 uploads in a window that is still open",
            Duration::from_secs(60),
            samples,
            |s, _| {
                let m = s[killed].as_ref();
                m.and_then(|m| m.window).is_some()
                    && m.and_then(|m| m.last_upload_window) == m.and_then(|m| m.window)
            },
        )
        .await;
    let killed_in = busy[killed].as_ref().unwrap().window.unwrap();
    net.kill(killed);
    let _ = net
        .until(
            "the others move on a window without miner-2",
            Duration::from_secs(60),
            samples,
            |s, _| {
                s[1].as_ref()
                    .and_then(|m| m.window)
                    .is_some_and(|w| w > killed_in)
            },
        )
        .await;
    net.spawn(killed);
    let start = net.nodes[killed].restarts;
    let mut matched = None;
    let _ = net
        .until(
            "the restarted miner-2 reaches an outer step the others also took",
            Duration::from_secs(120),
            samples,
            |_, samples| {
                matched = samples
                    .0
                    .iter()
                    .filter(|((name, s, _), _)| name == "miner-2" && *s == start)
                    .find_map(|((_, _, step), sample)| {
                        let other = samples.at("miner-1", 1, *step)?;
                        Some((*step, max_abs_diff(sample, other)))
                    });
                matched.is_some()
            },
        )
        .await;
    let (step, diff) = matched.unwrap();
    // Every other node that reported this step holds the same model too.
    let mine = samples
        .at("miner-2", start, step)
        .expect("recorded")
        .clone();
    for other in ["validator", "miner-3"] {
        if let Some(theirs) = samples.at(other, 1, step) {
            let d = max_abs_diff(&mine, theirs);
            assert!(d < 1e-4, "miner-2 and {other} differ by {d} at step {step}");
        }
    }
    eprintln!(
        "miner-2 killed in window {killed_in}; after catching up at step {step}: max diff {diff:e}"
    );
    assert!(
        diff < 1e-4,
        "after catching up, miner-2's model differs from miner-1's by {diff} at step {step}\n{}",
        net.log_lines(&["gathered", "loaded checkpoint", "replayed", "synced"])
    );
}

/// SIGKILL the validator right after it set weights; restarted, it shows its scores.
async fn a_killed_validator_resumes_its_scores(
    net: &mut Network,
    samples: &mut Samples,
    validator: &NodeStatus,
) {
    let before = net
        .until(
            "the validator sets weights again",
            Duration::from_secs(60),
            samples,
            |s, _| {
                s[0].as_ref().is_some_and(|v| {
                    v.last_weights_window > validator.last_weights_window && v.scores.len() == 3
                })
            },
        )
        .await;
    let scores: Vec<(u16, f64)> = before[0]
        .as_ref()
        .unwrap()
        .scores
        .iter()
        .map(|m| (m.uid, m.score))
        .collect();
    net.kill(0);
    net.spawn(0);
    let after = net
        .until(
            "the restarted validator answers with scores",
            Duration::from_secs(120),
            samples,
            |s, _| s[0].as_ref().is_some_and(|v| !v.scores.is_empty()),
        )
        .await;
    let resumed: BTreeMap<u16, f64> = after[0]
        .as_ref()
        .unwrap()
        .scores
        .iter()
        .map(|m| (m.uid, m.score))
        .collect();
    // Scores are persisted before they reach /status, and the kill came seconds before the
    // next window could end: the restarted validator shows exactly the scores it had.
    for (uid, score) in scores {
        assert_eq!(
            resumed.get(&uid).copied(),
            Some(score),
            "uid {uid}: {score} before the restart, {resumed:?} after"
        );
    }
}
