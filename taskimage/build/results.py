"""Tekton results: one file per result, no trailing newline, written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from taskimage import log
from taskimage.errors import UsageError

TEKTON_RESULTS = Path("/tekton/results")
BUDGET = 4096  # bytes of termination message for all results of a TaskRun (Tekton's default)


def default_dir() -> Path | None:
    return TEKTON_RESULTS if TEKTON_RESULTS.is_dir() else None


def check_dir(value: str | None, source: str = "--results-dir") -> Path | None:
    """Validate the results directory before any work (so a bad one fails in the first second)."""
    if not value:
        return default_dir()
    path = Path(value)
    if not path.is_dir():
        raise UsageError(f"{source}: {value!r} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{source}: cannot write to {value!r}: {exc.strerror}") from None
    return path


def write_digestfile(path: str, text: str) -> None:
    """``--digestfile``: ``text`` written atomically (a temporary file beside it, then a rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, prefix=".digest-") as f:
        f.write(text)
    os.replace(f.name, path)


def size(results: Mapping[str, str]) -> int:
    """Approximate termination-message bytes (JSON entries with key, value and type)."""
    return sum(len(k) + len(v) + 40 for k, v in results.items())


def write(directory: Path, results: Mapping[str, str]) -> None:
    """Write each result atomically (temp file in the same directory, then rename)."""
    used = size(results)
    if used > BUDGET:
        log.warn(f"results take about {used} bytes, over Tekton's {BUDGET}-byte budget")
    for name, value in results.items():
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(value.rstrip("\n"))
            os.chmod(tmp, 0o644)
            os.replace(tmp, directory / name)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
