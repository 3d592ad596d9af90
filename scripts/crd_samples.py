#!/usr/bin/env python3
"""Objects generated from the CRDs' own openAPIV3Schema, for the test that every object the
API server admits parses into the operator's Rust types (and back). For each kind: the
minimal object (required fields only), the full one (every field, a bounded depth), and one
object per field of the spec tree with that field at an edge: null where the schema says
nullable, each enum value, the minimum and maximum of a bounded integer, both forms of an
int-or-string, an empty and a one-item list or map.

  crd_samples.py CRDS.yaml
Prints a JSON list of {"kind", "variant", "object"}.
"""
import copy
import json
import sys

import yaml

MAX_DEPTH = 12
FORMAT_BOUNDS = {
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint16": (0, 2**16 - 1),
    "uint64": (0, 2**64 - 1),
}


def bounds(schema):
    """An integer field's bounds, as integers (the CRD YAML writes them as 0.0)."""
    low, high = FORMAT_BOUNDS.get(schema.get("format"), (None, None))
    low, high = schema.get("minimum", low), schema.get("maximum", high)
    return (None if low is None else int(low)), (None if high is None else int(high))


def sample(schema, full, depth=0):
    """A value the schema admits: required fields only, or (`full`) every field."""
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("x-kubernetes-int-or-string"):
        return 1
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        out = {}
        for key, sub in props.items():
            if key in required or (full and depth < MAX_DEPTH):
                out[key] = sample(sub, full, depth + 1)
        extra = schema.get("additionalProperties")
        if not props and isinstance(extra, dict) and full and depth < MAX_DEPTH:
            out["k"] = sample(extra, full, depth + 1)
        return out
    if kind == "array":
        count = max(schema.get("minItems", 0), 1 if full and depth < MAX_DEPTH else 0)
        return [sample(schema.get("items", {}), full, depth + 1) for _ in range(count)]
    if kind == "string":
        return "a" * max(1, schema.get("minLength", 1))
    if kind == "integer":
        low, high = bounds(schema)
        return low if low is not None and low > 0 else (1 if high is None or high >= 1 else high)
    if kind == "number":
        return 0.5
    if kind == "boolean":
        return full
    return {}


def edges(schema):
    """(label, value) of the edge values of one field."""
    out = []
    if schema.get("nullable"):
        out.append(("null", None))
    if "enum" in schema:
        out += [(f"enum={v}", v) for v in schema["enum"]]
    elif schema.get("x-kubernetes-int-or-string"):
        out += [("int", 0), ("string", "25%")]
    elif schema.get("type") == "integer":
        low, high = bounds(schema)
        out += [(f"min={v}", v) for v in [low] if v is not None]
        out += [(f"max={v}", v) for v in [high] if v is not None]
    elif schema.get("type") == "array":
        out += [("empty", []), ("one", [sample(schema.get("items", {}), False)])]
    elif schema.get("type") == "object" and not schema.get("properties"):
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            out += [("empty", {}), ("one", {"k": sample(extra, False)})]
    elif schema.get("type") == "boolean":
        out += [("true", True), ("false", False)]
    return out


def fields(schema, path=()):
    """(path, schema) of every field under `schema`, through objects and list items."""
    for key, sub in schema.get("properties", {}).items():
        yield path + (key,), sub
        if len(path) < MAX_DEPTH:
            yield from fields(sub, path + (key,))
    items = schema.get("items")
    if isinstance(items, dict) and items.get("properties") and len(path) < MAX_DEPTH:
        yield from fields(items, path + (0,))


def schema_at(schema, path):
    for key in path:
        schema = schema["items"] if key == 0 else schema["properties"][key]
    return schema


def with_value(base, spec_schema, path, value):
    """`base` with the field at `path` set, its missing parents made minimal."""
    obj = copy.deepcopy(base)
    node, node_schema = obj, spec_schema
    for key in path[:-1]:
        child_schema = node_schema["items"] if key == 0 else node_schema["properties"][key]
        if key == 0:
            if not node:
                node.append(sample(child_schema, False))
            node = node[0]
        else:
            if not isinstance(node.get(key), (dict, list)):
                node[key] = [] if child_schema.get("type") == "array" else sample(child_schema, False)
            node = node[key]
        node_schema = child_schema
    last = path[-1]
    if last == 0:
        node[:] = [value]
    else:
        node[last] = value
    return obj


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        crds = [d for d in yaml.safe_load_all(f) if d]
    out = []
    for crd in crds:
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        version = crd["spec"]["versions"][0]
        spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]

        def resource(spec, variant):
            out.append({
                "kind": kind,
                "variant": variant,
                "object": {
                    "apiVersion": f"{group}/{version['name']}",
                    "kind": kind,
                    "metadata": {"name": "sample", "namespace": "train"},
                    "spec": spec,
                },
            })

        minimal = sample(spec_schema, False)
        resource(minimal, "minimal")
        resource(sample(spec_schema, True), "full")
        for path, field in fields(spec_schema):
            for label, value in edges(field):
                dotted = ".".join(str(p) for p in path)
                resource(with_value(minimal, spec_schema, path, value), f"{dotted}:{label}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
