//! `templar-node devnet` (what `make demo` runs): a local network of node processes (N miners,
//! 1 validator) on the devnet chain, a live table in the terminal, and a report folder (CSV +
//! PNG plot).

use super::launch::StoreSpec;
use super::report::{Row, write_csv};
use crate::roles::sim::behaviour::Behaviour;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use templar_protocol::chain::devnet::{self, DevnetChain, Genesis};
use templar_protocol::network_view::{NetworkRecorder, Observed};
use templar_protocol::node_status::{NodeRole, NodeStatus};
use templar_protocol::storage::ObjectStore;
use templar_protocol::storage::fs::FsStore;
use templar_protocol::storage::s3::{S3Config, S3Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
pub struct DevnetOptions {
    pub miners: u16,
    pub windows: u64,
    pub hparams_file: PathBuf,
    pub block_ms: u64,
    pub out: PathBuf,
    pub store: StoreSpec,
    /// Extra miners after the honest ones, one per attack named (demos of the defences).
    pub cheaters: Vec<Behaviour>,
    /// Where the network page is served (`127.0.0.1:0`: a free port, printed).
    pub view_listen: String,
}

/// The child processes; killed (and reaped) on drop, so none outlives the runner.
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct NodeHandle {
    name: String,
    role: NodeRole,
    port: u16,
    behaviour: Behaviour,
}

/// GET a node's `/status` over loopback, with a timeout.
pub async fn fetch_status(port: u16, timeout: Duration) -> Option<NodeStatus> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let body = text.split("\r\n\r\n").nth(1)?;
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(timeout, fetch).await.ok().flatten()
}

/// `n` distinct free loopback ports. All listeners are held until every port is chosen:
/// one dropped before the next bind may be handed out again, and two nodes on one port
/// made the second exit at start.
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.prec$}"))
}

/// The validator's `/status` among the nodes' (none while it has not answered yet).
fn validator_status(statuses: &[Option<NodeStatus>]) -> Option<&NodeStatus> {
    statuses
        .iter()
        .flatten()
        .find(|s| s.role == NodeRole::Validator)
}

fn render_table(
    nodes: &[NodeHandle],
    statuses: &[Option<NodeStatus>],
    elapsed: Duration,
    view_url: &str,
) -> String {
    let validator = validator_status(statuses);
    let mut out = format!(
        "templar devnet  {:>5.0}s  (Ctrl-C stops)  network page: {view_url}\n\n{:<10} {:>4} {:>7} {:>8} {:>10} {:>8} {:>8}  {}\n",
        elapsed.as_secs_f64(),
        "node",
        "uid",
        "window",
        "loss",
        "score",
        "weight",
        "tok/s",
        "last error / skipped"
    );
    for (n, s) in nodes.iter().zip(statuses) {
        let Some(s) = s else {
            out += &format!("{:<10} starting...\n", n.name);
            continue;
        };
        let uid = s.uid.unwrap_or_default();
        let score = validator.and_then(|v| v.scores.iter().find(|m| m.uid == uid));
        let note = s.last_error.clone().unwrap_or_else(|| {
            s.peers_skipped
                .iter()
                .map(|p| format!("{}: {}", p.uid, p.reason))
                .collect::<Vec<_>>()
                .join("; ")
        });
        out += &format!(
            "{:<10} {:>4} {:>7} {:>8} {:>10} {:>8} {:>8}  {}\n",
            n.name,
            uid,
            s.window.map_or("-".into(), |w| w.to_string()),
            fmt_opt(s.last_loss, 4),
            fmt_opt(score.map(|m| m.score), 5),
            fmt_opt(score.map(|m| m.weight), 3),
            fmt_opt(s.tokens_per_sec, 0),
            note.chars().take(60).collect::<String>()
        );
    }
    out
}

