#!/usr/bin/env python3
"""Render or lint a Helm chart with Helm's own engine (helm-python-sdk: the Go SDK through
its C ABI; no helm binary). Used by the chart tests; prints JSON.

  helm_chart.py render CHART [VALUES.yaml] [--namespace NS] [--name RELEASE]
      -> {"manifests": {template path: rendered text}, "crds": [{name, data}]}
  helm_chart.py lint CHART [VALUES.yaml]
      -> Helm's lint report (strict, for the Kubernetes version the tests validate against)
  helm_chart.py leaves CHART [VALUES.yaml]
      -> {"checked": [leaf paths], "ignored": [leaf paths], "refused": {path: error}}: each
         leaf of the chart's values.yaml (over VALUES.yaml) changed alone; a leaf is ignored
         when the render with its change equals the render without it
"""
import argparse
import copy
import json
import sys

import helm_python as helm

KUBE_VERSION = "v1.34.0"


def values_file(path):
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return helm.values_from_yaml(f.read())


def leaves(tree, path=()):
    """(path, value) of every leaf: scalars, nulls and empty or scalar-only lists and maps."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from leaves(value, path + (key,))
    else:
        yield path, tree


def schema_at(schema, path):
    for key in path:
        schema = (schema or {}).get("properties", {}).get(key, {})
    return schema or {}


def changed(value, schema):
    """A different value of the same kind that the chart's schema admits."""
    if "enum" in schema:
        return next(v for v in schema["enum"] if v != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x" if value else "x"
    if value is None:
        return 1
    if isinstance(value, list) and schema.get("items", {}).get("type") == "string":
        return value + ["x"]
    if isinstance(value, list):
        return value + [copy.deepcopy(value[-1]) if value else {"key": "k", "operator": "Exists"}]
    if isinstance(value, dict):
        return {"k": "v"}
    raise ValueError(f"no change for {value!r}")


def merged(base, over):
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_at(tree, path, value):
    tree = copy.deepcopy(tree)
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


def leaf_report(chart_path, values, namespace, name):
    import yaml

    with open(f"{chart_path}/values.yaml", encoding="utf-8") as f:
        defaults = yaml.safe_load(f)
    with open(f"{chart_path}/values.schema.json", encoding="utf-8") as f:
        schema = json.load(f)
    chart = helm.Chart.load(chart_path)
    base = merged(defaults, values)

    def render(v):
        chart.validate_schema(v)
        return chart.render(v, name=name, namespace=namespace, is_install=True)

    before = render(base)
    report = {"checked": [], "ignored": [], "refused": {}}
    for path, value in leaves(base):
        dotted = ".".join(path)
        try:
            after = render(set_at(base, path, changed(value, schema_at(schema, path))))
        except helm.HelmError as e:
            report["refused"][dotted] = str(e)
            continue
        report["checked" if after != before else "ignored"].append(dotted)
    return report


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["render", "lint", "leaves"])
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
    if args.command == "leaves":
        json.dump(leaf_report(args.chart, values, args.namespace, args.name), sys.stdout)
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
