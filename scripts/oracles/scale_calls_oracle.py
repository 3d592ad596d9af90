#!/usr/bin/env python3
"""The Bittensor SDK's SCALE codec (`bittensor_core.Runtime`, Rust-backed, what the SDK composes
every extrinsic with) as an oracle for the Rust call data and storage decoding.

Reads {"requests": [...]} on stdin; each request names "metadata" (a path to V14/V15
metadata bytes) and one of:
- {"op": "call", "module", "function", "params"} -> {"call": hex}
- {"op": "encode", "type": type string, "value": ...} -> {"data": hex}
- {"op": "decode", "type": type string, "data": hex} -> {"value": ...}
- {"op": "extrinsic", "data": hex} -> {"value": ...}: a signed extrinsic, decoded
- {"op": "signature_payload", "spec_version", "transaction_version", "call": hex, "era":
  {"period", "current"}, "nonce", "tip", "genesis_hash": hex, "era_block_hash": hex}
  -> {"payload": hex}: the bytes a signer signs for that call and those extensions
- {"op": "verify", "message": hex, "signature": hex, "ss58": str} -> {"valid": bool}:
  an sr25519 signature checked by the SDK
- {"op": "metagraph", "netuid", "data": hex} -> {"params": hex, "block", "neurons": [{"uid",
  "hotkey", "validator_permit", "incentive", "total_stake" (rao)}]}: the SDK's own
  metagraph read (`bittensor.metagraph`) on the bytes a node answered to
  `SubnetInfoRuntimeApi.get_metagraph`, and the call parameters it sends for the netuid
Errors come back as {"error": str}.
"""
import json
import sys

import bittensor_core

_runtimes = {}


def runtime(path, spec_version=0, transaction_version=0):
    key = (path, spec_version, transaction_version)
    if key not in _runtimes:
        with open(path, "rb") as f:
            _runtimes[key] = bittensor_core.Runtime(f.read(), spec_version, transaction_version, 42)
    return _runtimes[key]


def unhex(value):
    """Byte arguments travel as {"hex": "..."} in JSON."""
    if isinstance(value, dict) and set(value) == {"hex"}:
        return bytes.fromhex(value["hex"])
    if isinstance(value, dict):
        return {k: unhex(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unhex(v) for v in value]
    return value


def answer(req):
    if req["op"] == "verify":
        message, signature = bytes.fromhex(req["message"]), bytes.fromhex(req["signature"])
        return {"valid": bool(bittensor_core.verify(message, signature, req["ss58"]))}
    rt = runtime(req["metadata"], req.get("spec_version", 0), req.get("transaction_version", 0))
    try:
        if req["op"] == "signature_payload":
            payload = rt.signature_payload(
                bytes.fromhex(req["call"]),
                era=req["era"],
                nonce=req["nonce"],
                tip=req["tip"],
                tip_asset_id=None,
                genesis_hash=bytes.fromhex(req["genesis_hash"]),
                era_block_hash=bytes.fromhex(req["era_block_hash"]),
            )
            return {"payload": bytes(payload).hex()}
        if req["op"] == "metagraph":
            return sdk_metagraph(req)
        if req["op"] == "call":
            call = rt.compose_call(req["module"], req["function"], unhex(req["params"]))
            return {"call": bytes(call).hex()}
        if req["op"] == "encode":
            return {"data": bytes(rt.encode(req["type"], unhex(req["value"]))).hex()}
        if req["op"] == "extrinsic":
            value = rt.decode_extrinsic(bytes.fromhex(req["data"]), True)
            return {"value": json.loads(json.dumps(value, default=lambda b: bytes(b).hex()))}
        if req["op"] == "decode":
            value = rt.decode(req["type"], bytes.fromhex(req["data"]), True)
            return {"value": json.loads(json.dumps(value, default=lambda b: bytes(b).hex()))}
    except Exception as e:
        return {"error": str(e)}
    raise ValueError(f"unknown op {req['op']}")


def sdk_metagraph(req):
    """The SDK's runtime-API encoding and decoding (`bittensor._transport.runtime_api`) and
    its metagraph builder, the path `bittensor.metagraph.fetch` takes after `state_call`."""
    from bittensor import metagraph
    from bittensor._transport import runtime_api
    from bittensor._transport.codec import RuntimeCodec

    with open(req["metadata"], "rb") as f:
        codec = RuntimeCodec(f.read(), spec_version=0, transaction_version=0)
    api, method = "SubnetInfoRuntimeApi", "get_metagraph"
    params = runtime_api.encode_runtime_api_params(codec, api, method, [req["netuid"]])
    graph = runtime_api.decode_runtime_api_result(codec, api, method, bytes.fromhex(req["data"]))
    built = metagraph._build(req["netuid"], graph, {})
    return {
        "params": params,
        "block": built.block,
        "neurons": [
            {
                "uid": n.uid,
                "hotkey": n.hotkey,
                "validator_permit": n.validator_permit,
                "incentive": n.incentive,
                "total_stake": n.total_stake.rao,
            }
            for n in built.neurons
        ],
    }


def main():
    json.dump([answer(r) for r in json.load(sys.stdin)["requests"]], sys.stdout)


if __name__ == "__main__":
    main()
