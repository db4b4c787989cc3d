"""The one YAML reader of the Tekton wing: every command reads Tekton YAML through here.

Rules, as the Kubernetes API server and ``kubectl``/``tkn`` (go-yaml, YAML 1.1) read it:
- a mapping key given twice is an error (the API server's strict field validation answers
  ``duplicate field``), reported as ``FILE:LINE: duplicate field "spec.steps[0].image" (first
  on line 9)``. ``lint`` reports the same text as a problem instead of stopping;
- timestamps stay strings (go-yaml decodes them into ``interface{}`` as strings);
- every node keeps its line, so errors and lint problems point at ``FILE:LINE``.

PyYAML's composer gives each node a start mark: we compose the node tree, walk it once for
lines and duplicate keys, then construct the plain Python data from the same tree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from taskimage.errors import UsageError

PathKey = tuple[Any, ...]

_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it: faster, same marks


class _Loader(_BASE):  # type: ignore[misc,valid-type]
    """Safe loading without the timestamp resolver (go-yaml leaves timestamps as strings)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def dotted(path: Iterable[Any]) -> str:
    """``("spec", "steps", 0, "image")`` -> ``spec.steps[0].image`` (kubectl's spelling)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(document)"


class YamlError(UsageError):
    """Text that is not YAML, or YAML a Kubernetes API server would refuse (duplicate keys)."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source, self.line, self.message = source, line, message


@dataclasses.dataclass(frozen=True)
class Duplicate:
    """A mapping key given twice: its path, the line of the repeat and of the first one."""

    path: PathKey
    line: int
    first_line: int

    @property
    def message(self) -> str:
        return f'duplicate field "{dotted(self.path)}" (first on line {self.first_line})'


@dataclasses.dataclass(frozen=True)
class Document:
    """One YAML document of a file: its data and the line (1-based) of each value's path."""

    file: str
    index: int
    data: Any
    lines: dict[PathKey, int]
    key_lines: dict[PathKey, int]
    start_line: int
    block_scalars: frozenset[PathKey] = frozenset()
    duplicates: tuple[Duplicate, ...] = ()  # YAML itself keeps the last one; Kubernetes refuses

    def line(self, path: PathKey, *, key: bool = False) -> int:
        """The line of ``path``, or of its nearest ancestor that has one.

        ``key`` asks for the line of the mapping key (for "unknown field" errors) rather than
        of the value, which for a nested mapping starts on the next line.
        """
        path = tuple(path)
        if key and path in self.key_lines:
            return self.key_lines[path]
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.start_line

    def text_line(self, path: PathKey, offset_lines: int) -> int:
        """The line of the ``offset_lines``-th line inside the string at ``path``.

        A block scalar (``script: |``) starts on the line after its indicator."""
        path = tuple(path)
        if path in self.block_scalars:
            return self.line(path) + 1 + offset_lines
        return self.line(path) + offset_lines if path in self.lines else self.line(path)

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", "")) if isinstance(self.data, dict) else ""

    @property
    def api_version(self) -> str:
        return str(self.data.get("apiVersion", "")) if isinstance(self.data, dict) else ""

    @property
    def name(self) -> str:
        if not isinstance(self.data, dict):
            return ""
        meta = self.data.get("metadata")
        if not isinstance(meta, dict):
            return ""
        return str(meta.get("name") or meta.get("generateName") or "")

    def check(self) -> None:
        """Raise the first duplicate key as a YamlError (what every command but lint does)."""
        if self.duplicates:
            first = self.duplicates[0]
            raise YamlError(self.file, first.line, first.message)


class _Walk:
    def __init__(self) -> None:
        self.lines: dict[PathKey, int] = {}
        self.key_lines: dict[PathKey, int] = {}
        self.blocks: set[PathKey] = set()
        self.dups: list[Duplicate] = []

    def node(self, node: yaml.Node, path: PathKey) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
            self.blocks.add(path)
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
                line = key_node.start_mark.line + 1
                if key in first and key != "<<":
                    self.dups.append(Duplicate(path + (key,), line, first[key]))
                first.setdefault(key, line)
                self.key_lines[path + (key,)] = line
                self.node(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.node(item, path + (i,))


def _syntax_error(source: str, exc: yaml.YAMLError) -> YamlError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        return YamlError(source, mark.line + 1 if mark else 1, f"YAML syntax error: {problem}")
    return YamlError(source, 1, f"YAML error: {exc}")


def read_documents(text: str, source: str) -> tuple[list[Document], YamlError | None]:
    """Every document of ``text`` (empty ones too, with data None), duplicates recorded, not
    raised; on a syntax error the documents before it and the error. For ``lint``."""
    docs: list[Document] = []
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node said there is one
                continue
            data = loader.construct_document(node)
            walk = _Walk()
            walk.node(node, ())
            docs.append(
                Document(
                    source,
                    len(docs),
                    data,
                    walk.lines,
                    walk.key_lines,
                    node.start_mark.line + 1,
                    frozenset(walk.blocks),
                    tuple(walk.dups),
                )
            )
    except yaml.YAMLError as exc:
        return docs, _syntax_error(source, exc)
    finally:
        loader.dispose()
    return docs, None


def load_all(text: str, source: str) -> list[Any]:
    """The data of every document of ``text`` (None for an empty one); a syntax error or a
    duplicate key raises YamlError naming ``source`` and the line."""
    docs, error = read_documents(text, source)
    for doc in docs:
        doc.check()
    if error:
        raise error
    return [d.data for d in docs]


def load_one(text: str, source: str) -> Any:
    """The data of a one-document text (None when empty)."""
    docs = [d for d in load_all(text, source) if d is not None]
    if len(docs) > 1:
        raise YamlError(source, 1, f"expected one YAML document, found {len(docs)}")
    return docs[0] if docs else None


def read_text(path: str | Path, what: str = "") -> str:
    """A file's text; an unreadable file is a UsageError naming it (and ``what`` named it)."""
    prefix = f"{what}: " if what else ""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{prefix}{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{prefix}{path}: not UTF-8 text: {exc.reason}") from None


def load_file(path: str | Path, what: str = "") -> list[Any]:
    """``load_all`` of a file's text."""
    return load_all(read_text(path, what), str(path))


__all__ = [
    "Document",
    "Duplicate",
    "PathKey",
    "YamlError",
    "dotted",
    "load_all",
    "load_file",
    "load_one",
    "read_documents",
    "read_text",
]
