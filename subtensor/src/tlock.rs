//! Commit-reveal v4: weights timelock-encrypted to a drand quicknet round.
//!
//! The chain keeps the ciphertext and decrypts it itself once that round's pulse is on chain,
//! so the format must be exactly what subtensor's `tle` decrypts: the SCALE-encoded
//! [`WeightsTlockPayload`], encrypted by `tle` (Boneh-Franklin IBE on BLS12-381 with the
//! round's identity, AES-GCM body) and serialised compressed. `timelock` 0.0.1 on crates.io is
//! that library (same authors, same w3f-bls and arkworks 0.4 generation subtensor pins).

use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use codec::{Decode, Encode};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use timelock::{
    curves::drand::TinyBLS381,
    ibe::fullident::Identity,
    stream_ciphers::AESGCMStreamCipherProvider,
    tlock::{EngineBLS, TLECiphertext, tld, tle},
};

/// drand quicknet's group public key (G2, compressed), the key subtensor's Drand pallet
/// verifies pulses against.
pub const QUICKNET_PUBLIC_KEY: &str = "83cf0f2896adee7eb8b5f01fcad3912212c437e0073e911fb90022d3e760183c8c4b450b6a0a6c3ac6a5776a2d1064510d1fec758c921cc22b0e17e63aaf4bcb5ed66304de9cf809bd274ca73bab4af5a6e9c76a4bc09e76eae8991ef5ece45a";
/// Unix time of quicknet's round 1 and its period: round r is published at
/// `GENESIS + (r - 1) * PERIOD`.
pub const QUICKNET_GENESIS_SECS: u64 = 1_692_803_367;
pub const QUICKNET_PERIOD_SECS: u64 = 3;

/// What the chain decrypts and applies: `pallet_subtensor::WeightsTlockPayload`.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct WeightsTlockPayload {
    /// The committing hotkey's public key (32 bytes); the chain checks it is the signer.
    pub hotkey: Vec<u8>,
    pub uids: Vec<u16>,
    pub values: Vec<u16>,
    pub version_key: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TlockError {
    #[error("the drand public key does not deserialise: {0}")]
    PublicKey(String),
    #[error("timelock encryption failed: {0}")]
    Encrypt(String),
    #[error("the ciphertext is not a compressed timelock ciphertext: {0}")]
    Ciphertext(String),
    #[error("the round signature is not a compressed G1 point: {0}")]
    Signature(String),
    #[error("decryption failed (wrong round or signature): {0}")]
    Decrypt(String),
    #[error("the decrypted bytes are not a SCALE WeightsTlockPayload: {0}")]
    Payload(String),
}

/// The IBE identity of a round: SHA-256 of the round number, big-endian, as drand signs it.
fn round_identity(round: u64) -> Identity {
    let message = Sha256::digest(round.to_be_bytes()).to_vec();
    Identity::new(b"", vec![message])
}

/// Encrypts `message` so that only quicknet's signature of `round` decrypts it.
pub fn encrypt_to_round(message: &[u8], round: u64) -> Result<Vec<u8>, TlockError> {
    let key_bytes =
        hex::decode(QUICKNET_PUBLIC_KEY).map_err(|e| TlockError::PublicKey(e.to_string()))?;
    let public_key =
        <TinyBLS381 as EngineBLS>::PublicKeyGroup::deserialize_compressed(key_bytes.as_slice())
            .map_err(|e| TlockError::PublicKey(e.to_string()))?;
    let mut ephemeral = [0u8; 32];
    OsRng.fill_bytes(&mut ephemeral);
    let ciphertext = tle::<TinyBLS381, AESGCMStreamCipherProvider, OsRng>(
        public_key,
        ephemeral,
        message,
        round_identity(round),
        OsRng,
    )
    .map_err(|e| TlockError::Encrypt(format!("{e:?}")))?;
    let mut bytes = Vec::new();
    ciphertext
        .serialize_compressed(&mut bytes)
        .map_err(|e| TlockError::Encrypt(e.to_string()))?;
    Ok(bytes)
}

