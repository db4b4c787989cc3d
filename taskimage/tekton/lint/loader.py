"""Find YAML files and read multi-document YAML, keeping the line of every node.

Why not ``yaml.safe_load_all``: problems must point at ``FILE:LINE``. PyYAML's composer gives
each node a start mark, so we compose the node tree, construct the plain Python data from it
and keep a map from the path of every value (``("spec", "steps", 0, "image")``) to its line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from taskimage.errors import UsageError

YAML_SUFFIXES = (".yaml", ".yml")

PathKey = tuple[Any, ...]
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it: faster, same marks


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
    duplicates: tuple[PathKey, ...] = ()  # mapping keys given twice (YAML keeps the last one)

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


def _walk(
    node: yaml.Node,
    path: PathKey,
    lines: dict[PathKey, int],
    key_lines: dict[PathKey, int],
    blocks: set[PathKey],
    dups: list[PathKey],
) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        blocks.add(path)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
            if key in seen and key != "<<":
                dups.append(path + (key,))
            seen.add(key)
            key_lines[path + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, path + (key,), lines, key_lines, blocks, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines, key_lines, blocks, dups)


def read_documents(file: str, text: str) -> tuple[list[Document], SyntaxProblem | None]:
    """All documents of ``text``; on a YAML error, those before it and the error (with its line)."""
    docs: list[Document] = []
    loader = _LOADER(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            lines: dict[PathKey, int] = {}
            key_lines: dict[PathKey, int] = {}
            blocks: set[PathKey] = set()
            dups: list[PathKey] = []
            _walk(node, (), lines, key_lines, blocks, dups)
            if data is not None:
                docs.append(
                    Document(
                        file, index, data, lines, key_lines, node.start_mark.line + 1, frozenset(blocks), tuple(dups)
                    )
                )
            index += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        return docs, SyntaxProblem(file, line, f"YAML syntax error: {problem}")
    except yaml.YAMLError as exc:
        return docs, SyntaxProblem(file, 1, f"YAML error: {exc}")
    finally:
        loader.dispose()
    return docs, None


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
