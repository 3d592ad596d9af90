//! The weights path on a subnet: the rules checked before anything is sent (so that a
//! refusal names the rule instead of a timelocked commit failing silently at its reveal), the
//! timelocked commit itself, and what became of it afterwards ([`WeightsOnChain`]).

use subxt::utils::AccountId32;
use templar_protocol::chain::ChainError;
use templar_protocol::chain::weights::{WeightsOnChain, weights_for_chain};
use templar_protocol::identity::Hotkey;

use super::{SubtensorChain, corrupt, now_secs};
use crate::api::runtime;
use crate::calls;
use crate::client::AtBlock;
use crate::errors::SubtensorError;
use crate::tlock::WeightsTlockPayload;

/// The chain's limit of unrevealed timelocked commits per hotkey (`TooManyUnrevealedCommits`).
pub const MAX_UNREVEALED: usize = 10;

/// The last weights this node sent: its uid, and for a timelocked commit its drand round and
/// the blocks after the commit by which the reveal is due.
#[derive(Debug, Clone, Copy)]
pub(super) struct SentWeights {
    own_uid: u16,
    reveal_round: Option<u64>,
    due_in: Option<u64>,
}

impl SubtensorChain {
    /// Weights as the subnet requires them (a timelocked commit while commit-reveal is on),
    /// after every rule the chain would check, named when one fails.
    pub(super) async fn send_weights(
        &self,
        hotkey: &Hotkey,
        weights: &[(u16, f64)],
    ) -> Result<(), ChainError> {
        let me = self.own(hotkey)?;
        let at = self.at_head().await?;
        let netuid = self.settings.netuid;
        let sm = runtime::storage().subtensor_module();
        let Some(own_uid) = self.uid_of(&at, &me).await? else {
            return Err(ChainError::NotRegistered(hotkey.clone()));
        };
        self.check_may_set_weights(&at, own_uid).await?;
        let max_weight = self
            .fetch(&at, "MaxWeightsLimit", sm.max_weights_limit(), (netuid,))
            .await?;
        let (uids, values) = weights_for_chain(weights, own_uid, max_weight)
            .map_err(|e| ChainError::InvalidWeights(e.to_string()))?;
        self.check_weights_allowed(&at, hotkey, own_uid, &uids)
            .await?;
        let commit_reveal = self
            .fetch(
                &at,
                "CommitRevealWeightsEnabled",
                sm.commit_reveal_weights_enabled(),
                (netuid,),
            )
            .await?;
        let sent = if commit_reveal {
            self.check_commit_reveal_version(&at).await?;
            self.check_unrevealed_commits(&at, &me).await?;
            let (round, due_in) = self.commit_timelocked(&at, &me, uids, values).await?;
            SentWeights {
                own_uid,
                reveal_round: Some(round),
                due_in: Some(due_in),
            }
        } else {
            let version_key = self.settings.version_key;
            self.submit(calls::set_weights(netuid, uids, values, version_key))
                .await?;
            SentWeights {
                own_uid,
                reveal_round: None,
                due_in: None,
            }
        };
        // The chain stamps the uid's LastUpdate with the block the extrinsic went into.
        let after = self.at_head().await?;
        let committed_block = self.last_update(&after, own_uid).await?;
        *self.last_weights.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((committed_block, sent));
        Ok(())
    }

    /// What became of the last weights this node sent: applied, awaiting the reveal, or
    /// not revealed by the block they were due (a refusal at the reveal), judged from the
    /// uid's `LastUpdate` at the head.
    pub(super) async fn weights_report(
        &self,
        hotkey: &Hotkey,
    ) -> Result<Option<WeightsOnChain>, ChainError> {
        self.own(hotkey)?;
        let last = *self.last_weights.lock().unwrap_or_else(|e| e.into_inner());
        let Some((committed_block, sent)) = last else {
            return Ok(None);
        };
        let at = self.at_head().await?;
        let last_update = self.last_update(&at, sent.own_uid).await?;
        Ok(Some(WeightsOnChain::judge(
            committed_block,
            sent.reveal_round,
            sent.due_in.map(|d| committed_block + d),
            last_update,
            at.block_number(),
        )))
    }

    /// `LastUpdate` of `uid` (0 when the vector is shorter).
    async fn last_update(&self, at: &AtBlock, uid: u16) -> Result<u64, ChainError> {
        let sm = runtime::storage().subtensor_module();
        let all = self
            .fetch(at, "LastUpdate", sm.last_update(), (self.settings.netuid,))
            .await?;
        Ok(all.get(usize::from(uid)).copied().unwrap_or(0))
    }

    /// The chain keeps at most [`MAX_UNREVEALED`] unrevealed commits per hotkey and refuses
    /// the next with `TooManyUnrevealedCommits`: named here before committing.
    async fn check_unrevealed_commits(
        &self,
        at: &AtBlock,
        me: &AccountId32,
    ) -> Result<(), ChainError> {
        let netuid = self.settings.netuid;
        let address = runtime::storage()
            .subtensor_module()
            .timelocked_weight_commits();
        let what = "TimelockedWeightCommits";
        let per_epoch = self
            .each_entry(at, what, address, (netuid,), |entry| {
                let commits = entry.value().decode().map_err(corrupt(what))?;
                Ok(commits.iter().filter(|c| c.0 == *me).count())
            })
            .await?;
        let unrevealed: usize = per_epoch.iter().sum();
        if unrevealed >= MAX_UNREVEALED {
            return Err(SubtensorError::CommitReveal(format!(
                "this hotkey has {unrevealed} unrevealed weight commits on subnet {netuid}, the \
                 chain's most (TooManyUnrevealedCommits); wait for their reveals"
            ))
            .into());
        }
        Ok(())
    }