/// Decrypts with a round's signature (48-byte compressed G1), as the chain does on reveal.
pub fn decrypt_with_signature(ciphertext: &[u8], signature: &[u8]) -> Result<Vec<u8>, TlockError> {
    let ciphertext = TLECiphertext::<TinyBLS381>::deserialize_compressed(ciphertext)
        .map_err(|e| TlockError::Ciphertext(e.to_string()))?;
    let signature = <TinyBLS381 as EngineBLS>::SignatureGroup::deserialize_compressed(signature)
        .map_err(|e| TlockError::Signature(e.to_string()))?;
    tld::<TinyBLS381, AESGCMStreamCipherProvider>(ciphertext, signature)
        .map_err(|e| TlockError::Decrypt(format!("{e:?}")))
}

impl WeightsTlockPayload {
    /// The `commit` argument of `commit_timelocked_(mechanism_)weights`.
    pub fn seal(&self, round: u64) -> Result<Vec<u8>, TlockError> {
        encrypt_to_round(&self.encode(), round)
    }

    /// What the chain reads back once `round`'s pulse has arrived.
    pub fn open(ciphertext: &[u8], signature: &[u8]) -> Result<Self, TlockError> {
        let plain = decrypt_with_signature(ciphertext, signature)?;
        Self::decode(&mut plain.as_slice()).map_err(|e| TlockError::Payload(e.to_string()))
    }
}

/// The round whose pulse the chain will have ingested by `target_unix_secs`: rounded down,
/// so the commit never waits on a pulse the chain cannot have yet (the Python SDK's rule).
pub fn round_by(target_unix_secs: f64) -> u64 {
    let since = target_unix_secs - QUICKNET_GENESIS_SECS as f64;
    ((since / QUICKNET_PERIOD_SECS as f64).floor() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quicknet round 1000 as published by drand (from subtensor's Drand pallet tests).
    pub const ROUND_1000_SIGNATURE: &str = "b44679b9a59af2ec876b1a6b1ad52ea9b1615fc3982b19576350f93447cb1125e342b73a8dd2bacbe47e4b6b63ed5e39";

    fn payload() -> WeightsTlockPayload {
        WeightsTlockPayload {
            hotkey: vec![7; 32],
            uids: vec![0, 3, 9],
            values: vec![65535, 120, 7],
            version_key: 4,
        }
    }

    #[test]
    fn a_sealed_payload_opens_with_its_rounds_signature() {
        let sealed = payload().seal(1000).unwrap();
        let signature = hex::decode(ROUND_1000_SIGNATURE).unwrap();
        assert_eq!(
            WeightsTlockPayload::open(&sealed, &signature).unwrap(),
            payload()
        );
    }

    #[test]
    fn another_rounds_signature_does_not_open_it() {
        let sealed = payload().seal(1001).unwrap();
        let signature = hex::decode(ROUND_1000_SIGNATURE).unwrap();
        let err = WeightsTlockPayload::open(&sealed, &signature).unwrap_err();
        assert!(matches!(err, TlockError::Decrypt(_)), "{err}");
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let signature = hex::decode(ROUND_1000_SIGNATURE).unwrap();
        assert!(matches!(
            decrypt_with_signature(&[1, 2, 3], &signature),
            Err(TlockError::Ciphertext(_))
        ));
        let sealed = payload().seal(1000).unwrap();
        assert!(matches!(
            decrypt_with_signature(&sealed, &[0u8; 48]),
            Err(TlockError::Signature(_)) | Err(TlockError::Decrypt(_))
        ));
    }

    #[test]
    fn rounds_follow_quicknets_clock() {
        let genesis = QUICKNET_GENESIS_SECS as f64;
        assert_eq!(round_by(genesis + 3.0 * 1000.0), 1000);
        assert_eq!(round_by(genesis + 3.0 * 1000.0 + 2.9), 1000);
        assert_eq!(round_by(genesis + 3.0 * 1001.0), 1001);
        assert_eq!(round_by(0.0), 1);
    }
}
