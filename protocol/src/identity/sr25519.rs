//! sr25519 keys as Substrate and Bittensor use them: a 32-byte mini secret expanded in
//! Ed25519 mode, signatures under the signing context "substrate", the hotkey being the SS58
//! address of the public key. Secrets never appear in `Debug` output or errors.

use super::ss58::{self, BITTENSOR_PREFIX, Ss58Error};
use super::{Hotkey, Signer};
use schnorrkel::{ExpansionMode, Keypair, MiniSecretKey, PublicKey, SecretKey, Signature};
use zeroize::Zeroizing;

const SIGNING_CONTEXT: &[u8] = b"substrate";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a secret seed is 32 bytes (64 hex digits), got {0} bytes")]
    SeedLength(usize),
    #[error("a private key is 64 bytes (128 hex digits), got {0} bytes")]
    PrivateKeyLength(usize),
    #[error("the private key is not a valid sr25519 secret key")]
    PrivateKey,
    #[error("not hex: the key material must be hex digits, optionally after 0x")]
    Hex,
    #[error("invalid mnemonic: {0}")]
    Mnemonic(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("hotkey {hotkey} is not an SS58 address: {reason}")]
    NotAnAddress { hotkey: String, reason: Ss58Error },
    #[error("hotkey {0} is not a valid sr25519 public key")]
    PublicKey(String),
    #[error("a signature is 64 bytes, got {0}")]
    Length(usize),
    #[error("the signature does not verify under hotkey {0}")]
    Invalid(String),
}

/// Decodes hex key material (an optional 0x prefix), kept in zeroised memory.
fn secret_hex(text: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    hex::decode(t)
        .map(Zeroizing::new)
        .map_err(|_| KeyError::Hex)
}

/// An sr25519 key pair that signs in its hotkey's name.
pub struct Sr25519Signer {
    keypair: Keypair,
    hotkey: Hotkey,
}

impl std::fmt::Debug for Sr25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sr25519Signer")
            .field("hotkey", &self.hotkey)
            .finish_non_exhaustive()
    }
}

impl Sr25519Signer {
    fn from_keypair(keypair: Keypair) -> Self {
        let address = ss58::encode(&keypair.public.to_bytes(), BITTENSOR_PREFIX);
        let hotkey = Hotkey::parse(&address).expect("an SS58 address is a valid hotkey");
        Self { keypair, hotkey }
    }

    /// From a 32-byte secret seed (Bittensor's `secretSeed`, Substrate's mini secret).
    pub fn from_seed(seed: &[u8]) -> Result<Self, KeyError> {
        let mini = MiniSecretKey::from_bytes(seed).map_err(|_| KeyError::SeedLength(seed.len()))?;
        Ok(Self::from_keypair(
            mini.expand_to_keypair(ExpansionMode::Ed25519),
        ))
    }

    /// From a hex seed, as in a keyfile's `secretSeed` ("0x" + 64 hex digits).
    pub fn from_seed_hex(text: &str) -> Result<Self, KeyError> {
        Self::from_seed(&secret_hex(text)?)
    }

    /// From a 64-byte private key, as in a keyfile's `privateKey`: schnorrkel's own
    /// serialisation of the expanded secret key (scalar ‖ nonce), as bittensor-wallet writes
    /// it (its Ed25519-ordered variant gives another key: checked against the library).
    pub fn from_private_key_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = secret_hex(text)?;
        if bytes.len() != 64 {
            return Err(KeyError::PrivateKeyLength(bytes.len()));
        }
        let secret = SecretKey::from_bytes(&bytes).map_err(|_| KeyError::PrivateKey)?;
        Ok(Self::from_keypair(secret.to_keypair()))
    }

    /// From a BIP-39 mnemonic, as Substrate derives it (not BIP-39's own seed): the mini
    /// secret is the first 32 bytes of PBKDF2-HMAC-SHA512(entropy, "mnemonic" + password,
    /// 2048 rounds).
    pub fn from_phrase(phrase: &str, password: &str) -> Result<Self, KeyError> {
        let mnemonic = bip39::Mnemonic::parse_in(bip39::Language::English, phrase.trim())
            .map_err(|e| KeyError::Mnemonic(e.to_string()))?;
        let entropy = Zeroizing::new(mnemonic.to_entropy());
        let salt = Zeroizing::new(format!("mnemonic{password}"));
        let mut seed = Zeroizing::new([0u8; 64]);
        pbkdf2::pbkdf2_hmac::<sha2::Sha512>(&entropy, salt.as_bytes(), 2048, seed.as_mut());
        Self::from_seed(&seed[..32])
    }

    /// The 32-byte public key.
    pub fn public(&self) -> [u8; 32] {
        self.keypair.public.to_bytes()
    }
}

