//! When a commit is revealed: the first block of the epoch `RevealPeriodEpochs` after the one
//! the commit lands in, predicted from the subnet's epoch state (chain storage since mid-2026:
//! an epoch runs when `Tempo` blocks have passed since `LastEpochBlock`, or at an
//! owner-triggered `PendingEpochAt`), then turned into the drand round the chain will have
//! by then. The old `(block + netuid + 1) / (tempo + 1)` formula is no longer exact.

use crate::tlock::round_by;

/// Longest tempo the chain allows; an epoch is forced once this many blocks pass without one.
pub const MAX_TEMPO: u64 = 50_400;
/// The commit is included in the block after the head it was built on.
pub const INCLUSION_OFFSET: u64 = 1;
/// Aim for the pulse a few blocks into the reveal epoch, so it is surely ingested by then.
pub const SECURITY_BLOCKS: u64 = 3;

/// The subnet's epoch state at the head block (storage of `SubtensorModule`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochState {
    pub current_block: u64,
    pub tempo: u16,
    pub last_epoch_block: u64,
    /// 0 when no owner-triggered epoch is pending.
    pub pending_epoch_at: u64,
    pub subnet_epoch_index: u64,
    pub blocks_since_last_step: u64,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RevealError {
    #[error("the subnet's tempo is 0: it runs no epochs, so a commit would never be revealed")]
    NoEpochs,
    #[error("no reveal epoch within {0} blocks of the head")]
    TooFar(u64),
}

impl EpochState {
    /// Whether block `block`'s coinbase runs an epoch, seen from the state before it.
    fn runs_epoch_at(&self, block: u64) -> bool {
        if self.tempo == 0 {
            return false;
        }
        (self.pending_epoch_at > 0 && block >= self.pending_epoch_at)
            || self.blocks_since_last_step > MAX_TEMPO
            || block.saturating_sub(self.last_epoch_block) >= u64::from(self.tempo)
    }

    /// The epoch index a call in block `block` sees (before that block's coinbase).
    fn epoch_seen_at(&self, block: u64) -> u64 {
        self.subnet_epoch_index + u64::from(self.runs_epoch_at(block))
    }

    /// The state after block `block`'s coinbase.
    fn after_block(&self, block: u64) -> Self {
        let mut next = self.clone();
        next.current_block = block;
        next.blocks_since_last_step += 1;
        if next.runs_epoch_at(block) {
            next.last_epoch_block = block;
            next.pending_epoch_at = 0;
            next.subnet_epoch_index += 1;
            next.blocks_since_last_step = 0;
        }
        next
    }

    /// The state of a runtime without the stateful epoch model: epochs every `tempo + 1`
    /// blocks, at blocks where `(block + netuid + 1) % (tempo + 1) == 0`.
    pub fn fixed_schedule(
        current_block: u64,
        tempo: u16,
        netuid: u16,
        blocks_since_last_step: u64,
    ) -> Self {
        let period = u64::from(tempo) + 1;
        let offset = u64::from(netuid) + 1;
        let epoch = (current_block + offset) / period;
        Self {
            current_block,
            // An epoch every tempo + 1 blocks: the last ran one block after the epoch start.
            tempo: tempo.saturating_add(1),
            last_epoch_block: (epoch * period).saturating_sub(offset),
            pending_epoch_at: 0,
            subnet_epoch_index: epoch,
            blocks_since_last_step: blocks_since_last_step.min(MAX_TEMPO),
        }
    }

    /// The first block whose epoch is `reveal_period_epochs` after the commit's.
    pub fn first_reveal_block(&self, reveal_period_epochs: u64) -> Result<u64, RevealError> {
        if self.tempo == 0 {
            return Err(RevealError::NoEpochs);
        }
        let inclusion = self.current_block + INCLUSION_OFFSET;
        let mut state = self.clone();
        for block in self.current_block + 1..inclusion {
            state = state.after_block(block);
        }
        let target = state.epoch_seen_at(inclusion) + reveal_period_epochs;
        let budget = reveal_period_epochs
            .saturating_add(1)
            .saturating_mul(MAX_TEMPO);
        for block in inclusion..=inclusion.saturating_add(budget) {
            if state.epoch_seen_at(block) == target {
                return Ok(block);
            }
            state = state.after_block(block);
        }
        Err(RevealError::TooFar(budget))
    }

    /// The drand round to encrypt to: the pulse due a few blocks into the reveal epoch, from
    /// `now_unix_secs` and the chain's block time.
    pub fn reveal_round(
        &self,
        reveal_period_epochs: u64,
        block_secs: f64,
        now_unix_secs: f64,
    ) -> Result<u64, RevealError> {
        let ingest_block = self.first_reveal_block(reveal_period_epochs)? + SECURITY_BLOCKS;
        let blocks_ahead = ingest_block.saturating_sub(self.current_block);
        Ok(round_by(now_unix_secs + blocks_ahead as f64 * block_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(current_block: u64, tempo: u16, last_epoch_block: u64) -> EpochState {
        EpochState {
            current_block,
            tempo,
            last_epoch_block,
            pending_epoch_at: 0,
            subnet_epoch_index: 7,
            blocks_since_last_step: current_block - last_epoch_block,
        }
    }

    #[test]
    fn one_epoch_ahead_is_the_next_epoch_start() {
        // Epochs at 100, 110, 120, ...: a commit in 106 is revealed from 110 on.
        assert_eq!(state(105, 10, 100).first_reveal_block(1), Ok(110));
        assert_eq!(state(105, 10, 100).first_reveal_block(2), Ok(120));
        // A commit landing in the epoch block itself already sees the new epoch.
        assert_eq!(state(109, 10, 100).first_reveal_block(1), Ok(120));
    }

    #[test]
    fn a_pending_owner_epoch_comes_first() {
        let mut s = state(105, 100, 100);
        s.pending_epoch_at = 150;
        assert_eq!(s.first_reveal_block(1), Ok(150));
        assert_eq!(s.first_reveal_block(2), Ok(250));
    }

    #[test]
    fn the_fixed_schedule_reveals_where_the_old_formula_does() {
        // Epochs at (block + netuid + 1) % (tempo + 1) == 0; reveal in the first block of the
        // epoch `period` after the commit's. Where the commit lands in an epoch's first block
        // (the block after the head), it belongs to that epoch, one later than the formula
        // that reads the head's epoch says.
        for (tempo, netuid) in [(360u16, 3u16), (99, 0), (10, 7)] {
            let (len, off) = (u64::from(tempo) + 1, u64::from(netuid) + 1);
            for head in [1_000u64, 5_000, 77_777] {
                for period in [1u64, 2, 3] {
                    let lands_on_epoch_start = (head + 1 + off) % len == 0;
                    let epoch = (head + off) / len + u64::from(lands_on_epoch_start);
                    let expected = (epoch + period) * len - off;
                    let state = EpochState::fixed_schedule(head, tempo, netuid, 0);
                    assert_eq!(
                        state.first_reveal_block(period),
                        Ok(expected),
                        "tempo {tempo} netuid {netuid} head {head} period {period}"
                    );
                }
            }
        }
    }

    #[test]
    fn no_tempo_no_reveal() {
        assert_eq!(
            state(5, 0, 0).first_reveal_block(1),
            Err(RevealError::NoEpochs)
        );
    }
}
