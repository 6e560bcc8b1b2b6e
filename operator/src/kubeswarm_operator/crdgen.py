"""Generate the CustomResourceDefinitions from the resource models.

The pydantic models in ``kubeswarm_runtime.resources`` are the single source
of the Agent and Swarm shape; this module turns their JSON schema into the
structural OpenAPI schema Kubernetes wants ($refs inlined, optionals
unwrapped, titles dropped, nested objects defaulted so their own defaults
apply) and wraps it in a CRD with subresources, printer columns and names.

    python -m kubeswarm_operator.crdgen [--check] [DIRECTORY]

writes ``agents.kubeswarm.io.yaml`` and ``swarms.kubeswarm.io.yaml`` (default
directory ``crds/``); ``--check`` only reports whether they are up to date.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from kubeswarm_runtime.resources import AGENT_NAME_RULE, GROUP, VERSION, AgentSpec, AgentStatus, SwarmSpec, SwarmStatus
from pydantic import BaseModel

Schema = dict[str, Any]

CATEGORY = "kubeswarm"
# Keys of pydantic's JSON schema that a structural schema does not have.
_DROPPED = {"title", "additionalProperties", "$defs"}


def structural(schema: Schema, defs: dict[str, Schema]) -> Schema:
    """One pydantic JSON-schema node as a structural OpenAPI node."""
    node = dict(schema)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    if "anyOf" in node:
        # Optional[X] is X that may be omitted; Kubernetes has no null branch.
        (branch,) = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        node = {**structural(branch, defs), **node}
    out: Schema = {key: value for key, value in node.items() if key not in _DROPPED}
    if out.get("default", 0) is None:
        del out["default"]
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = structural(node["additionalProperties"], defs)
    if "items" in out:
        out["items"] = structural(out["items"], defs)
    if "properties" in out:
        required = set(out.get("required", []))
        out["properties"] = {name: _defaulted(structural(prop, defs), prop, name in required) for name, prop in out["properties"].items()}
    kind = out.pop("type", "object" if out.get("x-kubernetes-preserve-unknown-fields") else "string")
    return {"type": kind, **out}


def _defaulted(node: Schema, original: Schema, required: bool) -> Schema:
    """Default an optional nested object to its fields' defaults, so an omitted one reads as defaulted.

    The API server validates a default against the CEL rules as written
    (without filling in nested defaults), hence the filled-in value, not {}.
    """
    if node["type"] == "object" and "properties" in node and not required and "default" not in original:
        return {**node, "default": {name: prop["default"] for name, prop in node["properties"].items() if "default" in prop}}
    return node


def model_schema(model: type[BaseModel], *, defaults: bool) -> Schema:
    raw = model.model_json_schema(by_alias=True)
    node = structural(raw, raw.get("$defs", {}))
    return node if defaults else strip_defaults(node)


def strip_defaults(node: Schema) -> Schema:
    """Status is written by the operator only; defaults there would hide what it did not set."""
    out = {key: value for key, value in node.items() if key != "default"}
    if "properties" in out:
        out["properties"] = {name: strip_defaults(prop) for name, prop in out["properties"].items()}
    if "items" in out:
        out["items"] = strip_defaults(out["items"])
    return out


_FIELD_READ = re.compile(r"(has\()?self\.(\w+)")


def _rule_with_defaults(rule: str, defaults: Schema) -> str:
    """``rule`` reading an absent defaulted field as its default (has() tests are left alone)."""

    def read(match: re.Match[str]) -> str:
        name = match.group(2)
        # An object's default cannot stand in for it (CEL types a map literal apart from the object):
        # rules reach into objects only after has() tests.
        if match.group(1) or name not in defaults or isinstance(defaults[name], dict | list):
            return match.group(0)
        return f"(has(self.{name}) ? self.{name} : {json.dumps(defaults[name])})"

    return _FIELD_READ.sub(read, rule)


def partial(node: Schema, *, rules: bool = True) -> Schema:
    """A schema for part of a spec, merged with other parts later: no defaults (they would override what
    it is merged over), and rules that read an absent field as the default it would have had (or, without
    ``rules``, none: the fields and their types only).
    """
    out = strip_defaults({key: value for key, value in node.items() if key not in ("properties", "items", "x-kubernetes-validations")})
    if "properties" in node:
        out["properties"] = {name: partial(prop, rules=rules) for name, prop in node["properties"].items()}
        defaults = {name: prop["default"] for name, prop in node["properties"].items() if "default" in prop}
        if rules and "x-kubernetes-validations" in node:
            out["x-kubernetes-validations"] = [
                {**rule, "rule": _rule_with_defaults(rule["rule"], defaults)} for rule in node["x-kubernetes-validations"]
            ]
    if "items" in node:
        out["items"] = partial(node["items"], rules=rules)
    return out


def resource_schema(spec: type[BaseModel], status: type[BaseModel], description: str, rules: list[Schema]) -> Schema:
    root: Schema = {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {"type": "string", "description": "kubeswarm.io/v1alpha1"},
            "kind": {"type": "string", "description": "The kind of the resource."},
            "metadata": {"type": "object"},
            "spec": _defaulted(model_schema(spec, defaults=True), {}, required=False),
            "status": {**model_schema(status, defaults=False), "description": "Observed state, written by the operator."},
        },
    }
    if rules:
        root["x-kubernetes-validations"] = rules
    return root


def column(name: str, path: str, description: str, kind: str = "string", priority: int = 0) -> Schema:
    entry: Schema = {"name": name, "type": kind, "jsonPath": path, "description": description}
    if priority:
        entry["priority"] = priority
    return entry


AGE = column("Age", ".metadata.creationTimestamp", "Time since creation.", "date")


def crd(kind: str, plural: str, short: str, schema: Schema, columns: list[Schema], subresources: Schema) -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def agent_crd() -> Schema:
    schema = resource_schema(
        AgentSpec,
        AgentStatus,
        "An AI agent: pods running the kubeswarm runtime, talking to its swarm over NATS and serving an MCP endpoint.",
        [AGENT_NAME_RULE],
    )
    columns = [
        column("Swarm", ".spec.swarm", "Swarm the agent belongs to."),
        column("Phase", ".status.phase", "Pending, Running, Degraded, Failed or Idle (scaled to zero)."),
        column("Ready", ".status.ready", "Ready pods of those wanted."),
        column("Endpoint", ".status.endpoint", "URL of the MCP endpoint."),
        AGE,
        column("Role", ".spec.role", "What the agent announces itself as.", priority=1),
        column("Capabilities", ".spec.capabilities", "Task queues it consumes.", priority=1),
        column("Provider", ".spec.model.provider", "Who answers its tasks.", priority=1),
        column("Model", ".spec.model.name", "The model's name.", priority=1),
    ]
    scale = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}
    return crd("Agent", "agents", "ag", schema, columns, {"status": {}, "scale": scale})


def swarm_crd() -> Schema:
    schema = resource_schema(
        SwarmSpec, SwarmStatus, "A swarm of agents sharing a NATS subject prefix, streams and an optional gateway ingress.", []
    )
    # A member's template is an Agent spec checked as the Agent CRD checks one, but merged over
    # spec.defaults: the API server must not fill in defaults that would override those.
    spec = schema["properties"]["spec"]["properties"]
    member = spec["agents"]["items"]["properties"]
    member["template"] = {**partial(member["template"]), "description": member["template"]["description"]}
    # spec.defaults: an Agent spec's fields and types; its rules wait for the merge with each template
    # (a provider there, its key in the templates), which the operator checks and reports.
    spec["defaults"] = {**partial(member["template"], rules=False), "description": spec["defaults"]["description"]}
    columns = [
        column("Phase", ".status.phase", "Pending, Running, Degraded or Failed."),
        column("Ready", ".status.ready", "Member agents that are Ready, of all of them."),
        column("Dead-Letters", ".status.deadLetters", "Dead letters waiting (kubeswarm dlq list).", "integer"),
        AGE,
        column("Endpoint", ".status.endpoint", "External URL of the gateway.", priority=1),
        column("Prefix", ".spec.subjectPrefix", "NATS subject prefix, when set (else ks.<namespace>.<swarm>).", priority=1),
    ]
    return crd("Swarm", "swarms", "sw", schema, columns, {"status": {}})


def rendered() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    header = "# Generated by `make crds` (python -m kubeswarm_operator.crdgen) from kubeswarm_runtime.resources. Do not edit.\n"
    return {
        f"{doc['metadata']['name']}.yaml": header + yaml.safe_dump(doc, sort_keys=False, width=120) for doc in (agent_crd(), swarm_crd())
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubeswarm_operator.crdgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", type=Path, default=Path("crds"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ from what would be written")
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = args.directory / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(str(path))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print(f"out of date (run `make crds`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
