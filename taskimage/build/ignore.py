"""The build context as buildah's ``COPY``/``ADD`` see it: ``.containerignore``/``.dockerignore`` applied.

This mirrors, rule for rule, what buildah 1.28 does (checked against real buildah by
tests/test_ignore.py, which builds ``COPY . /ctx`` and lists the image):

- the ignore file is ``.containerignore`` at the context's root, else ``.dockerignore``
  (openshift/imagebuilder ``ParseDockerignore``); lines split on ``\\n``; an empty line or one
  whose first character is ``#`` is skipped; then ``/`` is trimmed from both ends (so ``/a`` and
  ``a/`` mean ``a``; ``  /a`` keeps its slash and never matches);
- each pattern is whitespace-trimmed and cleaned like Go's ``filepath.Clean``; a leading ``!``
  makes it an exception (cleaned again, one leading ``/`` dropped: ``!/a`` is ``!a``); it becomes a regular expression where ``*`` and ``?`` stop at ``/``,
  ``**`` crosses ``/`` and ``\\`` escapes (containers/storage ``fileutils.PatternMatcher``);
- a path is excluded when the LAST pattern that matches it (or matches the first as many
  components of its parent directory as the pattern has) is not an exception;
- an excluded directory is not descended into unless there are exceptions and one of them,
  as text, starts with the directory's path (buildah ``copier``); so ``build`` +
  ``!**/*.keep`` still drops ``build/a.keep``.

Nothing is special: the ignore file and the Containerfile are filtered like any other file, and
``.git`` is in the context unless a pattern excludes it (that is what buildah copies).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path

IGNORE_FILES = (".containerignore", ".dockerignore")


class IgnoreError(ValueError):
    """A pattern buildah would reject, or one whose meaning this module cannot mirror exactly."""


def go_clean(path: str) -> str:
    """Go's ``filepath.Clean`` on a slash-separated path."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    cleaned = "/".join(out)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def read_lines(text: str) -> list[str]:
    """imagebuilder's ``ParseIgnoreReader``: the raw patterns of an ignore file."""
    out = []
    for line in text.split("\n"):
        if not line or line[0] == "#":
            continue
        line = line.strip("/")
        if line:
            out.append(line)
    return out


_UNMIRRORED = re.compile(r"[(){}|+]|\[\[:")  # Go RE2 syntax that Python's re may read differently


def _regex(pattern: str) -> re.Pattern[str]:
    out = "^"
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                out += ".*" if i >= n else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch in ".$":
            out += "\\" + ch
        elif ch == "\\":
            if i >= n:
                raise IgnoreError(f"bad pattern {pattern!r}: it ends with a backslash")
            out += "\\" + pattern[i]
            i += 1
        else:
            out += ch
    try:
        return re.compile(out + "$", re.DOTALL)
    except re.error as exc:
        raise IgnoreError(f"bad pattern {pattern!r}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class Pattern:
    text: str  # cleaned, without the leading "!"
    exclusion: bool
    regex: re.Pattern[str]

    @property
    def depth(self) -> int:
        return len(self.text.split("/"))


class Matcher:
    """containers/storage ``fileutils.PatternMatcher``."""

    def __init__(self, lines: list[str]):
        self.patterns: list[Pattern] = []
        for raw in lines:
            p = raw.strip()
            if not p:
                continue
            p = go_clean(p)
            exclusion = p.startswith("!")
            if exclusion:
                if len(p) == 1:
                    raise IgnoreError('illegal exclusion pattern: "!"')
                p = go_clean(p[1:]).removeprefix("/")  # "!/a" is "!a" (containers/storage)
            if _UNMIRRORED.search(p):
                raise IgnoreError(f"pattern {raw!r} uses regular-expression syntax buildah passes through unchecked")
            self.patterns.append(Pattern(p, exclusion, _regex(p)))
        self.exclusions = any(p.exclusion for p in self.patterns)

    def excluded(self, rel: str) -> bool:
        parent = os.path.dirname(rel) or "."
        parent_dirs = parent.split("/")
        matched = False
        for pattern in self.patterns:
            match = bool(pattern.regex.match(rel))
            if not match and parent != "." and pattern.depth <= len(parent_dirs):
                match = bool(pattern.regex.match("/".join(parent_dirs[: pattern.depth])))
            if match:
                matched = not pattern.exclusion
        return matched

    def descend(self, rel: str) -> bool:
        """Whether buildah walks into the excluded directory ``rel`` looking for exceptions."""
        if not self.exclusions:
            return False
        trimmed = rel.strip("/")
        return any(p.exclusion and (p.text.strip("/") + "/").startswith(trimmed) for p in self.patterns)


def ignore_file(context: Path) -> Path | None:
    for name in IGNORE_FILES:
        path = context / name
        if path.exists():
            return path
    return None


def matcher_for(context: Path) -> Matcher:
    path = ignore_file(context)
    if path is None:
        return Matcher([])
    return Matcher(read_lines(path.read_text(errors="surrogateescape")))


def walk(context: Path, matcher: Matcher | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry buildah's ``COPY . dest`` copies: (path relative to the context, lstat), sorted.

    A directory that is excluded but walked (for an exception) is not yielded itself; buildah
    creates it only as the parent of what it copies, with its own mode.
    """
    m = matcher if matcher is not None else matcher_for(context)

    def visit(rel_dir: str) -> Iterator[tuple[str, os.stat_result]]:
        base = context / rel_dir if rel_dir else context
        for name in sorted(os.listdir(base)):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            st = os.lstat(base / name)
            is_dir = os.path.isdir(base / name) and not os.path.islink(base / name)
            if m.excluded(rel):
                if is_dir and m.descend(rel):
                    yield from visit(rel)
                continue
            yield rel, st
            if is_dir:
                yield from visit(rel)

    yield from visit("")
