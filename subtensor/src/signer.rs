//! The node's hotkey (loaded from a Bittensor wallet) as subxt's extrinsic signer.

use subxt::config::SubstrateConfig;
use subxt::utils::{AccountId32, MultiSignature};
use templar_protocol::identity::Signer as _;
use templar_protocol::identity::sr25519::Sr25519Signer;

pub struct HotkeySigner<'a>(pub &'a Sr25519Signer);

impl subxt::transactions::Signer<SubstrateConfig> for HotkeySigner<'_> {
    fn account_id(&self) -> AccountId32 {
        AccountId32(self.0.public())
    }

    fn sign(&self, signer_payload: &[u8]) -> MultiSignature {
        let signature: [u8; 64] = self
            .0
            .sign(signer_payload)
            .try_into()
            .expect("sr25519 signatures are 64 bytes");
        MultiSignature::Sr25519(signature)
    }
}
