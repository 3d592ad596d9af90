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

/// The transaction pool's own refusals: subtensor's `CustomTransactionError` codes
/// (common/src/transaction_error.rs), which its transaction extension returns before a
/// call is ever dispatched, as `Invalid Transaction` with `Custom error: N`.
const POOL_ERRORS: &[(u8, &str, &str)] = &[
    (
        1,
        "StakeAmountTooLow",
        "the hotkey's stake is below what the call needs",
    ),
    (
        2,
        "BalanceTooLow",
        "the coldkey's balance cannot pay for it",
    ),
    (3, "SubnetNotExists", "the subnet does not exist"),
    (
        4,
        "HotkeyAccountDoesntExist",
        "the hotkey account does not exist",
    ),
    (
        6,
        "RateLimitExceeded",
        "a rate limit of the call (weights: WeightsSetRateLimit blocks since LastUpdate)",
    ),
    (
        10,
        "HotKeyNotRegisteredInNetwork",
        "the hotkey is not registered on the subnet",
    ),
    (
        12,
        "ServingRateLimitExceeded",
        "serving information was updated too recently",
    ),
    (
        15,
        "InvalidRevealRound",
        "the reveal round is not a valid drand round",
    ),
    (16, "CommitNotFound", "no commit to reveal"),
    (
        17,
        "CommitBlockNotInRevealRange",
        "the commit is outside its reveal window",
    ),
    (
        18,
        "InputLengthsUnequal",
        "uids and weights differ in length",
    ),
    (
        19,
        "UidNotFound",
        "a uid in the weights does not exist on the subnet",
    ),
    (255, "BadRequest", "the call's arguments are malformed"),
];

/// The named error of a pool refusal in `message` (`... Custom error: N ...`), or `None`
/// when it holds none.
pub fn pool_error(message: &str, hotkey: &Hotkey) -> Option<ChainError> {
    let code: u8 = message
        .split("Custom error: ")
        .nth(1)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    let named = POOL_ERRORS.iter().find(|(c, ..)| *c == code);
    Some(match named {
        Some((_, "HotKeyNotRegisteredInNetwork", _)) => ChainError::NotRegistered(hotkey.clone()),
        Some((
            _,
            name @ ("InvalidRevealRound" | "CommitNotFound" | "CommitBlockNotInRevealRange"),
            meaning,
        )) => SubtensorError::CommitReveal(format!(
            "transaction pool: {name} (custom error {code}): {meaning}"
        ))
        .into(),
        Some((_, name, meaning)) => ChainError::Rejected {
            error: format!("{name} (transaction pool, custom error {code})"),
            reason: (*meaning).to_string(),
        },
        None => ChainError::Rejected {
            error: format!("custom error {code} (transaction pool)"),
            reason: "a refusal of subtensor's transaction extension this build does not name"
                .into(),
        },
    })
}

/// [`pool_error`] of an RPC error: the code travels in the JSON-RPC error's data, which the
/// errors' displays leave out and not every layer of subxt exposes as a source; the error's
/// debug form carries it, nested however deep.
pub fn pool_error_of(err: &dyn std::error::Error, hotkey: &Hotkey) -> Option<ChainError> {
    pool_error(&format!("{err:?}"), hotkey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pools_custom_errors_are_named_from_subtensors_codes() {
        let hk = Hotkey::parse("5Hotkey").unwrap();
        let pool = |data: &str| pool_error(data, &hk);
        assert_eq!(
            pool("Custom error: 10"),
            Some(ChainError::NotRegistered(hk.clone()))
        );
        let rate = pool("Invalid Transaction: Custom error: 6").unwrap();
        assert!(
            rate.to_string().contains("RateLimitExceeded")
                && rate.to_string().contains("WeightsSetRateLimit"),
            "{rate}"
        );
        let stake = pool("Custom error: 1").unwrap().to_string();
        assert!(stake.contains("StakeAmountTooLow"), "{stake}");
        assert!(matches!(
            pool("Custom error: 17").unwrap().backend::<SubtensorError>(),
            Some(SubtensorError::CommitReveal(m)) if m.contains("CommitBlockNotInRevealRange")
        ));
        let unknown = pool("Custom error: 99").unwrap().to_string();
        assert!(unknown.contains("custom error 99"), "{unknown}");
        assert_eq!(pool("Transaction has a bad signature"), None);
        assert_eq!(pool("Custom error: x"), None);
    }

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
