"""Plain-text logs made for ``tkn ... logs``: phase headers, prefixed tool output, tables.

Everything goes to stderr (stdout is kept for machine-readable output). Colour only on a TTY.
Thread-safe: parallel platform builds interleave whole lines, never half lines.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import IO

_lock = threading.Lock()
_secrets: list[str] = []


def add_secret(value: str) -> None:
    """Register a value that must never appear in any log line (it is replaced by ``***``)."""
    if value and len(value) >= 3 and value not in _secrets:
        _secrets.append(value)
        _secrets.sort(key=len, reverse=True)


@contextlib.contextmanager
def secrets_scope() -> Iterator[None]:
    """One command: the secrets it registers are forgotten when it ends (a program that runs
    several commands in one process does not get an earlier command's values masked in a later
    one's output); those registered before it stay in force inside it. Process-wide, not per
    thread: tool output is read by the sh library's own threads, which must redact too."""
    with _lock:
        saved = list(_secrets)
    try:
        yield
    finally:
        with _lock:
            _secrets[:] = saved


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _out() -> IO[str]:
    return sys.stderr  # looked up on each write: contextlib.redirect_stderr captures the logs


def _color(code: str, text: str) -> str:
    stream = _out()
    if os.environ.get("NO_COLOR") or not getattr(stream, "isatty", lambda: False)():
        return text
    return f"\033[{code}m{text}\033[0m"


def emit(text: str) -> None:
    text = redact(text)
    with _lock:
        stream = _out()
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()


def phase(title: str) -> None:
    """A header that starts a phase (preflight, build linux/arm64, push, ...)."""
    emit(_color("1", f"==> {title}"))


def info(message: str) -> None:
    emit(message)


def warn(message: str) -> None:
    emit(_color("33", f"WARNING: {message}"))


def error(message: str) -> None:
    emit(_color("31", f"ERROR: {message}"))


def command(argv: Sequence[str], prefix: str = "") -> None:
    """Show a tool command line, shell-quoted, before it runs."""
    import shlex

    emit(f"{prefix}$ {shlex.join(argv)}")


def tool_line(prefix: str, line: str) -> None:
    emit(f"{prefix}{line.rstrip()}")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Render a plain-text table (also used for stdout output)."""
    rows = [list(map(str, r)) for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
    return "\n".join(lines)


class Timer:
    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start
