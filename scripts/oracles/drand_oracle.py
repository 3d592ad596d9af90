#!/usr/bin/env python3
"""The Bittensor project's timelock commits (bittensor-drand on PyPI) and an independent SCALE
encoder (scalecodec on PyPI) as oracles for the Rust `templar_subtensor::tlock` and `reveal`.

Reads {"requests": [...]} on stdin, prints one answer per request:
- {"op": "encrypt", "data": hex, "round": r} -> {"ciphertext": hex} (bare, as on chain)
- {"op": "decrypt", "ciphertext": hex, "signature": hex} -> {"data": hex} or {"error": str}
- {"op": "payload", "hotkey": hex, "uids": [...], "values": [...], "version_key": k}
  -> {"scale": hex}: WeightsTlockPayload encoded field by field by scalecodec
- {"op": "hash_commit", "hotkey": hex, "netuid_index", "uids", "values", "salt",
  "version_key"} -> {"hash": hex}: the v2 commit hash from scalecodec and hashlib's BLAKE2b
- {"op": "commit_v2", "uids", "values", "version_key", "state": {...}, "reveal_period",
  "block_time", "hotkey": hex} -> {"ciphertext": hex, "round": r, "now": unix secs}
"""
import json
import sys
import time

import bittensor_drand
from scalecodec.base import RuntimeConfiguration, ScaleBytes
from scalecodec.type_registry import load_type_registry_preset


def scale(type_string, value):
    config = RuntimeConfiguration()
    config.update_type_registry(load_type_registry_preset("legacy"))
    obj = config.create_scale_object(type_string)
    return bytes(obj.encode(value).data)


def user_data(ciphertext, round_):
    """bittensor-drand's own wrapper for `encrypt_at_round` / `decrypt_with_signature`:
    SCALE (encrypted_data: Vec<u8>, reveal_round: u64). The chain's `commit` argument is the
    bare ciphertext inside it."""
    return scale("Vec<u8>", "0x" + ciphertext.hex()) + scale("u64", round_)


def unwrap_user_data(data):
    config = RuntimeConfiguration()
    config.update_type_registry(load_type_registry_preset("legacy"))
    obj = config.create_scale_object("Vec<u8>", ScaleBytes(data))
    return bytes.fromhex(obj.decode(check_remaining=False)[2:])


def answer(req):
    op = req["op"]
    if op == "encrypt":
        wrapped, _ = bittensor_drand.encrypt_at_round(bytes.fromhex(req["data"]), req["round"])
        return {"ciphertext": unwrap_user_data(bytes(wrapped)).hex()}
    if op == "decrypt":
        try:
            wrapped = user_data(bytes.fromhex(req["ciphertext"]), req.get("round", 0))
            data = bittensor_drand.decrypt_with_signature(wrapped, req["signature"])
            return {"data": bytes(data).hex()}
        except Exception as e:  # a wrong round is an error, not a crash
            return {"error": str(e)}
    if op == "payload":
        encoded = (
            scale("Vec<u8>", "0x" + req["hotkey"])
            + scale("Vec<u16>", req["uids"])
            + scale("Vec<u16>", req["values"])
            + scale("u64", req["version_key"])
        )
        return {"scale": encoded.hex()}
    if op == "hash_commit":
        # Subtensor's v2 commit hash: BlakeTwo256 of SCALE(AccountId, u16 netuid index,
        # Vec<u16> uids, Vec<u16> values, Vec<u16> salt, u64 version_key).
        import hashlib

        encoded = (
            bytes.fromhex(req["hotkey"])
            + scale("u16", req["netuid_index"])
            + scale("Vec<u16>", req["uids"])
            + scale("Vec<u16>", req["values"])
            + scale("Vec<u16>", req["salt"])
            + scale("u64", req["version_key"])
        )
        return {"hash": hashlib.blake2b(encoded, digest_size=32).hexdigest()}
    if op == "commit_v2":
        s = req["state"]
        now = time.time()
        ciphertext, round_ = bittensor_drand.get_encrypted_commit_v2(
            req["uids"],
            req["values"],
            req["version_key"],
            s["last_epoch_block"],
            s["pending_epoch_at"],
            s["subnet_epoch_index"],
            s["tempo"],
            s["blocks_since_last_step"],
            s["current_block"],
            req["reveal_period"],
            req["block_time"],
            bytes.fromhex(req["hotkey"]),
        )
        return {"ciphertext": bytes(ciphertext).hex(), "round": round_, "now": now}
    raise ValueError(f"unknown op {op}")


def main():
    json.dump([answer(r) for r in json.load(sys.stdin)["requests"]], sys.stdout)


if __name__ == "__main__":
    main()