/// Write the devnet's genesis (if none) and return it with the `--devnet`/`--store` argument
/// the nodes get.
async fn create_chain(
    opts: &DevnetOptions,
    now_ms: u64,
    blocks_per_window: u64,
) -> anyhow::Result<(Genesis, String)> {
    let net_root = opts.out.join("network");
    let chain_store: Box<dyn ObjectStore> = match &opts.store {
        StoreSpec::Fs(_) => Box::new(FsStore::new(net_root.join("chain"))),
        StoreSpec::S3 => Box::new(S3Store::new(S3Config::from_env()?)),
    };
    let store_arg = match &opts.store {
        StoreSpec::Fs(_) => format!("file://{}", net_root.display()),
        StoreSpec::S3 => "s3".to_string(),
    };
    let genesis = Genesis {
        genesis_unix_ms: now_ms,
        block_time_ms: opts.block_ms,
        min_validator_stake: devnet::MIN_VALIDATOR_STAKE,
        weights_rate_limit_blocks: devnet::weights_rate_limit_for(blocks_per_window),
    };
    let genesis = DevnetChain::init(chain_store.as_ref(), genesis).await?;
    Ok((genesis, store_arg))
}

/// One validator (uid 0), the honest miners (uids 1..) and the cheaters after them, each on a
/// free loopback port.
fn plan_nodes(miners: u16, cheaters: &[Behaviour]) -> anyhow::Result<Vec<NodeHandle>> {
    let ports = free_ports(usize::from(miners) + cheaters.len() + 1)?;
    let mut nodes = vec![NodeHandle {
        name: "validator".into(),
        role: NodeRole::Validator,
        port: ports[0],
        behaviour: Behaviour::Honest,
    }];
    let behaviours = (0..miners)
        .map(|_| Behaviour::Honest)
        .chain(cheaters.iter().copied());
    for (i, behaviour) in behaviours.enumerate() {
        nodes.push(NodeHandle {
            name: format!("miner-{}", i + 1),
            role: NodeRole::Miner,
            port: ports[i + 1],
            behaviour,
        });
    }
    Ok(nodes)
}

/// One sr25519 hotkey per node from a fresh random seed, as Bittensor keyfiles
/// `wallet/hotkey-<uid>` (owner-only), so every payload is signed and nobody writes in
/// another node's name, even in a shared bucket. Returns the SS58 addresses in node order.
fn write_wallet(dir: &std::path::Path, nodes: &[NodeHandle]) -> anyhow::Result<Vec<String>> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    use templar_protocol::identity::{Signer, Sr25519Signer};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut addresses = Vec::new();
    for uid in 0..nodes.len() {
        let seed = zeroize::Zeroizing::new(rand::random::<[u8; 32]>());
        let signer = Sr25519Signer::from_seed(seed.as_ref())?;
        let keyfile = zeroize::Zeroizing::new(serde_json::to_vec(&serde_json::json!({
            "secretSeed": format!("0x{}", hex::encode(seed.as_ref())),
            "ss58Address": signer.hotkey().as_str(),
        }))?);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join(format!("hotkey-{uid}")))?;
        std::io::Write::write_all(&mut f, &keyfile)?;
        addresses.push(signer.hotkey().to_string());
    }
    Ok(addresses)
}

