//! Who a node process is: a devnet name (cannot sign), or an sr25519 hotkey from a Bittensor
//! hotkey file that signs every payload. Sources: `--hotkey NAME`; `--wallet DIR` (a mounted
//! Kubernetes secret: `hotkey-<ordinal>` holds a name or a Bittensor keyfile); or the
//! Bittensor layout `--wallet.path / --wallet.name / --wallet.hotkey`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use templar_protocol::identity::{
    Hotkey, InvalidHotkey, Signer, Sr25519Signer, WalletError, load_hotkey,
};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the hotkey {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the hotkey file {path} holds no valid hotkey: {source}")]
    BadHotkey {
        path: PathBuf,
        source: InvalidHotkey,
    },
    #[error(transparent)]
    Keyfile(#[from] WalletError),
    #[error("no --ordinal, and POD_NAME {0:?} does not end in -<number>")]
    NoOrdinal(String),
}

/// A node's hotkey and, when it has a key, what signs in its name.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub hotkey: Hotkey,
    pub signer: Option<Arc<Sr25519Signer>>,
}

impl NodeIdentity {
    /// A devnet name: payloads go unsigned.
    pub fn named(hotkey: Hotkey) -> Self {
        Self {
            hotkey,
            signer: None,
        }
    }

    pub fn keyed(signer: Sr25519Signer) -> Self {
        Self {
            hotkey: signer.hotkey().clone(),
            signer: Some(Arc::new(signer)),
        }
    }
}

/// The ordinal of a StatefulSet pod from its name (`set-3` -> 3).
pub fn pod_ordinal(pod_name: &str) -> Option<u32> {
    pod_name.rsplit_once('-')?.1.parse().ok()
}

/// `wallet/hotkey-<ordinal>` (a mounted secret): a Bittensor keyfile (JSON, or an encrypted
/// one, which is refused with its reason), else a devnet name.
pub fn wallet_entry(wallet: &Path, ordinal: u32) -> Result<NodeIdentity, IdentityError> {
    let path = wallet.join(format!("hotkey-{ordinal}"));
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(&path).map_err(|source| {
        IdentityError::Read {
            path: path.clone(),
            source,
        }
    })?);
    let t = text.trim_start();
    if t.starts_with('{') || t.starts_with('$') {
        return Ok(NodeIdentity::keyed(load_hotkey(&path)?));
    }
    let hotkey = Hotkey::parse(t).map_err(|source| IdentityError::BadHotkey { path, source })?;
    Ok(NodeIdentity::named(hotkey))
}

/// The node's identity from the wallet folder: entry `--ordinal`, or the ordinal at the end of
/// the pod's name (`POD_NAME`, a StatefulSet pod).
pub fn identity_from_wallet(
    wallet: &Path,
    ordinal: Option<u32>,
    pod_name: &str,
) -> Result<NodeIdentity, IdentityError> {
    wallet_entry(wallet, ordinal_of(ordinal, pod_name)?)
}

/// `ordinal` when given, else the number that ends the pod's name.
fn ordinal_of(ordinal: Option<u32>, pod_name: &str) -> Result<u32, IdentityError> {
    match ordinal {
        Some(o) => Ok(o),
        None => pod_ordinal(pod_name).ok_or_else(|| IdentityError::NoOrdinal(pod_name.into())),
    }
}

/// Copy the pod's own entry of a wallet folder (all replicas' keys) into `to`, checked to
/// hold a valid hotkey first, owner-read-only: a Kubernetes init container does this so the
/// node container mounts only its own key, not every replica's.
pub fn copy_own_entry(
    wallet: &Path,
    ordinal: Option<u32>,
    pod_name: &str,
    to: &Path,
) -> Result<NodeIdentity, IdentityError> {
    let ordinal = ordinal_of(ordinal, pod_name)?;
    let identity = wallet_entry(wallet, ordinal)?;
    let name = format!("hotkey-{ordinal}");
    let from = wallet.join(&name);
    let target = to.join(&name);
    let write = || -> std::io::Result<()> {
        let bytes = zeroize::Zeroizing::new(std::fs::read(&from)?);
        // A restarted init container finds its earlier copy: replace it.
        match std::fs::remove_file(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o400);
        std::io::Write::write_all(&mut options.open(&target)?, &bytes)
    };
    write().map_err(|source| IdentityError::Read {
        path: target.clone(),
        source,
    })?;
    Ok(identity)
}

