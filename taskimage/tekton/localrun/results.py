"""Reading a TaskRun's results back from ``/tekton/results`` and checking them as Tekton would.

Tekton's entrypoint reads every declared result file after a step and writes them, with a
``StartedAt`` entry, as JSON into the container's termination message, which Kubernetes caps at
4096 bytes: above that the TaskRun fails ("Termination message is above max allowed size 4096").
The last step carries every result, so the budget is checked on all of them together.
Declared results that were never written are reported (Tekton leaves them out of the status).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TERMINATION_MESSAGE_LIMIT = 4096
_STARTED_AT = {"key": "StartedAt", "value": "2006-01-02T15:04:05.000Z", "type": 3}


@dataclasses.dataclass(frozen=True)
class ResultSpec:
    name: str
    type: str = "string"


@dataclasses.dataclass(frozen=True)
class Problem:
    message: str
    fails: bool  # True: Tekton would fail the TaskRun


@dataclasses.dataclass(frozen=True)
class Results:
    values: Mapping[str, Any]  # name -> str | list | dict
    raw: Mapping[str, str]
    problems: tuple[Problem, ...]
    undeclared: tuple[str, ...]
    message_bytes: int


def parse_specs(raw: Sequence[Mapping] | None) -> tuple[ResultSpec, ...]:
    return tuple(ResultSpec(str(r["name"]), str(r.get("type") or "string")) for r in raw or [])


def _go_json(value: Any) -> str:
    """JSON as Go's encoding/json writes it (compact, <>& escaped), for the size estimate."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def termination_message_size(raw: Mapping[str, str]) -> int:
    entries = [{"key": k, "value": v, "type": 1} for k, v in raw.items()] + [_STARTED_AT]
    return len(_go_json(entries).encode())


def read(results_dir: Path, specs: Sequence[ResultSpec]) -> Results:
    problems: list[Problem] = []
    raw: dict[str, str] = {}
    values: dict[str, Any] = {}
    for spec in specs:
        path = results_dir / spec.name
        if not path.is_file():
            problems.append(Problem(f"result {spec.name} was declared but not written", False))
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        raw[spec.name] = text
        if spec.type == "string":
            values[spec.name] = text
            continue
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        want = list if spec.type == "array" else dict
        if not isinstance(parsed, want):
            problems.append(Problem(f"result {spec.name} is declared {spec.type} but holds {text[:60]!r}", True))
            values[spec.name] = text
        else:
            values[spec.name] = parsed
    declared = {s.name for s in specs}
    undeclared = (
        tuple(sorted(p.name for p in results_dir.iterdir() if p.name not in declared)) if results_dir.is_dir() else ()
    )
    size = termination_message_size(raw)
    if size > TERMINATION_MESSAGE_LIMIT:
        problems.append(
            Problem(
                f"results need {size} bytes in the termination message, above Tekton's "
                f"{TERMINATION_MESSAGE_LIMIT}-byte limit: the TaskRun would fail",
                True,
            )
        )
    return Results(values, raw, tuple(problems), undeclared, size)
