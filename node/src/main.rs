//! `templar-node`: argument parsing and dispatch; each subcommand's work is in
//! `templar_node::cli`.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use templar_node::cli::devnet::{DevnetOptions, run_devnet};
use templar_node::cli::identity::{
    NodeIdentity, bittensor_hotkey, copy_own_entry, identity_from_wallet,
};
use templar_node::cli::launch::{ChainChoice, NodeOptions, StoreSpec, run_node};
use templar_node::cli::train::{TrainOptions, run_train};
use templar_node::cli::{bench, load_hparams, runtime, tokenizer};
use templar_node::compute::ComputeArgs;
use templar_node::data::DataSource;
use templar_node::hparams::{ModelConfig, OuterMode};
use templar_node::roles::sim::behaviour::Behaviour;
use templar_protocol::Hotkey;
use templar_protocol::node_status::NodeRole;
use templar_subtensor::chain::SubtensorSettings;

#[derive(Parser)]
#[command(
    name = "templar-node",
    version,
    about = "templar miner / validator node"
)]
struct Cli {
    /// Log as JSON lines instead of text (filter with RUST_LOG).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train one node alone (no peers) on the embedded corpus or your data.
    Train(TrainArgs),
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
    /// Run one network node (miner or validator) on the devnet chain or a Bittensor subnet.
    Run(RunArgs),
    /// Run a miner that attacks the incentive, to watch the defences work (demos and tests;
    /// `devnet --cheater` starts these). Takes `run`'s arguments and `--behaviour`.
    SimMiner(SimMinerArgs),
    /// Start a local network (N miners, 1 validator) with a live table and a report.
    Devnet(DevnetArgs),
    /// Print the SS58 address of a hotkey (a Bittensor wallet's, or a --wallet folder's entry).
    Wallet(WalletCommand),
    /// Subtensor chain tools.
    Chain {
        #[command(subcommand)]
        which: ChainCommand,
    },
    /// Tokenizer tools.
    Tokenizer {
        #[command(subcommand)]
        which: TokenizerCommand,
    },
}

/// Where the tokens come from (`train` and `run`; the embedded corpus by default).
#[derive(clap::Args)]
struct DataArgs {
    /// Folder of .txt / .jsonl documents instead of the embedded corpus.
    #[arg(long, conflicts_with = "npy")]
    text: Option<PathBuf>,
    /// Folder of pre-tokenised uint32 .npy shards instead of the embedded corpus.
    #[arg(long)]
    npy: Option<PathBuf>,
    /// tokenizer.json for --text (default: the embedded tokenizer).
    #[arg(long, requires = "text")]
    tokenizer: Option<PathBuf>,
}

impl DataArgs {
    fn source(self) -> DataSource {
        match (self.npy, self.text) {
            (Some(dir), _) => DataSource::Npy(dir),
            (None, Some(dir)) => DataSource::Text {
                dir,
                tokenizer: self.tokenizer,
            },
            (None, None) => DataSource::Embedded,
        }
    }
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Windows (outer steps) to train.
    #[arg(long, default_value_t = 100)]
    steps: u64,
    /// Model size (tiny, small, 150M, 1B); overrides the hyperparameters file.
    #[arg(long)]
    model: Option<String>,
    /// Hyperparameters TOML file (defaults for everything it leaves out).
    #[arg(long)]
    hparams: Option<PathBuf>,
    /// Update rule; overrides the hyperparameters file.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    #[command(flatten)]
    data: DataArgs,
    /// The uid whose pages are trained on.
    #[arg(long, default_value_t = 0)]
    uid: u16,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    compute: ComputeArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, value_enum)]
    role: Role,
    /// The node's identity on the chain (devnet: any name without spaces; payloads unsigned).
    #[arg(
        long,
        required_unless_present_any = ["wallet", "wallet_name"],
        conflicts_with_all = ["wallet", "wallet_name"]
    )]
    hotkey: Option<Hotkey>,
    #[command(flatten)]
    wallet: WalletArgs,
    /// The chain: `devnet` (an object store, `make demo`) or `subtensor` (a Bittensor subnet:
    /// --endpoint, --netuid, and a hotkey keyfile).
    #[arg(long, value_enum, default_value = "devnet")]
    chain: ChainKind,
    /// Subtensor node: wss://entrypoint-finney.opentensor.ai:443, wss://test.finney.opentensor.ai:443,
    /// or ws://127.0.0.1:9944 for a local subtensor.
    #[arg(
        long,
        env = "TEMPLAR_SUBTENSOR_ENDPOINT",
        required_if_eq("chain", "subtensor")
    )]
    endpoint: Option<String>,
    /// The subnet (subtensor).
    #[arg(long, required_if_eq("chain", "subtensor"))]
    netuid: Option<u16>,
    /// Weights version key sent with weights (subtensor); the chain refuses one below the
    /// subnet's WeightsVersionKey.
    #[arg(long, default_value_t = 0)]
    version_key: u64,
    /// Create the devnet chain with this block time (ms) when it does not exist yet; without
    /// it the node waits for another node to create it.
    #[arg(long)]
    init_devnet_block_ms: Option<u64>,
    /// Ask for this uid (devnet); default: the lowest free one.
    #[arg(long)]
    uid: Option<u16>,
    /// Stake to register with (devnet; validators need the genesis threshold).
    #[arg(long, default_value_t = 0.0)]
    stake: f64,
    #[arg(long)]
    hparams: Option<PathBuf>,
    /// The devnet chain's state: file:///path or s3 (TEMPLAR_S3_* environment).
    #[arg(long, required_if_eq("chain", "devnet"))]
    devnet: Option<StoreSpec>,
    /// This node's bucket: file:///path (folder bucket-HOTKEY inside) or s3.
    #[arg(long)]
    store: StoreSpec,
    /// Address of /healthz, /readyz, /status and /metrics.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: std::net::SocketAddr,
    /// Stop after this many windows (default: run until Ctrl-C).
    #[arg(long)]
    windows: Option<u64>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    compute: ComputeArgs,
}

