#!/usr/bin/env python3
"""Validate TemplarMiner / TemplarValidator documents against the openAPIV3Schema of the
checked-in CRDs, strictly: an unknown field is an error (as `kubectl apply
--validate=strict` makes it), except under x-kubernetes-preserve-unknown-fields. CEL rules
(x-kubernetes-validations) are the API server's to run; the operator's `validate` covers the
same semantics in the Rust tests.

  validate_custom_resources.py CRDS.yaml FILE.yaml...
Prints one line per custom resource ("<file> <kind>/<name> passed") and exits 1 on any error.
"""
import sys

import jsonschema
import yaml


def strict(schema):
    """A copy of a structural schema that rejects unknown fields and understands the
    Kubernetes extensions jsonschema does not know."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {k: strict(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = strict(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict(v) for v in value]
        elif key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    # nullable admits null whatever else the field says (type, enum, int-or-string).
    if schema.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = out["enum"] + [None]
        if "anyOf" in out:
            out["anyOf"] = out["anyOf"] + [{"type": "null"}]
    out.pop("nullable", None)
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def main():
    crd_path, files = sys.argv[1], sys.argv[2:]
    schemas = {}
    with open(crd_path, encoding="utf-8") as f:
        for crd in yaml.safe_load_all(f):
            if not crd:
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                # metadata is the API server's ObjectMeta: checked by it, not by the CRD.
                props = schema.setdefault("properties", {})
                props["metadata"] = {"type": "object"}
                props.setdefault("apiVersion", {"type": "string"})
                props.setdefault("kind", {"type": "string"})
                schemas[(f"{group}/{version['name']}", kind)] = schema
    failed = 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key not in schemas:
                continue
            name = doc.get("metadata", {}).get("name", "?")
            errors = sorted(
                jsonschema.Draft7Validator(schemas[key]).iter_errors(doc), key=lambda e: e.path
            )
            if errors:
                failed += 1
                for e in errors:
                    where = "/".join(str(p) for p in e.absolute_path)
                    print(f"{path} {key[1]}/{name} FAILED at {where}: {e.message}")
            else:
                print(f"{path} {key[1]}/{name} passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
