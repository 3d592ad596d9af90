//! SS58 addresses (Substrate's format; Bittensor uses the generic prefix 42):
//! base58(prefix ‖ public key ‖ first 2 bytes of blake2b-512("SS58PRE" ‖ prefix ‖ public key)).

use blake2::{Blake2b512, Digest};

/// The generic Substrate prefix, which Bittensor uses.
pub const BITTENSOR_PREFIX: u8 = 42;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ss58Error {
    #[error("not base58: {0}")]
    Base58(String),
    #[error("an SS58 address of a 32-byte key is 35 bytes, this one is {0}")]
    Length(usize),
    #[error("SS58 prefix {0} is not supported (only single-byte prefixes below 64)")]
    Prefix(u8),
    #[error("SS58 checksum mismatch")]
    Checksum,
}

fn checksum(body: &[u8]) -> [u8; 2] {
    let mut h = Blake2b512::new();
    h.update(b"SS58PRE");
    h.update(body);
    let d = h.finalize();
    [d[0], d[1]]
}

/// The address of a 32-byte public key under `prefix` (< 64).
pub fn encode(public: &[u8; 32], prefix: u8) -> String {
    let mut body = Vec::with_capacity(35);
    body.push(prefix);
    body.extend_from_slice(public);
    let sum = checksum(&body);
    body.extend_from_slice(&sum);
    bs58::encode(body).into_string()
}

/// The public key and prefix of an address.
pub fn decode(address: &str) -> Result<([u8; 32], u8), Ss58Error> {
    let bytes = bs58::decode(address)
        .into_vec()
        .map_err(|e| Ss58Error::Base58(e.to_string()))?;
    if bytes.len() != 35 {
        return Err(Ss58Error::Length(bytes.len()));
    }
    if bytes[0] >= 64 {
        return Err(Ss58Error::Prefix(bytes[0]));
    }
    if checksum(&bytes[..33]) != bytes[33..35] {
        return Err(Ss58Error::Checksum);
    }
    let mut public = [0u8; 32];
    public.copy_from_slice(&bytes[1..33]);
    Ok((public, bytes[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alice_round_trips_and_a_changed_character_fails_the_checksum() {
        // Alice's well-known sr25519 public key and address (Substrate's dev account).
        let alice = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
        let public: [u8; 32] =
            hex::decode("d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d")
                .unwrap()
                .try_into()
                .unwrap();
        assert_eq!(encode(&public, BITTENSOR_PREFIX), alice);
        assert_eq!(decode(alice).unwrap(), (public, 42));
        let altered = alice.replace('G', "H");
        assert!(decode(&altered).is_err());
        assert!(matches!(
            decode("miner-1"),
            Err(Ss58Error::Base58(_) | Ss58Error::Length(_))
        ));
    }
}
