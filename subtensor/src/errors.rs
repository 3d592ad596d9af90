//! The chain's own errors, named: a module error from a failed extrinsic becomes the
//! `ChainError` a node can act on, the rest keep the pallet's name and documentation.

use templar_protocol::chain::{BackendError, ChainError};
use templar_protocol::identity::Hotkey;

/// What only a subtensor chain can fail with; it reaches callers inside
/// [`ChainError::Backend`] (recover it with `ChainError::backend::<SubtensorError>()`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubtensorError {
    #[error(
        "the chain's runtime (spec version {spec_version}) differs from the metadata this build was generated from: {detail}; refresh it with `templar-node chain metadata --endpoint URL` and rebuild"
    )]
    RuntimeMismatch { spec_version: u32, detail: String },
    #[error("commit-reveal mismatch: {0}")]
    CommitReveal(String),
}

impl From<SubtensorError> for ChainError {
    fn from(e: SubtensorError) -> Self {
        ChainError::Backend(BackendError::new(e))
    }
}

/// Maps `Pallet::Error` from a failed extrinsic.
pub fn module_error(pallet: &str, error: &str, docs: &str, hotkey: &Hotkey) -> ChainError {
    match error {
        "HotKeyNotRegisteredInSubNet" | "HotKeyNotRegisteredInNetwork" | "NotRegistered" => {
            ChainError::NotRegistered(hotkey.clone())
        }
        "NeuronNoValidatorPermit" => ChainError::NoValidatorPermit(hotkey.clone()),
        "SettingWeightsTooFast" | "CommittingWeightsTooFast" => ChainError::Rejected {
            error: format!("{pallet}::{error}"),
            reason: "weights rate limit (WeightsSetRateLimit blocks since LastUpdate)".into(),
        },
        "IncorrectWeightVersionKey" => ChainError::Rejected {
            error: format!("{pallet}::{error}"),
            reason: "version key below the subnet's WeightsVersionKey".into(),
        },
        "CommitRevealEnabled"
        | "CommitRevealDisabled"
        | "InvalidRevealRound"
        | "IncorrectCommitRevealVersion"
        | "TooManyUnrevealedCommits" => {
            SubtensorError::CommitReveal(format!("{pallet}::{error}: {docs}")).into()
        }
        _ => ChainError::Rejected {
            error: format!("{pallet}::{error}"),
            reason: docs.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errors_a_node_acts_on_are_named() {
        let hk = Hotkey::parse("5Hotkey").unwrap();
        assert_eq!(
            module_error("SubtensorModule", "HotKeyNotRegisteredInSubNet", "", &hk),
            ChainError::NotRegistered(hk.clone())
        );
        assert_eq!(
            module_error("SubtensorModule", "NeuronNoValidatorPermit", "", &hk),
            ChainError::NoValidatorPermit(hk.clone())
        );
        let commit_reveal = module_error("SubtensorModule", "CommitRevealEnabled", "on", &hk);
        assert!(matches!(
            commit_reveal.backend::<SubtensorError>(),
            Some(SubtensorError::CommitReveal(m)) if m.contains("CommitRevealEnabled")
        ));
        let other = module_error("SubtensorModule", "SettingWeightsTooFast", "", &hk);
        assert!(
            other.to_string().contains("SettingWeightsTooFast"),
            "{other}"
        );
    }
}
