"""Agent and Swarm manifests read from files, checked by the cluster's rules, errors in the manifest's own words.

Local mode (``kubeswarm up``) reads the YAML a user applies to a cluster; what the API server
would refuse is refused here, and each problem is named by its path in the manifest
(``spec.mcp.auth``), never by a model class.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .render import member_agent
from .resources import GROUP, Agent, AgentSpec, Swarm

MANIFEST_SUFFIXES = (".yaml", ".yml")
KINDS: dict[str, type[BaseModel]] = {"Agent": Agent, "Swarm": Swarm}
Loc = tuple[str | int, ...]  # where pydantic found a problem: field names (camelCase) and list indexes


class ManifestError(ValueError):
    """A manifest is invalid; the message names the file, the object and the field."""


@dataclass(frozen=True)
class Manifests:
    agents: list[Agent]
    swarms: dict[str, Swarm]

    def swarm_of(self, agent: Agent) -> Swarm | None:
        return self.swarms.get(agent.spec.swarm)


def load_manifests(paths: list[Path]) -> Manifests:
    """Every Agent and Swarm in ``paths`` (files, or directories read recursively), or a ManifestError naming all problems."""
    agents: list[Agent] = []
    swarms: dict[str, Swarm] = {}
    problems: list[str] = []
    for file in _files(paths):
        try:
            documents = list(yaml.safe_load_all(file.read_text()))
        except yaml.YAMLError as exc:
            raise ManifestError(f"{file}: not valid YAML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{file}: cannot be read: {exc}") from None
        for index, document in enumerate(d for d in documents if d is not None):
            try:
                found = _read_document(document, index)
            except ManifestError as exc:
                problems.append(f"{file}: {exc}")
                continue
            if isinstance(found, Swarm):
                swarms[found.metadata.name] = found
                members, member_problems = _members(found)
                agents += members
                problems += [f"{file}: Swarm/{found.metadata.name}: {p}" for p in member_problems]
            elif isinstance(found, Agent):
                agents.append(found)
    problems += _duplicate_agents(agents)
    if problems:
        raise ManifestError("\n".join(problems))
    if not agents:
        raise ManifestError(f"no Agent or Swarm found in {', '.join(map(str, paths))}")
    return Manifests(agents=agents, swarms=swarms)


def _files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError(f"{path}: no such file or directory")
    return files


def _read_document(document: Any, index: int) -> BaseModel | None:
    """The Agent or Swarm a document holds; None for another API group's object (a Secret beside the agents, say)."""
    if not isinstance(document, dict):
        raise ManifestError(f"document {index + 1}: expected an object with apiVersion, kind and metadata, got {_shown(document)}")
    kind, api_version = document.get("kind"), document.get("apiVersion")
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    label = f"{kind or 'document ' + str(index + 1)}/{name or '?'}"
    if isinstance(api_version, str) and api_version.rpartition("/")[0] != GROUP:
        return None  # not ours: kubectl would apply it, local mode has nothing to run for it
    if kind not in KINDS:
        valid = ", ".join(KINDS)
        what = f'kind "{kind}" is not a kubeswarm kind' if kind else "kind is missing"
        raise ManifestError(f"{label}: {what}; the kinds of {GROUP} are {valid}")
    try:
        return KINDS[kind].model_validate(document)
    except ValidationError as exc:
        raise ManifestError(f"{label}: " + "; ".join(describe_errors(exc, KINDS[kind]))) from None


def _members(swarm: Swarm) -> tuple[list[Agent], list[str]]:
    """A Swarm's member Agents, each template checked as an Agent spec (merged over spec.defaults, as the operator does)."""
    agents: list[Agent] = []
    problems: list[str] = []
    for index, member in enumerate(swarm.spec.agents):
        try:
            agents.append(member_agent(swarm, member))
        except ValidationError as exc:
            problems += describe_errors(exc, AgentSpec, under=member_source(swarm, index))
    return agents, problems


def member_source(swarm: Swarm, index: int) -> Callable[[Loc], str]:
    """Where in the Swarm a field of member ``index``'s merged spec was written: its template, spec.defaults, or the member.

    For ``describe_errors(error, AgentSpec, under=...)`` of a member that fails as an Agent (local mode and the operator).
    """
    member = swarm.spec.agents[index]

    def source(loc: Loc) -> str:
        top = loc[0] if loc else None
        written = {AgentSpec.model_fields[name].alias or name for name in member.template.model_fields_set}
        if top in written:
            return f"spec.agents[{index}].template"
        if top in swarm.spec.defaults:
            return "spec.defaults"
        return f"spec.agents[{index}]"

    return source


def _duplicate_agents(agents: list[Agent]) -> list[str]:
    # A cluster would let the later manifest replace the earlier; local mode would run both under one name.
    seen: set[tuple[str, str]] = set()
    problems = []
    for agent in agents:
        key = (agent.metadata.namespace, agent.metadata.name)
        if key in seen:
            problems.append(f"Agent {agent.metadata.name} is defined twice (as an Agent or a Swarm member); names must be unique")
        seen.add(key)
    return problems


def describe_errors(exc: ValidationError, model: type[BaseModel], *, under: Callable[[Loc], str] | None = None) -> list[str]:
    """One line per problem: the manifest path (``spec.agents[0].name``) and what is expected there, in the manifest's words.

    ``under`` names where ``model`` sits in the manifest, given an error's location (default: at the top).
    """
    problems = []
    for error in exc.errors():
        path = manifest_path(error["loc"], under(error["loc"]) if under else "")
        problems.append(f"{path}: {_expected(error, model)}" if path else _expected(error, model))
    return problems


def manifest_path(loc: Loc, base: str = "") -> str:
    text = base
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _expected(error: ErrorDetails, model: type[BaseModel]) -> str:
    kind, value = error["type"], error.get("input")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        target = _model_at(model, error["loc"])
        shape = f"an object like {_example(target, value)}" if target else "an object"
        return f"expected {shape}, got {_shown(value)}"
    if kind == "extra_forbidden":
        field = str(error["loc"][-1])
        parent = _model_at(model, error["loc"][:-1])
        known = [f.alias or name for name, f in parent.model_fields.items()] if parent else []
        close = difflib.get_close_matches(field, known, n=1)
        hint = f'; did you mean "{close[0]}"?' if close else (f"; known fields: {', '.join(known)}" if known else "")
        return f'unknown field "{field}"{hint}'
    if kind == "missing":
        return "required field is missing"
    if kind == "list_type":
        return f"expected a list, got {_shown(value)}"
    message = error["msg"]
    return message.removeprefix("Value error, ").replace("Input should be", "should be")


def _shown(value: Any) -> str:
    text = "null" if value is None else (f'"{value}"' if isinstance(value, str) else str(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc`` (camelCase names, list indexes), or None."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next((f for name, f in current.model_fields.items() if part in (name, f.alias)), None)
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """The model inside ``X | None`` or ``list[X]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation


def _example(model: type[BaseModel], value: Any) -> str:
    """``{mode: jwt}`` for McpAuth given "jwt": the field a bare value most likely meant, else the model's first field."""
    fields = [(f.alias or name, f.annotation) for name, f in model.model_fields.items()]
    for alias, annotation in fields:
        if isinstance(annotation, type) and issubclass(annotation, Enum) and value in {m.value for m in annotation}:
            return f"{{{alias}: {value}}}"
        if typing.get_origin(annotation) is typing.Literal and value in typing.get_args(annotation):
            return f"{{{alias}: {value}}}"
    alias, _ = fields[0]
    return f"{{{alias}: ...}}"
