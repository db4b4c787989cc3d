"""The one record every check produces, and how it is printed."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

ERROR = "error"
WARNING = "warning"


@dataclasses.dataclass(frozen=True)
class Problem:
    """One finding: ``FILE:LINE: KIND/NAME: message`` (warnings say so after the name)."""

    file: str
    line: int
    kind: str
    name: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        where = f"{self.kind or '?'}/{self.name or '?'}"
        tag = "warning: " if self.severity == WARNING else ""
        return f"{self.file}:{self.line}: {where}: {tag}{self.message}"


def dotted(path: Iterable[Any]) -> str:
    """``("spec", "steps", 0, "image")`` -> ``spec.steps[0].image`` (kubectl's spelling)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(document)"
