//! What a subtensor runtime answers to `SubnetInfoRuntimeApi.get_metagraph`: an
//! `Option<Metagraph>` encoded through the metadata's own type for it (every field the test
//! does not set at its zero value), so that the bytes follow whatever runtime the node
//! serves.
#![allow(dead_code)]

use std::collections::HashMap;

use codec::{Compact, Encode};
use scale_info::{PortableRegistry, TypeDef, TypeDefPrimitive};

/// One uid of the metagraph, in the runtime's units.
#[derive(Debug, Clone)]
pub struct FakeNeuron {
    pub hotkey: [u8; 32],
    pub validator_permit: bool,
    /// Share of the subnet's incentive, over u16::MAX.
    pub incentive: u16,
    /// Alpha staked to the hotkey on this subnet, in rao.
    pub alpha_stake: u64,
    /// Root TAO staked to the hotkey, in rao.
    pub tao_stake: u64,
    /// What the runtime reports as total (alpha plus weighted root TAO, inherited stake).
    pub total_stake: u64,
}

/// `Some(metagraph)` at `block` with `neurons` (uid = position), as `metadata`'s runtime
/// encodes it.
pub fn encode(metadata: &[u8], block: u64, neurons: &[FakeNeuron]) -> Vec<u8> {
    let md = subxt_metadata::Metadata::decode_from(metadata).unwrap();
    let method = md
        .runtime_api_trait_by_name("SubnetInfoRuntimeApi")
        .and_then(|t| t.method_by_name("get_metagraph"))
        .expect("get_metagraph in the metadata");
    let types = md.types();
    let option = types.resolve(method.output_ty()).unwrap();
    let TypeDef::Variant(v) = &option.type_def else {
        panic!("get_metagraph answers an Option")
    };
    let some = v.variants.iter().find(|var| var.name == "Some").unwrap();
    let compacts = |f: fn(&FakeNeuron) -> u64| -> Vec<u8> {
        neurons
            .iter()
            .map(|n| Compact(f(n)))
            .collect::<Vec<_>>()
            .encode()
    };
    let columns: HashMap<&str, Vec<u8>> = HashMap::from([
        ("block", Compact(block).encode()),
        ("num_uids", Compact(neurons.len() as u16).encode()),
        (
            "hotkeys",
            neurons
                .iter()
                .map(|n| n.hotkey)
                .collect::<Vec<_>>()
                .encode(),
        ),
        (
            "coldkeys",
            neurons
                .iter()
                .map(|_| [0u8; 32])
                .collect::<Vec<_>>()
                .encode(),
        ),
        (
            "validator_permit",
            neurons
                .iter()
                .map(|n| n.validator_permit)
                .collect::<Vec<_>>()
                .encode(),
        ),
        (
            "incentives",
            neurons
                .iter()
                .map(|n| Compact(n.incentive))
                .collect::<Vec<_>>()
                .encode(),
        ),
        ("alpha_stake", compacts(|n| n.alpha_stake)),
        ("tao_stake", compacts(|n| n.tao_stake)),
        ("total_stake", compacts(|n| n.total_stake)),
    ]);
    let mut out = vec![some.index];
    let TypeDef::Composite(metagraph) = &types.resolve(some.fields[0].ty.id).unwrap().type_def
    else {
        panic!("the metagraph is a struct")
    };
    for field in &metagraph.fields {
        match field.name.as_deref().and_then(|name| columns.get(name)) {
            Some(bytes) => out.extend(bytes),
            None => zero(types, field.ty.id, &mut out),
        }
    }
    out
}

/// The zero value of type `id`: 0, false, empty, the first variant.
fn zero(types: &PortableRegistry, id: u32, out: &mut Vec<u8>) {
    match &types.resolve(id).unwrap().type_def {
        TypeDef::Composite(c) => c.fields.iter().for_each(|f| zero(types, f.ty.id, out)),
        TypeDef::Tuple(t) => t.fields.iter().for_each(|f| zero(types, f.id, out)),
        TypeDef::Variant(v) => {
            let first = v.variants.iter().min_by_key(|var| var.index).unwrap();
            out.push(first.index);
            first.fields.iter().for_each(|f| zero(types, f.ty.id, out));
        }
        // An empty sequence, bit sequence or string, and a compact 0, are all one 0 byte.
        TypeDef::Sequence(_) | TypeDef::BitSequence(_) | TypeDef::Compact(_) => out.push(0),
        TypeDef::Array(a) => (0..a.len).for_each(|_| zero(types, a.type_param.id, out)),
        TypeDef::Primitive(p) => out.extend(vec![0u8; primitive_width(p)]),
    }
}

fn primitive_width(p: &TypeDefPrimitive) -> usize {
    use TypeDefPrimitive as P;
    match p {
        P::Bool | P::U8 | P::I8 | P::Str => 1,
        P::U16 | P::I16 => 2,
        P::Char | P::U32 | P::I32 => 4,
        P::U64 | P::I64 => 8,
        P::U128 | P::I128 => 16,
        P::U256 | P::I256 => 32,
    }
}