impl Signer for Sr25519Signer {
    fn hotkey(&self) -> &Hotkey {
        &self.hotkey
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let context = schnorrkel::signing_context(SIGNING_CONTEXT);
        self.keypair
            .sign(context.bytes(message))
            .to_bytes()
            .to_vec()
    }
}

/// Checks that `signature` is `hotkey`'s (an SS58 address) over `message`.
pub fn verify(hotkey: &Hotkey, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    let (public, _) =
        ss58::decode(hotkey.as_str()).map_err(|reason| SignatureError::NotAnAddress {
            hotkey: hotkey.to_string(),
            reason,
        })?;
    let public = PublicKey::from_bytes(&public)
        .map_err(|_| SignatureError::PublicKey(hotkey.to_string()))?;
    if signature.len() != 64 {
        return Err(SignatureError::Length(signature.len()));
    }
    let signature = Signature::from_bytes(signature)
        .map_err(|_| SignatureError::Invalid(hotkey.to_string()))?;
    public
        .verify_simple(SIGNING_CONTEXT, message, &signature)
        .map_err(|_| SignatureError::Invalid(hotkey.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_key_and_message() {
        let a = Sr25519Signer::from_seed(&[7; 32]).unwrap();
        let b = Sr25519Signer::from_seed(&[8; 32]).unwrap();
        let sig = a.sign(b"window 3");
        verify(a.hotkey(), b"window 3", &sig).unwrap();
        assert!(matches!(
            verify(a.hotkey(), b"window 4", &sig),
            Err(SignatureError::Invalid(_))
        ));
        assert!(matches!(
            verify(b.hotkey(), b"window 3", &sig),
            Err(SignatureError::Invalid(_))
        ));
        let mut flipped = sig.clone();
        flipped[10] ^= 1;
        assert!(verify(a.hotkey(), b"window 3", &flipped).is_err());
        assert_eq!(
            verify(a.hotkey(), b"window 3", &sig[..63]),
            Err(SignatureError::Length(63))
        );
        let name = Hotkey::parse("miner-1").unwrap();
        assert!(matches!(
            verify(&name, b"window 3", &sig),
            Err(SignatureError::NotAnAddress { .. })
        ));
    }

    #[test]
    fn alice_from_her_dev_phrase_has_her_address_and_debug_shows_no_secret() {
        // Substrate's well-known development phrase; Alice is its "//Alice" derivation, so the
        // bare phrase gives the dev root account.
        let phrase = "bottom drive obey lake curtain smoke basket hold race lonely fit walk";
        let root = Sr25519Signer::from_phrase(phrase, "").unwrap();
        assert_eq!(
            root.hotkey().as_str(),
            "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV"
        );
        let shown = format!("{root:?}");
        assert!(
            shown.contains("5DfhGyQd") && !shown.contains("keypair"),
            "{shown}"
        );
        assert!(matches!(
            Sr25519Signer::from_phrase("not a phrase", ""),
            Err(KeyError::Mnemonic(_))
        ));
        assert_eq!(
            Sr25519Signer::from_seed_hex("0x1234").unwrap_err(),
            KeyError::SeedLength(2)
        );
    }
}
