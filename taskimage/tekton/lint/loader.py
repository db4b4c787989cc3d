"""Find YAML files and read them through the one YAML reader (``tekton/yamlio.py``), which
keeps the line of every value so problems point at ``FILE:LINE``; duplicate keys, an error for
every other command, are reported here as problems next to the others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

from taskimage.errors import UsageError
from taskimage.tekton import yamlio
from taskimage.tekton.yamlio import Document, PathKey

YAML_SUFFIXES = (".yaml", ".yml")


@dataclasses.dataclass(frozen=True)
class SyntaxProblem:
    file: str
    line: int
    message: str


def find_files(paths: list[str]) -> list[Path]:
    """Expand files and directories (recursively ``*.yaml`` / ``*.yml``), sorted, no duplicates.

    A path that does not exist is a usage error; an explicitly named file is linted whatever
    its suffix, since the user asked for it.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in YAML_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"lint: PATH {raw!r} does not exist")
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def read_documents(file: str, text: str) -> tuple[list[Document], SyntaxProblem | None]:
    """All non-empty documents of ``text``; on a YAML error, those before it and the error."""
    docs, error = yamlio.read_documents(text, file)
    problem = SyntaxProblem(file, error.line, error.message) if error else None
    return [d for d in docs if d.data is not None], problem


def iter_documents(files: list[Path]) -> Iterator[Document | SyntaxProblem]:
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            yield SyntaxProblem(str(path), 1, f"cannot read: {exc}")
            continue
        docs, problem = read_documents(str(path), text)
        yield from docs
        if problem:
            yield problem


__all__ = ["Document", "PathKey", "SyntaxProblem", "find_files", "iter_documents", "read_documents"]
