//! The network page as a person sees it: headless Chromium (Debian's `chromium`; the tests
//! skip with a message where it is absent) opens the page, runs its script against the JSON
//! and the rendered DOM is checked — a live devnet's page after two windows, and a synthetic
//! view at 1 and 64 miners, 100 windows, with a window where every peer was left out.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use templar_node::cli::network_page::{SharedView, routes};
use templar_protocol::network_view::{
    MinerPoint, MinerView, NetworkView, PAGE, SCHEMA_VERSION, ValidatorView, WindowClock,
    WindowRecord,
};
use templar_protocol::node_status::SkippedPeer;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let out = Command::new("which").arg(name).output().ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
}

/// The page's DOM after its script ran (Chromium's virtual time lets the polls run).
fn rendered_dom(browser: &Path, url: &str) -> String {
    let out = Command::new(browser)
        .args(headless_args())
        .args(["--virtual-time-budget=6000", "--dump-dom", url])
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn screenshot(browser: &Path, url: &str, to: &Path) {
    let out = Command::new(browser)
        .args(headless_args())
        .args(["--virtual-time-budget=6000", "--window-size=1400,1800"])
        .arg(format!("--screenshot={}", to.display()))
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success() && to.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn headless_args() -> [&'static str; 5] {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ]
}

/// An attribute of the first element whose opening tag contains `marker`.
fn attribute(dom: &str, marker: &str, name: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let tag_start = dom[..at].rfind('<')?;
    let tag = &dom[tag_start..at + dom[at..].find('>')?];
    let key = format!("{name}=\"");
    let v = tag.find(&key)? + key.len();
    Some(tag[v..v + tag[v..].find('"')?].to_string())
}

fn number(dom: &str, marker: &str, name: &str) -> usize {
    attribute(dom, marker, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} on {marker}"))
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// A live devnet: its page, opened once two windows have data, draws both miners' losses,
/// the validator's scores and weights, and the window history; a screenshot goes to the
/// report folder.
#[test]
fn the_devnet_page_draws_the_live_network_in_a_browser() {
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED: no chromium (Debian: apt-get install chromium; .ci/run installs it)");
        return;
    };
    // The report folder stays after the test (target/tmp), with the screenshot in it.
    let out = report_dir("network-page-devnet");
    let started = Instant::now();
    let mut devnet = Command::new(templar_e2e::binary("templar-node"))
        .args(["devnet", "--miners", "2", "--windows", "4"])
        .args(["--view-listen", "127.0.0.1:0", "--out"])
        .arg(&out)
        .current_dir(templar_e2e::repo_root())
        .env("TEMPLAR_DEVICE", "cpu")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(devnet.stdout.take().unwrap()).lines();
    let printed = Arc::new(Mutex::new(Vec::<String>::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let seen = printed.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("network view: ") {
                let _ = tx.send(url.to_string());
            }
            seen.lock().unwrap().push(line);
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no address printed: {:?}", printed.lock().unwrap()));
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/network")
        .to_string();

    // Two windows in which the validator scored both miners.
    let deadline = Instant::now() + Duration::from_secs(300);
    let view: NetworkView = loop {
        if let Some(body) = http_get(&addr, "/network.json") {
            let view: NetworkView = serde_json::from_str(&body).expect("the documented schema");
            let scored = |w: &WindowRecord| {
                w.miners.iter().filter(|m| m.score.is_some()).count() == 2
                    && w.miners.iter().all(|m| m.training_loss.is_some())
            };
            if view.windows.iter().filter(|w| scored(w)).count() >= 2 {
                break view;
            }
        }
        assert!(
            Instant::now() < deadline,
            "two scored windows never came: {:?}",
            printed.lock().unwrap()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(view.schema, SCHEMA_VERSION);
    assert_eq!(view.miners.len(), 2);
    assert!(view.validator.is_some());

    // Read while the network still runs (the runner stops serving when it exits).
    let dom = rendered_dom(&browser, &url);
    let shot = out.join("network-view.png");
    screenshot(&browser, &url, &shot);
    let _ = Command::new("kill")
        .args(["-TERM", &devnet.id().to_string()])
        .status();
    let _ = devnet.wait();
    let dom_ok = number(&dom, "id=\"chart-training-loss\"", "data-series") == 2
        && number(&dom, "id=\"chart-score\"", "data-series") == 2
        && number(&dom, "id=\"chart-weight\"", "data-series") == 2
        && number(&dom, "<body", "data-rendered-windows") >= 2;
    assert!(dom_ok, "the charts did not draw both miners: {dom}");
    assert!(
        number(&dom, "id=\"chart-training-loss\"", "data-points") >= 4,
        "at least two windows per miner: {dom}"
    );
    assert_eq!(dom.matches("<span data-uid=").count(), 2, "legend: {dom}");
    eprintln!(
        "browser test: {:.0} s, screenshot {}",
        started.elapsed().as_secs_f64(),
        shot.display()
    );
}

/// A folder under the tests' temporary target directory, emptied first.
fn report_dir(name: &str) -> PathBuf {
    let root =
        std::env::var("CARGO_TARGET_TMPDIR").map_or_else(|_| std::env::temp_dir(), PathBuf::from);
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Serve `view` (and the page) on a free loopback port from a background thread.
fn serve(view: NetworkView) -> String {
    let shared: SharedView = Arc::new(Mutex::new(Some(view)));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, routes(shared)).await.unwrap();
        });
    });
    addr
}

/// A view of `miners` miners over `windows` windows; in window 50 every peer was left out.
fn synthetic(miners: u16, windows: u64) -> NetworkView {
    let points = |w: u64| -> Vec<MinerPoint> {
        (1..=miners)
            .map(|uid| MinerPoint {
                uid,
                training_loss: Some(8.0 - w as f64 * 0.02 - f64::from(uid) * 0.001),
                held_out_loss: Some(8.1 - w as f64 * 0.02),
                score: Some(0.01 * f64::from(uid)),
                weight: Some(1.0 / f64::from(miners)),
            })
            .collect()
    };
    let skipped_all = |w: u64| -> Vec<SkippedPeer> {
        if w != 50 {
            return Vec::new();
        }
        (1..=miners)
            .map(|uid| SkippedPeer {
                uid,
                reason: "no payload for this window".into(),
            })
            .collect()
    };
    NetworkView {
        schema: SCHEMA_VERSION,
        name: "synthetic".into(),
        generated_at_ms: 1_000_000,
        clock: WindowClock {
            window: Some(windows),
            window_seen_at_ms: Some(990_000),
            window_ms: Some(20_000),
        },
        validator: Some(ValidatorView {
            uid: Some(0),
            hotkey: "5Validator".into(),
            window: Some(windows),
            last_weights_window: Some(windows - 1),
            held_out_loss: Some(6.0),
            last_error: None,
        }),
        miners: (1..=miners)
            .map(|uid| MinerView {
                uid,
                name: format!("miner-{uid}"),
                hotkey: format!("5Miner{uid}"),
                ready: Some(true),
                window: Some(windows),
                training_loss: Some(6.0),
                held_out_loss: Some(6.1),
                score: Some(0.01 * f64::from(uid)),
                weight: Some(1.0 / f64::from(miners)),
                sync_drift: Some(0.0),
                tokens_per_sec: Some(1000.0),
                last_error: None,
            })
            .collect(),
        windows: (1..=windows)
            .map(|w| WindowRecord {
                window: w,
                held_out_loss: Some(8.0 - w as f64 * 0.02),
                miners: points(w),
                skipped: skipped_all(w),
            })
            .collect(),
    }
}

/// One miner and 64 miners over 100 windows (with a window where every peer was left out):
/// every miner has its line, legend entry and bars; the window with all peers left out lists
/// them. Prints the page weight and the JSON size at 64 miners and 100 windows.
#[test]
fn the_page_lays_out_one_and_sixty_four_miners_and_a_window_without_peers() {
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED: no chromium (Debian: apt-get install chromium; .ci/run installs it)");
        return;
    };
    let big = synthetic(64, 100);
    let json_bytes = serde_json::to_vec(&big).unwrap().len();
    println!(
        "{{\"page_bytes\": {}, \"json_bytes_64_miners_100_windows\": {json_bytes}}}",
        PAGE.len()
    );
    for (view, miners) in [(synthetic(1, 100), 1usize), (big, 64)] {
        let addr = serve(view);
        let url = format!("http://{addr}/network");
        let dom = rendered_dom(&browser, &url);
        for chart in ["chart-training-loss", "chart-held-out-loss"] {
            let marker = format!("id=\"{chart}\"");
            assert_eq!(number(&dom, &marker, "data-series"), miners, "{chart}");
            assert_eq!(
                number(&dom, &marker, "data-points"),
                miners * 100 + usize::from(chart == "chart-held-out-loss") * 100,
                "{chart}"
            );
        }
        for chart in ["chart-score", "chart-weight", "chart-sync-drift"] {
            let marker = format!("id=\"{chart}\"");
            assert_eq!(number(&dom, &marker, "data-series"), miners, "{chart}");
        }
        assert_eq!(dom.matches("<span data-uid=").count(), miners, "legend");
        assert_eq!(
            number(&dom, "data-window=\"50\"", "data-skipped"),
            miners,
            "every peer of window 50 listed as left out"
        );
        assert_eq!(
            number(&dom, "data-window=\"51\"", "data-skipped"),
            0,
            "window 51 left out no one"
        );
        if miners == 64 {
            let dir = report_dir("network-page-64-miners");
            screenshot(&browser, &url, &dir.join("network-view.png"));
        }
    }
}