    /// The subnet's rules a weights extrinsic must pass, checked before sending so that a
    /// refusal names the rule: the version key and the rate limit since `LastUpdate`.
    async fn check_may_set_weights(&self, at: &AtBlock, own_uid: u16) -> Result<(), ChainError> {
        let netuid = self.settings.netuid;
        let sm = runtime::storage().subtensor_module();
        let required = self
            .fetch(at, "WeightsVersionKey", sm.weights_version_key(), (netuid,))
            .await?;
        if self.settings.version_key < required {
            return Err(ChainError::VersionKeyTooLow {
                ours: self.settings.version_key,
                required,
            });
        }
        let limit = self
            .fetch(
                at,
                "WeightsSetRateLimit",
                sm.weights_set_rate_limit(),
                (netuid,),
            )
            .await?;
        let last_block = self.last_update(at, own_uid).await?;
        if last_block > 0 && at.block_number() < last_block + limit {
            return Err(ChainError::WeightsRateLimited {
                last_block,
                next_block: last_block + limit,
            });
        }
        Ok(())
    }

    /// Timelocked commits are v4; a chain on another commit-reveal version (v2: a hash
    /// commit revealed by a second extrinsic in the reveal window, which this node does not
    /// schedule) is refused with the reason rather than committed to and never revealed.
    async fn check_commit_reveal_version(&self, at: &AtBlock) -> Result<(), ChainError> {
        let sm = runtime::storage().subtensor_module();
        let version = self
            .fetch(
                at,
                "CommitRevealWeightsVersion",
                sm.commit_reveal_weights_version(),
                (),
            )
            .await?;
        if version != calls::COMMIT_REVEAL_VERSION {
            return Err(SubtensorError::CommitReveal(format!(
                "the chain's CommitRevealWeightsVersion is {version}; this node commits \
                 timelocked weights (version {}) only, and does not schedule the reveals of \
                 hash commit-reveal (v2)",
                calls::COMMIT_REVEAL_VERSION
            ))
            .into());
        }
        Ok(())
    }

    /// The rules the chain checks only when it applies the weights (for timelocked commits:
    /// at the reveal, where a failure is only a trace in the node's log): a validator
    /// permit, and at least `MinAllowedWeights` uids (capped by the subnet's size), unless
    /// the weights are the validator's weight on itself alone.
    async fn check_weights_allowed(
        &self,
        at: &AtBlock,
        hotkey: &Hotkey,
        own_uid: u16,
        uids: &[u16],
    ) -> Result<(), ChainError> {
        if uids == [own_uid] {
            return Ok(());
        }
        let netuid = self.settings.netuid;
        let sm = runtime::storage().subtensor_module();
        let permits = self
            .fetch(at, "ValidatorPermit", sm.validator_permit(), (netuid,))
            .await?;
        if !permits.get(usize::from(own_uid)).copied().unwrap_or(false) {
            return Err(ChainError::NoValidatorPermit(hotkey.clone()));
        }
        let min_allowed = self
            .fetch(at, "MinAllowedWeights", sm.min_allowed_weights(), (netuid,))
            .await?;
        let subnet_n = self
            .fetch(at, "SubnetworkN", sm.subnetwork_n(), (netuid,))
            .await?;
        let needed = usize::from(min_allowed.min(subnet_n));
        if uids.len() < needed {
            return Err(ChainError::InvalidWeights(format!(
                "{} uids, and the subnet's MinAllowedWeights needs {needed} (MinAllowedWeights \
                 {min_allowed}, {subnet_n} neurons)",
                uids.len()
            )));
        }
        Ok(())
    }

    /// Seals the weights to the drand round of their reveal epoch and commits them; returns
    /// the round and the blocks after the commit by which the reveal is due.
    async fn commit_timelocked(
        &self,
        at: &AtBlock,
        me: &AccountId32,
        uids: Vec<u16>,
        values: Vec<u16>,
    ) -> Result<(u64, u64), ChainError> {
        let netuid = self.settings.netuid;
        let period = self
            .fetch(
                at,
                "RevealPeriodEpochs",
                runtime::storage().subtensor_module().reveal_period_epochs(),
                (netuid,),
            )
            .await?;
        let state = self.epoch_state(at).await?;
        let round = state
            .reveal_round(period, self.settings.block_time.as_secs_f64(), now_secs())
            .map_err(|e| SubtensorError::CommitReveal(e.to_string()))?;
        let payload = WeightsTlockPayload {
            hotkey: me.0.to_vec(),
            uids,
            values,
            version_key: self.settings.version_key,
        };
        let commit = payload
            .seal(round)
            .map_err(|e| SubtensorError::CommitReveal(e.to_string()))?;
        tracing::info!(round, period, "committing timelocked weights");
        self.submit(calls::commit_timelocked_weights(netuid, commit, round))
            .await?;
        // Revealed in the block step of the reveal epoch: due, counted from the commit, by
        // that epoch's first block plus one more epoch (the margin).
        let reveal = state
            .first_reveal_block(period)
            .map_err(|e| SubtensorError::CommitReveal(e.to_string()))?;
        let due_in = reveal.saturating_sub(state.current_block) + u64::from(state.tempo);
        Ok((round, due_in))
    }
}
