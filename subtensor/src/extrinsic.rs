//! Sending one extrinsic: signed with the node's hotkey, submitted, watched until it is in a
//! block (bounded), and a failed dispatch turned into the chain's named error.

use subxt::client::OnlineClientAtBlock;
use subxt::config::{SubstrateConfig, SubstrateExtrinsicParamsBuilder};
use templar_protocol::chain::ChainError;
use templar_protocol::identity::Signer as _;
use templar_protocol::identity::sr25519::Sr25519Signer;

use crate::chain::SubtensorSettings;
use crate::errors::{module_error, pool_error, pool_error_of};
use crate::signer::HotkeySigner;

/// What became of an extrinsic: whether it is in a block (its nonce used, whatever its
/// dispatch did), and the outcome.
pub struct Sent {
    pub in_block: bool,
    pub result: Result<(), ChainError>,
}

impl Sent {
    fn before_a_block(err: ChainError) -> Self {
        Self {
            in_block: false,
            result: Err(err),
        }
    }
}

/// Signs with `nonce` (mortal from `at`, the best block), submits and waits until the
/// extrinsic is in a block (bounded); a failed dispatch comes back as the chain's named
/// error.
pub async fn submit(
    at: &OnlineClientAtBlock<SubstrateConfig>,
    call: impl subxt::transactions::Payload,
    signer: &Sr25519Signer,
    settings: &SubtensorSettings,
    nonce: u64,
) -> Sent {
    let name = format!("{}.{}", call.pallet_name(), call.call_name());
    let hotkey = signer.hotkey().clone();
    let signer = HotkeySigner(signer);
    let params = SubstrateExtrinsicParamsBuilder::<SubstrateConfig>::new()
        .nonce(nonce)
        .build();
    let submitted = tokio::time::timeout(
        settings.rpc_timeout,
        at.transactions()
            .sign_and_submit_then_watch(&call, &signer, params),
    )
    .await;
    let progress = match submitted {
        Ok(Ok(progress)) => progress,
        // The pool refuses before dispatch (rate limit, registration, stake) with a code
        // in the RPC error's data.
        Ok(Err(e)) => {
            return Sent::before_a_block(
                pool_error_of(&e, &hotkey)
                    .unwrap_or_else(|| ChainError::Rpc(format!("submitting {name}: {e}"))),
            );
        }
        Err(_) => {
            return Sent::before_a_block(ChainError::Timeout {
                what: format!("submitting {name}"),
                after: settings.rpc_timeout,
            });
        }
    };
    let included = tokio::time::timeout(settings.inclusion_timeout, async move {
        let mut progress = progress;
        while let Some(status) = progress.next().await {
            use subxt::transactions::TransactionStatus as S;
            let status = match status {
                Ok(status) => status,
                Err(e) => return Sent::before_a_block(ChainError::Rpc(format!("{name}: {e}"))),
            };
            match status {
                S::InBestBlock(block) | S::InFinalizedBlock(block) => {
                    let result = match block.wait_for_success().await {
                        Ok(_) => Ok(()),
                        Err(subxt::error::TransactionEventsError::ExtrinsicFailed(
                            subxt::error::DispatchError::Module(e),
                        )) => Err(match e.details() {
                            Ok(d) => module_error(
                                d.pallet.name(),
                                &d.variant.name,
                                &d.variant.docs.join(" "),
                                &hotkey,
                            ),
                            Err(_) => ChainError::Rejected {
                                error: e.to_string(),
                                reason: String::new(),
                            },
                        }),
                        Err(e) => Err(ChainError::Rejected {
                            error: name.clone(),
                            reason: e.to_string(),
                        }),
                    };
                    return Sent {
                        in_block: true,
                        result,
                    };
                }
                S::Invalid { message } | S::Dropped { message } | S::Error { message } => {
                    return Sent::before_a_block(pool_error(&message, &hotkey).unwrap_or(
                        ChainError::Rejected {
                            error: name.clone(),
                            reason: message,
                        },
                    ));
                }
                _ => {}
            }
        }
        Sent::before_a_block(ChainError::Rpc(format!(
            "{name}: the status stream ended before inclusion"
        )))
    })
    .await;
    included.unwrap_or_else(|_| {
        Sent::before_a_block(ChainError::Timeout {
            what: "waiting for the extrinsic to be included".into(),
            after: settings.inclusion_timeout,
        })
    })
}