/// A hotkey of a Bittensor wallet: `wallet_path/name/hotkeys/hotkey`.
pub fn bittensor_hotkey(
    wallet_path: &str,
    name: &str,
    hotkey: &str,
) -> Result<NodeIdentity, IdentityError> {
    let path = templar_protocol::identity::wallet::hotkey_file(wallet_path, name, hotkey);
    Ok(NodeIdentity::keyed(load_hotkey(&path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ordinal_is_the_trailing_number() {
        assert_eq!(pod_ordinal("alpha-miner-0"), Some(0));
        assert_eq!(pod_ordinal("alpha-miner-12"), Some(12));
        assert_eq!(pod_ordinal("alpha-miner"), None);
        assert_eq!(pod_ordinal(""), None);
    }

    #[test]
    fn wallet_entries_hold_a_name_or_a_keyfile() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hotkey-1"), "miner-b\n").unwrap();
        std::fs::write(dir.path().join("hotkey-2"), "  \n").unwrap();
        let seed = format!("0x{}", "5a".repeat(32));
        std::fs::write(
            dir.path().join("hotkey-3"),
            format!(r#"{{"secretSeed": "{seed}"}}"#),
        )
        .unwrap();
        std::fs::write(dir.path().join("hotkey-4"), "$NACLabc").unwrap();
        let named = wallet_entry(dir.path(), 1).unwrap();
        assert_eq!(named.hotkey, "miner-b");
        assert!(named.signer.is_none());
        assert!(matches!(
            wallet_entry(dir.path(), 2),
            Err(IdentityError::BadHotkey { .. })
        ));
        let keyed = wallet_entry(dir.path(), 3).unwrap();
        let expected = Sr25519Signer::from_seed_hex(&seed).unwrap();
        assert_eq!(&keyed.hotkey, expected.hotkey());
        assert!(keyed.signer.is_some());
        let err = wallet_entry(dir.path(), 4).unwrap_err().to_string();
        assert!(err.contains("encrypted"), "{err}");
        assert_eq!(
            identity_from_wallet(dir.path(), None, "alpha-miner-1")
                .unwrap()
                .hotkey,
            "miner-b"
        );
        assert!(matches!(
            identity_from_wallet(dir.path(), None, "no-ordinal"),
            Err(IdentityError::NoOrdinal(_))
        ));
        let err = wallet_entry(dir.path(), 0).unwrap_err();
        assert!(matches!(err, IdentityError::Read { .. }));
        assert!(err.to_string().contains("hotkey-0"));
        // The Bittensor layout.
        let hotkeys = dir.path().join("cold").join("hotkeys");
        std::fs::create_dir_all(&hotkeys).unwrap();
        std::fs::copy(dir.path().join("hotkey-3"), hotkeys.join("hot")).unwrap();
        let b = bittensor_hotkey(dir.path().to_str().unwrap(), "cold", "hot").unwrap();
        assert_eq!(&b.hotkey, expected.hotkey());
    }

    #[test]
    fn a_pod_copies_only_its_own_key_and_a_bad_one_is_not_copied() {
        let all = tempfile::tempdir().unwrap();
        let own = tempfile::tempdir().unwrap();
        let seed = format!("0x{}", "5a".repeat(32));
        std::fs::write(all.path().join("hotkey-0"), "miner-a\n").unwrap();
        let keyfile = format!(r#"{{"secretSeed": "{seed}"}}"#);
        std::fs::write(all.path().join("hotkey-1"), &keyfile).unwrap();
        std::fs::write(all.path().join("hotkey-2"), "$NACLabc").unwrap();
        let copied = copy_own_entry(all.path(), None, "alpha-miner-1", own.path()).unwrap();
        assert!(copied.signer.is_some());
        let names: Vec<_> = std::fs::read_dir(own.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["hotkey-1"], "only its own key");
        let target = own.path().join("hotkey-1");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), keyfile);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o400);
        }
        // The node reads it where the init container put it; a second copy replaces it.
        assert_eq!(wallet_entry(own.path(), 1).unwrap().hotkey, copied.hotkey);
        copy_own_entry(all.path(), Some(1), "", own.path()).unwrap();
        // An encrypted keyfile is refused before anything is written.
        let err = copy_own_entry(all.path(), None, "alpha-miner-2", own.path()).unwrap_err();
        assert!(err.to_string().contains("encrypted"), "{err}");
        assert!(!own.path().join("hotkey-2").exists());
    }
}
