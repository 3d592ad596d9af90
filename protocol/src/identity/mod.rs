//! Who a node is: its hotkey, and what can sign in its name.
//!
//! On Bittensor a hotkey is an SS58-encoded sr25519 public key; on the devnet it is any
//! non-empty name. Either way it is an opaque string to everything but the chain and the
//! signer, so it travels as [`Hotkey`] rather than a bare `String`.

pub mod sr25519;
pub mod ss58;
pub mod wallet;

pub use sr25519::{KeyError, SignatureError, Sr25519Signer, verify};
pub use wallet::{WalletError, load_hotkey};

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's public identity on the chain. Serialised as a plain string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hotkey(String);

/// A hotkey that is empty or carries whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hotkey {0:?}: expected a non-empty name without whitespace")]
pub struct InvalidHotkey(pub String);

impl Hotkey {
    /// Longest hotkey accepted (an SS58 address is 48 characters).
    pub const MAX_LEN: usize = 128;

    /// A hotkey from text (trimmed): non-empty, at most [`Self::MAX_LEN`] characters, no
    /// whitespace or control characters (it becomes part of bucket names and object keys).
    pub fn parse(text: &str) -> Result<Self, InvalidHotkey> {
        let t = text.trim();
        if t.is_empty()
            || t.len() > Self::MAX_LEN
            || t.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(InvalidHotkey(text.to_string()));
        }
        Ok(Self(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this hotkey is an SS58 address (a public key that signatures verify against),
    /// rather than a devnet name.
    pub fn is_address(&self) -> bool {
        ss58::decode(&self.0).is_ok()
    }
}

impl fmt::Display for Hotkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Hotkey {
    type Err = InvalidHotkey;
    fn from_str(s: &str) -> Result<Self, InvalidHotkey> {
        Self::parse(s)
    }
}

impl PartialEq<str> for Hotkey {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Hotkey {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// What signs in a hotkey's name: payload digests, and later chain extrinsics.
///
/// [`Sr25519Signer`] (from a seed, a phrase or a Bittensor hotkey file) implements it; the
/// protocol only needs the hotkey and a signature over bytes.
pub trait Signer: Send + Sync {
    /// The public identity the signatures verify against.
    fn hotkey(&self) -> &Hotkey;
    /// A signature over `message` by the hotkey's secret key.
    fn sign(&self, message: &[u8]) -> Vec<u8>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_trims_and_rejects_blank_or_spaced_names() {
        assert_eq!(Hotkey::parse(" miner-a\n").unwrap().as_str(), "miner-a");
        assert!(Hotkey::parse("").is_err());
        assert!(Hotkey::parse("  \n").is_err());
        assert!(Hotkey::parse("two words").is_err());
        assert!(Hotkey::parse("nul\0").is_err());
        assert!(Hotkey::parse(&"x".repeat(Hotkey::MAX_LEN + 1)).is_err());
    }

    #[test]
    fn serialises_as_a_plain_string() {
        let h = Hotkey::parse("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY").unwrap();
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, "\"5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY\"");
        assert_eq!(serde_json::from_str::<Hotkey>(&json).unwrap(), h);
    }
}
