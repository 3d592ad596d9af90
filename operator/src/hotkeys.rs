//! Each pod holds only its own hotkey: the `wallet` init container copies the pod's
//! `hotkey-<ordinal>` out of the wallet Secret into a memory-backed folder, the only one the
//! node container mounts. So the wallet Secret stays out of the pods' config hash, and adding
//! a replica's key to scale up restarts no running pod. A changed key restarts only its own
//! pod: the StatefulSet carries a digest of each replica's key ([`DIGESTS_ANNOTATION`]), and
//! the reconcile deletes the pod whose key's digest changed (the StatefulSet controller
//! recreates it, and its init container copies the new key).

use k8s_openapi::api::apps::v1::StatefulSet;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// StatefulSet annotation: JSON map `hotkey-<ordinal>` -> digest of that key's value.
pub const DIGESTS_ANNOTATION: &str = "templar.tplr.ai/hotkey-digests";

/// 16 hex digits of SHA-256: tells a changed key from the same one, and reveals nothing of
/// a keyfile (its 32-byte seed makes the preimage unguessable).
pub fn digest(value: &[u8]) -> String {
    hex::encode(&Sha256::digest(value)[..8])
}

/// The digests of the keys of replicas `0..replicas` (those the wallet holds).
pub fn for_replicas(all: &BTreeMap<String, String>, replicas: i32) -> BTreeMap<String, String> {
    (0..replicas.max(0))
        .filter_map(|i| {
            let key = format!("hotkey-{i}");
            all.get(&key).map(|d| (key, d.clone()))
        })
        .collect()
}

/// The digests a StatefulSet was last applied with (none when it has no annotation).
pub fn applied(sts: Option<&StatefulSet>) -> BTreeMap<String, String> {
    sts.and_then(|s| s.metadata.annotations.as_ref()?.get(DIGESTS_ANNOTATION))
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

/// The ordinals whose key changed: present before and now, with another digest. A key seen
/// for the first time (a new replica) is no change.
pub fn rotated(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<u32> {
    now.iter()
        .filter(|(key, digest)| before.get(*key).is_some_and(|old| old != *digest))
        .filter_map(|(key, _)| key.strip_prefix("hotkey-")?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_a_changed_key_of_a_running_replica_counts_as_rotated() {
        let before = map(&[("hotkey-0", "a"), ("hotkey-1", "b"), ("hotkey-2", "c")]);
        let scaled = map(&[
            ("hotkey-0", "a"),
            ("hotkey-1", "b"),
            ("hotkey-2", "c"),
            ("hotkey-3", "d"),
        ]);
        assert!(rotated(&before, &scaled).is_empty(), "a new replica's key");
        let changed = map(&[("hotkey-0", "a"), ("hotkey-1", "B"), ("hotkey-2", "c")]);
        assert_eq!(rotated(&before, &changed), vec![1]);
        assert!(
            rotated(&BTreeMap::new(), &changed).is_empty(),
            "first apply"
        );
        let all = map(&[("hotkey-0", "a"), ("hotkey-1", "b"), ("accessKeyId", "x")]);
        assert_eq!(for_replicas(&all, 1), map(&[("hotkey-0", "a")]));
        assert_ne!(digest(b"miner-0"), digest(b"miner-1"));
        assert_eq!(digest(b"miner-0").len(), 16);
    }
}