/// Start one `templar-node run` process per node, logging to `logs/<name>.log`.
fn spawn_nodes(
    opts: &DevnetOptions,
    nodes: &[NodeHandle],
    store_arg: &str,
) -> anyhow::Result<Children> {
    let exe = std::env::current_exe()?;
    let wallet = opts.out.join("wallet");
    let addresses = write_wallet(&wallet, nodes)?;
    let mut children = Children(Vec::new());
    for (uid, n) in nodes.iter().enumerate() {
        let cheat = match n.behaviour {
            Behaviour::Honest => String::new(),
            b => format!("  cheats: {b}"),
        };
        println!("{:<10} uid {uid}  hotkey {}{cheat}", n.name, addresses[uid]);
        let log = std::fs::File::create(opts.out.join("logs").join(format!("{}.log", n.name)))?;
        let stake = devnet::stake_for(n.role);
        let mut cmd = Command::new(&exe);
        match n.behaviour {
            Behaviour::Honest => cmd.arg("run"),
            b => cmd.args(["sim-miner", "--behaviour", &b.to_string()]),
        };
        let child = cmd
            .args(["--role", n.role.as_str(), "--wallet"])
            .arg(&wallet)
            .args(["--ordinal", &uid.to_string()])
            .args(["--uid", &uid.to_string()])
            .args(["--stake", &stake.to_string(), "--hparams"])
            .arg(&opts.hparams_file)
            .args(["--devnet", store_arg, "--store", store_arg])
            .args(["--listen", &format!("127.0.0.1:{}", n.port)])
            .args(["--windows", &(opts.windows + 2).to_string()])
            // Processes share the cores: one torch thread each.
            .env("OMP_NUM_THREADS", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        children.0.push((n.name.clone(), child));
    }
    Ok(children)
}

/// Rows for the windows each node has moved past since the last poll. Miners: the window of
/// their last upload (its loss); the validator: the window of its last weights.
fn new_rows(
    nodes: &[NodeHandle],
    statuses: &[Option<NodeStatus>],
    recorded: &mut BTreeMap<(String, u64), ()>,
) -> Vec<Row> {
    let validator = validator_status(statuses);
    let mut rows = Vec::new();
    for (n, s) in nodes.iter().zip(statuses) {
        let Some(s) = s else { continue };
        let done = match n.role {
            NodeRole::Validator => s.last_weights_window,
            NodeRole::Miner => s.last_upload_window,
        };
        let Some(done) = done else { continue };
        if recorded.insert((n.name.clone(), done), ()).is_none() {
            let uid = s.uid.unwrap_or_default();
            let m = validator.and_then(|v| v.scores.iter().find(|m| m.uid == uid));
            rows.push(Row {
                window: done,
                node: n.name.clone(),
                uid,
                role: n.role,
                loss: s.last_loss,
                score: m.map(|m| m.score),
                weight: m.map(|m| m.weight),
            });
        }
    }
    rows
}

/// Run the local network until the validator has set weights for the last window (or
/// Ctrl-C / SIGTERM); returns the report rows, also written as CSV and PNG.
pub async fn run_devnet(opts: DevnetOptions) -> anyhow::Result<Vec<Row>> {
    std::fs::create_dir_all(opts.out.join("logs"))?;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let blocks_per_window = crate::hparams::Hparams::load(&opts.hparams_file)?
        .network
        .blocks_per_window;
    let (genesis, store_arg) = create_chain(&opts, now_ms, blocks_per_window).await?;
    let window_ms = opts.block_ms * blocks_per_window;
    let start_window = (now_ms.saturating_sub(genesis.genesis_unix_ms)) / window_ms;
    let nodes = plan_nodes(opts.miners, &opts.cheaters)?;
    let mut children = spawn_nodes(&opts, &nodes, &store_arg)?;

    // The network page, from every node's status (the recorder below).
    let view = super::network_page::SharedView::default();
    let view_listener = match tokio::net::TcpListener::bind(&opts.view_listen).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            tokio::net::TcpListener::bind("127.0.0.1:0").await?
        }
        Err(e) => return Err(e.into()),
    };
    let view_url = format!("http://{}/network", view_listener.local_addr()?);
    println!("network view: {view_url}");
    let view_server = tokio::spawn(
        axum::serve(view_listener, super::network_page::routes(view.clone())).into_future(),
    );
    let mut recorder = NetworkRecorder::new("devnet");

    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let deadline = Duration::from_millis(window_ms * (opts.windows + 3)) + Duration::from_secs(120);
    let last_window = start_window + opts.windows;
    let mut rows: Vec<Row> = Vec::new();
    let mut recorded: BTreeMap<(String, u64), ()> = BTreeMap::new();
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    // SIGTERM too (kill, systemd, CI timeouts): the children must not outlive the runner.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut last_shown = None;
    'poll: loop {
        let mut statuses = Vec::new();
        for n in &nodes {
            statuses.push(fetch_status(n.port, Duration::from_secs(2)).await);
        }
        rows.extend(new_rows(&nodes, &statuses, &mut recorded));
        let observed: Vec<Observed> = nodes
            .iter()
            .zip(&statuses)
            .map(|(n, s)| Observed {
                name: n.name.clone(),
                status: s.clone(),
            })
            .collect();
        let built = recorder.observe(&observed, super::network_page::now_ms());
        *view.lock().unwrap_or_else(|e| e.into_inner()) = Some(built);
        let validator = validator_status(&statuses);
        let table = render_table(&nodes, &statuses, started.elapsed(), &view_url);
        let shown = validator.and_then(|v| v.window);
        if tty {
            print!("\x1b[2J\x1b[H{table}");
        } else if shown != last_shown {
            // Not a terminal (a log, CI): one table per window instead of a live one.
            println!("{table}");
            last_shown = shown;
        }
        let _ = std::io::stdout().flush();
        let finished = |v: Option<&NodeStatus>| {
            v.and_then(|v| v.last_weights_window)
                .is_some_and(|w| w + 1 >= last_window)
        };
        if finished(validator) {
            break;
        }
        if check_children(&opts, &nodes, &mut children, finished).await? {
            break 'poll;
        }
        if started.elapsed() > deadline {
            anyhow::bail!(
                "the network did not finish {} windows in {deadline:?}",
                opts.windows
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(1000)) => {}
            _ = &mut ctrl_c => { println!("\ninterrupted"); break 'poll; }
            _ = term.recv() => { println!("\nterminated"); break 'poll; }
        }
    }
    drop(children);
    view_server.abort();
    rows.sort_by(|a, b| (a.window, &a.node).cmp(&(b.window, &b.node)));
    write_csv(&opts.out.join("windows.csv"), &rows)?;
    super::plot::plot_report(&opts.out.join("report.png"), &rows)?;
    println!(
        "report: {} ({} rows) and {}",
        opts.out.join("windows.csv").display(),
        rows.len(),
        opts.out.join("report.png").display()
    );
    Ok(rows)
}

