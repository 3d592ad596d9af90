//! A single-node Garage S3 server on loopback, for tests and local runs: a temp folder,
//! free ports, one bucket and one key. Stopped (killed) on drop.
//!
//! The binary comes from `TEMPLAR_GARAGE_BIN` (set by `scripts/setup.sh --garage`) or `PATH`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use templar_protocol::storage::s3::S3Config;

#[derive(Debug, thiserror::Error)]
pub enum GarageError {
    #[error(
        "garage binary not found: run `source scripts/setup.sh --garage` or set TEMPLAR_GARAGE_BIN"
    )]
    NoBinary,
    #[error("garage set-up failed: {0}")]
    Setup(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub struct GarageServer {
    bin: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn random_hex(bytes: usize) -> String {
    hex::encode((0..bytes).map(|_| rand::random::<u8>()).collect::<Vec<_>>())
}

impl GarageServer {
    pub fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("TEMPLAR_GARAGE_BIN") {
            let p = PathBuf::from(p);
            return p.exists().then_some(p);
        }
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("garage"))
                .find(|p| p.exists())
        })
    }

    /// Start a server with one bucket and a read/write key for it.
    pub fn start(bucket: &str) -> Result<Self, GarageError> {
        let bin = Self::binary().ok_or(GarageError::NoBinary)?;
        let dir = tempfile::tempdir()?;
        let (rpc, s3, admin) = (free_port()?, free_port()?, free_port()?);
        let config = dir.path().join("garage.toml");
        let text = format!(
            r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
            d = dir.path().display(),
            secret = random_hex(32),
        );
        std::fs::write(&config, text)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600))?;
        }
        let log = std::fs::File::create(dir.path().join("garage.log"))?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut server = Self {
            bin,
            config,
            child: Some(child),
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: bucket.into(),
            key_id: format!("GK{}", random_hex(12)),
            secret: random_hex(32),
        };
        server.configure()?;
        Ok(server)
    }

    fn cli(&self, args: &[&str]) -> Result<String, GarageError> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(GarageError::Setup(format!(
                "garage {}: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// `cli` retried until it succeeds or `deadline` passes.
    fn cli_until(&self, deadline: Instant, args: &[&str]) -> Result<String, GarageError> {
        loop {
            match self.cli(args) {
                Ok(out) => return Ok(out),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn configure(&mut self) -> Result<(), GarageError> {
        // The RPC port answers a moment after start, and `node id` can answer from the local
        // key before it does: retry both until the first real RPC (the layout) goes through.
        let deadline = Instant::now() + Duration::from_secs(30);
        let node_id = self.cli_until(deadline, &["node", "id", "-q"])?;
        let node_id = node_id.trim().split('@').next().unwrap_or_default();
        self.cli_until(
            deadline,
            &["layout", "assign", "-z", "dc1", "-c", "1G", node_id],
        )?;
        self.cli(&["layout", "apply", "--version", "1"])?;
        self.cli(&[
            "key",
            "import",
            "--yes",
            "-n",
            "templar",
            &self.key_id,
            &self.secret,
        ])?;
        self.create_bucket(&self.bucket.clone())?;
        Ok(())
    }

    /// Another bucket, readable and writable with this server's key.
    pub fn create_bucket(&self, name: &str) -> Result<(), GarageError> {
        self.cli(&["bucket", "create", name])?;
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            name,
            "--key",
            &self.key_id,
        ])?;
        Ok(())
    }

    pub fn s3_config(&self) -> S3Config {
        let mut c = S3Config::new(&self.endpoint, &self.bucket, &self.key_id, &self.secret);
        c.region = "garage".into();
        c
    }

    /// Kill the server (the data folder stays until drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }
}

impl Drop for GarageServer {
    fn drop(&mut self) {
        self.stop();
    }
}