/// `run`'s arguments for a miner that cheats.
#[derive(clap::Args)]
struct SimMinerArgs {
    /// The attack: absent, free-rider, noise, copier:UID, amplifier:FACTOR, stale,
    /// wrong-data, late, poisoner, impersonator:UID.
    #[arg(long)]
    behaviour: Behaviour,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct WalletCommand {
    #[command(flatten)]
    key: WalletArgs,
    /// Copy the pod's own `hotkey-<ordinal>` entry of `--wallet` into this folder (checked,
    /// owner-read-only): what the Kubernetes init container runs, so the node container
    /// mounts only its own key.
    #[arg(long, requires = "wallet")]
    copy_to: Option<PathBuf>,
}

/// Where the node's key is: a `--wallet` folder, or a Bittensor wallet.
#[derive(clap::Args)]
struct WalletArgs {
    /// Wallet folder with `hotkey-<ordinal>` files (a mounted Kubernetes secret: a Bittensor
    /// keyfile, or a devnet name); the ordinal is `--ordinal` or the number at the end of
    /// `POD_NAME` (StatefulSet pods).
    #[arg(long, conflicts_with = "wallet_name")]
    wallet: Option<PathBuf>,
    #[arg(long, requires = "wallet")]
    ordinal: Option<u32>,
    /// Bittensor wallet name (the coldkey's folder); the hotkey file is
    /// WALLET_PATH/NAME/hotkeys/HOTKEY, unencrypted (the Bittensor default).
    #[arg(long = "wallet.name", id = "wallet_name", requires = "wallet_hotkey")]
    wallet_name: Option<String>,
    #[arg(long = "wallet.hotkey", id = "wallet_hotkey", requires = "wallet_name")]
    wallet_hotkey: Option<String>,
    #[arg(long = "wallet.path", id = "wallet_path", default_value = templar_protocol::identity::wallet::DEFAULT_WALLET_PATH)]
    wallet_path: String,
}

impl WalletArgs {
    /// The identity these flags name, if any.
    fn identity(&self) -> Result<Option<NodeIdentity>> {
        if let Some(dir) = &self.wallet {
            let pod = std::env::var("POD_NAME").unwrap_or_default();
            return Ok(Some(identity_from_wallet(dir, self.ordinal, &pod)?));
        }
        match (&self.wallet_name, &self.wallet_hotkey) {
            (Some(name), Some(hotkey)) => {
                Ok(Some(bittensor_hotkey(&self.wallet_path, name, hotkey)?))
            }
            _ => Ok(None),
        }
    }
}

#[derive(clap::Args)]
struct DevnetArgs {
    #[arg(long, default_value_t = 3)]
    miners: u16,
    #[arg(long, default_value_t = 8)]
    windows: u64,
    #[arg(long, default_value = "hparams/devnet.toml")]
    hparams: PathBuf,
    /// Block time of the devnet chain, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    block_ms: u64,
    /// Report folder (default: reports/devnet-<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use S3 (TEMPLAR_S3_* environment) instead of the report folder for buckets and chain.
    #[arg(long)]
    s3: bool,
    /// Add a miner that cheats this way (repeatable; see `sim-miner --behaviour`), to watch the
    /// defences work.
    #[arg(long = "cheater")]
    cheaters: Vec<Behaviour>,
    /// Address of the network page (`/network`); a free port when this one is taken.
    #[arg(long, default_value = "127.0.0.1:8790")]
    view_listen: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ChainKind {
    Devnet,
    Subtensor,
}

#[derive(Subcommand)]
enum ChainCommand {
    /// Fetch the runtime metadata (V16) from a subtensor node, to refresh the committed
    /// subtensor/metadata/finney.scale after a runtime upgrade (then rebuild).
    Metadata {
        #[arg(long)]
        endpoint: String,
        #[arg(long, default_value = "subtensor/metadata/finney.scale")]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Role {
    Miner,
    Validator,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Demo,
    Sparseloco,
}

#[derive(Subcommand)]
enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer on the embedded corpus (or a text folder).
    Train {
        #[arg(long, default_value_t = 4096)]
        vocab: usize,
        #[arg(long)]
        text: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn train(args: TrainArgs) -> Result<()> {
    let mut hp = load_hparams(args.hparams.as_deref())?;
    if let Some(model) = &args.model {
        ModelConfig::preset(model)?;
        hp.model.size = model.clone();
        hp.model.config = None;
    }
    if let Some(mode) = args.mode {
        hp.outer.mode = match mode {
            Mode::Demo => OuterMode::Demo,
            Mode::Sparseloco => OuterMode::Sparseloco,
        };
        // The other rule trains another number of batches per window: its assignment too.
        hp.data.pages_per_window = hp.batches_per_window() * hp.data.batch_size as u64;
    }
    hp.validate()?;
    run_train(TrainOptions {
        hparams: hp,
        data: args.data.source(),
        steps: args.steps,
        uid: args.uid,
        json: args.json,
        compute: args.compute.resolve()?,
    })
}

fn sim_miner(args: SimMinerArgs) -> Result<()> {
    if !matches!(args.run.role, Role::Miner) {
        bail!("sim-miner runs a miner: --role validator cannot cheat here");
    }
    run_with(args.run, Some(args.behaviour))
}

fn run(args: RunArgs) -> Result<()> {
    run_with(args, None)
}

/// Run a node; `cheat` makes a miner attack the incentive (`sim-miner` only).
fn run_with(args: RunArgs, cheat: Option<Behaviour>) -> Result<()> {
    let identity = match (args.hotkey, args.wallet.identity()?) {
        (Some(h), _) => NodeIdentity::named(h),
        (None, Some(identity)) => identity,
        (None, None) => bail!("give --hotkey, --wallet, or --wallet.name and --wallet.hotkey"),
    };
    let chain = match args.chain {
        ChainKind::Devnet => ChainChoice::Devnet {
            store: args
                .devnet
                .context("--devnet is required with --chain devnet")?,
            init_block_ms: args.init_devnet_block_ms,
        },
        ChainKind::Subtensor => {
            let netuid = args
                .netuid
                .context("--netuid is required with --chain subtensor")?;
            let mut settings = SubtensorSettings::new(netuid);
            settings.version_key = args.version_key;
            ChainChoice::Subtensor {
                endpoint: args
                    .endpoint
                    .context("--endpoint is required with --chain subtensor")?,
                settings,
            }
        }
    };
    let opts = NodeOptions {
        role: match args.role {
            Role::Miner => NodeRole::Miner,
            Role::Validator => NodeRole::Validator,
        },
        chain,
        identity,
        uid: args.uid,
        stake: args.stake,
        hparams: load_hparams(args.hparams.as_deref())?,
        store: args.store,
        listen: args.listen,
        windows: args.windows,
        cheat,
        data: args.data.source(),
        compute: args.compute.resolve()?,
    };
    runtime()?.block_on(run_node(opts))?;
    Ok(())
}

fn devnet(args: DevnetArgs) -> Result<()> {
    let out = args.out.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        PathBuf::from(format!("reports/devnet-{secs}"))
    });
    let store = match args.s3 {
        true => StoreSpec::S3,
        false => StoreSpec::Fs(out.join("network")),
    };
    let opts = DevnetOptions {
        miners: args.miners,
        windows: args.windows,
        hparams_file: args.hparams,
        block_ms: args.block_ms,
        out,
        store,
        cheaters: args.cheaters,
        view_listen: args.view_listen,
    };
    runtime()?.block_on(run_devnet(opts))?;
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    match cli.command {
        Command::Train(args) => train(args),
        Command::Run(args) => run(args),
        Command::SimMiner(args) => sim_miner(args),
        Command::Devnet(args) => devnet(args),
        Command::Wallet(WalletCommand {
            key,
            copy_to: Some(to),
        }) => {
            let wallet = key.wallet.as_deref().context("--copy-to needs --wallet")?;
            let pod = std::env::var("POD_NAME").unwrap_or_default();
            let identity = copy_own_entry(wallet, key.ordinal, &pod, &to)?;
            println!("{}", identity.hotkey);
            Ok(())
        }
        Command::Wallet(WalletCommand { key: args, .. }) => match args.identity()? {
            Some(identity) => {
                println!("{}", identity.hotkey);
                Ok(())
            }
            None => bail!("give --wallet.name and --wallet.hotkey, or --wallet"),
        },
        Command::Chain {
            which: ChainCommand::Metadata { endpoint, out },
        } => {
            let bytes =
                runtime()?.block_on(templar_subtensor::client::fetch_metadata(&endpoint))?;
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {} ({} bytes)", out.display(), bytes.len());
            Ok(())
        }
        Command::Bench { which } => bench::run(which),
        Command::Tokenizer {
            which: TokenizerCommand::Train { vocab, text, out },
        } => tokenizer::train_tokenizer(vocab, text.as_deref(), &out),
    }
}