/// Whether a node process has exited: Ok(true) when the network has finished its windows
/// (a node that ran its windows exits 0 soon after the last one), an error naming the node
/// and the end of its log when it stopped early, Ok(false) while all run.
async fn check_children(
    opts: &DevnetOptions,
    nodes: &[NodeHandle],
    children: &mut Children,
    finished: impl Fn(Option<&NodeStatus>) -> bool,
) -> anyhow::Result<bool> {
    for (name, c) in &mut children.0 {
        let Ok(Some(code)) = c.try_wait() else {
            continue;
        };
        // Read the validator once more before calling the exit early (a race at the last
        // window).
        if code.success() {
            let v = nodes.iter().find(|n| n.role == NodeRole::Validator);
            let again = match v {
                Some(v) => fetch_status(v.port, Duration::from_secs(2)).await,
                None => None,
            };
            if finished(again.as_ref()) {
                return Ok(true);
            }
        }
        let log = opts.out.join("logs").join(format!("{name}.log"));
        anyhow::bail!(
            "{name} exited early ({code}); the end of {}:\n{}",
            log.display(),
            log_tail(&log, 20)
        );
    }
    Ok(false)
}

/// The last `lines` lines of a node's log, for an error that says why it stopped.
fn log_tail(path: &std::path::Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read it: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use crate::roles::sim::behaviour::Behaviour;

    #[test]
    fn planned_nodes_get_distinct_ports_and_cheaters_come_after_the_honest_miners() {
        for _ in 0..20 {
            let nodes = super::plan_nodes(5, &[Behaviour::Stale, Behaviour::Late]).unwrap();
            let mut ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
            ports.sort();
            ports.dedup();
            assert_eq!(ports.len(), 8);
            let behaviours: Vec<String> = nodes.iter().map(|n| n.behaviour.to_string()).collect();
            assert_eq!(behaviours[5..], ["honest", "stale", "late"]);
            assert_eq!(nodes[7].name, "miner-7");
        }
    }
}
