//! Helpers for the oracle tests: the Python oracles, and the committed V16 metadata rewritten
//! as V15 for `bittensor_core` (the Bittensor SDK's Rust-backed SCALE codec reads V14/V15).
#![allow(dead_code)]

pub mod fake_node;
pub mod metadata_variants;
pub mod metagraph_answer;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use codec::{Decode, Encode};
use frame_metadata::{RuntimeMetadata, RuntimeMetadataPrefixed, v14, v15, v16};
use serde_json::{Value, json};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn committed_metadata() -> Vec<u8> {
    std::fs::read(repo_root().join("subtensor/metadata/finney.scale")).unwrap()
}

/// Runs `scripts/oracles/<script>` with `{"requests": [...]}` on stdin.
pub fn oracle(script: &str, requests: Vec<Value>) -> Vec<Value> {
    let mut child = Command::new("python3")
        .arg(repo_root().join("scripts/oracles").join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/setup.sh --pytools puts the venv first on PATH)");
    let input = serde_json::to_vec(&json!({ "requests": requests })).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "oracle {script} failed (Python tools installed by setup.sh --pytools?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The type id of a storage entry's value in the committed metadata (`scale_info::ID` for the
/// SDK's codec).
pub fn storage_value_type(pallet: &str, entry: &str) -> u32 {
    let md = subxt_metadata::Metadata::decode_from(&committed_metadata()).unwrap();
    md.pallet_by_name(pallet)
        .and_then(|p| p.storage())
        .and_then(|s| s.entry_by_name(entry))
        .unwrap_or_else(|| panic!("{pallet}.{entry} in the committed metadata"))
        .value_ty()
}

/// Asks the Bittensor SDK's codec (`scale_calls_oracle.py`) with the committed metadata,
/// rewritten as V15, as each request's "metadata".
pub fn sdk_codec(mut requests: Vec<Value>) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let v15 = dir.path().join("metadata_v15.scale");
    std::fs::write(&v15, as_v15(&committed_metadata())).unwrap();
    for r in &mut requests {
        r["metadata"] = json!(v15);
    }
    oracle("scale_calls_oracle.py", requests)
}

/// The same runtime as V15: V16 only adds deprecation info, view functions, associated types
/// and extension versions, none of which changes how a call or a storage value encodes.
pub fn as_v15(v16_bytes: &[u8]) -> Vec<u8> {
    let prefixed = RuntimeMetadataPrefixed::decode(&mut &v16_bytes[..]).unwrap();
    let RuntimeMetadata::V16(m) = prefixed.1 else {
        panic!("the committed metadata is expected to be V16")
    };
    let pallets = m
        .pallets
        .into_iter()
        .map(|p| v15::PalletMetadata {
            name: p.name,
            storage: p.storage.map(|s| v14::PalletStorageMetadata {
                prefix: s.prefix,
                entries: s
                    .entries
                    .into_iter()
                    .map(|e| v14::StorageEntryMetadata {
                        name: e.name,
                        modifier: e.modifier,
                        ty: e.ty,
                        default: e.default,
                        docs: e.docs,
                    })
                    .collect(),
            }),
            calls: p.calls.map(|c| v14::PalletCallMetadata { ty: c.ty }),
            event: p.event.map(|e| v14::PalletEventMetadata { ty: e.ty }),
            constants: p
                .constants
                .into_iter()
                .map(|c| v14::PalletConstantMetadata {
                    name: c.name,
                    ty: c.ty,
                    value: c.value,
                    docs: c.docs,
                })
                .collect(),
            error: p.error.map(|e| v14::PalletErrorMetadata { ty: e.ty }),
            index: p.index,
            docs: p.docs,
        })
        .collect();
    let apis = m
        .apis
        .into_iter()
        .map(|a| v15::RuntimeApiMetadata {
            name: a.name,
            methods: a
                .methods
                .into_iter()
                .map(|f| v15::RuntimeApiMethodMetadata {
                    name: f.name,
                    inputs: f
                        .inputs
                        .into_iter()
                        .map(|i| v15::RuntimeApiMethodParamMetadata {
                            name: i.name,
                            ty: i.ty,
                        })
                        .collect(),
                    output: f.output,
                    docs: f.docs,
                })
                .collect(),
            docs: a.docs,
        })
        .collect();
    let v16::ExtrinsicMetadata {
        address_ty,
        call_ty,
        signature_ty,
        transaction_extensions,
        ..
    } = m.extrinsic;
    let extrinsic = v15::ExtrinsicMetadata {
        version: 4,
        address_ty,
        call_ty,
        signature_ty,
        // V16 has no tuple type of the extensions; nothing here encodes whole extrinsics.
        extra_ty: call_ty,
        signed_extensions: transaction_extensions
            .into_iter()
            .map(|e| v15::SignedExtensionMetadata {
                identifier: e.identifier,
                ty: e.ty,
                additional_signed: e.implicit,
            })
            .collect(),
    };
    let v15 = v15::RuntimeMetadataV15 {
        types: m.types,
        pallets,
        extrinsic,
        ty: call_ty,
        apis,
        outer_enums: m.outer_enums,
        custom: m.custom,
    };
    RuntimeMetadataPrefixed::from(v15).encode()
}
