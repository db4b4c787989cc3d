"""The README's package table, generated from the tree: one row per subpackage and module.

``python -m taskimage.dev.layout`` rewrites the block between the layout markers in README.md
from the summary (first paragraph) of each module's docstring and each subpackage's
``__init__`` docstring; ``--check`` only compares and exits 1 when the block is stale. A module
without a docstring is an error: the table is how a newcomer finds the folder that owns a change.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from collections.abc import Sequence
from pathlib import Path

BEGIN = "<!-- BEGIN GENERATED layout (python -m taskimage.dev.layout) -->"
END = "<!-- END GENERATED layout -->"
PACKAGE = Path(__file__).resolve().parent.parent
ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")  # :mod:`x`, :class:`~a.b.C`
SKIPPED = {"__main__.py"}  # `python -m taskimage`: the CLI, already a row


def summary(path: Path) -> str:
    """The first paragraph of a module's docstring, on one line (``|`` escaped for the table)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    if not doc or not doc.strip():
        raise ValueError(f"{path}: no module docstring (the README layout table is made from it)")
    paragraph = " ".join(doc.strip().split("\n\n", 1)[0].split())
    markdown = ROLE.sub(r"`\1`", paragraph).replace("``", "`")  # reST to Markdown code spans
    return markdown.replace("|", "\\|")


def rows(package: Path = PACKAGE) -> list[tuple[str, str]]:
    """(path relative to the package's parent, summary) for the package, its modules, then each
    subpackage the same way, depth first, each level sorted by name."""
    base = package.parent
    out = [(f"{package.relative_to(base).as_posix()}/", summary(package / "__init__.py"))]
    for module in sorted(package.glob("*.py")):
        if module.name != "__init__.py" and module.name not in SKIPPED:
            out.append((module.relative_to(base).as_posix(), summary(module)))
    for sub in sorted(p for p in package.iterdir() if (p / "__init__.py").is_file()):
        out += [(f"{package.name}/{path}", text) for path, text in rows(sub)]
    return out


def table(package: Path = PACKAGE) -> str:
    lines = ["| Module | What it is |", "|---|---|"]
    lines += [f"| `{path}` | {text} |" for path, text in rows(package)]
    return "\n".join(lines)


def fill(text: str, body: str, path: Path | str = "README.md") -> str:
    """``text`` with the block between BEGIN and END replaced by ``body``; the markers must exist once."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{path}: needs exactly one {BEGIN!r} … {END!r} pair")
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    return f"{text[:start]}\n{body}\n{text[stop:]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taskimage.dev.layout", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when README.md is stale")
    parser.add_argument("--readme", default=str(PACKAGE.parent / "README.md"), help="default: %(default)s")
    args = parser.parse_args(argv)
    readme = Path(args.readme)
    try:
        old = readme.read_text(encoding="utf-8")
        new = fill(old, table(), readme)
    except (OSError, ValueError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    if old == new:
        return 0
    if args.check:
        diff = difflib.unified_diff(old.splitlines(), new.splitlines(), str(readme), "generated", lineterm="")
        print("\n".join(diff), file=sys.stderr)
        print(f"ERROR: {readme}: the layout table is stale: run python -m taskimage.dev.layout", file=sys.stderr)
        return 1
    tmp = readme.with_name(f".{readme.name}.tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(readme)
    print(f"wrote {readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
