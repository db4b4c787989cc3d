"""The one record every check produces, and how it is printed."""

from __future__ import annotations

import dataclasses

from taskimage.tekton.yamlio import dotted

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


__all__ = ["ERROR", "WARNING", "Problem", "dotted"]
