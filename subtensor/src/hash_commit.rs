//! Hash commit-reveal (v2), the fallback when a subnet runs commit-reveal without timelocks:
//! commit `BlakeTwo256(SCALE(hotkey, netuid index, uids, values, salt, version_key))`, then
//! reveal the same values and salt once the reveal period has passed.

use blake2::digest::{Digest, consts::U32};
use codec::Encode;

/// The weights a hash commit stands for, and the salt that keeps them secret until revealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashCommit {
    pub hotkey: [u8; 32],
    /// `mecid * 4096 + netuid`; for mechanism 0 the netuid itself.
    pub netuid_index: u16,
    pub uids: Vec<u16>,
    pub values: Vec<u16>,
    pub salt: Vec<u16>,
    pub version_key: u64,
}

impl HashCommit {
    /// The `commit_hash` argument of `commit_(mechanism_)weights`.
    pub fn hash(&self) -> [u8; 32] {
        let encoded = (
            self.hotkey,
            self.netuid_index,
            &self.uids,
            &self.values,
            &self.salt,
            self.version_key,
        )
            .encode();
        blake2::Blake2b::<U32>::digest(&encoded).into()
    }

    /// A fresh random salt of 8 u16s, as the Python SDK draws.
    pub fn random_salt() -> Vec<u16> {
        use rand_core::{OsRng, RngCore};
        (0..8).map(|_| OsRng.next_u32() as u16).collect()
    }
}
