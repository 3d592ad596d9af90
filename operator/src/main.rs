//! templar-operator: `crd` prints the CustomResourceDefinitions, `run` runs the TemplarMiner
//! and TemplarValidator controllers, `bench` measures the pure reconcile pipeline.

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use futures::FutureExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use templar_operator::controller::{Election, Scope, Stop, run_controllers, run_elected};
use templar_operator::metrics::Metrics;
use templar_operator::probe::StatusProbe;
use templar_operator::reconcile::{Context, Timing};

#[derive(Parser)]
#[command(name = "templar-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (YAML).
    Crd,
    /// Run the controllers (in-cluster config, or the local kubeconfig).
    Run(RunArgs),
    /// Validate + build the desired objects for N generated resources; print throughput and
    /// peak RSS.
    Bench {
        #[arg(long, default_value_t = 1000)]
        crs: usize,
        #[arg(long, default_value_t = 5)]
        passes: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only these namespaces (repeat the flag, or comma-separate in WATCH_NAMESPACE);
    /// the operator then needs a Role in each instead of cluster-wide RBAC. Default: all.
    #[arg(long = "namespace", env = "WATCH_NAMESPACE", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Run without a leader lease (a single replica only).
    #[arg(long)]
    no_leader_election: bool,
    #[arg(long, default_value = "templar-operator")]
    lease_name: String,
    /// Namespace of the lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Seconds the leader lease holds without renewal (a standby takes over after it).
    #[arg(long, default_value_t = 30)]
    lease_duration_secs: u64,
    /// Port of the nodes' /status.
    #[arg(long, default_value_t = templar_operator::build::STATUS_PORT as u16)]
    status_port: u16,
    /// Timeout of one /status read, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    status_timeout_ms: u64,
    /// /status reads in flight at once.
    #[arg(long, default_value_t = 16)]
    status_concurrency: usize,
    /// Status refresh period of a settled resource, in seconds.
    #[arg(long, default_value_t = 30)]
    refresh_secs: u64,
    /// Log as JSON lines.
    #[arg(long, env = "LOG_JSON")]
    log_json: bool,
    /// Serve the network page of each TemplarValidator at /network/NAMESPACE/NAME (read-only,
    /// from the nodes' /status).
    #[arg(long)]
    network_view: bool,
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Completes on SIGTERM or Ctrl-C.
fn shutdown_signal() -> Stop {
    async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
    }
    .boxed()
    .shared()
}

async fn run(args: RunArgs) -> Result<()> {
    init_tracing(args.log_json);
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster service account or kubeconfig)")?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let stop = shutdown_signal();
    let network_views = args
        .network_view
        .then(|| Arc::new(templar_operator::network_views::NetworkViews::default()));
    let mut app = templar_operator::server::router(metrics.clone(), ready.clone());
    if let Some(views) = &network_views {
        app = app.merge(views.clone().routes());
    }
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(server_stop)
            .await
    });
    let probe = StatusProbe::new(
        args.status_port,
        Duration::from_millis(args.status_timeout_ms),
        args.status_concurrency,
    );
    let timing = Timing {
        settled: Duration::from_secs(args.refresh_secs.max(1)),
        ..Timing::default()
    };
    let mut ctx = Context::new(client.clone(), metrics, probe, timing);
    if let Some(views) = network_views {
        ctx = ctx.with_network_views(views);
    }
    let ctx = Arc::new(ctx);
    let scope = Scope::from_namespaces(args.namespaces);
    tracing::info!(scope = ?scope, listen = %args.listen, "templar-operator starting");
    let result = if args.no_leader_election {
        ready.store(true, Ordering::Relaxed);
        run_controllers(client, scope, ctx, stop).await;
        Ok(())
    } else {
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("templar-operator-{}", std::process::id()));
        let election = Election {
            lease_name: args.lease_name,
            lease_namespace: args.lease_namespace,
            identity,
            lease_duration_secs: args.lease_duration_secs,
        };
        run_elected(client, scope, ctx, election, ready, stop).await
    };
    server.abort();
    result.map_err(Into::into)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Crd => {
            print!("{}", templar_crds::crds_yaml());
            Ok(())
        }
        Command::Bench { crs, passes, json } => {
            let r = templar_operator::bench::run(crs, passes);
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                println!(
                    "{} resources validated and built in {:.1} ms (best of {}): {:.0} per second; {} B of apply bodies; peak RSS {}",
                    r.crs,
                    r.seconds * 1e3,
                    r.passes,
                    r.crs_per_sec,
                    r.apply_bytes,
                    r.peak_rss_mb
                        .map(|m| format!("{m:.1} MB"))
                        .unwrap_or("unknown".into())
                );
            }
            Ok(())
        }
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
            .and_then(|rt| rt.block_on(run(args))),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("templar-operator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
