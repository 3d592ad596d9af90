//! Bittensor wallets: `WALLET_PATH/NAME/hotkeys/HOTKEY`, a JSON keyfile with `secretPhrase`,
//! `secretSeed`, `privateKey` and `ss58Address` (the phrase wins, then the seed, then the
//! private key). Hotkeys are unencrypted by default; an encrypted keyfile is refused with a
//! clear error. No secret reaches an error message or a log.

use super::Signer;
use super::sr25519::{KeyError, Sr25519Signer};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where Bittensor keeps wallets unless told otherwise.
pub const DEFAULT_WALLET_PATH: &str = "~/.bittensor/wallets";

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("cannot read hotkey file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "hotkey file {0} is encrypted ({1}); templar-rs reads unencrypted hotkeys (the Bittensor default): regenerate it without a password or decrypt it"
    )]
    Encrypted(String, &'static str),
    #[error("hotkey file {path} is not a Bittensor keyfile: {reason}")]
    Format { path: String, reason: String },
    #[error("hotkey file {path}: {source}")]
    Key { path: String, source: KeyError },
    #[error("hotkey file {path} says {stated}, its key is {derived}")]
    AddressMismatch {
        path: String,
        stated: String,
        derived: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Keyfile {
    secret_phrase: Option<String>,
    secret_seed: Option<String>,
    private_key: Option<String>,
    ss58_address: Option<String>,
}

impl Drop for Keyfile {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for secret in [
            &mut self.secret_phrase,
            &mut self.secret_seed,
            &mut self.private_key,
        ] {
            secret.zeroize();
        }
    }
}

/// `wallet_path/name/hotkeys/hotkey`, with a leading `~` taken as `$HOME`.
pub fn hotkey_file(wallet_path: &str, name: &str, hotkey: &str) -> PathBuf {
    let base = match wallet_path.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(rest),
        None => PathBuf::from(wallet_path),
    };
    base.join(name).join("hotkeys").join(hotkey)
}

/// The signer of a Bittensor hotkey file.
pub fn load_hotkey(path: &Path) -> Result<Sr25519Signer, WalletError> {
    let shown = path.display().to_string();
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| WalletError::Read {
        path: shown.clone(),
        source,
    })?);
    for (prefix, what) in [
        (&b"$NACL"[..], "NaCl secretbox"),
        (b"$ANSIBLE_VAULT", "Ansible vault"),
        (b"gAAAAA", "legacy Fernet"),
    ] {
        if bytes.starts_with(prefix) {
            return Err(WalletError::Encrypted(shown, what));
        }
    }
    // Serde's messages quote no input values, so a parse error carries no secret.
    let file: Keyfile = serde_json::from_slice(&bytes).map_err(|e| WalletError::Format {
        path: shown.clone(),
        reason: format!("{} at line {}", e.classify_name(), e.line()),
    })?;
    let key = |source| WalletError::Key {
        path: shown.clone(),
        source,
    };
    let signer = if let Some(phrase) = file.secret_phrase.as_deref() {
        Sr25519Signer::from_phrase(phrase, "").map_err(key)?
    } else if let Some(seed) = file.secret_seed.as_deref() {
        Sr25519Signer::from_seed_hex(seed).map_err(key)?
    } else if let Some(private) = file.private_key.as_deref() {
        Sr25519Signer::from_private_key_hex(private).map_err(key)?
    } else {
        return Err(WalletError::Format {
            path: shown,
            reason: "none of secretPhrase, secretSeed, privateKey".into(),
        });
    };
    if let Some(stated) = file.ss58_address.clone()
        && stated != signer.hotkey().as_str()
    {
        return Err(WalletError::AddressMismatch {
            path: shown,
            stated,
            derived: signer.hotkey().to_string(),
        });
    }
    Ok(signer)
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "wrong field types",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("hk");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn keyfiles_load_by_phrase_then_seed_then_private_key_and_bad_ones_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let seed = format!("0x{}", "11".repeat(32));
        let from_seed = Sr25519Signer::from_seed_hex(&seed).unwrap();
        let p = write(
            dir.path(),
            &format!(
                r#"{{"secretSeed": "{seed}", "ss58Address": "{}"}}"#,
                from_seed.hotkey()
            ),
        );
        assert_eq!(load_hotkey(&p).unwrap().hotkey(), from_seed.hotkey());

        let p = write(
            dir.path(),
            &format!(
                r#"{{"secretSeed": "{seed}", "ss58Address": "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"}}"#
            ),
        );
        assert!(matches!(
            load_hotkey(&p),
            Err(WalletError::AddressMismatch { .. })
        ));

        let p = write(dir.path(), "$NACLxxxxxxxx");
        let err = load_hotkey(&p).unwrap_err().to_string();
        assert!(err.contains("encrypted"), "{err}");

        let p = write(dir.path(), r#"{"secretSeed": "0x12zz"}"#);
        let err = load_hotkey(&p).unwrap_err().to_string();
        assert!(err.contains("not hex") && !err.contains("12zz"), "{err}");

        let p = write(dir.path(), r#"{"secretSeed": "#);
        let err = load_hotkey(&p).unwrap_err().to_string();
        assert!(err.contains("not a Bittensor keyfile"), "{err}");

        assert!(matches!(
            load_hotkey(&dir.path().join("absent")),
            Err(WalletError::Read { .. })
        ));
        let path = hotkey_file("/w", "cold", "hot");
        assert_eq!(path, PathBuf::from("/w/cold/hotkeys/hot"));
    }
}
