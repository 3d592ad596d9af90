//! Object key layout, all under a version prefix `v{version}/` so that incompatible
//! releases never read each other's objects:
//! - `gradients/{window:012}/{uid:05}.safetensors`: a miner's payload for a window
//! - `gradients/{window:012}/{uid:05}.sha256`: the payload's digest, written before the
//!   payload (its store time orders copies: nobody can commit to a payload before reading it)
//! - `checkpoints/{window:012}/model.safetensors` and `checkpoints/LATEST`: a validator's
//!   checkpoint; the pointer (JSON with the window) is written after the checkpoint, so a
//!   reader that follows it never sees a half-written checkpoint
//! - `start_window.json`: the window training started at
//! - `peers/{window:012}.json`: the peer list chosen for a window
//!
//! Zero-padded numbers make lexicographic order (LIST) numeric order.

/// Key builder for one protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(version: &str) -> Self {
        Self {
            prefix: format!("v{version}"),
        }
    }

    pub fn gradient(&self, window: u64, uid: u16) -> String {
        format!(
            "{}/gradients/{window:012}/{uid:05}.safetensors",
            self.prefix
        )
    }

    /// The digest of a miner's payload, committed before the payload is readable.
    pub fn gradient_digest(&self, window: u64, uid: u16) -> String {
        format!("{}/gradients/{window:012}/{uid:05}.sha256", self.prefix)
    }

    pub fn gradients_prefix(&self) -> String {
        format!("{}/gradients/", self.prefix)
    }

    /// Window and uid of a gradient key of this version, if it is one.
    pub fn parse_gradient(&self, key: &str) -> Option<(u64, u16)> {
        let rest = key.strip_prefix(&self.gradients_prefix())?;
        let (window, file) = rest.split_once('/')?;
        let uid = file.strip_suffix(".safetensors")?;
        Some((window.parse().ok()?, uid.parse().ok()?))
    }

    pub fn checkpoint(&self, window: u64) -> String {
        format!("{}/checkpoints/{window:012}/model.safetensors", self.prefix)
    }

    pub fn checkpoint_pointer(&self) -> String {
        format!("{}/checkpoints/LATEST", self.prefix)
    }

    pub fn start_window(&self) -> String {
        format!("{}/start_window.json", self.prefix)
    }

    pub fn peers(&self, window: u64) -> String {
        format!("{}/peers/{window:012}.json", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_sortable_and_parse_back() {
        let k = Keys::new("1");
        let g = k.gradient(42, 7);
        assert_eq!(g, "v1/gradients/000000000042/00007.safetensors");
        assert_eq!(k.parse_gradient(&g), Some((42, 7)));
        assert_eq!(Keys::new("2").parse_gradient(&g), None);
        assert_eq!(k.parse_gradient("v1/gradients/x/1.safetensors"), None);
        // The digest commitment sits beside the payload and is not one.
        let d = k.gradient_digest(42, 7);
        assert_eq!(
            d.rsplit_once('/').map(|x| x.0),
            g.rsplit_once('/').map(|x| x.0)
        );
        assert_eq!(k.parse_gradient(&d), None);
        assert!(k.gradient(9, 0) < k.gradient(10, 0));
        for key in [
            g,
            k.checkpoint(3),
            k.checkpoint_pointer(),
            k.start_window(),
            k.peers(5),
        ] {
            crate::storage::check_key(&key).unwrap();
        }
    }
}
