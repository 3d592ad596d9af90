//! The subnet as the Bittensor SDK reads it: the metagraph in one runtime-API call
//! (`SubnetInfoRuntimeApi.get_metagraph`: hotkeys, permits, incentives and the total stake
//! templar ranks validators by — alpha plus root TAO times the TAO weight, with inherited
//! stake), and every commitment on the subnet in one storage iteration.

use std::collections::{BTreeMap, HashMap};

use subxt::ext::scale_decode::DecodeAsType;
use subxt::utils::AccountId32;
use templar_protocol::chain::{ChainError, Commitment, Metagraph, Neuron};

use super::{RAO, SubtensorChain, corrupt, hotkey_of};
use crate::api::runtime;
use crate::calls;
use crate::client::{AtBlock, METAGRAPH_API, bounded};
use crate::commitment;

/// The fields of the runtime's `Metagraph` named in [`METAGRAPH_API`], matched by name
/// through the live type information: a newtype around the same number decodes as the
/// number.
#[derive(Debug, DecodeAsType)]
#[decode_as_type(crate_path = "::subxt::ext::scale_decode")]
struct MetagraphColumns {
    block: u64,
    hotkeys: Vec<AccountId32>,
    validator_permit: Vec<bool>,
    incentives: Vec<u16>,
    total_stake: Vec<u64>,
}

impl MetagraphColumns {
    /// One neuron per hotkey (uid = position); a column shorter than the hotkeys is the
    /// runtime's inconsistency, read as zero for the uids it lacks.
    fn into_metagraph(self) -> Metagraph {
        let neurons = self
            .hotkeys
            .iter()
            .enumerate()
            .filter_map(|(i, account)| {
                let uid = u16::try_from(i).ok()?;
                Some(Neuron {
                    uid,
                    hotkey: hotkey_of(account),
                    stake: self.total_stake.get(i).copied().unwrap_or(0) as f64 / RAO,
                    validator_permit: self.validator_permit.get(i).copied().unwrap_or(false),
                    incentive: f64::from(self.incentives.get(i).copied().unwrap_or(0))
                        / f64::from(u16::MAX),
                })
            })
            .collect();
        Metagraph {
            block: self.block,
            neurons,
        }
    }
}

impl SubtensorChain {
    /// The metagraph at `at`, in one `state_call`.
    async fn metagraph_columns(&self, at: &AtBlock) -> Result<MetagraphColumns, ChainError> {
        let netuid = self.settings.netuid;
        let (api, method, _) = METAGRAPH_API;
        let what = format!("{api}.{method}");
        let payload =
            subxt::dynamic::runtime_api_call::<_, Option<MetagraphColumns>>(api, method, (netuid,));
        let columns = bounded(
            &what,
            self.settings.rpc_timeout,
            at.runtime_apis().call(payload),
        )
        .await?;
        columns.ok_or_else(|| {
            ChainError::Unsupported(format!("{what}: subnet {netuid} has no metagraph"))
        })
    }

    pub(super) async fn read_metagraph(&self) -> Result<Metagraph, ChainError> {
        let at = self.at_head().await?;
        Ok(self.metagraph_columns(&at).await?.into_metagraph())
    }

    /// The commitment of the hotkey at `uid`, in templar's format.
    pub(super) async fn read_commitment(&self, uid: u16) -> Result<Option<Commitment>, ChainError> {
        let at = self.at_head().await?;
        let address = runtime::storage().subtensor_module().keys();
        let Some(account) = self
            .try_fetch(&at, "Keys", address, (self.settings.netuid, uid))
            .await?
        else {
            return Ok(None);
        };
        let Some(raw) = self.raw_commitment(&at, &account).await? else {
            return Ok(None);
        };
        Ok(templar_format(uid, &raw))
    }

    /// Every registered uid's commitment: the metagraph's hotkeys, then one iteration over
    /// the subnet's `CommitmentOf` (a commitment of a hotkey no longer registered is left
    /// out).
    pub(super) async fn read_commitments(&self) -> Result<BTreeMap<u16, Commitment>, ChainError> {
        let at = self.at_head().await?;
        let uids: HashMap<[u8; 32], u16> = self
            .metagraph_columns(&at)
            .await?
            .hotkeys
            .into_iter()
            .enumerate()
            .filter_map(|(i, account)| Some((account.0, u16::try_from(i).ok()?)))
            .collect();
        let address = runtime::storage().commitments().commitment_of();
        let raws = self
            .each_entry(
                &at,
                "CommitmentOf",
                address,
                (self.settings.netuid,),
                |entry| {
                    let (_, account) = entry
                        .key()
                        .and_then(|k| k.decode())
                        .map_err(corrupt("CommitmentOf"))?;
                    let registration = entry.value().decode().map_err(corrupt("CommitmentOf"))?;
                    let raw = registration.info.fields.0.iter().find_map(calls::raw_bytes);
                    Ok((account, raw))
                },
            )
            .await?;
        Ok(raws
            .into_iter()
            .filter_map(|(account, raw)| {
                let uid = *uids.get(&account.0)?;
                Some((uid, templar_format(uid, &raw?)?))
            })
            .collect())
    }

    /// The first raw field of `account`'s commitment on this subnet.
    pub(super) async fn raw_commitment(
        &self,
        at: &AtBlock,
        account: &AccountId32,
    ) -> Result<Option<Vec<u8>>, ChainError> {
        let address = runtime::storage().commitments().commitment_of();
        let key = (self.settings.netuid, *account);
        let Some(registration) = self.try_fetch(at, "CommitmentOf", address, key).await? else {
            return Ok(None);
        };
        Ok(registration.info.fields.0.iter().find_map(calls::raw_bytes))
    }
}

/// Another subnet's format, or garbage, is that peer's problem: it has no bucket anyone can
/// read, and the rest of the network goes on without it.
fn templar_format(uid: u16, raw: &[u8]) -> Option<Commitment> {
    match commitment::from_raw(raw) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(uid, reason = %e, "commitment is not templar's bucket format; peer left out");
            None
        }
    }
}
