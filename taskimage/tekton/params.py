"""The one param model of the Tekton wing: a declared param (:class:`ParamSpec`), the type
Tekton infers for it, and the one ``-p NAME=VALUE`` parser (``taskimage run`` and
``taskimage pipeline start`` both use it).

Values have the shapes the API holds: a string, a list of strings, a mapping of strings.

Type inference (Tekton's ParamSpec defaulting): the declared ``type``; else the default's
type; else ``object`` when ``properties`` are declared; else ``string``.

``-p`` follows ``tkn`` (tektoncd/cli pkg/params/mergeparams.go, ``parseParam``):
- split at the first ``=``; the declared type decides how the value reads; an undeclared name
  is an error;
- string: the value as given (commas, ``=`` and spaces kept);
- array: split at every ``,`` with nothing trimmed; an empty value is an empty array;
- object: ``k1:v1, k2:v2``: split at ``,``, each field at its first ``:``, spaces around key and
  value trimmed (``strings.TrimSpace``); a field without ``:`` is an error, so is an empty value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from taskimage.errors import UsageError

TYPES = ("string", "array", "object")

ParamValue = str | list[str] | dict[str, str]


def value_type(value: Any) -> str:
    """``array`` for a list, ``object`` for a mapping, else ``string``."""
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "string"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def normalize_value(value: Any) -> ParamValue:
    """YAML scalars become strings (``true`` → ``"true"``), lists string lists, mappings string maps."""
    if isinstance(value, list | tuple):
        return [_scalar(x) for x in value]
    if isinstance(value, Mapping):
        return {str(k): _scalar(x) for k, x in value.items()}
    return _scalar(value)


def infer_type(decl: Mapping[str, Any]) -> str:
    """The type of a declared param, as Tekton defaults it (see the module docstring)."""
    if decl.get("type"):
        return str(decl["type"])
    if decl.get("default") is not None:
        return value_type(decl["default"])
    return "object" if isinstance(decl.get("properties"), Mapping) and decl.get("properties") else "string"


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """A param a Task or Pipeline declares."""

    name: str
    type: str = "string"  # string | array | object
    default: ParamValue | None = None
    properties: tuple[str, ...] = ()
    enum: tuple[str, ...] = ()
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], owner: str = "") -> ParamSpec:
        """One ``spec.params`` entry; ``owner`` (``task t``) prefixes errors."""
        where = f"{owner}: " if owner else ""
        name = data.get("name")
        if not name or not isinstance(name, str):
            raise UsageError(f"{where}a param without a name")
        kind = infer_type(data)
        if kind not in TYPES:
            raise UsageError(f"{where}param {name} has type {kind!r}; accepted: {', '.join(TYPES)}")
        default = normalize_value(data["default"]) if data.get("default") is not None else None
        if default is not None and value_type(default) != kind:
            raise UsageError(f"{where}param {name} is declared {kind} but its default is {value_type(default)}")
        properties = data.get("properties")
        return cls(
            name=name,
            type=kind,
            default=default,
            properties=tuple(properties) if isinstance(properties, Mapping) else (),
            enum=tuple(_scalar(e) for e in data.get("enum") or []),
            description=str(data.get("description") or ""),
        )


def parse_specs(raw: Sequence[Mapping[str, Any]] | None, owner: str) -> tuple[ParamSpec, ...]:
    """Every declared param of ``owner`` (``task t``, ``Pipeline p``); a name declared twice is an error."""
    specs: list[ParamSpec] = []
    seen: set[str] = set()
    for p in raw or []:
        spec = ParamSpec.from_dict(p, owner)
        if spec.name in seen:
            raise UsageError(f"{owner}: param {spec.name} is declared twice")
        seen.add(spec.name)
        specs.append(spec)
    return tuple(specs)


def parse_assignment(text: str, specs: Sequence[ParamSpec], owner: str) -> tuple[str, ParamValue]:
    """One ``-p NAME=VALUE``, typed by ``owner``'s declaration of NAME (tkn's rules)."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise UsageError(f"-p {text}: expected NAME=VALUE")
    spec = next((s for s in specs if s.name == name), None)
    if spec is None:
        declared = ", ".join(sorted(s.name for s in specs)) or "none"
        raise UsageError(f"-p {name}: {owner} declares no param {name} (declared: {declared})")
    if spec.type == "array":
        return name, raw.split(",") if raw else []
    if spec.type == "object":
        obj: dict[str, str] = {}
        for field in raw.split(","):
            key, colon, value = field.partition(":")
            if not colon or not key.strip():
                raise UsageError(f'-p {name}={raw}: object params take "key1:value1, key2:value2"')
            obj[key.strip()] = value.strip()
        return name, obj
    return name, raw


def parse_cli(items: Sequence[str], specs: Sequence[ParamSpec], owner: str) -> dict[str, ParamValue]:
    """Every ``-p``; a name given twice is an error (tkn would silently keep the last)."""
    out: dict[str, ParamValue] = {}
    for item in items:
        name, value = parse_assignment(item, specs, owner)
        if name in out:
            raise UsageError(f"-p {name}: given twice")
        out[name] = value
    return out


__all__ = [
    "TYPES",
    "ParamSpec",
    "ParamValue",
    "infer_type",
    "normalize_value",
    "parse_assignment",
    "parse_cli",
    "parse_specs",
    "value_type",
]
