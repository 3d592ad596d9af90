#!/usr/bin/env python3
"""The Bittensor project's own wallet library (bittensor-wallet, PyPI) as an oracle for the
Rust identity code: makes hotkey files, signs and verifies. Prints one JSON object.

  make-hotkey WALLET_PATH NAME HOTKEY   -> {"ss58": ..., "file": ...}
  sign SEED_HEX MESSAGE_HEX             -> {"ss58": ..., "signature": ...}
  verify SS58 MESSAGE_HEX SIGNATURE_HEX -> {"valid": true|false}
"""
import json
import sys

from bittensor_wallet import Keypair, Wallet


def main(argv):
    cmd = argv[1]
    if cmd == "make-hotkey":
        path, name, hotkey = argv[2:5]
        w = Wallet(name=name, hotkey=hotkey, path=path)
        w.create_new_hotkey(use_password=False, overwrite=True, suppress=True)
        out = {"ss58": w.hotkey.ss58_address, "file": w.hotkey_file.path}
    elif cmd == "sign":
        seed, message = argv[2:4]
        kp = Keypair.create_from_seed("0x" + seed)
        out = {"ss58": kp.ss58_address, "signature": bytes(kp.sign(bytes.fromhex(message))).hex()}
    elif cmd == "verify":
        ss58, message, signature = argv[2:5]
        kp = Keypair(ss58_address=ss58)
        out = {"valid": bool(kp.verify(bytes.fromhex(message), bytes.fromhex(signature)))}
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
