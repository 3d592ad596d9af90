//! `kubectl templar`: the kubectl plugin of templar-rs (kubectl runs `kubectl-templar` found on
//! the PATH). `status`, `logs` and `devnet`; see `templar_operator::plugin`.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use templar_operator::plugin::{PluginError, devnet, logs, status};
use templar_protocol::node_status::NodeRole;
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(
    name = "kubectl templar",
    version,
    about = "templar networks in this cluster"
)]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Validator,
    Miner,
}

#[derive(Subcommand)]
enum Command {
    /// Each validator and its miners: window, loss, score, weight, ready, last error.
    Status {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// The node logs of every pod of a TemplarValidator or TemplarMiner.
    Logs {
        name: String,
        /// Which kind NAME is, when both exist.
        #[arg(long, value_enum)]
        kind: Option<Kind>,
        #[arg(short = 'f', long)]
        follow: bool,
        /// Lines from the end of each log.
        #[arg(long)]
        tail: Option<i64>,
    },
    /// Apply a quick-start devnet (a validator and miners on one S3 bucket) with fresh
    /// hotkeys; the bucket's write key comes from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    Devnet {
        #[arg(long, default_value = "devnet")]
        name: String,
        /// The S3 endpoint the pods reach (e.g. http://garage.storage:3900).
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        bucket: String,
        #[arg(long, default_value = "auto")]
        region: String,
        #[arg(long, default_value_t = 3)]
        miners: i32,
        #[arg(long, default_value = "tiny")]
        model: String,
        #[arg(long, default_value_t = devnet::default_image())]
        image: String,
        /// GPUs per node (0: CPU, as on kind).
        #[arg(long, default_value_t = 0)]
        gpus: i32,
    },
}

fn env_secret(name: &str) -> Result<Zeroizing<String>, PluginError> {
    std::env::var(name)
        .map(Zeroizing::new)
        .map_err(|_| PluginError::Invalid(format!("{name} is not set (the bucket's write key)")))
}

async fn run(cli: Cli) -> Result<(), PluginError> {
    let client = kube::Client::try_default()
        .await
        .map_err(|source| PluginError::Api {
            what: "no Kubernetes configuration (kubeconfig or in-cluster)".into(),
            source,
        })?;
    let namespace = cli
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_string());
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Status { all_namespaces } => {
            let scope = (!all_namespaces).then_some(namespace.as_str());
            status::status(&client, scope, &mut out).await
        }
        Command::Logs {
            name,
            kind,
            follow,
            tail,
        } => {
            let kind = kind.map(|k| match k {
                Kind::Validator => NodeRole::Validator,
                Kind::Miner => NodeRole::Miner,
            });
            let options = logs::LogOptions {
                follow,
                tail_lines: tail,
            };
            logs::logs(&client, &namespace, &name, kind, &options, &mut out).await
        }
        Command::Devnet {
            name,
            endpoint,
            bucket,
            region,
            miners,
            model,
            image,
            gpus,
        } => {
            let options = devnet::DevnetOptions {
                name,
                namespace,
                endpoint,
                region,
                bucket,
                miners,
                model,
                image,
                gpus,
                access_key_id: env_secret("AWS_ACCESS_KEY_ID")?,
                secret_access_key: env_secret("AWS_SECRET_ACCESS_KEY")?,
            };
            devnet::apply(&client, &options, &mut out).await.map(|_| ())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
