#!/usr/bin/env python3
"""The Bittensor SDK's own weight conversion (bittensor on PyPI, `bittensor.intents.weights`)
as an oracle for the Rust `chain::weights`. Reads {"cases": [{"uids": [...], "weights": [...],
"limit": share}]} on stdin; prints, per case, the clipped shares (or the error) and the u16
uids and values that `normalize` makes of the clipped shares.
"""
import json
import sys

from bittensor.intents.weights import clip_to_max_weight, normalize


def main():
    out = []
    for case in json.load(sys.stdin)["cases"]:
        try:
            clipped = clip_to_max_weight(case["weights"], case["limit"])
        except Exception as e:  # the SDK raises BittensorError for all-zero input
            out.append({"error": str(e)})
            continue
        uids, values = normalize(case["uids"], clipped)
        raw_uids, raw_values = normalize(case["uids"], case["weights"])
        out.append({
            "clipped": clipped,
            "uids": uids,
            "values": values,
            "rawUids": raw_uids,
            "rawValues": raw_values,
        })
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
