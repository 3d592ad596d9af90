//! Helpers for end-to-end tests that run the workspace's binaries.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of a workspace binary built next to the running test executable
/// (`target/<profile>/NAME`; cargo builds it for the node's own integration tests).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace` or the whole test suite",
        path.display()
    );
    path
}

/// Root of the repository (for hyperparameter files and assets).
pub fn repo_root() -> PathBuf {
    // The runtime value (cargo and nextest set it for tests): a target dir shared between
    // checkouts may hold a test binary built from another one.
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .expect("e2e/ lives in the repository root")
    .to_path_buf()
}

/// Run `templar-node` with arguments, on the CPU, returning its output.
pub fn node(args: &[&str]) -> Output {
    Command::new(binary("templar-node"))
        .args(args)
        .current_dir(repo_root())
        .env("TEMPLAR_DEVICE", "cpu")
        .output()
        .expect("templar-node runs")
}
