"""YAML configs with ``-o Section.key=value`` overrides, validated before any work starts.

A stage describes its config as a pydantic model (see ``ernie_tiny/distill/schema.py``).
Every error names the file, the line and the dotted key, e.g.::

    configs/demo/distill.yaml:14: Distill.relation_heads = 10: must divide both hidden sizes ...

This module does not import Paddle, so tools can read their config (and set thread counts)
before Paddle is imported.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

import pydantic
import yaml

from ernie_tiny.errors import InputError
from ernie_tiny.files import write_text_atomically
from ernie_tiny.text_files import read_text

T = TypeVar("T", bound=pydantic.BaseModel)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` (exponent, no dot) as a float, as YAML 1.2 does;
    plain PyYAML (YAML 1.1) reads it as a string, which the strict schema then rejects."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


@dataclass(frozen=True)
class Plan:
    """What a multi-stage run (pipeline, experiment) tells a stage's validation: the directories
    its earlier steps will write (a path in or under one counts as an existing model directory)
    and the model sizes expected there. Passed explicitly as pydantic's validation context
    (``load_config(..., plan=...)``); a config validated without one checks every path on disk."""

    directories: Tuple[str, ...] = ()
    sizes: Tuple[Tuple[str, Tuple[Tuple[str, int], ...]], ...] = ()

    @classmethod
    def of(cls, directories) -> "Plan":
        return cls(tuple(os.path.abspath(d) for d in directories))

    def has(self, path: str) -> bool:
        """True if an earlier step will write ``path``."""
        path = os.path.abspath(path)
        return any(path == d or path.startswith(d + os.sep) for d in self.directories)

    def with_model_sizes(self, path: str, sizes: Dict[str, int]) -> "Plan":
        """This plan, also saying that the model an earlier step writes at ``path`` has ``sizes``."""
        if not sizes or not self.has(path):
            return self
        return replace(self, sizes=self.sizes + ((os.path.abspath(path), tuple(sorted(sizes.items()))),))

    def model_sizes(self, path: str) -> Dict[str, int]:
        """The sizes recorded for a planned model directory ({} when unknown)."""
        found = [dict(sizes) for where, sizes in self.sizes if where == os.path.abspath(path)]
        return found[-1] if found else {}


NO_PLAN = Plan()


class ConfigError(InputError):
    """A config problem; the message names the file, line and key."""

    what = "config error"


class Section(pydantic.BaseModel):
    """Base for config sections: unknown keys are errors, values are checked strictly."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True, validate_assignment=True)
    _plan: Plan = pydantic.PrivateAttr(default=NO_PLAN)

    @pydantic.model_validator(mode="after")
    def _keep_plan(self, info: pydantic.ValidationInfo):
        """Keep the ``plan`` of the validation context (see ``Plan``) for ``check()`` and its helpers."""
        if info.context and "plan" in info.context:
            self._plan = info.context["plan"]
        return self

    def planned(self, path: str) -> bool:
        """True if an earlier step of the run validating this config will write ``path``."""
        return self._plan.has(path)


def _compose_with_lines(text: str, path: str) -> Tuple[Any, Dict[str, int]]:
    """Parse YAML and remember the line of every key, as ``{"Section.key": line}``."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {getattr(err, 'problem', err)}") from None
    lines: Dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: Dict[str, int] = {}
            for key_node, value_node in node.value:
                key = f"{prefix}{key_node.value}"
                line = key_node.start_mark.line + 1
                if key in seen and key_node.value != "<<":  # YAML would silently keep only the last one
                    raise ConfigError(f"{path}:{line}: {key}: given twice (first on line {seen[key]}); keep one")
                seen[key] = lines[key] = line
                walk(value_node, key + ".")
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[f"{prefix}{i}"] = item.start_mark.line + 1
                walk(item, f"{prefix}{i}.")

    if root is not None:
        walk(root, "")
    data = yaml.load(text, Loader=_Loader) if root is not None else {}
    return data, lines


def _set_dotted(data: Dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {dotted}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> Tuple[str, Any]:
    """``"Train.max_steps=10"`` -> ``("Train.max_steps", 10)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"-o {text}: an override is Section.key=value")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _describe_pydantic_error(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    return err["msg"]


def load_config(
    schema: Type[T], path: str | Path, overrides: Sequence[str] = (), plan: Plan = NO_PLAN
) -> T:
    """Read ``path``, apply ``-o`` overrides and validate against ``schema`` (given ``plan``: what
    earlier steps of a multi-stage run will write)."""
    path = str(path)
    if not os.path.exists(path):
        raise ConfigError(f"{path}: config file not found")
    if os.path.isdir(path):
        raise ConfigError(f"{path}: is a directory; -c takes a YAML config file")
    text = read_text(path, ConfigError)
    data, lines = _compose_with_lines(text, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: a config is a mapping of sections")
    overridden: Dict[str, str] = {}
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value, f"-o {item}")
        overridden[key] = item
    return validate_config(schema, data, path, lines, overridden, plan)


def validate_config(
    schema: Type[T],
    data: Dict[str, Any],
    path: str = "<config>",
    lines: Optional[Dict[str, int]] = None,
    overridden: Optional[Dict[str, str]] = None,
    plan: Plan = NO_PLAN,
) -> T:
    lines = lines or {}
    overridden = overridden or {}

    def where(dotted: str) -> str:
        for key, item in overridden.items():
            if dotted == key or dotted.startswith(key + "."):
                return f"-o {item}"
        for key, item in overridden.items():  # a section only an override brought in (-o Trainer.x=1)
            if key.startswith(dotted + ".") and dotted not in lines:
                return f"-o {item}"
        parts = dotted.split(".")
        while parts:  # the nearest key that has a line
            line = lines.get(".".join(parts))
            if line is not None:
                return f"{path}:{line}"
            parts.pop()
        return path

    try:
        config = schema.model_validate(data, context={"plan": plan})
    except pydantic.ValidationError as exc:
        messages: List[str] = []
        for err in exc.errors():
            dotted = ".".join(str(p) for p in err["loc"])
            if err.get("ctx", {}).get("error") is not None and err["type"] == "value_error":
                messages.append(f"{where(dotted)}: {err['ctx']['error']}")
                continue
            shown = f" = {json.dumps(err['input'], ensure_ascii=False, default=str)}" if err["type"] != "missing" else ""
            messages.append(f"{where(dotted)}: {dotted}{shown}: {_describe_pydantic_error(err)}")
        raise ConfigError("\n".join(messages)) from None
    # cross-field checks: each section, and the whole schema, may define `check()` yielding
    # (dotted key, message) problems; the message says what is wrong with the key's value.
    problems = list(_collect_problems(config))
    if problems:
        raise ConfigError("\n".join(f"{where(key)}: {key}: {message}" for key, message in problems))
    return config


def _collect_problems(config: pydantic.BaseModel, prefix: str = ""):
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, pydantic.BaseModel):
            yield from _collect_problems(value, f"{prefix}{name}.")
        elif isinstance(value, list):  # e.g. Tasks: a list of entries, each with its own check()
            for i, item in enumerate(value):
                if isinstance(item, pydantic.BaseModel):
                    yield from _collect_problems(item, f"{prefix}{name}.{i}.")
    check = getattr(config, "check", None)
    if callable(check):
        for key, message in check():
            yield f"{prefix}{key}", message


def dump_config(config: pydantic.BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML (what the output directory was made with), atomically."""
    write_text_atomically(Path(path), yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False,
                                                     allow_unicode=True))
