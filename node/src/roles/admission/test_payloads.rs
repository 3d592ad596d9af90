//! Hand-built payloads for the unit tests of the checks on a window's payloads.

use templar_protocol::Hotkey;
use templar_protocol::payload::{BlockLayout, ParamUpdate, Payload, PayloadMeta, Values};

/// One 8x16 tensor: two blocks of 8x8, k = 8.
pub fn two_block_layout() -> Vec<BlockLayout> {
    vec![BlockLayout::new(&[8, 16], 8, 8)]
}

/// A payload of window 1 from uid (hotkey `m<uid>`) with one tensor of f32 values.
pub fn payload(uid: u16, indices: Vec<u16>, values: Vec<f32>) -> Payload {
    Payload {
        meta: PayloadMeta {
            window: 1,
            uid,
            hotkey: Hotkey::parse(&format!("m{uid}")).unwrap(),
            hparams_digest: String::new(),
            model_sample: Vec::new(),
        },
        params: vec![ParamUpdate {
            indices,
            values: Values::F32(values),
        }],
    }
}
