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
- On the command line, values are parsed the way ``tkn task start -p`` parses them, by the one
  ``-p`` parser and param model in :mod:`taskimage.tekton.params`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from taskimage.errors import UsageError
from taskimage.tekton import params as tekton_params
from taskimage.tekton.params import ParamSpec, ParamValue, normalize_value, value_type
from taskimage.tekton.variables import find_refs


def parse_specs(raw: Sequence[Mapping] | None, task: str) -> tuple[ParamSpec, ...]:
    """The declared params of ``task`` (taskimage.tekton.params, named for the Task)."""
    return tekton_params.parse_specs(raw, f"task {task}")


def parse_cli(items: Sequence[str], specs: Sequence[ParamSpec], task: str) -> dict[str, ParamValue]:
    """``-p`` values for ``task``: the one ``-p`` parser (taskimage.tekton.params), named for the Task."""
    return tekton_params.parse_cli(items, specs, f"task {task}")


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
                if ref.root == "params":
                    warnings.append(
                        f"param {s.name}: its default holds {ref.text}; Tekton does not substitute params "
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


__all__ = ["ParamSpec", "ParamValue", "normalize_value", "parse_cli", "parse_specs", "resolve", "value_type"]
