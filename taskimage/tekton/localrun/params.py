"""Task parameters resolved as Tekton resolves them for a TaskRun.

- A declared param's type is ``string`` unless given; when omitted it follows the default's type,
  or ``object`` when ``properties`` are declared (Tekton's ParamSpec defaulting).
- Given values win over defaults; a param with neither is missing. All missing params are named in
  one error, as the controller does ("missing values for these params which have no default values").
- A value whose type differs from the declaration is an error naming the param.
- Object params: declared ``properties`` are required keys; given keys are laid over the default's.
- ``enum``: the value must be one of the listed strings.
- Defaults are taken literally: Tekton does not substitute ``$(params.Y)`` inside a param value
  (the params pass is single-pass), so such a default reaches the step as written (we warn).
- On the command line, values are parsed the way ``tkn task start -p`` parses them: the declared
  type decides; arrays split on ``,`` (an empty value is an empty array), objects are
  ``k1:v1, k2:v2``; a name the Task does not declare is an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from taskimage.errors import UsageError
from taskimage.tekton.localrun.substitute import ParamValue, find_refs

TYPES = ("string", "array", "object")


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: ParamValue | None = None
    properties: tuple[str, ...] = ()
    enum: tuple[str, ...] = ()
    description: str = ""


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def value_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def normalize_value(value: Any) -> ParamValue:
    """YAML scalars become strings (``true`` → ``"true"``), lists of scalars string lists."""
    if isinstance(value, list):
        return [_scalar(x) for x in value]
    if isinstance(value, dict):
        return {str(k): _scalar(x) for k, x in value.items()}
    return _scalar(value)


def parse_specs(raw: Sequence[Mapping] | None, task: str) -> tuple[ParamSpec, ...]:
    specs: list[ParamSpec] = []
    seen: set[str] = set()
    for p in raw or []:
        name = p.get("name")
        if not name or not isinstance(name, str):
            raise UsageError(f"task {task}: a param without a name")
        if name in seen:
            raise UsageError(f"task {task}: param {name} is declared twice")
        seen.add(name)
        default = normalize_value(p["default"]) if "default" in p and p["default"] is not None else None
        kind = p.get("type") or (
            value_type(p["default"]) if default is not None else ("object" if p.get("properties") else "string")
        )
        if kind not in TYPES:
            raise UsageError(f"task {task}: param {name} has type {kind!r}; accepted: {', '.join(TYPES)}")
        if default is not None and value_type(default) != kind:
            raise UsageError(f"task {task}: param {name} is declared {kind} but its default is {value_type(default)}")
        specs.append(
            ParamSpec(
                name=name,
                type=kind,
                default=default,
                properties=tuple((p.get("properties") or {}).keys()),
                enum=tuple(_scalar(e) for e in p.get("enum") or []),
                description=str(p.get("description") or ""),
            )
        )
    return tuple(specs)


def parse_cli(items: Sequence[str], specs: Sequence[ParamSpec], task: str) -> dict[str, ParamValue]:
    """``-p NAME=VALUE`` values, typed by the declaration as ``tkn`` does."""
    by_name = {s.name: s for s in specs}
    out: dict[str, ParamValue] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise UsageError(f"-p {item}: expected NAME=VALUE")
        spec = by_name.get(name)
        if spec is None:
            declared = ", ".join(sorted(by_name)) or "none"
            raise UsageError(f"-p {name}: task {task} declares no param {name} (declared: {declared})")
        if spec.type == "array":
            out[name] = raw.split(",") if raw else []
        elif spec.type == "object":
            obj: dict[str, str] = {}
            for pair in raw.split(",") if raw.strip() else []:
                key, colon, val = pair.partition(":")
                if not colon or not key.strip():
                    raise UsageError(f'-p {name}={raw}: object params take "key1:value1, key2:value2"')
                obj[key.strip()] = val.strip()
            out[name] = obj
        else:
            out[name] = raw
    return out


def resolve(
    specs: Sequence[ParamSpec],
    given: Mapping[str, Any],
    task: str,
    *,
    warnings: list[str] | None = None,
) -> dict[str, ParamValue]:
    """The value of every declared param for this run, or a :class:`UsageError`."""
    warnings = [] if warnings is None else warnings
    declared = {s.name for s in specs}
    for extra in sorted(set(given) - declared):
        warnings.append(f"param {extra} is given but task {task} does not declare it (ignored, as Tekton does)")
    mismatched = [
        f"{s.name} (declared {s.type}, given {value_type(given[s.name])})"
        for s in specs
        if s.name in given and value_type(given[s.name]) != s.type
    ]
    if mismatched:
        raise UsageError(f"task {task}: param type mismatch: {', '.join(mismatched)}")
    missing = [s.name for s in specs if s.name not in given and s.default is None]
    if missing:
        raise UsageError(
            f"task {task}: missing values for params without a default: {', '.join(missing)} "
            "(give them with -p NAME=VALUE)"
        )
    values: dict[str, ParamValue] = {}
    problems: list[str] = []
    for s in specs:
        if s.name in given:
            value = normalize_value(given[s.name])
            if s.type == "object" and s.default is not None:
                value = {**s.default, **value}  # type: ignore[dict-item]
        else:
            value = s.default  # type: ignore[assignment]
            for ref in find_refs(_flatten(value)):
                text = ref if isinstance(ref, str) else ref.text
                if text.startswith("$(params"):
                    warnings.append(
                        f"param {s.name}: its default holds {text}; Tekton does not substitute params "
                        "inside param values, so the steps get it literally"
                    )
        if s.type == "object":
            assert isinstance(value, dict)
            lacking = [k for k in s.properties if k not in value]
            if lacking:
                problems.append(f"{s.name} lacks keys {', '.join(lacking)}")
        if s.enum:
            items = value if isinstance(value, list) else [value]
            bad = [x for x in items if x not in s.enum]
            if bad:
                problems.append(f"{s.name}={bad[0]!r} is not in its enum [{', '.join(s.enum)}]")
        values[s.name] = value  # type: ignore[assignment]
    if problems:
        raise UsageError(f"task {task}: invalid param values: {'; '.join(problems)}")
    return values


def _flatten(value: ParamValue | None) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(value)
    if isinstance(value, dict):
        return " ".join(value.values())
    return value
