#!/usr/bin/env python3
"""Render or lint a Helm chart with Helm's own engine (helm-python-sdk: the Go SDK through
its C ABI; no helm binary). Used by the chart tests; prints JSON.

  helm_chart.py render CHART [VALUES.yaml] [--namespace NS] [--name RELEASE]
      -> {"manifests": {template path: rendered text}, "crds": [{name, data}]}
  helm_chart.py lint CHART [VALUES.yaml]
      -> Helm's lint report (strict, for the Kubernetes version the tests validate against)
"""
import argparse
import json
import sys

import helm_python as helm

KUBE_VERSION = "v1.34.0"


def values_file(path):
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return helm.values_from_yaml(f.read())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["render", "lint"])
    parser.add_argument("chart")
    parser.add_argument("values", nargs="?")
    parser.add_argument("--namespace", default="templar-system")
    parser.add_argument("--name", default="templar")
    args = parser.parse_args()
    values = values_file(args.values)
    if args.command == "lint":
        report = helm.lint(
            args.chart, values, strict=True, namespace=args.namespace, kube_version=KUBE_VERSION
        )
        json.dump(report, sys.stdout)
        return
    chart = helm.Chart.load(args.chart)
    chart.validate_schema(values)
    manifests = chart.render(values, name=args.name, namespace=args.namespace, is_install=True)
    json.dump({"manifests": manifests, "crds": chart.crds}, sys.stdout)


if __name__ == "__main__":
    try:
        main()
    except helm.HelmError as e:
        print(f"helm: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
